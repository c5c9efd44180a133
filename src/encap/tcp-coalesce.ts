// GRO for writes into flannel0 (opened with IFF_VNET_HDR): plans which runs of consecutive TCP
// segments of one flow in a write batch go to the kernel as ONE super-packet, and patches each
// group leader's header for it. The I/O side then writes, per group, the leader's virtio_net_hdr,
// the leader's bytes and each member's payload (from offs[slot]) with one writev, no copies.
//
// Grouping is greedy and conservative: a packet joins only when the kernel's TCP segmentation of
// the super-packet (GSO_TCPV4) would give back that packet's header fields and payload, i.e. the
// tcp_gro_receive / inet_gro_receive conditions, plus a few stricter ones noted in canJoin.
// Hot path: byte arithmetic on the slab, no allocation, no closures.

import { ipHeaderChecksumOk, onesComplementSum, pseudoHeaderSum, writeIpHeaderChecksum } from './checksum.js';

/** Bytes reserved per slot in the virtio-net header array: 10 used (struct virtio_net_hdr), padded. */
export const VNET_HDR_SLOT = 12;
export const VNET_HDR_LEN = 10;

/** The largest group, as Linux's GRO (MAX_GRO_SKBS / gso_segs limit of 64). */
export const MAX_GROUP_PACKETS = 64;

const IPPROTO_TCP = 6;
const TCP_FLAG_PSH = 0x08;
const TCP_FLAG_ACK = 0x10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
/** Offset of the checksum field inside the TCP header. */
const TCP_CHECK_OFFSET = 16;

/**
 * Plans GRO-style coalescing of a write batch. list[0..count) holds slot numbers in write order;
 * every listed slot holds a well-formed IPv4 packet of lens[slot] bytes at bytes[slotOffsets[slot]]
 * (slots need not be uniform nor aligned; they must not overlap).
 * Groups are runs of CONSECUTIVE list entries. For each group of k >= 2 packets:
 *  - groupLens[i] = k at the leader's list position i, and 0 at the k-1 members' positions;
 *  - offs[memberSlot] = the member's header length (IP ihl*4 + TCP doff*4): where its payload starts;
 *    offs[leaderSlot] = 0;
 *  - the leader's header is patched IN PLACE for the super-packet: IP total length = leader's header
 *    length + the sum of all k payload lengths; IP header checksum recomputed; TCP PSH set if any
 *    segment had PSH; TCP checksum field = the pseudo-header checksum (src, dst, proto 6, TCP length =
 *    total - ihl*4), one's-complement folded, NOT inverted (CHECKSUM_PARTIAL convention: the kernel
 *    completes it over header + payload);
 *  - vnetHdrs[leaderSlot*VNET_HDR_SLOT ..+10] = virtio_net_hdr, little-endian: flags=1
 *    (VIRTIO_NET_HDR_F_NEEDS_CSUM), gso_type=1 (VIRTIO_NET_HDR_GSO_TCPV4), hdr_len (u16) = ihl*4+doff*4,
 *    gso_size (u16) = the leader's payload length, csum_start (u16) = ihl*4, csum_offset (u16) = 16.
 * A packet not in a group gets groupLens[i] = 1 and offs[slot] = 0, and nothing else is touched
 * (the I/O side writes singles with an all-zero virtio_net_hdr of its own).
 * Returns the number of groups of k >= 2 (0: nothing coalesced; the batch is written as is).
 *
 * Every grouped segment's IP header checksum and TCP checksum are verified first, as Linux's
 * inet_gro_receive and tcp4_gro_receive do: the kernel computes a fresh TCP checksum over the
 * super-packet, so a corrupted segment merged unchecked would be accepted. A packet that fails
 * is written alone, for the kernel to drop.
 */
