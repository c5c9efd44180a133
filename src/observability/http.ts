// flanneld's health endpoints (--healthz-ip/--healthz-port) plus Prometheus /metrics:
//   GET /healthz -> 200 "flanneld is running"
//   GET /readyz  -> 200 "flanneld is ready" once isReady(), else 503 "flanneld is not ready yet"
//   GET /metrics -> the exposition of renderMetrics(source)
// Bodies are flanneld's, byte for byte, so probes written for flanneld keep working.

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { METRICS_CONTENT_TYPE, renderMetrics, type MetricsSource } from './metrics.js';

export const HEALTHZ_BODY = 'flanneld is running';
export const READY_BODY = 'flanneld is ready';
export const NOT_READY_BODY = 'flanneld is not ready yet';

export interface HealthServerOptions {
  /** Address to bind (flanneld's --healthz-ip, default 0.0.0.0). */
  readonly host: string;
  /** Port to bind (--healthz-port); 0 picks a free port (tests). */
  readonly port: number;
  /** Read on every /metrics scrape. */
  readonly source: MetricsSource;
  /** Consulted on every /readyz request; true once subnet.env is written. */
  readonly isReady: () => boolean;
  /** Told about a failure to render /metrics (the request gets a 500). */
  readonly onError?: (err: Error) => void;
}

export interface HealthServer {
  /** The bound port (the real one when port 0 was asked for). */
  readonly port: number;
  readonly host: string;
  /** Stops listening and closes idle keep-alive connections. */
  close(): Promise<void>;
}

const TEXT = 'text/plain; charset=utf-8';

function reply(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  contentType: string,
  body: string,
  extra: Record<string, string> = {},
): void {
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body), ...extra });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function bindErrorMessage(err: NodeJS.ErrnoException, host: string, port: number): string {
  const where = `${host}:${port}`;
  switch (err.code) {
    case 'EADDRINUSE':
      return `cannot serve /healthz on ${where}: the port is already in use (choose another --healthz-port)`;
    case 'EADDRNOTAVAIL':
      return `cannot serve /healthz on ${where}: no local interface has that address (check --healthz-ip)`;
    case 'EACCES':
      return (
        `cannot serve /healthz on ${where}: permission denied ` + '(ports below 1024 need root or CAP_NET_BIND_SERVICE)'
      );
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot serve /healthz on ${where}: --healthz-ip is not a valid address`;
    default:
      return `cannot serve /healthz on ${where}: ${err.message}`;
  }
}

/** Resolves once listening; rejects with a message naming the flag to fix if the bind fails. */
export function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const { host, port, source, isReady, onError } = options;
  const server = createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      reply(req, res, 405, TEXT, 'method not allowed\n', { Allow: 'GET, HEAD' });
      return;
    }
    const path = (req.url ?? '/').split('?', 1)[0];
    switch (path) {
      case '/healthz':
        reply(req, res, 200, TEXT, HEALTHZ_BODY);
        return;
      case '/readyz':
        if (isReady()) reply(req, res, 200, TEXT, READY_BODY);
        else reply(req, res, 503, TEXT, NOT_READY_BODY);
        return;
      case '/metrics': {
        let body: string;
        try {
          body = renderMetrics(source);
        } catch (err) {
          onError?.(err as Error);
          reply(req, res, 500, TEXT, 'cannot render metrics\n');
          return;
        }
        reply(req, res, 200, METRICS_CONTENT_TYPE, body);
        return;
      }
      default:
        reply(req, res, 404, TEXT, '404 page not found\n');
    }
  });

  return new Promise((resolve, reject) => {
    const onListenError = (err: NodeJS.ErrnoException) => {
      reject(new Error(bindErrorMessage(err, host, port), { cause: err }));
    };
    server.once('error', onListenError);
    server.listen({ host, port }, () => {
      server.off('error', onListenError);
      // After start-up a server error (rare: e.g. EMFILE on accept) must not crash the agent.
      server.on('error', (err) => onError?.(err));
      const bound = server.address() as AddressInfo;
      resolve({
        port: bound.port,
        host: bound.address,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeIdleConnections();
          }),
      });
    });
  });
}
