// The many-ranges checksum: the WebAssembly sumRange and sumStrided of src/encap/checksum-simd.ts
// and stridedSums of src/encap/checksum.ts, against the plain reference `onesSum` of
// test/helpers/tcp-segments.ts (random ranges, strides, counts, alignments, lengths 0..2000, over
// the SIMD memory and the plain-buffer fallback); then the two callers over a checksumMemory, as
// the slab is: TCP segmentation (byte-identical to the byte path, every segment's checksum valid)
// and GRO planning (the reference plan, byte-identical to the byte path, bad checksums never
// coalesced) with packets laid out at the strides of received runs.
// Randomized tests print their seed on failure; rerun one with STRIDED_SEED=<seed>.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { onesComplementSum, STRIDED_SUMS_CAPACITY, stridedSums } from '../../src/encap/checksum.js';
import {
  checksumMemory,
  SIMD_RANGE_MAX,
  simdChecksumFor,
  STRIDED_SUMS_MAX,
  type SimdChecksum,
} from '../../src/encap/checksum-simd.js';
import { planCoalescing, VNET_HDR_SLOT } from '../../src/encap/tcp-coalesce.js';
import { SEGMENT_HEADER_CELL, segmentTcpSuperPacket, tcpSegmentCount } from '../../src/encap/tcp-segment.js';
import { runSeeded, seedsFor, randomBytes } from '../helpers/prng.js';
import {
  TCP_ACK,
  TCP_PSH,
  buildTcpPacket,
  buildUdpDatagram,
  onesSum,
  parseUdpPacket,
  referenceMixedPlan,
  tcpChecksumValid,
} from '../helpers/tcp-segments.js';

const seeds = (count: number, base: number): number[] => seedsFor('STRIDED_SEED', count, base);
const withSeed = (name: string, seed: number, body: (rand: () => number) => void): void =>
  runSeeded(`encap-checksum-strided ${name}`, 'STRIDED_SEED', seed, body);

/** Fill styles: random bytes, all 0xff (carries everywhere), all zero, sparse. */
function fillRandom(b: Uint8Array, rand: () => number, style: number): void {
  for (let i = 0; i < b.length; i++) {
    b[i] = style === 0 ? rand() & 0xff : style === 1 ? 0xff : style === 2 ? 0 : rand() % 7 === 0 ? rand() & 0xff : 0;
  }
}

function simdOf(bytes: Uint8Array): SimdChecksum {
  const simd = simdChecksumFor(bytes.buffer);
  assert.ok(simd !== null, 'no WebAssembly SIMD on this engine: checksumMemory gave a plain buffer');
  return simd;
}

/** A random stride layout that fits in `size` bytes from p: ranges of len, the last of lastLen. */
function randomStrided(
  rand: () => number,
  size: number,
  maxCount: number,
): { p: number; stride: number; count: number; len: number; lastLen: number } {
  for (;;) {
    const len = rand() % 4 === 0 ? rand() % 64 : rand() % 2001;
    const lastLen = rand() % 3 === 0 ? len : rand() % 2001;
    // Back to back, with gaps, overlapping, or all at one place (stride 0).
    const shape = rand() % 4;
    const stride = shape === 0 ? len : shape === 1 ? len + (rand() % 700) : shape === 2 ? rand() % (len + 1) : 0;
    const count = rand() % 8 === 0 ? 0 : 1 + (rand() % maxCount);
    const span = count === 0 ? 0 : (count - 1) * stride + Math.max(count > 1 ? len : 0, lastLen);
    if (span > size) continue;
    return { p: rand() % (size - span + 1), stride, count, len, lastLen };
  }
}

/** The reference sums of a stride layout (range k of len bytes, the last of lastLen). */
function referenceSums(
  bytes: Uint8Array,
  p: number,
  stride: number,
  count: number,
  len: number,
  lastLen: number,
): number[] {
  return Array.from({ length: count }, (_, k) => onesSum(bytes, p + k * stride, k === count - 1 ? lastLen : len));
}

