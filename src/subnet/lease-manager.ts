// The own lease: acquire (flannel v0.18+ order), renew before expiry, notice loss and re-acquire.
// See docs/flannel-compat.md, "Leases and the registry" and "Where we deliberately differ". Deliberate fixes
// over flannel: a lost create race is retried (flannel on etcd v3 exits), a reservation (key without TTL)
// stays a reservation (flannel #1329), a lost lease is re-acquired instead of shutting the daemon down,
// and the previous subnet is refused when any lease overlaps it (flannel only checks for an identical
// subnet).

import { formatCidr, maskOf } from '../routing-table/ipv4.js';
import type { Clock, Logger, TimerHandle } from './clock.js';
import { silentLogger, systemClock } from './clock.js';
import type { Ipv4Net, NetworkConfig } from './config.js';
import { subnetFitsConfig } from './config.js';
import type { KeyValue, KvStore, ListedKey, Watch, WatchEvent } from './kv.js';
import type { BackendLeaseAttrs, LeaseAttrs } from './lease.js';
import {
  DEFAULT_ETCD_PREFIX,
  formatLeaseAttrs,
  formatSubnetKey,
  parseLeaseAttrs,
  parseSubnetKey,
  subnetsPrefix,
} from './lease.js';
import { FlannelTsError } from '../errors.js';

/** flannel's subnetTTL. */
export const LEASE_TTL_SECONDS = 24 * 60 * 60;
/** flannel's raceRetries. */
export const RACE_RETRIES = 10;
/** Candidates collected before the random pick. */
export const MAX_CANDIDATES = 100;
export const DEFAULT_RENEW_MARGIN_MINUTES = 60;
const RETRY_AFTER_FAILURE_MS = 60_000;

export interface Lease {
  /** The full registry key, e.g. /coreos.com/network/subnets/10.244.7.0-24. */
  readonly key: string;
  readonly subnet: Ipv4Net;
  readonly publicIp: number;
  /** When the key expires (ms since the epoch); null for a reservation, which is never renewed. */
  readonly expiresAt: number | null;
}

export interface LeaseManagerOptions {
  readonly store: KvStore;
  /** Registry prefix, default /coreos.com/network. */
  readonly prefix?: string;
  readonly config: NetworkConfig;
  /** Our PublicIP (uint32). */
  readonly publicIp: number;
  /** The backend's BackendType/BackendData, written into the lease beside PublicIP (default: none, as udp). */
  readonly backendAttrs?: BackendLeaseAttrs;
  /** FLANNEL_SUBNET from the previous run's subnet file, host bits cleared. */
  readonly previousSubnet?: Ipv4Net | null;
  /** `--subnet-lease-renew-margin`, minutes, 1..1439, default 60. */
  readonly renewMarginMinutes?: number;
  readonly clock?: Clock;
  /** Uniform in [0, 1); default Math.random. */
  readonly random?: () => number;
  readonly logger?: Logger;
}

export interface LeaseMonitorHandlers {
  /**
   * The lease was lost (deleted, expired, or taken over by another PublicIP) and a new one acquired.
   * The subnet may differ from the previous one: the caller reconfigures flannel0 and the routes.
   */
  onReacquired?(lease: Lease, previous: Lease): void;
  /** A renewal, check or re-acquisition failed; it is retried after one minute. */
  onError?(err: Error): void;
}

/** flannel's wording for a full network. */
export class OutOfSubnetsError extends FlannelTsError {
  override name = 'OutOfSubnetsError';
  override readonly code = 'FLANNEL_TS_ERR_OUT_OF_SUBNETS';
  constructor() {
    super('out of subnets');
  }
}

/** Another host won the race for every subnet tried, RACE_RETRIES times in a row. */
export class LeaseRaceError extends FlannelTsError {
  override name = 'LeaseRaceError';
  override readonly code = 'FLANNEL_TS_ERR_LEASE_RACE_LOST';
}

interface ListedLease {
  readonly kv: ListedKey;
  readonly subnet: Ipv4Net;
  readonly ipv6: string | null;
  /** null when the value is unreadable: the subnet is still taken. */
  readonly attrs: LeaseAttrs | null;
}

export function validateRenewMargin(minutes: number): void {
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1439) {
    throw new RangeError(
      `invalid subnet-lease-renew-margin ${String(minutes)}: must be an integer number of minutes in 1..1439`,
    );
  }
}

export function subnetsOverlap(a: Ipv4Net, b: Ipv4Net): boolean {
  const mask = maskOf(Math.min(a.prefixLen, b.prefixLen));
  return (a.prefix & mask) >>> 0 === (b.prefix & mask) >>> 0;
}

