// The door for peer leases: which leases read from the registry may become routes. flannel routes
// every lease it can parse; a careless or hostile writer could then send pod traffic to loopback,
// multicast or ourselves, or claim addresses inside our own subnet. A lease is refused when:
//
//   - its subnet is not inside the network (outside_network);
//   - its subnet overlaps our own without being it (overlaps_own_subnet; our own lease is skipped,
//     never refused);
//   - its subnet overlaps a lease admitted before it (overlaps_lease; the older lease, by registry
//     revision, keeps its route);
//   - its PublicIP is not a unicast address (public_ip_not_unicast: 0/8, 127/8, 224/4, 240/4,
//     255.255.255.255) or is our own PublicIP (public_ip_ours).
//
// Each refusal is logged once per change of the lease (not on every event that recomputes the
// routes) and counted in RefusalCounters under input "lease".

import type { Logger } from './clock.js';
import { silentLogger } from './clock.js';
import type { Ipv4Net } from './config.js';
import { formatIPv4 } from '../routing-table/ipv4.js';
import { cidr, notUnicastReason, overlaps, rangeOf, within } from './address-checks.js';
import type { RefusalCounters } from './refusals.js';

export type LeaseRefusalReason =
  'outside_network' | 'overlaps_own_subnet' | 'overlaps_lease' | 'public_ip_not_unicast' | 'public_ip_ours';

export interface CandidateLease {
  /** The registry key, for the log line. */
  readonly key: string;
  /** Host bits clear. */
  readonly subnet: Ipv4Net;
  readonly publicIp: number;
  readonly modRevision: number;
}

export interface LeaseRefusal {
  readonly reason: LeaseRefusalReason;
  /** Why, in words, e.g. "PublicIP 127.0.0.1 is a loopback address". */
  readonly detail: string;
}

export interface LeaseContext {
  /** The network every lease must lie in; null: not known, not checked. */
  readonly network: Ipv4Net | null;
  readonly ownSubnet: Ipv4Net;
  /** Our PublicIP; null: not known, not checked. */
  readonly ownPublicIp: number | null;
}

/** The checks of one lease on its own (not against the other leases); null when it passes. */
export function checkPeerLease(lease: CandidateLease, ctx: LeaseContext): LeaseRefusal | null {
  if (ctx.network !== null && !within(lease.subnet, ctx.network)) {
    return {
      reason: 'outside_network',
      detail: `subnet ${cidr(lease.subnet)} is not inside network ${cidr(ctx.network)}`,
    };
  }
  if (overlaps(lease.subnet, ctx.ownSubnet)) {
    return {
      reason: 'overlaps_own_subnet',
      detail: `subnet ${cidr(lease.subnet)} overlaps our own subnet ${cidr(ctx.ownSubnet)}`,
    };
  }
  const notUnicast = notUnicastReason(lease.publicIp);
  if (notUnicast !== null) {
    return { reason: 'public_ip_not_unicast', detail: `PublicIP ${formatIPv4(lease.publicIp)} ${notUnicast}` };
  }
  if (ctx.ownPublicIp !== null && lease.publicIp === ctx.ownPublicIp) {
    return { reason: 'public_ip_ours', detail: `PublicIP ${formatIPv4(lease.publicIp)} is our own` };
  }
  return null;
}

export interface LeaseGateOptions {
  readonly network?: Ipv4Net | null;
  readonly ownPublicIp?: number | null;
  readonly logger?: Logger;
  readonly counters?: RefusalCounters;
}

export class LeaseGate {
  private readonly network: Ipv4Net | null;
  private readonly ownPublicIp: number | null;
  private readonly log: Logger;
  private readonly counters: RefusalCounters | null;
  /** Key -> the refusal last logged for it; a key that passes again is forgotten. */
  private readonly refused = new Map<string, string>();

  constructor(options: LeaseGateOptions = {}) {
    this.network = options.network ?? null;
    this.ownPublicIp = options.ownPublicIp ?? null;
    this.log = options.logger ?? silentLogger;
    this.counters = options.counters ?? null;
  }

  /**
   * The leases that may be routed, in no particular order. candidates: at most one per subnet, our
   * own subnet not among them. Refusals not seen before (for that key and that reason) are logged and
   * counted.
   */
  admit<T extends CandidateLease>(candidates: readonly T[], ownSubnet: Ipv4Net): T[] {
    const ctx: LeaseContext = { network: this.network, ownSubnet, ownPublicIp: this.ownPublicIp };
    const refusedNow = new Map<string, LeaseRefusal>();
    const passing: T[] = [];
    for (const c of candidates) {
      const r = checkPeerLease(c, ctx);
      if (r === null) passing.push(c);
      else refusedNow.set(c.key, r);
    }
    // Older leases first: a newcomer that overlaps an established lease is the one refused.
    passing.sort((a, b) => a.modRevision - b.modRevision || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const admitted = new AdmittedRanges();
    const out: T[] = [];
    for (const c of passing) {
      const clash = admitted.overlapping(c);
      if (clash === null) {
        admitted.insert(c);
        out.push(c);
      } else {
        refusedNow.set(c.key, {
          reason: 'overlaps_lease',
          detail: `subnet ${cidr(c.subnet)} overlaps the older lease ${clash.key}`,
        });
      }
    }
    this.report(refusedNow);
    return out;
  }

  private report(refusedNow: ReadonlyMap<string, LeaseRefusal>): void {
    for (const key of this.refused.keys()) if (!refusedNow.has(key)) this.refused.delete(key);
    for (const [key, r] of refusedNow) {
      const line = `Refusing lease ${key}: ${r.detail} (reason ${r.reason}); nothing is routed from it`;
      if (this.refused.get(key) === line) continue;
      this.refused.set(key, line);
      this.log.warn(line);
      this.counters?.add('lease', r.reason);
    }
  }
}

/** Non-overlapping ranges sorted by first address: overlap test by binary search. */
class AdmittedRanges {
  private readonly firsts: number[] = [];
  private readonly lasts: number[] = [];
  private readonly leases: CandidateLease[] = [];

  /** An admitted lease that shares an address with c, or null. */
  overlapping(c: CandidateLease): CandidateLease | null {
    const { first, last } = rangeOf(c.subnet);
    const i = this.firstEndingAtOrAfter(first);
    return i < this.firsts.length && this.firsts[i]! <= last ? this.leases[i]! : null;
  }

  insert(c: CandidateLease): void {
    const { first, last } = rangeOf(c.subnet);
    const i = this.firstEndingAtOrAfter(first);
    this.firsts.splice(i, 0, first);
    this.lasts.splice(i, 0, last);
    this.leases.splice(i, 0, c);
  }

  /** Index of the first range whose last address is >= addr (ranges are disjoint, so lasts are sorted). */
  private firstEndingAtOrAfter(addr: number): number {
    let lo = 0,
      hi = this.lasts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.lasts[mid]! < addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
