// What every segment cut from a super-packet (TSO: tcp-segment.ts, USO: udp-segment.ts) shares:
// its header cell starts as a copy of the super-packet's headers, then gets its own IP total
// length, id and header checksum, the way inet_gso_segment numbers and checksums each segment.
// Hot path: byte arithmetic on the slab, no allocation.

import { alignedWordIndex } from './checksum.js';

/**
 * The sum of the IPv4 header at off (ihl bytes) without total length (2..3), id (4..5) and
 * checksum (10..11): a segment's header checksum is this plus its total length and id, folded
 * and inverted (the same value as summing its whole header). Not folded (below 2^20).
 */
export function ipHeaderFixedSum(bytes: Uint8Array, off: number, ihl: number): number {
  let sum = 0;
  for (let j = 0; j < ihl; j += 2) {
    if (j !== 2 && j !== 4 && j !== 10) sum += (bytes[off + j] << 8) | bytes[off + j + 1];
  }
  return sum;
}

/**
 * Copies the super-packet's hdr header bytes at off into the cell at c, then stores the segment's
 * IP total length, id and header checksum (ipFixedSum from ipHeaderFixedSum). headerWord: the
 * super-packet header's index in words (alignedWordIndex over hdr bytes), or -1: the copy then goes
 * a byte at a time (as it does when the cell is not 4-aligned like it). hdr is a multiple of 4.
 */
export function writeSegmentIpHeader(
  bytes: Uint8Array,
  words: Uint32Array | null,
  off: number,
  hdr: number,
  headerWord: number,
  c: number,
  ipFixedSum: number,
  total: number,
  id: number,
): void {
  const cellWord = headerWord < 0 ? -1 : alignedWordIndex(bytes, words, c, hdr);
  if (cellWord >= 0) {
    for (let j = 0, n = hdr >>> 2; j < n; j++) words![cellWord + j] = words![headerWord + j];
  } else {
    for (let j = 0; j < hdr; j++) bytes[c + j] = bytes[off + j];
  }
  bytes[c + 2] = total >> 8;
  bytes[c + 3] = total & 0xff;
  bytes[c + 4] = id >> 8;
  bytes[c + 5] = id & 0xff;
  let ipSum = ipFixedSum + total + id; // below 2^22: two folds reach 16 bits
  ipSum = (ipSum & 0xffff) + (ipSum >>> 16);
  ipSum = (ipSum & 0xffff) + (ipSum >>> 16);
  const ipCheck = ~ipSum & 0xffff;
  bytes[c + 10] = ipCheck >> 8;
  bytes[c + 11] = ipCheck & 0xff;
}
