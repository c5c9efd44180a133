// The Internet checksum (RFC 1071) on the slab: one's-complement sums of big-endian 16-bit words,
// shared by TCP GRO planning (tcp-coalesce.ts) and TCP segmentation / checksum completion
// (tcp-segment.ts). Hot path: no allocation, no closures.
//
// The 32-bit fast path rests on two properties of the one's-complement sum (RFC 1071 section 2):
//  - byte order independence: summing the host's little-endian 16-bit halves gives the byte swap
//    of the big-endian sum, so whole Uint32 words can be added and the folded result swapped once;
//  - parity: a sum whose words start at an odd position is the byte swap of the same bytes summed
//    as if the words started one byte earlier. The fast path therefore sums with word boundaries
//    at even ABSOLUTE positions in the buffer and swaps the result when `off` is odd there.

/** Whether the host stores a Uint32 little-endian (the word path assumes so; otherwise it is off). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

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
 * buffer or a big-endian host falls back to the byte loop (same result).
 */
export function onesComplementSum(bytes: Uint8Array, words: Uint32Array | null, off: number, len: number, initial = 0): number {
  if (words !== null && len >= WORD_PATH_MIN_LEN && sameBuffer(bytes, words)) {
    const base = bytes.byteOffset;
    const wordsStart = words.byteOffset;
    const start = base + off; // absolute position in the buffer
    const end = start + len;
    if (start >= wordsStart && end <= wordsStart + words.length * 4) {
      return foldOnesComplement(initial + wordSum(bytes, words, start - base, end - base, base, wordsStart));
    }
  }
  return foldOnesComplement(initial + byteSum(bytes, off, off + len));
}

// The last (bytes, words) pair checked by sameBuffer: reading `.buffer` costs a call into the
// runtime in V8, too slow for once per packet, and the hot path passes the same pair every time.
let checkedBytes: Uint8Array | null = null;
let checkedWords: Uint32Array | null = null;
let checkedSame = false;

/** words is a view over bytes' ArrayBuffer and the host is little-endian (the word path applies). */
function sameBuffer(bytes: Uint8Array, words: Uint32Array): boolean {
  if (bytes !== checkedBytes || words !== checkedWords) {
    checkedBytes = bytes;
    checkedWords = words;
    checkedSame = LITTLE_ENDIAN && words.buffer === bytes.buffer;
  }
  return checkedSame;
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
function wordSum(bytes: Uint8Array, words: Uint32Array, p: number, end: number, base: number, wordsStart: number): number {
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
  let a = 0, b = 0, i = first;
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
  return ((bytes[ipOff + 12] << 8) | bytes[ipOff + 13]) + ((bytes[ipOff + 14] << 8) | bytes[ipOff + 15]) +
    ((bytes[ipOff + 16] << 8) | bytes[ipOff + 17]) + ((bytes[ipOff + 18] << 8) | bytes[ipOff + 19]) +
    protocol + length;
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

/** The IPv4 header at off (ihl*4 bytes) has a valid header checksum. */
export function ipHeaderChecksumOk(bytes: Uint8Array, off: number): boolean {
  const end = off + ((bytes[off] & 15) << 2);
  let sum = 0;
  for (let j = off; j < end; j += 2) sum += (bytes[j] << 8) | bytes[j + 1];
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}
