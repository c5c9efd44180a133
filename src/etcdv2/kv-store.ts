// KvStore over etcd's v2 keys API, as flanneld v0.7-v0.17 uses it (subnet/etcdv2/registry.go), so
// that flannel-ts hosts and flanneld hosts can share one v2 registry:
//
//   config   GET    <prefix>/config?quorum=true
//   leases   GET    <prefix>/subnets?recursive=true&quorum=true   (404 "Key not found": no leases yet)
//   acquire  PUT    <prefix>/subnets/<ip>-<len>?prevExist=false  value=<attrs>&ttl=86400
//   renew    PUT    <prefix>/subnets/<ip>-<len>                  value=<attrs>&ttl=86400
//   release  DELETE <prefix>/subnets/<ip>-<len>
//   watch    GET    <prefix>/subnets?wait=true&recursive=true&waitIndex=<n>
//
// The TTL lives on the key itself (v2 has no leases): a key written without one is a reservation,
// and a put without ttl turns a lease into a reservation, as in etcd. Revisions are v2 indexes (see
// node.ts). Values are stored exactly as given.

import { EtcdClosedError } from '../etcd/errors.js';
import { resolveOptions, type EtcdClientOptions } from '../etcd/options.js';
import type { KeyValue, KvStore, ListedKey, ListOptions, Listing, Watch, WatchHandlers } from '../subnet/kv.js';
import { V2_KEY_NOT_FOUND, V2_NODE_EXIST, isV2Error } from './errors.js';
import { cleanKey, cleanPrefix, directoryOf, leavesOf, toKeyValue, type V2Response } from './node.js';
import { EtcdV2Transport } from './transport.js';
import { V2PrefixWatch } from './watch.js';

export class EtcdV2KvStore implements KvStore {
  private readonly transport: EtcdV2Transport;
  private readonly watches = new Set<V2PrefixWatch>();
  private closed = false;

  /** Throws at once on bad endpoints, unreadable or invalid TLS files, half-given credentials. */
  constructor(options: EtcdClientOptions) {
    this.transport = new EtcdV2Transport(resolveOptions(options));
  }

  /** A quorum read (flanneld's Quorum: true): never a stale follower's answer. A directory is an error. */
  async get(key: string): Promise<KeyValue | null> {
    this.assertOpen();
    try {
      const reply = await this.transport.call<V2Response>({
        method: 'GET',
        key: cleanKey(key),
        query: { quorum: 'true' },
        retrySafe: true,
      });
      const node = reply.body.node ?? {};
      if (node.dir === true) throw new Error(`etcd v2: ${cleanKey(key)} is a directory, not a key`);
      return toKeyValue(node);
    } catch (err) {
      if (isV2Error(err, V2_KEY_NOT_FOUND)) return null;
      throw err;
    }
  }

  /**
   * Lists the directory holding the prefix (see directoryOf) and keeps the keys that start with it.
   * The revision is the reply's X-Etcd-Index; a missing directory is an empty listing at the index
   * of etcd's "Key not found" reply. Expiries come with the nodes: ListOptions changes nothing.
   */
  list(prefix: string): Promise<Listing>;
  list(prefix: string, options: ListOptions): Promise<Listing<ListedKey>>;
  async list(prefix: string, _options?: ListOptions): Promise<Listing> {
    this.assertOpen();
    const wanted = cleanPrefix(prefix);
    try {
      const reply = await this.transport.call<V2Response>({
        method: 'GET',
        key: directoryOf(wanted),
        query: { recursive: 'true', quorum: 'true' },
        retrySafe: true,
      });
      const now = Date.now();
      const kvs = leavesOf(reply.body.node ?? {})
        .filter((node) => (node.key ?? '').startsWith(wanted))
        .map((node) => toKeyValue(node, now))
        .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      return { kvs, revision: reply.etcdIndex };
    } catch (err) {
      if (isV2Error(err, V2_KEY_NOT_FOUND)) return { kvs: [], revision: err.index };
      throw err;
    }
  }

  async createIfAbsent(key: string, value: string, ttlSeconds: number): Promise<boolean> {
    this.assertOpen();
    try {
      await this.transport.call({
        method: 'PUT',
        key: cleanKey(key),
        query: { prevExist: 'false' },
        form: formOf(value, ttlSeconds),
        retrySafe: false,
      });
      return true;
    } catch (err) {
      if (isV2Error(err, V2_NODE_EXIST)) return false;
      throw err;
    }
  }

  /** Resending this put leaves the same value with a fresh TTL: safe to retry. */
  async put(key: string, value: string, ttlSeconds: number): Promise<void> {
    this.assertOpen();
    await this.transport.call({ method: 'PUT', key: cleanKey(key), form: formOf(value, ttlSeconds), retrySafe: true });
  }

  async delete(key: string): Promise<boolean> {
    this.assertOpen();
    try {
      await this.transport.call({ method: 'DELETE', key: cleanKey(key), retrySafe: false });
      return true;
    } catch (err) {
      if (isV2Error(err, V2_KEY_NOT_FOUND)) return false;
      throw err;
    }
  }

  /** fromRevision must be >= 1 (a listing's revision + 1). */
  watchPrefix(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    this.assertOpen();
    if (!Number.isSafeInteger(fromRevision) || fromRevision < 1) {
      throw new RangeError(`etcd v2 watch: fromRevision must be an integer >= 1 (got ${fromRevision})`);
    }
    const wanted = cleanPrefix(prefix);
    const watch = new V2PrefixWatch(this.transport, directoryOf(wanted), wanted, fromRevision, handlers, (closed) =>
      this.watches.delete(closed),
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
}

/** The PUT form: value, and ttl unless 0 (no TTL: a reservation). */
function formOf(value: string, ttlSeconds: number): Record<string, string> {
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 0) {
    throw new RangeError(`etcd v2: ttlSeconds must be an integer >= 0 (got ${ttlSeconds})`);
  }
  return ttlSeconds === 0 ? { value } : { value, ttl: String(ttlSeconds) };
}
