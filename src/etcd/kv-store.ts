// KvStore over etcd v3 (the JSON gateway of etcd >= 3.4), as flannel uses it: every TTL'd write
// grants a fresh lease first (and a put that moved its key off an older lease revokes that lease
// once no key is left on it, instead of leaving it to expire a day later); expiry times come from
// LeaseTimeToLive (one request per distinct lease, bounded in parallel, skipped by
// list(prefix, { expiries: false })); a key without a lease (or whose lease has no TTL left)
// reports expiresAt null.

import type { KeyValue, KvStore, ListedKey, ListOptions, Listing, Watch, WatchHandlers } from '../subnet/kv.js';
import {
  decodeBytes,
  encodeBytes,
  int64Number,
  leaseIdOf,
  prefixRange,
  type WireHeader,
  type WireKeyValue,
} from './codec.js';
import { EtcdClosedError, EtcdProtocolError } from './errors.js';
import { resolveOptions, type EtcdClientOptions } from './options.js';
import { EtcdTransport, UNARY_MAX_SOCKETS } from './transport.js';
import { PrefixWatch, type ExpiryCache } from './watch.js';
import { ResetDetector, type ResetMark } from '../subnet/registry-reset.js';

interface RangeReply {
  header?: WireHeader;
  kvs?: WireKeyValue[];
}

const NO_LEASE = '0';

export class EtcdKvStore implements KvStore {
  readonly api = 'v3';
  private readonly transport: EtcdTransport;
  private readonly watches = new Set<PrefixWatch>();
  /** Every reply header goes through it; a reset ends every watch with onCompacted. */
  private readonly identity = new ResetDetector();
  private closed = false;

  /** Throws at once on bad endpoints, unreadable or invalid TLS files, half-given credentials. */
  constructor(options: EtcdClientOptions) {
    this.transport = new EtcdTransport(resolveOptions(options));
    this.identity.subscribe(() => {
      for (const watch of [...this.watches]) watch.endAsCompacted();
    });
  }

  onReset(listener: (reason: string) => void): () => void {
    return this.identity.subscribe((reason) => listener(`etcd at ${this.endpointsLabel()}: ${reason}`));
  }

  /** Feeds a reply's header to the reset detector, with the mark taken before its request was sent. */
  private observe(header: WireHeader | undefined, sent: ResetMark): void {
    if (header === undefined) return;
    this.identity.observe(int64Number(header.revision), header.cluster_id ?? null, sent);
  }

  private endpointsLabel(): string {
    return this.transport.endpoints.map((e) => e.label).join(',');
  }

  async get(key: string): Promise<KeyValue | null> {
    this.assertOpen();
    const sent = this.identity.mark();
    const reply = await this.transport.call<RangeReply>('/v3/kv/range', { key: encodeBytes(key) }, { retrySafe: true });
    this.observe(reply.header, sent);
    const kv = reply.kvs?.[0];
    return kv === undefined ? null : this.toKeyValue(kv, new Map());
  }

  /** With { expiries: false }: one Range request, no LeaseTimeToLive at all (see ListOptions). */
  list(prefix: string): Promise<Listing>;
  list(prefix: string, options: ListOptions): Promise<Listing<ListedKey>>;
  async list(prefix: string, options?: ListOptions): Promise<Listing<ListedKey>> {
    this.assertOpen();
    const range = prefixRange(prefix);
    const sent = this.identity.mark();
    const reply = await this.transport.call<RangeReply>(
      '/v3/kv/range',
      { key: range.key, range_end: range.rangeEnd },
      { retrySafe: true },
    );
    this.observe(reply.header, sent);
    const revision = int64Number(reply.header?.revision);
    const wire = reply.kvs ?? [];
    if (options?.expiries === false) return { kvs: wire.map(toListedKey), revision };
    const cache: ExpiryCache = new Map();
    const expiries = await mapBounded(wire, EXPIRY_LOOKUP_CONCURRENCY, (kv) =>
      this.leaseExpiry(leaseIdOf(kv.lease), cache),
    );
    return { kvs: wire.map((kv, i) => ({ ...toListedKey(kv), expiresAt: expiries[i]! })), revision };
  }

  async createIfAbsent(key: string, value: string, ttlSeconds: number): Promise<boolean> {
    this.assertOpen();
    const lease = await this.grantLease(ttlSeconds);
    const encodedKey = encodeBytes(key);
    const sent = this.identity.mark();
    const reply = await this.transport.call<{ succeeded?: boolean; header?: WireHeader }>(
      '/v3/kv/txn',
      {
        compare: [{ key: encodedKey, result: 'EQUAL', target: 'VERSION', version: '0' }],
        success: [{ request_put: { key: encodedKey, value: encodeBytes(value), lease } }],
      },
      { retrySafe: false },
    );
    this.observe(reply.header, sent);
    const created = reply.succeeded === true;
    if (!created && lease !== NO_LEASE) {
      // The lease would expire by itself; revoking it just keeps etcd tidy (as flannel does).
      await this.transport.call('/v3/lease/revoke', { ID: lease }, { retrySafe: true }).catch(() => undefined);
    }
    return created;
  }

