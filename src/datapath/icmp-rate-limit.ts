// Rate limit of the ICMP errors the forwarder writes into flannel0, as Linux limits its own
// (net.ipv4.icmp_ratelimit and icmp_msgs_per_sec/icmp_msgs_burst): a token bucket per destination
// (the pod that sent the offending packet) and one for all destinations together. A flood of
// packets with no route then costs a handful of ICMP errors, not one each.
//
// Hot path: a fixed table of buckets indexed by a hash of the destination, allocated once; allow()
// allocates nothing. Destinations whose hashes collide share a bucket: they are limited together,
// never more than one destination alone would be.

export interface IcmpRateLimitConfig {
  /** Milliseconds per error to one destination, long-run (Linux: icmp_ratelimit, 1000). */
  readonly intervalMs: number;
  /** Errors one destination may get in a burst (Linux: XRLIM_BURST_FACTOR, 6). */
  readonly burst: number;
  /** Errors per second to all destinations together (Linux: icmp_msgs_per_sec, 1000). */
  readonly globalPerSecond: number;
  /** Errors in a burst to all destinations together (Linux: icmp_msgs_burst, 50). */
  readonly globalBurst: number;
}

/** Linux's defaults. */
export const KERNEL_ICMP_RATE_LIMIT: IcmpRateLimitConfig = Object.freeze({
  intervalMs: 1000,
  burst: 6,
  globalPerSecond: 1000,
  globalBurst: 50,
});

/** Buckets in the table (a power of two). */
const TABLE_BITS = 10;
const TABLE_SIZE = 1 << TABLE_BITS;

export class IcmpRateLimiter {
  private readonly tokens = new Float64Array(TABLE_SIZE);
  /** When each bucket was last refilled (ms); -Infinity: never used, full. */
  private readonly stamps = new Float64Array(TABLE_SIZE).fill(-Infinity);
  private globalTokens: number;
  private globalStamp = -Infinity;

  constructor(private readonly limit: IcmpRateLimitConfig = KERNEL_ICMP_RATE_LIMIT) {
    this.globalTokens = limit.globalBurst;
  }

  /** True (and a token taken from both buckets) if an error to destination may be sent at nowMs. */
  allow(destination: number, nowMs: number): boolean {
    const l = this.limit;
    const g = Math.min(l.globalBurst, this.globalTokens + ((nowMs - this.globalStamp) * l.globalPerSecond) / 1000);
    this.globalStamp = nowMs;
    const i = Math.imul(destination, 0x9e3779b1) >>> (32 - TABLE_BITS);
    const t = Math.min(l.burst, this.tokens[i]! + (nowMs - this.stamps[i]!) / l.intervalMs);
    this.stamps[i] = nowMs;
    if (g < 1 || t < 1) {
      this.globalTokens = g;
      this.tokens[i] = t;
      return false;
    }
    this.globalTokens = g - 1;
    this.tokens[i] = t - 1;
    return true;
  }
}
