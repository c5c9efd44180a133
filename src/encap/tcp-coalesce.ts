// GRO for writes into flannel0 (opened with IFF_VNET_HDR): plans which runs of consecutive TCP
// segments of one flow, and which runs of consecutive UDP datagrams of one flow, in a write batch
// go to the kernel as ONE super-packet (GSO_TCPV4 or GSO_UDP_L4), and patches each group leader's
// header for it. The I/O side then writes, per group, the leader's virtio_net_hdr, the leader's
// bytes and each member's payload (from offs[slot]) with one writev, no copies.
//
// Grouping is greedy and conservative: a packet joins only when the kernel's segmentation of the
// super-packet would give back that packet byte for byte (up to the IP id where Linux ignores it:
// TCP with DF). For TCP these are the tcp_gro_receive / inet_gro_receive conditions plus a few
// stricter ones (canJoinTcp); for UDP, what __udp_gso_segment rebuilds per datagram (canJoinUdp).
// Hot path: byte arithmetic on the slab, no allocation, no closures.

import {
  alignedWordIndex,
  foldOnesComplement,
  ipHeader20ChecksumOkWords,
  ipHeaderChecksumOk,
  pseudoHeaderSum,
  STRIDED_SUMS_CAPACITY,
  stridedSums,
  writeIpHeaderChecksum,
} from './checksum.js';
import { isFragment, udpPayloadOffset } from './ipv4.js';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_CHECK_OFFSET,
  TCP_FLAG_ACK,
  TCP_FLAG_PSH,
  UDP_CHECK_OFFSET,
  UDP_HEADER_LEN,
  UDP_LENGTH_OFFSET,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VNET_CSUM_OFFSET,
  VNET_CSUM_START,
  VNET_FLAGS,
  VNET_GSO_SIZE,
  VNET_GSO_TYPE,
  VNET_HDR_LEN_FIELD,
  VNET_HDR_SLOT,
} from './wire.js';

// Re-exported for the slab, the fake I/O and tests, which import them from here.
export { VNET_HDR_LEN, VNET_HDR_SLOT } from './wire.js';

/** The largest group, as Linux's GRO (MAX_GRO_SKBS / gso_segs limit of 64). */
export const MAX_GROUP_PACKETS = 64;

/** IP header (no options) + UDP header: where a UDP group member's payload starts. */
const UDP_HDR_END = 20 + UDP_HEADER_LEN;

/**
 * Plans GRO-style coalescing of a write batch, TCP and UDP in one pass. list[0..count) holds slot
 * numbers in write order; every listed slot holds a well-formed IPv4 packet of lens[slot] bytes at
 * bytes[slotOffsets[slot]] (IP total length = lens[slot]; slots need not be uniform nor aligned;
 * they must not overlap).
 * Groups are runs of CONSECUTIVE list entries of one protocol and flow (a packet of another
 * protocol or flow ends a run). For each group of k >= 2 packets:
 *  - groupLens[i] = k at the leader's list position i, and 0 at the k-1 members' positions;
 *  - offs[memberSlot] = the member's header length, where its payload starts (TCP: IP ihl*4 + TCP
 *    doff*4; UDP: 28); offs[leaderSlot] = 0;
 *  - the leader's header is patched IN PLACE for the super-packet: IP total length = leader's header
 *    length + the sum of all k payload lengths; IP header checksum recomputed; then
 *    TCP: PSH set if any segment had PSH; TCP checksum field = the pseudo-header checksum (src, dst,
 *      proto 6, TCP length = total - 20), one's-complement folded, NOT inverted (CHECKSUM_PARTIAL
 *      convention: the kernel completes it over header + payload);
 *    UDP: UDP length = 8 + the sum of payload lengths; UDP checksum field = the pseudo-header
 *      checksum (src, dst, proto 17, that UDP length), folded, NOT inverted (CHECKSUM_PARTIAL);
 *  - vnetHdrs[leaderSlot*VNET_HDR_SLOT ..+10] = virtio_net_hdr, little-endian: flags=1
 *    (VIRTIO_NET_HDR_F_NEEDS_CSUM), csum_start (u16) = 20, gso_size (u16) = the leader's payload
 *    length, and
 *    TCP: gso_type=1 (VIRTIO_NET_HDR_GSO_TCPV4), hdr_len (u16) = 20+doff*4, csum_offset (u16) = 16;
 *    UDP: gso_type=5 (VIRTIO_NET_HDR_GSO_UDP_L4), hdr_len (u16) = 28, csum_offset (u16) = 6.
 * A packet not in a group gets groupLens[i] = 1 and offs[slot] = 0, and nothing else is touched
 * (the I/O side writes singles with an all-zero virtio_net_hdr of its own).
 * Returns the number of groups of k >= 2 (0: nothing coalesced; the batch is written as is).
 *
 * Every grouped packet's IP header checksum and L4 checksum are verified first: the kernel
 * computes fresh L4 checksums for the segments, so a corrupted packet merged unchecked would be
 * repaired and accepted (TCP: as inet_gro_receive and tcp4_gro_receive do). A UDP datagram with
 * checksum 0 ("none") is not grouped either: its segment would come back with a checksum. Such
 * packets are written alone, for the kernel to judge.
 *
 * UDP join rule (what __udp_gso_segment gives back): 20-byte IP header (0x45), not a fragment, UDP
 * length = IP payload length; the same TOS, IP flags byte, TTL, src, dst and UDP ports as the
 * leader; IP id = leader's id + k for the k-th member (0-based), with or without DF (inet_gso_segment
 * numbers the segments so); a payload of 1..leader's payload bytes, only the last packet of a group
 * shorter than the leader's.
 */
