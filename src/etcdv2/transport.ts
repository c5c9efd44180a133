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

import type http from 'node:http';

import { EtcdClosedError, EtcdUnavailableError } from '../etcd/errors.js';
import {
  BrokenExchangeError,
  HttpExchanger,
  UnreachedError,
  readReply,
  type Exchange,
  type ExchangeRequest,
  type RawReply,
} from '../etcd/http-exchange.js';
import type { Endpoint, ResolvedOptions } from '../etcd/options.js';
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
  /** Sockets, TLS and deadlines, shared with the v3 transport's code; long polls are its streams. */
  private readonly http: HttpExchanger;
  private readonly authorization: string | null;

  constructor(private readonly options: ResolvedOptions) {
    this.http = new HttpExchanger(options.tls, options.requestTimeoutMs);
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
        reply = await this.http.exchange(endpoint, this.request(c.method, path, payload, false));
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
          return { body: JSON.parse(reply.body) as T, etcdIndex: etcdIndexOf(reply.headers) };
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
      let opened: Exchange;
      try {
        opened = await this.http.start(endpoint, this.request('GET', path, '', true));
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
        headers: opened.response.headers,
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
    this.http.close();
  }

  private *endpointsInTurn(): Generator<[number, Endpoint]> {
    const count = this.options.endpoints.length;
    for (let i = 0; i < count; i++) {
      const index = (this.preferred + i) % count;
      yield [index, this.options.endpoints[index]!];
    }
  }

  /** A v2 request: a form body for PUT, basic auth when credentials were given. */
  private request(method: string, path: string, payload: string, stream: boolean): ExchangeRequest {
    const headers: http.OutgoingHttpHeaders = {};
    if (method === 'PUT') {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers['content-length'] = Buffer.byteLength(payload);
    }
    if (this.authorization !== null) headers.authorization = this.authorization;
    return { method, path, headers, payload, stream };
  }
}

/** X-Etcd-Index of a reply, 0 when absent. */
export function etcdIndexOf(headers: http.IncomingHttpHeaders): number {
  const raw = headers['x-etcd-index'];
  const n = Number(Array.isArray(raw) ? raw[0] : raw);
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
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
      const index = typeof parsed.index === 'number' ? parsed.index : etcdIndexOf(reply.headers);
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
  return new EtcdV2ResponseError(endpoint.label, path, reply.status, null, message, etcdIndexOf(reply.headers));
}
