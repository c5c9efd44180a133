// HTTP/1.1 transport to etcd's v2 keys API (/v2/keys): endpoint failover, keep-alive agents, TLS,
// HTTP basic auth. Endpoints, TLS material and credentials come from the v3 client's options
// (src/etcd/options.ts), so both APIs take the same flags and fail on them the same way.
//
// Failover contract (as the v3 transport): a request moves to the next endpoint when it surely was
// not processed (no connection, TLS handshake failure, timeout before the connection was up), or
// when the caller marks it retrySafe (reads, unconditional puts) and it failed in any way, a 5xx
// included (etcd's Go v2 client, which flanneld uses, also moves on after a 5xx). A conditional
// mutation (prevExist=false, delete) that breaks after it was sent is reported, not resent: resending
// a create could turn "created" into "already exists". The last endpoint that answered goes first
// next time.

import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';

import { EtcdClosedError, EtcdUnavailableError } from '../etcd/errors.js';
import type { Endpoint, ResolvedOptions } from '../etcd/options.js';
import { describeSocketError, isEstablished } from '../etcd/transport.js';
import { EtcdV2ResponseError } from './errors.js';

export interface V2Call {
  readonly method: 'GET' | 'PUT' | 'DELETE';
  /** The etcd key or directory, e.g. /coreos.com/network/config; '' is the root. */
  readonly key: string;
  readonly query?: Readonly<Record<string, string>>;
  /** PUT form fields (value, ttl). */
  readonly form?: Readonly<Record<string, string>>;
  /** Safe to send again, to this or another endpoint, after an ambiguous failure. */
  readonly retrySafe: boolean;
}

export interface V2Reply<T> {
  readonly body: T;
  /** X-Etcd-Index: the v2 store's index when etcd answered. */
  readonly etcdIndex: number;
}

export interface V2Stream {
  readonly endpoint: Endpoint;
  readonly request: http.ClientRequest;
  readonly response: http.IncomingMessage;
}

/** The request never reached etcd: safe to try elsewhere. */
class UnreachedError extends Error {}
/** A reused keep-alive socket turned out dead before anything came back: resend once. */
class StaleSocketError extends Error {}
/** The request was sent, then the exchange broke: it may or may not have been applied. */
class BrokenExchangeError extends Error {}

interface RawReply {
  readonly status: number;
  readonly statusMessage: string;
  readonly etcdIndex: number;
  readonly body: string;
}

/** "/v2/keys/a/b?x=1" with every key segment URL-encoded. */
export function keysPath(key: string, query: Readonly<Record<string, string>> = {}): string {
  const segments = key
    .split('/')
    .filter((s) => s !== '')
    .map((s) => encodeURIComponent(s));
  const search = new URLSearchParams(query).toString();
  return `/v2/keys/${segments.join('/')}${search === '' ? '' : `?${search}`}`;
}

export class EtcdV2Transport {
  private preferred = 0;
  private closed = false;
  private readonly inflight = new Set<http.ClientRequest>();
  private readonly unaryHttp: http.Agent;
  private readonly unaryHttps: https.Agent;
  private readonly streamHttp: http.Agent;
  private readonly streamHttps: https.Agent;
  private readonly authorization: string | null;

