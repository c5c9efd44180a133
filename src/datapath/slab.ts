// The one preallocated packet buffer and its per-slot metadata. The slab is cut into slots in
// five regions; packets are never copied between them: a batch is classified in place and sent
// or written from where it was read.
//
//   tx     `batch` slots of readSlotSize: packets (or, with TSO, super-packets) read from flannel0
//   rx     `batch` slots of receiveSlotSize: datagrams (or, with UDP GRO, coalesced runs) from UDP
//   icmp   `batch` slots of slotSize: ICMP errors built for flannel0
//   cells  SEGMENT_CELLS slots of SEGMENT_HEADER_CELL bytes: one TCP segment's own headers each,
//          sent before the segment's payload, which stays inside its super-packet (extOffs/extLens)
//   views  VIEW_SLOTS slots with no bytes of their own: the forwarder points them (slotOffsets)
//          at the datagrams inside a coalesced receive, so each is classified and written as a slot
//
// Every slot's place is slotOffsets[slot] and its capacity slotCaps[slot]; the C shim checks
// both against the slab on every use.

import { VNET_HDR_SLOT } from '../encap/tcp-coalesce.js';
import { SEGMENT_HEADER_CELL } from '../encap/tcp-segment.js';
import { checksumMemory } from '../encap/checksum-simd.js';
import type { RingLayout } from '../native/shim.js';

export interface SlabLayout {
  /** Slot size of ICMP errors, and the default for the tx and rx regions: one MTU-sized packet. */
  readonly slotSize: number;
  readonly batch: number;
  /** Size of a tx slot (default slotSize): 64 KiB to take TSO super-packets from flannel0. */
  readonly readSlotSize?: number;
  /** Size of an rx slot (default slotSize): 64 KiB to take UDP GRO runs. */
  readonly receiveSlotSize?: number;
}

/** Header cells: enough for a batch call's worth of segments (a send call takes at most 1024). */
export const SEGMENT_CELLS = 1024;
/** View slots: as many datagrams as one write call takes. */
export const VIEW_SLOTS = 1024;
/** A slot that takes any TSO super-packet or UDP GRO run (IPv4 total length <= 65535). */
export const SUPER_SLOT_SIZE = 65536;

export class PacketSlab implements RingLayout {
  readonly slotSize: number;
  readonly readSlotSize: number;
  readonly receiveSlotSize: number;
  readonly batch: number;
  readonly slotCount: number;
  readonly bytes: Uint8Array;
  /** The same memory as 32-bit words (every slot is 8-byte aligned): for checksums. */
  readonly words: Uint32Array;
  /** Where each slot's bytes start in `bytes`. Fixed, except for view slots. */
  readonly slotOffsets: Uint32Array;
  /** How many bytes a read or receive may put in each slot (0 for cells' payload parts and views). */
  readonly slotCaps: Uint32Array;
  /** Bytes in each slot (set by reads; negative = -errno after a failed send/write). */
  readonly lens: Int32Array;
  /** Peer IPv4 (uint32, host order) per slot: the sender after a receive, the target of a send. */
  readonly addrs: Uint32Array;
  /** Peer UDP port per slot, as addrs. */
  readonly ports: Uint16Array;
  /** Per slot: where the bytes to write start (a coalesced member's payload; 0 otherwise). */
  readonly offs: Uint16Array;
  /**
   * Per slot, VNET_HDR_SLOT bytes: a virtio-net header: set by each read from flannel0 (all zero
   * for a plain packet), and by the GRO planner for a coalesced group's leader.
   */
  readonly vnetHdrs: Uint8Array;
  /** Per slot: a second part sent after the slot's bytes (absolute offset, length; 0 = none). */
  readonly extOffs: Uint32Array;
  readonly extLens: Uint16Array;
  /** Per slot, after a receive: the UDP GRO segment size of a coalesced run (0 = one datagram). */
  readonly segSizes: Uint16Array;
  /**
   * Per slot: when the packet arrived, in µs of the I/O clock (CLOCK_MONOTONIC in the shim): the
   * kernel's receive timestamp for a datagram, the moment flannel0 was seen ready for a read.
   */
  readonly stamps: Float64Array;
  /** [0]: when the last read, receive, send or write call returned, in µs of the same clock. */
  readonly ioClock: Float64Array;
  /** First slot of each region. */
  readonly txFirst = 0;
  readonly rxFirst: number;
  readonly icmpFirst: number;
  readonly cellFirst: number;
  readonly viewFirst: number;

  constructor({ slotSize, batch, readSlotSize = slotSize, receiveSlotSize = slotSize }: SlabLayout) {
    for (const [what, size] of [
      ['slot', slotSize],
      ['read slot', readSlotSize],
      ['receive slot', receiveSlotSize],
    ] as const) {
      if (!Number.isInteger(size) || size < 64 || size % 8 !== 0 || size > SUPER_SLOT_SIZE)
        throw new RangeError(`bad ${what} size ${size}`);
    }
    if (!Number.isInteger(batch) || batch < 1 || batch > 1024) throw new RangeError(`bad batch size ${batch}`);
    this.slotSize = slotSize;
    this.readSlotSize = readSlotSize;
    this.receiveSlotSize = receiveSlotSize;
    this.batch = batch;
    this.rxFirst = batch;
    this.icmpFirst = 2 * batch;
    this.cellFirst = 3 * batch;
    this.viewFirst = this.cellFirst + SEGMENT_CELLS;
    this.slotCount = this.viewFirst + VIEW_SLOTS;
    this.slotOffsets = new Uint32Array(this.slotCount);
    this.slotCaps = new Uint32Array(this.slotCount);
    const regions: [first: number, count: number, size: number][] = [
      [this.txFirst, batch, readSlotSize],
      [this.rxFirst, batch, receiveSlotSize],
      [this.icmpFirst, batch, slotSize],
      [this.cellFirst, SEGMENT_CELLS, SEGMENT_HEADER_CELL],
    ];
    let at = 0;
    for (const [first, count, size] of regions) {
      for (let s = first; s < first + count; s++, at += size) {
        this.slotOffsets[s] = at;
        this.slotCaps[s] = size;
      }
    }
    // In a WebAssembly memory where possible: the SIMD checksum reads the slab in place.
    this.bytes = checksumMemory(at);
    this.words = new Uint32Array(this.bytes.buffer);
    this.lens = new Int32Array(this.slotCount);
    this.addrs = new Uint32Array(this.slotCount);
    this.ports = new Uint16Array(this.slotCount);
    this.offs = new Uint16Array(this.slotCount);
    this.vnetHdrs = new Uint8Array(this.slotCount * VNET_HDR_SLOT);
    this.extOffs = new Uint32Array(this.slotCount);
    this.extLens = new Uint16Array(this.slotCount);
    this.segSizes = new Uint16Array(this.slotCount);
    this.stamps = new Float64Array(this.slotCount);
    this.ioClock = new Float64Array(1);
  }

  offsetOf(slot: number): number {
    return this.slotOffsets[slot];
  }
}

/** Slot size for a given flannel0 MTU: room for one packet of the MTU, at least 2 KiB. */
export function slotSizeFor(mtu: number): number {
  return Math.max(2048, Math.ceil(mtu / 64) * 64);
}
