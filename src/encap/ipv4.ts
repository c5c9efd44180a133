// flannel's per-packet rules on raw IPv4 headers inside the slab. Hot path: every function
// works in place on (bytes, offset), allocates nothing and touches only the header.

import { onesComplementSum } from './checksum.js';
import { IPPROTO_ICMP, IPPROTO_UDP, UDP_HEADER_LEN, UDP_LENGTH_OFFSET } from './wire.js';

/** IPv4 + UDP header bytes that the outer datagram adds: flannel's MTU is the external MTU - 28. */
export const ENCAP_OVERHEAD = 28;

/**
 * A packet is accepted only if it is IPv4, its IHL is at least 5 and fits, and its total
 * length equals the bytes read (TUN reads and datagrams carry exactly one packet).
 */
export function isWellFormedIPv4(b: Uint8Array, off: number, len: number): boolean {
  if (len < 20) return false;
  const vihl = b[off];
  if (vihl >> 4 !== 4) return false;
  const ihl = (vihl & 0x0f) << 2;
  if (ihl < 20 || ihl > len) return false;
  return ((b[off + 2] << 8) | b[off + 3]) === len;
}

/** MF set or a fragment offset: a fragment (DF and the reserved bit do not make one). */
export function isFragment(b: Uint8Array, off: number): boolean {
  return (b[off + 6] & 0x3f) !== 0 || b[off + 7] !== 0;
}

/**
 * Where the UDP payload of the IPv4 packet b[off, off+len) starts (ihl*4 + 8), for a whole
 * UDP datagram Linux's UDP GSO and GRO would handle: not a fragment, at least one payload byte,
 * and a UDP length field of exactly len - ihl*4 (what udp_send_skb and udp_gro_complete write
 * for a super-datagram too); else 0. Reads the IP header and the UDP length field: the caller has
 * checked that the IP header lies within len (isWellFormedIPv4, or a 20-byte header and len > 28).
 */
export function udpPayloadOffset(b: Uint8Array, off: number, len: number): number {
  const ihl = (b[off] & 15) << 2;
  if (b[off + 9] !== IPPROTO_UDP || isFragment(b, off)) return 0;
  const end = ihl + UDP_HEADER_LEN;
  if (end >= len) return 0;
  const u = off + ihl;
  return ((b[u + UDP_LENGTH_OFFSET] << 8) | b[u + UDP_LENGTH_OFFSET + 1]) === len - ihl ? end : 0;
}

export function sourceOf(b: Uint8Array, off: number): number {
  return ((b[off + 12] << 24) | (b[off + 13] << 16) | (b[off + 14] << 8) | b[off + 15]) >>> 0;
}

export function destinationOf(b: Uint8Array, off: number): number {
  return ((b[off + 16] << 24) | (b[off + 17] << 16) | (b[off + 18] << 8) | b[off + 19]) >>> 0;
}

/**
 * TTL - 1 with the header checksum patched incrementally (RFC 1624 eqn. 3, as Linux's
 * ip_decrease_ttl and flannel's proxy: the TTL/protocol word drops by 0x0100, so
 * HC' = ~(~HC + 0xFEFF)). Returns false, leaving the packet untouched, when the TTL would
 * reach 0. flannel forwards an incoming TTL 0 as 255 (a wrap-around bug); we drop it.
 */
export function decrementTtl(b: Uint8Array, off: number): boolean {
  const ttl = b[off + 8];
  if (ttl <= 1) return false;
  b[off + 8] = ttl - 1;
  let sum = (~((b[off + 10] << 8) | b[off + 11]) & 0xffff) + 0xfeff;
  sum = (sum & 0xffff) + (sum >>> 16);
  const check = ~sum & 0xffff;
  b[off + 10] = check >> 8;
  b[off + 11] = check & 0xff;
  return true;
}

/** Internet checksum (RFC 1071) of b[off, off+len). */
export function internetChecksum(b: Uint8Array, off: number, len: number): number {
  return ~onesComplementSum(b, null, off, len) & 0xffff;
}

/** ICMP type 3 (destination unreachable), code 0 (net unreachable): no route for the destination. */
export const ICMP_NET_UNREACHABLE = 3;
/** ICMP type 11 (time exceeded), code 0 (TTL exceeded in transit). */
export const ICMP_TIME_EXCEEDED = 11;

