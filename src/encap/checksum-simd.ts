// The Internet checksum in WebAssembly SIMD: the one place the hot path leaves TypeScript for
// speed. Summing 16-bit words is the only per-byte work the datapath does in userspace (every TCP
// segment cut from a TSO super-packet, and every one coalesced for flannel0, is checksummed), and
// V8 runs a 128-bit SIMD loop about 4-5x faster than the best TypeScript loop. The module is a few
// hundred bytes, assembled below from a commented listing; it reads the slab directly, because
// the slab lives in the module's memory (checksumMemory), so nothing is copied.
//
// A call from TypeScript into WebAssembly costs a few ns, and TypeScript's own share of a
// checksum (alignment, odd ends, folding) more: so the module sums a range of ANY alignment and
// length by itself (sumRange), and sums MANY ranges laid out at a fixed stride in one call
// (sumStrided: every segment cut from a super-packet, every datagram of a received run), writing
// the sums into a scratch area of the same memory, read back through a typed array.
// Where WebAssembly SIMD is missing, checksumMemory returns a plain buffer and checksum.ts keeps
// its TypeScript loops: same results.

/**
 * sumRange(p, n): the one's-complement sum of memory[p, p+n) as BIG-endian 16-bit words counted
 * from p (an odd n pads a zero byte), folded to 16 bits, not inverted: exactly
 * onesComplementSum(memory, null, p, n) of checksum.ts. Any p, any n in [0, SIMD_RANGE_MAX].
 */
export type SimdRangeSum = (p: number, n: number) => number;

/**
 * sumStrided(p, stride, count, len, lastLen, out): for k in [0, count), the sumRange of range k,
 * memory[p + k*stride, + len) for k < count - 1 and memory[p + k*stride, + lastLen) for the last,
 * stored as a little-endian u32 at out + 4k. Nothing for count 0. Lengths in [0, SIMD_RANGE_MAX];
 * stride any non-negative integer (ranges may overlap or leave gaps); out 4-aligned.
 */
export type SimdStridedSum = (
  p: number,
  stride: number,
  count: number,
  len: number,
  lastLen: number,
  out: number,
) => void;

/** The most bytes one range may have: the SIMD lanes (u32) cannot overflow below 1 MiB (see the listing). */
export const SIMD_RANGE_MAX = 1 << 20;

/** How many sums the scratch area of a checksumMemory holds: the most ranges per sumStrided call through it. */
export const STRIDED_SUMS_MAX = 256;

/** The WebAssembly checksum of one checksumMemory. */
export interface SimdChecksum {
  readonly sumRange: SimdRangeSum;
  readonly sumStrided: SimdStridedSum;
  /** The scratch area: STRIDED_SUMS_MAX u32 sums at byte offset `sumsAt` of the memory, after the caller's bytes. */
  readonly sums: Uint32Array;
  readonly sumsAt: number;
}

const WASM_PAGE = 65536;

/** The checksum for each ArrayBuffer made by checksumMemory. */
const checksums = new WeakMap<ArrayBuffer, SimdChecksum>();

/**
 * A zeroed byte buffer of `length` bytes at the start of a WebAssembly memory of fixed size, with
 * the SIMD checksum registered for it (see simdChecksumFor) and its scratch area after those bytes
 * (outside the returned view); a plain Uint8Array where WebAssembly SIMD is unavailable.
 */
export function checksumMemory(length: number): Uint8Array {
  const module = compiled();
  if (module !== null) {
    try {
      const sumsAt = Math.ceil(length / 16) * 16;
      const pages = Math.max(1, Math.ceil((sumsAt + STRIDED_SUMS_MAX * 4) / WASM_PAGE));
      const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
      const instance = new WebAssembly.Instance(module, { env: { mem: memory } });
      checksums.set(memory.buffer, {
        sumRange: instance.exports['sumRange'] as SimdRangeSum,
        sumStrided: instance.exports['sumStrided'] as SimdStridedSum,
        sums: new Uint32Array(memory.buffer, sumsAt, STRIDED_SUMS_MAX),
        sumsAt,
      });
      return new Uint8Array(memory.buffer, 0, length);
    } catch {
      // Out of address space for another memory: the plain buffer below does the same job.
    }
  }
  return new Uint8Array(length);
}

