// The datapath's two I/O edges, batch-first and slab-based: implementations move packets
// between the kernel (or a test fake) and slots of one PacketSlab. Counts or -errno, no throws.

export interface TunDevice {
  /**
   * Reads up to max packets into slots first, first+1, ... (each at most its slot's cap); sets
   * lens and each slot's virtio-net header in vnetHdrs (all zero for a plain packet; a TSO
   * super-packet or a partial checksum otherwise). Count or -errno.
   */
  read(first: number, max: number): number;
  /**
   * Writes the slots list[0..count); returns packets written; failed slots get lens < 0. With
   * groups (a device that accepts super-packets): groups[i] = k >= 2 writes list[i..i+k) as one
   * coalesced super-packet (leader patched and vnet header set by planCoalescing), 1 = alone.
   */
  write(list: Uint16Array, count: number, groups?: Uint16Array | null): number;
}

export interface UdpSocket {
  /**
   * Receives up to max datagrams into slots first..; sets lens, addrs, ports, and segSizes (a UDP
   * GRO run of datagrams of that size back to back; 0 for one datagram). Count or -errno.
   */
  recv(first: number, max: number): number;
  /**
   * Sends the slots list[0..count) to addrs/ports, each datagram the slot's lens bytes followed by
   * extLens bytes at extOffs (a TCP segment's payload; 0 for none); returns sent; failed slots get lens < 0.
   */
  send(list: Uint16Array, count: number): number;
}
