// The udp backend's device set-up, shared by static and flanneld mode: flannel0 and the UDP socket
// set up as flanneld's udp backend does, and the forwarding lanes (one on this thread, or a worker
// per direction).
//
// flannel0 (IFF_TUN|IFF_NO_PI, not persistent) gets the subnet's network address as a /32, MTU =
// the external MTU - 28, and one route for the whole network. The UDP socket binds to the external
// interface's address on the backend port, before flannel0 is created (a bind failure touches
// nothing). Closing flannel0's fd removes the device, its address and route: what the agent made
// goes with it.
import { DatapathClosedError, TunOpenError, UdpBindError } from '../errors.js';
import { C, countersToObject, newCounters } from '../datapath/counters.js';
import { latencyToObject } from '../datapath/latency.js';
import type { ForwarderConfig } from '../datapath/forwarder.js';
import { Lane, type LaneSetup, type Lanes } from '../datapath/lane.js';
import { peerTotals, type PeerTotals } from '../datapath/peer-counters.js';
import { SUPER_SLOT_SIZE, slotSizeFor } from '../datapath/slab.js';
import { WorkerLanes } from '../datapath/worker-lanes.js';
import { warmUp } from '../datapath/warm-up.js';
import type { DatapathWait } from '../datapath/lane.js';
import { ENCAP_OVERHEAD } from '../encap/ipv4.js';
import type { KernelOnlyCounter } from '../fastpath/counters.js';
import { startDatapath, type DatapathChoice, type KernelFastPath } from '../fastpath/fast-path.js';
import { configureTunLink, removeTunAddress, type ExternalInterface } from '../link/ip.js';
import { describeErrno, shim, type Shim } from '../native/shim.js';
import { formatCidr, formatIPv4 } from '../routing-table/ipv4.js';
import { RoutingSnapshot, type Route } from '../routing-table/snapshot.js';

/** Socket buffers sized for bursts of a few thousand full-size packets (kernel default ~200 KiB). */
const SOCKET_BUFFER_BYTES = 4 << 20;

export interface Ipv4Prefix {
  readonly prefix: number;
  readonly prefixLen: number;
}

export interface DatapathOptions {
  readonly ext: ExternalInterface;
  /** The whole flannel network, routed via flannel0. */
  readonly network: Ipv4Prefix;
  /** This host's subnet (the lease). */
  readonly subnet: Ipv4Prefix;
  readonly port: number;
  readonly batch: number;
  /** The offloads to negotiate; each falls back to plain I/O where the kernel refuses it. */
  readonly offloads: Offloads;
  /** Read and write flannel0 through io_uring where the kernel allows it (false: --io-uring=false). */
  readonly tunIoUring: boolean;
  /**
   * Forwarding threads: 1 = both directions on the main thread, beside the control plane;
   * 2 = one worker thread per direction (flannel0 -> UDP, UDP -> flannel0). Default 1.
   */
  readonly workers?: 1 | 2;
  /**
   * --datapath: the kernel fast path in front of the TypeScript datapath (docs/fast-path.md).
   * Default 'userspace'. 'kernel' throws when the fast path cannot load; 'auto' falls back.
   */
  readonly datapath?: DatapathChoice;
  /**
   * With one lane: 'io-uring' = a worker thread of its own that waits in io_uring (reads kept
   * posted; falls back to that thread's event loop where io_uring cannot wait); 'event-loop'
   * (default) = the main thread, driven by libuv readiness beside the control plane.
   */
  readonly datapathWait?: DatapathWait;
  /**
   * The scheduler time slice a forwarding worker thread asks for (µs; 0 = the default): short, so
   * that its wake-ups preempt CPU-bound work at once (EEVDF, Linux 6.12+). Default 0.
   */
  readonly datapathSliceUs?: number;
  /** µs the forwarding thread busy-polls for the answer before it sleeps, after traffic (0: never; default). */
  readonly datapathSpinUs?: number;
}

export interface Offloads {
  /** flannel0 with IFF_VNET_HDR: TSO super-packets and partial checksums read, GRO super-packets written. */
  readonly tun: boolean;
  /** The UDP socket: GSO on send (UDP_SEGMENT), GRO on receive (UDP_GRO). */
  readonly udp: boolean;
}

