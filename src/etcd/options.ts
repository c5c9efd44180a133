// Client configuration, validated at construction so that a typo in a flag fails at startup
// with a message naming the flag's value, not later as an obscure connection error.

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { EtcdOptionsError } from './errors.js';

export interface EtcdClientOptions {
  /** http:// or https:// URLs; a single string may hold several, comma-separated (flanneld's --etcd-endpoints). */
  readonly endpoints: string | readonly string[];
  /** PEM CA bundle used to verify https endpoints (--etcd-cafile). */
  readonly caFile?: string;
  /** PEM client certificate (--etcd-certfile); used only together with keyFile. */
  readonly certFile?: string;
  /** PEM private key of the client certificate (--etcd-keyfile). */
  readonly keyFile?: string;
  /** etcd user (--etcd-username); used only together with password. */
  readonly username?: string;
  readonly password?: string;
  /** Deadline of one unary request on one endpoint, connection included. Default 10 s. */
  readonly requestTimeoutMs?: number;
}

export interface Endpoint {
  /** scheme://host:port, as shown in messages. */
  readonly label: string;
  readonly url: URL;
  readonly secure: boolean;
}

/** Material for https endpoints; ca undefined = the system's roots. */
export interface TlsMaterial {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

export interface ResolvedOptions {
  readonly endpoints: readonly Endpoint[];
  readonly tls: TlsMaterial;
  readonly credentials: { readonly username: string; readonly password: string } | null;
  readonly requestTimeoutMs: number;
}

export function parseEndpoints(spec: string | readonly string[]): Endpoint[] {
  const raw = (typeof spec === 'string' ? [spec] : spec)
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (raw.length === 0) throw new EtcdOptionsError('etcd: no endpoints given');
  return raw.map((text) => {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new EtcdOptionsError(
        `etcd: bad endpoint ${JSON.stringify(text)}: not a URL (expected http://host:port or https://host:port)`,
      );
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new EtcdOptionsError(`etcd: bad endpoint ${JSON.stringify(text)}: scheme must be http or https`);
    }
    if (url.hostname === '') throw new EtcdOptionsError(`etcd: bad endpoint ${JSON.stringify(text)}: no host`);
    return { label: `${url.protocol}//${url.host}`, url, secure: url.protocol === 'https:' };
  });
}

function readPem(file: string, role: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new EtcdOptionsError(`etcd: cannot read ${role} ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Loads and checks the TLS files. Policy (documented choice):
 * - certFile and keyFile are used only when both are given, as flannel does; giving just one is
 *   an error here (flannel silently falls back to no TLS, which hides the typo).
 * - caFile is always loaded when given and verifies https endpoints, even without a client
 *   certificate (flannel ignores it in that case and would fail against a private CA).
 * - TLS applies only to https:// endpoints; http:// endpoints stay plain, as with flannel.
 */
export function loadTlsMaterial(caFile?: string, certFile?: string, keyFile?: string): TlsMaterial {
  const hasCert = certFile !== undefined && certFile !== '';
  const hasKey = keyFile !== undefined && keyFile !== '';
  if (hasCert !== hasKey) {
    const given = hasCert ? `certFile ${certFile}` : `keyFile ${keyFile}`;
    throw new EtcdOptionsError(`etcd: a client certificate needs both certFile and keyFile (got only ${given})`);
  }
  const material: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  if (caFile !== undefined && caFile !== '') {
    const ca = readPem(caFile, 'CA file');
    try {
      new X509Certificate(ca);
    } catch (err) {
      throw new EtcdOptionsError(`etcd: CA file ${caFile} is not a PEM certificate: ${(err as Error).message}`, {
        cause: err,
      });
    }
    material.ca = ca;
  }
  if (hasCert && hasKey) {
    const cert = readPem(certFile, 'certificate file');
    const key = readPem(keyFile, 'key file');
    try {
      new X509Certificate(cert);
    } catch (err) {
      throw new EtcdOptionsError(
        `etcd: certificate file ${certFile} is not a PEM certificate: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    try {
      createPrivateKey(key);
    } catch (err) {
      throw new EtcdOptionsError(`etcd: key file ${keyFile} is not a PEM private key: ${(err as Error).message}`, {
        cause: err,
      });
    }
    try {
      createSecureContext({ cert, key });
    } catch (err) {
      throw new EtcdOptionsError(
        `etcd: key file ${keyFile} does not match certificate file ${certFile}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    material.cert = cert;
    material.key = key;
  }
  return material;
}

export function resolveOptions(options: EtcdClientOptions): ResolvedOptions {
  const endpoints = parseEndpoints(options.endpoints);
  const tls = loadTlsMaterial(options.caFile, options.certFile, options.keyFile);
  const hasUser = options.username !== undefined && options.username !== '';
  const hasPassword = options.password !== undefined && options.password !== '';
  if (hasUser !== hasPassword) {
    throw new EtcdOptionsError('etcd: username and password must be given together');
  }
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  if (!(requestTimeoutMs > 0))
    throw new EtcdOptionsError(`etcd: requestTimeoutMs must be > 0 (got ${requestTimeoutMs})`);
  return {
    endpoints,
    tls,
    credentials: hasUser ? { username: options.username!, password: options.password! } : null,
    requestTimeoutMs,
  };
}
