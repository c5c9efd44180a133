// HTTP/1.1 transport to etcd's v3 JSON gateway: endpoint failover, keep-alive agents, TLS, and the
// auth token. It moves JSON bodies; it knows nothing of keys or watches.
//
// Failover contract: a request moves to the next endpoint only when it surely was not processed
// (connection refused/unreachable, TLS handshake failure, timeout before the connection was up,
// "etcdserver: no leader"), or when the caller marks it retrySafe (reads, lease grants, auth).
// A mutation that fails after it was sent is reported, not resent: resending a txn could turn
// "created" into "already exists". The last endpoint that answered is tried first next time.

import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

import {
  EtcdClosedError,
  EtcdOutcomeUnknownError,
  EtcdProtocolError,
  EtcdResponseError,
  EtcdUnavailableError,
  GRPC_UNAVAILABLE,
} from './errors.js';
import type { Endpoint, ResolvedOptions } from './options.js';
import { FlannelTsError } from '../errors.js';

export interface CallOptions {
  /** Safe to send again (to this or another endpoint) after an ambiguous failure. */
  readonly retrySafe: boolean;
}

export interface OpenStream {
  readonly endpoint: Endpoint;
  /** The auth token the stream was opened with ('' for none): see invalidateToken. */
  readonly token: string;
  readonly request: http.ClientRequest;
  readonly response: http.IncomingMessage;
}

// How one exchange failed, which decides whether it may be tried again elsewhere. Internal: callers get
// EtcdUnavailableError or EtcdOutcomeUnknownError instead (src/etcd/errors.ts).
/** The request never reached etcd: safe to try elsewhere. */
class UnreachedError extends FlannelTsError {
  override name = 'UnreachedError';
  override readonly code = 'FLANNEL_TS_ERR_ETCD_UNREACHED';
}
/** A reused keep-alive socket turned out dead before anything came back: resend once. */
class StaleSocketError extends FlannelTsError {
  override name = 'StaleSocketError';
  override readonly code = 'FLANNEL_TS_ERR_ETCD_STALE_SOCKET';
}
/** The request was sent, then the exchange broke: it may or may not have been applied. */
class BrokenExchangeError extends FlannelTsError {
  override name = 'BrokenExchangeError';
  override readonly code = 'FLANNEL_TS_ERR_ETCD_EXCHANGE_BROKEN';
}

interface RawReply {
  readonly status: number;
  readonly statusMessage: string;
  readonly body: string;
}

const AUTH_RETRY_MESSAGES = /invalid auth token|revision of auth store is old|user name is empty/;
const NO_LEADER_MESSAGES = /no leader|not capable|leader changed/;

/** etcd messages meaning "log in again and retry". */
export function isAuthRetryableMessage(message: string): boolean {
  return AUTH_RETRY_MESSAGES.test(message);
}

/** Keep-alive sockets per endpoint for unary calls; callers fanning out requests bound themselves to this. */
export const UNARY_MAX_SOCKETS = 16;

export class EtcdTransport {
  private preferred = 0;
  /** null = not authenticated yet; '' = no token needed (no credentials, or auth disabled). */
  private token: string | null;
  private authenticating: Promise<string> | null = null;
  private closed = false;
  private readonly inflight = new Set<http.ClientRequest>();
  private readonly unaryHttp: http.Agent;
  private readonly unaryHttps: https.Agent;
  private readonly streamHttp: http.Agent;
  private readonly streamHttps: https.Agent;

  constructor(private readonly options: ResolvedOptions) {
    this.token = options.credentials === null ? '' : null;
    // Unary calls share a bounded pool (a listing may fan out one TimeToLive per lease); long-lived
    // watch streams get their own, uncapped agents so they never starve unary calls.
    const tlsOptions: https.AgentOptions = { minVersion: 'TLSv1.2', ...options.tls };
    this.unaryHttp = new http.Agent({ keepAlive: true, maxSockets: UNARY_MAX_SOCKETS });
    this.unaryHttps = new https.Agent({ keepAlive: true, maxSockets: UNARY_MAX_SOCKETS, ...tlsOptions });
    this.streamHttp = new http.Agent({ keepAlive: false });
    this.streamHttps = new https.Agent({ keepAlive: false, ...tlsOptions });
  }

  get endpoints(): readonly Endpoint[] {
    return this.options.endpoints;
  }

  /** POSTs body to path and returns the parsed JSON reply; authenticates (again) as needed. */
  async call<T>(path: string, body: object, opts: CallOptions): Promise<T> {
    return this.withToken((token) => this.callOnEndpoints<T>(path, body, opts, token));
  }

  /**
   * Opens a server-streaming call (POST with a body, reply streamed) on the first endpoint that
   * answers with HTTP 200. The caller owns the returned request and must destroy it.
   */
  async openStream(path: string, body: object): Promise<OpenStream> {
    return this.withToken((token) => this.openStreamOnEndpoints(path, body, token));
  }

