/**
 * In-memory I/O edges for driving a Forwarder without a kernel.
 *
 * FakeTun / FakeUdp: queues of input packets that read/recv copy into slab slots, and records
 * (copies) of what the forwarder writes/sends. They allocate freely; for correctness tests.
 *
 * ReplayTun / ReplayUdp: zero-allocation fakes for the GC test and micro-benchmarks. Prepared
 * packets are written into the slots once; each read/recv restores only the bytes the forwarder
 * may have changed (TTL and header checksum) from a preallocated template, and sets
 * lens/addrs/ports. Writes and sends are counted, not copied.
 *
 * Semantics follow the native shim (native/shim.c): read/recv return a count or -errno; a
 * failed write/send sets that slot's lens to -errno, skips it and the call returns fewer; a
 * datagram larger than a slot arrives cut to the slot's cap with lens = its real length (MSG_TRUNC);
 * every read sets the slot's virtio-net header (zero unless queued with pushOffloaded).
 */
import type { TunDevice, UdpSocket } from '../../src/datapath/io.js';
import type { PacketSlab } from '../../src/datapath/slab.js';
import { VNET_HDR_LEN, VNET_HDR_SLOT } from '../../src/encap/tcp-coalesce.js';

export const EAGAIN = 11;
export const EIO = 5;
export const ENOBUFS = 105;
export const EMSGSIZE = 90;

export interface Datagram {
  /** One datagram, or with segSize a UDP GRO run: datagrams of segSize bytes back to back (the last may be shorter). */
  data: Uint8Array;
  segSize?: number;
  /** uint32, host order */
  addr: number;
  port: number;
}

export interface SentDatagram {
  data: Buffer;
  addr: number;
  port: number;
  /** The slab slot it was sent from (a header cell for a segment cut from a super-packet). */
  slot: number;
}

export interface FakeIoOptions {
  /** Most packets one read/recv call returns (default: unlimited, i.e. the caller's max). */
  maxPerCall?: number;
  /**
   * Residence timing as the shim does it: each packet is stamped (slab.stamps) with the clock's
   * time when it was pushed, and each call advances the clock by its cost and writes the time it
   * returns into slab.ioClock[0]. Without a clock, stamps and ioClock stay as they are.
   */
  clock?: FakeClock;
}

/** A clock in µs that moves only when told to (or by the cost of each fake call). */
export class FakeClock {
  now = 0;
  /** µs a read/recv call takes, and a write/send call. */
  readCostUs = 0;
  writeCostUs = 0;

  /** The call returns: advances by its cost and tells the slab. */
  callReturns(slab: PacketSlab, costUs: number): void {
    this.now += costUs;
    slab.ioClock[0] = this.now;
  }
}

/** Failures queued for the next calls: a whole-call error (read/recv) or per-packet ones (write/send). */
class FaultPlan {
  private callErrors: number[] = [];
  private packetErrors: number[] = [];

  failNextCall(errno: number): void {
    this.callErrors.push(errno);
  }
  failNextPackets(errno: number, count: number): void {
    for (let i = 0; i < count; i++) this.packetErrors.push(errno);
  }
  takeCallError(): number | undefined {
    return this.callErrors.shift();
  }
  takePacketError(): number | undefined {
    return this.packetErrors.shift();
  }
}

/** A slot's bytes, followed by its second part (extOffs/extLens: a TCP segment's payload) if any. */
function copyOut(slab: PacketSlab, slot: number): Buffer {
  const off = slab.offsetOf(slot);
  const head = slab.bytes.subarray(off, off + slab.lens[slot]!);
  const extLen = slab.extLens[slot]!;
  if (extLen === 0) return Buffer.from(head);
  const ext = slab.extOffs[slot]!;
  return Buffer.concat([head, slab.bytes.subarray(ext, ext + extLen)]);
}

