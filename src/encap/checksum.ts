// The Internet checksum (RFC 1071) on the slab: one's-complement sums of big-endian 16-bit words,
// shared by GRO planning for TCP and UDP (tcp-coalesce.ts) and TCP segmentation / checksum completion
// (tcp-segment.ts). Hot path: no allocation, no closures.
//
// The 32-bit fast path rests on two properties of the one's-complement sum (RFC 1071 section 2):
//  - byte order independence: summing the host's little-endian 16-bit halves gives the byte swap
//    of the big-endian sum, so whole Uint32 words can be added and the folded result swapped once;
//  - parity: a sum whose words start at an odd position is the byte swap of the same bytes summed
//    as if the words started one byte earlier. The fast path therefore sums with word boundaries
//    at even ABSOLUTE positions in the buffer and swaps the result when `off` is odd there.
// Over a checksumMemory (the slab, where WebAssembly SIMD is available) sums go to the module of
// checksum-simd.ts instead: one call per range (onesComplementSum), or one call for many ranges
// at a fixed stride (stridedSums: the segments of a super-packet, the datagrams of a received run).

import { SIMD_RANGE_MAX, simdChecksumFor, STRIDED_SUMS_MAX, type SimdChecksum } from './checksum-simd.js';

/** Whether the host stores a Uint32 little-endian (the word path assumes so; otherwise it is off). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** From this many bytes on, a sum goes to the WebAssembly SIMD sumRange (a call costs a few words' worth). */
const SIMD_MIN_LEN = 64;

/** The most ranges one stridedSums call sums (the size of its result area). */
export const STRIDED_SUMS_CAPACITY = STRIDED_SUMS_MAX;

/** Below this many bytes the byte loop is as fast as setting up the word loop. */
const WORD_PATH_MIN_LEN = 32;

/**
 * Folds a non-negative integer below 2^53 to 16 bits with end-around carry. 0 stays 0; any other
 * multiple of 0xffff folds to 0xffff (the one's-complement "negative zero").
 */
