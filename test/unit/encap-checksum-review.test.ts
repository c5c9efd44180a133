// Adversarial review of the WebAssembly checksum (src/encap/checksum-simd.ts) and its callers
// (stridedSums in checksum.ts, segmentTcpSuperPacket, planCoalescing):
//  - planCoalescing's cached L4 sums (one stretch of the list summed at once) must not outlive a
//    leader's header patch: a list holding the same slot twice (or overlapping slots), not in
//    address order, must never group a packet whose bytes no longer verify;
//  - no trap at the edges of the WebAssembly memory: ranges ending at its last byte, the scratch
//    area ending at a page boundary, every short length at every alignment;
//  - segmentation with more segments than one stridedSums call holds (a 64 KiB super-packet at
//    the 48-byte minimum MSS, chunked as the forwarder chunks it), the super-packet ending at the
//    last byte of the memory's caller bytes: the same bytes over the SIMD memory, the plain buffer
//    with words, and the byte path, and every segment valid.
// Randomized tests print their seed on failure; rerun one with REVIEW_SEED=<seed>.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { onesComplementSum, STRIDED_SUMS_CAPACITY, stridedSums } from '../../src/encap/checksum.js';
import { checksumMemory, simdChecksumFor, STRIDED_SUMS_MAX, type SimdChecksum } from '../../src/encap/checksum-simd.js';
import { planCoalescing, VNET_HDR_SLOT } from '../../src/encap/tcp-coalesce.js';
import { SEGMENT_HEADER_CELL, segmentTcpSuperPacket, tcpSegmentCount } from '../../src/encap/tcp-segment.js';
import { randomBytes, runSeeded, seedsFor } from '../helpers/prng.js';
import {
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  buildTcpPacket,
  buildUdpDatagram,
  onesSum,
  tcpChecksumValid,
  udpChecksumValid,
} from '../helpers/tcp-segments.js';

const withSeed = (name: string, seed: number, body: (rand: () => number) => void): void =>
  runSeeded(`encap-checksum-review ${name}`, 'REVIEW_SEED', seed, body);

function simdOf(bytes: Uint8Array): SimdChecksum {
  const simd = simdChecksumFor(bytes.buffer);
  assert.ok(simd !== null, 'no WebAssembly SIMD on this engine: checksumMemory gave a plain buffer');
  return simd;
}

/** The memories planCoalescing and segmentation run over: SIMD with words, plain with words, plain bytewise. */
function memories(atLeast: number): { name: string; bytes: Uint8Array; words: Uint32Array | null }[] {
  const size = Math.ceil(atLeast / 8) * 8; // whole words, as the slab
  const simd = checksumMemory(size);
  const plain = new Uint8Array(size);
  return [
    { name: 'SIMD memory, words', bytes: simd, words: new Uint32Array(simd.buffer) },
    { name: 'plain buffer, words', bytes: plain, words: new Uint32Array(plain.buffer) },
    { name: 'plain buffer, byte path', bytes: new Uint8Array(size), words: null },
  ];
}

interface Plan {
  groups: number;
  groupLens: number[];
}

function plan(
  m: { bytes: Uint8Array; words: Uint32Array | null },
  slotOffsets: Uint32Array,
  lens: Int32Array,
  list: number[],
): Plan {
  const slots = slotOffsets.length;
  const groupLens = new Uint16Array(list.length);
  const groups = planCoalescing(
    m.bytes,
    slotOffsets,
    lens,
    new Uint16Array(slots),
    new Uint8Array(slots * VNET_HDR_SLOT),
    Uint16Array.from(list),
    list.length,
    groupLens,
    65535,
    m.words,
  );
  return { groups, groupLens: Array.from(groupLens) };
}

const FLOW = { src: 0x0af40202, dst: 0x0af40102, sport: 5201, dport: 40000 };

