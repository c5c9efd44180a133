// Reading the network config from the registry, with flannel's message for a missing key.

import type { NetworkConfig } from './config.js';
import { parseNetworkConfig } from './config.js';
import type { KvStore } from './kv.js';
import { configKey, DEFAULT_ETCD_PREFIX } from './lease.js';
import { FlannelTsError } from '../errors.js';

/** The config key does not exist (flanneld waits and retries, as for an invalid config). */
export class NetworkConfigMissingError extends FlannelTsError {
  override name = 'NetworkConfigMissingError';
  override readonly code = 'FLANNEL_TS_ERR_NETWORK_CONFIG_MISSING';
  /** api: the store's (KvStore.api); flanneld's v3 wording when it is v3 or not etcd. */
  constructor(key: string, api?: 'v2' | 'v3' | null) {
    super(`flannel config not found in etcd store (${key}). ${hintFor(api)}`);
  }
}

function hintFor(api: 'v2' | 'v3' | null | undefined): string {
  if (api === 'v2') return 'Did you create your config using etcdv2 API (ETCDCTL_API=2 etcdctl set)?';
  if (api === null) {
    return (
      'It is in neither the v3 nor the v2 API: create it with ETCDCTL_API=3 etcdctl put ' +
      '(or ETCDCTL_API=2 etcdctl set to share it with flanneld v0.17 and older hosts)'
    );
  }
  return 'Did you create your config using etcdv3 API?';
}

/**
 * Fetches and validates `<prefix>/config`. Throws NetworkConfigMissingError, NetworkConfigError, or
 * the store's error; the caller retries every second like flanneld ("Couldn't fetch network config").
 */
export async function fetchNetworkConfig(store: KvStore, prefix: string = DEFAULT_ETCD_PREFIX): Promise<NetworkConfig> {
  const key = configKey(prefix);
  const kv = await store.get(key);
  if (kv === null) throw new NetworkConfigMissingError(key, store.api);
  return parseNetworkConfig(kv.value);
}
