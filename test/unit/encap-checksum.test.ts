// The shared one's-complement sum helpers (src/encap/checksum.ts) against the plain reference
// `onesSum` of test/helpers/tcp-segments.ts: every alignment, odd and even lengths, both the
// byte path and the 32-bit word path with the several ways a words view can sit on the buffer.
// Randomized tests print their seed on failure; rerun one with CHECKSUM_SEED=<seed>.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  alignedWordIndex,
  foldOnesComplement,
  ipHeader20ChecksumOkWords,
  ipHeaderChecksumOk,
  onesComplementSum,
  pseudoHeaderSum,
  writeIpHeaderChecksum,
} from '../../src/encap/checksum.js';
import { checksumMemory, simdChecksumFor } from '../../src/encap/checksum-simd.js';
import { mulberry32, runSeeded, seedsFor } from '../helpers/prng.js';
import { onesSum, pseudoHeader } from '../helpers/tcp-segments.js';

const seeds = (count: number, base: number): number[] => seedsFor('CHECKSUM_SEED', count, base);
const withSeed = (name: string, seed: number, body: (rand: () => number) => void): void =>
  runSeeded(`encap-checksum ${name}`, 'CHECKSUM_SEED', seed, body);

function fillRandom(b: Uint8Array, rand: () => number, style: number): void {
  for (let i = 0; i < b.length; i++) {
    // Styles: random bytes, all 0xff (carries everywhere), all zero, sparse.
    b[i] = style === 0 ? rand() & 0xff : style === 1 ? 0xff : style === 2 ? 0 : rand() % 7 === 0 ? rand() & 0xff : 0;
  }
}

/** A random initial value: small, near 0xffff, or large (up to 2^40 - 1). */
function randomInitial(rand: () => number): number {
  switch (rand() % 4) {
    case 0:
      return 0;
    case 1:
      return rand() & 0xffff;
    case 2:
      return 0xffff - (rand() % 3);
    default:
      return (rand() % 0x100) * 0x100000000 + rand();
  }
}

