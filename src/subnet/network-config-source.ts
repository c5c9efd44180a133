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
  constructor(key: string) {
    super(`flannel config not found in etcd store (${key}). Did you create your config using etcdv3 API?`);
  }
}

/**
 * Fetches and validates `<prefix>/config`. Throws NetworkConfigMissingError, NetworkConfigError, or
 * the store's error; the caller retries every second like flanneld ("Couldn't fetch network config").
 */
export async function fetchNetworkConfig(store: KvStore, prefix: string = DEFAULT_ETCD_PREFIX): Promise<NetworkConfig> {
  const key = configKey(prefix);
  const kv = await store.get(key);
  if (kv === null) throw new NetworkConfigMissingError(key);
  return parseNetworkConfig(kv.value);
}
