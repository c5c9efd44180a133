// What the agent does when its store reports a reset (KvStore.onReset: etcd wiped, restored from an
// older snapshot, a new cluster at the same address; the registry file replaced): one log line with
// the reason, then not ready (/readyz 503) until our lease is back in the registry.
//
// The work itself is done where it belongs: the store ends every watch with onCompacted, so the
// route watcher lists the peers again, the config watcher re-reads the config, and the lease
// manager re-checks its key, finds it gone and acquires again, preferring the subnet it held (the
// same subnet if it is free; created only if absent, so no two hosts end up on one subnet). This
// module only watches for that lease to be in the registry again, and says so.
import type { Logger } from '../observability/log.js';
import { formatCidr } from '../routing-table/ipv4.js';
import type { KvStore } from '../subnet/kv.js';
import { parseLeaseAttrs } from '../subnet/lease.js';
import type { Lease } from '../subnet/lease-manager.js';

const CHECK_MS = 250;

export interface ResetRecovery {
  /** True from a reset until our lease is in the registry again. */
  readonly recovering: boolean;
  stop(): void;
}

export function recoverFromRegistryResets(
  store: KvStore,
  lease: () => Lease | null,
  log: Logger,
  checkMs: number = CHECK_MS,
): ResetRecovery {
  let recovering = false;
  let since = 0;
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;

  const check = async (): Promise<void> => {
    timer = null;
    if (stopped) return;
    const held = lease();
    if (held !== null) {
      try {
        const kv = await store.get(held.key);
        if (kv !== null && parseLeaseAttrs(kv.value).publicIp === held.publicIp) {
          if (stopped) return;
          recovering = false;
          log.info('lease re-created after the registry reset', {
            subnet: formatCidr(held.subnet.prefix, held.subnet.prefixLen),
            key: held.key,
            afterMs: Date.now() - since,
          });
          return;
        }
      } catch {
        // not yet: the store is still coming back, or the lease is being acquired
      }
    }
    if (!stopped) timer = setTimeout(() => void check(), checkMs).unref();
  };

  const unsubscribe =
    store.onReset?.((reason) => {
      if (stopped) return;
      log.warn('the registry was reset: re-creating our lease and listing the peers again; not ready until done', {
        reason,
      });
      if (!recovering) since = Date.now();
      recovering = true;
      if (timer === null) timer = setTimeout(() => void check(), checkMs).unref();
    }) ?? (() => undefined);

  return {
    get recovering() {
      return recovering;
    },
    stop() {
      stopped = true;
      unsubscribe();
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}