export class LeaseManager {
  private readonly store: KvStore;
  private readonly prefix: string;
  private readonly config: NetworkConfig;
  private readonly publicIp: number;
  /** The lease value this host writes (PublicIP and the backend's attributes). */
  private value: string;
  private previousSubnet: Ipv4Net | null;
  private readonly renewMarginMs: number;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly log: Logger;

  private current: Lease | null = null;
  /** Store revision seen when the current lease was obtained or last checked: watch from here + 1. */
  private knownRevision = 0;
  private handlers: LeaseMonitorHandlers | null = null;
  private timer: TimerHandle | null = null;
  private ownWatch: Watch | null = null;
  private busy = false;
  /**
   * Something about our key happened while a task ran (a watch event, a compaction that closed the
   * own-key watch): re-check the key when the task ends, rather than lose it until the next renewal.
   */
  private recheckPending = false;
  private stopped = true;

  constructor(options: LeaseManagerOptions) {
    const margin = options.renewMarginMinutes ?? DEFAULT_RENEW_MARGIN_MINUTES;
    validateRenewMargin(margin);
    this.store = options.store;
    this.prefix = options.prefix ?? DEFAULT_ETCD_PREFIX;
    this.config = options.config;
    this.publicIp = options.publicIp >>> 0;
    this.value = formatLeaseAttrs(this.publicIp, options.backendAttrs);
    this.previousSubnet = options.previousSubnet ?? null;
    this.renewMarginMs = margin * 60_000;
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.log = options.logger ?? silentLogger;
  }

  /** The lease held now, or null before acquire(). */
  get lease(): Lease | null {
    return this.current;
  }

  /**
   * Acquires a lease: retries a lost create race up to 10 times; other failures (store errors,
   * "out of subnets") are thrown to the caller, which decides whether to retry.
   */
  async acquire(): Promise<Lease> {
    for (let attempt = 0; attempt < RACE_RETRIES; attempt++) {
      const lease = await this.tryAcquire();
      if (lease !== null) {
        this.current = lease;
        this.previousSubnet = lease.subnet;
        return lease;
      }
      this.log.info('lost the race for a subnet to another host; trying again');
    }
    throw new LeaseRaceError(
      `Max retries reached trying to acquire a subnet (lost the create race ${RACE_RETRIES} times)`,
    );
  }

  /**
   * Keeps the acquired lease: renews it `renewMargin` before expiry (a failed renewal is retried after
   * one minute), watches its key, and re-acquires when it is lost. Reservations are never renewed.
   */
  start(handlers: LeaseMonitorHandlers = {}): void {
    if (this.current === null) throw new Error('LeaseManager.start() before acquire()');
    this.handlers = handlers;
    this.stopped = false;
    this.arm();
  }

  /** Stops renewing and watching. The lease stays in the store (a restart reuses it), as in flannel. */
  stop(): void {
    this.stopped = true;
    this.disarm();
  }

  // --- acquisition ---------------------------------------------------------------------------

  /**
   * The attributes of the lease already held in the registry for our PublicIP, if any: what this
   * host wrote before a restart (vxlan takes its VtepMAC back from it). Read before acquire().
   */
  async findOwnLeaseAttrs(): Promise<LeaseAttrs | null> {
    const listing = await this.store.list(subnetsPrefix(this.prefix), { expiries: false });
    const mine = this.parseListing(listing.kvs).find((l) => l.attrs?.publicIp === this.publicIp);
    return mine?.attrs ?? null;
  }

  /** Sets the backend's attributes written from now on (call before acquire()). */
  setBackendAttrs(attrs: BackendLeaseAttrs): void {
    this.value = formatLeaseAttrs(this.publicIp, attrs);
  }