/**
 * Whether flannel's rules allow an ICMP error about the well-formed packet at off: not when it is
 * ICMP itself (any ICMP, queries included, as flannel's proxy), a non-first fragment, or has a
 * maximal (60-byte) header.
 */
export function mayAnswerWithIcmpError(src: Uint8Array, srcOff: number): boolean {
  if (src[srcOff + 9] === IPPROTO_ICMP) return false;
  if ((((src[srcOff + 6] << 8) | src[srcOff + 7]) & 0x1fff) !== 0) return false;
  return (src[srcOff] & 0x0f) << 2 < 60;
}

/**
 * Writes into dst[dstOff..] the ICMP destination-unreachable (type 3, code 0: net
 * unreachable) that flannel's proxy sends back into flannel0 for a packet with no route:
 * source = the flannel0 address, TTL 8, id 0, no DF, quoting the offender's IP header and the
 * next 8 bytes. Returns its length, or 0 when flannel sends none (see mayAnswerWithIcmpError).
 * Where the offender is shorter than header + 8 bytes, the missing bytes are zeros (flannel
 * quotes stale buffer bytes there). The offender must be well-formed (isWellFormedIPv4).
 */
export function writeNetUnreachable(
  src: Uint8Array,
  srcOff: number,
  srcLen: number,
  dst: Uint8Array,
  dstOff: number,
  tunAddress: number,
): number {
  return writeIcmpError(ICMP_NET_UNREACHABLE, src, srcOff, srcLen, dst, dstOff, tunAddress);
}

/**
 * The same packet as writeNetUnreachable with ICMP type `type` (code 0): ICMP_NET_UNREACHABLE, or
 * ICMP_TIME_EXCEEDED for a packet whose TTL ran out here (flannel sends none; flannel-ts does, so
 * that traceroute names the hop). Returns its length, or 0 when mayAnswerWithIcmpError says no.
 */
export function writeIcmpError(
  type: number,
  src: Uint8Array,
  srcOff: number,
  srcLen: number,
  dst: Uint8Array,
  dstOff: number,
  tunAddress: number,
): number {
  if (!mayAnswerWithIcmpError(src, srcOff)) return 0;
  const ihl = (src[srcOff] & 0x0f) << 2;
  const quoted = ihl + 8;
  const total = 20 + 8 + quoted;
  const o = dstOff;
  // IPv4 header
  dst[o] = 0x45;
  dst[o + 1] = 0;
  dst[o + 2] = total >> 8;
  dst[o + 3] = total & 0xff;
  dst[o + 4] = 0;
  dst[o + 5] = 0;
  dst[o + 6] = 0;
  dst[o + 7] = 0;
  dst[o + 8] = 8;
  dst[o + 9] = IPPROTO_ICMP;
  dst[o + 10] = 0;
  dst[o + 11] = 0;
  dst[o + 12] = tunAddress >>> 24;
  dst[o + 13] = (tunAddress >>> 16) & 0xff;
  dst[o + 14] = (tunAddress >>> 8) & 0xff;
  dst[o + 15] = tunAddress & 0xff;
  for (let i = 0; i < 4; i++) dst[o + 16 + i] = src[srcOff + 12 + i];
  const ipCheck = internetChecksum(dst, o, 20);
  dst[o + 10] = ipCheck >> 8;
  dst[o + 11] = ipCheck & 0xff;
  // ICMP header: type, code 0, checksum, 4 unused bytes
  const io = o + 20;
  dst[io] = type;
  dst[io + 1] = 0;
  dst[io + 2] = 0;
  dst[io + 3] = 0;
  dst[io + 4] = 0;
  dst[io + 5] = 0;
  dst[io + 6] = 0;
  dst[io + 7] = 0;
  const have = srcLen < quoted ? srcLen : quoted;
  for (let i = 0; i < have; i++) dst[io + 8 + i] = src[srcOff + i];
  for (let i = have; i < quoted; i++) dst[io + 8 + i] = 0;
  const icmpCheck = internetChecksum(dst, io, 8 + quoted);
  dst[io + 2] = icmpCheck >> 8;
  dst[io + 3] = icmpCheck & 0xff;
  return total;
}