export function planCoalescing(
  bytes: Uint8Array,
  slotOffsets: Uint32Array,
  lens: Int32Array,
  offs: Uint16Array,
  vnetHdrs: Uint8Array,
  list: Uint16Array,
  count: number,
  groupLens: Uint16Array,
  maxBytes = 65535,
  /**
   * Optional: a Uint32Array view of the same buffer as bytes (the slab's `words`; see
   * onesComplementSum in checksum.ts). With it, L4 checksums are summed 32 bits at a time
   * (about 4x fewer steps), whatever each packet's alignment, and over a checksumMemory in
   * WebAssembly SIMD, one call per stretch of packets at a fixed stride (see l4SumAt). Another
   * buffer's view is ignored (byte path). Headers of packets 4-byte aligned in the buffer are
   * also compared and checked a word at a time.
   */
  words: Uint32Array | null = null,
): number {
  // Another buffer's view is turned down by alignedWordIndex and stridedSums (cached there).
  const w = words;
  let groups = 0;
  runSumsFrom = runSumsTo = 0;
  // The open candidate group: its protocol, leader (list position, byte offset, index in w or -1,
  // header length, payload length), packet count, bytes so far, and the previous member's payload
  // (and, for TCP, its seq and PSH).
  let proto = 0;
  let leaderPos = -1;
  let leaderOff = 0;
  let leaderWord = -1;
  let leaderHdr = 0;
  let leaderPayload = 0;
  let k = 0;
  let total = 0;
  let prevSeq = 0;
  let prevPayload = 0;
  let prevPsh = false;
  let anyPsh = false;

  for (let i = 0; i < count; i++) {
    const slot = list[i];
    const off = slotOffsets[slot];
    const len = lens[slot];
    offs[slot] = 0;
    groupLens[i] = 1;

    if (leaderPos >= 0) {
      if (proto === IPPROTO_TCP) {
        const hdr = tcpHeaderEnd(bytes, off, len);
        const payload = len - hdr;
        const seq = seqAt(bytes, off);
        const word = leaderWord >= 0 ? alignedWordIndex(bytes, w, off, hdr) : -1;
        if (
          hdr === leaderHdr &&
          !prevPsh &&
          prevPayload === leaderPayload &&
          k < MAX_GROUP_PACKETS &&
          payload > 0 &&
          payload <= leaderPayload &&
          total + payload <= maxBytes &&
          seq === (prevSeq + prevPayload) >>> 0 &&
          (word >= 0
            ? canJoinTcpWords(bytes, w!, off, word, leaderWord, hdr, k)
            : canJoinTcp(bytes, off, leaderOff, hdr, k)) &&
          tcpChecksumOk(bytes, off, len, l4SumAt(bytes, w, slotOffsets, lens, list, count, i))
        ) {
          groupLens[i] = 0;
          offs[slot] = hdr;
          k++;
          total += payload;
          prevSeq = seq;
          prevPayload = payload;
          prevPsh = (bytes[off + 20 + 13] & TCP_FLAG_PSH) !== 0;
          if (prevPsh) anyPsh = true;
          continue;
        }
      } else {
        const payload = udpPayloadLength(bytes, off, len);
        if (
          payload > 0 &&
          prevPayload === leaderPayload &&
          k < MAX_GROUP_PACKETS &&
          payload <= leaderPayload &&
          total + payload <= maxBytes
        ) {
          const word = leaderWord >= 0 ? alignedWordIndex(bytes, w, off, UDP_HDR_END) : -1;
          if (
            (word >= 0 ? canJoinUdpWords(w!, word, leaderWord, k) : canJoinUdp(bytes, off, leaderOff, k)) &&
            udpChecksumPresent(bytes, off) &&
            udpChecksumOk(bytes, off, len, l4SumAt(bytes, w, slotOffsets, lens, list, count, i))
          ) {
            groupLens[i] = 0;
            offs[slot] = UDP_HDR_END;
            k++;
            total += payload;
            prevPayload = payload;
            continue;
          }
        }
      }
      if (k >= 2) {
        sealGroup(
          bytes,
          proto,
          leaderOff,
          leaderHdr,
          leaderPayload,
          total,
          anyPsh,
          vnetHdrs,
          list[leaderPos] * VNET_HDR_SLOT,
        );
        forgetSumsOver(leaderOff, leaderOff + leaderHdr, i);
        groupLens[leaderPos] = k;
        groups++;
      }
      leaderPos = -1;
    }

    if (len < UDP_HDR_END) continue;
    if (bytes[off + 9] === IPPROTO_TCP) {
      const hdr = tcpHeaderEnd(bytes, off, len);
      if (hdr === 0 || len <= hdr) continue;
      const word = alignedWordIndex(bytes, w, off, hdr);
      if (!(
        (word >= 0 ? canLeadTcpWords(bytes, w!, off, word) : canLeadTcp(bytes, off)) &&
        tcpChecksumOk(bytes, off, len, l4SumAt(bytes, w, slotOffsets, lens, list, count, i))
      ))
        continue;
      proto = IPPROTO_TCP;
      leaderWord = word;
      leaderHdr = hdr;
      prevSeq = seqAt(bytes, off);
      prevPsh = (bytes[off + 20 + 13] & TCP_FLAG_PSH) !== 0;
      anyPsh = prevPsh;
    } else {
      if (udpPayloadLength(bytes, off, len) === 0) continue;
      const word = alignedWordIndex(bytes, w, off, UDP_HDR_END);
      if (!(
        (word >= 0 ? ipHeader20ChecksumOkWords(w!, word) : ipHeaderChecksumOk(bytes, off)) &&
        udpChecksumPresent(bytes, off) &&
        udpChecksumOk(bytes, off, len, l4SumAt(bytes, w, slotOffsets, lens, list, count, i))
      ))
        continue;
      proto = IPPROTO_UDP;
      leaderWord = word;
      leaderHdr = UDP_HDR_END;
      anyPsh = false;
    }
    leaderPos = i;
    leaderOff = off;
    leaderPayload = len - leaderHdr;
    k = 1;
    total = len;
    prevPayload = leaderPayload;
  }
  if (leaderPos >= 0 && k >= 2) {
    sealGroup(
      bytes,
      proto,
      leaderOff,
      leaderHdr,
      leaderPayload,
      total,
      anyPsh,
      vnetHdrs,
      list[leaderPos] * VNET_HDR_SLOT,
    );
    groupLens[leaderPos] = k;
    groups++;
  }
  return groups;
}

