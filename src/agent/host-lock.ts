// One agent per host: a lock taken before anything on the host is touched, so that a second agent
// cannot replace the first one's route and then, failing, take it away with its own flannel0.
//
// The lock is an abstract unix socket (a name, no file: `\0flannel-ts/host-lock`). Abstract
// sockets belong to the network namespace, which is what "host" means for an overlay agent: one
// agent per namespace, and agents in different namespaces (containers, the test labs) do not see
// each other. The kernel releases it with the holder's last descriptor, so a killed agent leaves no
// stale lock. Whoever connects is told who holds it (pid, mode, since when), and a refused agent
// says so in one line.
import { connect, createServer, type Server } from 'node:net';
import { FlannelTsError } from '../errors.js';

export const HOST_LOCK_NAME = 'flannel-ts/host-lock';
const ASK_TIMEOUT_MS = 1000;

export interface LockHolder {
  readonly pid: number;
  /** "static" or "flanneld". */
  readonly mode: string;
  /** ISO 8601. */
  readonly since: string;
}

/** Another agent holds the lock (holder: who, when it answered). */
export class HostLockHeldError extends FlannelTsError {
  override name = 'HostLockHeldError';
  override readonly code = 'FLANNEL_TS_ERR_HOST_LOCKED';
  constructor(readonly holder: LockHolder | null) {
    super(
      holder === null
        ? 'another flannel-ts agent runs in this network namespace ' +
            '(it holds the host lock but did not say who it is): stop it first'
        : `another flannel-ts agent runs in this network namespace: pid ${holder.pid} ` +
            `(${holder.mode} mode, since ${holder.since}); stop it first`,
    );
  }
}

/** The host lock could not be taken for a reason other than another agent holding it. */
export class HostLockError extends FlannelTsError {
  override name = 'HostLockError';
  override readonly code = 'FLANNEL_TS_ERR_HOST_LOCK';
}

export interface HostLock {
  readonly holder: LockHolder;
  release(): Promise<void>;
}

/**
 * Takes the host lock for this process; rejects with HostLockHeldError (naming the holder) if
 * another process holds it. The lock does not keep the process alive; it is released by release()
 * or when the process exits.
 */
export async function takeHostLock(mode: string, name: string = HOST_LOCK_NAME): Promise<HostLock> {
  const holder: LockHolder = { pid: process.pid, mode, since: new Date().toISOString() };
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.end(`${JSON.stringify(holder)}\n`);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: `\0${name}` }, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new HostLockHeldError(await askHolder(name));
    throw new HostLockError(`cannot take the host lock: ${(err as Error).message}`, { cause: err });
  }
  server.unref();
  return { holder, release: () => close(server) };
}

/** Who holds the lock, as it answers; null if it does not answer in time. */
function askHolder(name: string): Promise<LockHolder | null> {
  return new Promise((resolve) => {
    let text = '';
    const socket = connect({ path: `\0${name}` });
    const done = (holder: LockHolder | null): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(holder);
    };
    const timer = setTimeout(() => done(null), ASK_TIMEOUT_MS);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', () => done(null));
    socket.on('end', () => {
      try {
        const h = JSON.parse(text) as LockHolder;
        done(typeof h.pid === 'number' && typeof h.mode === 'string' ? h : null);
      } catch {
        done(null);
      }
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