export class FakeTun implements TunDevice {
  /** Packets not yet read. */
  readonly inbound: Uint8Array[] = [];
  /** Every packet written, in order (copies). */
  readonly written: Buffer[] = [];
  /** When each packet of inbound was pushed (clock time). */
  private readonly arrivals: number[] = [];
  readCalls = 0;
  writeCalls = 0;
  /** The groups argument of each write call (a copy of its first `count` entries, or null). */
  readonly writeGroups: (number[] | null)[] = [];
  private readonly faults = new FaultPlan();
  private readonly maxPerCall: number;
  private readonly clock: FakeClock | undefined;

  constructor(
    private readonly slab: PacketSlab,
    options: FakeIoOptions = {},
  ) {
    this.maxPerCall = options.maxPerCall ?? Infinity;
    this.clock = options.clock;
  }

  push(...packets: Uint8Array[]): void {
    for (const p of packets) {
      if (p.length > this.slab.readSlotSize)
        throw new RangeError(`a ${p.length}-byte packet does not fit a ${this.slab.readSlotSize}-byte slot`);
      this.inbound.push(p);
      this.arrivals.push(this.clock?.now ?? 0);
    }
  }

  /** The next read call returns -errno. */
  failNextRead(errno = EIO): void {
    this.faults.failNextCall(errno);
  }

  /** The next `count` packets written fail with errno. */
  failNextWrites(errno = EIO, count = 1): void {
    this.faults.failNextPackets(errno, count);
  }

  /**
   * Queues a packet read with a virtio-net header (10 bytes: a TSO super-packet, a partial
   * checksum). The header is keyed by the packet object: queue a copy to send the same bytes twice.
   */
  pushOffloaded(packet: Uint8Array, vnetHdr: Uint8Array): void {
    this.push(packet);
    this.vnetOf.set(packet, vnetHdr);
  }

  private readonly vnetOf = new Map<Uint8Array, Uint8Array>();

  read(first: number, max: number): number {
    this.readCalls++;
    const err = this.faults.takeCallError();
    if (err !== undefined) return -err;
    const n = Math.min(max, this.maxPerCall, this.inbound.length);
    for (let i = 0; i < n; i++) {
      const p = this.inbound.shift()!;
      const slot = first + i;
      const arrival = this.arrivals.shift()!;
      if (this.clock) this.slab.stamps[slot] = arrival;
      this.slab.bytes.set(p, this.slab.offsetOf(slot));
      this.slab.lens[slot] = p.length;
      // As the shim: every read sets the slot's virtio-net header (zero for a plain packet).
      const vo = slot * VNET_HDR_SLOT;
      this.slab.vnetHdrs.fill(0, vo, vo + VNET_HDR_LEN);
      const vnet = this.vnetOf.get(p);
      if (vnet) this.slab.vnetHdrs.set(vnet.subarray(0, VNET_HDR_LEN), vo);
      this.vnetOf.delete(p);
    }
    this.clock?.callReturns(this.slab, this.clock.readCostUs);
    return n;
  }

  /** Records groups, then writes each listed packet as it is (a group's leader as patched). */
  write(list: Uint16Array, count: number, groups: Uint16Array | null = null): number {
    this.writeCalls++;
    this.writeGroups.push(groups ? Array.from(groups.subarray(0, count)) : null);
    let ok = 0;
    for (let i = 0; i < count; i++) {
      const slot = list[i]!;
      const err = this.faults.takePacketError();
      if (err !== undefined) {
        this.slab.lens[slot] = -err;
        continue;
      }
      this.written.push(copyOut(this.slab, slot));
      ok++;
    }
    this.clock?.callReturns(this.slab, this.clock.writeCostUs);
    return ok;
  }
}

export class FakeUdp implements UdpSocket {
  /** Datagrams not yet received. */
  readonly inbound: Datagram[] = [];
  /** Every datagram sent, in order (copies of the bytes, with the destination). */
  readonly sent: SentDatagram[] = [];
  /** When each datagram of inbound was pushed (clock time): its kernel receive timestamp. */
  private readonly arrivals: number[] = [];
  recvCalls = 0;
  sendCalls = 0;
  private readonly faults = new FaultPlan();
  private readonly maxPerCall: number;
  private readonly clock: FakeClock | undefined;

