// Keeps flannel's iptables chains in place for one lease, as flanneld does: installs them at
// start, re-checks every --iptables-resync seconds (default 5) and repairs what someone else
// removed, rewrites the masquerade chain when the lease moves, removes everything on teardown.
// Every iptables call is serialized, so a resync tick never races update() or teardown().

import {
  ensureChain,
  iptablesSupportsRandomFully,
  removeChain,
  type IptablesRunOptions,
  type ManagedChain,
} from './iptables-chain.js';
import { forwardChain } from './forward-rules.js';
import { ipMasqChain, type Ipv4Prefix } from './ipmasq.js';

export const DEFAULT_IPTABLES_RESYNC_SECONDS = 5;

export interface FlannelIptablesOptions extends IptablesRunOptions {
  readonly network: Ipv4Prefix;
  readonly subnet: Ipv4Prefix;
  /** --ip-masq: install FLANNEL-POSTRTG. */
  readonly ipMasq: boolean;
  /** --iptables-forward-rules: install FLANNEL-FWD. */
  readonly forwardRules: boolean;
  /** --ip-masq-fully-random-disable. */
  readonly randomFullyDisable?: boolean;
  /** --iptables-resync; 0 turns the periodic check off. */
  readonly resyncSeconds?: number;
  /** A failed resync tick (the rules are retried on the next one). */
  readonly onResyncError?: (err: Error) => void;
}

export interface FlannelIptables {
  /** The lease moved to another subnet: rewrite the masquerade chain for it. */
  update(subnet: Ipv4Prefix): Promise<void>;
  /** Stops the resync and removes both chains and their jumps. */
  teardown(): Promise<void>;
}

/** Installs the chains (rejecting with iptables' own message if that fails) and keeps them in place. */
export async function startFlannelIptables(options: FlannelIptablesOptions): Promise<FlannelIptables> {
  const randomFully = options.ipMasq && !options.randomFullyDisable && (await iptablesSupportsRandomFully(options));
  const chainsFor = (subnet: Ipv4Prefix): ManagedChain[] => [
    ...(options.ipMasq ? [ipMasqChain({ network: options.network, subnet, randomFully })] : []),
    ...(options.forwardRules ? [forwardChain(options.network)] : []),
  ];
  let chains = chainsFor(options.subnet);
  let queue: Promise<void> = Promise.resolve();
  const serialized = (work: () => Promise<void>): Promise<void> => {
    const next = queue.then(work);
    queue = next.catch(() => undefined);
    return next;
  };
  const ensureAll = () =>
    serialized(async () => {
      for (const chain of chains) await ensureChain(chain, options);
    });

  await ensureAll();

  const resyncMs = (options.resyncSeconds ?? DEFAULT_IPTABLES_RESYNC_SECONDS) * 1000;
  const timer =
    resyncMs > 0
      ? setInterval(() => {
          ensureAll().catch((err: Error) => options.onResyncError?.(err));
        }, resyncMs)
      : null;
  timer?.unref();

  return {
    update: (subnet) => {
      chains = chainsFor(subnet);
      return ensureAll();
    },
    teardown: () => {
      if (timer) clearInterval(timer);
      return serialized(async () => {
        for (const chain of chains) await removeChain(chain, options);
      });
    },
  };
}