export function planTcpCoalescing(
  bytes: Uint8Array, slotOffsets: Uint32Array, lens: Int32Array, offs: Uint16Array, vnetHdrs: Uint8Array,
  list: Uint16Array, count: number, groupLens: Uint16Array, maxBytes = 65535,
  /**
   * Optional: a Uint32Array view of the same buffer as bytes (the slab's `words`; see
   * onesComplementSum in checksum.ts). With it, TCP checksums are summed 32 bits at a time
   * (about 4x fewer steps), whatever each packet's alignment: a misaligned head or tail is
   * summed bytewise, per packet. Another buffer's view is ignored (byte path).
   */
  words: Uint32Array | null = null,
): number {
  const w = words !== null && words.buffer === bytes.buffer ? words : null;
  let groups = 0;
  // The open candidate group: its leader (list position, byte offset, header length, payload
  // length), packet count, bytes so far, and the previous member's seq, payload and PSH.
  let leaderPos = -1;
  let leaderOff = 0;
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
      const hdr = tcpHeaderEnd(bytes, off, len);
      const payload = len - hdr;
      if (
        hdr === leaderHdr && !prevPsh && prevPayload === leaderPayload && k < MAX_GROUP_PACKETS &&
        payload > 0 && payload <= leaderPayload && total + payload <= maxBytes &&
        seqAt(bytes, off) === ((prevSeq + prevPayload) >>> 0) &&
        canJoin(bytes, off, leaderOff, hdr, k) && tcpChecksumOk(bytes, w, off, len)
      ) {
        groupLens[i] = 0;
        offs[slot] = hdr;
        k++;
        total += payload;
        prevSeq = seqAt(bytes, off);
        prevPayload = payload;
        prevPsh = (bytes[off + 20 + 13] & TCP_FLAG_PSH) !== 0;
        if (prevPsh) anyPsh = true;
        continue;
      }
      if (k >= 2) {
        sealGroup(bytes, leaderOff, leaderHdr, leaderPayload, total, anyPsh, vnetHdrs, list[leaderPos] * VNET_HDR_SLOT);
        groupLens[leaderPos] = k;
        groups++;
      }
      leaderPos = -1;
    }

    const hdr = tcpHeaderEnd(bytes, off, len);
    if (hdr > 0 && len > hdr && canLead(bytes, off) && tcpChecksumOk(bytes, w, off, len)) {
      leaderPos = i;
      leaderOff = off;
      leaderHdr = hdr;
      leaderPayload = len - hdr;
      k = 1;
      total = len;
      prevSeq = seqAt(bytes, off);
      prevPayload = leaderPayload;
      prevPsh = (bytes[off + 20 + 13] & TCP_FLAG_PSH) !== 0;
      anyPsh = prevPsh;
    }
  }
  if (leaderPos >= 0 && k >= 2) {
    sealGroup(bytes, leaderOff, leaderHdr, leaderPayload, total, anyPsh, vnetHdrs, list[leaderPos] * VNET_HDR_SLOT);
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
  // MF clear and fragment offset 0 (DF and the reserved bit are compared to the leader's).
  if ((b[off + 6] & 0x3f) !== 0 || b[off + 7] !== 0) return 0;
  const doff = b[off + 32] >> 4;
  if (doff < 5) return 0;
  const hdr = 20 + (doff << 2);
  return hdr <= len ? hdr : 0;
}

/** A leader: a valid IP header checksum and TCP flags of exactly ACK, or ACK|PSH. */
function canLead(b: Uint8Array, off: number): boolean {
  return (b[off + 33] & ~TCP_FLAG_PSH) === TCP_FLAG_ACK && ipHeaderChecksumOk(b, off);
}

/**
 * The header conditions for a packet at off (with tcpHeaderEnd === hdr, the leader's) to join
 * the group led by the packet at leaderOff as its k-th member (0-based). Beyond the rules of
 * tcp_gro_receive this also requires: the whole IP flags byte, the TCP data-offset/reserved byte
 * and the urgent pointer equal to the leader's (segmentation copies the leader's), a valid IP
 * header checksum, and, without DF, IP id = leader's id + k (segmentation numbers them so).
 */
