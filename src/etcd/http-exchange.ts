// One HTTP/1.1 exchange with an etcd endpoint, shared by the v3 (JSON gateway) and v2 (keys API)
// transports: keep-alive agents, TLS, a deadline, and a classification of failures that tells the
// transport whether the request may be sent elsewhere:
//   UnreachedError      never reached etcd (no connection, TLS handshake failure): safe to resend;
//   StaleSocketError    a reused keep-alive socket was dead before anything came back: resend once;
//   BrokenExchangeError sent, then the exchange broke: it may or may not have been applied.

import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

import { EtcdClosedError } from './errors.js';
import type { Endpoint, TlsMaterial } from './options.js';

export class UnreachedError extends Error {}
export class StaleSocketError extends Error {}
export class BrokenExchangeError extends Error {}

export interface ExchangeRequest {
  readonly method: string;
  /** Path and query. */
  readonly path: string;
  readonly headers: http.OutgoingHttpHeaders;
  readonly payload: string;
  /**
   * A long-lived reply (a watch): its own uncapped agents, TCP keep-alive probes, and a deadline
   * that ends once the headers are in.
   */
  readonly stream: boolean;
}

export interface RawReply {
  readonly status: number;
  readonly statusMessage: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

export interface Exchange {
  readonly request: http.ClientRequest;
  readonly response: http.IncomingMessage;
}

/** Keep-alive sockets per endpoint for unary calls; callers fanning out requests bound themselves to this. */
export const UNARY_MAX_SOCKETS = 16;

export class HttpExchanger {
  private closedFlag = false;
  private readonly inflight = new Set<http.ClientRequest>();
  private readonly unaryHttp: http.Agent;
  private readonly unaryHttps: https.Agent;
  private readonly streamHttp: http.Agent;
  private readonly streamHttps: https.Agent;

  constructor(
    tls: TlsMaterial,
    /** Deadline of a unary exchange up to the end of its reply; of a stream up to its headers. */
    private readonly timeoutMs: number,
  ) {
    // Unary calls share a bounded pool; long-lived streams get their own, uncapped agents so they
    // never starve unary calls.
    const tlsOptions: https.AgentOptions = { minVersion: 'TLSv1.2', ...tls };
    this.unaryHttp = new http.Agent({ keepAlive: true, maxSockets: UNARY_MAX_SOCKETS });
    this.unaryHttps = new https.Agent({ keepAlive: true, maxSockets: UNARY_MAX_SOCKETS, ...tlsOptions });
    this.streamHttp = new http.Agent({ keepAlive: false });
    this.streamHttps = new https.Agent({ keepAlive: false, ...tlsOptions });
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Aborts in-flight requests and closes every socket; later exchanges fail with EtcdClosedError. */
  close(): void {
    this.closedFlag = true;
    for (const req of this.inflight) req.destroy(new EtcdClosedError());
    this.inflight.clear();
    this.unaryHttp.destroy();
    this.unaryHttps.destroy();
    this.streamHttp.destroy();
    this.streamHttps.destroy();
  }

  /** A unary exchange, whole reply read; resent once when a reused socket turns out stale. */
  async exchange(endpoint: Endpoint, req: ExchangeRequest): Promise<RawReply> {
    try {
      return await this.exchangeOnce(endpoint, req);
    } catch (err) {
      if (!(err instanceof StaleSocketError)) throw err;
      return this.exchangeOnce(endpoint, req);
    }
  }

  private async exchangeOnce(endpoint: Endpoint, req: ExchangeRequest): Promise<RawReply> {
    const { request, response } = await this.start(endpoint, req);
    try {
      return await readReply(response);
    } catch (err) {
      if (this.closedFlag) throw new EtcdClosedError();
      throw new BrokenExchangeError(`reply broken off: ${(err as Error).message}`);
    } finally {
      this.inflight.delete(request);
    }
  }

  /**
   * Sends the request and resolves once the response headers are in; failures are classified (see
   * the file comment). The caller owns the returned request (a stream's: it must destroy it).
   */
  start(endpoint: Endpoint, req: ExchangeRequest): Promise<Exchange> {
    if (this.closedFlag) return Promise.reject(new EtcdClosedError());
    const { stream } = req;
    return new Promise((resolve, reject) => {
      const requestOptions: https.RequestOptions = {
        method: req.method,
        protocol: endpoint.url.protocol,
        hostname: endpoint.url.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: endpoint.url.port === '' ? undefined : Number(endpoint.url.port),
        path: req.path,
        headers: req.headers,
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
      const timer = setTimeout(() => {
        request.destroy(new Error(`no ${connected ? 'reply' : 'connection'} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
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
      request.end(req.payload);
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

/** Reads a whole reply body. */
export function readReply(response: http.IncomingMessage): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    response.on('data', (chunk: Buffer) => chunks.push(chunk));
    response.once('end', () => {
      resolve({
        status: response.statusCode ?? 0,
        statusMessage: response.statusMessage ?? '',
        headers: response.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
    });
    response.once('error', reject);
    response.once('aborted', () => reject(new Error('connection closed mid-reply')));
  });
}