/** The SIMD checksum over buffer (memory offsets = byte positions in buffer), or null. */
export function simdChecksumFor(buffer: ArrayBufferLike): SimdChecksum | null {
  return checksums.get(buffer as ArrayBuffer) ?? null;
}

let module: WebAssembly.Module | null | undefined;

function compiled(): WebAssembly.Module | null {
  if (module === undefined) {
    try {
      module = new WebAssembly.Module(assemble());
    } catch {
      module = null; // no WebAssembly SIMD on this engine
    }
  }
  return module;
}

// ---------------------------------------------------------------- the module, assembled

/** Unsigned LEB128 (indices, sizes, offsets). */
const leb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
};
/** Signed LEB128 of a non-negative integer below 2^53 (the operand of i32.const and i64.const). */
const sleb = (n: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const b = n % 128;
    n = Math.floor(n / 128);
    // Done when the rest is 0 and the sign bit (0x40) of this byte is clear.
    if (n === 0 && (b & 0x40) === 0) return [...out, b];
    out.push(b | 0x80);
  }
};
const name = (s: string): number[] => [s.length, ...Array.from(s, (c) => c.charCodeAt(0))];
const section = (id: number, bytes: number[]): number[] => [id, ...leb(bytes.length), ...bytes];
const vector = (items: number[][]): number[] => [...leb(items.length), ...items.flat()];

// Opcodes used (WebAssembly core 2.0; SIMD ones behind the 0xfd prefix). Memory accesses take a
// memarg: alignment hint (log2; 0 = byte-aligned, always valid) and a constant offset.
const I32 = 0x7f,
  I64 = 0x7e,
  V128 = 0x7b,
  VOID = 0x40;
const BLOCK = 0x02,
  LOOP = 0x03,
  IF = 0x04,
  BR = 0x0c,
  BR_IF = 0x0d,
  END = 0x0b,
  CALL = 0x10;
const LOCAL_GET = 0x20,
  LOCAL_SET = 0x21;
const I32_CONST = 0x41,
  I64_CONST = 0x42;
const I32_LE_S = 0x4c,
  I32_LT_U = 0x49,
  I32_GE_U = 0x4f;
const I32_ADD = 0x6a,
  I32_SUB = 0x6b,
  I32_AND = 0x71,
  I32_OR = 0x72,
  I32_SHL = 0x74,
  I32_SHR_U = 0x76;
const I64_ADD = 0x7c,
  I64_AND = 0x83,
  I64_SHR_U = 0x88,
  I32_WRAP_I64 = 0xa7;
const i64Load = (offset: number): number[] => [0x29, 0x00, ...leb(offset)];
const i64Load32U = (offset: number): number[] => [0x35, 0x00, ...leb(offset)];
const i64Load16U = (offset: number): number[] => [0x33, 0x00, ...leb(offset)];
const i64Load8U = (offset: number): number[] => [0x31, 0x00, ...leb(offset)];
const i32Store = (offset: number): number[] => [0x36, 0x02, ...leb(offset)];
const v128Load = (offset: number): number[] => [0xfd, 0x00, 0x00, ...leb(offset)];
const V128_ZERO = [0xfd, 0x0c, ...new Array<number>(16).fill(0)];
const I32X4_EXTADD_PAIRWISE_I16X8_U = [0xfd, 0x7f];
const I32X4_ADD = [0xfd, 0xae, 0x01];
const I64X2_EXTEND_LOW_I32X4_U = [0xfd, 0xc9, 0x01];
const I64X2_EXTEND_HIGH_I32X4_U = [0xfd, 0xca, 0x01];
const I64X2_ADD = [0xfd, 0xce, 0x01];
const i64x2ExtractLane = (lane: number): number[] => [0xfd, 0x1d, lane];

/** Function indices (the order of the function and code sections). */
const FN_SUM_RANGE = 0,
  FN_SUM_STRIDED = 1;

/** Locals of sumRange: parameters p and n; then end (i32); accumulators a, b (v128); s, x (i64). */
const P = 0,
  N = 1,
  END_P = 2,
  ACC_A = 3,
  ACC_B = 4,
  S = 5,
  X = 6;

/**
 * The body of sumRange. The bytes are read as LITTLE-endian 16-bit words framed from p (loads
 * need no alignment): their sum, folded, is the byte swap of the big-endian sum framed from p
 * (RFC 1071 section 2, byte order independence), so one swap at the end gives the result.
 */