/** A segment of FLOW: ACK (+ extra flags), DF, payload of `payload` bytes filled with `fill`. */
const segment = (seq: number, payload: number, fill: number, extraFlags = 0): Uint8Array =>
  buildTcpPacket({
    ...FLOW,
    ttl: 63,
    df: true,
    id: seq & 0xffff,
    seq,
    ack: 7,
    flags: TCP_ACK | extraFlags,
    window: 512,
    payload: new Uint8Array(payload).fill(fill),
  });

describe('planCoalescing: cached stretch sums and the headers sealGroup patches', () => {
  // Slots A, B, C, D at 0, S, 2S, 3S. The list [C, A, B, C, D]:
  //  - position 0, C leads (its sum alone: the next slot lies below it);
  //  - position 1, A joins C; its sum starts a stretch over positions 1.. (A, B, C, D lie at the
  //    stride S), so C's ORIGINAL sum is cached for position 3;
  //  - position 2, B (wrong seq, FIN) ends the group: C's header is patched (total length, TCP
  //    checksum field = the pseudo-header sum) and B cannot lead;
  //  - position 3, C again: its bytes no longer verify; the cached sum said they did, so C led a
  //    new group with D (which continues C's sequence) before the fix.
  const S = 256,
    P = 100,
    SEQ = 1_000_000;
  function setup(m: { bytes: Uint8Array }): { slotOffsets: Uint32Array; lens: Int32Array } {
    const packets = [
      segment(SEQ + P, P, 0xa1), // A: C's successor
      segment(SEQ + 5 * P, P, 0xb2, TCP_FIN), // B: out of sequence, and FIN cannot lead
      segment(SEQ, P, 0xc3), // C
      segment(SEQ + P, P, 0xd4), // D: C's successor too
    ];
    packets.forEach((p, i) => m.bytes.set(p, i * S));
    return { slotOffsets: Uint32Array.from(packets, (_, i) => i * S), lens: Int32Array.from(packets, (p) => p.length) };
  }

  for (const m of memories(4 * S + 64)) {
    test(`a slot listed again after it was sealed as a leader is checked on its patched bytes (${m.name})`, () => {
      const { slotOffsets, lens } = setup(m);
      const C = 2;
      const got = plan(m, slotOffsets, lens, [C, 0, 1, C, 3]);
      // C's bytes as they stand after the first group: their TCP checksum does not verify.
      const patched = m.bytes.slice(slotOffsets[C], slotOffsets[C] + lens[C]);
      patched[2] = lens[C] >> 8;
      patched[3] = lens[C] & 0xff; // judge them at their listed length
      assert.equal(tcpChecksumValid(patched), false, 'precondition: the patched C does not verify');
      assert.deepEqual(got.groupLens, [2, 0, 1, 1, 1], 'C at position 3 (bad checksum by then) must not lead D');
      assert.equal(got.groups, 1);
    });
  }

  for (const seed of seedsFor('REVIEW_SEED', 6, 0x7e0000)) {
    test(`random lists over one flow's slots, with duplicates, aliased slots, runs in and out of address order, some corrupted: no grouped packet fails its checksum when planned (seed ${seed})`, () => {
      withSeed('duplicates', seed, (rand) => {
        for (let t = 0; t < 60; t++) {
          const slots = 6 + (rand() % 20);
          const payload = 40 + (rand() % 200);
          const udp = rand() % 3 === 0;
          // Slots at one stride (so address-ordered stretches of the list are summed at once),
          // holding the flow's packets mostly in sequence with restarts (retransmissions: the
          // same packet in several slots), so groups form within and across runs of the list.
          const stride = payload + 40 + (rand() % 3) * 8;
          const flowIndex: number[] = [];
          for (let i = 0; i < slots; i++)
            flowIndex.push(i > 0 && rand() % 5 < 3 ? flowIndex[i - 1]! + 1 : rand() % slots);
          const packets = flowIndex.map((k) => {
            const p = udp
              ? buildUdpDatagram({ ...FLOW, id: k, ttl: 63, df: true, payload: new Uint8Array(payload).fill(k) })
              : buildTcpPacket({
                  ...FLOW,
                  ttl: 63,
                  df: true,
                  id: k,
                  seq: SEQ + k * payload,
                  ack: 7,
                  flags: TCP_ACK,
                  window: 512,
                  payload: new Uint8Array(payload).fill(k),
                });
            if (rand() % 10 === 0) p[40 + (rand() % (p.length - 40))] ^= 1 << (rand() % 8);
            return p;
          });
          // Slot s holds packet packetOf[s]: one slot per packet, then a few more slot numbers
          // aliasing some of them (as a view slot pointing at another slot's bytes).
          const packetOf = packets.map((_, i) => i);
          for (let a = rand() % 4; a > 0; a--) packetOf.push(rand() % slots);
          const slotOffsets = Uint32Array.from(packetOf, (k) => 8 + k * stride);
          const lens = Int32Array.from(packetOf, (k) => packets[k]!.length);
          // The list: single slots anywhere, and runs of slots in address order; slots repeat.
          const list: number[] = [];
          while (list.length < slots * 2) {
            if (rand() % 5 < 2) {
              list.push(rand() % packetOf.length);
            } else {
              const from = rand() % slots;
              const to = Math.min(slots, from + 1 + (rand() % 8));
              for (let i = from; i < to; i++) list.push(i);
            }
          }
          const results = memories(8 + slots * stride + 64).map((m) => {
            packets.forEach((p, k) => m.bytes.set(p, 8 + k * stride));
            return { m, got: plan(m, slotOffsets, lens, list) };
          });
          for (const { m, got } of results) {
            const groups = got.groupLens.join(',');
            const what = `${m.name}, ${udp ? 'UDP' : 'TCP'}, list [${list.join(',')}], groups [${groups}]`;
            // Replay the plan: the bytes each position was judged on are the original ones unless
            // its slot was sealed as a leader before (a leader is sealed on reaching the position
            // after its group; a member is judged before that position's seal, a leader after).
            const sealedAt = new Map<number, number>(); // packet -> list position at which it was sealed
            for (let i = 0; i < list.length; i++) {
              const k = got.groupLens[i]!;
              const packet = packetOf[list[i]!]!;
              if (k >= 2 && !sealedAt.has(packet)) sealedAt.set(packet, i + k);
            }
            for (let i = 0; i < list.length; i++) {
              const k = got.groupLens[i]!;
              if (k === 1) continue;
              const slot = list[i]!;
              const sealed = sealedAt.get(packetOf[slot]!);
              const judgedPatched = sealed !== undefined && (k === 0 ? sealed < i : sealed <= i);
              assert.ok(
                !judgedPatched,
                `${what}: position ${i} (slot ${slot}) was grouped on bytes patched at position ${sealed}`,
              );
              const p = packets[packetOf[slot]!]!;
              assert.ok(
                udp ? udpChecksumValid(p) : tcpChecksumValid(p),
                `${what}: position ${i} (slot ${slot}) has a bad checksum`,
              );
            }
          }
          // The three memories plan alike and patch alike.
          const [a, ...rest] = results;
          for (const r of rest) {
            assert.deepEqual(r.got, a!.got, `${r.m.name} plans as ${a!.m.name}`);
            assert.deepEqual(r.m.bytes, a!.m.bytes, `${r.m.name} patches as ${a!.m.name}`);
          }
        }
      });
    });
  }

  test('a run in address order: groups sealed inside one stretch (PSH every 50th) plan alike on every memory', () => {
    // 200 back-to-back segments of one flow, PSH every 50th: groups of 50 (PSH ends a group), all
    // in ONE stretch; their coalescing must not depend on the stretch being recomputed.
    const payload = 600;
    const packets = Array.from({ length: 200 }, (_, i) =>
      segment(SEQ + i * payload, payload, i & 0xff, i % 50 === 49 ? TCP_PSH : 0),
    );
    const stride = packets[0]!.length;
    for (const m of memories(200 * stride + 64)) {
      packets.forEach((p, i) => m.bytes.set(p, i * stride));
      const got = plan(
        m,
        Uint32Array.from(packets, (_, i) => i * stride),
        Int32Array.from(packets, (p) => p.length),
        packets.map((_, i) => i),
      );
      const leaders = got.groupLens.flatMap((k, i) => (k > 0 ? [[i, k]] : []));
      assert.deepEqual(
        leaders,
        [
          [0, 50],
          [50, 50],
          [100, 50],
          [150, 50],
        ],
        m.name,
      );
    }
  });
});

