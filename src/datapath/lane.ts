// One forwarding lane: a slab, its native ring and a Forwarder over flannel0 and the UDP socket,
// on the calling thread. Two ways to drive it:
//  - event loop: a DatapathEngine (libuv readiness callbacks) on the main thread, beside the
//    control plane, or in a worker thread per direction (--workers 2);
//  - waiting in io_uring (startWaiting + waitOnce): a thread of its own (lane-worker.ts) blocks in
//    one io_uring_enter on polls kept armed on flannel0 and the socket, and the shim reads what
//    they find before returning, never going through an event loop (--datapath-wait=io-uring).
// A lane owns its slab, ring (and the ring's io_urings), counters and latency arrays; lanes share
// only the two fds and routing snapshots built from the same routes.
import { describeErrno, shim, WAIT, type RingHandle } from '../native/shim.js';
import type { RoutingSnapshot } from '../routing-table/snapshot.js';
import { DatapathEngine, type Directions } from './engine.js';
import { Forwarder, type ForwarderConfig } from './forwarder.js';
import { C, SPIN_COUNTERS } from './counters.js';
import { newLatency } from './latency.js';
import { NativeTun, NativeUdp, createRing } from './native-io.js';
import { PacketSlab, type SlabLayout } from './slab.js';
import { carryPeerCounters, newPeerCounters } from './peer-counters.js';

/** What negotiation at start-up settled; every lane sets up its own ring the same way. */
export interface LaneSetup {
  readonly slab: SlabLayout;
  /** flannel0 was opened with IFF_VNET_HDR: every read and write carries a virtio-net header. */
  readonly tunVnet: boolean;
  /** Datagrams per UDP GSO message at most (the socket took UDP_SEGMENT); 0 = off. */
  readonly gsoSegments: number;
  /** Ask the socket for UDP GRO (each lane that receives turns it on for its ring). */
  readonly udpGro: boolean;
  /** io_uring submission queue size for flannel0's reads and writes; 0 = syscalls. */
  readonly uringEntries: number;
}

/** How the forwarding thread waits for packets (--datapath-wait). */
export type DatapathWait = 'io-uring' | 'event-loop';

/** Batches per wake-up when waiting in io_uring (as the engine's BATCHES_PER_WAKE). */
const BATCHES_PER_WAIT = 8;

/** What a lane has in force (offloads may be refused at set-up or turned off later). */
export interface LaneStatus {
  /** Datagrams per UDP GSO message at most; 0 = off (or this lane does not send). */
  readonly udpGso: number;
  readonly udpGro: boolean;
  /** Coalesced super-packets are written to flannel0 (until flannel0 refused one). */
  readonly tunGro: boolean;
  /** This lane's io_uring submission queue size; 0 = syscalls. */
  readonly tunIoUring: number;
  /** The last send/write errno on this lane's ring (0: none). */
  readonly lastErrno: number;
  /** The lane waits in io_uring (startWaiting) rather than in an event loop. */
  readonly waiting?: boolean;
}

/**
 * Forwarding in force, however many threads it runs on: a Lane on this thread, or WorkerLanes.
 * Every call has taken effect when it returns.
 */
export interface Lanes {
  /** New routes; the per-peer counts of routes that stay carry over (peer-counters.ts). */
  setRoutes(routes: RoutingSnapshot): void;
  setConfig(config: ForwarderConfig): void;
  /** Stops forwarding and drains at most drainBatches each way, so the counters are final. */
  stop(drainBatches: number): void;
  /**
   * Releases the lanes' resources but the fds. True when no lane can touch the fds any more, so
   * the caller may close them; false when a lane did not confirm it stopped (then leave the fds
   * open: closing them could let a new fd with the same number be polled or written).
   */
  close(): boolean;
  status(): LaneStatus;
  /** The counters (indexed by C.*), current as of this call; the same array every time. */
  counters(): Float64Array;
  /** Per-peer counts laid out by the routes last set (peer-counters.ts); a new array after each setRoutes. */
  peerCounters(): Float64Array;
  /** The latency histograms (latency.ts), current as of this call; the same array every time. */
  latency(): Float64Array;
}

