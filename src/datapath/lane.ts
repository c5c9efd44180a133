// One forwarding lane: a slab, its native ring and a Forwarder over flannel0 and the UDP socket,
// driven by a DatapathEngine on the calling thread. The agent runs one lane for both directions
// on its main thread (--workers 1), or one lane per direction, each in its own worker thread
// (--workers 2, worker-lanes.ts). A lane owns its slab, ring (and the ring's io_uring) and
// counters array; lanes share only the two fds and routing snapshots built from the same routes.
import { shim, type RingHandle } from '../native/shim.js';
import type { RoutingSnapshot } from '../routing-table/snapshot.js';
import { DatapathEngine, type Directions } from './engine.js';
import { Forwarder, type ForwarderConfig } from './forwarder.js';
import { newLatency } from './latency.js';
import { NativeTun, NativeUdp, createRing } from './native-io.js';
import { PacketSlab, type SlabLayout } from './slab.js';

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
}

/**
 * Forwarding in force, however many threads it runs on: a Lane on this thread, or WorkerLanes.
 * Every call has taken effect when it returns.
 */
export interface Lanes {
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
  private closed = false;

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
    this.tun = new NativeTun(this.ring, tunFd);
    this.udp = new NativeUdp(this.ring, udpFd);
    this.forwarder = new Forwarder(this.slab, this.tun, this.udp, config, counterArray, latencyArray);
  }

  /** Takes effect at the next batch. */
  setRoutes(routes: RoutingSnapshot): void {
    this.forwarder.setRoutes(routes);
  }

  /** A new subnet (the lease moved): a new Forwarder with the same routes and GRO state. */
  setConfig(config: ForwarderConfig): void {
    const running = this.engine !== null;
    this.stopPolling();
    const routes = this.forwarder.currentRoutes;
    this.forwarder = new Forwarder(
      this.slab,
      this.tun,
      this.udp,
      { ...config, tunGro: this.forwarder.tunGroInForce },
      this.counterArray,
      this.latencyArray,
    );
    this.forwarder.setRoutes(routes);
    if (running) this.start();
  }

  start(): void {
    if (this.engine !== null || this.closed) return;
    this.engine = new DatapathEngine(this.forwarder, this.tunFd, this.udpFd, this.slab.batch, this.directions);
    try {
      this.engine.start();
    } catch (err) {
      this.stopPolling(); // the first watcher may have started: none may outlive a failed start
      throw err;
    }
  }

  /**
   * Stops polling and drains what the last wake-up left, so the counters are final. Bounded:
   * a peer (or a stranger) that keeps sending must not keep the agent from stopping.
   */
  stop(drainBatches: number): void {
    this.stopPolling();
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
      shim.ringDisableUring(this.ring);
    }
    return true;
  }

  counters(): Float64Array {
    return this.counterArray;
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
    };
  }

  private stopPolling(): void {
    this.engine?.stop();
    this.engine = null;
  }
}