/** The offloads in force after negotiation (for logs and metrics). */
export interface OffloadsInForce {
  /** TSO4 + checksum offload on flannel0 (TUNSETOFFLOAD). */
  readonly tunTso: boolean;
  /** USO on flannel0 too (TUN_F_USO4 | TUN_F_USO6, Linux 6.2+): UDP GSO super-packets read and cut. */
  readonly tunUso: boolean;
  /** GRO super-packets written to flannel0 (IFF_VNET_HDR). */
  readonly tunGro: boolean;
  /** Datagrams per UDP GSO message at most; 0 = off. */
  readonly udpGso: number;
  readonly udpGro: boolean;
  /** flannel0's reads and writes go through io_uring (its submission queue size), 0 = syscalls. */
  readonly tunIoUring: number;
  /** Threads forwarding: 1 = the main thread, 2 = a worker per direction. */
  readonly workers: number;
  /** The forwarding thread waits in io_uring (--datapath-wait=io-uring, where the kernel allows). */
  readonly datapathWait: DatapathWait;
}

/** TUNSETOFFLOAD flags: TUN_F_CSUM | TUN_F_TSO4 (IPv4 TCP only: flannel's udp backend is IPv4). */
const TUN_OFFLOAD_FLAGS = 0x01 | 0x02;
/**
 * ... | TUN_F_USO4 | TUN_F_USO6: UDP GSO super-packets too (a pod sending with UDP_SEGMENT hands
 * flannel0 one read per sendmsg instead of one per datagram). Linux takes USO4 only together with
 * USO6, and refuses both (EINVAL) before 6.2. flannel0 carries no IPv6 route, so only IPv4 comes.
 */
const TUN_OFFLOAD_FLAGS_USO = TUN_OFFLOAD_FLAGS | 0x20 | 0x40;

/** Batches each way drained at stop, at most. */
const DRAIN_BATCHES_AT_STOP = 16;

/** Most datagrams per UDP GSO message (the kernel's limit on older kernels). */
const GSO_SEGMENTS = 64;

export class Datapath {
  readonly tunName: string;
  readonly mtu: number;
  readonly ext: ExternalInterface;
  readonly port: number;
  private subnetNow: Ipv4Prefix;
  private routesNow: RoutingSnapshot = RoutingSnapshot.EMPTY;
  private closed = false;
  /** The kernel fast path, null when the TypeScript datapath runs alone. */
  private fastPath: KernelFastPath | null;
  /** Why the TypeScript datapath runs alone (null while the fast path runs). */
  private userspaceReason: string | null;
  /** The counters of fast paths taken down (a refused update, a subnet change): totals never go back. */
  private retired: { counters: Float64Array; own: Record<KernelOnlyCounter, number> } | null = null;

  private constructor(
    options: DatapathOptions,
    private readonly tunFd: number,
    private readonly udpFd: number,
    private readonly lanes: Lanes,
    /** flannel0 hands out TSO super-packets and partial checksums (TUNSETOFFLOAD). */
    readonly tunTso: boolean,
    /** ... and UDP GSO super-packets. */
    readonly tunUso: boolean,
    readonly workers: number,
    fastPath: KernelFastPath | null,
    userspaceReason: string | null,
  ) {
    this.fastPath = fastPath;
    this.userspaceReason = userspaceReason;
    this.tunName = shim.tunName(tunFd);
    this.mtu = options.ext.mtu - ENCAP_OVERHEAD;
    this.ext = options.ext;
    this.port = options.port;
    this.subnetNow = options.subnet;
  }

