// The datapath's own latency: how long packets spend inside the agent, as histograms in one
// Float64Array (shared memory for a lane in a worker thread), bumped without allocating.
//
// Per direction (tx: flannel0 -> UDP, rx: UDP -> flannel0), three series:
//   residence  per packet carried out: from its arrival (the kernel's receive timestamp of a
//              datagram; for flannel0, the moment its fd was seen ready) to the return of the
//              send or write call that carried it out (every datagram cut from a super-packet counts)
//   wait       per batch: from the arrival of its first packet to the return of the read that took it
//              (the time in the kernel's queue and the wake-up, as far as the agent can see it)
//   work       per batch: from that read's return to the return of the batch's last send or write
//              (classification in JavaScript and the send/write syscalls)
// All times are µs of the I/O clock (slab.stamps, slab.ioClock: CLOCK_MONOTONIC in the shim).
//
// Buckets: 1 µs wide below 8 µs, then four per octave (each about 19% wide) up to 2^24 µs
// (~16.8 s; anything longer lands in the last bucket).

export const LATENCY_SERIES = ['txResidence', 'txWait', 'txWork', 'rxResidence', 'rxWait', 'rxWork'] as const;
export type LatencySeries = (typeof LATENCY_SERIES)[number];

/** Index of each series, e.g. L.rxWait. */
export const L = Object.freeze(Object.fromEntries(LATENCY_SERIES.map((n, i) => [n, i]))) as {
  readonly [K in LatencySeries]: number;
};

const LINEAR_BUCKETS = 8;
const SUB_BUCKETS = 4;
const MAX_OCTAVE = 23; // 2^23 <= u < 2^24
/** Buckets per series. */
export const LATENCY_BUCKETS = LINEAR_BUCKETS + (MAX_OCTAVE - 2) * SUB_BUCKETS;
/** Per series: [count, sum of µs, bucket 0, ..., bucket LATENCY_BUCKETS - 1]. */
export const SERIES_STRIDE = 2 + LATENCY_BUCKETS;
export const LATENCY_CELLS = LATENCY_SERIES.length * SERIES_STRIDE;

export function newLatency(): Float64Array {
  return new Float64Array(LATENCY_CELLS);
}

/** The bucket of a duration of us microseconds (negative: 0; beyond the last bound: the last). */
export function bucketOf(us: number): number {
  const u = us > 0 ? (us < 0xffffff ? us | 0 : 0xffffff) : 0;
  if (u < LINEAR_BUCKETS) return u;
  const octave = 31 - Math.clz32(u); // >= 3
  return LINEAR_BUCKETS + (octave - 3) * SUB_BUCKETS + ((u >>> (octave - 2)) & 3);
}

/** The exclusive upper bound of bucket b in µs (a bucket holds whole µs below it). */
export function bucketUpperBound(b: number): number {
  if (b < LINEAR_BUCKETS) return b + 1;
  const k = b - LINEAR_BUCKETS,
    octave = 3 + ((k / SUB_BUCKETS) | 0),
    sub = k % SUB_BUCKETS;
  return 2 ** octave + (sub + 1) * 2 ** (octave - 2);
}

/** Adds one duration (µs) to series s of h. The hot path's only histogram operation. */
export function record(h: Float64Array, s: number, us: number): void {
  const base = s * SERIES_STRIDE;
  if (!(us > 0)) us = 0; // a stamp after the clock read (or NaN): count it as 0
  h[base]++;
  h[base + 1] += us;
  h[base + 2 + bucketOf(us)]++;
}

/** Adds series-by-series: into += from (lanes in worker threads each keep their own). */
export function addLatency(into: Float64Array, from: Float64Array): void {
  for (let i = 0; i < LATENCY_CELLS; i++) into[i]! += from[i]!;
}

export interface LatencySummary {
  readonly count: number;
  /** µs; quantiles are the upper bound of the bucket they fall in (within ~19% above). */
  readonly avgUs: number;
  readonly p50Us: number;
  readonly p90Us: number;
  readonly p99Us: number;
  readonly p999Us: number;
  readonly maxUs: number;
}

/** The upper bound (µs) of the bucket holding quantile q of series s; 0 when empty. */
export function quantileUs(h: Float64Array, s: number, q: number): number {
  const base = s * SERIES_STRIDE,
    count = h[base]!;
  if (count === 0) return 0;
  const rank = Math.max(1, Math.ceil(q * count));
  let seen = 0;
  for (let b = 0; b < LATENCY_BUCKETS; b++) {
    seen += h[base + 2 + b]!;
    if (seen >= rank) return bucketUpperBound(b);
  }
  return bucketUpperBound(LATENCY_BUCKETS - 1);
}

export function summarize(h: Float64Array, s: number): LatencySummary {
  const base = s * SERIES_STRIDE,
    count = h[base]!;
  const round = (v: number): number => Math.round(v * 10) / 10;
  return {
    count,
    avgUs: count === 0 ? 0 : round(h[base + 1]! / count),
    p50Us: quantileUs(h, s, 0.5),
    p90Us: quantileUs(h, s, 0.9),
    p99Us: quantileUs(h, s, 0.99),
    p999Us: quantileUs(h, s, 0.999),
    maxUs: quantileUs(h, s, 1),
  };
}

/** Every series summarized, for logs (the SIGUSR1 dump). */
export function latencyToObject(h: Float64Array): Record<LatencySeries, LatencySummary> {
  const out = {} as Record<LatencySeries, LatencySummary>;
  LATENCY_SERIES.forEach((name, s) => {
    out[name] = summarize(h, s);
  });
  return out;
}