/**
 * For an IPv4 packet without IP options carrying TCP: the length of IP + TCP headers (40..80)
 * when the TCP header fits in len bytes; 0 for anything else (other protocol, IP options, a
 * fragment, a truncated or malformed TCP header).
 */
function tcpHeaderEnd(b: Uint8Array, off: number, len: number): number {
  if (len < 40 || b[off] !== 0x45 || b[off + 9] !== IPPROTO_TCP) return 0;
  if (isFragment(b, off)) return 0; // DF and the reserved bit are compared to the leader's
  const doff = b[off + 32] >> 4;
  if (doff < 5) return 0;
  const hdr = 20 + (doff << 2);
  return hdr <= len ? hdr : 0;
}

/** A leader: a valid IP header checksum and TCP flags of exactly ACK, or ACK|PSH. */
function canLeadTcp(b: Uint8Array, off: number): boolean {
  return (b[off + 33] & ~TCP_FLAG_PSH) === TCP_FLAG_ACK && ipHeaderChecksumOk(b, off);
}

/** canLeadTcp for a leader whose header is words[word ..] (see alignedWordIndex). */
function canLeadTcpWords(b: Uint8Array, w: Uint32Array, off: number, word: number): boolean {
  return (b[off + 33] & ~TCP_FLAG_PSH) === TCP_FLAG_ACK && ipHeader20ChecksumOkWords(w, word);
}

