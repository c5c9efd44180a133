// The two batch loops of the datapath: flannel0 -> UDP and UDP -> flannel0. Each call moves
// one batch: one read call, classification in place in the slab, one send/write call. No
// per-packet allocation, no copies (an ICMP error is the only packet built, in its own region).
import {
  decrementTtl, destinationOf, isWellFormedIPv4, sourceOf, writeNetUnreachable,
} from '../encap/ipv4.js';
import { planTcpCoalescing } from '../encap/tcp-coalesce.js';
import { RoutingSnapshot } from '../routing-table/snapshot.js';
import { C } from './counters.js';
import type { TunDevice, UdpSocket } from './io.js';
import type { PacketSlab } from './slab.js';

export interface ForwarderConfig {
  /** flannel0's address (the own subnet's network address): source of ICMP errors. */
  readonly tunAddress: number;
  /** The own lease: only packets for it are accepted from peers. */
  readonly subnetPrefix: number;
  readonly subnetLen: number;
  /** UDP port of every peer (flannel uses the same configured port on all hosts). */
  readonly port: number;
  /** flannel0's MTU: a larger datagram cannot be a packet a peer read off its flannel0. */
  readonly mtu: number;
  /**
   * flannel0 accepts coalesced super-packets (IFF_VNET_HDR): consecutive segments of one TCP flow
   * in a received batch are written as one (GRO), so the kernel crosses its stack once per run.
   */
  readonly tunGro?: boolean;
}

export class Forwarder {
  private routes: RoutingSnapshot = RoutingSnapshot.EMPTY;
  private readonly sendList: Uint16Array;
  private readonly writeList: Uint16Array;
  private readonly icmpList: Uint16Array;
  private readonly groupLens: Uint16Array;
  /** GRO in force: config.tunGro, until flannel0 refuses a super-packet. */
  private tunGro: boolean;
  private readonly subnetMask: number;

  constructor(
    private readonly slab: PacketSlab,
    private readonly tun: TunDevice,
    private readonly udp: UdpSocket,
    private readonly config: ForwarderConfig,
    /** Indexed by C.*; see counters.ts. */
    readonly counters: Float64Array,
  ) {
    this.sendList = new Uint16Array(slab.batch);
    this.writeList = new Uint16Array(slab.batch);
    this.icmpList = new Uint16Array(slab.batch);
    this.groupLens = new Uint16Array(slab.batch);
    this.tunGro = config.tunGro === true;
    this.subnetMask = config.subnetLen === 0 ? 0 : (0xffffffff << (32 - config.subnetLen)) >>> 0;
  }

  /** Swaps in a complete routing snapshot; takes effect at the next batch. */
  setRoutes(routes: RoutingSnapshot): void {
    this.routes = routes;
  }

  get currentRoutes(): RoutingSnapshot {
    return this.routes;
  }

  /** GRO into flannel0 in force: tunGro, until flannel0 refused a super-packet. */
  get tunGroInForce(): boolean {
    return this.tunGro;
  }

  /** Moves one batch flannel0 -> UDP. Returns the number of packets read (0: flannel0 empty). */
  tunToUdp(): number {
    const { slab, counters: c } = this;
    const n = this.tun.read(slab.txFirst, slab.batch);
    if (n <= 0) {
      if (n < 0) c[C.tunReadErrors]++;
      return 0;
    }
    const bytes = slab.bytes, lens = slab.lens, addrs = slab.addrs, ports = slab.ports;
    const slotSize = slab.slotSize, routes = this.routes, publicIpOf = routes.publicIpOf;
    const port = this.config.port, sendList = this.sendList, icmpList = this.icmpList;
    let sends = 0, icmps = 0, readBytes = 0;
    for (let i = 0; i < n; i++) {
      const slot = slab.txFirst + i;
      const off = slot * slotSize;
      const len = lens[slot];
      readBytes += len;
      if (!isWellFormedIPv4(bytes, off, len)) {
        c[C.dropTxMalformed]++;
        continue;
      }
      const peer = routes.lookup(destinationOf(bytes, off));
      if (peer < 0) {
        c[C.dropTxNoRoute]++;
        const icmpSlot = slab.icmpFirst + icmps;
        const icmpLen = writeNetUnreachable(bytes, off, len, bytes, icmpSlot * slotSize, this.config.tunAddress);
        if (icmpLen > 0) {
          lens[icmpSlot] = icmpLen;
          icmpList[icmps++] = icmpSlot;
        }
        continue;
      }
      if (!decrementTtl(bytes, off)) {
        c[C.dropTxTtl]++;
        continue;
      }
      addrs[slot] = publicIpOf[peer];
      ports[slot] = port;
      sendList[sends++] = slot;
    }
    c[C.tunReadBatches]++;
    c[C.tunReadPackets] += n;
    c[C.tunReadBytes] += readBytes;
    if (sends > 0) this.send(sends);
    if (icmps > 0) c[C.icmpUnreachableSent] += this.tun.write(icmpList, icmps);
    return n;
  }

