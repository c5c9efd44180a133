// USO for reads from flannel0 (opened with TUN_F_USO4): a GSO_UDP_L4 super-packet (one sendmsg of
// a pod's UDP_SEGMENT socket, virtio gso_type VIRTIO_NET_HDR_GSO_UDP_L4) is cut into the UDP
// datagrams the application meant, exactly as Linux's UDP GSO (__udp_gso_segment in
// net/ipv4/udp_offload.c, then inet_gso_segment in net/ipv4/af_inet.c) would have cut it, so the
// underlay still carries one inner IPv4 UDP packet per flannel datagram. Same layout and chunking
// contract as segmentTcpSuperPacket (tcp-segment.ts): each datagram is a header "cell" (its own
// IP+UDP header, built in a small slab slot) followed by its payload where it lies inside the
// super-packet; the I/O side sends the two as one datagram's iovecs. No payload is copied.
//
// Unlike TCP, datagram boundaries belong to the application and are never re-cut to fit the MTU:
// a super-packet whose datagrams do not fit maxSegmentBytes is refused (count 0), for the caller
// to answer as for any oversized packet.
// Hot path: byte arithmetic on the slab, no allocation, no closures.

import {
  alignedWordIndex,
  foldOnesComplement,
  pseudoHeaderSum,
  STRIDED_SUMS_CAPACITY,
  stridedSums,
} from './checksum.js';
import { SEGMENT_HEADER_CELL } from './tcp-segment.js';
import { udpPayloadOffset } from './ipv4.js';
import { IPPROTO_UDP, UDP_CHECK_OFFSET, UDP_HEADER_LEN, UDP_LENGTH_OFFSET } from './wire.js';
import { ipHeaderFixedSum, writeSegmentIpHeader } from './segment-header.js';

/** Placeholder until the first stridedSums call of segmentUdpSuperPacket. */
const EMPTY_SUMS: Uint32Array = new Uint32Array(0);

/**
 * Header length hdr = ihl*4 + 8 of a UDP super-packet bytes[off, off+len) that can be segmented
 * (udpPayloadOffset: unfragmented UDP, a payload byte, the UDP length of the whole), else 0; also
 * 0 when hdr > SEGMENT_HEADER_CELL. Computed from the packet, not from the virtio hdr_len (TUN
 * reports the linear length there).
 */
function segmentableHeaderLength(bytes: Uint8Array, off: number, len: number): number {
  const hdr = udpPayloadOffset(bytes, off, len);
  return hdr <= SEGMENT_HEADER_CELL ? hdr : 0;
}

/**
 * How many datagrams segmentUdpSuperPacket cuts the super-packet bytes[off, off+len) into, in all:
 * ceil(payload / gsoSize), payload = len - hdr (hdr = ihl*4 + 8, from the packet). 0 when it
 * cannot be segmented: not UDP, a fragment (MF or offset != 0), no payload byte, the UDP length
 * field not len - ihl*4, hdr > SEGMENT_HEADER_CELL, gsoSize < 1 (or NaN), or the largest datagram,
 * hdr + min(gsoSize, payload) bytes, beyond maxSegmentBytes (datagrams are never re-cut: the caller
 * tells "too big for the path" from "malformed" by asking again with maxSegmentBytes 65535).
 * A payload of at most gsoSize is ONE datagram, the super-packet itself with its checksum completed:
 * Linux's __udp_gso_segment refuses such a skb (`gso_skb->len <= sizeof(*uh) + mss` -> -EINVAL),
 * but no Linux sender builds one (udp_send_skb sets gso_size only when datalen > gso_size;
 * virtio_net_hdr_to_skb keeps "too small packets" non-GSO; GRO un-GSOs a count of 1), and what it
 * holds is a well-formed datagram, which is what such a sender meant. Reads the headers only; no
 * allocation. gsoSize is an integer.
 */
export function udpSegmentCount(
  bytes: Uint8Array,
  off: number,
  len: number,
  gsoSize: number,
  maxSegmentBytes: number,
): number {
  const hdr = segmentableHeaderLength(bytes, off, len);
  if (hdr === 0 || !(gsoSize >= 1)) return 0;
  const payload = len - hdr;
  if (!(hdr + Math.min(gsoSize, payload) <= maxSegmentBytes)) return 0; // also a NaN maxSegmentBytes
  return Math.ceil(payload / gsoSize);
}

