// Offloads for reads from flannel0 (opened with IFF_VNET_HDR and TUN_F_CSUM | TUN_F_TSO4): what
// the kernel left for us to do before a packet can go on the wire inside a UDP datagram.
//  - completeChecksum: a CHECKSUM_PARTIAL packet (virtio NEEDS_CSUM, no GSO) gets its L4 checksum;
//  - segmentTcpSuperPacket: a GSO_TCPV4 super-packet is cut into TCP segments that fit the MTU the
//    way Linux's TCP GSO (tcp_gso_segment / inet_gso_segment) does, in chunks of as many segments as
//    the caller has cells for (tcpSegmentCount tells how many there are in all). No payload is
//    copied: each segment is a header "cell" (its own IP+TCP header, built in a small slab slot)
//    followed by its payload where it lies inside the super-packet; the I/O side sends the two as
//    one datagram's iovecs.
// Hot path: byte arithmetic on the slab, no allocation, no closures.

import {
  alignedWordIndex,
  foldOnesComplement,
  onesComplementSum,
  pseudoHeaderSum,
  STRIDED_SUMS_CAPACITY,
  stridedSums,
} from './checksum.js';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_CHECK_OFFSET,
  TCP_FLAG_CWR,
  TCP_FLAG_FIN,
  TCP_FLAG_PSH,
  UDP_CHECK_OFFSET,
} from './wire.js';
import { ipHeaderFixedSum, writeSegmentIpHeader } from './segment-header.js';
import { isFragment } from './ipv4.js';

/** Placeholder until the first stridedSums call of segmentTcpSuperPacket. */
const EMPTY_SUMS: Uint32Array = new Uint32Array(0);

/** Size of a header cell (a slot holding one segment's IP+TCP headers; the largest is 60+60). */
export const SEGMENT_HEADER_CELL = 128;

/**
 * Completes a CHECKSUM_PARTIAL packet in place (virtio NEEDS_CSUM without GSO): the field at
 * off+csumStart+csumOffset holds the pseudo-header sum; stores ~onesComplementSum(bytes[off+csumStart, off+len)).
 * For UDP (IP protocol 17 and csumOffset 6) a result of 0 is stored as 0xffff (RFC 768: 0 means "no checksum").
 * Returns false (packet untouched) if csumStart/csumOffset do not fit: csumStart < the IP header
 * length, or csumStart + csumOffset + 2 > len. words: as for onesComplementSum (or null).
 */
export function completeChecksum(
  bytes: Uint8Array,
  words: Uint32Array | null,
  off: number,
  len: number,
  csumStart: number,
  csumOffset: number,
): boolean {
  const ihl = (bytes[off] & 15) << 2;
  if (csumStart < ihl || csumOffset < 0 || csumStart + csumOffset + 2 > len) return false;
  const field = off + csumStart + csumOffset;
  let check = ~onesComplementSum(bytes, words, off + csumStart, len - csumStart) & 0xffff;
  if (check === 0 && csumOffset === UDP_CHECK_OFFSET && bytes[off + 9] === IPPROTO_UDP) check = 0xffff;
  bytes[field] = check >> 8;
  bytes[field + 1] = check & 0xff;
  return true;
}

/**
 * Header length hdr = ihl*4 + TCP doff*4 of a super-packet bytes[off, off+len) that can be segmented,
 * else 0: not TCP, a fragment (MF or offset != 0), len < ihl*4 + 20, doff < 5, hdr > len, or
 * hdr > SEGMENT_HEADER_CELL. Computed from the packet: the virtio hdr_len is not trustworthy
 * (TUN reports the linear length there).
 */
function segmentableHeaderLength(bytes: Uint8Array, off: number, len: number): number {
  const ihl = (bytes[off] & 15) << 2;
  if (bytes[off + 9] !== IPPROTO_TCP) return 0;
  if (isFragment(bytes, off)) return 0; // DF and the reserved bit are copied as they are
  if (ihl + 20 > len) return 0;
  const doff = bytes[off + ihl + 12] >> 4;
  if (doff < 5) return 0;
  const hdr = ihl + (doff << 2);
  return hdr > len || hdr > SEGMENT_HEADER_CELL ? 0 : hdr;
}

/**
 * Payload bytes per segment ("seg" below): min(gsoSize, maxSegmentBytes - hdr), so every segment's
 * IP total length is at most maxSegmentBytes (cutting below gso_size is legal TCP: the segments are
 * smaller, their sequence numbers still contiguous). 0 when that is below 1 (or NaN).
 */