describe('sumRange (WebAssembly): any alignment, any length', () => {
  for (const seed of seeds(4, 0x5a0000)) {
    test(`every start alignment mod 16, lengths 0..2000 and some to 70000: = reference (seed ${seed})`, () => {
      withSeed('range', seed, (rand) => {
        const bytes = checksumMemory(80_000);
        fillRandom(bytes, rand, seed % 4);
        const { sumRange } = simdOf(bytes);
        for (let t = 0; t < 3000; t++) {
          const len = t < 2001 ? t : rand() % 70_000;
          const p = (rand() % ((bytes.length - len) >> 4)) * 16 + (t % 16);
          if (p + len > bytes.length) continue;
          assert.equal(sumRange(p, len), onesSum(bytes, p, len), `p ${p} len ${len}`);
        }
      });
    });
  }

  test('the largest range, SIMD_RANGE_MAX bytes of 0xff at odd and even starts, and 0 only for zero bytes', () => {
    const bytes = checksumMemory(SIMD_RANGE_MAX + 64).fill(0xff);
    const { sumRange } = simdOf(bytes);
    for (const p of [0, 1, 3, 16]) {
      assert.equal(sumRange(p, SIMD_RANGE_MAX), 0xffff, `p ${p}`);
      assert.equal(sumRange(p, SIMD_RANGE_MAX - 1), 0xff00, `p ${p}, odd length: ff00 pad`);
    }
    bytes.fill(0, 100, 300);
    assert.equal(sumRange(100, 200), 0, 'zero bytes sum to 0');
    assert.equal(sumRange(100, 0), 0, 'empty range');
    bytes[299] = 1; // the last byte of an even-length range is a low byte
    assert.equal(sumRange(100, 200), 1);
    assert.equal(sumRange(101, 199), 0x100, 'from an odd start the same byte is a high byte');
  });
});

describe('sumStrided (WebAssembly): many ranges in one call', () => {
  for (const seed of seeds(6, 0x5a1000)) {
    test(`random strides (back to back, gaps, overlapping, 0), counts 0..${STRIDED_SUMS_MAX}, lengths 0..2000: = reference (seed ${seed})`, () => {
      withSeed('strided', seed, (rand) => {
        const bytes = checksumMemory(200_000);
        fillRandom(bytes, rand, seed % 4);
        const { sumStrided, sums, sumsAt } = simdOf(bytes);
        assert.equal(sums.length, STRIDED_SUMS_MAX);
        assert.ok(sumsAt >= bytes.length, "the scratch area lies after the caller's bytes");
        let ranges = 0;
        for (let t = 0; t < 300; t++) {
          const { p, stride, count, len, lastLen } = randomStrided(
            rand,
            bytes.length,
            t % 10 === 0 ? STRIDED_SUMS_MAX : 64,
          );
          sums.fill(0xdeadbeef);
          sumStrided(p, stride, count, len, lastLen, sumsAt);
          const what = `p ${p} stride ${stride} count ${count} len ${len} lastLen ${lastLen}`;
          assert.deepEqual(
            Array.from(sums.subarray(0, count)),
            referenceSums(bytes, p, stride, count, len, lastLen),
            what,
          );
          assert.ok(
            sums.subarray(count).every((x) => x === 0xdeadbeef),
            `${what}: wrote beyond count`,
          );
          ranges += count;
        }
        assert.ok(ranges > 5000, `ranges summed: ${ranges}`);
      });
    });
  }

  test("writes only its output: the caller's bytes are untouched", () => {
    const bytes = checksumMemory(10_000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 97 + 13) & 0xff;
    const before = bytes.slice();
    const { sumStrided, sums, sumsAt } = simdOf(bytes);
    sumStrided(3, 1001, 9, 1000, 999, sumsAt);
    assert.deepEqual(bytes, before);
    assert.equal(sums[8], onesSum(bytes, 3 + 8 * 1001, 999));
  });
});