export class Lane implements Lanes {
  private readonly slab: PacketSlab;
  private readonly ring: RingHandle;
  private readonly tun: NativeTun;
  private readonly udp: NativeUdp;
  private readonly udpGro: boolean;
  private forwarder: Forwarder;
  private engine: DatapathEngine | null = null;
  /** Waiting in io_uring: the fds a wait reads (WAIT.tun | WAIT.udp; 0 = stopped). */
  private waitWant = 0;
  private waitOpen = false;
  private closed = false;
  /** Busy-polling after traffic in the event loop (start's spinUs); 0: off. */
  private spinUs = 0;

  constructor(
    setup: LaneSetup,
    private readonly tunFd: number,
    private readonly udpFd: number,
    config: ForwarderConfig,
    private readonly counterArray: Float64Array,
    private readonly directions: Directions,
    private readonly latencyArray: Float64Array = newLatency(),
  ) {
    this.slab = new PacketSlab(setup.slab);
    this.ring = createRing(this.slab);
    const sends = directions !== 'rx',
      receives = directions !== 'tx';
    if (sends && setup.gsoSegments > 0) shim.ringSetGso(this.ring, setup.gsoSegments);
    this.udpGro = receives && setup.udpGro && shim.udpEnableGro(this.ring, udpFd) === 0;
    if (setup.tunVnet) shim.ringSetTunVnet(this.ring, true);
    // One io_uring_enter per batch instead of one syscall per packet; where the kernel or a
    // seccomp profile refuses io_uring, syscalls stay.
    if (setup.uringEntries > 0) shim.ringEnableUring(this.ring, setup.uringEntries);
    this.tun = new NativeTun(this.ring, tunFd, this.slab.lens);
    this.udp = new NativeUdp(this.ring, udpFd, this.slab.lens);
    this.forwarder = new Forwarder(this.slab, this.tun, this.udp, config, counterArray, latencyArray);
  }

  /**
   * Takes effect at the next batch. peerCounts: the array to count in, laid out by routes (zeroed, or shared with
   * the lane of the other direction); this lane carries its own directions' counts over into it.
   */
  setRoutes(routes: RoutingSnapshot, peerCounts: Float64Array = newPeerCounters(routes.routeCount)): void {
    const fwd = this.forwarder;
    carryPeerCounters(fwd.currentRoutes, fwd.peerCounters, routes, peerCounts, this.directions);
    fwd.setRoutes(routes, peerCounts);
  }

  /** A new subnet (the lease moved): a new Forwarder with the same routes and GRO state. */
  setConfig(config: ForwarderConfig): void {
    // Waiting in io_uring: the polls stay; what the next wait reads goes to the new Forwarder.
    const running = this.engine !== null;
    this.stopPolling();
    const routes = this.forwarder.currentRoutes,
      peerCounts = this.forwarder.peerCounters;
    this.forwarder = new Forwarder(
      this.slab,
      this.tun,
      this.udp,
      { ...config, tunGro: this.forwarder.tunGroInForce },
      this.counterArray,
      this.latencyArray,
    );
    this.forwarder.setRoutes(routes, peerCounts);
    if (running) this.start();
  }

  /**
   * Forwards from the event loop's readiness callbacks. spinUs (0: never): after a wake-up that
   * forwarded, busy-poll up to that long for the answer before returning to the event loop
   * (ringSetSpin); kept for later starts.
   */
  start(spinUs?: number): void {
    if (this.engine !== null || this.closed) return;
    if (spinUs !== undefined && spinUs !== this.spinUs) {
      if (shim.ringSetSpin(this.ring, spinUs) === 0) this.spinUs = spinUs;
    }
    this.engine = new DatapathEngine(this.forwarder, this.tunFd, this.udpFd, this.slab.batch, this.directions);
    try {
      this.engine.start(this.spinUs > 0 ? this.ring : null);
    } catch (err) {
      this.stopPolling(); // the first watcher may have started: none may outlive a failed start
      throw err;
    }
  }