function segmentPayloadSize(hdr: number, gsoSize: number, maxSegmentBytes: number): number {
  const seg = Math.min(gsoSize, maxSegmentBytes - hdr);
  return seg >= 1 ? seg : 0;
}

/**
 * How many segments segmentTcpSuperPacket cuts the super-packet bytes[off, off+len) into, in all:
 * ceil(payload / seg) with payload = len - hdr and seg = min(gsoSize, maxSegmentBytes - hdr) (hdr
 * the IP+TCP header length from the packet). 0 when it cannot be segmented: not TCP, a fragment
 * (MF or offset != 0), doff < 5 or header beyond len, hdr > SEGMENT_HEADER_CELL, no payload, or
 * seg < 1 (gsoSize < 1, or maxSegmentBytes leaves no room for a payload byte after the header;
 * with maxSegmentBytes = 65535 only the packet and gsoSize decide). Reads the headers only; no allocation.
 */
export function tcpSegmentCount(
  bytes: Uint8Array,
  off: number,
  len: number,
  gsoSize: number,
  maxSegmentBytes: number,
): number {
  const hdr = segmentableHeaderLength(bytes, off, len);
  if (hdr === 0) return 0;
  const seg = segmentPayloadSize(hdr, gsoSize, maxSegmentBytes);
  const payload = len - hdr;
  return seg === 0 || payload <= 0 ? 0 : Math.ceil(payload / seg);
}

/**
 * Cuts segments of the GSO_TCPV4 super-packet bytes[off, off+len) (a well-formed IPv4 packet:
 * version 4, ihl >= 5, total length == len, already checked by the caller, and its TTL already
 * decremented by the caller), the way Linux's TCP GSO does, with seg payload bytes each (the last
 * the rest): seg = min(gsoSize, maxSegmentBytes - hdr), hdr = ihl*4 + TCP doff*4 COMPUTED FROM THE
 * PACKET (the virtio hdr_len is not trustworthy: TUN reports the linear length there).
 * maxSegmentBytes is the most bytes (IP total length) a segment may have: the MTU of the path the
 * segments take (65535 for no limit beyond gsoSize).
 * The whole packet makes total = tcpSegmentCount(bytes, off, len, gsoSize, maxSegmentBytes)
 * segments, numbered 0 .. total-1. One call cuts the chunk k = firstSegment .. firstSegment+count-1,
 * count = min(maxCells, total - firstSegment), segment k into header cell firstCell + (k - firstSegment);
 * chunks cut by successive calls (each next firstSegment = the previous one + its count) are
 * exactly the segments one call for the whole packet makes. Segment k:
 *  - a copy of the hdr header bytes at byte slotOffsets[cell]; IP total length = hdr + payload_k;
 *    IP id = id0 + k (mod 2^16) (as Linux without FIXEDID); IP header checksum recomputed; TCP seq =
 *    seq0 + k*seg (mod 2^32); FIN and PSH only on segment total-1 (if the super-packet had them);
 *    CWR only on segment 0; the TCP checksum computed in full: pseudo-header (src, dst, 6,
 *    hdr - ihl*4 + payload_k) + TCP header with check 0 + the payload bytes, which stay where they
 *    are in the super-packet (the partial value in the super-packet's check field is not used);
 *  - lens[cell] = hdr; extOffs[cell] = off + hdr + k*seg (absolute byte offset of the payload in
 *    bytes); extLens[cell] = payload_k.
 * Returns count (>= 1), or 0 and touches nothing when total is 0 (see tcpSegmentCount), firstSegment
 * is not an integer in [0, total), or maxCells < 1. maxCells is an integer.
 * The super-packet itself is never written (header included). Cells firstCell .. firstCell+count-1
 * must exist in slotOffsets, lens, extOffs and extLens, and each cell's SEGMENT_HEADER_CELL bytes
 * must not overlap the super-packet or another cell (not checked).
 * No allocation; words null (byte path) or a words view as for onesComplementSum (then headers are also
 * copied a word at a time into cells 4-aligned in the buffer like the super-packet, and over a
 * checksumMemory the payloads of the chunk are summed by one WebAssembly call per
 * STRIDED_SUMS_CAPACITY segments; same bytes either way).
 */