  /** One pass of flannel's tryAcquireLease; null means "lost the create race". */
  private async tryAcquire(): Promise<Lease | null> {
    // Other hosts' expiries do not matter here (only which subnets are taken): with etcd, looking
    // them up would cost one request per lease. Only our own key's is read, below.
    const listing = await this.store.list(subnetsPrefix(this.prefix), { expiries: false });
    this.knownRevision = listing.revision;
    let leases = this.parseListing(listing.kvs);

    const mine = leases.find((l) => l.attrs !== null && l.attrs.publicIp === this.publicIp);
    if (mine !== undefined) {
      if (subnetFitsConfig(this.config, mine.subnet) && mine.ipv6 === null) {
        // A key gone since the listing is simply written again, as a lease.
        const reservation = (await this.store.get(mine.kv.key))?.expiresAt === null;
        const what = reservation ? 'reservation' : 'lease';
        this.log.info(
          `Found ${what} (${formatCidr(mine.subnet.prefix, mine.subnet.prefixLen)}) for current IP, reusing`,
        );
        const ttl = reservation ? 0 : LEASE_TTL_SECONDS;
        await this.store.put(mine.kv.key, this.value, ttl);
        return this.makeLease(mine.kv.key, mine.subnet, ttl);
      }
      this.log.info(
        `Found lease (${formatCidr(mine.subnet.prefix, mine.subnet.prefixLen)}) for current IP ` +
          'but not compatible with current config, deleting',
      );
      await this.store.delete(mine.kv.key);
      leases = leases.filter((l) => l !== mine);
    }

    let chosen: Ipv4Net | null = null;
    const prev = this.previousSubnet;
    if (prev !== null) {
      const taken = leases.some((l) => subnetsOverlap(l.subnet, prev));
      if (!taken) {
        if (subnetFitsConfig(this.config, prev)) {
          this.log.info(`Found previously leased subnet (${formatCidr(prev.prefix, prev.prefixLen)}), reusing`);
          chosen = prev;
        } else {
          this.log.warn(
            `Found previously leased subnet (${formatCidr(prev.prefix, prev.prefixLen)}) ` +
              'that is not compatible with the network config, ignoring',
          );
        }
      }
    }
    if (chosen === null) chosen = this.allocate(leases);

    const key = subnetsPrefix(this.prefix) + formatSubnetKey(chosen);
    const created = await this.store.createIfAbsent(key, this.value, LEASE_TTL_SECONDS);
    if (!created) return null;
    this.log.info(`Allocated lease (${formatCidr(chosen.prefix, chosen.prefixLen)}) to current node`);
    return this.makeLease(key, chosen, LEASE_TTL_SECONDS);
  }

  /** Random pick among the first 100 subnets in [SubnetMin, SubnetMax] that overlap no lease. */
  private allocate(leases: readonly ListedLease[]): Ipv4Net {
    const { subnetMin, subnetMax, subnetLen } = this.config;
    const step = 2 ** (32 - subnetLen);
    const candidates: number[] = [];
    for (let ip = subnetMin; ip <= subnetMax && candidates.length < MAX_CANDIDATES; ip += step) {
      const sn = { prefix: ip, prefixLen: subnetLen };
      if (!leases.some((l) => subnetsOverlap(l.subnet, sn))) candidates.push(ip);
    }
    if (candidates.length === 0) throw new OutOfSubnetsError();
    const i = Math.min(candidates.length - 1, Math.floor(this.random() * candidates.length));
    return { prefix: candidates[i]!, prefixLen: subnetLen };
  }

  private parseListing(kvs: readonly ListedKey[]): ListedLease[] {
    const out: ListedLease[] = [];
    const base = subnetsPrefix(this.prefix);
    for (const kv of kvs) {
      const parsed = parseSubnetKey(kv.key.slice(base.length));
      if (parsed === null) {
        this.log.warn(`Ignoring bad subnet node ${kv.key}`);
        continue;
      }
      let attrs: LeaseAttrs | null = null;
      try {
        attrs = parseLeaseAttrs(kv.value);
      } catch (err) {
        this.log.warn(`unreadable lease ${kv.key} (its subnet counts as taken): ${(err as Error).message}`);
      }
      out.push({ kv, subnet: parsed.subnet, ipv6: parsed.ipv6, attrs });
    }
    return out;
  }

  private makeLease(key: string, subnet: Ipv4Net, ttlSeconds: number): Lease {
    const expiresAt = ttlSeconds > 0 ? this.clock.now() + ttlSeconds * 1000 : null;
    return { key, subnet, publicIp: this.publicIp, expiresAt };
  }

  // --- monitoring ----------------------------------------------------------------------------

  private arm(): void {
    const lease = this.current!;
    this.scheduleRenewal(lease.expiresAt === null ? null : lease.expiresAt - this.renewMarginMs - this.clock.now());
    this.ownWatch = this.store.watchPrefix(lease.key, this.knownRevision + 1, {
      onEvents: (events) => this.onOwnKeyEvents(lease.key, events),
      onCompacted: () => {
        this.ownWatch?.close();
        this.ownWatch = null;
        void this.runExclusive(() => this.recheck());
      },
      onError: (err) => this.log.warn(`watch of own lease ${lease.key}: ${err.message}`),
    });
  }

  private disarm(): void {
    if (this.timer !== null) this.clock.clearTimer(this.timer);
    this.timer = null;
    this.ownWatch?.close();
    this.ownWatch = null;
  }

  /** null: no renewal (a reservation). */
  private scheduleRenewal(delayMs: number | null): void {
    if (this.timer !== null) this.clock.clearTimer(this.timer);
    this.timer = null;
    if (delayMs === null || this.stopped) return;
    const delay = Math.max(0, delayMs);
    this.log.info(`Waiting for ${Math.round(delay / 1000)}s to renew lease`);
    this.timer = this.clock.setTimer(() => {
      this.timer = null;
      void this.runExclusive(() => this.renew());
    }, delay);
  }

