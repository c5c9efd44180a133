// The embedded registry: a KvStore kept in one JSON file, so several agents on one machine (or in
// network namespaces of one machine) share leases without etcd.
//
// - Writes are read-modify-write under an exclusive lock file (`<path>.lock`, created with O_EXCL),
//   and replace the file atomically (temp file in the same directory + rename): readers never lock
//   and never see a partial file.
// - A lock older than `lockStaleMs` is taken to be left by a crashed writer and removed. The critical
//   section is a few milliseconds, so the stale timeout (10 s) leaves a wide margin.
// - Revisions are persisted with a bounded event history (the last `historyLimit` events); a watch
//   that falls behind the history gets onCompacted, exactly as with etcd.
// - TTL expiry is evaluated on read: expired keys are invisible to get/list at once, and the next
//   writer (or a polling watcher) deletes them, recording delete events.
// - Watches poll the file (every `pollIntervalMs`) and deliver history after their cursor.

import { randomUUID } from 'node:crypto';
import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { KeyValue, KvStore, Listing, Watch, WatchEvent, WatchHandlers } from './kv.js';
import { FileWriteError, describeCause, makeDirectory, writeFileAtomically } from './file-writes.js';
import { ResetDetector } from './registry-reset.js';
import { FlannelTsError } from '../errors.js';

/** The registry file is not JSON, or not a flannel-ts registry. */
export class FileRegistryFormatError extends FlannelTsError {
  override name = 'FileRegistryFormatError';
  override readonly code = 'FLANNEL_TS_ERR_FILE_REGISTRY_FORMAT';
}

/** The registry's lock file stayed taken (and fresh) for longer than the lock timeout. */
export class FileRegistryLockError extends FlannelTsError {
  override name = 'FileRegistryLockError';
  override readonly code = 'FLANNEL_TS_ERR_FILE_REGISTRY_LOCKED';
}

/** A call on the file registry after close(). */
export class FileRegistryClosedError extends FlannelTsError {
  override name = 'FileRegistryClosedError';
  override readonly code = 'FLANNEL_TS_ERR_FILE_REGISTRY_CLOSED';
}

interface StoredKey {
  value: string;
  modRevision: number;
  expiresAt: number | null;
}

type StoredEvent =
  | { revision: number; type: 'put'; key: string; value: string; expiresAt: number | null }
  | { revision: number; type: 'delete'; key: string };

interface FileState {
  format: 'flannel-ts-registry/1';
  revision: number;
  /** History at or below this revision has been dropped. */
  compactedThrough: number;
  keys: Record<string, StoredKey>;
  history: StoredEvent[];
}

export interface FileKvOptions {
  readonly path: string;
  /** Milliseconds since the epoch, for TTLs. Default Date.now. */
  readonly now?: () => number;
  readonly pollIntervalMs?: number;
  readonly lockStaleMs?: number;
  readonly lockTimeoutMs?: number;
  readonly historyLimit?: number;
}