  async put(key: string, value: string, ttlSeconds: number): Promise<void> {
    this.assertOpen();
    const lease = await this.grantLease(ttlSeconds);
    // Resending this put leaves the same value under the same lease: safe to retry.
    const sent = this.identity.mark();
    const reply = await this.transport.call<{ prev_kv?: WireKeyValue; header?: WireHeader }>(
      '/v3/kv/put',
      { key: encodeBytes(key), value: encodeBytes(value), lease, prev_kv: true },
      { retrySafe: true },
    );
    this.observe(reply.header, sent);
    const previous = leaseIdOf(reply.prev_kv?.lease);
    if (previous !== NO_LEASE && previous !== lease) await this.revokeIfUnused(previous);
  }

  async delete(key: string): Promise<boolean> {
    this.assertOpen();
    const sent = this.identity.mark();
    const reply = await this.transport.call<{ deleted?: string; header?: WireHeader }>(
      '/v3/kv/deleterange',
      { key: encodeBytes(key) },
      { retrySafe: false },
    );
    this.observe(reply.header, sent);
    return int64Number(reply.deleted) > 0;
  }

  /** fromRevision must be >= 1 (a listing's revision + 1). */
  watchPrefix(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    this.assertOpen();
    if (!Number.isSafeInteger(fromRevision) || fromRevision < 1) {
      throw new RangeError(`etcd watch: fromRevision must be an integer >= 1 (got ${fromRevision})`);
    }
    const watch = new PrefixWatch(
      this.transport,
      (leaseId, cache) => this.leaseExpiry(leaseId, cache),
      prefix,
      fromRevision,
      handlers,
      (closed) => this.watches.delete(closed),
      { mark: () => this.identity.mark(), observe: (header, sent) => this.observe(header, sent) },
    );
    this.watches.add(watch);
    watch.start();
    return watch;
  }

  /** Stops every watch and closes every connection; nothing is left to keep the process alive. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const watch of [...this.watches]) watch.close();
    this.transport.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new EtcdClosedError();
  }

  /**
   * Revokes a lease the key just left (a renewal), if no key is attached to it any more: revoking a
   * lease deletes its keys, and someone else may have put keys on it. Best effort: a lease not
   * revoked still expires by itself.
   */
  private async revokeIfUnused(leaseId: string): Promise<void> {
    try {
      const ttl = await this.transport.call<{ keys?: string[] }>(
        '/v3/lease/timetolive',
        { ID: leaseId, keys: true },
        { retrySafe: true },
      );
      if ((ttl.keys ?? []).length > 0) return;
      await this.transport.call('/v3/lease/revoke', { ID: leaseId }, { retrySafe: true });
    } catch {
      // expired or revoked meanwhile, or etcd unreachable: it runs out by itself
    }
  }

  /** Grants a lease of ttlSeconds; "0" (no lease) for ttlSeconds 0. */
  private async grantLease(ttlSeconds: number): Promise<string> {
    if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 0) {
      throw new RangeError(`etcd: ttlSeconds must be an integer >= 0 (got ${ttlSeconds})`);
    }
    if (ttlSeconds === 0) return NO_LEASE;
    const reply = await this.transport.call<{ ID?: string }>(
      '/v3/lease/grant',
      { TTL: String(ttlSeconds) },
      { retrySafe: true },
    );
    const lease = leaseIdOf(reply.ID);
    if (lease === NO_LEASE) throw new EtcdProtocolError('etcd /v3/lease/grant: reply carries no lease ID');
    return lease;
  }

  /**
   * ms since the epoch when the lease runs out; null only for a key without a lease (a
   * reservation). A lease etcd no longer knows (TTL -1: it expired or was revoked between the
   * range and this call) is reported as expiring now, never as a reservation.
   */
  private leaseExpiry(leaseId: string, cache: ExpiryCache): Promise<number | null> {
    if (leaseId === NO_LEASE) return Promise.resolve(null);
    let expiry = cache.get(leaseId);
    if (expiry === undefined) {
      expiry = this.transport
        .call<{ TTL?: string }>('/v3/lease/timetolive', { ID: leaseId }, { retrySafe: true })
        .then((reply) => {
          const ttl = int64Number(reply.TTL);
          return Date.now() + Math.max(0, ttl) * 1000;
        });
      cache.set(leaseId, expiry);
    }
    return expiry;
  }

  private async toKeyValue(kv: WireKeyValue, cache: ExpiryCache): Promise<KeyValue> {
    return { ...toListedKey(kv), expiresAt: await this.leaseExpiry(leaseIdOf(kv.lease), cache) };
  }
}

/**
 * LeaseTimeToLive requests in flight at once for one listing: as many as the unary socket pool
 * holds, so a large listing neither queues hundreds of requests in the agent nor holds all their
 * replies in memory at once.
 */
const EXPIRY_LOOKUP_CONCURRENCY = UNARY_MAX_SOCKETS;

function toListedKey(kv: WireKeyValue): ListedKey {
  return { key: decodeBytes(kv.key), value: decodeBytes(kv.value), modRevision: int64Number(kv.mod_revision) };
}

/** Like Promise.all(items.map(fn)), with at most `limit` calls of fn pending at once. */
async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) results[i] = await fn(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