export function foldOnesComplement(sum: number): number {
  // `sum & 0xffff` is exact for any integer below 2^53: ToInt32 reduces modulo 2^32, a multiple of
  // 2^16. `>>> 16` is only exact below 2^32, so larger sums are first divided down.
  while (sum > 0xffffffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * One's-complement sum of bytes[off, off+len) as big-endian 16-bit words counted from off (an
 * odd len pads a zero byte), added to `initial` (any integer in [0, 2^40)), folded to 16 bits,
 * NOT inverted. The result is 0 only when every byte and `initial` are 0. len below 8 MiB.
 *
 * `words`, when not null, must be a Uint32Array over the SAME ArrayBuffer as bytes, at any
 * byteOffset (so both `new Uint32Array(bytes.buffer)` and a view starting at bytes.byteOffset
 * work): the word for byte position p of bytes is words[(bytes.byteOffset + p - words.byteOffset) / 4].
 * With it, the 4-byte-aligned bulk of the range (aligned in the buffer) is summed 32 bits at a
 * time whatever the alignment of off; a range the view does not cover, a short range, another
 * buffer or a big-endian host falls back to the byte loop (same result). Where bytes is over a
 * checksumMemory (and words over the same buffer), a range of 64 bytes to SIMD_RANGE_MAX is summed
 * by one WebAssembly SIMD call instead, whatever its alignment (same result).
 */
export function onesComplementSum(
  bytes: Uint8Array,
  words: Uint32Array | null,
  off: number,
  len: number,
  initial = 0,
): number {
  if (words !== null && len >= WORD_PATH_MIN_LEN) {
    if (bytes !== viewBytes || words !== viewWords) loadViews(bytes, words);
    const base = viewBase;
    const start = base + off; // absolute position in the buffer
    const end = start + len;
    if (viewSimd !== null && len >= SIMD_MIN_LEN && len <= SIMD_RANGE_MAX) {
      return foldOnesComplement(initial + viewSimd.sumRange(start, len));
    }
    if (start >= viewWordsStart && end <= viewWordsEnd) {
      return foldOnesComplement(initial + wordSum(bytes, words, off, off + len, base, viewWordsStart));
    }
  }
  return foldOnesComplement(initial + byteSum(bytes, off, off + len));
}

/**
 * The sums of `count` ranges of bytes at a fixed stride, in one go: range k is
 * bytes[off + k*stride, + len) for k < count - 1, and the last is bytes[off + (count-1)*stride, + lastLen).
 * Returns an array whose elements [0, count) hold onesComplementSum(bytes, words, start_k, len_k)
 * (folded, not inverted, initial 0): add an initial with foldOnesComplement(initial + sum), the same
 * value as passing it to onesComplementSum. The array is the module's (no allocation) and is
 * overwritten by the next stridedSums call: read it first.
 * count in [0, STRIDED_SUMS_CAPACITY]; stride >= 0; every range inside bytes; len, lastLen at most SIMD_RANGE_MAX.
 * words: as for onesComplementSum. Over a checksumMemory (with its words view) all ranges are summed
 * by one WebAssembly call; otherwise one onesComplementSum per range (same results).
 */
export function stridedSums(
  bytes: Uint8Array,
  words: Uint32Array | null,
  off: number,
  stride: number,
  count: number,
  len: number,
  lastLen: number,
): Uint32Array {
  if (words !== null) {
    if (bytes !== viewBytes || words !== viewWords) loadViews(bytes, words);
    const simd = viewSimd;
    if (simd !== null) {
      simd.sumStrided(viewBase + off, stride, count, len, lastLen, simd.sumsAt);
      return simd.sums;
    }
  }
  const last = count - 1;
  for (let k = 0, p = off; k < last; k++, p += stride) fallbackSums[k] = onesComplementSum(bytes, words, p, len);
  if (count > 0) fallbackSums[last] = onesComplementSum(bytes, words, off + last * stride, lastLen);
  return fallbackSums;
}

/** stridedSums' result area where WebAssembly SIMD does not apply. */
const fallbackSums = new Uint32Array(STRIDED_SUMS_MAX);

/**
 * The index in words of the 32-bit word holding bytes[off, off+4), when words is not null and the
 * word path applies to (bytes, words) as for onesComplementSum, off is 4-byte aligned in the
 * buffer (bytes.byteOffset + off a multiple of 4) and words covers bytes[off, off+len); else -1.
 * Then bytes[off + 4j + b] is byte b (bits 8b..8b+7) of words[index + j]: the host is little-endian.
 * For fast paths that compare or copy headers a word at a time (same results as their byte paths).
 */
export function alignedWordIndex(bytes: Uint8Array, words: Uint32Array | null, off: number, len: number): number {
  if (words === null) return -1;
  if (bytes !== viewBytes || words !== viewWords) loadViews(bytes, words);
  const start = viewBase + off;
  if ((start & 3) !== 0 || start < viewWordsStart || start + len > viewWordsEnd) return -1;
  return (start - viewWordsStart) >>> 2;
}

// The geometry of the last (bytes, words) pair used, checked by identity: reading `.buffer` costs
// a call into the runtime in V8 and `.byteOffset` a builtin call, too slow for once per packet,
// and the hot path passes the same pair every time. A view's byteOffset and length never change
// for the fixed-length ArrayBuffers the slab uses (a detached or resized buffer is not supported).
let viewBytes: Uint8Array | null = null;
let viewWords: Uint32Array | null = null;
/** viewBytes.byteOffset. */
let viewBase = 0;
/**
 * The absolute byte range [viewWordsStart, viewWordsEnd) of the buffer that viewWords covers;
 * empty (end -1) when the word path does not apply: another buffer, or a big-endian host.
 */
let viewWordsStart = 0;
let viewWordsEnd = -1;
/** The WebAssembly SIMD checksum over viewBytes' buffer, when it is a checksumMemory (else null). */
let viewSimd: SimdChecksum | null = null;

function loadViews(bytes: Uint8Array, words: Uint32Array): void {
  viewBytes = bytes;
  viewWords = words;
  viewBase = bytes.byteOffset;
  if (LITTLE_ENDIAN && words.buffer === bytes.buffer) {
    viewWordsStart = words.byteOffset;
    viewWordsEnd = viewWordsStart + words.length * 4;
    viewSimd = simdChecksumFor(bytes.buffer);
  } else {
    viewWordsStart = 0;
    viewWordsEnd = -1;
    viewSimd = null;
  }
}

/** Unfolded sum of the big-endian 16-bit words of bytes[p, end) counted from p. */
function byteSum(bytes: Uint8Array, p: number, end: number): number {
  let sum = 0;
  const last = end - 1;
  for (; p < last; p += 2) sum += (bytes[p] << 8) | bytes[p + 1];
  if (p === last) sum += bytes[p] << 8;
  return sum;
}

/**
 * Folded 16-bit sum of bytes[p, end) as big-endian words counted from p, through words for the
 * 4-byte-aligned bulk. base: bytes.byteOffset; wordsStart: words.byteOffset (both in the buffer).
 */
function wordSum(
  bytes: Uint8Array,
  words: Uint32Array,
  p: number,
  end: number,
  base: number,
  wordsStart: number,
): number {
  const oddStart = (base + p) & 1;
  // Head and tail (at most 3 bytes each): big-endian words at EVEN absolute positions.
  let head = 0;
  while (((base + p) & 3) !== 0) {
    head += ((base + p) & 1) === 0 ? bytes[p] << 8 : bytes[p];
    p++;
  }
  const count = (end - p) >>> 2;
  const first = (base + p - wordsStart) >>> 2;
  const stop = first + count;
  // Whole uint32 words added as doubles (exact below 2^53: len below 8 MiB), eight per step into
  // two accumulators: on V8 about 1.5x faster than splitting each word into its 16-bit halves.
  // Folding the 32-bit sum to 16 bits gives the sum of the little-endian halves (2^16 = 1 mod 0xffff).
  let a = 0,
    b = 0,
    i = first;
  for (; i + 7 < stop; i += 8) {
    a += words[i] + words[i + 1] + words[i + 2] + words[i + 3];
    b += words[i + 4] + words[i + 5] + words[i + 6] + words[i + 7];
  }
  for (; i < stop; i++) a += words[i];
  const le = foldOnesComplement(a + b);
  p += count << 2;
  for (; p < end; p++) head += ((base + p) & 1) === 0 ? bytes[p] << 8 : bytes[p];
  // Little-endian halves -> big-endian: swap the folded sum.
  let sum = foldOnesComplement(head + (((le & 0xff) << 8) | (le >>> 8)));
  // Words were framed at even absolute positions; from an odd off they are framed one byte off.
  if (oddStart !== 0) sum = ((sum & 0xff) << 8) | (sum >>> 8);
  return sum;
}

/**
 * Sum of the IPv4 pseudo-header for the IP header at ipOff: source and destination addresses,
 * protocol, upper-layer length. NOT folded (below 2^19: a valid `initial` for onesComplementSum),
 * not inverted.
 */
export function pseudoHeaderSum(bytes: Uint8Array, ipOff: number, protocol: number, length: number): number {
  return (
    ((bytes[ipOff + 12] << 8) | bytes[ipOff + 13]) +
    ((bytes[ipOff + 14] << 8) | bytes[ipOff + 15]) +
    ((bytes[ipOff + 16] << 8) | bytes[ipOff + 17]) +
    ((bytes[ipOff + 18] << 8) | bytes[ipOff + 19]) +
    protocol +
    length
  );
}

/** Recomputes and stores the IPv4 header checksum of the header at off (length ihl*4 from its first byte). */
export function writeIpHeaderChecksum(bytes: Uint8Array, off: number): void {
  const end = off + ((bytes[off] & 15) << 2);
  let sum = 0;
  for (let j = off; j < end; j += 2) if (j !== off + 10) sum += (bytes[j] << 8) | bytes[j + 1];
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  const check = ~sum & 0xffff;
  bytes[off + 10] = check >> 8;
  bytes[off + 11] = check & 0xff;
}

/**
 * ipHeaderChecksumOk for a 20-byte IPv4 header held in words[index, index+5) (an index from
 * alignedWordIndex). The sum of the little-endian 16-bit halves folds to 0xffff exactly when the
 * big-endian sum does: a byte swap is a multiplication by 256 modulo 0xffff (256 is invertible),
 * and only all-zero bytes sum to 0 either way. Halves, not whole words: int32 arithmetic only.
 */
export function ipHeader20ChecksumOkWords(words: Uint32Array, index: number): boolean {
  const a = words[index],
    b = words[index + 1],
    c = words[index + 2],
    d = words[index + 3],
    e = words[index + 4];
  let sum =
    (a & 0xffff) +
    (a >>> 16) +
    (b & 0xffff) +
    (b >>> 16) +
    (c & 0xffff) +
    (c >>> 16) +
    (d & 0xffff) +
    (d >>> 16) +
    (e & 0xffff) +
    (e >>> 16); // below 2^20: two folds reach 16 bits
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

/** The IPv4 header at off (ihl*4 bytes) has a valid header checksum. */
export function ipHeaderChecksumOk(bytes: Uint8Array, off: number): boolean {
  const end = off + ((bytes[off] & 15) << 2);
  let sum = 0;
  for (let j = off; j < end; j += 2) sum += (bytes[j] << 8) | bytes[j + 1];
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}