function emptyState(): FileState {
  return { format: 'flannel-ts-registry/1', revision: 1, compactedThrough: 0, keys: {}, history: [] };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class FileKvStore implements KvStore {
  private readonly path: string;
  private readonly lockPath: string;
  private readonly now: () => number;
  private readonly pollIntervalMs: number;
  private readonly lockStaleMs: number;
  private readonly lockTimeoutMs: number;
  private readonly historyLimit: number;
  private readonly watches = new Set<{ stop(): void; endAsCompacted(): void }>();
  /**
   * Every read goes through it: a revision that went back (the file deleted or replaced by an older
   * copy) is a reset.
   */
  private readonly identity = new ResetDetector();
  private closed = false;

  constructor(options: FileKvOptions) {
    this.path = options.path;
    this.lockPath = `${options.path}.lock`;
    this.now = options.now ?? Date.now;
    this.pollIntervalMs = options.pollIntervalMs ?? 100;
    this.lockStaleMs = options.lockStaleMs ?? 10_000;
    this.lockTimeoutMs = options.lockTimeoutMs ?? 15_000;
    this.historyLimit = options.historyLimit ?? 1000;
    this.identity.subscribe(() => {
      for (const w of [...this.watches]) w.endAsCompacted();
    });
  }

  onReset(listener: (reason: string) => void): () => void {
    return this.identity.subscribe((reason) => listener(`file registry ${this.path}: ${reason}`));
  }

  async get(key: string): Promise<KeyValue | null> {
    const state = await this.read();
    const k = state.keys[key];
    return k === undefined || this.expired(k) ? null : toKv(key, k);
  }

  async list(prefix: string): Promise<Listing> {
    const state = await this.read();
    const kvs = Object.keys(state.keys)
      .filter((k) => k.startsWith(prefix) && !this.expired(state.keys[k]!))
      .sort()
      .map((k) => toKv(k, state.keys[k]!));
    return { kvs, revision: state.revision };
  }

  async createIfAbsent(key: string, value: string, ttlSeconds: number): Promise<boolean> {
    return this.mutate((state) => {
      if (state.keys[key] !== undefined) return false;
      this.write(state, key, value, ttlSeconds);
      return true;
    });
  }

  async put(key: string, value: string, ttlSeconds: number): Promise<void> {
    await this.mutate((state) => {
      this.write(state, key, value, ttlSeconds);
      return undefined;
    });
  }

  async delete(key: string): Promise<boolean> {
    return this.mutate((state) => {
      if (state.keys[key] === undefined) return false;
      this.remove(state, key);
      return true;
    });
  }

  watchPrefix(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    let cursor = fromRevision;
    let stopped = false;
    let timer: NodeJS.Timeout | null = null;
    let failing = false;
    const entry = {
      stop: () => {
        stopped = true;
        if (timer !== null) clearTimeout(timer);
        this.watches.delete(entry);
      },
      endAsCompacted: () => {
        if (stopped) return;
        entry.stop();
        handlers.onCompacted();
      },
    };
    this.watches.add(entry);

    const poll = async (): Promise<void> => {
      timer = null;
      if (stopped) return;
      try {
        let state = await this.read();
        if (Object.values(state.keys).some((k) => this.expired(k))) {
          await this.mutate(() => undefined); // the sweep records the expiries as delete events
          state = await this.read();
        }
        failing = false;
        if (stopped) return;
        if (cursor <= state.compactedThrough) {
          entry.stop();
          handlers.onCompacted();
          return;
        }
        const events: WatchEvent[] = [];
        let last = 0;
        for (const e of state.history) {
          if (e.revision < cursor || !e.key.startsWith(prefix)) continue;
          events.push(
            e.type === 'put'
              ? { type: 'put', kv: { key: e.key, value: e.value, modRevision: e.revision, expiresAt: e.expiresAt } }
              : { type: 'delete', key: e.key, modRevision: e.revision },
          );
          last = e.revision;
        }
        cursor = Math.max(cursor, state.revision + 1);
        if (events.length > 0) handlers.onEvents(events, last);
      } catch (err) {
        if (!failing) handlers.onError?.(err as Error);
        failing = true;
      }
      if (!stopped) {
        timer = setTimeout(() => void poll(), this.pollIntervalMs);
        timer.unref();
      }
    };
    timer = setTimeout(() => void poll(), 0);
    timer.unref();
    return { close: () => entry.stop() };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of [...this.watches]) w.stop();
  }

  // --- internals --------------------------------------------------------------------------------

  private expired(k: StoredKey): boolean {
    return k.expiresAt !== null && k.expiresAt <= this.now();
  }

  private async read(): Promise<FileState> {
    if (this.closed) throw new FileRegistryClosedError('file kv: store closed');
    const sent = this.identity.mark();
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        const empty = emptyState();
        this.identity.observe(empty.revision, null, sent);
        return empty;
      }
      throw err;
    }
    let state: FileState;
    try {
      state = JSON.parse(text) as FileState;
    } catch (err) {
      throw new FileRegistryFormatError(
        `file kv: ${this.path} is not a valid registry file: ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (state === null || state.format !== 'flannel-ts-registry/1' || typeof state.keys !== 'object') {
      throw new FileRegistryFormatError(`file kv: ${this.path} is not a flannel-ts registry file`);
    }
    this.identity.observe(state.revision, null, sent);
    return state;
  }

  /** Read-modify-write under the lock; the file is rewritten only when the revision moved. */
  private async mutate<T>(change: (state: FileState) => T): Promise<T> {
    const token = await this.lock();
    try {
      const state = await this.read();
      const before = state.revision;
      for (const [key, k] of Object.entries(state.keys)) {
        if (this.expired(k)) this.remove(state, key);
      }
      const result = change(state);
      if (state.revision !== before) {
        const excess = state.history.length - this.historyLimit;
        if (excess > 0) {
          state.compactedThrough = state.history[excess - 1]!.revision;
          state.history = state.history.slice(excess);
        }
        await writeFileAtomically(this.path, JSON.stringify(state), 0o644, 'the file registry');
      }
      return result;
    } finally {
      await this.unlock(token);
    }
  }

  /** Removes the lock only if it is still ours (a writer stalled past lockStaleMs may have lost it). */
  private async unlock(token: string): Promise<void> {
    const held = await readFile(this.lockPath, 'utf8').catch(() => null);
    if (held === token) await unlink(this.lockPath).catch(() => undefined);
  }

  /**
   * Breaks a stale lock: renames it away (only one breaker can win the rename), then checks that
   * what it took really was stale; a fresh lock taken by mistake (another writer re-locked since
   * our stat) is put back.
   */
  private async breakStaleLock(): Promise<void> {
    const taken = `${this.lockPath}.stale-${process.pid}-${randomUUID()}`;
    try {
      await rename(this.lockPath, taken);
    } catch {
      return; // gone already: someone else broke or released it
    }
    const st = await stat(taken).catch(() => null);
    if (st !== null && Date.now() - st.mtimeMs <= this.lockStaleMs) {
      await link(taken, this.lockPath).catch(() => undefined);
    }
    await unlink(taken).catch(() => undefined);
  }

  private write(state: FileState, key: string, value: string, ttlSeconds: number): void {
    state.revision++;
    const expiresAt = ttlSeconds > 0 ? this.now() + ttlSeconds * 1000 : null;
    state.keys[key] = { value, modRevision: state.revision, expiresAt };
    state.history.push({ revision: state.revision, type: 'put', key, value, expiresAt });
  }

  private remove(state: FileState, key: string): void {
    state.revision++;
    delete state.keys[key];
    state.history.push({ revision: state.revision, type: 'delete', key });
  }

  /** Takes the lock file; returns the token written into it. */
  private async lock(): Promise<string> {
    const deadline = Date.now() + this.lockTimeoutMs;
    const token = `${process.pid} ${randomUUID()}\n`;
    for (;;) {
      if (this.closed) throw new FileRegistryClosedError('file kv: store closed');
      let fh;
      try {
        fh = await open(this.lockPath, 'wx', 0o644);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') {
          // The directory does not exist yet.
          await makeDirectory(dirname(this.lockPath), 'the file registry');
          continue;
        }
        if (code !== 'EEXIST') {
          throw new FileWriteError(
            `file kv: cannot create the lock ${this.lockPath}: ${describeCause(err)}`,
            this.lockPath,
            err,
          );
        }
      }
      if (fh !== undefined) {
        // The lock is ours only with its token in it. Failing that (a full disk), no empty lock
        // file may stay behind for other writers to wait on, and no descriptor may leak.
        try {
          await fh.writeFile(token);
          await fh.close();
          return token;
        } catch (err) {
          await fh.close().catch(() => undefined);
          await unlink(this.lockPath).catch(() => undefined);
          throw new FileWriteError(
            `file kv: cannot write the lock ${this.lockPath}: ${describeCause(err)}`,
            this.lockPath,
            err,
          );
        }
      }
      try {
        const st = await stat(this.lockPath);
        if (Date.now() - st.mtimeMs > this.lockStaleMs) {
          await this.breakStaleLock();
          continue;
        }
      } catch {
        continue; // released meanwhile
      }
      if (Date.now() > deadline) {
        throw new FileRegistryLockError(`file kv: could not lock ${this.lockPath} within ${this.lockTimeoutMs} ms`);
      }
      await sleep(2 + Math.floor(Math.random() * 8));
    }
  }
}

function toKv(key: string, k: StoredKey): KeyValue {
  return { key, value: k.value, modRevision: k.modRevision, expiresAt: k.expiresAt };
}