  /**
   * Binds UDP, then creates flannel0 and configures it (its address, MTU and the network's route),
   * and starts forwarding (with no routes yet). The socket comes first: a port already taken (a
   * second agent on the host) fails before any device or route is touched, so it cannot replace
   * and then, closing its flannel0, remove the route another agent installed. Throws with a
   * one-line message; whatever was opened is closed again. native: the shim (a test's fake sees
   * the order of the calls).
   */
  static open(options: DatapathOptions, native: Shim = shim): Datapath {
    const mtu = options.ext.mtu - ENCAP_OVERHEAD;
    const udpFd = native.udpOpen(options.ext.address, options.port, SOCKET_BUFFER_BYTES, SOCKET_BUFFER_BYTES);
    if (udpFd < 0)
      throw new UdpBindError(
        `cannot bind UDP ${formatIPv4(options.ext.address)}:${options.port}: ${describeErrno(udpFd)}`,
        -udpFd,
      );
    // Offloads are negotiated here, each with a fallback: a TUN without IFF_VNET_HDR takes plain
    // packets only (no GRO, no TSO), one without TUNSETOFFLOAD hands out plain packets (no TSO), a
    // socket without UDP_SEGMENT / UDP_GRO sends and receives plain datagrams.
    const want = options.offloads;
    let tunVnet = want.tun;
    let tunFd = tunVnet ? native.openTun('flannel%d', true) : -1;
    if (tunFd < 0) {
      tunVnet = false;
      tunFd = native.openTun('flannel%d', false);
    }
    if (tunFd < 0) {
      native.closeFd(udpFd);
      throw new TunOpenError(`cannot create the TUN device: ${describeErrno(tunFd)}`, -tunFd);
    }
    let lanes: Lanes | undefined;
    let fastPath: KernelFastPath | null = null;
    try {
      const tunUso = tunVnet && native.tunSetOffload(tunFd, TUN_OFFLOAD_FLAGS_USO) === 0;
      const tunTso = tunUso || (tunVnet && native.tunSetOffload(tunFd, TUN_OFFLOAD_FLAGS) === 0);
      configureTunLink({
        name: native.tunName(tunFd),
        address: options.subnet.prefix,
        mtu,
        networkPrefix: options.network.prefix,
        networkLen: options.network.prefixLen,
      });
      // The fast path goes in front once flannel0 and the socket exist (its programs need both).
      const start = startDatapath(options.datapath ?? 'userspace', {
        tunName: native.tunName(tunFd),
        extName: options.ext.name,
        address: options.ext.address,
        subnet: options.subnet,
        mtu,
        port: options.port,
      });
      fastPath = start.fastPath;
      // Super-packet slots only where an offload may fill them (untouched pages cost no memory).
      const slotSize = slotSizeFor(mtu);
      const setup: LaneSetup = {
        slab: {
          slotSize,
          batch: options.batch,
          readSlotSize: tunTso ? SUPER_SLOT_SIZE : slotSize,
          receiveSlotSize: want.udp ? SUPER_SLOT_SIZE : slotSize,
        },
        tunVnet,
        gsoSegments: want.udp && native.udpProbeGso(udpFd) === 0 ? GSO_SEGMENTS : 0,
        // With the fast path, no UDP GRO: a socket asking for it makes the kernel coalesce
        // flannel's datagrams before the ingress program sees them, and it hands those up.
        udpGro: want.udp && fastPath === null,
        uringEntries: options.tunIoUring ? options.batch : 0,
      };
      const config = { ...forwarderConfig(options.subnet, options.port, mtu), tunGro: tunVnet };
      const workers = options.workers ?? 1;
      if (workers === 2) {
        lanes = new WorkerLanes(setup, tunFd, udpFd, config, {
          sliceUs: options.datapathSliceUs,
          spinUs: options.datapathSpinUs,
        });
      } else if (options.datapathWait === 'io-uring') {
        lanes = new WorkerLanes(setup, tunFd, udpFd, config, {
          waiting: true,
          sliceUs: options.datapathSliceUs,
          spinUs: options.datapathSpinUs,
        });
      } else {
        warmUp(setup, config); // this thread forwards: its code is compiled before the first packet
        const lane = new Lane(setup, tunFd, udpFd, config, newCounters(), 'both');
        lanes = lane;
        lane.start(options.datapathSpinUs ?? 0);
      }
      return new Datapath(options, tunFd, udpFd, lanes, tunTso, tunUso, workers, fastPath, start.reason ?? null);
    } catch (err) {
      fastPath?.close();
      // No poll may outlive its fd: the fds are closed only once the lanes are certainly done.
      if (lanes?.close() ?? true) {
        native.closeFd(udpFd);
        native.closeFd(tunFd);
      }
      throw err;
    }
  }

  get subnet(): Ipv4Prefix {
    return this.subnetNow;
  }

  /** flannel0's address: the subnet's network address. */
  get tunAddress(): number {
    return this.subnetNow.prefix;
  }

  /** The routes in force. */
  get routes(): readonly Route[] {
    return this.routesNow.routes;
  }

  /**
   * Indexed by C.*, current as of this read (both directions added up with --workers 2; with the
   * fast path, its counters of the same meaning added in: a copy then).
   */
  get counters(): Float64Array {
    const lanes = this.lanes.counters();
    if (this.fastPath === null && this.retired === null) return lanes;
    const all = Float64Array.from(lanes);
    this.addKernelCounters(all);
    return all;
  }