describe('stridedSums (checksum.ts): the SIMD memory and the TypeScript fallback agree', () => {
  for (const seed of seeds(4, 0x5a2000)) {
    test(`SIMD memory with words, without words, at an odd view offset; plain buffer with and without words (seed ${seed})`, () => {
      withSeed('stridedSums', seed, (rand) => {
        const size = 60_000;
        const simdWhole = checksumMemory(size + 8);
        const plainWhole = new Uint8Array(size + 8);
        fillRandom(simdWhole, rand, seed % 4);
        plainWhole.set(simdWhole);
        const simdWords = new Uint32Array(simdWhole.buffer);
        const plainWords = new Uint32Array(plainWhole.buffer);
        const viewStart = 1 + (rand() % 7);
        const variants = [
          {
            name: 'SIMD, words',
            bytes: simdWhole.subarray(0, size),
            words: simdWords as Uint32Array | null,
            wasm: true,
          },
          {
            name: 'SIMD, view at an odd byteOffset',
            bytes: simdWhole.subarray(viewStart, viewStart + size),
            words: simdWords,
            wasm: true,
          },
          { name: 'SIMD memory, no words (byte path)', bytes: simdWhole.subarray(0, size), words: null, wasm: false },
          { name: 'plain buffer, words', bytes: plainWhole.subarray(0, size), words: plainWords, wasm: false },
          {
            name: 'plain buffer, view, words',
            bytes: plainWhole.subarray(viewStart, viewStart + size),
            words: plainWords,
            wasm: false,
          },
          { name: 'plain buffer, no words', bytes: plainWhole.subarray(0, size), words: null, wasm: false },
        ];
        const scratch = simdOf(simdWhole).sums;
        for (let t = 0; t < 120; t++) {
          const { p, stride, count, len, lastLen } = randomStrided(
            rand,
            size,
            t % 6 === 0 ? STRIDED_SUMS_CAPACITY : 40,
          );
          const want = referenceSums(variants[0].bytes, p, stride, count, len, lastLen);
          for (const v of variants) {
            const what = `${v.name}: p ${p} stride ${stride} count ${count} len ${len} lastLen ${lastLen}`;
            if (v.bytes.byteOffset !== 0) {
              // Another view: its own reference (positions are relative to the view).
              const own = referenceSums(v.bytes, p, stride, count, len, lastLen);
              const got = stridedSums(v.bytes, v.words, p, stride, count, len, lastLen);
              assert.equal(got === scratch, v.wasm, `${what}: which path`);
              assert.deepEqual(Array.from(got.subarray(0, count)), own, what);
              continue;
            }
            const got = stridedSums(v.bytes, v.words, p, stride, count, len, lastLen);
            assert.equal(got === scratch, v.wasm, `${what}: which path`);
            assert.deepEqual(Array.from(got.subarray(0, count)), want, what);
            // The documented way to add an initial gives onesComplementSum's value with it.
            if (count > 0) {
              const initial = rand() % 0x80000;
              assert.equal(
                foldWith(initial, got[0]),
                onesComplementSum(v.bytes, v.words, p, count === 1 ? lastLen : len, initial),
                what,
              );
            }
          }
        }
      });
    });
  }
});

