// Datapath counters: one Float64Array slot per counter (exact up to 2^53, no overflow, no
// allocation to bump). Every packet read and every drop has a counter; drops by reason.
// Each counter belongs to one direction and only that direction's loop writes it (tx:
// Forwarder.tunToUdp, rx: Forwarder.udpToTun; test/unit/datapath-counter-directions.test.ts).

export const COUNTER_NAMES = [
  // flannel0 -> UDP (dropTxOversize: a plain packet longer than flannel0's MTU, or a TSO
  // super-packet whose headers leave no room for payload within the MTU)
  'tunReadPackets',
  'tunReadBytes',
  'udpSentPackets',
  'udpSentBytes',
  'dropTxMalformed',
  'dropTxOversize',
  'dropTxNoRoute',
  'dropTxTtl',
  'dropTxSendError',
  'icmpUnreachableSent',
  // ICMP errors built but not written to flannel0 (its queue full, say)
  'icmpUnreachableFailed',
  // UDP -> flannel0
  'udpRecvPackets',
  'udpRecvBytes',
  'tunWritePackets',
  'tunWriteBytes',
  'dropRxMalformed',
  'dropRxOversize',
  'dropRxUnknownSender',
  'dropRxSpoofedSource',
  'dropRxNotForUs',
  'dropRxTtl',
  'dropRxWriteError',
  // GRO into flannel0: super-packets written, and the packets they carried (in tunWritePackets too)
  'tunGroWrites',
  'tunGroPackets',
  // 1 once flannel0 refused a super-packet and GRO was turned off (writes are plain from then on)
  'tunGroFallbacks',
  // TSO from flannel0: super-packets read (in tunReadPackets, once each) and the segments they were
  // cut into; packets whose partial checksum was completed; offloaded reads that could not be
  // handled (not TCP or UDP, a bad virtio header), dropped
  'tunTsoPackets',
  'tunTsoSegments',
  'tunCsumCompleted',
  'dropTxBadOffload',
  // USO from flannel0: UDP GSO super-packets read (in tunReadPackets, once each) and the datagrams
  // they were cut into
  'tunUsoPackets',
  'tunUsoSegments',
  // UDP GRO: coalesced receives, and the datagrams they carried (in udpRecvPackets too)
  'udpGroRuns',
  'udpGroDatagrams',
  // Whole batches: reads that returned packets (packets / batches = batch occupancy) and
  // reads that failed (an I/O error, not a packet)
  'tunReadBatches',
  'udpRecvBatches',
  'tunReadErrors',
  'udpRecvErrors',
  // flannel0 -> UDP: ICMP time exceeded written back into flannel0 for a packet whose TTL ran out
  // here (and those that could not be written), and ICMP errors of either kind not sent because
  // their destination (or all destinations together) exceeded the rate limit (icmp-rate-limit.ts)
  'icmpTimeExceededSent',
  'icmpTimeExceededFailed',
  'icmpRateLimited',
  // The lane's busy-polling after traffic (--datapath-spin-us; the shim's spinCounts), of neither
  // direction: spins that caught a packet, ran out and slept, met another task wanting the CPU,
  // and waits that did not poll because the spins before them had caught nothing. Copied from the
  // shim by the lane (Lane.syncSpinCounts), not bumped by a Forwarder.
  'spinCaught',
  'spinRanOut',
  'spinContended',
  'spinPaused',
] as const;

/** The busy-polling counters, in the order of the shim's spinCounts. */
export const SPIN_COUNTERS = ['spinCaught', 'spinRanOut', 'spinContended', 'spinPaused'] as const;

export type CounterName = (typeof COUNTER_NAMES)[number];

/** Index of each counter in the Float64Array, e.g. C.tunReadPackets === 0. */
export const C = Object.freeze(Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i]))) as {
  readonly [K in CounterName]: number;
};

export function newCounters(): Float64Array {
  return new Float64Array(COUNTER_NAMES.length);
}

export function countersToObject(c: Float64Array): Record<CounterName, number> {
  const out = {} as Record<CounterName, number>;
  COUNTER_NAMES.forEach((n, i) => {
    out[n] = c[i];
  });
  return out;
}