  constructor(
    private readonly slab: PacketSlab,
    options: FakeIoOptions = {},
  ) {
    this.maxPerCall = options.maxPerCall ?? Infinity;
    this.clock = options.clock;
  }

  push(...datagrams: Datagram[]): void {
    this.inbound.push(...datagrams);
    for (let i = 0; i < datagrams.length; i++) this.arrivals.push(this.clock?.now ?? 0);
  }

  /** The next recv call returns -errno. */
  failNextRecv(errno = EIO): void {
    this.faults.failNextCall(errno);
  }

  /** The next `count` datagrams sent fail with errno. */
  failNextSends(errno = ENOBUFS, count = 1): void {
    this.faults.failNextPackets(errno, count);
  }

  recv(first: number, max: number): number {
    this.recvCalls++;
    const err = this.faults.takeCallError();
    if (err !== undefined) return -err;
    const { slab } = this;
    const n = Math.min(max, this.maxPerCall, this.inbound.length);
    for (let i = 0; i < n; i++) {
      const d = this.inbound.shift()!;
      const slot = first + i;
      const arrival = this.arrivals.shift()!;
      if (this.clock) slab.stamps[slot] = arrival;
      const kept = Math.min(d.data.length, slab.slotCaps[slot]!);
      slab.bytes.set(d.data.subarray(0, kept), slab.offsetOf(slot));
      slab.lens[slot] = d.data.length; // MSG_TRUNC: the real length, even when cut
      slab.addrs[slot] = d.addr >>> 0;
      slab.ports[slot] = d.port;
      slab.segSizes[slot] = d.segSize ?? 0;
    }
    this.clock?.callReturns(slab, this.clock.readCostUs);
    return n;
  }

  send(list: Uint16Array, count: number): number {
    this.sendCalls++;
    const { slab } = this;
    let ok = 0;
    for (let i = 0; i < count; i++) {
      const slot = list[i]!;
      const err = this.faults.takePacketError();
      if (err !== undefined) {
        slab.lens[slot] = -err;
        continue;
      }
      this.sent.push({ data: copyOut(slab, slot), addr: slab.addrs[slot]!, port: slab.ports[slot]!, slot });
      ok++;
    }
    this.clock?.callReturns(slab, this.clock.writeCostUs);
    return ok;
  }
}

/**
 * The forwarder changes only bytes 8..11 of a packet it read (TTL and header checksum:
 * encap/ipv4.ts decrementTtl); ICMP errors are built in their own slots. Restoring these four
 * bytes and lens brings a slot back to the packet as prepared.
 */
const MUTABLE_FIRST = 8;
const MUTABLE_END = 12;

/**
 * Fills slots [first, first + packets.length) once and keeps a template of their mutable bytes.
 * `restore(first, n)` rewrites the first n slots' mutable bytes and lens without allocating.
 */
class SlotReplayer {
  private readonly mutable: Uint8Array;
  readonly lens: Int32Array;
  readonly count: number;

  constructor(
    private readonly slab: PacketSlab,
    private readonly first: number,
    packets: readonly Uint8Array[],
  ) {
    if (packets.length === 0 || packets.length > slab.batch)
      throw new RangeError(`replay needs 1..${slab.batch} packets`);
    this.count = packets.length;
    this.mutable = new Uint8Array(packets.length * 4);
    this.lens = new Int32Array(packets.length);
    for (let i = 0; i < packets.length; i++) {
      const p = packets[i]!;
      const kept = Math.min(p.length, slab.slotCaps[first + i]!);
      slab.bytes.set(p.subarray(0, kept), slab.offsetOf(first + i));
      for (let b = MUTABLE_FIRST; b < MUTABLE_END; b++) this.mutable[i * 4 + b - MUTABLE_FIRST] = p[b] ?? 0;
      this.lens[i] = p.length;
    }
  }