/** foldOnesComplement(initial + sum), spelled out (sums below 2^20). */
function foldWith(initial: number, sum: number): number {
  let s = initial + sum;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

describe('onesComplementSum over a checksumMemory beyond one SIMD range', () => {
  test(`ranges longer than SIMD_RANGE_MAX (${SIMD_RANGE_MAX}) fall back to the word loop: = reference`, () => {
    const bytes = checksumMemory(2 * SIMD_RANGE_MAX + 64).fill(0xff);
    const words = new Uint32Array(bytes.buffer);
    for (let i = 0; i < bytes.length; i += 4099) bytes[i] = i & 0xff;
    for (const [off, len] of [
      [0, SIMD_RANGE_MAX + 1],
      [1, 2 * SIMD_RANGE_MAX],
      [3, SIMD_RANGE_MAX],
      [2, SIMD_RANGE_MAX + 2],
    ]) {
      assert.equal(
        onesComplementSum(bytes, words, off, len, 12345),
        onesSum(bytes, off, len, 12345),
        `off ${off} len ${len}`,
      );
    }
  });
});

// ---------------------------------------------------------------- the callers over a checksumMemory

const TIMESTAMPS = new Uint8Array([1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0]);

describe('segmentTcpSuperPacket over a checksumMemory (payload sums in strided WebAssembly calls)', () => {
  for (const seed of seeds(6, 0x5a3000)) {
    test(`random super-packets, gso sizes (chunks beyond ${STRIDED_SUMS_CAPACITY} segments), chunkings and alignments: = byte path, checksums valid (seed ${seed})`, () => {
      withSeed('segment', seed, (rand) => {
        for (let t = 0; t < 12; t++) {
          const payloadLen = t === 0 ? 60_000 : 1 + (rand() % 40_000);
          const sp = buildTcpPacket({
            src: rand() >>> 0,
            dst: rand() >>> 0,
            ttl: 63,
            id: rand() & 0xffff,
            df: true,
            sport: rand() & 0xffff,
            dport: 5201,
            seq: rand() >>> 0,
            ack: rand() >>> 0,
            flags: TCP_ACK | (rand() % 2 === 0 ? TCP_PSH : 0),
            window: rand() & 0xffff,
            tcpOptions: rand() % 3 === 0 ? undefined : TIMESTAMPS,
            payload: randomBytes(rand, payloadLen),
          });
          // Small gso sizes make hundreds of segments per chunk; odd ones odd payload starts.
          const gsoSize = t === 0 ? 100 : rand() % 3 === 0 ? 1 + (rand() % 200) : 500 + (rand() % 1500);
          const total = tcpSegmentCount(sp, 0, sp.length, gsoSize, 65535);
          assert.ok(total >= 1);
          const spOff = 64 + (rand() % 8);
          const cellBase = spOff + sp.length + 64;
          const size = cellBase + total * SEGMENT_HEADER_CELL + 8;
          const simd = checksumMemory(size);
          const plain = new Uint8Array(size);
          simd.set(sp, spOff);
          plain.set(sp, spOff);
          const slotOffsets = Uint32Array.from({ length: total }, (_, i) => cellBase + i * SEGMENT_HEADER_CELL);
          const outs = [0, 1].map(() => ({
            lens: new Int32Array(total),
            extOffs: new Uint32Array(total),
            extLens: new Uint16Array(total),
          }));
          // Chunks as the forwarder cuts them: up to maxCells at a time.
          const maxCells = rand() % 2 === 0 ? total : 1 + (rand() % 400);
          const [a, b] = outs;
          for (let done = 0; done < total;) {
            const n = segmentTcpSuperPacket(
              simd,
              new Uint32Array(simd.buffer),
              spOff,
              sp.length,
              gsoSize,
              65535,
              done,
              slotOffsets,
              done,
              maxCells,
              a.lens,
              a.extOffs,
              a.extLens,
            );
            const m = segmentTcpSuperPacket(
              plain,
              null,
              spOff,
              sp.length,
              gsoSize,
              65535,
              done,
              slotOffsets,
              done,
              maxCells,
              b.lens,
              b.extOffs,
              b.extLens,
            );
            assert.equal(n, m);
            assert.equal(n, Math.min(maxCells, total - done));
            done += n;
          }
          assert.deepEqual(
            simd,
            plain,
            `gso ${gsoSize}, ${total} segments: the SIMD memory differs from the byte path`,
          );
          assert.deepEqual(a, b);
          // Independently: every segment is a valid TCP packet.
          for (let k = 0; k < total; k++) {
            const c = slotOffsets[k];
            const segment = new Uint8Array(a.lens[k] + a.extLens[k]);
            segment.set(simd.subarray(c, c + a.lens[k]));
            segment.set(simd.subarray(a.extOffs[k], a.extOffs[k] + a.extLens[k]), a.lens[k]);
            assert.ok(tcpChecksumValid(segment), `segment ${k} of ${total}, gso ${gsoSize}`);
          }
        }
      });
    });
  }
});

interface Flow {
  src: number;
  dst: number;
  sport: number;
  dport: number;
  seq: number;
  id: number;
}

/**
 * A batch as received: runs of one flow's TCP segments or UDP datagrams (equal payloads, the last
 * of a run maybe shorter), with single packets and flows mixed in, some with a corrupted payload
 * byte (a bad L4 checksum) or, for UDP, no checksum.
 */
function randomBatch(rand: () => number, count: number): { packets: Uint8Array[]; runs: number[] } {
  const packets: Uint8Array[] = [];
  const runs: number[] = [];
  const flows: Flow[] = Array.from({ length: 3 }, () => ({
    src: rand() >>> 0,
    dst: rand() >>> 0,
    sport: rand() & 0xffff,
    dport: rand() & 0xffff,
    seq: rand() >>> 0,
    id: rand() & 0xffff,
  }));
  while (packets.length < count) {
    const flow = flows[rand() % flows.length];
    const udp = rand() % 3 === 0;
    const payload = rand() % 5 === 0 ? 1 + (rand() % 200) : 600 + (rand() % 900);
    const n = Math.min(count - packets.length, 1 + (rand() % 70));
    runs.push(n);
    for (let j = 0; j < n; j++) {
      const len = j === n - 1 && rand() % 2 === 0 ? 1 + (rand() % payload) : payload;
      let p: Uint8Array;
      if (udp) {
        p = buildUdpDatagram({
          src: flow.src,
          dst: flow.dst,
          sport: flow.sport,
          dport: flow.dport,
          id: flow.id,
          ttl: 63,
          df: true,
          payload: randomBytes(rand, len),
          noChecksum: rand() % 40 === 0,
        });
      } else {
        p = buildTcpPacket({
          src: flow.src,
          dst: flow.dst,
          ttl: 63,
          id: flow.id,
          df: true,
          sport: flow.sport,
          dport: flow.dport,
          seq: flow.seq,
          ack: 1,
          flags: TCP_ACK | (rand() % 30 === 0 ? TCP_PSH : 0),
          window: 500,
          tcpOptions: TIMESTAMPS,
          payload: randomBytes(rand, len),
        });
        flow.seq = (flow.seq + len) >>> 0;
      }
      flow.id = (flow.id + 1) & 0xffff;
      // A corrupted byte after the headers: the L4 checksum no longer verifies.
      if (rand() % 12 === 0) p[40 + (rand() % (p.length - 40 || 1))] ^= 1 << (rand() % 8);
      packets.push(p);
    }
  }
  return { packets, runs };
}

/**
 * Slot offsets for the batch: every run back to back at the stride of its first packet (as the
 * datagrams of a UDP GRO run lie in one receive slot), uniform slots, or random misaligned slots
 * in shuffled order.
 */
function layout(
  rand: () => number,
  packets: Uint8Array[],
  runs: number[],
  mode: number,
): { offsets: number[]; size: number } {
  const offsets: number[] = [];
  let at = rand() % 8;
  if (mode === 0) {
    let i = 0;
    for (const n of runs) {
      const stride = packets[i].length;
      for (let j = 0; j < n; j++) offsets.push(at + j * stride);
      at += n * stride + (rand() % 64);
      i += n;
    }
  } else if (mode === 1) {
    for (let i = 0; i < packets.length; i++) offsets.push(at + i * 2048);
    at += packets.length * 2048;
  } else {
    const order = packets.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = rand() % (i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    const slots: number[] = [];
    for (const i of order) {
      slots[i] = at;
      at += packets[i].length + (rand() % 16);
    }
    offsets.push(...slots);
  }
  return { offsets, size: at + 8 };
}

describe('planCoalescing over a checksumMemory (L4 sums per stretch of the list)', () => {
  for (const seed of seeds(8, 0x5a4000)) {
    test(`mixed TCP/UDP runs laid out back to back, uniform or at random, with bad checksums: = reference plan, = byte path (seed ${seed})`, () => {
      withSeed('plan', seed, (rand) => {
        for (let t = 0; t < 6; t++) {
          const count = t === 0 ? 600 : 1 + (rand() % 300);
          const { packets, runs } = randomBatch(rand, count);
          const mode = t % 3;
          const { offsets, size } = layout(rand, packets, runs, mode);
          const simd = checksumMemory(size);
          const plain = new Uint8Array(size);
          const slotOffsets = Uint32Array.from(offsets);
          const lens = Int32Array.from(packets, (p) => p.length);
          packets.forEach((p, i) => {
            simd.set(p, offsets[i]);
            plain.set(p, offsets[i]);
          });
          const list = Uint16Array.from(packets, (_, i) => i);
          const results = [
            { bytes: simd, words: new Uint32Array(simd.buffer) as Uint32Array | null },
            { bytes: plain, words: null },
          ].map(({ bytes, words }) => {
            const offs = new Uint16Array(count),
              vnet = new Uint8Array(count * VNET_HDR_SLOT),
              groupLens = new Uint16Array(count);
            const groups = planCoalescing(bytes, slotOffsets, lens, offs, vnet, list, count, groupLens, 65535, words);
            return { groups, offs, vnet, groupLens };
          });
          const [s, p] = results;
          const what = `layout ${mode}, ${count} packets`;
          const expected = referenceMixedPlan(
            packets.map((x) => parseUdpPacket(x)),
            65535,
          );
          assert.deepEqual(Array.from(s.groupLens), expected, `${what}: the reference plan`);
          assert.ok(s.groups > 0, `${what}: something coalesced`);
          assert.deepEqual(s, p, `${what}: = the byte path`);
          assert.deepEqual(simd, plain, `${what}: patched headers = the byte path's`);
          // The contract, directly: a packet whose L4 checksum does not verify is never grouped.
          for (let i = 0; i < count; i++) {
            const udp = packets[i][9] === 17;
            const valid = udp
              ? onesSum(packets[i], 20, packets[i].length - 20, partialOf(packets[i], 17)) === 0xffff
              : tcpChecksumValid(packets[i]);
            if (!valid) assert.equal(s.groupLens[i], 1, `${what}: packet ${i} has a bad checksum yet was grouped`);
          }
        }
      });
    });
  }

  test(`a back-to-back run longer than one stretch (${STRIDED_SUMS_CAPACITY}): groups of 64 across the stretch boundary`, () => {
    const count = STRIDED_SUMS_CAPACITY + 44;
    const flow = { src: 0x0a000001, dst: 0x0a000002 };
    const packets = Array.from({ length: count }, (_, i) =>
      buildUdpDatagram({
        ...flow,
        sport: 1000,
        dport: 2000,
        id: i,
        ttl: 63,
        df: true,
        payload: new Uint8Array(100).fill(i & 0xff),
      }),
    );
    // One bad checksum at the first position of the second stretch: it stands alone.
    packets[STRIDED_SUMS_CAPACITY][60] ^= 0x10;
    const stride = packets[0].length;
    const bytes = checksumMemory(count * stride);
    packets.forEach((p, i) => bytes.set(p, i * stride));
    const slotOffsets = Uint32Array.from(packets, (_, i) => i * stride);
    const lens = Int32Array.from(packets, (p) => p.length);
    const groupLens = new Uint16Array(count);
    const groups = planCoalescing(
      bytes,
      slotOffsets,
      lens,
      new Uint16Array(count),
      new Uint8Array(count * VNET_HDR_SLOT),
      Uint16Array.from(packets, (_, i) => i),
      count,
      groupLens,
      65535,
      new Uint32Array(bytes.buffer),
    );
    const leaders = Array.from(groupLens)
      .map((k, i) => [i, k])
      .filter(([, k]) => k > 0);
    // 256 = 4 * 64 before the bad one; after it, 43 datagrams: one group.
    assert.deepEqual(leaders, [
      [0, 64],
      [64, 64],
      [128, 64],
      [192, 64],
      [256, 1],
      [257, 43],
    ]);
    assert.equal(groups, 5);
  });
});

/** The UDP/TCP pseudo-header sum of an IPv4 packet without options, for protocol proto. */
function partialOf(p: Uint8Array, proto: number): number {
  const v = new DataView(p.buffer, p.byteOffset, p.length);
  return v.getUint16(12) + v.getUint16(14) + v.getUint16(16) + v.getUint16(18) + proto + (p.length - 20);
}