function canJoin(b: Uint8Array, off: number, leaderOff: number, hdr: number, k: number): boolean {
  const t = off + 20, lt = leaderOff + 20;
  // Flags: exactly ACK, PSH allowed.
  if ((b[t + 13] & ~TCP_FLAG_PSH) !== TCP_FLAG_ACK) return false;
  // IP: TOS, flags byte (DF; MF and offset are already 0), TTL, protocol, src and dst.
  if (b[off + 1] !== b[leaderOff + 1] || b[off + 6] !== b[leaderOff + 6] || b[off + 8] !== b[leaderOff + 8]) return false;
  for (let j = 12; j < 20; j++) if (b[off + j] !== b[leaderOff + j]) return false;
  // TCP: ports (0..3), ack (8..11), data offset/reserved (12), window (14..15), urgent pointer (18..19).
  for (let j = 0; j < 4; j++) if (b[t + j] !== b[lt + j]) return false;
  for (let j = 8; j < 13; j++) if (b[t + j] !== b[lt + j]) return false;
  if (b[t + 14] !== b[lt + 14] || b[t + 15] !== b[lt + 15] || b[t + 18] !== b[lt + 18] || b[t + 19] !== b[lt + 19]) return false;
  // TCP options, byte for byte.
  for (let j = 40; j < hdr; j++) if (b[off + j] !== b[leaderOff + j]) return false;
  if ((b[off + 6] & 0x40) === 0) {
    const id = (b[off + 4] << 8) | b[off + 5];
    const leaderId = (b[leaderOff + 4] << 8) | b[leaderOff + 5];
    if (id !== ((leaderId + k) & 0xffff)) return false;
  }
  return ipHeaderChecksumOk(b, off);
}

/** The TCP checksum of the segment at off (20-byte IP header, len bytes in all) verifies. */
function tcpChecksumOk(b: Uint8Array, w: Uint32Array | null, off: number, len: number): boolean {
  const tcpLen = len - 20;
  return onesComplementSum(b, w, off + 20, tcpLen, pseudoHeaderSum(b, off, IPPROTO_TCP, tcpLen)) === 0xffff;
}

function seqAt(b: Uint8Array, off: number): number {
  return ((b[off + 24] << 24) | (b[off + 25] << 16) | (b[off + 26] << 8) | b[off + 27]) >>> 0;
}

/** Patches the leader's header for a super-packet of total bytes and writes its virtio_net_hdr. */
function sealGroup(
  b: Uint8Array, off: number, hdr: number, gsoSize: number, total: number, psh: boolean,
  vnet: Uint8Array, vo: number,
): void {
  // IP total length and header checksum (ihl is 5).
  b[off + 2] = total >> 8;
  b[off + 3] = total & 0xff;
  writeIpHeaderChecksum(b, off);

  const t = off + 20;
  if (psh) b[t + 13] |= TCP_FLAG_PSH;
  // CHECKSUM_PARTIAL: the pseudo-header sum, folded, not inverted.
  let sum = pseudoHeaderSum(b, off, IPPROTO_TCP, total - 20);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  b[t + TCP_CHECK_OFFSET] = sum >> 8;
  b[t + TCP_CHECK_OFFSET + 1] = sum & 0xff;

  vnet[vo] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vnet[vo + 1] = VIRTIO_NET_HDR_GSO_TCPV4;
  vnet[vo + 2] = hdr & 0xff;
  vnet[vo + 3] = hdr >> 8;
  vnet[vo + 4] = gsoSize & 0xff;
  vnet[vo + 5] = gsoSize >> 8;
  vnet[vo + 6] = 20;
  vnet[vo + 7] = 0;
  vnet[vo + 8] = TCP_CHECK_OFFSET;
  vnet[vo + 9] = 0;
}