  /** Moves one batch UDP -> flannel0. Returns the number of datagrams received. */
  udpToTun(): number {
    const { slab, counters: c } = this;
    const n = this.udp.recv(slab.rxFirst, slab.batch);
    if (n <= 0) {
      if (n < 0) c[C.udpRecvErrors]++;
      return 0;
    }
    const bytes = slab.bytes, lens = slab.lens, addrs = slab.addrs;
    const slotSize = slab.slotSize, routes = this.routes, publicIpOf = routes.publicIpOf;
    const mtu = this.config.mtu, subnetPrefix = this.config.subnetPrefix, subnetMask = this.subnetMask;
    const writeList = this.writeList;
    let writes = 0, recvBytes = 0;
    for (let i = 0; i < n; i++) {
      const slot = slab.rxFirst + i;
      const off = slot * slotSize;
      const len = lens[slot];
      recvBytes += len;
      if (len > mtu) {
        // Also catches datagrams truncated by the receive (len is the real size).
        c[C.dropRxOversize]++;
        continue;
      }
      if (!isWellFormedIPv4(bytes, off, len)) {
        c[C.dropRxMalformed]++;
        continue;
      }
      // One lookup checks both: the sender is a peer, and the inner source lies in its subnet.
      const peer = routes.lookup(sourceOf(bytes, off));
      if (peer < 0 || publicIpOf[peer] !== addrs[slot]) {
        if (routes.isPeerAddress(addrs[slot])) c[C.dropRxSpoofedSource]++;
        else c[C.dropRxUnknownSender]++;
        continue;
      }
      if (((destinationOf(bytes, off) & subnetMask) >>> 0) !== subnetPrefix) {
        c[C.dropRxNotForUs]++;
        continue;
      }
      if (!decrementTtl(bytes, off)) {
        c[C.dropRxTtl]++;
        continue;
      }
      writeList[writes++] = slot;
    }
    c[C.udpRecvBatches]++;
    c[C.udpRecvPackets] += n;
    c[C.udpRecvBytes] += recvBytes;
    if (writes > 0) this.write(writes);
    return n;
  }

  private send(count: number): void {
    const c = this.counters, lens = this.slab.lens, list = this.sendList;
    const sent = this.udp.send(list, count);
    let sentBytes = 0;
    for (let i = 0; i < count; i++) {
      const len = lens[list[i]];
      if (len > 0) sentBytes += len;
    }
    c[C.udpSentPackets] += sent;
    c[C.udpSentBytes] += sentBytes;
    c[C.dropTxSendError] += count - sent;
  }

  private write(count: number): void {
    const c = this.counters, slab = this.slab, lens = slab.lens, list = this.writeList, groupLens = this.groupLens;
    const groups = this.tunGro && count > 1
      ? planTcpCoalescing(slab.bytes, slab.slotSize, lens, slab.offs, slab.vnetHdrs, list, count, groupLens, 65535, slab.words)
      : 0;
    const written = this.tun.write(list, count, groups > 0 ? groupLens : null);
    // One pass over what was written: bytes, and the outcome of each super-packet.
    let writtenBytes = 0;
    for (let i = 0; i < count; i++) {
      const len = lens[list[i]];
      if (len > 0) writtenBytes += len;
      if (groups === 0 || groupLens[i] < 2) continue;
      if (len >= 0) {
        c[C.tunGroWrites]++;
        c[C.tunGroPackets] += groupLens[i];
      } else if (this.tunGro && refusesGro(len)) {
        // The kernel refused a super-packet as such: those packets are lost (counted as write
        // errors), and GRO stays off rather than losing every later run the same way.
        this.tunGro = false;
        c[C.tunGroFallbacks]++;
      }
    }
    c[C.tunWritePackets] += written;
    c[C.tunWriteBytes] += writtenBytes;
    c[C.dropRxWriteError] += count - written;
  }
}

/** -errno values with which flannel0 refuses a super-packet itself (not a transient failure). */
function refusesGro(negErrno: number): boolean {
  return negErrno === -22 /* EINVAL */ || negErrno === -5 /* EIO */ || negErrno === -95 /* EOPNOTSUPP */;
}