describe('onesComplementSum', () => {
  test('hand-computed: RFC 1071 example bytes, odd length, initial, and the zero case', () => {
    const b = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
    // RFC 1071 section 3: 0001 + f203 + f4f5 + f6f7 = 2ddf0 -> ddf2.
    assert.equal(onesComplementSum(b, null, 0, 8), 0xddf2);
    // Odd length pads a zero byte: 0001 + f200 = f201.
    assert.equal(onesComplementSum(b, null, 0, 3), 0xf201);
    // Counted from an odd off: 01f2 + 03f4 + f5f6 + f700 = 1f2dc -> f2dd.
    assert.equal(onesComplementSum(b, null, 1, 7), 0xf2dd);
    assert.equal(onesComplementSum(b, null, 0, 8, 0x20000), 0xddf4);
    assert.equal(onesComplementSum(b, null, 0, 0), 0);
    assert.equal(onesComplementSum(new Uint8Array(64), new Uint32Array(16), 0, 64), 0, 'different buffers: byte path');
  });

  test('every alignment 0..7, every length 0..80 and random lengths to 3000: words path = byte path = reference', () => {
    let wordCalls = 0;
    for (const seed of seeds(60, 0xc5c50000)) {
      withSeed('alignment', seed, (rand) => {
        const buf = new ArrayBuffer(3200);
        const all = new Uint8Array(buf);
        fillRandom(all, rand, seed % 8 < 5 ? 0 : (seed % 8) - 4);
        const words = new Uint32Array(buf);
        const lengths = [
          ...Array.from({ length: 81 }, (_, i) => i),
          ...Array.from({ length: 40 }, () => rand() % 3001),
        ];
        for (let viewStart = 0; viewStart < 8; viewStart++) {
          // bytes as a view at viewStart of the buffer; words over the whole buffer.
          const bytes = all.subarray(viewStart, 3200);
          for (let off = 0; off < 8; off++) {
            for (const len of lengths) {
              if (off + len > bytes.length) continue;
              const initial = randomInitial(rand);
              const expected = onesSum(bytes, off, len, initial);
              assert.equal(
                onesComplementSum(bytes, null, off, len, initial),
                expected,
                `byte path off ${off} len ${len} view ${viewStart}`,
              );
              assert.equal(
                onesComplementSum(bytes, words, off, len, initial),
                expected,
                `words path off ${off} len ${len} view ${viewStart}`,
              );
              wordCalls++;
            }
          }
        }
      });
    }
    assert.ok(wordCalls > 50_000);
  });

  test('words views: from bytes.byteOffset, partial coverage (falls back), another buffer', () => {
    for (const seed of seeds(40, 0xc5c51000)) {
      withSeed('views', seed, (rand) => {
        const buf = new ArrayBuffer(4096);
        const all = new Uint8Array(buf);
        fillRandom(all, rand, 0);
        const viewStart = 4 * (rand() % 8);
        const bytes = all.subarray(viewStart, viewStart + 3000);
        const fromView = new Uint32Array(buf, viewStart, 750);
        const short = new Uint32Array(buf, viewStart, 100); // covers only bytes[0, 400)
        const later = new Uint32Array(buf, viewStart + 400); // starts at bytes[400]
        const other = new Uint32Array(1024);
        for (let r = 0; r < 200; r++) {
          const off = rand() % 2900;
          const len = rand() % (3000 - off + 1);
          const initial = randomInitial(rand);
          const expected = onesSum(bytes, off, len, initial);
          for (const w of [fromView, short, later, other]) {
            assert.equal(
              onesComplementSum(bytes, w, off, len, initial),
              expected,
              `off ${off} len ${len} words at ${w.byteOffset}+${w.length * 4}`,
            );
          }
        }
      });
    }
  });

  test('alternating (bytes, words) pairs with different geometry: every call uses its own views', () => {
    // The module caches the last pair's byteOffsets by identity: switching pairs at every call,
    // including two byte views of one buffer at different offsets, must never reuse a stale one.
    const rand = mulberry32(0xa17);
    const buf = new ArrayBuffer(4096);
    const all = new Uint8Array(buf);
    fillRandom(all, rand, 0);
    const views = [all.subarray(0, 4000), all.subarray(1, 4001), all.subarray(4, 4004), all.subarray(7, 3007)];
    const wordViews = [
      new Uint32Array(buf),
      new Uint32Array(buf, 8),
      new Uint32Array(buf, 0, 100),
      new Uint32Array(1024),
    ];
    for (let r = 0; r < 4000; r++) {
      const bytes = views[rand() % views.length];
      const words = wordViews[rand() % wordViews.length];
      const off = rand() % 1000;
      const len = 32 + (rand() % 1900);
      assert.equal(
        onesComplementSum(bytes, words, off, len),
        onesSum(bytes, off, len),
        `call ${r}: view at ${bytes.byteOffset}, words at ${words.byteOffset}+${words.length * 4}`,
      );
    }
  });

  test('the largest sums: 64 KiB of 0xff with the largest initial, both paths', () => {
    const bytes = new Uint8Array(65544).fill(0xff);
    const words = new Uint32Array(bytes.buffer);
    for (const [off, len] of [
      [0, 65535],
      [1, 65535],
      [3, 65536],
      [2, 65541],
    ]) {
      const initial = 2 ** 40 - 1;
      const expected = onesSum(bytes, off, len, initial);
      assert.equal(onesComplementSum(bytes, null, off, len, initial), expected);
      assert.equal(onesComplementSum(bytes, words, off, len, initial), expected);
      // Without initial: 0xffff words sum to 0xffff; an odd length ends with a padded ff00.
      assert.equal(onesComplementSum(bytes, words, off, len), len % 2 === 0 ? 0xffff : 0xff00);
    }
  });

  test('foldOnesComplement: end-around carry; 0 stays 0, multiples of 0xffff fold to 0xffff', () => {
    assert.equal(foldOnesComplement(0), 0);
    assert.equal(foldOnesComplement(0xffff), 0xffff);
    assert.equal(foldOnesComplement(0x1fffe), 0xffff);
    assert.equal(foldOnesComplement(0x10000), 1);
    assert.equal(foldOnesComplement(0xffff * 0xffff * 1000), 0xffff);
    const rand = mulberry32(17);
    for (let i = 0; i < 10_000; i++) {
      const x = (rand() % 0x200000) * 0x100000000 + rand(); // below 2^53
      const expected = x === 0 ? 0 : x % 0xffff === 0 ? 0xffff : x % 0xffff;
      assert.equal(foldOnesComplement(x), expected, `fold ${x}`);
    }
  });
});