describe('the WebAssembly module at the edges of its memory', () => {
  test("sumRange over ranges ending at the memory's last byte: every start alignment, lengths 0..300, no trap, = reference", () => {
    const bytes = checksumMemory(64_512); // its scratch area ends exactly at the end of page 1
    const { sumRange, sumsAt } = simdOf(bytes);
    assert.equal(sumsAt + STRIDED_SUMS_MAX * 4, 65_536, "the scratch area ends at the memory's end");
    const all = new Uint8Array(bytes.buffer);
    assert.equal(all.length, 65_536);
    for (let i = 0; i < all.length; i++) all[i] = (i * 131 + 7) & 0xff;
    for (let len = 0; len <= 300; len++) {
      const p: number = all.length - len;
      assert.equal(sumRange(p, len), onesSum(all, p, len), `p ${p} len ${len}`);
    }
    // A range one byte past the memory traps: the datapath must never ask for one.
    assert.throws(() => sumRange(all.length - 63, 64), WebAssembly.RuntimeError);
  });

  test(`sumStrided filling the whole scratch area (${STRIDED_SUMS_MAX} sums, the last word of the memory) and over the caller's last bytes`, () => {
    const length = 64_512;
    const bytes = checksumMemory(length);
    for (let i = 0; i < length; i++) bytes[i] = (i * 71 + 3) & 0xff;
    const { sumStrided, sums, sumsAt } = simdOf(bytes);
    // 256 ranges at stride 252, the last ending at the caller's last byte; lengths odd and even.
    for (const [len, lastLen] of [
      [251, 252],
      [252, 1],
      [0, 0],
      [1, 251],
    ] as const) {
      const stride = 252;
      const p: number = length - (STRIDED_SUMS_MAX - 1) * stride - lastLen;
      sums.fill(0xdeadbeef);
      sumStrided(p, stride, STRIDED_SUMS_MAX, len, lastLen, sumsAt);
      for (let k = 0; k < STRIDED_SUMS_MAX; k++) {
        assert.equal(
          sums[k],
          onesSum(bytes, p + k * stride, k === STRIDED_SUMS_MAX - 1 ? lastLen : len),
          `len ${len} lastLen ${lastLen} range ${k}`,
        );
      }
      // The same through stridedSums, and its fallback on a plain copy.
      const plain = bytes.slice();
      const viaSimd = Array.from(
        stridedSums(bytes, new Uint32Array(bytes.buffer), p, stride, STRIDED_SUMS_CAPACITY, len, lastLen),
      );
      const viaPlain = Array.from(
        stridedSums(plain, new Uint32Array(plain.buffer), p, stride, STRIDED_SUMS_CAPACITY, len, lastLen),
      );
      assert.deepEqual(viaSimd, viaPlain, `len ${len} lastLen ${lastLen}`);
    }
    // count 0 writes nothing; count 1 only the last length.
    sums.fill(7);
    sumStrided(0, 100, 0, 50, 50, sumsAt);
    assert.ok(
      sums.every((x) => x === 7),
      'count 0 wrote a sum',
    );
    sumStrided(length - 3, 0, 1, 99_999, 3, sumsAt);
    assert.equal(sums[0], onesSum(bytes, length - 3, 3));
    assert.equal(sums[1], 7);
  });

  test("onesComplementSum of ranges ending at the slab's last byte: SIMD memory = plain buffer, every alignment", () => {
    const length = 10_000;
    const simd = checksumMemory(length);
    for (let i = 0; i < length; i++) simd[i] = (i * 29 + 11) & 0xff;
    // The scratch area after the bytes holds garbage: a range over-reading into it would show.
    simdOf(simd).sums.fill(0xffffffff);
    const plain = simd.slice();
    const sw = new Uint32Array(simd.buffer),
      pw = new Uint32Array(plain.buffer);
    for (let len = 0; len <= 200; len++) {
      const off = length - len;
      const want = onesSum(plain, off, len, 0x1234);
      assert.equal(onesComplementSum(simd, sw, off, len, 0x1234), want, `SIMD off ${off} len ${len}`);
      assert.equal(onesComplementSum(plain, pw, off, len, 0x1234), want, `plain off ${off} len ${len}`);
    }
  });
});

