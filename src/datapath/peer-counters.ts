// Per-peer traffic counters: PEER_FIELDS float64 slots per route of a routing snapshot, indexed by the route's
// index in that snapshot (what lookup() returns), so counting costs the datapath a few array writes per packet
// and no allocation. A route change brings a new array laid out by the new snapshot; carryPeerCounters moves each
// surviving route's counts over, so a peer's series never restarts while its lease stays.
//
// One array may be shared by a lane per direction (--workers 2): the tx lane writes only the tx fields, the rx lane
// only the rx fields, and each carries over only its own fields, so no element has two writers.
import type { RoutingSnapshot } from '../routing-table/snapshot.js';

/** Field offsets within one route's slots. */
export const P = { txPackets: 0, txBytes: 1, txDrops: 2, rxPackets: 3, rxBytes: 4, rxDrops: 5 } as const;
export const PEER_FIELDS = 6;

/** A zeroed array for routeCount routes; shared (SharedArrayBuffer) when lanes on other threads write it. */
export function newPeerCounters(routeCount: number, shared = false): Float64Array {
  const bytes = routeCount * PEER_FIELDS * Float64Array.BYTES_PER_ELEMENT;
  return new Float64Array(shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
}

/** Which fields a lane writes, by the directions it forwards. */
export type PeerFieldSet = 'both' | 'tx' | 'rx';

/**
 * Copies the counts of every route of `from` that `to` still has (same prefix, length and PublicIP) from fromCounts
 * into toCounts, for the fields of `fields` only. A route is found in `from` by looking up its own network address,
 * so nothing is allocated; when routes overlap, an inner route may hide an outer one, whose counts then restart.
 */
export function carryPeerCounters(
  from: RoutingSnapshot,
  fromCounts: Float64Array,
  to: RoutingSnapshot,
  toCounts: Float64Array,
  fields: PeerFieldSet,
): void {
  const first = fields === 'rx' ? P.rxPackets : 0;
  const end = fields === 'tx' ? P.rxPackets : PEER_FIELDS;
  for (let j = 0; j < to.routeCount; j++) {
    const r = to.routes[j]!;
    const i = from.lookup(r.prefix);
    if (i < 0) continue;
    const old = from.routes[i]!;
    if (old.prefixLen !== r.prefixLen || old.prefix !== r.prefix || old.publicIp !== r.publicIp) continue;
    if ((i + 1) * PEER_FIELDS > fromCounts.length) continue;
    for (let f = first; f < end; f++) toCounts[j * PEER_FIELDS + f] = fromCounts[i * PEER_FIELDS + f]!;
  }
}

/** One route's counts, for metrics. */
export interface PeerTotals {
  readonly sentPackets: number;
  readonly sentBytes: number;
  readonly sentDrops: number;
  readonly receivedPackets: number;
  readonly receivedBytes: number;
  readonly receivedDrops: number;
}

export function peerTotals(counts: Float64Array, routeIndex: number): PeerTotals {
  const at = (field: number): number => counts[routeIndex * PEER_FIELDS + field] ?? 0;
  return {
    sentPackets: at(P.txPackets),
    sentBytes: at(P.txBytes),
    sentDrops: at(P.txDrops),
    receivedPackets: at(P.rxPackets),
    receivedBytes: at(P.rxBytes),
    receivedDrops: at(P.rxDrops),
  };
}
