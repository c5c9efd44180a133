// An in-memory KvStore with etcd v3's observable behaviour, for tests: a global revision bumped by
// every write, mod revisions, TTL expiry (a delete event) against an injectable clock, prefix watches
// that replay history from a revision, and knobs to simulate compaction and an unreachable store.

import { FlannelTsError } from '../../src/errors.js';
import type { KeyValue, KvStore, Listing, Watch, WatchEvent, WatchHandlers } from '../../src/subnet/kv.js';
import { systemClock } from '../../src/subnet/clock.js';
import type { Clock, TimerHandle } from '../../src/subnet/clock.js';

interface Entry {
  value: string;
  modRevision: number;
  expiresAt: number | null;
  expiryTimer: TimerHandle | null;
}

interface HistoryItem {
  revision: number;
  event: WatchEvent;
}

interface MemoryWatcher {
  prefix: string;
  /** Next revision to deliver. */
  cursor: number;
  handlers: WatchHandlers;
  closed: boolean;
  /** onError already reported for the current outage. */
  erroredWhileDown: boolean;
}

/** What a call on the store gets while setUnreachable(true) simulates an outage (tests only). */
export class StoreUnreachableError extends FlannelTsError {
  override name = 'StoreUnreachableError';
  override readonly code = 'FLANNEL_TS_ERR_TEST_STORE_UNREACHABLE';
  constructor() {
    super('memory kv: store unreachable');
  }
}

export class MemoryKvStore implements KvStore {
  private readonly clock: Clock;
  private readonly entries = new Map<string, Entry>();
  private history: HistoryItem[] = [];
  private readonly watchers = new Set<MemoryWatcher>();
  /** Current store revision (etcd starts at 1). */
  private rev = 1;
  /** Events at or below this revision are gone from history. */
  private compactedThrough = 0;
  private reachable = true;
  private deliveryPaused = false;
  private flushQueued = false;
  private closed = false;
  private readonly resetListeners = new Set<(reason: string) => void>();

  constructor(options: { clock?: Clock } = {}) {
    this.clock = options.clock ?? systemClock;
  }

  get revision(): number {
    return this.rev;
  }

  /** Number of open watches (for tests checking that consumers close theirs). */
  get openWatches(): number {
    let n = 0;
    for (const w of this.watchers) if (!w.closed) n++;
    return n;
  }

  /** While unreachable every operation rejects and watches report one error, then stall. */
  setReachable(reachable: boolean): void {
    this.reachable = reachable;
    if (reachable) {
      for (const w of this.watchers) w.erroredWhileDown = false;
    }
    this.queueFlush();
  }

  /**
   * Holds back watch events (as if every watch stream were cut) while writes still succeed, e.g. the
   * writes of other hosts during our network partition. Unpausing delivers what history still holds.
   */
  pauseWatchDelivery(paused: boolean): void {
    this.deliveryPaused = paused;
    this.queueFlush();
  }

  /** Drops history through `revision`, like etcd's compaction; caught-up watches are unaffected. */
  compact(revision: number = this.rev): void {
    this.compactedThrough = Math.max(this.compactedThrough, revision);
    this.history = this.history.filter((h) => h.revision > this.compactedThrough);
  }

  /**
   * Compacts at the current revision and tells every open watch its position was compacted away, as
   * etcd does to a watcher that fell behind (e.g. reconnecting after an outage). The watches end.
   */
  simulateCompaction(): void {
    this.compact(this.rev);
    for (const w of this.watchers) {
      if (w.closed) continue;
      w.closed = true;
      this.watchers.delete(w);
      queueMicrotask(() => w.handlers.onCompacted());
    }
  }

  onReset(listener: (reason: string) => void): () => void {
    this.resetListeners.add(listener);
    return () => this.resetListeners.delete(listener);
  }

  /**
   * Loses every key and all history and starts again at revision 1, as an etcd wiped and restarted
   * empty: every open watch ends with onCompacted, and the onReset listeners are told.
   */
  wipe(): void {
    const from = this.rev;
    this.entries.clear();
    this.history = [];
    this.rev = 1;
    this.compactedThrough = 0;
    for (const w of this.watchers) {
      if (w.closed) continue;
      w.closed = true;
      this.watchers.delete(w);
      queueMicrotask(() => w.handlers.onCompacted());
    }
    for (const l of [...this.resetListeners]) l(`its revision went back from ${from} to 1`);
  }