  /**
   * Instead of start(): waits in io_uring, driven by waitOnce on this thread. wakeFd (an
   * eventfd) ends a wait early: the caller's commands. spinUs: how long a wait busy-polls before
   * it sleeps, while traffic is recent (0: never). 0, or -errno when io_uring cannot wait here
   * (then nothing changed: start() still works).
   */
  startWaiting(wakeFd: number, spinUs = 0): number {
    if (this.closed) return -9; // EBADF
    if (!this.waitOpen) {
      const { ring, tunFd, udpFd, slab } = this;
      const rc = shim.waitOpen(ring, tunFd, udpFd, wakeFd, slab.txFirst, slab.rxFirst, slab.batch, spinUs);
      if (rc < 0) return rc;
      this.waitOpen = true;
    }
    this.waitWant = (this.directions !== 'rx' ? WAIT.tun : 0) | (this.directions !== 'tx' ? WAIT.udp : 0);
    return 0;
  }

  /** The lane waits in io_uring (startWaiting succeeded). */
  get waiting(): boolean {
    return this.waitOpen;
  }

  /**
   * One wait (at most timeoutMs) and the batches it brings, flannel0 first. Returns the WAIT bits
   * (WAIT.wake: the doorbell rang). Throws if the io_uring failed.
   */
  waitOnce(timeoutMs: number): number {
    const ev = shim.waitNext(this.ring, timeoutMs, this.waitWant);
    if (ev < 0) throw new Error(`waiting for packets failed: ${describeErrno(ev)}`);
    this.takeWaited(ev);
    const fwd = this.forwarder,
      batch = this.slab.batch;
    if (this.tun.waited.held) for (let k = 0; k < BATCHES_PER_WAIT; k++) if (fwd.tunToUdp() < batch) break;
    if (this.udp.waited.held) for (let k = 0; k < BATCHES_PER_WAIT; k++) if (fwd.udpToTun() < batch) break;
    return ev;
  }

  /** Marks what a wait read into the first slots, for the next read to hand over. */
  private takeWaited(ev: number): void {
    if (ev & WAIT.tun) this.tun.waited.hold(1, (ev & WAIT.tunAtOnce) !== 0);
    if (ev & WAIT.udp) {
      // The wait read up to a batch: only a full one may have left more in the socket.
      const count = ev >>> WAIT.udpCountShift;
      this.udp.waited.hold(count, count >= this.slab.batch);
    }
  }

  /**
   * Stops polling and drains what the last wake-up left, so the counters are final. Bounded:
   * a peer (or a stranger) that keeps sending must not keep the agent from stopping.
   */
  stop(drainBatches: number): void {
    this.stopPolling();
    this.waitWant = 0; // a wait reads nothing more: the drain below reads what is left
    const fwd = this.forwarder,
      tx = this.directions !== 'rx',
      rx = this.directions !== 'tx';
    for (let k = 0; k < drainBatches; k++) {
      if ((rx ? fwd.udpToTun() : 0) + (tx ? fwd.tunToUdp() : 0) === 0) break;
    }
  }

  /** Stops polling and closes the ring's io_uring; the fds are the caller's to close. Idempotent. */
  close(): boolean {
    if (!this.closed) {
      this.closed = true;
      this.stopPolling();
      this.waitWant = 0;
      shim.waitClose(this.ring);
      shim.ringDisableUring(this.ring);
    }
    return true;
  }

  counters(): Float64Array {
    this.syncSpinCounts();
    return this.counterArray;
  }

  /** Copies what the busy-polling did (kept by the shim) into the counters (C.spin*). */
  syncSpinCounts(): void {
    const counts = shim.spinCounts(this.ring);
    if (counts === null) return;
    const c = this.counterArray;
    SPIN_COUNTERS.forEach((name, i) => {
      c[C[name]] = counts[i]!;
    });
  }

  peerCounters(): Float64Array {
    return this.forwarder.peerCounters;
  }

  latency(): Float64Array {
    return this.latencyArray;
  }

  status(): LaneStatus {
    return {
      udpGso: this.directions === 'rx' ? 0 : shim.ringGso(this.ring),
      udpGro: this.udpGro,
      tunGro: this.forwarder.tunGroInForce,
      tunIoUring: shim.ringUring(this.ring),
      lastErrno: shim.lastErrno(this.ring),
      waiting: this.waitOpen,
    };
  }

  private stopPolling(): void {
    this.engine?.stop();
    this.engine = null;
  }
}