function sumRangeBody(): number[] {
  // acc += extadd_pairwise_u(load(p + offset)): eight u16 lanes summed pairwise into four u32
  // lanes, each growing by at most 2 * 0xffff per load: no overflow within SIMD_RANGE_MAX bytes
  // (2^20 / 32 loads per accumulator lane, 2^15 * 0x1fffe < 2^32).
  const accumulate = (acc: number, offset: number): number[] => [
    LOCAL_GET,
    acc,
    LOCAL_GET,
    P,
    ...v128Load(offset),
    ...I32X4_EXTADD_PAIRWISE_I16X8_U,
    ...I32X4_ADD,
    LOCAL_SET,
    acc,
  ];
  // end - p >= k (p never passes end)
  const remainingAtLeast = (k: number): number[] => [
    LOCAL_GET,
    END_P,
    LOCAL_GET,
    P,
    I32_SUB,
    I32_CONST,
    ...sleb(k),
    I32_GE_U,
  ];
  const advance = (k: number): number[] => [LOCAL_GET, P, I32_CONST, ...sleb(k), I32_ADD, LOCAL_SET, P];
  // s += value on the stack (i64)
  const addToS = [LOCAL_GET, S, I64_ADD, LOCAL_SET, S];
  return [
    ...vector([
      [1, I32],
      [2, V128],
      [2, I64],
    ]), // locals: end; a, b; s, x
    LOCAL_GET,
    P,
    LOCAL_GET,
    N,
    I32_ADD,
    LOCAL_SET,
    END_P,
    ...V128_ZERO,
    LOCAL_SET,
    ACC_A,
    ...V128_ZERO,
    LOCAL_SET,
    ACC_B,
    // Main loop, 64 bytes a step, alternating two accumulators (independent adds).
    BLOCK,
    VOID,
    LOOP,
    VOID,
    LOCAL_GET,
    END_P,
    LOCAL_GET,
    P,
    I32_SUB,
    I32_CONST,
    ...sleb(64),
    I32_LT_U,
    BR_IF,
    1, // while end - p >= 64
    ...accumulate(ACC_A, 0),
    ...accumulate(ACC_B, 16),
    ...accumulate(ACC_A, 32),
    ...accumulate(ACC_B, 48),
    ...advance(64),
    BR,
    0,
    END,
    END,
    // The rest, below 64 bytes: one 32-byte step, one 16-byte step, if they fit.
    ...remainingAtLeast(32),
    IF,
    VOID,
    ...accumulate(ACC_A, 0),
    ...accumulate(ACC_B, 16),
    ...advance(32),
    END,
    ...remainingAtLeast(16),
    IF,
    VOID,
    ...accumulate(ACC_A, 0),
    ...advance(16),
    END,
    // Below 16 bytes, scalar: 8 bytes as two u32 words (2^16 = 1 modulo 0xffff, so a u32 word
    // adds the same as its two u16 halves), then 4, 2 and 1 byte (the last alone is the low byte
    // of a little-endian word whose high byte is the zero pad).
    ...remainingAtLeast(8),
    IF,
    VOID,
    LOCAL_GET,
    P,
    ...i64Load(0),
    LOCAL_SET,
    X,
    LOCAL_GET,
    X,
    I64_CONST,
    ...sleb(0xffffffff),
    I64_AND,
    ...addToS,
    LOCAL_GET,
    X,
    I64_CONST,
    32,
    I64_SHR_U,
    ...addToS,
    ...advance(8),
    END,
    ...remainingAtLeast(4),
    IF,
    VOID,
    LOCAL_GET,
    P,
    ...i64Load32U(0),
    ...addToS,
    ...advance(4),
    END,
    ...remainingAtLeast(2),
    IF,
    VOID,
    LOCAL_GET,
    P,
    ...i64Load16U(0),
    ...addToS,
    ...advance(2),
    END,
    ...remainingAtLeast(1),
    IF,
    VOID,
    LOCAL_GET,
    P,
    ...i64Load8U(0),
    ...addToS,
    END,
    // s += the eight u32 lanes of a and b, widened to u64: (lo(a) + hi(a)) + (lo(b) + hi(b)),
    // then the two u64 lanes of that.
    LOCAL_GET,
    ACC_A,
    ...I64X2_EXTEND_LOW_I32X4_U,
    LOCAL_GET,
    ACC_A,
    ...I64X2_EXTEND_HIGH_I32X4_U,
    ...I64X2_ADD,
    LOCAL_GET,
    ACC_B,
    ...I64X2_EXTEND_LOW_I32X4_U,
    LOCAL_GET,
    ACC_B,
    ...I64X2_EXTEND_HIGH_I32X4_U,
    ...I64X2_ADD,
    ...I64X2_ADD,
    LOCAL_SET,
    ACC_A,
    LOCAL_GET,
    ACC_A,
    ...i64x2ExtractLane(0),
    ...addToS,
    LOCAL_GET,
    ACC_A,
    ...i64x2ExtractLane(1),
    ...addToS,
    // Fold to 16 bits with end-around carry (0 stays 0): s < 2^35 (at most 2^19 words of 0xffff),
    // so s < 2^16 + 2^19 after one round, < 2^16 + 2^4 after two, <= 0xffff after three.
    ...[0, 1, 2].flatMap(() => [
      LOCAL_GET,
      S,
      I64_CONST,
      ...sleb(0xffff),
      I64_AND,
      LOCAL_GET,
      S,
      I64_CONST,
      16,
      I64_SHR_U,
      I64_ADD,
      LOCAL_SET,
      S,
    ]),
    // Little-endian sum -> big-endian: swap the two bytes of the folded sum.
    LOCAL_GET,
    S,
    I32_WRAP_I64,
    LOCAL_SET,
    N,
    LOCAL_GET,
    N,
    I32_CONST,
    ...sleb(0xff),
    I32_AND,
    I32_CONST,
    8,
    I32_SHL,
    LOCAL_GET,
    N,
    I32_CONST,
    8,
    I32_SHR_U,
    I32_OR,
    END,
  ];
}