  async get(key: string): Promise<KeyValue | null> {
    await this.enter();
    const e = this.entries.get(key);
    return e === undefined ? null : toKv(key, e);
  }

  async list(prefix: string): Promise<Listing> {
    await this.enter();
    const keys = [...this.entries.keys()].filter((k) => k.startsWith(prefix)).sort();
    return { kvs: keys.map((k) => toKv(k, this.entries.get(k)!)), revision: this.rev };
  }

  async createIfAbsent(key: string, value: string, ttlSeconds: number): Promise<boolean> {
    await this.enter();
    if (this.entries.has(key)) return false;
    this.write(key, value, ttlSeconds);
    return true;
  }

  async put(key: string, value: string, ttlSeconds: number): Promise<void> {
    await this.enter();
    this.write(key, value, ttlSeconds);
  }

  async delete(key: string): Promise<boolean> {
    await this.enter();
    if (!this.entries.has(key)) return false;
    this.remove(key);
    return true;
  }

  watchPrefix(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    const w: MemoryWatcher = { prefix, cursor: fromRevision, handlers, closed: false, erroredWhileDown: false };
    this.watchers.add(w);
    this.queueFlush();
    return {
      close: () => {
        w.closed = true;
        this.watchers.delete(w);
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const e of this.entries.values()) {
      if (e.expiryTimer !== null) this.clock.clearTimer(e.expiryTimer);
    }
    for (const w of this.watchers) w.closed = true;
    this.watchers.clear();
  }

  /** Common entry of every operation: a real await (so concurrent callers interleave), checks, expiry. */
  private async enter(): Promise<void> {
    await Promise.resolve();
    if (this.closed) throw new Error('memory kv: store closed');
    if (!this.reachable) throw new StoreUnreachableError();
    this.expireDue();
  }

  private write(key: string, value: string, ttlSeconds: number): void {
    const old = this.entries.get(key);
    if (old?.expiryTimer != null) this.clock.clearTimer(old.expiryTimer);
    this.rev++;
    const expiresAt = ttlSeconds > 0 ? this.clock.now() + ttlSeconds * 1000 : null;
    const entry: Entry = { value, modRevision: this.rev, expiresAt, expiryTimer: null };
    if (expiresAt !== null) {
      const modRevision = this.rev;
      entry.expiryTimer = this.clock.setTimer(() => this.expireIfStill(key, modRevision), ttlSeconds * 1000);
    }
    this.entries.set(key, entry);
    this.record({ type: 'put', kv: toKv(key, entry) });
  }

  private remove(key: string): void {
    const old = this.entries.get(key);
    if (old?.expiryTimer != null) this.clock.clearTimer(old.expiryTimer);
    this.entries.delete(key);
    this.rev++;
    this.record({ type: 'delete', key, modRevision: this.rev });
  }

  private expireIfStill(key: string, modRevision: number): void {
    const e = this.entries.get(key);
    if (e !== undefined && e.modRevision === modRevision) this.remove(key);
  }

  private expireDue(): void {
    const now = this.clock.now();
    for (const [key, e] of [...this.entries]) {
      if (e.expiresAt !== null && e.expiresAt <= now) this.remove(key);
    }
  }

  private record(event: WatchEvent): void {
    this.history.push({ revision: this.rev, event });
    this.queueFlush();
  }

  private queueFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.deliveryPaused) return;
    for (const w of [...this.watchers]) {
      if (w.closed) continue;
      if (!this.reachable) {
        if (!w.erroredWhileDown) {
          w.erroredWhileDown = true;
          w.handlers.onError?.(new StoreUnreachableError());
        }
        continue;
      }
      if (w.cursor <= this.compactedThrough) {
        w.closed = true;
        this.watchers.delete(w);
        w.handlers.onCompacted();
        continue;
      }
      const events = this.history.filter((h) => h.revision >= w.cursor && keyOf(h.event).startsWith(w.prefix));
      w.cursor = Math.max(w.cursor, this.rev + 1);
      if (events.length > 0) {
        w.handlers.onEvents(
          events.map((h) => h.event),
          events[events.length - 1]!.revision,
        );
      }
    }
  }
}

function keyOf(e: WatchEvent): string {
  return e.type === 'put' ? e.kv.key : e.key;
}

function toKv(key: string, e: Entry): KeyValue {
  return { key, value: e.value, modRevision: e.modRevision, expiresAt: e.expiresAt };
}
