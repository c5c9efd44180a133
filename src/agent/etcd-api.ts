// Which etcd API the agent's registry lives in: v3 (flanneld v0.18+, flannel-ts's default) or v2
// (flanneld v0.7-v0.17 and the tutorials written for them). `--etcd-api=v2|v3` forces one. Without
// it (auto), the network config decides, looked up in v3 first, then in v2: the API that holds it
// is used for everything (config, leases, watches) from then on, and the other is closed, so a v2
// config is never paired with v3 leases or the reverse. Each decision is logged with its reason.

import { EtcdResponseError } from '../etcd/errors.js';
import { EtcdKvStore } from '../etcd/kv-store.js';
import type { EtcdClientOptions } from '../etcd/options.js';
import { EtcdV2ResponseError } from '../etcdv2/errors.js';
import { EtcdV2KvStore } from '../etcdv2/kv-store.js';
import type { Logger } from '../observability/log.js';
import type { KeyValue, KvStore, ListedKey, ListOptions, Listing, Watch, WatchHandlers } from '../subnet/kv.js';
import { configKey } from '../subnet/lease.js';

export type EtcdApi = 'auto' | 'v2' | 'v3';
export const ETCD_APIS: readonly EtcdApi[] = ['auto', 'v2', 'v3'];

export interface EtcdStoreFlags {
  readonly endpoints: string;
  readonly api: EtcdApi;
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
  readonly username?: string;
  readonly password?: string;
}

/** The registry's store for the etcd flags: one API, or the chooser (see EtcdApiChooser). */
export function openEtcdStore(flags: EtcdStoreFlags, prefix: string, log: Logger): KvStore {
  const options: EtcdClientOptions = {
    endpoints: flags.endpoints,
    ...(flags.caFile !== undefined ? { caFile: flags.caFile } : {}),
    ...(flags.certFile !== undefined ? { certFile: flags.certFile, keyFile: flags.keyFile } : {}),
    ...(flags.username !== undefined ? { username: flags.username, password: flags.password } : {}),
  };
  if (flags.api === 'v3' || flags.api === 'v2') {
    log.info('etcd API', { api: flags.api, reason: `--etcd-api=${flags.api}` });
    return flags.api === 'v3' ? new EtcdKvStore(options) : new EtcdV2KvStore(options);
  }
  return new EtcdApiChooser(new EtcdKvStore(options), new EtcdV2KvStore(options), prefix, log);
}

/** The request reached etcd, which does not serve that API at all (HTTP 404 with no etcd error). */
export function isApiAbsent(err: unknown): boolean {
  if (err instanceof EtcdResponseError) return err.httpStatus === 404 && err.grpcCode === null;
  if (err instanceof EtcdV2ResponseError) return err.httpStatus === 404 && err.errorCode === null;
  return false;
}

/** A store call made before the config was found, i.e. before an API was chosen. */
export class EtcdApiNotChosenError extends Error {
  readonly code = 'FLANNEL_TS_ERR_ETCD_API_NOT_CHOSEN';
  constructor(operation: string) {
    super(`etcd: ${operation} before the network config was found (the etcd API is chosen by where it is)`);
    this.name = 'EtcdApiNotChosenError';
  }
}

/**
 * A KvStore that is v3 or v2, decided by the first get() of `<prefix>/config` that finds it:
 * - v3 holds it: v3 (even if v2 holds one too; that is logged as a warning, since flanneld hosts
 *   of v0.17 and older read v2's);
 * - else v2 holds it: v2;
 * - neither: get() returns null (the agent waits and asks again: both are looked at each time).
 * An error from v3 other than "this etcd serves no v3" is thrown (the agent retries): v2 is not
 * consulted while v3 cannot answer, or a v3 cluster with a stale v2 config would pick v2 on a
 * hiccup. Any other call before the choice is an EtcdApiNotChosenError.
 */
export class EtcdApiChooser implements KvStore {
  private chosen: KvStore | null = null;
  private readonly key: string;
  private missLogged = false;

