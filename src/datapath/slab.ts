// The one preallocated packet buffer and its per-slot metadata. The slab is cut into fixed
// slots in three regions of `batch` slots each: packets read from flannel0, datagrams received
// from UDP, and ICMP errors built for flannel0. Packets are never copied between regions: a
// batch is classified in place and sent or written from the slot it was read into.

import { VNET_HDR_SLOT } from '../encap/tcp-coalesce.js';

export interface SlabLayout {
  readonly slotSize: number;
  readonly batch: number;
}

export class PacketSlab {
  readonly slotSize: number;
  readonly batch: number;
  readonly slotCount: number;
  readonly bytes: Uint8Array;
  /** The same memory as 32-bit words (slots are 8-byte aligned): for checksums. */
  readonly words: Uint32Array;
  /** Bytes in each slot (set by reads; negative = -errno after a failed send/write). */
  readonly lens: Int32Array;
  /** Peer IPv4 (uint32, host order) per slot: the sender after a receive, the target of a send. */
  readonly addrs: Uint32Array;
  /** Peer UDP port per slot, as addrs. */
  readonly ports: Uint16Array;
  /** Per slot: where the bytes to write start (a coalesced member's payload; 0 otherwise). */
  readonly offs: Uint16Array;
  /** Per slot, VNET_HDR_SLOT bytes: the virtio-net header of a coalesced group's leader. */
  readonly vnetHdrs: Uint8Array;
  /** First slot of each region. */
  readonly txFirst = 0;
  readonly rxFirst: number;
  readonly icmpFirst: number;

  constructor({ slotSize, batch }: SlabLayout) {
    if (!Number.isInteger(slotSize) || slotSize < 64 || slotSize % 8 !== 0) throw new RangeError(`bad slot size ${slotSize}`);
    if (!Number.isInteger(batch) || batch < 1 || batch > 1024) throw new RangeError(`bad batch size ${batch}`);
    this.slotSize = slotSize;
    this.batch = batch;
    this.slotCount = 3 * batch;
    this.rxFirst = batch;
    this.icmpFirst = 2 * batch;
    this.bytes = new Uint8Array(this.slotCount * slotSize);
    this.words = new Uint32Array(this.bytes.buffer);
    this.lens = new Int32Array(this.slotCount);
    this.addrs = new Uint32Array(this.slotCount);
    this.ports = new Uint16Array(this.slotCount);
    this.offs = new Uint16Array(this.slotCount);
    this.vnetHdrs = new Uint8Array(this.slotCount * VNET_HDR_SLOT);
  }

  offsetOf(slot: number): number {
    return slot * this.slotSize;
  }
}

/** Slot size for a given flannel0 MTU: room for one packet of the MTU, at least 2 KiB. */
export function slotSizeFor(mtu: number): number {
  return Math.max(2048, Math.ceil(mtu / 64) * 64);
}
