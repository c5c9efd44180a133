// The real I/O edges: flannel0 and the UDP socket through the C shim, over one slab.
import { shim, type RingHandle } from '../native/shim.js';
import type { TunDevice, UdpSocket } from './io.js';
import type { PacketSlab } from './slab.js';

/** Binds a slab to the shim once; every batch call then passes only this handle. */
export function createRing(slab: PacketSlab): RingHandle {
  return shim.createRing(slab.bytes, slab);
}

export class NativeTun implements TunDevice {
  constructor(
    private readonly ring: RingHandle,
    readonly fd: number,
  ) {}
  read(first: number, max: number): number {
    return shim.tunRead(this.ring, this.fd, first, max);
  }
  write(list: Uint16Array, count: number, groups: Uint16Array | null = null): number {
    return shim.tunWrite(this.ring, this.fd, list, count, groups);
  }
}

export class NativeUdp implements UdpSocket {
  constructor(
    private readonly ring: RingHandle,
    readonly fd: number,
  ) {}
  recv(first: number, max: number): number {
    return shim.udpRecv(this.ring, this.fd, first, max);
  }
  send(list: Uint16Array, count: number): number {
    return shim.udpSend(this.ring, this.fd, list, count);
  }
}