  private onOwnKeyEvents(key: string, events: readonly WatchEvent[]): void {
    if (this.stopped) return;
    if (this.busy) {
      this.recheckPending = true;
      return;
    }
    // Only the last event for our key matters.
    let last: WatchEvent | null = null;
    for (const e of events) if ((e.type === 'put' ? e.kv.key : e.key) === key) last = e;
    if (last === null) return;
    if (last.type === 'delete') {
      this.log.warn(`lease ${key} was deleted or expired; acquiring a new one`);
      void this.runExclusive(() => this.reacquire());
      return;
    }
    if (!this.isOurs(last.kv)) {
      this.log.warn(`lease ${key} now belongs to another PublicIP; acquiring a new one`);
      void this.runExclusive(() => this.reacquire());
      return;
    }
    // Someone (we, or an operator) rewrote the key: follow its expiration, as flannel does.
    this.current = { ...this.current!, expiresAt: last.kv.expiresAt };
    const exp = last.kv.expiresAt;
    this.scheduleRenewal(exp === null ? null : exp - this.renewMarginMs - this.clock.now());
  }

  private isOurs(kv: KeyValue): boolean {
    try {
      return parseLeaseAttrs(kv.value).publicIp === this.publicIp;
    } catch {
      return false;
    }
  }

  /**
   * Serialises renewals, re-checks and re-acquisitions. A task asked for while another runs is
   * not dropped: it becomes a re-check of our key once the running task ends.
   */
  private async runExclusive(task: () => Promise<void>): Promise<void> {
    if (this.stopped) return;
    if (this.busy) {
      this.recheckPending = true;
      return;
    }
    this.busy = true;
    try {
      await task();
    } finally {
      this.busy = false;
    }
    if (this.recheckPending && !this.stopped && this.current !== null) {
      this.recheckPending = false;
      await this.runExclusive(() => this.recheck());
    }
  }

  /**
   * Renewal: re-put with a fresh 24 h TTL, unless the key is gone or another host's (re-acquire),
   * or has become a reservation (keep it, stop renewing). The check and the put are two requests:
   * flannel does not check at all and simply overwrites.
   */
  private async renew(): Promise<void> {
    const lease = this.current!;
    try {
      const kv = await this.store.get(lease.key);
      if (this.stopped) return;
      if (kv === null || !this.isOurs(kv)) {
        this.log.warn(`lease ${lease.key} was lost before renewal; acquiring a new one`);
        await this.reacquire();
        return;
      }
      if (kv.expiresAt === null) {
        this.log.info(`lease ${lease.key} is a reservation; not renewing it`);
        this.current = { ...lease, expiresAt: null };
        return;
      }
      await this.store.put(lease.key, this.value, LEASE_TTL_SECONDS);
      if (this.stopped) return;
      this.current = { ...lease, expiresAt: this.clock.now() + LEASE_TTL_SECONDS * 1000 };
      this.log.info(`Lease renewed, new expiration: ${new Date(this.current.expiresAt!).toISOString()}`);
      this.scheduleRenewal(this.current.expiresAt! - this.renewMarginMs - this.clock.now());
    } catch (err) {
      this.failed(`Error renewing lease (trying again in 1 min): ${(err as Error).message}`, err, () => this.renew());
    }
  }

  /** After a compacted own-key watch: look at the key again and watch anew. */
  private async recheck(): Promise<void> {
    const lease = this.current!;
    try {
      const listing = await this.store.list(lease.key);
      if (this.stopped) return;
      this.knownRevision = listing.revision;
      const kv = listing.kvs.find((k) => k.key === lease.key) ?? null;
      if (kv === null || !this.isOurs(kv)) {
        await this.reacquire();
        return;
      }
      this.current = { ...lease, expiresAt: kv.expiresAt };
      this.disarm();
      this.arm();
    } catch (err) {
      this.failed(`checking own lease (trying again in 1 min): ${(err as Error).message}`, err, () => this.recheck());
    }
  }

  private async reacquire(): Promise<void> {
    const previous = this.current!;
    this.disarm();
    try {
      const lease = await this.acquire();
      if (this.stopped) return;
      this.log.info(`re-acquired lease ${formatCidr(lease.subnet.prefix, lease.subnet.prefixLen)}`);
      this.arm();
      this.handlers?.onReacquired?.(lease, previous);
    } catch (err) {
      this.failed(`re-acquiring a lease (trying again in 1 min): ${(err as Error).message}`, err, () =>
        this.reacquire(),
      );
    }
  }

  private failed(message: string, err: unknown, retry: () => Promise<void>): void {
    this.log.error(message);
    this.handlers?.onError?.(err instanceof Error ? err : new Error(String(err)));
    if (this.stopped) return;
    if (this.timer !== null) this.clock.clearTimer(this.timer);
    this.timer = this.clock.setTimer(() => {
      this.timer = null;
      void this.runExclusive(retry);
    }, RETRY_AFTER_FAILURE_MS);
  }
}
