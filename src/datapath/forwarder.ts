// The two batch loops of the datapath: flannel0 -> UDP and UDP -> flannel0. Each call moves
// one batch: one read call, classification in place in the slab, one send/write call (more only
// when offloads multiply the packets: a TSO super-packet becomes up to thousands of datagrams
// (45 at a 1500-byte MTU, ~8,190 at Linux's smallest gso_size, 8), a USO one up to 128
// datagrams, cut in chunks of what the header cells and the send list hold; a UDP GRO run up to
// 64 packets). No per-packet allocation, no copies (an ICMP error is the only packet built, in its
// own region; a segment's headers are built in a header cell, its payload stays in the super-packet).
// ICMP errors (net unreachable for no route, time exceeded for a TTL that runs out here) go back
// into flannel0 from flannel0's address, rate-limited per destination as Linux limits its own.
import {
  ICMP_NET_UNREACHABLE,
  ICMP_TIME_EXCEEDED,
  decrementTtl,
  destinationOf,
  isWellFormedIPv4,
  mayAnswerWithIcmpError,
  sourceOf,
  writeIcmpError,
} from '../encap/ipv4.js';
import { planCoalescing, VNET_HDR_SLOT } from '../encap/tcp-coalesce.js';
import { completeChecksum, segmentTcpSuperPacket, tcpSegmentCount } from '../encap/tcp-segment.js';
import { segmentUdpSuperPacket, udpSegmentCount } from '../encap/udp-segment.js';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_UDP_L4 } from '../encap/wire.js';
import { RoutingSnapshot } from '../routing-table/snapshot.js';
import { C } from './counters.js';
import { P, PEER_FIELDS, newPeerCounters } from './peer-counters.js';
import { IcmpRateLimiter, KERNEL_ICMP_RATE_LIMIT, type IcmpRateLimitConfig } from './icmp-rate-limit.js';
import type { TunDevice, UdpSocket } from './io.js';
import { L, newLatency, record } from './latency.js';
import { SEGMENT_CELLS, VIEW_SLOTS, type PacketSlab } from './slab.js';

/** Most datagrams in one send call, and packets in one write call (the shim's MAX_BATCH). */
const IO_CALL_MAX = 1024;
/** Most segments queued between two flushes: header cells and send-list entries both bound them. */
const CELLS_PER_SEND = Math.min(SEGMENT_CELLS, IO_CALL_MAX);
/**
 * Bounds of what a Linux sender puts in a super-packet, so that one read cannot make the agent
 * cut tens of thousands of datagrams: TCP's smallest gso_size (TCP_MIN_GSO_SIZE: the 48-byte
 * minimum MSS less 40 bytes of options) and UDP GSO's most datagrams per send (UDP_MAX_SEGMENTS:
 * 64, 128 in newer kernels). Beyond them a super-packet is a bad offload, not traffic.
 */
const TCP_MIN_GSO_SIZE = 8;
const UDP_MAX_SEGMENTS = 128;

export interface ForwarderConfig {
  /** flannel0's address (the own subnet's network address): source of ICMP errors. */
  readonly tunAddress: number;
  /** The own lease: only packets for it are accepted from peers. */
  readonly subnetPrefix: number;
  readonly subnetLen: number;
  /** UDP port of every peer (flannel uses the same configured port on all hosts). */
  readonly port: number;
  /**
   * flannel0's MTU: a larger datagram cannot be a packet a peer read off its flannel0, so none is
   * sent either (TSO segments are cut to fit; a longer plain packet is dropped) or accepted.
   */
  readonly mtu: number;
  /**
   * flannel0 accepts coalesced super-packets (IFF_VNET_HDR): consecutive segments of one TCP flow
   * in a received batch are written as one (GRO), so the kernel crosses its stack once per run.
   */
  readonly tunGro?: boolean;
  /**
   * Rate limit of the ICMP errors written into flannel0 (net unreachable, time exceeded), per
   * destination and overall; default Linux's (KERNEL_ICMP_RATE_LIMIT); false: none (tests).
   */
  readonly icmpRateLimit?: IcmpRateLimitConfig | false;
  /** The rate limit's clock in ms (default performance.now). */
  readonly nowMs?: () => number;
}

