// Peer leases -> routes. Lists `<prefix>/subnets/`, watches from the listing's revision + 1, and after
// every change hands the datapath a complete, fresh route list. See docs/flannel-compat.md, "Routes from
// leases", "Leases and the registry" and "Where we deliberately differ".
//
// Like flannel's udp backend: every lease is routed to its PublicIP whatever its BackendType, and the
// own subnet is skipped. Deliberately better than flannel:
// - a bad key or value is logged and ignored; it never wipes the other routes;
// - the initial listing (and a re-listing after compaction) is retried with backoff, 100 ms doubling
//   to 5 s, instead of giving up;
// - after a re-listing the full route list is recomputed, so a PublicIP that changed during the gap
//   is picked up;
// - while the store is unreachable the last routes stay;
// - after a registry reset (KvStore.onReset: etcd wiped...), the peers' routes are held for
//   RESET_HOLD_MS while they re-create their leases, instead of all vanishing with the old
//   registry; a held route goes as soon as a new lease overlaps it, and all go when the time is up;
// - a lease that fails the checks of lease-validation.ts (outside the network, overlapping ours or
//   another lease, a PublicIP that is not unicast or is ours) is logged, counted and not routed.

import type { Route } from '../routing-table/snapshot.js';
import { formatCidr, maskOf } from '../routing-table/ipv4.js';
import type { Clock, Logger, TimerHandle } from './clock.js';
import { silentLogger, systemClock } from './clock.js';
import type { Ipv4Net } from './config.js';
import type { KvStore, ListedKey, Watch, WatchEvent } from './kv.js';
import { DEFAULT_ETCD_PREFIX, parseLeaseAttrs, parseSubnetKey, subnetsPrefix } from './lease.js';
import { LeaseGate } from './lease-validation.js';
import type { RefusalCounters } from './refusals.js';
import { overlaps } from './address-checks.js';

export type { Route };

export const LIST_BACKOFF_INITIAL_MS = 100;
export const LIST_BACKOFF_MAX_MS = 5_000;
/** How long the routes of before a registry reset are kept for peers that have not re-created their lease. */
export const RESET_HOLD_MS = 30_000;

export interface RouteWatcherOptions {
  readonly store: KvStore;
  readonly prefix?: string;
  /** The own lease's subnet: never routed. Change it with setOwnSubnet after a re-acquisition. */
  readonly ownSubnet: Ipv4Net;
  /** Called with the complete route list whenever it changes (sorted by prefix, then length). */
  readonly onRoutes?: (routes: Route[]) => void;
  /**
   * Called with the complete list of peer leases (own subnet excluded, sorted as the routes)
   * whenever any of them changes, BackendType and BackendData included: what a backend needs.
   */
  readonly onPeers?: (peers: PeerLease[]) => void;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** The network every peer lease must lie in (unset: not checked). */
  readonly network?: Ipv4Net;
  /** Our PublicIP: a peer lease with it is refused (unset: not checked). */
  readonly ownPublicIp?: number;
  /** Where refused leases are counted. */
  readonly refusals?: RefusalCounters;
}

/** A peer's lease as a backend sees it. */
export interface PeerLease {
  /** The registry key. */
  readonly key: string;
  readonly subnet: Ipv4Net;
  readonly publicIp: number;
  readonly backendType: string | null;
  /** BackendData as parsed JSON (null when absent). */
  readonly backendData: unknown;
  readonly modRevision: number;
}

export class RouteWatcher {
  private readonly store: KvStore;
  private readonly base: string;
  private ownSubnet: Ipv4Net;
  private readonly onRoutes: ((routes: Route[]) => void) | undefined;
  private readonly onPeers: ((peers: PeerLease[]) => void) | undefined;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly gate: LeaseGate;

  /** Every readable lease under the prefix, by key (the own one too; it is filtered when routing). */
  private leases = new Map<string, PeerLease>();
  private watch: Watch | null = null;
  private retryTimer: TimerHandle | null = null;
  private backoffMs = LIST_BACKOFF_INITIAL_MS;
  /** The route list last handed to onRoutes (null before the first). */
  private lastEmitted: readonly Route[] | null = null;
  /** The peer list last handed to onPeers (null before the first). */
  private lastPeers: readonly PeerLease[] | null = null;
  private running = false;
  /** Bumped on every (re)start of listing, so stale async results are dropped. */
  private generation = 0;
  /** Leases from before a registry reset, kept until re-created, overlapped, or RESET_HOLD_MS is up. */
  private readonly held = new Set<PeerLease>();
  private holdTimer: TimerHandle | null = null;
  private unsubscribeReset: (() => void) | null = null;

