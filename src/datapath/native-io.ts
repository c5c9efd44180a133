// The real I/O edges: flannel0 and the UDP socket through the C shim, over one slab.
import { shim, type RingHandle } from '../native/shim.js';
import type { TunDevice, UdpSocket } from './io.js';
import type { PacketSlab } from './slab.js';

/** Binds a slab to the shim once; every batch call then passes only this handle. */
export function createRing(slab: PacketSlab): RingHandle {
  return shim.createRing(slab.bytes, slab);
}

/**
 * A packet (or datagram) that a wait in io_uring (shim.waitNext) has already read into the first
 * slot of the next read: the next read hands it over, and reads more at once only when the wait
 * saw more queued behind it (drain), so a lone packet costs no read that finds nothing.
 */
export class Held {
  held = false;
  drain = false;

  hold(drain: boolean): void {
    this.held = true;
    this.drain = drain;
  }

  /**
   * Hands over the held packet at lens[first]: its -errno, or 1 when nothing more is to be read
   * now, or 0 when the caller reads more into first + 1.. and adds 1.
   */
  take(lens: Int32Array, first: number, max: number): number {
    this.held = false;
    const len = lens[first];
    if (len < 0) return len;
    return this.drain && max > 1 ? 0 : 1;
  }
}

export class NativeTun implements TunDevice {
  readonly waited = new Held();
  constructor(
    private readonly ring: RingHandle,
    readonly fd: number,
    private readonly lens: Int32Array,
  ) {}
  read(first: number, max: number): number {
    if (this.waited.held) {
      const held = this.waited.take(this.lens, first, max);
      if (held !== 0) return held;
      const more = shim.tunRead(this.ring, this.fd, first + 1, max - 1);
      return more > 0 ? 1 + more : 1;
    }
    return shim.tunRead(this.ring, this.fd, first, max);
  }
  write(list: Uint16Array, count: number, groups: Uint16Array | null = null): number {
    return shim.tunWrite(this.ring, this.fd, list, count, groups);
  }
}

export class NativeUdp implements UdpSocket {
  readonly waited = new Held();
  constructor(
    private readonly ring: RingHandle,
    readonly fd: number,
    private readonly lens: Int32Array,
  ) {}
  recv(first: number, max: number): number {
    if (this.waited.held) {
      const held = this.waited.take(this.lens, first, max);
      if (held !== 0) return held;
      const more = shim.udpRecv(this.ring, this.fd, first + 1, max - 1);
      return more > 0 ? 1 + more : 1;
    }
    return shim.udpRecv(this.ring, this.fd, first, max);
  }
  send(list: Uint16Array, count: number): number {
    return shim.udpSend(this.ring, this.fd, list, count);
  }
}
