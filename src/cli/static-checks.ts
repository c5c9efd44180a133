// What static mode refuses in its flags' values, beyond their syntax (flags.ts) - each check returns
// the one-line reason or null, and the caller makes it a FlagError (exit 2):
//
//   - a prefix with host bits set (--network, --subnet, --peer): a typo more often than an intent;
//   - a network that would replace the default route or take in special addresses (0/8, 127/8,
//     224/4, 240/4), e.g. --network 0.0.0.0/0;
//   - two --peer flags for overlapping subnets (the same subnet twice included);
//   - a peer PublicIP that is not unicast, or is this host's own;
//   - at start-up, against the host: a network overlapping the underlay (the external interface's
//     networks) or any other route of the host that flannel0's route would replace or shadow.
//
// Control plane only; runs once at start-up.

import { execFileSync } from 'node:child_process';
import { formatCidr, formatIPv4, maskOf, parseCidr, parseIPv4 } from '../routing-table/ipv4.js';
import { cidr, notUnicastReason, overlaps, within } from '../subnet/address-checks.js';
import type { Ipv4Net } from '../subnet/config.js';

/** "has host bits set (10.244.1.0/24 is the prefix)" for text like "10.244.1.5/24"; null when clean or unparsable. */
export function hostBitsProblem(text: string): string | null {
  const slash = text.indexOf('/');
  if (slash < 0) return null;
  let addr: number, net: Ipv4Net;
  try {
    addr = parseIPv4(text.slice(0, slash));
    net = parseCidr(text);
  } catch {
    return null;
  }
  if ((addr & ~maskOf(net.prefixLen)) >>> 0 === 0) return null;
  return `${text} has host bits set (the prefix is ${formatCidr(net.prefix, net.prefixLen)})`;
}

const SPECIAL_BLOCKS: readonly Ipv4Net[] = ['0.0.0.0/8', '127.0.0.0/8', '224.0.0.0/4', '240.0.0.0/4'].map(parseCidr);

/** Why --network cannot be an overlay network, or null. */
export function networkProblem(network: Ipv4Net): string | null {
  if (network.prefixLen === 0) return `${cidr(network)} would replace the host's default route`;
  const special = SPECIAL_BLOCKS.find((b) => overlaps(b, network));
  if (special !== undefined) return `${cidr(network)} overlaps the special-purpose block ${cidr(special)}`;
  return null;
}

export interface PeerValue {
  readonly prefix: number;
  readonly prefixLen: number;
  readonly publicIp: number;
}

/** Why the --peer list cannot be routed, or null. ownPublicIp: --public-ip when given. */
export function peersProblem(peers: readonly PeerValue[], ownPublicIp: number | null): string | null {
  for (let i = 0; i < peers.length; i++) {
    const p = peers[i]!;
    const notUnicast = notUnicastReason(p.publicIp);
    if (notUnicast !== null) return `--peer ${cidr(p)}=${formatIPv4(p.publicIp)}: the PublicIP ${notUnicast}`;
    if (ownPublicIp !== null && p.publicIp === ownPublicIp)
      return `--peer ${cidr(p)}=${formatIPv4(p.publicIp)}: the PublicIP is this host's own`;
    for (let j = 0; j < i; j++) {
      const q = peers[j]!;
      if (!overlaps(p, q)) continue;
      return q.prefix === p.prefix && q.prefixLen === p.prefixLen
        ? `--peer ${cidr(p)} is given twice`
        : `--peer ${cidr(p)} overlaps --peer ${cidr(q)}`;
    }
  }
  return null;
}

/** A route of the host (any table), as `ip -j -4 route show table all` lists it. */
export interface HostRoute {
  /** "default", "a.b.c.d" or "a.b.c.d/len". */
  readonly dst: string;
  readonly dev?: string;
  readonly gateway?: string;
  readonly table?: string;
  readonly type?: string;
}

export interface HostContext {
  readonly network: Ipv4Net;
  /** This host's --subnet: routes inside it (the pod bridge, its local and broadcast entries) are expected. */
  readonly subnet: Ipv4Net;
  /** The external interface and its addresses (the underlay). */
  readonly extName: string;
  readonly ownAddresses: readonly number[];
}

/**
 * Why flannel0's route for the network would harm the host, or null: the network holds one of the
 * host's own underlay addresses, or overlaps a route other than the default route and routes inside
 * --subnet. A route via a flannel device counts too: flannel0 is not persistent, so such a route
 * belongs to an agent that is running now, and replacing it would cut that agent off.
 */
export function hostRoutesProblem(routes: readonly HostRoute[], ctx: HostContext): string | null {
  const net = ctx.network;
  for (const a of ctx.ownAddresses) {
    if (within({ prefix: a, prefixLen: 32 }, net))
      return `--network ${cidr(net)} contains this host's own address ${formatIPv4(a)}`;
  }
  for (const r of routes) {
    if (r.dst === 'default') continue;
    let dst: Ipv4Net;
    try {
      dst = parseCidr(r.dst.includes('/') ? r.dst : `${r.dst}/32`);
    } catch {
      continue; // not IPv4
    }
    if (dst.prefixLen === 0 || !overlaps(dst, net) || within(dst, ctx.subnet)) continue;
    const what =
      r.dev === ctx.extName && r.gateway === undefined
        ? 'the underlay route'
        : r.dev?.startsWith('flannel') === true
          ? 'the route of a flannel agent already running,'
          : 'the host route';
    const type = r.type !== undefined && r.type !== 'unicast' ? `${r.type} ` : '';
    const dev = r.dev !== undefined ? ` dev ${r.dev}` : '';
    const table = r.table !== undefined && r.table !== 'main' ? ` table ${r.table}` : '';
    const where = `${type}${r.dst}${dev}${table}`;
    return `--network ${cidr(net)} overlaps ${what} ${where}: flannel0's route would replace or shadow it`;
  }
  return null;
}

/** Every IPv4 route of the host, all tables. */
export function readHostRoutes(): HostRoute[] {
  const out = execFileSync('ip', ['-j', '-4', 'route', 'show', 'table', 'all'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return JSON.parse(out) as HostRoute[];
}

/**
 * The checks that need the host (static mode, before anything is created): the peers against this
 * host's own addresses, and the network against its routes. The reason, or null.
 */
export function staticHostProblem(
  flags: { readonly network: Ipv4Net; readonly subnet: Ipv4Net; readonly peers: readonly PeerValue[] },
  ext: { readonly name: string; readonly address: number },
  publicIp: number,
  routes: readonly HostRoute[] = readHostRoutes(),
): string | null {
  const own = publicIp === ext.address ? [publicIp] : [publicIp, ext.address];
  for (const a of own) {
    const problem = peersProblem(flags.peers, a);
    if (problem !== null) return problem;
  }
  return hostRoutesProblem(routes, {
    network: flags.network,
    subnet: flags.subnet,
    extName: ext.name,
    ownAddresses: own,
  });
}