export class Forwarder {
  private routes: RoutingSnapshot = RoutingSnapshot.EMPTY;
  private readonly sendList: Uint16Array;
  private readonly writeList: Uint16Array;
  private readonly icmpList: Uint16Array;
  /** The ICMP type of each entry of icmpList. */
  private readonly icmpTypes: Uint8Array;
  private readonly icmpLimiter: IcmpRateLimiter | null;
  private readonly nowMs: () => number;
  /** The rate limit's time for the batch in progress, read once per batch at its first ICMP error; -1: not yet. */
  private batchNowMs = -1;
  private readonly groupLens: Uint16Array;
  /** Queued in sendList / writeList, not yet sent / written. */
  private sends = 0;
  private writes = 0;
  /** Next free header cell (tx) and view slot (rx); reset when their lists are flushed. */
  private nextCell: number;
  private nextView: number;
  /** GRO in force: config.tunGro, until flannel0 refused a super-packet. */
  private tunGro: boolean;
  private readonly subnetMask: number;
  /** Per-route counts (peer-counters.ts), laid out by `routes`. */
  private peers: Float64Array = newPeerCounters(0);
  /** Per slot: the route index of the packet queued in it, to count its send or write against that peer. */
  private readonly slotPeer: Int32Array;
  /** When the last flush's send / write call returned (slab.ioClock), for the batch's work time. */
  private sentAt = 0;
  private writtenAt = 0;

  constructor(
    private readonly slab: PacketSlab,
    private readonly tun: TunDevice,
    private readonly udp: UdpSocket,
    private readonly config: ForwarderConfig,
    /** Indexed by C.*; see counters.ts. */
    readonly counters: Float64Array,
    /** Residence, wait and work histograms (latency.ts), from slab.stamps and slab.ioClock. */
    readonly latency: Float64Array = newLatency(),
  ) {
    this.sendList = new Uint16Array(IO_CALL_MAX);
    this.writeList = new Uint16Array(IO_CALL_MAX);
    this.icmpList = new Uint16Array(slab.batch);
    this.icmpTypes = new Uint8Array(slab.batch);
    const limit = config.icmpRateLimit ?? KERNEL_ICMP_RATE_LIMIT;
    this.icmpLimiter = limit === false ? null : new IcmpRateLimiter(limit);
    this.nowMs = config.nowMs ?? (() => performance.now());
    this.groupLens = new Uint16Array(IO_CALL_MAX);
    this.slotPeer = new Int32Array(slab.slotCount);
    this.nextCell = slab.cellFirst;
    this.nextView = slab.viewFirst;
    this.tunGro = config.tunGro === true;
    this.subnetMask = config.subnetLen === 0 ? 0 : (0xffffffff << (32 - config.subnetLen)) >>> 0;
  }

  /**
   * Swaps in a complete routing snapshot and the per-route counts laid out by it (a fresh zeroed array when not
   * given: the caller carries counts over, peer-counters.ts); takes effect at the next batch.
   */
  setRoutes(routes: RoutingSnapshot, peerCounts: Float64Array = newPeerCounters(routes.routeCount)): void {
    this.routes = routes;
    this.peers = peerCounts;
  }

  /** The per-route counts in force (peer-counters.ts). */
  get peerCounters(): Float64Array {
    return this.peers;
  }

  get currentRoutes(): RoutingSnapshot {
    return this.routes;
  }

  /** GRO in force: tunGro, until flannel0 refused a super-packet. */
  get tunGroInForce(): boolean {
    return this.tunGro;
  }