/**
 * The header conditions for a packet at off (with tcpHeaderEnd === hdr, the leader's) to join
 * the group led by the packet at leaderOff as its k-th member (0-based). Beyond the rules of
 * tcp_gro_receive this also requires: the whole IP flags byte, the TCP data-offset/reserved byte
 * and the urgent pointer equal to the leader's (segmentation copies the leader's), a valid IP
 * header checksum, and, without DF, IP id = leader's id + k (segmentation numbers them so).
 */
function canJoinTcp(b: Uint8Array, off: number, leaderOff: number, hdr: number, k: number): boolean {
  const t = off + 20,
    lt = leaderOff + 20;
  // Flags: exactly ACK, PSH allowed.
  if ((b[t + 13] & ~TCP_FLAG_PSH) !== TCP_FLAG_ACK) return false;
  // IP: TOS, flags byte (DF; MF and offset are already 0), TTL, protocol, src and dst.
  if (b[off + 1] !== b[leaderOff + 1] || b[off + 6] !== b[leaderOff + 6] || b[off + 8] !== b[leaderOff + 8])
    return false;
  for (let j = 12; j < 20; j++) if (b[off + j] !== b[leaderOff + j]) return false;
  // TCP: ports (0..3), ack (8..11), data offset/reserved (12), window (14..15), urgent pointer (18..19).
  for (let j = 0; j < 4; j++) if (b[t + j] !== b[lt + j]) return false;
  for (let j = 8; j < 13; j++) if (b[t + j] !== b[lt + j]) return false;
  if (b[t + 14] !== b[lt + 14] || b[t + 15] !== b[lt + 15] || b[t + 18] !== b[lt + 18] || b[t + 19] !== b[lt + 19])
    return false;
  // TCP options, byte for byte.
  for (let j = 40; j < hdr; j++) if (b[off + j] !== b[leaderOff + j]) return false;
  if ((b[off + 6] & 0x40) === 0) {
    const id = (b[off + 4] << 8) | b[off + 5];
    const leaderId = (b[leaderOff + 4] << 8) | b[leaderOff + 5];
    if (id !== ((leaderId + k) & 0xffff)) return false;
  }
  return ipHeaderChecksumOk(b, off);
}

// Masks of the fields canJoinTcp and canJoinUdp compare, per 32-bit word of the headers (little-endian words:
// byte k of a word is bits 8k..8k+7; offsets from the IP header's first byte).
/** Bytes 0..3: TOS (1); not version/ihl (0x45 in both), not total length. */
const JOIN_MASK_TOS = 0x0000ff00;
/** Bytes 4..7: the IP flags byte (6); not the id (compared apart), fragment offset is 0 in both. */
const JOIN_MASK_IP_FLAGS = 0x00ff0000;
/** Bytes 8..11: TTL (8); protocol is 6 in both; not the header checksum. */
const JOIN_MASK_TTL = 0x000000ff;
/** Bytes 32..35: TCP data offset/reserved (32) and window (34..35); not the flags (checked apart). */
const JOIN_MASK_DOFF_WINDOW = 0xffff00ff;
/** Bytes 36..39: TCP urgent pointer (38..39); not the checksum. */
const JOIN_MASK_URGENT = 0xffff0000;

/**
 * canJoinTcp for a packet at off whose header is words[word ..] and a leader whose header is
 * words[leaderWord ..] (both from alignedWordIndex over hdr bytes): the same fields compared
 * a word at a time under masks, the same result.
 */