describe('onesComplementSum over a checksumMemory (the WebAssembly SIMD bulk)', () => {
  test('this engine has WebAssembly SIMD: the slab memory gets the SIMD sum', () => {
    const bytes = checksumMemory(100_000);
    assert.equal(bytes.length, 100_000);
    assert.ok(
      simdChecksumFor(bytes.buffer) !== null,
      'no WebAssembly SIMD: the checksum would fall back to the TypeScript loop',
    );
    assert.equal(simdChecksumFor(new Uint8Array(64).buffer), null, 'a plain buffer has none');
  });

  for (const seed of seeds(4, 7100)) {
    test(`random offsets (any alignment), lengths 0..70000 and initials: SIMD path = byte path = reference (seed ${seed})`, () => {
      withSeed('simd', seed, (rand) => {
        const bytes = checksumMemory(140_000);
        const words = new Uint32Array(bytes.buffer);
        fillRandom(bytes, rand, seed % 4);
        for (let t = 0; t < 400; t++) {
          const len = t % 5 === 0 ? rand() % 70_000 : rand() % 3000;
          const off = rand() % (bytes.length - len);
          const initial = rand() % 0x100000;
          const want = onesSum(bytes, off, len, initial);
          assert.equal(onesComplementSum(bytes, words, off, len, initial), want, `off ${off} len ${len}`);
          assert.equal(onesComplementSum(bytes, null, off, len, initial), want);
        }
      });
    });
  }

  test('a view that starts inside the memory: positions are absolute in the buffer', () => {
    const whole = checksumMemory(10_000);
    for (let i = 0; i < whole.length; i++) whole[i] = (i * 37 + 11) & 0xff;
    const bytes = new Uint8Array(whole.buffer, 3, 9000),
      words = new Uint32Array(whole.buffer);
    for (const [off, len] of [
      [0, 8999],
      [1, 4000],
      [5, 64],
      [6, 65],
      [100, 1420],
    ] as const) {
      assert.equal(onesComplementSum(bytes, words, off, len), onesSum(bytes, off, len), `off ${off} len ${len}`);
    }
  });
});

describe('alignedWordIndex', () => {
  test('the word of bytes[off] when 4-aligned in the buffer and covered; -1 otherwise', () => {
    const buf = new ArrayBuffer(256);
    const all = new Uint8Array(buf);
    for (let i = 0; i < all.length; i++) all[i] = i;
    const words = new Uint32Array(buf);
    const wordsFrom64 = new Uint32Array(buf, 64, 16); // covers buffer bytes [64, 128)
    for (let viewStart = 0; viewStart < 8; viewStart++) {
      const bytes = all.subarray(viewStart);
      for (let off = 0; off + 8 <= bytes.length; off++) {
        const abs = viewStart + off;
        const index = alignedWordIndex(bytes, words, off, 8);
        assert.equal(index, abs % 4 === 0 ? abs / 4 : -1, `view ${viewStart} off ${off}`);
        // Byte b of the word is bytes[off + b] (little-endian host).
        if (index >= 0)
          assert.equal(
            words[index],
            (bytes[off] | (bytes[off + 1] << 8) | (bytes[off + 2] << 16) | (bytes[off + 3] << 24)) >>> 0,
          );
        const partial = alignedWordIndex(bytes, wordsFrom64, off, 8);
        assert.equal(
          partial,
          abs % 4 === 0 && abs >= 64 && abs + 8 <= 128 ? (abs - 64) / 4 : -1,
          `partial view ${viewStart} off ${off}`,
        );
      }
    }
    assert.equal(alignedWordIndex(all, null, 0, 8), -1, 'no words');
    assert.equal(alignedWordIndex(all, new Uint32Array(64), 0, 8), -1, 'another buffer');
    assert.equal(alignedWordIndex(all, words, 252, 4), 63, 'the last word');
    assert.equal(alignedWordIndex(all, words, 252, 5), -1, 'beyond the words');
  });
});