describe('segmentTcpSuperPacket beyond one stridedSums call', () => {
  const TIMESTAMPS = new Uint8Array([1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0]);
  // The forwarder's chunks: 1024 cells at most per call, the first chunk after `used` cells.
  for (const [gsoSize, used] of [
    [48, 0],
    [48, 1000],
    [1, 700],
    [1448, 3],
  ] as const) {
    test(`a 64 KiB super-packet, gso ${gsoSize}, chunks after ${used} cells used, ending at the last byte of the slab: every memory alike, every segment valid`, () => {
      withSeed(`segment gso ${gsoSize}`, gsoSize * 1000 + used, (rand) => {
        const sp = buildTcpPacket({
          ...FLOW,
          ttl: 63,
          id: 0xfff0,
          df: true,
          seq: 0xffffff00,
          ack: 1,
          flags: TCP_ACK | TCP_PSH | TCP_FIN,
          window: 512,
          tcpOptions: TIMESTAMPS,
          payload: randomBytes(rand, 65_535 - 52),
        });
        assert.equal(sp.length, 65_535);
        const mtu = 1500;
        const total = tcpSegmentCount(sp, 0, sp.length, gsoSize, mtu);
        assert.equal(total, Math.ceil((65_535 - 52) / Math.min(gsoSize, mtu - 52)));
        const cells = 1024;
        // Cells first, then the super-packet at an odd offset, ending at the caller's last byte.
        const spOff = cells * SEGMENT_HEADER_CELL + 1;
        const size = spOff + sp.length;
        const slotOffsets = Uint32Array.from({ length: cells }, (_, i) => i * SEGMENT_HEADER_CELL);
        const runs = memories(size).map((m) => {
          m.bytes.set(sp, spOff);
          const lens = new Int32Array(cells),
            extOffs = new Uint32Array(cells),
            extLens = new Uint16Array(cells);
          const segments: Uint8Array[] = [];
          let next: number = used;
          for (let done = 0; done < total;) {
            if (next === cells) next = 0; // the forwarder flushes and starts over
            const n = segmentTcpSuperPacket(
              m.bytes,
              m.words,
              spOff,
              sp.length,
              gsoSize,
              mtu,
              done,
              slotOffsets,
              next,
              cells - next,
              lens,
              extOffs,
              extLens,
            );
            assert.equal(n, Math.min(cells - next, total - done));
            for (let c = next; c < next + n; c++) {
              const s = new Uint8Array(lens[c]! + extLens[c]!);
              s.set(m.bytes.subarray(slotOffsets[c]!, slotOffsets[c]! + lens[c]!));
              s.set(m.bytes.subarray(extOffs[c]!, extOffs[c]! + extLens[c]!), lens[c]!);
              segments.push(s);
            }
            next += n;
            done += n;
          }
          return { m, segments };
        });
        const [a, ...rest] = runs;
        assert.equal(a!.segments.length, total);
        let payloadBytes = 0;
        a!.segments.forEach((s, k) => {
          assert.ok(tcpChecksumValid(s), `${a!.m.name}: segment ${k} of ${total}`);
          assert.equal(s[33]! & TCP_FIN, k === total - 1 ? TCP_FIN : 0, `FIN only on the last: segment ${k}`);
          payloadBytes += s.length - 52;
        });
        assert.equal(payloadBytes, 65_535 - 52);
        for (const r of rest) assert.deepEqual(r.segments, a!.segments, `${r.m.name} = ${a!.m.name}`);
      });
    });
  }
});