function canJoinTcpWords(
  b: Uint8Array,
  w: Uint32Array,
  off: number,
  word: number,
  leaderWord: number,
  hdr: number,
  k: number,
): boolean {
  // Flags: exactly ACK, PSH allowed.
  if ((b[off + 33] & ~TCP_FLAG_PSH) !== TCP_FLAG_ACK) return false;
  // IP: TOS, flags byte, TTL, src and dst (words 3, 4); TCP: ports (word 5), ack (7), data
  // offset/reserved and window (8), urgent pointer (9). One test over the XORed words: int32
  // operations only, no branch per field.
  const ipWord1 = w[word + 1],
    leaderIpWord1 = w[leaderWord + 1];
  const differ =
    ((w[word] ^ w[leaderWord]) & JOIN_MASK_TOS) |
    ((ipWord1 ^ leaderIpWord1) & JOIN_MASK_IP_FLAGS) |
    ((w[word + 2] ^ w[leaderWord + 2]) & JOIN_MASK_TTL) |
    (w[word + 3] ^ w[leaderWord + 3]) |
    (w[word + 4] ^ w[leaderWord + 4]) |
    (w[word + 5] ^ w[leaderWord + 5]) |
    (w[word + 7] ^ w[leaderWord + 7]) |
    ((w[word + 8] ^ w[leaderWord + 8]) & JOIN_MASK_DOFF_WINDOW) |
    ((w[word + 9] ^ w[leaderWord + 9]) & JOIN_MASK_URGENT);
  if (differ !== 0) return false;
  // TCP options, word for word (hdr is a multiple of 4).
  const end = word + (hdr >>> 2);
  for (let j = word + 10, l = leaderWord + 10; j < end; j++, l++) if ((w[j] ^ w[l]) !== 0) return false;
  if ((ipWord1 & 0x400000) === 0) {
    // DF (bit 6 of byte 6) clear
    // The id is bytes 4..5, big-endian: the low 16 bits of the word, byte-swapped.
    const id = ((ipWord1 & 0xff) << 8) | ((ipWord1 >>> 8) & 0xff);
    const leaderId = ((leaderIpWord1 & 0xff) << 8) | ((leaderIpWord1 >>> 8) & 0xff);
    if (id !== ((leaderId + k) & 0xffff)) return false;
  }
  return ipHeader20ChecksumOkWords(w, word);
}

/**
 * The TCP checksum of the segment at off (20-byte IP header, len bytes in all) verifies; l4Sum is
 * the folded sum of its TCP bytes (l4SumAt).
 */
function tcpChecksumOk(b: Uint8Array, off: number, len: number, l4Sum: number): boolean {
  return foldOnesComplement(pseudoHeaderSum(b, off, IPPROTO_TCP, len - 20) + l4Sum) === 0xffff;
}

// The L4 sums of a stretch of the list: positions [runSumsFrom, runSumsTo), the sum of position i
// at runSums[i - runSumsFrom]. runSums is stridedSums' result area: valid until its next call,
// which only l4SumAt makes during planning; planCoalescing empties the stretch on entry.
// The stretch's ranges: position j sums bytes from runL4Start + (j - runSumsFrom) * runStride, all
// of them ending by runEnd (byte offsets in bytes).
let runSums: Uint32Array = new Uint32Array(0);
let runSumsFrom = 0;
let runSumsTo = 0;
let runL4Start = 0;
let runStride = 0;
let runEnd = 0;

/**
 * Empties the stretch if bytes[from, to) — a leader's header, just patched by sealGroup — may
 * overlap a range whose cached sum is still to be read: that of list position i (the position
 * being planned) or a later one. A real overlap takes a list that holds a slot twice (or slots
 * that overlap); a stale sum would then let a packet whose patched bytes no longer verify be
 * grouped. The test is against the span of those ranges, gaps included: in a list out of
 * address order a leader lying in a gap also empties it (one more stridedSums call); never in a
 * list in address order without overlaps, as the forwarder's are.
 */
function forgetSumsOver(from: number, to: number, i: number): void {
  if (i >= runSumsTo) return;
  // Positions from i on lie at increasing offsets from here (a one-position stretch: runL4Start).
  const pending = runL4Start + (i - runSumsFrom) * runStride;
  if (from < runEnd && to > pending) runSumsFrom = runSumsTo = 0;
}