export function segmentTcpSuperPacket(
  bytes: Uint8Array,
  words: Uint32Array | null,
  off: number,
  len: number,
  gsoSize: number,
  maxSegmentBytes: number,
  firstSegment: number,
  slotOffsets: Uint32Array,
  firstCell: number,
  maxCells: number,
  lens: Int32Array,
  extOffs: Uint32Array,
  extLens: Uint16Array,
): number {
  const hdr = segmentableHeaderLength(bytes, off, len);
  if (hdr === 0) return 0;
  const seg = segmentPayloadSize(hdr, gsoSize, maxSegmentBytes);
  const payload = len - hdr;
  if (seg === 0 || payload <= 0) return 0;
  const segments = Math.ceil(payload / seg);
  if (!(firstSegment >= 0 && firstSegment < segments) || (firstSegment | 0) !== firstSegment || !(maxCells >= 1))
    return 0;
  const end = Math.min(segments, firstSegment + maxCells);

  const ihl = (bytes[off] & 15) << 2;
  const t = off + ihl;
  const thl = hdr - ihl;
  const id0 = (bytes[off + 4] << 8) | bytes[off + 5];
  const seq0 = ((bytes[t + 4] << 24) | (bytes[t + 5] << 16) | (bytes[t + 6] << 8) | bytes[t + 7]) >>> 0;
  const flags0 = bytes[t + 13];
  // The TCP header's sum is the same for every segment but for seq, flags and the check field:
  // sum the fixed words once (check counted as 0), then add each segment's seq and flags.
  // Ports (0..3), ack (8..11), window (14..15), urgent pointer and options (18..thl).
  const fixedTcpSum =
    onesComplementSum(bytes, null, t, 4) +
    onesComplementSum(bytes, null, t + 8, 4) +
    ((bytes[t + 14] << 8) | bytes[t + 15]) +
    onesComplementSum(bytes, null, t + 18, thl - 18) +
    (bytes[t + 12] << 8);
  // The pseudo-header without the length, which varies.
  const pseudo = pseudoHeaderSum(bytes, off, IPPROTO_TCP, 0);
  // The IP header's sum but for what each segment sets (segment-header.ts).
  const ipFixedSum = ipHeaderFixedSum(bytes, off, ihl);
  // The header is copied a 32-bit word at a time into every cell that is 4-aligned like the
  // super-packet (slab slots and cells are 8-aligned); hdr is a multiple of 4.
  const headerWord = alignedWordIndex(bytes, words, off, hdr);
  const lastIndex = segments - 1;
  // The payload sums, up to STRIDED_SUMS_CAPACITY segments at a time in one stridedSums call
  // (one WebAssembly call over a checksumMemory): payloadSums[k - sumsFirst] for k below sumsEnd.
  let payloadSums = EMPTY_SUMS;
  let sumsFirst = firstSegment;
  let sumsEnd = firstSegment;

  for (let k = firstSegment; k < end; k++) {
    if (k === sumsEnd) {
      const batch = Math.min(STRIDED_SUMS_CAPACITY, end - k);
      const batchLast = k + batch - 1;
      const lastLen = batchLast === lastIndex ? payload - batchLast * seg : seg;
      payloadSums = stridedSums(bytes, words, off + hdr + k * seg, seg, batch, seg, lastLen);
      sumsFirst = k;
      sumsEnd = k + batch;
    }
    const cell = firstCell + (k - firstSegment);
    const c = slotOffsets[cell];
    const payloadOff = off + hdr + k * seg;
    const n = k === lastIndex ? payload - k * seg : seg;
    // The headers, with this segment's IP total length, id and header checksum.
    writeSegmentIpHeader(bytes, words, off, hdr, headerWord, c, ipFixedSum, hdr + n, (id0 + k) & 0xffff);

    // TCP: seq, flags, checksum.
    const ct = c + ihl;
    const seq = (seq0 + k * seg) >>> 0;
    bytes[ct + 4] = seq >>> 24;
    bytes[ct + 5] = (seq >>> 16) & 0xff;
    bytes[ct + 6] = (seq >>> 8) & 0xff;
    bytes[ct + 7] = seq & 0xff;
    let flags = flags0;
    if (k !== lastIndex) flags &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH);
    if (k !== 0) flags &= ~TCP_FLAG_CWR;
    bytes[ct + 13] = flags;
    const headerSum = fixedTcpSum + (seq >>> 16) + (seq & 0xffff) + flags;
    const sum = foldOnesComplement(pseudo + thl + n + headerSum + payloadSums[k - sumsFirst]);
    const check = ~sum & 0xffff;
    bytes[ct + TCP_CHECK_OFFSET] = check >> 8;
    bytes[ct + TCP_CHECK_OFFSET + 1] = check & 0xff;

    lens[cell] = hdr;
    extOffs[cell] = payloadOff;
    extLens[cell] = n;
  }
  return end - firstSegment;
}