  /** Restores up to max slots (at most the prepared count); returns how many. */
  restore(first: number, max: number): number {
    if (first !== this.first) throw new RangeError(`replay prepared for slot ${this.first}, asked for ${first}`);
    const n = max < this.count ? max : this.count;
    const bytes = this.slab.bytes,
      lens = this.slab.lens,
      offsets = this.slab.slotOffsets,
      mutable = this.mutable;
    for (let i = 0; i < n; i++) {
      const off = offsets[first + i]! + MUTABLE_FIRST,
        t = i * 4;
      bytes[off] = mutable[t]!;
      bytes[off + 1] = mutable[t + 1]!;
      bytes[off + 2] = mutable[t + 2]!;
      bytes[off + 3] = mutable[t + 3]!;
      lens[first + i] = this.lens[i]!;
    }
    return n;
  }
}

/** A flannel0 that returns the same prepared batch on every read; writes are only counted. */
export class ReplayTun implements TunDevice {
  private readonly replay: SlotReplayer;
  private readonly lens: Int32Array;
  packetsWritten = 0;
  bytesWritten = 0;

  constructor(slab: PacketSlab, packets: readonly Uint8Array[]) {
    this.replay = new SlotReplayer(slab, slab.txFirst, packets);
    this.lens = slab.lens;
  }

  read(first: number, max: number): number {
    return this.replay.restore(first, max);
  }

  write(list: Uint16Array, count: number): number {
    const lens = this.lens;
    for (let i = 0; i < count; i++) this.bytesWritten += lens[list[i]!]!;
    this.packetsWritten += count;
    return count;
  }
}

/** A UDP socket that receives the same prepared batch (with senders) on every recv; sends are only counted. */
export class ReplayUdp implements UdpSocket {
  private readonly replay: SlotReplayer;
  private readonly addrs: Uint32Array;
  private readonly ports: Uint16Array;
  packetsSent = 0;
  bytesSent = 0;

  constructor(
    private readonly slab: PacketSlab,
    datagrams: readonly Datagram[],
  ) {
    this.replay = new SlotReplayer(
      slab,
      slab.rxFirst,
      datagrams.map((d) => d.data),
    );
    this.addrs = Uint32Array.from(datagrams, (d) => d.addr >>> 0);
    this.ports = Uint16Array.from(datagrams, (d) => d.port);
  }

  recv(first: number, max: number): number {
    const n = this.replay.restore(first, max);
    const addrs = this.slab.addrs,
      ports = this.slab.ports;
    for (let i = 0; i < n; i++) {
      addrs[first + i] = this.addrs[i]!;
      ports[first + i] = this.ports[i]!;
    }
    return n;
  }

  send(list: Uint16Array, count: number): number {
    const lens = this.slab.lens;
    for (let i = 0; i < count; i++) this.bytesSent += lens[list[i]!]!;
    this.packetsSent += count;
    return count;
  }
}

// ---------------------------------------------------------------------------------------------
// A realistic prepared batch for the replaying fakes (GC test, micro-benchmarks).

/** The host the mixed traffic is for: h1 of the golden topology, with PEER_COUNT peers. */
export const MIX_HOST = {
  tunAddress: 0x0af40100, // 10.244.1.0
  subnetPrefix: 0x0af40100,
  subnetLen: 24,
  port: 8285,
  mtu: 1472,
  // Every ICMP error the traffic calls for is sent: replays repeat the same sources at full speed.
  icmpRateLimit: false,
} as const;
const PEER_COUNT = 4;
/** Peer k (1..PEER_COUNT) owns 10.244.(k+1).0/24 at 192.0.2.(k+1). */
const peerSubnet = (k: number): number => (0x0af40000 | ((k + 1) << 8)) >>> 0;
const peerAddress = (k: number): number => (0xc0000200 | (k + 1)) >>> 0;

export function mixRoutes(): { prefix: number; prefixLen: number; publicIp: number }[] {
  return Array.from({ length: PEER_COUNT }, (_, i) => ({
    prefix: peerSubnet(i + 1),
    prefixLen: 24,
    publicIp: peerAddress(i + 1),
  }));
}

export interface MixedTraffic {
  tunPackets: Uint8Array[];
  udpDatagrams: Datagram[];
  /** Per replayed batch: what the forwarder must do with it. */
  perBatch: { sent: number; icmps: number; txDrops: number; written: number; rxDrops: number };
}