  /**
   * Adds the fast path's counters (the running one's and the retired ones') into `into`; returns its
   * own ones, or null if it never ran.
   */
  private addKernelCounters(into: Float64Array): Record<KernelOnlyCounter, number> | null {
    if (this.fastPath === null && this.retired === null) return null;
    const own = { ...NO_KERNEL_COUNTS };
    if (this.retired !== null) {
      for (let i = 0; i < into.length; i++) into[i]! += this.retired.counters[i]!;
      addOwn(own, this.retired.own);
    }
    if (this.fastPath !== null) addOwn(own, this.fastPath.addCounters(into));
    return own;
  }

  /**
   * Swaps in a complete route list; in force when this returns. Throws on an invalid route, or once
   * closed. The fast path's maps follow first (route-sync.ts orders their updates); if the kernel
   * refuses an update, the fast path is taken down and the TypeScript datapath forwards alone.
   */
  setRoutes(routes: readonly Route[]): void {
    if (this.closed) throw new DatapathClosedError('the datapath is closed');
    const snapshot = RoutingSnapshot.build(routes);
    try {
      this.fastPath?.setRoutes(snapshot.routes);
    } catch (err) {
      this.dropFastPath(`a route update was refused: ${(err as Error).message}`);
    }
    this.lanes.setRoutes(snapshot);
    this.routesNow = snapshot;
  }

  /** Which datapath forwards: 'kernel' (the fast path, the TypeScript datapath behind it) or 'userspace'. */
  get datapath(): 'kernel' | 'userspace' {
    return this.fastPath === null ? 'userspace' : 'kernel';
  }

  private dropFastPath(reason: string): void {
    if (this.fastPath !== null) {
      const retired = this.retired ?? { counters: newCounters(), own: { ...NO_KERNEL_COUNTS } };
      addOwn(retired.own, this.fastPath.addCounters(retired.counters));
      this.retired = retired;
      this.fastPath.close();
    }
    this.fastPath = null;
    this.userspaceReason = reason;
  }

  /**
   * The lease moved to another subnet: flannel0 gets the new address (the old one is removed) and
   * the Forwarder accepts packets for the new subnet. Routes and counters carry over.
   */
  changeSubnet(subnet: Ipv4Prefix, network: Ipv4Prefix): void {
    const old = this.subnetNow;
    if (old.prefix === subnet.prefix && old.prefixLen === subnet.prefixLen) return;
    configureTunLink({
      name: this.tunName,
      address: subnet.prefix,
      mtu: this.mtu,
      networkPrefix: network.prefix,
      networkLen: network.prefixLen,
    });
    // The lanes follow the new subnet at once; the old address goes last, so that failing to
    // remove it can leave a stale address but never a datapath that drops the new subnet's traffic.
    this.lanes.setConfig(forwarderConfig(subnet, this.port, this.mtu));
    this.subnetNow = subnet;
    if (this.fastPath !== null) {
      // The programs' config holds the subnet: load them again for the new one.
      this.dropFastPath('the subnet changed');
      const start = startDatapath('auto', {
        tunName: this.tunName,
        extName: this.ext.name,
        address: this.ext.address,
        subnet,
        mtu: this.mtu,
        port: this.port,
      });
      if (start.fastPath !== null) {
        this.fastPath = start.fastPath;
        this.userspaceReason = null;
        this.setRoutes(this.routesNow.routes);
      } else this.userspaceReason = `the subnet changed, then: ${start.reason}`;
    }
    if (old.prefix !== subnet.prefix) removeTunAddress(this.tunName, old.prefix);
  }

  /** The fast path's own counters (packets handed up, packets lost), null when it does not run. */
  fastPathCounters(): Record<KernelOnlyCounter, number> | null {
    return this.addKernelCounters(newCounters());
  }

  /** Traffic to and from each peer route in force (both directions added up with --workers 2). */
  peerTraffic(): (Route & PeerTotals)[] {
    const counts = this.lanes.peerCounters();
    return this.routesNow.routes.map((r, i) => ({ ...r, ...peerTotals(counts, i) }));
  }