  constructor(
    private readonly v3: KvStore,
    private readonly v2: KvStore,
    prefix: string,
    private readonly log: Logger,
  ) {
    this.key = configKey(prefix);
  }

  /** The API in use, or null before the config was found. */
  get api(): 'v2' | 'v3' | null {
    return this.chosen === null ? null : this.chosen === this.v3 ? 'v3' : 'v2';
  }

  async get(key: string): Promise<KeyValue | null> {
    if (this.chosen !== null) return this.chosen.get(key);
    if (key !== this.key) throw new EtcdApiNotChosenError(`get(${key})`);
    return this.lookUpConfig();
  }

  list(prefix: string): Promise<Listing>;
  list(prefix: string, options: ListOptions): Promise<Listing<ListedKey>>;
  list(prefix: string, options?: ListOptions): Promise<Listing<ListedKey>> {
    const store = this.store(`list(${prefix})`);
    return options === undefined ? store.list(prefix) : store.list(prefix, options);
  }

  createIfAbsent(key: string, value: string, ttlSeconds: number): Promise<boolean> {
    return this.store(`createIfAbsent(${key})`).createIfAbsent(key, value, ttlSeconds);
  }

  put(key: string, value: string, ttlSeconds: number): Promise<void> {
    return this.store(`put(${key})`).put(key, value, ttlSeconds);
  }

  delete(key: string): Promise<boolean> {
    return this.store(`delete(${key})`).delete(key);
  }

  watchPrefix(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    return this.store(`watchPrefix(${prefix})`).watchPrefix(prefix, fromRevision, handlers);
  }

  async close(): Promise<void> {
    await Promise.all([this.v3.close(), this.v2.close()]);
  }

  private store(operation: string): KvStore {
    if (this.chosen === null) throw new EtcdApiNotChosenError(operation);
    return this.chosen;
  }

  private async lookUpConfig(): Promise<KeyValue | null> {
    let v3Absent = false;
    try {
      const kv = await this.v3.get(this.key);
      if (kv !== null) {
        // Worth a warning: flanneld hosts of v0.17 and older on this cluster follow v2's config and leases.
        const inV2 = await this.v2.get(this.key).catch(() => null);
        if (inV2 !== null) {
          this.log.warn('a network config is also in etcd v2; flanneld v0.17 and older use that one', {
            key: this.key,
            hint: 'to share leases with such hosts, start flannel-ts with --etcd-api=v2',
          });
        }
        await this.choose(this.v3, `the network config ${this.key} is in etcd's v3 API`);
        return kv;
      }
    } catch (err) {
      if (!isApiAbsent(err)) throw err;
      v3Absent = true;
    }
    let v2Absent = false;
    try {
      const kv = await this.v2.get(this.key);
      if (kv !== null) {
        await this.choose(
          this.v2,
          v3Absent
            ? `this etcd serves no v3 API; the network config ${this.key} is in its v2 API`
            : `no network config ${this.key} in etcd's v3 API; found in its v2 API (as flanneld v0.17 and older use it)`,
        );
        return kv;
      }
    } catch (err) {
      if (!isApiAbsent(err)) throw err;
      v2Absent = true;
    }
    if (!this.missLogged) {
      this.missLogged = true;
      this.log.info('etcd API not chosen yet: the network config is in neither API; looking in v3, then v2', {
        key: this.key,
        v3: v3Absent ? 'not served by this etcd' : 'no such key',
        v2: v2Absent ? 'not served by this etcd (etcd 3.4 serves it with --enable-v2)' : 'no such key',
      });
    }
    return null;
  }

  private async choose(store: KvStore, reason: string): Promise<void> {
    this.chosen = store;
    this.log.info('etcd API', { api: store === this.v3 ? 'v3' : 'v2', reason });
    await (store === this.v3 ? this.v2 : this.v3).close().catch(() => undefined);
  }
}