/**
 * `batch` packets each way, mostly forwarded: per 16 packets from flannel0, 14 go to peers and 2
 * are dropped (rotating through no-route UDP -> ICMP error, no-route ICMP, TTL 1 -> ICMP error, malformed); per
 * 16 datagrams, 14 are written and 2 dropped (rotating through stranger, spoofed source, not for
 * us, TTL 1, oversize). Sizes mix small (64) and full-MTU packets.
 */
export function mixedTraffic(batch: number): MixedTraffic {
  const ip = (src: number, dst: number, size: number, proto = 17, ttl = 64): Uint8Array => {
    const p = new Uint8Array(size);
    p[0] = 0x45;
    p[2] = size >> 8;
    p[3] = size & 0xff;
    p[6] = 0x40; // DF
    p[8] = ttl;
    p[9] = proto;
    new DataView(p.buffer).setUint32(12, src);
    new DataView(p.buffer).setUint32(16, dst);
    let sum = 0;
    for (let i = 0; i < 20; i += 2) sum += (p[i]! << 8) | p[i + 1]!;
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    const check = ~sum & 0xffff;
    p[10] = check >> 8;
    p[11] = check & 0xff;
    for (let i = 20; i < size; i++) p[i] = i & 0xff;
    return p;
  };
  const pod = (MIX_HOST.subnetPrefix | 2) >>> 0;
  const noRoute = 0x0af44d07; // 10.244.77.7
  const perBatch = { sent: 0, icmps: 0, txDrops: 0, written: 0, rxDrops: 0 };
  const tunPackets: Uint8Array[] = [];
  const udpDatagrams: Datagram[] = [];
  let txBad = 0,
    rxBad = 0;
  for (let i = 0; i < batch; i++) {
    const k = 1 + (i % PEER_COUNT);
    const size = i % 3 === 0 ? MIX_HOST.mtu : 64;
    if (i % 16 < 14) {
      tunPackets.push(ip(pod, (peerSubnet(k) | 9) >>> 0, size));
      perBatch.sent++;
    } else {
      const bad = [
        () => {
          perBatch.icmps++;
          return ip(pod, noRoute, 64);
        },
        () => ip(pod, noRoute, 84, 1),
        () => {
          perBatch.icmps++; // time exceeded
          return ip(pod, (peerSubnet(k) | 9) >>> 0, 84, 17, 1);
        },
        () => {
          const p = ip(pod, (peerSubnet(k) | 9) >>> 0, 84);
          p[0] = 0x46;
          return p.subarray(0, 22);
        },
      ][txBad++ % 4]!;
      tunPackets.push(bad());
      perBatch.txDrops++;
    }
    if (i % 16 < 14) {
      udpDatagrams.push({ data: ip((peerSubnet(k) | 9) >>> 0, pod, size), addr: peerAddress(k), port: MIX_HOST.port });
      perBatch.written++;
    } else {
      const good = ip((peerSubnet(k) | 9) >>> 0, pod, 84);
      const bad: Datagram = [
        { data: good, addr: 0xc6336407, port: MIX_HOST.port }, // 198.51.100.7: stranger
        // spoofed
        { data: ip((peerSubnet(1 + (k % PEER_COUNT)) | 9) >>> 0, pod, 84), addr: peerAddress(k), port: MIX_HOST.port },
        // not for us
        { data: ip((peerSubnet(k) | 9) >>> 0, 0x63636363, 84), addr: peerAddress(k), port: MIX_HOST.port },
        { data: ip((peerSubnet(k) | 9) >>> 0, pod, 84, 17, 1), addr: peerAddress(k), port: MIX_HOST.port }, // TTL 1
        // oversize
        { data: ip((peerSubnet(k) | 9) >>> 0, pod, MIX_HOST.mtu + 8), addr: peerAddress(k), port: MIX_HOST.port },
      ][rxBad++ % 5]!;
      udpDatagrams.push(bad);
      perBatch.rxDrops++;
    }
  }
  return { tunPackets, udpDatagrams, perBatch };
}
