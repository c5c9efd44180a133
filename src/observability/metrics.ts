// Prometheus text exposition (format 0.0.4) of the agent's state: datapath counters, routes and
// the lease. Written by hand: one scrape is a few dozen lines, rendered on demand from live data
// (nothing is copied or kept between scrapes), so no client library is needed.
//
// Control plane only: rendering allocates freely; it runs once per scrape, never per packet.

import { COUNTER_NAMES, type CounterName } from '../datapath/counters.js';
import { LATENCY_BUCKETS, SERIES_STRIDE, bucketUpperBound, L } from '../datapath/latency.js';
import { formatCidr, formatIPv4 } from '../routing-table/ipv4.js';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** A peer route as the datapath holds it (uint32 host-order fields, as routing-table's Route). */
export interface RouteInfo {
  readonly prefix: number;
  readonly prefixLen: number;
  readonly publicIp: number;
}

/** Our own lease (structurally the lease manager's Lease). */
export interface LeaseInfo {
  readonly subnet: { readonly prefix: number; readonly prefixLen: number };
  readonly publicIp: number;
  /** Expiry in ms since the epoch; null for a reservation (no TTL, never expires). */
  readonly expiresAt: number | null;
}

/** Traffic to and from one peer route (src/datapath/peer-counters.ts). */
export interface PeerTraffic extends RouteInfo {
  /** Datagrams sent to the peer's PublicIP for this route, and their UDP payload bytes. */
  readonly sentPackets: number;
  readonly sentBytes: number;
  /** Packets for this route dropped after the route was found (TTL, bad offload, send error). */
  readonly sentDrops: number;
  /** Packets from the peer, with inner sources in this route, written to the TUN device, and their bytes. */
  readonly receivedPackets: number;
  readonly receivedBytes: number;
  /** Packets from the peer dropped after its checks passed the sender (not for us, TTL, write error). */
  readonly receivedDrops: number;
}

/**
 * What a scrape reads. Every member is read at render time, so the agent passes live objects:
 * the datapath's own counters array and accessors over its current route snapshot and lease.
 */
export interface MetricsSource {
  /** Indexed by COUNTER_NAMES (src/datapath/counters.ts). */
  readonly counters: Float64Array;
  /** Peer routes currently in the datapath (our own subnet is not among them). */
  routes(): Iterable<RouteInfo>;
  /** Null before the first lease is acquired. */
  lease(): LeaseInfo | null;
  /** Optional: per-peer traffic, if the datapath counts it. */
  peerTraffic?(): Iterable<PeerTraffic>;
  /** Optional: each offload and whether it is in force (after negotiation and any fallback). */
  offloads?(): Readonly<Record<string, boolean>>;
  /** Optional: how many threads forward packets (1: the main thread; 2: a worker per direction). */
  datapathThreads?(): number;
  /**
   * Optional: which datapath forwards (--datapath, docs/fast-path.md): 'kernel' (the TC-eBPF fast
   * path, attached by 'tcx' or 'tc') or 'userspace' (with the reason when the fast path is not in force).
   */
  datapath?(): DatapathInfo;
  /** Optional: the fast path's own counters (null when it does not run). */
  fastPathCounters?(): FastPathCounters | null;
  /** Optional: the datapath's latency histograms (src/datapath/latency.ts). */
  readonly latency?: Float64Array;
  /** Optional: input the agent refused (peer leases, config changes), by input and reason. */
  refusals?(): Iterable<{ readonly input: string; readonly reason: string; readonly count: number }>;
}

export interface DatapathInfo {
  readonly datapath: string;
  readonly attach?: string;
  readonly datapathReason?: string;
}

/** Packets the fast path handed to the userspace datapath unchanged, and packets it lost (a helper failed). */
export interface FastPathCounters {
  readonly kernelTxPassedUp: number;
  readonly kernelRxPassedUp: number;
  readonly kernelTxFailed: number;
  readonly kernelRxFailed: number;
}

const PREFIX = 'flannel_ts_';

type Labels = Readonly<Record<string, string>>;

/** Where each datapath counter goes: a metric family plus the labels that tell its series apart. */
interface CounterSeries {
  readonly family: string;
  readonly labels: Labels;
}

interface Family {
  readonly help: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
}

const FAMILIES: Readonly<Record<string, Family>> = {
  tun_read_packets_total: {
    type: 'counter',
    help: 'Packets read from the TUN device (flannel0), to be sent to peers.',
  },
  tun_read_bytes_total: { type: 'counter', help: 'Bytes of the packets read from the TUN device (flannel0).' },
  udp_sent_packets_total: { type: 'counter', help: 'Encapsulated packets sent to peers over UDP.' },
  udp_sent_bytes_total: { type: 'counter', help: 'UDP payload bytes sent to peers.' },
  udp_received_packets_total: { type: 'counter', help: 'Encapsulated packets received from peers over UDP.' },
  udp_received_bytes_total: { type: 'counter', help: 'UDP payload bytes received from peers.' },
  tun_written_packets_total: {
    type: 'counter',
    help: 'Packets written to the TUN device (flannel0), received from peers.',
  },
  tun_written_bytes_total: { type: 'counter', help: 'Bytes of the packets written to the TUN device (flannel0).' },
  tun_gro_writes_total: { type: 'counter', help: 'Coalesced TCP super-packets written to the TUN device (GRO).' },
  tun_gro_packets_total: {
    type: 'counter',
    help: 'Packets carried by coalesced super-packets (also in tun_written_packets_total).',
  },
  tun_gro_fallbacks_total: { type: 'counter', help: 'Times flannel0 refused a super-packet and GRO was turned off.' },
  offload_enabled: {
    type: 'gauge',
    help: 'Whether an offload is in force (1) or off, refused by the kernel or by --offloads (0).',
  },
  datapath_info: {
    type: 'gauge',
    help:
      'Which datapath forwards: kernel (the TC-eBPF fast path, the userspace datapath behind it) or userspace; ' +
      'attach: tcx or tc; reason: why the fast path is not in force.',
  },
  fastpath_passed_up_total: {
    type: 'counter',
    help: 'Packets the kernel fast path handed unchanged to the userspace datapath (counted there too), by direction.',
  },
  fastpath_failed_total: {
    type: 'counter',
    help: 'Packets the kernel fast path lost after spending their TTL (a BPF helper failed), by direction.',
  },
  datapath_threads: {
    type: 'gauge',
    help: 'Threads forwarding packets: 1 = the main thread, 2 = a worker thread per direction (--workers).',
  },
  tun_tso_packets_total: {
    type: 'counter',
    help: 'TSO super-packets read from the TUN device (once each in tun_read_packets_total).',
  },
  tun_tso_segments_total: { type: 'counter', help: 'Segments the TSO super-packets were cut into, each one datagram.' },
  tun_uso_packets_total: {
    type: 'counter',
    help: 'UDP GSO super-packets read from the TUN device (once each in tun_read_packets_total).',
  },
  tun_uso_segments_total: {
    type: 'counter',
    help: 'Datagrams the UDP GSO super-packets were cut into, each one datagram on the wire.',
  },
  tun_checksums_completed_total: {
    type: 'counter',
    help: 'Packets read with a partial checksum that was completed before sending.',
  },
  udp_gro_runs_total: { type: 'counter', help: 'Coalesced receives (UDP GRO) from the socket.' },
  udp_gro_datagrams_total: {
    type: 'counter',
    help: 'Datagrams carried by coalesced receives (also in udp_received_packets_total).',
  },
  dropped_packets_total: {
    type: 'counter',
    help: 'Packets dropped by the datapath, by direction (tx: flannel0 to UDP, rx: UDP to flannel0) and reason.',
  },
  icmp_unreachable_sent_total: {
    type: 'counter',
    help: 'ICMP destination-unreachable messages sent back for packets with no route.',
  },
  icmp_unreachable_failed_total: {
    type: 'counter',
    help: 'ICMP destination-unreachable messages built but not written to the TUN device.',
  },
  icmp_time_exceeded_sent_total: {
    type: 'counter',
    help: 'ICMP time-exceeded messages written back into the TUN device for packets whose TTL ran out.',
  },
  icmp_time_exceeded_failed_total: {
    type: 'counter',
    help: 'ICMP time-exceeded messages built but not written to the TUN device.',
  },
  icmp_rate_limited_total: {
    type: 'counter',
    help: 'ICMP errors not sent because their destination, or all together, exceeded the rate limit.',
  },
  read_batches_total: {
    type: 'counter',
    help: 'Batched reads that returned packets (packets / batches = batch occupancy).',
  },
  read_errors_total: { type: 'counter', help: 'Batched reads that failed with an I/O error.' },
  datapath_busy_polls_total: {
    type: 'counter',
    help:
      'Busy-polling after traffic (--datapath-spin-us), by outcome: caught a packet, ran out and slept, ' +
      'stopped because other tasks wanted the CPU (contended), or not started because the spins before ' +
      'caught nothing (paused).',
  },
  datapath_residence_seconds: {
    type: 'histogram',
    help:
      'Time each packet spends inside the agent, by direction: from its arrival (the kernel receive timestamp ' +
      'of a datagram; for flannel0, when the agent saw it readable) to the return of the send or write that ' +
      'carried it out.',
  },
  datapath_wait_seconds: {
    type: 'histogram',
    help:
      'Per batch: from the arrival of its first packet to the return of the read that took it ' +
      '(queueing and wake-up).',
  },
  datapath_work_seconds: {
    type: 'histogram',
    help: 'Per batch: from the return of its read to the return of its last send or write (JavaScript and syscalls).',
  },
  refusals_total: {
    type: 'counter',
    help: 'Input refused and not acted on (input: lease or config), by reason; each refusal is also logged once.',
  },
  routes: { type: 'gauge', help: 'Peer routes in the datapath.' },
  route_info: { type: 'gauge', help: 'One series per peer route: the subnet and the public IP it is sent to.' },
  lease_info: { type: 'gauge', help: 'Our own subnet lease and the public IP it advertises.' },
  lease_expiration_timestamp_seconds: {
    type: 'gauge',
    help: 'When our subnet lease expires unless renewed (unix seconds); absent for a reservation.',
  },
  peer_sent_packets_total: { type: 'counter', help: 'Datagrams sent to one peer route.' },
  peer_sent_bytes_total: { type: 'counter', help: 'UDP payload bytes sent to one peer route.' },
  peer_received_packets_total: {
    type: 'counter',
    help: 'Packets received from one peer route and written to the TUN device.',
  },
  peer_received_bytes_total: {
    type: 'counter',
    help: 'Bytes received from one peer route and written to the TUN device.',
  },
  peer_dropped_packets_total: {
    type: 'counter',
    help: 'Packets to (tx) or from (rx) one peer route dropped after the route was found, by direction.',
  },
};

const drop = (direction: 'tx' | 'rx', reason: string): CounterSeries => ({
  family: 'dropped_packets_total',
  labels: { direction, reason },
});

// A Record over CounterName: a counter added to the datapath without a series here is a compile error.
const COUNTER_SERIES: Readonly<Record<CounterName, CounterSeries>> = {
  tunReadPackets: { family: 'tun_read_packets_total', labels: {} },
  tunReadBytes: { family: 'tun_read_bytes_total', labels: {} },
  udpSentPackets: { family: 'udp_sent_packets_total', labels: {} },
  udpSentBytes: { family: 'udp_sent_bytes_total', labels: {} },
  dropTxMalformed: drop('tx', 'malformed'),
  dropTxOversize: drop('tx', 'oversize'),
  dropTxNoRoute: drop('tx', 'no_route'),
  dropTxTtl: drop('tx', 'ttl_exceeded'),
  dropTxSendError: drop('tx', 'send_error'),
  icmpUnreachableSent: { family: 'icmp_unreachable_sent_total', labels: {} },
  icmpUnreachableFailed: { family: 'icmp_unreachable_failed_total', labels: {} },
  udpRecvPackets: { family: 'udp_received_packets_total', labels: {} },
  udpRecvBytes: { family: 'udp_received_bytes_total', labels: {} },
  tunWritePackets: { family: 'tun_written_packets_total', labels: {} },
  tunWriteBytes: { family: 'tun_written_bytes_total', labels: {} },
  dropRxMalformed: drop('rx', 'malformed'),
  dropRxOversize: drop('rx', 'oversize'),
  dropRxUnknownSender: drop('rx', 'unknown_sender'),
  dropRxSpoofedSource: drop('rx', 'spoofed_source'),
  dropRxNotForUs: drop('rx', 'not_for_us'),
  dropRxTtl: drop('rx', 'ttl_exceeded'),
  dropRxWriteError: drop('rx', 'write_error'),
  tunReadBatches: { family: 'read_batches_total', labels: { source: 'tun' } },
  tunGroWrites: { family: 'tun_gro_writes_total', labels: {} },
  tunGroPackets: { family: 'tun_gro_packets_total', labels: {} },
  tunGroFallbacks: { family: 'tun_gro_fallbacks_total', labels: {} },
  tunTsoPackets: { family: 'tun_tso_packets_total', labels: {} },
  tunTsoSegments: { family: 'tun_tso_segments_total', labels: {} },
  tunUsoPackets: { family: 'tun_uso_packets_total', labels: {} },
  tunUsoSegments: { family: 'tun_uso_segments_total', labels: {} },
  tunCsumCompleted: { family: 'tun_checksums_completed_total', labels: {} },
  dropTxBadOffload: drop('tx', 'bad_offload'),
  udpGroRuns: { family: 'udp_gro_runs_total', labels: {} },
  udpGroDatagrams: { family: 'udp_gro_datagrams_total', labels: {} },
  udpRecvBatches: { family: 'read_batches_total', labels: { source: 'udp' } },
  tunReadErrors: { family: 'read_errors_total', labels: { source: 'tun' } },
  udpRecvErrors: { family: 'read_errors_total', labels: { source: 'udp' } },
  icmpTimeExceededSent: { family: 'icmp_time_exceeded_sent_total', labels: {} },
  icmpTimeExceededFailed: { family: 'icmp_time_exceeded_failed_total', labels: {} },
  icmpRateLimited: { family: 'icmp_rate_limited_total', labels: {} },
  spinCaught: { family: 'datapath_busy_polls_total', labels: { outcome: 'caught' } },
  spinRanOut: { family: 'datapath_busy_polls_total', labels: { outcome: 'ran_out' } },
  spinContended: { family: 'datapath_busy_polls_total', labels: { outcome: 'contended' } },
  spinPaused: { family: 'datapath_busy_polls_total', labels: { outcome: 'paused' } },
};

/** Label values escape backslash, double quote and newline (exposition format 0.0.4). */
function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escapes backslash and newline. */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function formatLabels(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return '';
  return `{${keys.map((k) => `${k}="${escapeLabelValue(labels[k])}"`).join(',')}}`;
}

/**
 * Collects samples per family so each family's HELP/TYPE is written once, followed by all its
 * series, in the order the families were first used.
 */
class Exposition {
  private readonly samples = new Map<string, string[]>();

  add(family: string, labels: Labels, value: number): void {
    this.addSuffixed(family, '', labels, value);
  }

  /** A sample of a family under a suffixed name (a histogram's _bucket, _sum, _count). */
  addSuffixed(family: string, suffix: string, labels: Labels, value: number): void {
    let lines = this.samples.get(family);
    if (!lines) {
      if (!(family in FAMILIES)) throw new Error(`metrics: unknown family ${family}`);
      lines = [];
      this.samples.set(family, lines);
    }
    lines.push(`${PREFIX}${family}${suffix}${formatLabels(labels)} ${formatValue(value)}`);
  }

  /** Declares a family with no series yet, so its HELP/TYPE appear even when empty. */
  declare(family: string): void {
    if (!this.samples.has(family)) this.samples.set(family, []);
  }

  render(): string {
    let out = '';
    for (const [family, lines] of this.samples) {
      const { help, type } = FAMILIES[family];
      out += `# HELP ${PREFIX}${family} ${escapeHelp(help)}\n# TYPE ${PREFIX}${family} ${type}\n`;
      for (const line of lines) out += `${line}\n`;
    }
    return out;
  }
}

const cidrOf = (n: { prefix: number; prefixLen: number }) => formatCidr(n.prefix, n.prefixLen);

/**
 * One series of a latency histogram: cumulative buckets at powers of two of µs (2 µs .. 8.4 s,
 * in seconds; the finer buckets inside are summed into them), +Inf, sum and count.
 */
function addHistogram(x: Exposition, family: string, labels: Labels, h: Float64Array, series: number): void {
  const base = series * SERIES_STRIDE;
  let cumulative = 0;
  for (let b = 0; b < LATENCY_BUCKETS; b++) {
    cumulative += h[base + 2 + b] ?? 0;
    const upper = bucketUpperBound(b);
    if ((upper & (upper - 1)) === 0 && upper >= 2)
      x.addSuffixed(family, '_bucket', { ...labels, le: String(upper / 1e6) }, cumulative);
  }
  x.addSuffixed(family, '_bucket', { ...labels, le: '+Inf' }, h[base] ?? 0);
  x.addSuffixed(family, '_sum', labels, (h[base + 1] ?? 0) / 1e6);
  x.addSuffixed(family, '_count', labels, h[base] ?? 0);
}

/** The whole exposition, metrics in a fixed order; every line ends with a newline. */
export function renderMetrics(source: MetricsSource): string {
  const x = new Exposition();
  const counters = source.counters;
  COUNTER_NAMES.forEach((name, i) => {
    const series = COUNTER_SERIES[name];
    x.add(series.family, series.labels, counters[i] ?? 0);
  });

  if (source.latency) {
    const h = source.latency;
    for (const [family, tx, rx] of [
      ['datapath_residence_seconds', L.txResidence, L.rxResidence],
      ['datapath_wait_seconds', L.txWait, L.rxWait],
      ['datapath_work_seconds', L.txWork, L.rxWork],
    ] as const) {
      addHistogram(x, family, { direction: 'tx' }, h, tx);
      addHistogram(x, family, { direction: 'rx' }, h, rx);
    }
  }

  const routes = [...source.routes()];
  x.add('routes', {}, routes.length);
  x.declare('route_info');
  for (const r of routes) x.add('route_info', { subnet: cidrOf(r), public_ip: formatIPv4(r.publicIp) }, 1);

  const lease = source.lease();
  x.declare('lease_info');
  if (lease) {
    x.add('lease_info', { subnet: cidrOf(lease.subnet), public_ip: formatIPv4(lease.publicIp) }, 1);
    if (lease.expiresAt !== null) {
      x.add('lease_expiration_timestamp_seconds', { subnet: cidrOf(lease.subnet) }, Math.floor(lease.expiresAt / 1000));
    }
  }

  if (source.offloads) {
    for (const [name, on] of Object.entries(source.offloads())) x.add('offload_enabled', { offload: name }, on ? 1 : 0);
  }
  if (source.datapathThreads) x.add('datapath_threads', {}, source.datapathThreads());
  if (source.datapath) {
    const d = source.datapath();
    x.add('datapath_info', { datapath: d.datapath, attach: d.attach ?? '', reason: d.datapathReason ?? '' }, 1);
  }
  const fast = source.fastPathCounters?.();
  if (fast) {
    x.add('fastpath_passed_up_total', { direction: 'tx' }, fast.kernelTxPassedUp);
    x.add('fastpath_passed_up_total', { direction: 'rx' }, fast.kernelRxPassedUp);
    x.add('fastpath_failed_total', { direction: 'tx' }, fast.kernelTxFailed);
    x.add('fastpath_failed_total', { direction: 'rx' }, fast.kernelRxFailed);
  }
  if (source.refusals) {
    x.declare('refusals_total');
    for (const r of source.refusals()) x.add('refusals_total', { input: r.input, reason: r.reason }, r.count);
  }

  if (source.peerTraffic) {
    for (const family of [
      'peer_sent_packets_total',
      'peer_sent_bytes_total',
      'peer_received_packets_total',
      'peer_received_bytes_total',
      'peer_dropped_packets_total',
    ]) {
      x.declare(family);
    }
    for (const p of source.peerTraffic()) {
      const labels = { subnet: cidrOf(p), public_ip: formatIPv4(p.publicIp) };
      x.add('peer_sent_packets_total', labels, p.sentPackets);
      x.add('peer_sent_bytes_total', labels, p.sentBytes);
      x.add('peer_received_packets_total', labels, p.receivedPackets);
      x.add('peer_received_bytes_total', labels, p.receivedBytes);
      x.add('peer_dropped_packets_total', { ...labels, direction: 'tx' }, p.sentDrops);
      x.add('peer_dropped_packets_total', { ...labels, direction: 'rx' }, p.receivedDrops);
    }
  }
  return x.render();
}