/** Parameters of sumStrided (it has no other locals). */
const SP = 0,
  STRIDE = 1,
  COUNT = 2,
  LEN = 3,
  LAST_LEN = 4,
  OUT = 5;

/** The body of sumStrided: sumRange over each range but the last, then the last with lastLen. */
function sumStridedBody(): number[] {
  const store = (len: number): number[] => [
    LOCAL_GET,
    OUT,
    LOCAL_GET,
    SP,
    LOCAL_GET,
    len,
    CALL,
    FN_SUM_RANGE,
    ...i32Store(0),
  ];
  return [
    0, // no locals
    BLOCK,
    VOID,
    LOOP,
    VOID,
    LOCAL_GET,
    COUNT,
    I32_CONST,
    1,
    I32_LE_S,
    BR_IF,
    1, // while count > 1
    ...store(LEN),
    LOCAL_GET,
    SP,
    LOCAL_GET,
    STRIDE,
    I32_ADD,
    LOCAL_SET,
    SP,
    LOCAL_GET,
    OUT,
    I32_CONST,
    4,
    I32_ADD,
    LOCAL_SET,
    OUT,
    LOCAL_GET,
    COUNT,
    I32_CONST,
    1,
    I32_SUB,
    LOCAL_SET,
    COUNT,
    BR,
    0,
    END,
    END,
    // count is now 1 (the last range) or 0 (there were none).
    LOCAL_GET,
    COUNT,
    IF,
    VOID,
    ...store(LAST_LEN),
    END,
    END,
  ];
}

function assemble(): Uint8Array<ArrayBuffer> {
  const bodies = [sumRangeBody(), sumStridedBody()];
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00, // "\0asm", version 1
    ...section(
      1,
      vector([
        [0x60, 2, I32, I32, 1, I32], // type 0: (i32, i32) -> i32
        [0x60, 6, I32, I32, I32, I32, I32, I32, 0], // type 1: (i32 x 6) -> ()
      ]),
    ),
    ...section(2, [1, ...name('env'), ...name('mem'), 0x02, 0x00, 0x01]), // import memory env.mem, min 1 page
    ...section(3, vector([[0], [1]])), // function FN_SUM_RANGE has type 0, FN_SUM_STRIDED type 1
    ...section(
      7,
      vector([
        [...name('sumRange'), 0x00, FN_SUM_RANGE],
        [...name('sumStrided'), 0x00, FN_SUM_STRIDED],
      ]),
    ),
    ...section(10, vector(bodies.map((body) => [...leb(body.length), ...body]))),
  ]);
}
