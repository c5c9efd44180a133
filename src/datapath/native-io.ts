// The real I/O edges: flannel0 and the UDP socket through the C shim, over one slab.
import { shim, type RingHandle } from '../native/shim.js';
import type { TunDevice, UdpSocket } from './io.js';
import type { PacketSlab } from './slab.js';

/** Binds a slab to the shim once; every batch call then passes only this handle. */
export function createRing(slab: PacketSlab): RingHandle {
  return shim.createRing(slab.bytes, slab);
}

/**
 * Packets (a flannel0 packet, or datagrams) that a wait in io_uring (shim.waitNext) has already
 * read into the first slots of the next read: the next read hands them over, and reads more at
 * once only when the wait saw more queued behind them (drain), so a lone packet costs no read that
 * finds nothing.
 */
export class Held {
  /** Packets held (0: none). */
  private count = 0;
  /** The wait saw more queued behind them: the read goes on into the slots after them. */
  drain = false;

  get held(): boolean {
    return this.count > 0;
  }

  hold(count: number, drain: boolean): void {
    this.count = count;
    this.drain = drain;
  }

  /** Hands over the packets held at lens[first..]: the first's -errno if it failed, else how many (at most max). */
  take(lens: Int32Array, first: number, max: number): number {
    const n = Math.min(this.count, max);
    this.count = 0;
    const len = lens[first]!;
    return len < 0 ? len : n;
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
      if (held < 0 || held >= max || !this.waited.drain) return held;
      const more = shim.tunRead(this.ring, this.fd, first + held, max - held);
      return more > 0 ? held + more : held;
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
      if (held < 0 || held >= max || !this.waited.drain) return held;
      const more = shim.udpRecv(this.ring, this.fd, first + held, max - held);
      return more > 0 ? held + more : held;
    }
    return shim.udpRecv(this.ring, this.fd, first, max);
  }
  send(list: Uint16Array, count: number): number {
    return shim.udpSend(this.ring, this.fd, list, count);
  }
}