  constructor(options: RouteWatcherOptions) {
    this.store = options.store;
    this.base = subnetsPrefix(options.prefix ?? DEFAULT_ETCD_PREFIX);
    this.ownSubnet = options.ownSubnet;
    this.onRoutes = options.onRoutes;
    this.onPeers = options.onPeers;
    this.clock = options.clock ?? systemClock;
    this.log = options.logger ?? silentLogger;
    this.gate = new LeaseGate({
      network: options.network ?? null,
      ownPublicIp: options.ownPublicIp ?? null,
      logger: this.log,
      ...(options.refusals !== undefined ? { counters: options.refusals } : {}),
    });
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.backoffMs = LIST_BACKOFF_INITIAL_MS;
    this.unsubscribeReset = this.store.onReset?.(() => this.holdForReset()) ?? null;
    void this.listAndWatch(++this.generation);
  }

  stop(): void {
    this.running = false;
    this.generation++;
    this.watch?.close();
    this.watch = null;
    if (this.retryTimer !== null) this.clock.clearTimer(this.retryTimer);
    this.retryTimer = null;
    this.unsubscribeReset?.();
    this.unsubscribeReset = null;
    if (this.holdTimer !== null) this.clock.clearTimer(this.holdTimer);
    this.holdTimer = null;
    this.held.clear();
  }

  /** The registry was reset: keep what we route now until the peers have re-created their leases. */
  private holdForReset(): void {
    const own = this.ownSubnet;
    for (const lease of this.leases.values()) {
      if (lease.subnet.prefix !== own.prefix || lease.subnet.prefixLen !== own.prefixLen) this.held.add(lease);
    }
    if (this.holdTimer !== null) this.clock.clearTimer(this.holdTimer);
    this.holdTimer = this.clock.setTimer(() => {
      this.holdTimer = null;
      for (const [key, lease] of this.leases) if (this.held.has(lease)) this.leases.delete(key);
      this.held.clear();
      this.emitIfChanged();
    }, RESET_HOLD_MS);
  }

  /** Drops the held leases that a lease of the new registry overlaps (or that left the hold). */
  private dropOverlappedHeld(): void {
    if (this.held.size === 0) return;
    for (const [key, lease] of this.leases) {
      if (!this.held.has(lease)) continue;
      for (const other of this.leases.values()) {
        if (!this.held.has(other) && overlaps(other.subnet, lease.subnet)) {
          this.leases.delete(key);
          this.held.delete(lease);
          break;
        }
      }
    }
  }

  /** After the own lease changed subnet: the old own subnet becomes routable, the new one not. */
  setOwnSubnet(subnet: Ipv4Net): void {
    this.ownSubnet = subnet;
    this.emitIfChanged();
  }

  /** The routes as last computed. */
  currentRoutes(): Route[] {
    return this.computeRoutes();
  }

  private async listAndWatch(gen: number): Promise<void> {
    let listing;
    try {
      // Routes need no expiries; with etcd, looking them up would cost one request per lease.
      listing = await this.store.list(this.base, { expiries: false });
    } catch (err) {
      if (gen !== this.generation || !this.running) return;
      this.log.warn(`listing subnet leases failed (retrying in ${this.backoffMs} ms): ${(err as Error).message}`);
      const delay = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, LIST_BACKOFF_MAX_MS);
      this.retryTimer = this.clock.setTimer(() => {
        this.retryTimer = null;
        if (gen === this.generation && this.running) void this.listAndWatch(gen);
      }, delay);
      return;
    }
    if (gen !== this.generation || !this.running) return;
    this.backoffMs = LIST_BACKOFF_INITIAL_MS;

    // A fresh snapshot replaces what we knew; keys with unreadable values keep their last good state.
    const next = new Map<string, PeerLease>();
    for (const kv of listing.kvs) {
      const lease = this.parse(kv);
      if (lease !== null) next.set(kv.key, lease);
      else {
        const old = this.leases.get(kv.key);
        if (old !== undefined) next.set(kv.key, old);
      }
    }
    for (const [key, lease] of this.leases) if (this.held.has(lease) && !next.has(key)) next.set(key, lease);
    this.leases = next;
    this.dropOverlappedHeld();
    this.emitIfChanged();