  /**
   * Forgets token if it is still the current one, so that the next call logs in again. For
   * failures the transport cannot see itself (a watch canceled in-band for a bad token).
   */
  invalidateToken(token: string): void {
    if (this.options.credentials !== null && this.token === token) this.token = null;
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

  private async withToken<T>(run: (token: string) => Promise<T>): Promise<T> {
    let token = await this.currentToken();
    try {
      return await run(token);
    } catch (err) {
      const authRetryable = err instanceof EtcdResponseError && isAuthRetryableMessage(err.etcdMessage);
      if (this.options.credentials === null || !authRetryable) throw err;
      // The token expired (or auth was enabled after we found it disabled): get a new one, once.
      this.invalidateToken(token);
      token = await this.currentToken();
      return run(token);
    }
  }

  private currentToken(): Promise<string> {
    if (this.token !== null) return Promise.resolve(this.token);
    this.authenticating ??= this.authenticate().finally(() => {
      this.authenticating = null;
    });
    return this.authenticating;
  }

  private async authenticate(): Promise<string> {
    const credentials = this.options.credentials!;
    try {
      const reply = await this.callOnEndpoints<{ token?: string }>(
        '/v3/auth/authenticate',
        { name: credentials.username, password: credentials.password },
        { retrySafe: true },
        '',
      );
      if (typeof reply.token !== 'string' || reply.token === '') {
        throw new EtcdProtocolError('etcd /v3/auth/authenticate: reply carries no token');
      }
      this.token = reply.token;
    } catch (err) {
      // Like etcd's Go client: credentials against a cluster without auth are not an error.
      if (!(err instanceof EtcdResponseError && /authentication is not enabled/.test(err.etcdMessage))) throw err;
      this.token = '';
    }
    return this.token;
  }

  /** [index, endpoint] for each endpoint, in turn from the last one that answered. */
  private *endpointsInTurn(): Generator<[number, Endpoint]> {
    const count = this.options.endpoints.length;
    const first = this.preferred;
    for (let i = 0; i < count; i++) {
      const index = (first + i) % count;
      yield [index, this.options.endpoints[index]!];
    }
  }

  private async callOnEndpoints<T>(path: string, body: object, opts: CallOptions, token: string): Promise<T> {
    const payload = JSON.stringify(body);
    const attempts: string[] = [];
    for (const [index, endpoint] of this.endpointsInTurn()) {
      let reply: RawReply;
      try {
        reply = await this.exchangeResendingStale(endpoint, path, payload, token);
      } catch (err) {
        if (err instanceof UnreachedError || (opts.retrySafe && err instanceof BrokenExchangeError)) {
          attempts.push(`${endpoint.label}: ${err.message}`);
          continue;
        }
        if (err instanceof BrokenExchangeError) {
          throw new EtcdOutcomeUnknownError(
            `etcd ${path} at ${endpoint.label}: ${err.message} (the request may or may not have been applied)`,
            { cause: err },
          );
        }
        throw err;
      }
      const error = replyError(endpoint, path, reply);
      if (error !== null) {
        const moveOn =
          error.grpcCode === GRPC_UNAVAILABLE && (opts.retrySafe || NO_LEADER_MESSAGES.test(error.etcdMessage));
        if (moveOn) {
          attempts.push(`${endpoint.label}: ${error.etcdMessage}`);
          continue;
        }
        throw error;
      }
      this.preferred = index;
      try {
        return JSON.parse(reply.body) as T;
      } catch {
        throw new EtcdProtocolError(
          `etcd ${path} at ${endpoint.label}: reply is not JSON: ${reply.body.slice(0, 200)}`,
        );
      }
    }
    throw new EtcdUnavailableError(path, attempts);
  }

  private async openStreamOnEndpoints(path: string, body: object, token: string): Promise<OpenStream> {
    const payload = JSON.stringify(body);
    const attempts: string[] = [];
    for (const [index, endpoint] of this.endpointsInTurn()) {
      let opened: { request: http.ClientRequest; response: http.IncomingMessage };
      try {
        opened = await this.startExchange(endpoint, path, payload, token, true);
      } catch (err) {
        // Opening a watch changes nothing in etcd: any failure may move on.
        if (err instanceof UnreachedError || err instanceof StaleSocketError || err instanceof BrokenExchangeError) {
          attempts.push(`${endpoint.label}: ${err.message}`);
          continue;
        }
        throw err;
      }
      if (opened.response.statusCode !== 200) {
        const reply = await readReply(opened.response).catch((err: Error) => ({
          status: opened.response.statusCode ?? 0,
          statusMessage: opened.response.statusMessage ?? '',
          body: err.message,
        }));
        opened.request.destroy();
        const error = replyError(endpoint, path, reply)!;
        if (error.grpcCode === GRPC_UNAVAILABLE) {
          attempts.push(`${endpoint.label}: ${error.etcdMessage}`);
          continue;
        }
        throw error;
      }
      this.preferred = index;
      return { endpoint, token, ...opened };
    }
    throw new EtcdUnavailableError(path, attempts);
  }

  private async exchangeResendingStale(
    endpoint: Endpoint,
    path: string,
    payload: string,
    token: string,
  ): Promise<RawReply> {
    try {
      return await this.exchange(endpoint, path, payload, token);
    } catch (err) {
      if (!(err instanceof StaleSocketError)) throw err;
      return this.exchange(endpoint, path, payload, token);
    }
  }

  private async exchange(endpoint: Endpoint, path: string, payload: string, token: string): Promise<RawReply> {
    const { request, response } = await this.startExchange(endpoint, path, payload, token, false);
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
   * (requestTimeoutMs) covers, for a unary call, the whole exchange up to the end of the reply
   * body; for a stream, only the connection and the headers. Failures are classified for
   * failover: UnreachedError, StaleSocketError or BrokenExchangeError (see the file comment).
   */
  private startExchange(
    endpoint: Endpoint,
    path: string,
    payload: string,
    token: string,
    stream: boolean,
  ): Promise<{ request: http.ClientRequest; response: http.IncomingMessage }> {
    if (this.closed) return Promise.reject(new EtcdClosedError());
    return new Promise((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(payload),
      };
      if (token !== '') headers.authorization = token;
      // Like etcd's Go client WithRequireLeader (flannel uses it): etcd ends the stream when
      // this member loses its leader, so the watch moves on instead of going silent.
      if (stream) headers['grpc-metadata-hasleader'] = 'true';
      const requestOptions: https.RequestOptions = {
        method: 'POST',
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
        // A watch may legitimately stay silent for hours: TCP keep-alive probes are what
        // eventually notice a peer that vanished without closing the connection.
        if (stream) socket.setKeepAlive(true, 10_000);
        // A keep-alive socket handed over from the agent's queue of waiting requests is already
        // connected, yet reusedSocket is false: waiting for its 'connect' would wait forever (and
        // leave a listener behind per request, hence MaxListenersExceededWarning under load).
        if (request.reusedSocket || isEstablished(socket, endpoint.secure)) {
          connected = true;
          return;
        }
        const event = endpoint.secure ? 'secureConnect' : 'connect';
        const onConnected = (): void => {
          connected = true;
        };
        socket.once(event, onConnected);
        // The socket may outlive this request (keep-alive): leave nothing of it behind.
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
        if (stream) {
          settle();
        } else {
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

/** Connected (and, for TLS, past the handshake): a socket that already served a request. */
function isEstablished(socket: Socket, secure: boolean): boolean {
  if (socket.connecting || socket.destroyed) return false;
  if (!secure) return true;
  // TLSSocket.getProtocol(): 'unknown' while the handshake runs, null before or without a connection.
  const protocol = (socket as TLSSocket).getProtocol();
  return protocol !== null && protocol !== 'unknown';
}

const UNTRUSTED_SERVER_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
]);
const CLIENT_CERT_REJECTED_CODES = new Set([
  'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE',
  'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
  'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
  'ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN',
]);

/** A one-line reason, with a hint for the TLS failures a flag can fix. */
function describeSocketError(err: NodeJS.ErrnoException & { reason?: string }): string {
  const code = err.code;
  const text = typeof err.reason === 'string' && code?.startsWith('ERR_SSL_') ? err.reason : err.message;
  const reason = code !== undefined && !text.includes(code) ? `${code}: ${text}` : text;
  if (code !== undefined && UNTRUSTED_SERVER_CODES.has(code)) {
    return `${reason} (the server's certificate is not trusted: give etcd's CA as caFile / --etcd-cafile)`;
  }
  if (code !== undefined && CLIENT_CERT_REJECTED_CODES.has(code)) {
    return `${reason} (etcd rejected the TLS handshake: it wants a client certificate it trusts, see certFile/keyFile)`;
  }
  return reason;
}

function readReply(response: http.IncomingMessage): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    response.on('data', (chunk: Buffer) => chunks.push(chunk));
    response.once('end', () => {
      resolve({
        status: response.statusCode ?? 0,
        statusMessage: response.statusMessage ?? '',
        body: Buffer.concat(chunks).toString('utf8'),
      });
    });
    response.once('error', reject);
    response.once('aborted', () => reject(new Error('connection closed mid-reply')));
  });
}

/** Maps a non-200 reply to an error; null for a 200. */
function replyError(endpoint: Endpoint, path: string, reply: RawReply): EtcdResponseError | null {
  if (reply.status === 200) return null;
  try {
    const parsed = JSON.parse(reply.body) as { error?: unknown; message?: unknown; code?: unknown };
    const message =
      typeof parsed.message === 'string' ? parsed.message : typeof parsed.error === 'string' ? parsed.error : null;
    if (message !== null && typeof parsed.code === 'number') {
      return new EtcdResponseError(endpoint.label, path, parsed.code, reply.status, message);
    }
  } catch {
    // not a gateway error object: fall through
  }
  let message = `${reply.statusMessage} ${reply.body.trim().slice(0, 200)}`.trim();
  if (reply.status === 404) message += ' (is this etcd >= 3.4 serving the v3 JSON gateway at /v3/?)';
  return new EtcdResponseError(endpoint.label, path, null, reply.status, message);
}