describe('pseudoHeaderSum and IP header checksums', () => {
  test('pseudoHeaderSum equals the sum of the 12-byte pseudo-header', () => {
    const rand = mulberry32(3);
    for (let i = 0; i < 2000; i++) {
      const at = rand() % 16;
      const b = new Uint8Array(at + 20);
      fillRandom(b, rand, 0);
      const v = new DataView(b.buffer);
      const length = rand() & 0xffff;
      const protocol = [6, 17, rand() & 0xff][i % 3];
      const p = pseudoHeader(v.getUint32(at + 12), v.getUint32(at + 16), length);
      p[9] = protocol;
      const sum = pseudoHeaderSum(b, at, protocol, length);
      assert.ok(sum < 2 ** 19);
      assert.equal(foldOnesComplement(sum), onesSum(p, 0, 12));
      assert.equal(onesComplementSum(b, null, 0, 0, sum), onesSum(p, 0, 12));
    }
  });

  test('writeIpHeaderChecksum: every header length, any position; touches only bytes 10..11; ipHeaderChecksumOk agrees', () => {
    for (const seed of seeds(30, 0xc5c52000)) {
      withSeed('ip-header', seed, (rand) => {
        for (let ihlWords = 5; ihlWords <= 15; ihlWords++) {
          const at = rand() % 9;
          const b = new Uint8Array(at + 80);
          fillRandom(b, rand, 0);
          b[at] = 0x40 | ihlWords;
          const before = b.slice();
          writeIpHeaderChecksum(b, at);
          const ihl = ihlWords * 4;
          assert.equal(onesSum(b, at, ihl), 0xffff, `checksum of a ${ihl}-byte header`);
          assert.ok(ipHeaderChecksumOk(b, at));
          for (let j = 0; j < b.length; j++)
            if (j !== at + 10 && j !== at + 11) assert.equal(b[j], before[j], `byte ${j}`);
          if (ihlWords === 5) {
            const w = new Uint32Array(20 / 4);
            new Uint8Array(w.buffer).set(b.subarray(at, at + 20));
            assert.ok(ipHeader20ChecksumOkWords(w, 0), 'words: valid header');
          }
          // Any single bit flip inside the header (but the version/ihl byte) is caught.
          const flip = at + 1 + (rand() % (ihl - 1));
          b[flip] ^= 1 << (rand() % 8);
          assert.equal(ipHeaderChecksumOk(b, at), false, 'flipped bit not caught');
          if (ihlWords === 5) {
            const w = new Uint32Array(20 / 4);
            new Uint8Array(w.buffer).set(b.subarray(at, at + 20));
            assert.equal(ipHeader20ChecksumOkWords(w, 0), false, 'words: flipped bit not caught');
          }
        }
      });
    }
  });
});

describe('ipHeader20ChecksumOkWords', () => {
  test('agrees with ipHeaderChecksumOk on random, valid, all-zero and all-0xff headers, at any word index', () => {
    const rand = mulberry32(0x1920);
    const buf = new ArrayBuffer(64);
    const b = new Uint8Array(buf);
    const w = new Uint32Array(buf);
    let valid = 0;
    for (let r = 0; r < 20_000; r++) {
      const index = rand() % 11;
      const at = index * 4;
      fillRandom(b, rand, r % 4);
      b[at] = 0x45;
      if (r % 3 === 0) writeIpHeaderChecksum(b, at);
      if (r % 97 === 0) b.fill(0, at, at + 20); // sums to 0: not valid either way
      const expected = ipHeaderChecksumOk(b, at);
      if (expected) valid++;
      assert.equal(ipHeader20ChecksumOkWords(w, index), expected, `round ${r}`);
    }
    assert.ok(valid > 6000, `valid headers: ${valid}`);
  });
});
