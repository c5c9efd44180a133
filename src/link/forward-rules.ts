// flanneld's --iptables-forward-rules (default true; docs/flannel-compat.md, "Masquerade and forward rules"): filter
// FORWARD
// jumps to FLANNEL-FWD, which accepts everything from or to the flannel network, so a host whose
// FORWARD policy is DROP (docker sets it) still forwards pod traffic.

import { formatCidr } from '../routing-table/ipv4.js';
import {
  ensureChain,
  isInPlace,
  readInstalledState,
  removeChain,
  type IptablesRunOptions,
  type ManagedChain,
} from './iptables-chain.js';
import type { Ipv4Prefix } from './ipmasq.js';

export const FORWARD_CHAIN = 'FLANNEL-FWD';
export const FORWARD_COMMENT = 'flanneld forward';

/** The chain flanneld installs for --iptables-forward-rules, rule for rule. Pure. */
export function forwardChain(network: Ipv4Prefix): ManagedChain {
  const cidr = formatCidr(network.prefix, network.prefixLen);
  const comment = ['-m', 'comment', '--comment', FORWARD_COMMENT];
  return {
    table: 'filter',
    chain: FORWARD_CHAIN,
    jump: { chain: 'FORWARD', spec: [...comment, '-j', FORWARD_CHAIN] },
    rules: [
      { chain: FORWARD_CHAIN, spec: ['-s', cidr, ...comment, '-j', 'ACCEPT'] },
      { chain: FORWARD_CHAIN, spec: ['-d', cidr, ...comment, '-j', 'ACCEPT'] },
    ],
  };
}

export interface ForwardRulesOptions extends IptablesRunOptions {
  readonly network: Ipv4Prefix;
}

/** Installs or repairs the forward rules; idempotent (call again on every resync tick). */
export async function applyForwardRules(options: ForwardRulesOptions): Promise<void> {
  await ensureChain(forwardChain(options.network), options);
}

/** True when exactly flannel's forward rules for this network are installed. */
export async function forwardRulesInPlace(options: ForwardRulesOptions): Promise<boolean> {
  const chain = forwardChain(options.network);
  return isInPlace(await readInstalledState(chain, options), chain);
}

/** Removes the FORWARD jump and FLANNEL-FWD. Idempotent. */
export async function removeForwardRules(options: IptablesRunOptions = {}): Promise<void> {
  await removeChain(forwardChain({ prefix: 0, prefixLen: 0 }), options);
}