/**
 * The folded one's-complement sum of the L4 bytes [off + 20, off + len) of the packet at list
 * position i (off, len its slot's offset and length; len >= 20), not inverted.
 * Received datagrams mostly lie at a fixed stride with equal lengths (those of one UDP GRO run
 * sit back to back in one receive slot, segSize apart; plain receive slots are a slot size apart),
 * so on a miss this sums the whole STRETCH from i at once: the following list positions whose
 * slots continue the stride of positions i and i+1 with i's length, then at most one of them
 * shorter, as the last datagram of a run is (at most STRIDED_SUMS_CAPACITY positions) — one
 * stridedSums call, i.e. one WebAssembly call over a checksumMemory. Every position of a
 * stretch is verified in planning unless its headers rule it out first (as few packets are), so
 * little is summed in vain. A position's bytes are only patched when it is sealed as a leader,
 * after its own check; should the list hold that slot again (or a slot overlapping it) at a
 * position whose sum is cached, forgetSumsOver drops the stretch, so that position is summed anew.
 */
function l4SumAt(
  b: Uint8Array,
  w: Uint32Array | null,
  slotOffsets: Uint32Array,
  lens: Int32Array,
  list: Uint16Array,
  count: number,
  i: number,
): number {
  if (i >= runSumsFrom && i < runSumsTo) return runSums[i - runSumsFrom];
  const off = slotOffsets[list[i]];
  const len = lens[list[i]];
  let n = 1;
  let stride = 0;
  let lastLen = len;
  const limit = Math.min(count - i, STRIDED_SUMS_CAPACITY);
  if (limit > 1) {
    stride = slotOffsets[list[i + 1]] - off;
    if (stride > 0) {
      while (n < limit && slotOffsets[list[i + n]] === off + n * stride && lens[list[i + n]] === len) n++;
      if (n < limit && slotOffsets[list[i + n]] === off + n * stride) {
        const shorter = lens[list[i + n]];
        if (shorter >= 20 && shorter < len) {
          lastLen = shorter;
          n++;
        }
      }
    }
  }
  runSums = stridedSums(b, w, off + 20, stride, n, len - 20, lastLen - 20);
  runSumsFrom = i;
  runSumsTo = i + n;
  runL4Start = off + 20;
  runStride = stride;
  runEnd = off + (n - 1) * stride + lastLen;
  return runSums[0];
}

function seqAt(b: Uint8Array, off: number): number {
  return ((b[off + 24] << 24) | (b[off + 25] << 16) | (b[off + 26] << 8) | b[off + 27]) >>> 0;
}

/**
 * For an IPv4 packet without IP options carrying UDP: its UDP payload length, when the UDP header
 * fits and its length field equals the IP payload length (len - 20); 0 for anything else (other
 * protocol, IP options, a fragment, a truncated or inconsistent UDP header) and for an empty payload.
 */
function udpPayloadLength(b: Uint8Array, off: number, len: number): number {
  if (len <= UDP_HDR_END || b[off] !== 0x45) return 0;
  return udpPayloadOffset(b, off, len) === UDP_HDR_END ? len - UDP_HDR_END : 0;
}

/**
 * The header conditions for a UDP datagram at off (udpPayloadLength > 0) to join the group led
 * by the datagram at leaderOff as its k-th member (0-based): the IP and UDP header fields that
 * UDP GSO segmentation copies from the leader are equal (TOS, IP flags byte, TTL, src, dst,
 * ports; version/ihl and protocol are equal already), the IP id is the leader's + k (segments
 * are numbered so, DF or not), and the IP header checksum is valid.
 */
function canJoinUdp(b: Uint8Array, off: number, leaderOff: number, k: number): boolean {
  if (b[off + 1] !== b[leaderOff + 1] || b[off + 6] !== b[leaderOff + 6] || b[off + 8] !== b[leaderOff + 8])
    return false;
  // src, dst (12..19) and UDP ports (20..23).
  for (let j = 12; j < 24; j++) if (b[off + j] !== b[leaderOff + j]) return false;
  const id = (b[off + 4] << 8) | b[off + 5];
  const leaderId = (b[leaderOff + 4] << 8) | b[leaderOff + 5];
  if (id !== ((leaderId + k) & 0xffff)) return false;
  return ipHeaderChecksumOk(b, off);
}