/**
 * Cuts datagrams of the GSO_UDP_L4 super-packet bytes[off, off+len) (a well-formed IPv4 packet:
 * version 4, ihl >= 5, total length == len, already checked by the caller, and its TTL already
 * decremented by the caller), the way Linux's UDP GSO does, gsoSize payload bytes each (the last
 * the rest, 1..gsoSize bytes). hdr = ihl*4 + 8. maxSegmentBytes is the most bytes (IP total length)
 * a datagram may have, the MTU of the path (65535 for no limit); datagrams that do not fit are not
 * re-cut: the whole super-packet is refused (see udpSegmentCount).
 * The whole packet makes total = udpSegmentCount(bytes, off, len, gsoSize, maxSegmentBytes)
 * datagrams, numbered 0 .. total-1. One call cuts the chunk k = firstSegment .. firstSegment+count-1,
 * count = min(maxCells, total - firstSegment), datagram k into header cell firstCell + (k - firstSegment);
 * chunks cut by successive calls (each next firstSegment = the previous one + its count) are
 * exactly the datagrams one call for the whole packet makes. Datagram k, with n_k payload bytes:
 *  - a copy of the hdr header bytes (IP options included) at byte slotOffsets[cell];
 *    IP total length = hdr + n_k; IP id = id0 + k (mod 2^16), DF or not (inet_gso_segment numbers
 *    every segment so; FIXEDID is TCP's only); IP header checksum recomputed;
 *  - UDP: ports copied; length = 8 + n_k; checksum computed in full over the pseudo-header (src,
 *    dst, 17, 8 + n_k), the UDP header with check 0 and the payload bytes, which stay where they
 *    are in the super-packet (the partial value in the super-packet's check field is not used);
 *    a computed 0 is stored as 0xffff (CSUM_MANGLED_0, as __udp_gso_segment: 0 means "no checksum");
 *  - lens[cell] = hdr; extOffs[cell] = off + hdr + k*gsoSize (absolute byte offset of the payload
 *    in bytes); extLens[cell] = n_k.
 * Returns count (>= 1), or 0 and touches nothing when total is 0 (see udpSegmentCount), firstSegment
 * is not an integer in [0, total), or maxCells < 1. maxCells and gsoSize are integers.
 * The super-packet itself is never written (header included). Cells firstCell .. firstCell+count-1
 * must exist in slotOffsets, lens, extOffs and extLens, and each cell's SEGMENT_HEADER_CELL bytes
 * must not overlap the super-packet or another cell (not checked).
 * No allocation; words null (byte path) or a words view as for onesComplementSum (then headers are
 * also copied a word at a time into cells 4-aligned in the buffer like the super-packet, and over a
 * checksumMemory the payloads of the chunk are summed by one WebAssembly call per
 * STRIDED_SUMS_CAPACITY datagrams; same bytes either way).
 */
export function segmentUdpSuperPacket(
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
  const segments = udpSegmentCount(bytes, off, len, gsoSize, maxSegmentBytes);
  if (segments === 0) return 0;
  if (!(firstSegment >= 0 && firstSegment < segments) || (firstSegment | 0) !== firstSegment || !(maxCells >= 1))
    return 0;
  const end = Math.min(segments, firstSegment + maxCells);

  const ihl = (bytes[off] & 15) << 2;
  const hdr = ihl + UDP_HEADER_LEN;
  const payload = len - hdr;
  const u = off + ihl;
  const id0 = (bytes[off + 4] << 8) | bytes[off + 5];
  // Each datagram's UDP checksum sums the pseudo-header (its length varies), the ports, the UDP
  // length field (the same value as the pseudo-header's length: counted twice) and the payload.
  const fixedUdpSum =
    pseudoHeaderSum(bytes, off, IPPROTO_UDP, 0) +
    ((bytes[u] << 8) | bytes[u + 1]) +
    ((bytes[u + 2] << 8) | bytes[u + 3]);
  // The IP header's sum but for what each segment sets (segment-header.ts).
  const ipFixedSum = ipHeaderFixedSum(bytes, off, ihl);
  // The header is copied a 32-bit word at a time into every cell that is 4-aligned like the
  // super-packet (slab slots and cells are 8-aligned); hdr is a multiple of 4.
  const headerWord = alignedWordIndex(bytes, words, off, hdr);
  const lastIndex = segments - 1;
  const lastLen = payload - lastIndex * gsoSize;
  // The payload sums, up to STRIDED_SUMS_CAPACITY datagrams at a time in one stridedSums call
  // (one WebAssembly call over a checksumMemory): payloadSums[k - sumsFirst] for k below sumsEnd.
  // The array is stridedSums' own: nothing else sums between its refill and its reads.
  let payloadSums = EMPTY_SUMS;
  let sumsFirst = firstSegment;
  let sumsEnd = firstSegment;

  for (let k = firstSegment; k < end; k++) {
    if (k === sumsEnd) {
      const batch = Math.min(STRIDED_SUMS_CAPACITY, end - k);
      const batchLast = k + batch - 1;
      payloadSums = stridedSums(
        bytes,
        words,
        off + hdr + k * gsoSize,
        gsoSize,
        batch,
        gsoSize,
        batchLast === lastIndex ? lastLen : gsoSize,
      );
      sumsFirst = k;
      sumsEnd = k + batch;
    }
    const cell = firstCell + (k - firstSegment);
    const c = slotOffsets[cell];
    const n = k === lastIndex ? lastLen : gsoSize;
    // The headers, with this segment's IP total length, id and header checksum.
    writeSegmentIpHeader(bytes, words, off, hdr, headerWord, c, ipFixedSum, hdr + n, (id0 + k) & 0xffff);

    // UDP: length, checksum (0 -> 0xffff).
    const cu = c + ihl;
    const udpLen = UDP_HEADER_LEN + n;
    bytes[cu + UDP_LENGTH_OFFSET] = udpLen >> 8;
    bytes[cu + UDP_LENGTH_OFFSET + 1] = udpLen & 0xff;
    const sum = foldOnesComplement(fixedUdpSum + 2 * udpLen + payloadSums[k - sumsFirst]);
    const check = ~sum & 0xffff || 0xffff;
    bytes[cu + UDP_CHECK_OFFSET] = check >> 8;
    bytes[cu + UDP_CHECK_OFFSET + 1] = check & 0xff;

    lens[cell] = hdr;
    extOffs[cell] = off + hdr + k * gsoSize;
    extLens[cell] = n;
  }
  return end - firstSegment;
}
