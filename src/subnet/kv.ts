// The key-value store under flannel's registry: the seam between flannel's lease semantics
// (src/subnet/) and a concrete store (etcd v3 in src/etcd/, the embedded file store for one
// machine without etcd, an in-memory fake in tests). The store knows keys, values, TTLs and
// revisions; it knows nothing of subnets.

export interface KeyValue {
  readonly key: string;
  readonly value: string;
  /** Revision at which this key was last modified (etcd mod_revision). */
  readonly modRevision: number;
  /**
   * When the key expires, in ms since the epoch; null for a key without a TTL (a reservation).
   * A store that cannot tell (etcd: the key's lease has no TTL left) reports null too.
   */
  readonly expiresAt: number | null;
}

/** A listed key whose expiry was not looked up: see ListOptions. */
export type ListedKey = Omit<KeyValue, 'expiresAt'>;

export interface ListOptions {
  /**
   * false: the caller does not need expiresAt, and the store may skip looking it up (etcd: one
   * LeaseTimeToLive round trip per leased key, which dominates listing 1,000 leases). The listing's
   * entries are then typed without expiresAt; a store that has it for free (memory, file) may still
   * carry it. To learn one key's expiry, get() it.
   */
  readonly expiries: false;
}

export interface Listing<T extends ListedKey = KeyValue> {
  readonly kvs: readonly T[];
  /** The store's revision at the time of the listing: watch from revision + 1. */
  readonly revision: number;
}

export type WatchEvent =
  | { readonly type: 'put'; readonly kv: KeyValue }
  | { readonly type: 'delete'; readonly key: string; readonly modRevision: number };

export interface WatchHandlers {
  /** Events in revision order; each call carries the events of one store revision or more. */
  onEvents(events: readonly WatchEvent[], revision: number): void;
  /**
   * The requested start revision has been compacted away, or the store was reset (see
   * KvStore.onReset): the consumer must list again and diff, then start a new watch from the
   * listing's revision + 1. The watch has ended.
   */
  onCompacted(): void;
  /** A transient failure; the store keeps retrying by itself (resuming where it stopped). */
  onError?(err: Error): void;
}

export interface Watch {
  close(): void;
}

export interface KvStore {
  /**
   * The etcd API the store speaks, for messages that must name it (how to write a missing config):
   * 'v3' or 'v2'; null while a store that chooses one has not chosen yet; absent when not etcd.
   */
  readonly api?: 'v2' | 'v3' | null;
  get(key: string): Promise<KeyValue | null>;
  /** Every key under prefix, sorted by key, with expiresAt. */
  list(prefix: string): Promise<Listing>;
  /** Every key under prefix, sorted by key, expiries not looked up (see ListOptions). */
  list(prefix: string, options: ListOptions): Promise<Listing<ListedKey>>;
  /** Creates key only if it does not exist; ttlSeconds 0 = no TTL. Returns false if it existed. */
  createIfAbsent(key: string, value: string, ttlSeconds: number): Promise<boolean>;
  /** Writes key unconditionally; ttlSeconds 0 = no TTL (a reservation). */
  put(key: string, value: string, ttlSeconds: number): Promise<void>;
  /** Deletes key; returns false if it did not exist. */
  delete(key: string): Promise<boolean>;
  /** Watches every key under prefix from fromRevision on (inclusive). Reconnects by itself. */
  watchPrefix(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch;
  /**
   * Calls listener (with the reason in words) when the store turns out not to be the registry
   * whose history we followed: its revision went back or its cluster ID changed (etcd wiped, or
   * restored from an older snapshot, or a new cluster at the same address; the registry file
   * replaced by an older one). Every watch open then ends with onCompacted. Returns the function
   * that removes the listener. Optional: a store that cannot tell has none.
   */
  onReset?(listener: (reason: string) => void): () => void;
  close(): Promise<void>;
}