  /**
   * Moves one batch flannel0 -> UDP. Returns the number of packets read (0: flannel0 empty).
   * A read carries a virtio-net header (all zero for a plain packet): a partial checksum is
   * completed, a TSO or USO super-packet cut into segments that fit the MTU, one datagram each. A plain
   * packet longer than the MTU (a 64 KiB read slot takes one) is dropped (dropTxOversize).
   */
  tunToUdp(): number {
    const { slab, counters: c } = this;
    const n = this.tun.read(slab.txFirst, slab.batch);
    if (n <= 0) {
      if (n < 0) c[C.tunReadErrors]++;
      return 0;
    }
    const readAt = slab.ioClock[0];
    record(this.latency, L.txWait, readAt - slab.stamps[slab.txFirst]);
    this.sentAt = 0;
    const bytes = slab.bytes,
      words = slab.words,
      lens = slab.lens,
      addrs = slab.addrs,
      ports = slab.ports;
    const offsets = slab.slotOffsets,
      vnet = slab.vnetHdrs,
      routes = this.routes,
      publicIpOf = routes.publicIpOf;
    const port = this.config.port,
      mtu = this.config.mtu;
    let icmps = 0,
      readBytes = 0;
    this.batchNowMs = -1;
    for (let i = 0; i < n; i++) {
      const slot = slab.txFirst + i;
      const off = offsets[slot];
      const len = lens[slot];
      readBytes += len;
      const vo = slot * VNET_HDR_SLOT;
      const flags = vnet[vo],
        gsoType = vnet[vo + 1];
      if (gsoType === 0 && len > mtu) {
        c[C.dropTxOversize]++;
        continue;
      }
      if (!isWellFormedIPv4(bytes, off, len)) {
        c[C.dropTxMalformed]++;
        continue;
      }
      const peer = routes.lookup(destinationOf(bytes, off));
      if (peer < 0) {
        c[C.dropTxNoRoute]++;
        icmps = this.queueIcmpError(ICMP_NET_UNREACHABLE, off, len, icmps);
        continue;
      }
      if (!decrementTtl(bytes, off)) {
        c[C.dropTxTtl]++;
        this.peers[peer * PEER_FIELDS + P.txDrops]++;
        icmps = this.queueIcmpError(ICMP_TIME_EXCEEDED, off, len, icmps);
        continue;
      }
      if (gsoType !== 0) {
        this.sendSegments(off, len, vo, gsoType, peer, slab.stamps[slot]);
        continue;
      }
      if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
        const csumStart = vnet[vo + 6] | (vnet[vo + 7] << 8),
          csumOffset = vnet[vo + 8] | (vnet[vo + 9] << 8);
        if (!completeChecksum(bytes, words, off, len, csumStart, csumOffset)) {
          c[C.dropTxBadOffload]++;
          this.peers[peer * PEER_FIELDS + P.txDrops]++;
          continue;
        }
        c[C.tunCsumCompleted]++;
      }
      addrs[slot] = publicIpOf[peer];
      ports[slot] = port;
      this.slotPeer[slot] = peer;
      if (this.sends === IO_CALL_MAX) this.flushSends();
      this.sendList[this.sends++] = slot;
    }
    c[C.tunReadBatches]++;
    c[C.tunReadPackets] += n;
    c[C.tunReadBytes] += readBytes;
    this.flushSends();
    if (this.sentAt > 0) record(this.latency, L.txWork, this.sentAt - readAt);
    if (icmps > 0) this.flushIcmpErrors(icmps);
    return n;
  }

  /**
   * Builds, in the next ICMP slot, the error of ICMP type `type` about the packet at off, unless
   * flannel's rules send none about it or its sender is over the rate limit. Returns the number of
   * errors queued.
   */
  private queueIcmpError(type: number, off: number, len: number, icmps: number): number {
    const slab = this.slab,
      bytes = slab.bytes;
    if (!mayAnswerWithIcmpError(bytes, off)) return icmps;
    if (this.icmpLimiter !== null) {
      if (this.batchNowMs < 0) this.batchNowMs = this.nowMs();
      if (!this.icmpLimiter.allow(sourceOf(bytes, off), this.batchNowMs)) {
        this.counters[C.icmpRateLimited]++;
        return icmps;
      }
    }
    const slot = slab.icmpFirst + icmps;
    slab.lens[slot] = writeIcmpError(type, bytes, off, len, bytes, slab.slotOffsets[slot], this.config.tunAddress);
    this.icmpList[icmps] = slot;
    this.icmpTypes[icmps] = type;
    return icmps + 1;
  }

  /** Writes the queued ICMP errors into flannel0; each is counted as sent only if it was written. */
  private flushIcmpErrors(count: number): void {
    const c = this.counters,
      lens = this.slab.lens;
    this.tun.write(this.icmpList, count);
    for (let i = 0; i < count; i++) {
      const written = lens[this.icmpList[i]] >= 0;
      if (this.icmpTypes[i] === ICMP_TIME_EXCEEDED) c[written ? C.icmpTimeExceededSent : C.icmpTimeExceededFailed]++;
      else c[written ? C.icmpUnreachableSent : C.icmpUnreachableFailed]++;
    }
  }

  /**
   * Cuts the super-packet at off (TTL already decremented) into datagrams that fit the MTU, each its
   * own header cell plus its payload in place, queued for the peer of route index peer: a TSO (GSO_TCPV4)
   * one into TCP segments (cut smaller than gso_size where the MTU needs), a USO (GSO_UDP_L4) one
   * into its UDP datagrams (never re-cut: datagram boundaries are the application's). One that fits
   * a send call is queued whole (flushing first if the cells or the send list have no room left for
   * it); a larger one is cut in chunks of what is left, flushing between them. Dropped and counted:
   * another GSO type, not segmentable or beyond what Linux builds (TCP_MIN_GSO_SIZE,
   * UDP_MAX_SEGMENTS) (dropTxBadOffload), or a segment that cannot fit the MTU (dropTxOversize).
   */
  private sendSegments(off: number, len: number, vo: number, gsoType: number, peer: number, arrivedAt: number): void {
    const { slab, counters: c } = this;
    const bytes = slab.bytes,
      vnet = slab.vnetHdrs,
      mtu = this.config.mtu,
      publicIp = this.routes.publicIpOf[peer],
      peerDrops = peer * PEER_FIELDS + P.txDrops;
    const gsoSize = vnet[vo + 4] | (vnet[vo + 5] << 8);
    const udp = gsoType === VIRTIO_NET_HDR_GSO_UDP_L4;
    if ((gsoType !== VIRTIO_NET_HDR_GSO_TCPV4 && !udp) || gsoSize < (udp ? 1 : TCP_MIN_GSO_SIZE)) {
      c[C.dropTxBadOffload]++;
      this.peers[peerDrops]++;
      return;
    }
    const total = udp ? udpSegmentCount(bytes, off, len, gsoSize, mtu) : tcpSegmentCount(bytes, off, len, gsoSize, mtu);
    if (udp && total > UDP_MAX_SEGMENTS) {
      c[C.dropTxBadOffload]++;
      this.peers[peerDrops]++;
      return;
    }
    if (total === 0) {
      // Segmentable but for the MTU: oversize; else a bad offload.
      const unbounded = udp
        ? udpSegmentCount(bytes, off, len, gsoSize, 0xffff)
        : tcpSegmentCount(bytes, off, len, gsoSize, 0xffff);
      if (unbounded > 0) c[C.dropTxOversize]++;
      else c[C.dropTxBadOffload]++;
      this.peers[peerDrops]++;
      return;
    }
    const cellEnd = slab.cellFirst + SEGMENT_CELLS;
    if (total <= CELLS_PER_SEND && total > Math.min(cellEnd - this.nextCell, IO_CALL_MAX - this.sends))
      this.flushSends();
    const addrs = slab.addrs,
      ports = slab.ports,
      slotPeer = this.slotPeer,
      stamps = slab.stamps,
      list = this.sendList,
      port = this.config.port;
    for (let done = 0; done < total;) {
      let room = Math.min(cellEnd - this.nextCell, IO_CALL_MAX - this.sends);
      if (room === 0) {
        this.flushSends();
        room = CELLS_PER_SEND;
      }
      const first = this.nextCell;
      // >= 1: done < total and room >= 1.
      const segs = udp
        ? segmentUdpSuperPacket(
            bytes,
            slab.words,
            off,
            len,
            gsoSize,
            mtu,
            done,
            slab.slotOffsets,
            first,
            room,
            slab.lens,
            slab.extOffs,
            slab.extLens,
          )
        : segmentTcpSuperPacket(
            bytes,
            slab.words,
            off,
            len,
            gsoSize,
            mtu,
            done,
            slab.slotOffsets,
            first,
            room,
            slab.lens,
            slab.extOffs,
            slab.extLens,
          );
      for (let cell = first; cell < first + segs; cell++) {
        addrs[cell] = publicIp;
        ports[cell] = port;
        slotPeer[cell] = peer;
        stamps[cell] = arrivedAt;
        list[this.sends++] = cell;
      }
      this.nextCell = first + segs;
      done += segs;
    }
    if (udp) {
      c[C.tunUsoPackets]++;
      c[C.tunUsoSegments] += total;
    } else {
      c[C.tunTsoPackets]++;
      c[C.tunTsoSegments] += total;
    }
  }

  /**
   * Moves one batch UDP -> flannel0. Returns the number of receives (0: nothing waiting). A
   * coalesced receive (UDP GRO) is split into its datagrams through view slots, no copy.
   */
  udpToTun(): number {
    const { slab, counters: c } = this;
    const n = this.udp.recv(slab.rxFirst, slab.batch);
    if (n <= 0) {
      if (n < 0) c[C.udpRecvErrors]++;
      return 0;
    }
    const readAt = slab.ioClock[0];
    record(this.latency, L.rxWait, readAt - slab.stamps[slab.rxFirst]);
    this.writtenAt = 0;
    const lens = slab.lens,
      addrs = slab.addrs,
      stamps = slab.stamps,
      offsets = slab.slotOffsets,
      segSizes = slab.segSizes;
    const viewEnd = slab.viewFirst + VIEW_SLOTS;
    let datagrams = 0,
      recvBytes = 0;
    for (let i = 0; i < n; i++) {
      const slot = slab.rxFirst + i;
      const len = lens[slot];
      recvBytes += len;
      const seg = segSizes[slot];
      if (seg === 0 || len > slab.slotCaps[slot]) {
        datagrams++;
        if (this.accept(slot, len)) this.queueWrite(slot);
        continue;
      }
      const off = offsets[slot],
        from = addrs[slot];
      c[C.udpGroRuns]++;
      for (let at = 0; at < len; at += seg) {
        if (this.nextView === viewEnd) this.flushWrites();
        const view = this.nextView++;
        offsets[view] = off + at;
        lens[view] = Math.min(seg, len - at);
        addrs[view] = from;
        stamps[view] = stamps[slot];
        datagrams++;
        c[C.udpGroDatagrams]++;
        if (this.accept(view, lens[view])) this.queueWrite(view);
      }
    }
    c[C.udpRecvBatches]++;
    c[C.udpRecvPackets] += datagrams;
    c[C.udpRecvBytes] += recvBytes;
    this.flushWrites();
    if (this.writtenAt > 0) record(this.latency, L.rxWork, this.writtenAt - readAt);
    return n;
  }

  /**
   * The checks on a received datagram in slot (len bytes, from addrs[slot]): counted and false
   * for a drop; true, with the inner TTL decremented, for a packet to write to flannel0.
   */
  private accept(slot: number, len: number): boolean {
    const { slab, counters: c, routes } = this;
    const bytes = slab.bytes,
      off = slab.slotOffsets[slot],
      from = slab.addrs[slot];
    if (len > this.config.mtu) {
      // Also catches datagrams truncated by the receive (len is the real size).
      c[C.dropRxOversize]++;
      return false;
    }
    if (!isWellFormedIPv4(bytes, off, len)) {
      c[C.dropRxMalformed]++;
      return false;
    }
    // One lookup checks both: the sender is a peer, and the inner source lies in its subnet.
    const peer = routes.lookup(sourceOf(bytes, off));
    if (peer < 0 || routes.publicIpOf[peer] !== from) {
      if (routes.isPeerAddress(from)) c[C.dropRxSpoofedSource]++;
      else c[C.dropRxUnknownSender]++;
      return false;
    }
    if ((destinationOf(bytes, off) & this.subnetMask) >>> 0 !== this.config.subnetPrefix) {
      c[C.dropRxNotForUs]++;
      this.peers[peer * PEER_FIELDS + P.rxDrops]++;
      return false;
    }
    if (!decrementTtl(bytes, off)) {
      c[C.dropRxTtl]++;
      this.peers[peer * PEER_FIELDS + P.rxDrops]++;
      return false;
    }
    this.slotPeer[slot] = peer;
    return true;
  }

  private queueWrite(slot: number): void {
    if (this.writes === IO_CALL_MAX) this.flushWrites();
    this.writeList[this.writes++] = slot;
  }

  /** Sends the queued datagrams; their header cells are free again. */
  private flushSends(): void {
    const count = this.sends;
    this.sends = 0;
    this.nextCell = this.slab.cellFirst;
    if (count === 0) return;
    const c = this.counters,
      lens = this.slab.lens,
      extLens = this.slab.extLens,
      list = this.sendList,
      peers = this.peers,
      slotPeer = this.slotPeer;
    const sent = this.udp.send(list, count);
    const at = (this.sentAt = this.slab.ioClock[0]),
      stamps = this.slab.stamps,
      latency = this.latency;
    let sentBytes = 0;
    for (let i = 0; i < count; i++) {
      const slot = list[i],
        len = lens[slot],
        pi = slotPeer[slot] * PEER_FIELDS;
      if (len > 0) {
        const datagram = len + extLens[slot];
        sentBytes += datagram;
        peers[pi + P.txPackets]++;
        peers[pi + P.txBytes] += datagram;
        record(latency, L.txResidence, at - stamps[slot]);
      } else {
        peers[pi + P.txDrops]++;
      }
    }
    c[C.udpSentPackets] += sent;
    c[C.udpSentBytes] += sentBytes;
    c[C.dropTxSendError] += count - sent;
  }

  /** Writes the queued packets to flannel0, coalescing TCP runs where GRO is on; views are free again. */
  private flushWrites(): void {
    const count = this.writes;
    this.writes = 0;
    this.nextView = this.slab.viewFirst;
    if (count === 0) return;
    const c = this.counters,
      slab = this.slab,
      lens = slab.lens,
      list = this.writeList,
      groupLens = this.groupLens;
    const groups =
      this.tunGro && count > 1
        ? planCoalescing(
            slab.bytes,
            slab.slotOffsets,
            lens,
            slab.offs,
            slab.vnetHdrs,
            list,
            count,
            groupLens,
            65535,
            slab.words,
          )
        : 0;
    const written = this.tun.write(list, count, groups > 0 ? groupLens : null);
    const at = (this.writtenAt = slab.ioClock[0]),
      stamps = slab.stamps,
      latency = this.latency;
    // One pass over what was written: bytes, per-peer counts, residence, and the outcome of each super-packet.
    const peers = this.peers,
      slotPeer = this.slotPeer;
    let writtenBytes = 0;
    for (let i = 0; i < count; i++) {
      const len = lens[list[i]],
        pi = slotPeer[list[i]] * PEER_FIELDS;
      if (len > 0) {
        writtenBytes += len;
        peers[pi + P.rxPackets]++;
        peers[pi + P.rxBytes] += len;
        record(latency, L.rxResidence, at - stamps[list[i]]);
      } else {
        peers[pi + P.rxDrops]++;
      }
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
  return negErrno === -22 /* EINVAL */ || negErrno === -5 /* EIO */ || negErrno === -95; /* EOPNOTSUPP */
}