/** canJoinUdp for headers at words[word ..] and words[leaderWord ..] (alignedWordIndex over 28 bytes). */
function canJoinUdpWords(w: Uint32Array, word: number, leaderWord: number, k: number): boolean {
  const ipWord1 = w[word + 1],
    leaderIpWord1 = w[leaderWord + 1];
  const differ =
    ((w[word] ^ w[leaderWord]) & JOIN_MASK_TOS) |
    ((ipWord1 ^ leaderIpWord1) & JOIN_MASK_IP_FLAGS) |
    ((w[word + 2] ^ w[leaderWord + 2]) & JOIN_MASK_TTL) |
    (w[word + 3] ^ w[leaderWord + 3]) |
    (w[word + 4] ^ w[leaderWord + 4]) |
    (w[word + 5] ^ w[leaderWord + 5]);
  if (differ !== 0) return false;
  // The id is bytes 4..5, big-endian: the low 16 bits of the word, byte-swapped.
  const id = ((ipWord1 & 0xff) << 8) | ((ipWord1 >>> 8) & 0xff);
  const leaderId = ((leaderIpWord1 & 0xff) << 8) | ((leaderIpWord1 >>> 8) & 0xff);
  if (id !== ((leaderId + k) & 0xffff)) return false;
  return ipHeader20ChecksumOkWords(w, word);
}

/**
 * The UDP datagram at off (20-byte IP header) carries a checksum (the field is not 0, "none"):
 * a condition for grouping, as a valid non-zero field is exactly what Linux computes for the
 * datagram (a computed 0 is sent as 0xffff), so segmentation gives it back.
 */
function udpChecksumPresent(b: Uint8Array, off: number): boolean {
  const u = off + 20;
  return (b[u + UDP_CHECK_OFFSET] | b[u + UDP_CHECK_OFFSET + 1]) !== 0;
}

/**
 * The UDP checksum of the datagram at off (20-byte IP header, len bytes in all) verifies; l4Sum is
 * the folded sum of its UDP bytes (l4SumAt).
 */
function udpChecksumOk(b: Uint8Array, off: number, len: number, l4Sum: number): boolean {
  return foldOnesComplement(pseudoHeaderSum(b, off, IPPROTO_UDP, len - 20) + l4Sum) === 0xffff;
}

/**
 * Patches the leader's header (protocol proto) for a super-packet of total bytes and writes its
 * virtio_net_hdr. psh: TCP only, set PSH on the leader.
 */
function sealGroup(
  b: Uint8Array,
  proto: number,
  off: number,
  hdr: number,
  gsoSize: number,
  total: number,
  psh: boolean,
  vnet: Uint8Array,
  vo: number,
): void {
  // IP total length and header checksum (ihl is 5).
  b[off + 2] = total >> 8;
  b[off + 3] = total & 0xff;
  writeIpHeaderChecksum(b, off);

  const t = off + 20;
  const l4Len = total - 20;
  let checkOffset: number;
  if (proto === IPPROTO_TCP) {
    if (psh) b[t + 13] |= TCP_FLAG_PSH;
    checkOffset = TCP_CHECK_OFFSET;
  } else {
    b[t + UDP_LENGTH_OFFSET] = l4Len >> 8;
    b[t + UDP_LENGTH_OFFSET + 1] = l4Len & 0xff;
    checkOffset = UDP_CHECK_OFFSET;
  }
  // CHECKSUM_PARTIAL: the pseudo-header sum, folded, not inverted.
  let sum = pseudoHeaderSum(b, off, proto, l4Len);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  b[t + checkOffset] = sum >> 8;
  b[t + checkOffset + 1] = sum & 0xff;

  vnet[vo + VNET_FLAGS] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vnet[vo + VNET_GSO_TYPE] = proto === IPPROTO_TCP ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_UDP_L4;
  vnet[vo + VNET_HDR_LEN_FIELD] = hdr & 0xff;
  vnet[vo + VNET_HDR_LEN_FIELD + 1] = hdr >> 8;
  vnet[vo + VNET_GSO_SIZE] = gsoSize & 0xff;
  vnet[vo + VNET_GSO_SIZE + 1] = gsoSize >> 8;
  vnet[vo + VNET_CSUM_START] = 20;
  vnet[vo + VNET_CSUM_START + 1] = 0;
  vnet[vo + VNET_CSUM_OFFSET] = checkOffset;
  vnet[vo + VNET_CSUM_OFFSET + 1] = 0;
}