    this.watch = this.store.watchPrefix(this.base, listing.revision + 1, {
      onEvents: (events) => {
        if (gen === this.generation && this.running) this.apply(events);
      },
      onCompacted: () => {
        if (gen !== this.generation || !this.running) return;
        this.log.warn('watch of subnet leases was compacted; listing again');
        this.watch?.close();
        this.watch = null;
        void this.listAndWatch(++this.generation);
      },
      onError: (err) => this.log.warn(`watch of subnet leases: ${err.message} (keeping the current routes)`),
    });
  }

  private apply(events: readonly WatchEvent[]): void {
    for (const e of events) {
      if (e.type === 'delete') {
        this.leases.delete(e.key);
        continue;
      }
      const lease = this.parse(e.kv);
      // An unreadable value leaves what we knew of that key untouched.
      if (lease !== null) this.leases.set(e.kv.key, lease);
    }
    this.dropOverlappedHeld();
    this.emitIfChanged();
  }

  /** null (and a log line) for a key or value flannel could not read. */
  private parse(kv: ListedKey): PeerLease | null {
    const parsed = parseSubnetKey(kv.key.slice(this.base.length));
    if (parsed === null) {
      this.log.warn(`Ignoring bad subnet node ${kv.key}`);
      return null;
    }
    try {
      const attrs = parseLeaseAttrs(kv.value);
      return {
        key: kv.key,
        subnet: parsed.subnet,
        publicIp: attrs.publicIp,
        backendType: attrs.backendType,
        backendData: attrs.backendData,
        modRevision: kv.modRevision,
      };
    } catch (err) {
      this.log.warn(`Ignoring lease ${kv.key} with a bad value: ${(err as Error).message}`);
      return null;
    }
  }

  private computeRoutes(): Route[] {
    return this.computePeers().map((l) => ({
      prefix: l.subnet.prefix,
      prefixLen: l.subnet.prefixLen,
      publicIp: l.publicIp,
    }));
  }

  private computePeers(): PeerLease[] {
    // One lease per subnet; if two keys name the same subnet (e.g. with and without an IPv6 part),
    // the most recently written wins. Then the gate drops what must not be routed.
    const bySubnet = new Map<string, PeerLease>();
    for (const l of this.leases.values()) {
      const prefix = (l.subnet.prefix & maskOf(l.subnet.prefixLen)) >>> 0;
      if (prefix === this.ownSubnet.prefix && l.subnet.prefixLen === this.ownSubnet.prefixLen) continue;
      const id = formatCidr(prefix, l.subnet.prefixLen);
      const seen = bySubnet.get(id);
      if (seen === undefined || seen.modRevision < l.modRevision) {
        bySubnet.set(id, { ...l, subnet: { prefix, prefixLen: l.subnet.prefixLen } });
      }
    }
    const peers = this.gate.admit([...bySubnet.values()], this.ownSubnet);
    peers.sort((a, b) => a.subnet.prefix - b.subnet.prefix || a.subnet.prefixLen - b.subnet.prefixLen);
    return peers;
  }

  private emitIfChanged(): void {
    const peers = this.computePeers();
    if (this.onPeers !== undefined) {
      if (this.lastPeers === null || !samePeers(peers, this.lastPeers)) {
        this.lastPeers = peers;
        this.onPeers(peers.slice());
      }
    }
    if (this.onRoutes === undefined) return;
    const routes = peers.map((l) => ({ prefix: l.subnet.prefix, prefixLen: l.subnet.prefixLen, publicIp: l.publicIp }));
    if (this.lastEmitted !== null && sameRoutes(routes, this.lastEmitted)) return;
    // A copy: the consumer owns the array it is handed.
    this.lastEmitted = routes.slice();
    this.onRoutes(routes);
  }
}

/** Both sorted the same way (computeRoutes): element-wise equality, no per-change fingerprint string. */
function sameRoutes(a: readonly Route[], b: readonly Route[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!,
      y = b[i]!;
    if (x.prefix !== y.prefix || x.prefixLen !== y.prefixLen || x.publicIp !== y.publicIp) return false;
  }
  return true;
}

/**
 * Same keys, PublicIPs and BackendTypes, and the same BackendData objects: a value parsed again
 * (a rewrite, a re-listing) counts as a change, which the backends absorb (they diff what they
 * programmed), so no deep comparison is needed here.
 */
function samePeers(a: readonly PeerLease[], b: readonly PeerLease[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!,
      y = b[i]!;
    if (x.key !== y.key || x.publicIp !== y.publicIp || x.backendType !== y.backendType) return false;
    if (x.backendData !== y.backendData) return false;
  }
  return true;
}
