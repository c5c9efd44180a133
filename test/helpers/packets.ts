/**
 * Builders of raw IPv4 packets for tests: well-formed ones with a correct header checksum, and
 * the malformed variants a datapath must refuse.
 */

export function ipv4ToBytes(address: string): number[] {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`not an IPv4 address: ${address}`);
  }
  return parts;
}

export function bytesToIpv4(b: Uint8Array, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** Internet checksum (RFC 1071) over b[off, off+len). */
export function internetChecksum(b: Uint8Array, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i + 1 < len; i += 2) sum += (b[off + i]! << 8) | b[off + i + 1]!;
  if (len % 2 === 1) sum += b[off + len - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface Ipv4Spec {
  src: string;
  dst: string;
  protocol?: number;
  ttl?: number;
  id?: number;
  payload?: Uint8Array;
}

/** A well-formed IPv4 packet (IHL 5, DF clear) with a valid header checksum. */
export function buildIpv4(spec: Ipv4Spec): Buffer {
  const payload = spec.payload ?? new Uint8Array(0);
  const packet = Buffer.alloc(20 + payload.length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet.writeUInt16BE(spec.id ?? 0x1234, 4);
  packet[8] = spec.ttl ?? 64;
  packet[9] = spec.protocol ?? 17;
  packet.set(ipv4ToBytes(spec.src), 12);
  packet.set(ipv4ToBytes(spec.dst), 16);
  packet.writeUInt16BE(internetChecksum(packet, 0, 20), 10);
  packet.set(payload, 20);
  return packet;
}

/** A UDP datagram (checksum 0 = none, legal in IPv4) inside a well-formed IPv4 packet. */
export function buildIpv4Udp(
  spec: Omit<Ipv4Spec, 'protocol' | 'payload'> & { srcPort: number; dstPort: number; data: Uint8Array },
): Buffer {
  const udp = Buffer.alloc(8 + spec.data.length);
  udp.writeUInt16BE(spec.srcPort, 0);
  udp.writeUInt16BE(spec.dstPort, 2);
  udp.writeUInt16BE(udp.length, 4);
  udp.set(spec.data, 8);
  return buildIpv4({ ...spec, protocol: 17, payload: udp });
}

/** A minimal IPv6 header + 8 bytes of payload: version 6, which an IPv4 datapath must refuse. */
export function buildIpv6Like(): Buffer {
  const packet = Buffer.alloc(48);
  packet[0] = 0x60;
  packet.writeUInt16BE(8, 4); // payload length
  packet[6] = 17; // next header UDP
  packet[7] = 64; // hop limit
  packet[23] = 1; // ::1-ish addresses, content irrelevant
  packet[39] = 2;
  return packet;
}