  constructor(private readonly options: ResolvedOptions) {
    const tlsOptions: https.AgentOptions = { minVersion: 'TLSv1.2', ...options.tls };
    this.unaryHttp = new http.Agent({ keepAlive: true, maxSockets: 16 });
    this.unaryHttps = new https.Agent({ keepAlive: true, maxSockets: 16, ...tlsOptions });
    // Long polls (watches) get their own agents, so they never starve unary calls.
    this.streamHttp = new http.Agent({ keepAlive: false });
    this.streamHttps = new https.Agent({ keepAlive: false, ...tlsOptions });
    const creds = options.credentials;
    this.authorization =
      creds === null ? null : `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
  }

  /** Sends one request; resolves with etcd's JSON reply, throws EtcdV2ResponseError for its errors. */
  async call<T>(c: V2Call): Promise<V2Reply<T>> {
    const path = keysPath(c.key, c.query);
    const payload = c.form === undefined ? '' : new URLSearchParams(c.form).toString();
    const attempts: string[] = [];
    for (const [index, endpoint] of this.endpointsInTurn()) {
      let reply: RawReply;
      try {
        reply = await this.exchangeResendingStale(endpoint, c.method, path, payload);
      } catch (err) {
        if (err instanceof UnreachedError || (c.retrySafe && err instanceof BrokenExchangeError)) {
          attempts.push(`${endpoint.label}: ${err.message}`);
          continue;
        }
        if (err instanceof BrokenExchangeError) {
          throw new Error(
            `etcd v2 ${c.method} ${path} at ${endpoint.label}: ${err.message} (the request may or may not have been applied)`,
            { cause: err },
          );
        }
        throw err;
      }
      if (reply.status >= 200 && reply.status < 300) {
        this.preferred = index;
        try {
          return { body: JSON.parse(reply.body) as T, etcdIndex: reply.etcdIndex };
        } catch {
          throw new Error(`etcd v2 ${path} at ${endpoint.label}: reply is not JSON: ${reply.body.slice(0, 200)}`);
        }
      }
      const error = replyError(endpoint, path, reply);
      if (reply.status >= 500 && c.retrySafe) {
        attempts.push(`${endpoint.label}: ${error.etcdMessage}`);
        continue;
      }
      this.preferred = index;
      throw error;
    }
    throw new EtcdUnavailableError(`v2 ${path}`, attempts);
  }

  /**
   * Opens a long poll (GET ...?wait=true) on the first endpoint that accepts it (HTTP 200, headers
   * in); etcd's error replies are thrown as EtcdV2ResponseError. The caller owns the request and
   * must destroy it.
   */
  async openWatch(key: string, query: Readonly<Record<string, string>>): Promise<V2Stream> {
    const path = keysPath(key, query);
    const attempts: string[] = [];
    for (const [index, endpoint] of this.endpointsInTurn()) {
      let opened: { request: http.ClientRequest; response: http.IncomingMessage };
      try {
        opened = await this.startExchange(endpoint, 'GET', path, '', true);
      } catch (err) {
        if (err instanceof EtcdClosedError) throw err;
        attempts.push(`${endpoint.label}: ${(err as Error).message}`);
        continue;
      }
      if (opened.response.statusCode === 200) {
        this.preferred = index;
        return { endpoint, ...opened };
      }
      const reply = await readReply(opened.response).catch((err: Error) => ({
        status: opened.response.statusCode ?? 0,
        statusMessage: opened.response.statusMessage ?? '',
        etcdIndex: 0,
        body: err.message,
      }));
      opened.request.destroy();
      const error = replyError(endpoint, path, reply);
      if (reply.status >= 500) {
        attempts.push(`${endpoint.label}: ${error.etcdMessage}`);
        continue;
      }
      throw error;
    }
    throw new EtcdUnavailableError(`v2 ${path}`, attempts);
  }

  /** Aborts in-flight requests and closes every socket; later calls fail with EtcdClosedError. */
  close(): void {
    this.closed = true;
    for (const req of this.inflight) req.destroy(new EtcdClosedError());
    this.inflight.clear();
    this.unaryHttp.destroy();
    this.unaryHttps.destroy();
    this.streamHttp.destroy();
    this.streamHttps.destroy();
  }

  private *endpointsInTurn(): Generator<[number, Endpoint]> {
    const count = this.options.endpoints.length;
    for (let i = 0; i < count; i++) {
      const index = (this.preferred + i) % count;
      yield [index, this.options.endpoints[index]!];
    }
  }

  private async exchangeResendingStale(
    endpoint: Endpoint,
    method: string,
    path: string,
    payload: string,
  ): Promise<RawReply> {
    try {
      return await this.exchange(endpoint, method, path, payload);
    } catch (err) {
      if (!(err instanceof StaleSocketError)) throw err;
      return this.exchange(endpoint, method, path, payload);
    }
  }

  private async exchange(endpoint: Endpoint, method: string, path: string, payload: string): Promise<RawReply> {
    const { request, response } = await this.startExchange(endpoint, method, path, payload, false);
    try {
      return await readReply(response);
    } catch (err) {
      if (this.closed) throw new EtcdClosedError();
      throw new BrokenExchangeError(`reply broken off: ${(err as Error).message}`);
    } finally {
      this.inflight.delete(request);
    }
  }

  /**
   * Sends the request and resolves once the response headers are in. The deadline
   * (requestTimeoutMs) covers a unary call up to the end of its reply, a long poll only up to its
   * headers (etcd sends them as soon as the watch is registered).
   */
  private startExchange(
    endpoint: Endpoint,
    method: string,
    path: string,
    payload: string,
    stream: boolean,
  ): Promise<{ request: http.ClientRequest; response: http.IncomingMessage }> {
    if (this.closed) return Promise.reject(new EtcdClosedError());
    return new Promise((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = {};
      if (method === 'PUT') {
        headers['content-type'] = 'application/x-www-form-urlencoded';
        headers['content-length'] = Buffer.byteLength(payload);
      }
      if (this.authorization !== null) headers.authorization = this.authorization;
      const requestOptions: https.RequestOptions = {
        method,
        protocol: endpoint.url.protocol,
        hostname: endpoint.url.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: endpoint.url.port === '' ? undefined : Number(endpoint.url.port),
        path,
        headers,
        agent: endpoint.secure
          ? stream
            ? this.streamHttps
            : this.unaryHttps
          : stream
            ? this.streamHttp
            : this.unaryHttp,
      };
      const request = endpoint.secure ? https.request(requestOptions) : http.request(requestOptions);
      this.inflight.add(request);
      let connected = false;
      let answered = false;
      const timeoutMs = this.options.requestTimeoutMs;
      const timer = setTimeout(() => {
        request.destroy(new Error(`no ${connected ? 'reply' : 'connection'} within ${timeoutMs} ms`));
      }, timeoutMs);
      const settle = (): void => clearTimeout(timer);
      request.on('socket', (socket: Socket) => {
        // A long poll may stay silent for hours: keep-alive probes notice a peer that vanished.
        if (stream) socket.setKeepAlive(true, 10_000);
        if (request.reusedSocket || isEstablished(socket, endpoint.secure)) {
          connected = true;
          return;
        }
        const event = endpoint.secure ? 'secureConnect' : 'connect';
        const onConnected = (): void => {
          connected = true;
        };
        socket.once(event, onConnected);
        request.once('close', () => socket.removeListener(event, onConnected));
      });
      request.on('error', (err: NodeJS.ErrnoException) => {
        settle();
        this.inflight.delete(request);
        if (answered) return; // reported through the response stream instead
        const reason = describeSocketError(err);
        if (err instanceof EtcdClosedError) reject(err);
        else if (!connected) reject(new UnreachedError(reason));
        else if (request.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE'))
          reject(new StaleSocketError(reason));
        else reject(new BrokenExchangeError(reason));
      });
      request.on('response', (response) => {
        answered = true;
        if (stream) settle();
        else {
          response.once('end', settle);
          response.once('close', settle);
        }
        response.once('close', () => this.inflight.delete(request));
        resolve({ request, response });
      });
      request.end(payload);
    });
  }
}

/** X-Etcd-Index of a reply, 0 when absent. */
export function etcdIndexOf(response: http.IncomingMessage): number {
  const raw = response.headers['x-etcd-index'];
  const n = Number(Array.isArray(raw) ? raw[0] : raw);
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

export function readReply(response: http.IncomingMessage): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    response.on('data', (chunk: Buffer) => chunks.push(chunk));
    response.once('end', () => {
      resolve({
        status: response.statusCode ?? 0,
        statusMessage: response.statusMessage ?? '',
        etcdIndex: etcdIndexOf(response),
        body: Buffer.concat(chunks).toString('utf8'),
      });
    });
    response.once('error', reject);
    response.once('aborted', () => reject(new Error('connection closed mid-reply')));
  });
}

/** etcd's v2 error object ({"errorCode":100,"message":...,"cause":...,"index":3}) or a bare HTTP error. */
function replyError(endpoint: Endpoint, path: string, reply: RawReply): EtcdV2ResponseError {
  try {
    const parsed = JSON.parse(reply.body) as {
      errorCode?: unknown;
      message?: unknown;
      cause?: unknown;
      index?: unknown;
    };
    if (typeof parsed.errorCode === 'number' && typeof parsed.message === 'string') {
      const cause = typeof parsed.cause === 'string' && parsed.cause !== '' ? ` (${parsed.cause})` : '';
      const index = typeof parsed.index === 'number' ? parsed.index : reply.etcdIndex;
      return new EtcdV2ResponseError(
        endpoint.label,
        path,
        reply.status,
        parsed.errorCode,
        `${parsed.message}${cause}`,
        index,
      );
    }
  } catch {
    // not an etcd error object
  }
  let message = `${reply.statusMessage} ${reply.body.trim().slice(0, 200)}`.trim();
  if (reply.status === 404) message += ' (does this etcd serve the v2 API? etcd 3.4 needs --enable-v2)';
  return new EtcdV2ResponseError(endpoint.label, path, reply.status, null, message, reply.etcdIndex);
}
