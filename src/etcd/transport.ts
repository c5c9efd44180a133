// HTTP/1.1 transport to etcd's v3 JSON gateway: endpoint failover, keep-alive agents, TLS, and the
// auth token. It moves JSON bodies; it knows nothing of keys or watches.
//
// Failover contract: a request moves to the next endpoint only when it surely was not processed
// (connection refused/unreachable, TLS handshake failure, timeout before the connection was up,
// "etcdserver: no leader"), or when the caller marks it retrySafe (reads, lease grants, auth).
// A mutation that fails after it was sent is reported, not resent: resending a txn could turn
// "created" into "already exists". The last endpoint that answered is tried first next time.

import type http from 'node:http';

import { EtcdResponseError, EtcdUnavailableError, GRPC_UNAVAILABLE } from './errors.js';
import {
  BrokenExchangeError,
  HttpExchanger,
  StaleSocketError,
  UnreachedError,
  readReply,
  type Exchange,
  type ExchangeRequest,
  type RawReply,
} from './http-exchange.js';
import type { Endpoint, ResolvedOptions } from './options.js';

export { UNARY_MAX_SOCKETS } from './http-exchange.js';

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

const AUTH_RETRY_MESSAGES = /invalid auth token|revision of auth store is old|user name is empty/;
const NO_LEADER_MESSAGES = /no leader|not capable|leader changed/;

export function isAuthRetryable(err: unknown): boolean {
  return err instanceof EtcdResponseError && isAuthRetryableMessage(err.etcdMessage);
}

/** etcd messages meaning "log in again and retry". */
export function isAuthRetryableMessage(message: string): boolean {
  return AUTH_RETRY_MESSAGES.test(message);
}

export class EtcdTransport {
  private preferred = 0;
  /** null = not authenticated yet; '' = no token needed (no credentials, or auth disabled). */
  private token: string | null;
  private authenticating: Promise<string> | null = null;
  /** Sockets, TLS and deadlines; unary calls share a bounded pool (a listing may fan out one TimeToLive per lease). */
  private readonly http: HttpExchanger;

  constructor(private readonly options: ResolvedOptions) {
    this.token = options.credentials === null ? '' : null;
    this.http = new HttpExchanger(options.tls, options.requestTimeoutMs);
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
    this.http.close();
  }

  private async withToken<T>(run: (token: string) => Promise<T>): Promise<T> {
    let token = await this.currentToken();
    try {
      return await run(token);
    } catch (err) {
      if (this.options.credentials === null || !isAuthRetryable(err)) throw err;
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
        throw new Error('etcd /v3/auth/authenticate: reply carries no token');
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
        reply = await this.http.exchange(endpoint, request(path, payload, token, false));
      } catch (err) {
        if (err instanceof UnreachedError || (opts.retrySafe && err instanceof BrokenExchangeError)) {
          attempts.push(`${endpoint.label}: ${err.message}`);
          continue;
        }
        if (err instanceof BrokenExchangeError) {
          throw new Error(
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
        throw new Error(`etcd ${path} at ${endpoint.label}: reply is not JSON: ${reply.body.slice(0, 200)}`);
      }
    }
    throw new EtcdUnavailableError(path, attempts);
  }

  private async openStreamOnEndpoints(path: string, body: object, token: string): Promise<OpenStream> {
    const payload = JSON.stringify(body);
    const attempts: string[] = [];
    for (const [index, endpoint] of this.endpointsInTurn()) {
      let opened: Exchange;
      try {
        opened = await this.http.start(endpoint, request(path, payload, token, true));
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
          headers: opened.response.headers,
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
}

/** A POST of a JSON body to etcd's gateway, with the auth token if any. */
function request(path: string, payload: string, token: string, stream: boolean): ExchangeRequest {
  const headers: http.OutgoingHttpHeaders = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
  };
  if (token !== '') headers.authorization = token;
  // Like etcd's Go client WithRequireLeader (flannel uses it): etcd ends the stream when this
  // member loses its leader, so the watch moves on instead of going silent.
  if (stream) headers['grpc-metadata-hasleader'] = 'true';
  return { method: 'POST', path, headers, payload, stream };
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