  countersObject(): Record<string, number> {
    const all = Float64Array.from(this.lanes.counters());
    const kernelOnly = this.addKernelCounters(all);
    return kernelOnly === null ? countersToObject(all) : { ...countersToObject(all), ...kernelOnly };
  }

  /** The latency histograms (datapath/latency.ts), current as of this read. */
  get latency(): Float64Array {
    return this.lanes.latency();
  }

  /** Each latency series summarized (count, average, quantiles in µs), for the SIGUSR1 dump. */
  latencyObject(): Record<string, unknown> {
    return latencyToObject(this.latency);
  }

  /**
   * Stops forwarding and drains what the last wake-up left, so the counters are final. Bounded:
   * a peer (or a stranger) that keeps sending must not keep the agent from stopping.
   */
  stop(): void {
    this.lanes.stop(DRAIN_BATCHES_AT_STOP);
  }

  /** What offload negotiation gave (GRO into flannel0 may since have been turned off). */
  offloadsInForce(): OffloadsInForce {
    const s = this.lanes.status();
    return {
      tunTso: this.tunTso,
      tunUso: this.tunUso,
      tunGro: s.tunGro,
      udpGso: s.udpGso,
      udpGro: s.udpGro,
      tunIoUring: s.tunIoUring,
      workers: this.workers,
      datapathWait: s.waiting === true ? 'io-uring' : 'event-loop',
    };
  }

  /** The last send/write errno, described, if some packets could not be sent or written. */
  lastWriteError(): string | null {
    const errno = this.lanes.status().lastErrno;
    const counters = this.counters; // one read: with --workers 2 each read adds up both lanes
    const failures = counters[C.dropTxSendError]! + counters[C.dropRxWriteError]!;
    return failures > 0 && errno !== 0 ? describeErrno(errno) : null;
  }

  /**
   * Closes the socket and flannel0 (which takes its address and route with it). Idempotent. If a
   * worker did not confirm that it stopped, both stay open until the process ends: closing them
   * could hand their numbers to new fds that the worker would then read or write.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.fastPath?.close();
    if (!this.lanes.close()) return;
    shim.closeFd(this.udpFd);
    shim.closeFd(this.tunFd);
  }

  /** The fields of the "forwarding" log line. */
  describe(publicIp: number, network: Ipv4Prefix): Record<string, unknown> {
    return {
      tun: this.tunName,
      tunAddress: `${formatIPv4(this.tunAddress)}/32`,
      mtu: this.mtu,
      iface: this.ext.name,
      bind: `${formatIPv4(this.ext.address)}:${this.port}`,
      publicIp: formatIPv4(publicIp),
      network: formatCidr(network.prefix, network.prefixLen),
      subnet: formatCidr(this.subnetNow.prefix, this.subnetNow.prefixLen),
      ...this.offloadsInForce(),
      ...this.describeDatapath(),
    };
  }

  /** datapath: kernel|userspace; with kernel, how the programs are attached; with userspace, why. */
  describeDatapath(): { datapath: 'kernel' | 'userspace'; attach?: string; datapathReason?: string } {
    if (this.fastPath !== null) return { datapath: 'kernel', attach: this.fastPath.attachedBy };
    return {
      datapath: 'userspace',
      ...(this.userspaceReason !== null ? { datapathReason: this.userspaceReason } : {}),
    };
  }
}

const NO_KERNEL_COUNTS: Readonly<Record<KernelOnlyCounter, number>> = {
  kernelTxPassedUp: 0,
  kernelRxPassedUp: 0,
  kernelTxFailed: 0,
  kernelRxFailed: 0,
};

function addOwn(into: Record<KernelOnlyCounter, number>, add: Readonly<Record<KernelOnlyCounter, number>>): void {
  for (const k of Object.keys(into) as KernelOnlyCounter[]) into[k] += add[k];
}

/** The Forwarder's view of a subnet (a lane keeps its own GRO state across subnet changes). */
function forwarderConfig(subnet: Ipv4Prefix, port: number, mtu: number): ForwarderConfig {
  return { tunAddress: subnet.prefix, subnetPrefix: subnet.prefix, subnetLen: subnet.prefixLen, port, mtu };
}

/** "10.244.2.0/24=192.0.2.2" per route, for logs. */
export function describeRoutes(routes: readonly Route[]): string[] {
  return routes.map((r) => `${formatCidr(r.prefix, r.prefixLen)}=${formatIPv4(r.publicIp)}`);
}
