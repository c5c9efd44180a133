// flanneld's --ip-masq rules (docs/flannel-compat.md, "Masquerade and forward rules"; flannel v0.20.2+): nat
// POSTROUTING jumps to
// FLANNEL-POSTRTG, which leaves traffic inside the flannel network alone and masquerades pod
// traffic leaving it (and host traffic entering it). Same chain, rules, order and comment as
// flanneld, so a host can switch between flanneld and flannel-ts without stale or duplicate rules.

import { formatCidr } from '../routing-table/ipv4.js';
import {
  ensureChain,
  iptablesSupportsRandomFully,
  isInPlace,
  readInstalledState,
  removeChain,
  type IptablesRule,
  type IptablesRunOptions,
  type ManagedChain,
} from './iptables-chain.js';

export const MASQ_CHAIN = 'FLANNEL-POSTRTG';
export const MASQ_COMMENT = 'flanneld masq';
/** kube-proxy marks traffic it will masquerade itself with this bit; flannel must not NAT it twice. */
export const KUBE_PROXY_MARK = '0x4000/0x4000';
const MULTICAST = '224.0.0.0/4';

export interface Ipv4Prefix {
  /** uint32 host order, host bits clear. */
  readonly prefix: number;
  readonly prefixLen: number;
}

export interface IpMasqParams {
  /** The whole flannel network (config `Network`). */
  readonly network: Ipv4Prefix;
  /** This host's lease. */
  readonly subnet: Ipv4Prefix;
  /** MASQUERADE --random-fully (flanneld: when iptables supports it, unless --ip-masq-fully-random-disable). */
  readonly randomFully: boolean;
}

/** The chain flanneld installs for --ip-masq, rule for rule. Pure. */
export function ipMasqChain(params: IpMasqParams): ManagedChain {
  const network = formatCidr(params.network.prefix, params.network.prefixLen);
  const subnet = formatCidr(params.subnet.prefix, params.subnet.prefixLen);
  const comment = ['-m', 'comment', '--comment', MASQ_COMMENT];
  const masquerade = params.randomFully ? ['-j', 'MASQUERADE', '--random-fully'] : ['-j', 'MASQUERADE'];
  const rule = (...spec: string[]): IptablesRule => ({ chain: MASQ_CHAIN, spec });
  return {
    table: 'nat',
    chain: MASQ_CHAIN,
    jump: { chain: 'POSTROUTING', spec: [...comment, '-j', MASQ_CHAIN] },
    rules: [
      // Already marked for masquerading by kube-proxy: NATing again breaks some kernels.
      rule('-m', 'mark', '--mark', KUBE_PROXY_MARK, ...comment, '-j', 'RETURN'),
      // Pod to pod inside the flannel network: keep the source address.
      rule('-s', subnet, '-d', network, ...comment, '-j', 'RETURN'),
      rule('-s', network, '-d', subnet, ...comment, '-j', 'RETURN'),
      // From outside to our pods (e.g. a NodePort via another node): keep the client's address.
      rule('!', '-s', network, '-d', subnet, ...comment, '-j', 'RETURN'),
      // Pods to the outside world (not multicast): masquerade.
      rule('-s', network, '!', '-d', MULTICAST, ...comment, ...masquerade),
      // The host to remote pods: masquerade so the replies come back through the overlay.
      rule('!', '-s', network, '-d', network, ...comment, ...masquerade),
    ],
  };
}

export interface IpMasqOptions extends IptablesRunOptions {
  readonly network: Ipv4Prefix;
  readonly subnet: Ipv4Prefix;
  /** flanneld's --ip-masq-fully-random-disable. Default false. */
  readonly randomFullyDisable?: boolean;
}

async function chainFor(options: IpMasqOptions): Promise<ManagedChain> {
  const randomFully = !options.randomFullyDisable && (await iptablesSupportsRandomFully(options));
  return ipMasqChain({ network: options.network, subnet: options.subnet, randomFully });
}

/**
 * Installs or repairs the --ip-masq rules. Idempotent: call it at start-up and again on every
 * resync tick (flanneld: --iptables-resync, 5 s); it only touches iptables when the rules
 * differ. Rules for an older network or subnet in the chain are replaced.
 */
export async function applyIpMasq(options: IpMasqOptions): Promise<void> {
  await ensureChain(await chainFor(options), options);
}

/** True when exactly flannel's rules for these parameters are installed. */
export async function ipMasqInPlace(options: IpMasqOptions): Promise<boolean> {
  const chain = await chainFor(options);
  return isInPlace(await readInstalledState(chain, options), chain);
}

/**
 * Removes the POSTROUTING jump and FLANNEL-POSTRTG, whatever rules it holds (only the chain
 * name and jump matter, so network and subnet are not needed). Idempotent.
 */
export async function removeIpMasq(options: IptablesRunOptions = {}): Promise<void> {
  // The rules do not matter for removal; any parameters give the same jump and chain name.
  const chain = ipMasqChain({
    network: { prefix: 0, prefixLen: 0 },
    subnet: { prefix: 0, prefixLen: 0 },
    randomFully: false,
  });
  await removeChain(chain, options);
}
