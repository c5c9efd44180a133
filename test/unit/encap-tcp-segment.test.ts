// TCP segmentation of GSO_TCPV4 super-packets and CHECKSUM_PARTIAL completion
// (src/encap/tcp-segment.ts) against the independent references of test/helpers/tcp-segments.ts:
// the reference segmenter `segmentSuperPacket` (Linux tcp_gso_segment semantics) and the plain
// one's-complement `onesSum`. Buffers are laid out at random (odd and misaligned offsets, cells in
// shuffled order, views into larger buffers) and filled with sentinels, so any stray write shows.
// Randomized tests print their seed on failure; rerun one with TCP_SEGMENT_SEED=<seed>.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  SEGMENT_HEADER_CELL,
  completeChecksum,
  segmentTcpSuperPacket,
  tcpSegmentCount,
} from '../../src/encap/tcp-segment.js';
import { mulberry32, randomBytes, runSeeded, seedsFor } from '../helpers/prng.js';
import {
  TCP_ACK,
  TCP_CWR,
  TCP_ECE,
  TCP_FIN,
  TCP_PSH,
  TCP_URG,
  buildTcpPacket,
  buildUdpPacket,
  ipChecksumValid,
  onesSum,
  parsePacket,
  partialChecksum,
  segmentSuperPacket,
  tcpChecksumValid,
  udpChecksumValid,
  type TcpPacketSpec,
} from '../helpers/tcp-segments.js';

const LENS_SENTINEL = -7;
const EXT_OFFS_SENTINEL = 0xdeadbeef;
const EXT_LENS_SENTINEL = 0xbeef;
/** maxSegmentBytes that never cuts below gso_size (an IPv4 packet has at most 65535 bytes). */
const NO_LIMIT = 65535;

const seeds = (count: number, base: number): number[] => seedsFor('TCP_SEGMENT_SEED', count, base);
const withSeed = (name: string, seed: number, body: (rand: () => number) => void): void =>
  runSeeded(`encap-tcp-segment ${name}`, 'TCP_SEGMENT_SEED', seed, body);

/** Byte-for-byte equality, fast; deepEqual (with its diff) only on a mismatch. */
function sameBytes(actual: Uint8Array, expected: Uint8Array, message: string): void {
  if (
    !Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(
      Buffer.from(expected.buffer, expected.byteOffset, expected.length),
    )
  ) {
    assert.deepEqual(actual, expected, message);
  }
}

/** IP options: NOPs and an end-of-list, a multiple of 4 bytes (4..40). */
function randomIpOptions(rand: () => number): Uint8Array {
  const o = new Uint8Array(4 * (1 + (rand() % 10)));
  o.fill(1);
  o[o.length - 1] = 0;
  return o;
}

/** TCP options: none, timestamps (NOP NOP TS, 12 bytes), or a random multiple of 4 up to 40. */
function randomTcpOptions(rand: () => number): Uint8Array | undefined {
  const roll = rand() % 5;
  if (roll === 0) return undefined;
  if (roll <= 2) {
    const o = new Uint8Array(12);
    o[0] = 1;
    o[1] = 1;
    o[2] = 8;
    o[3] = 10;
    o.set(randomBytes(rand, 8), 4);
    return o;
  }
  return randomBytes(rand, 4 * (1 + (rand() % 10)));
}

/**
 * A GSO_TCPV4 super-packet as the kernel hands it over: IP total length = its length, a valid IP
 * header checksum, and the TCP check field holding the pseudo-header sum for the super-packet's
 * TCP length (folded, not inverted: CHECKSUM_PARTIAL).
 */
function superPacket(spec: Omit<TcpPacketSpec, 'payload'>, payload: Uint8Array): Uint8Array {
  const sp = buildTcpPacket({ ...spec, payload });
  const ihl = (sp[0] & 15) * 4;
  const partial = partialChecksum(spec.src, spec.dst, 6, sp.length - ihl);
  sp[ihl + 16] = partial >> 8;
  sp[ihl + 17] = partial & 0xff;
  return sp;
}

interface Case {
  sp: Uint8Array;
  gsoSize: number;
  ihl: number;
  hdr: number;
}

function randomCase(rand: () => number): Case {
  const ipOptions = rand() % 4 === 0 ? randomIpOptions(rand) : undefined;
  const tcpOptions = randomTcpOptions(rand);
  const ihl = 20 + (ipOptions?.length ?? 0);
  const hdr = ihl + 20 + (tcpOptions?.length ?? 0);
  const gRoll = rand() % 8;
  const gsoSize =
    gRoll === 0 ? 1 + (rand() % 64) : gRoll === 1 ? [1448, 1420, 1460, 1500][rand() % 4] : 1 + (rand() % 1500);
  // Payload 1..65000 (within the 65535 total), at most ~300 segments so small gso sizes stay quick.
  const room = Math.min(65000, 65535 - hdr);
  const pRoll = rand() % 6;
  let payloadLen: number;
  if (pRoll === 0)
    payloadLen = Math.min(room, gsoSize * (1 + (rand() % 40))); // an exact multiple (or the room)
  else if (pRoll === 1)
    payloadLen = 1 + (rand() % Math.min(room, gsoSize)); // a single segment
  else payloadLen = 1 + (rand() % Math.min(room, gsoSize * 300));
  let flags = TCP_ACK;
  if (rand() % 2 === 0) flags |= TCP_PSH;
  if (rand() % 4 === 0) flags |= TCP_FIN;
  if (rand() % 4 === 0) flags |= TCP_CWR;
  if (rand() % 6 === 0) flags |= TCP_ECE;
  if (rand() % 10 === 0) flags |= TCP_URG;
  const seq = rand() % 3 === 0 ? (0x100000000 - 1 - (rand() % 200000)) >>> 0 : rand() >>> 0;
  const id = rand() % 3 === 0 ? 0xffff - (rand() % 100) : rand() & 0xffff;
  const sp = superPacket(
    {
      src: rand() >>> 0,
      dst: rand() >>> 0,
      tos: rand() & 0xff,
      ttl: 1 + (rand() % 255),
      id,
      df: rand() % 3 !== 0,
      ipOptions,
      sport: rand() & 0xffff,
      dport: rand() & 0xffff,
      seq,
      ack: rand() >>> 0,
      flags,
      window: rand() & 0xffff,
      urgent: rand() % 4 === 0 ? rand() & 0xffff : 0,
      tcpReserved: rand() % 8 === 0 ? rand() & 15 : 0,
      tcpOptions,
    },
    randomBytes(rand, payloadLen),
  );
  return { sp, gsoSize, ihl, hdr };
}

/**
 * A random buffer layout: the super-packet and cellCount header cells (SEGMENT_HEADER_CELL bytes
 * each) in shuffled order with random 0..7-byte gaps, inside a view at a random byteOffset of a
 * larger buffer; all free bytes hold random sentinels.
 */
interface Layout {
  backing: Uint8Array;
  bytes: Uint8Array;
  words: Uint32Array | null;
  off: number;
  slotOffsets: Uint32Array;
}

function layout(rand: () => number, spLen: number, cellCount: number, useWords: boolean): Layout {
  const regions = Array.from({ length: cellCount + 1 }, (_, i) => i); // cellCount = the super-packet
  for (let i = regions.length - 1; i > 0; i--) {
    const j = rand() % (i + 1);
    [regions[i], regions[j]] = [regions[j], regions[i]];
  }
  const slotOffsets = new Uint32Array(cellCount);
  let at = rand() % 8,
    off = 0;
  for (const r of regions) {
    if (r === cellCount) {
      off = at;
      at += spLen;
    } else {
      slotOffsets[r] = at;
      at += SEGMENT_HEADER_CELL;
    }
    at += rand() % 8;
  }
  const viewStart = rand() % 8;
  const backing = new Uint8Array((viewStart + at + 16) & ~3);
  for (let i = 0; i < backing.length; i++) backing[i] = rand() & 0xff;
  const bytes = backing.subarray(viewStart, viewStart + at);
  return { backing, bytes, words: useWords ? new Uint32Array(backing.buffer) : null, off, slotOffsets };
}

/** The reference's vnet header for a case; gsoSize: the size the segments are cut at (default the case's). */
function vnetFor(c: Case, gsoSize = c.gsoSize) {
  return { flags: 1, gsoType: 1, hdrLen: c.hdr, gsoSize, csumStart: c.ihl, csumOffset: 16 };
}

/** The payload bytes per segment the segmenter must cut at: gso_size, or less where maxSegmentBytes says so. */
function cutSize(c: Case, maxSegmentBytes: number): number {
  return Math.min(c.gsoSize, maxSegmentBytes - c.hdr);
}

/** The segment in `cell` as the sendmsg would gather it: header cell, then payload in the super-packet. */
function gather(bytes: Uint8Array, slotOffsets: Uint32Array, out: Outputs, cell: number): Uint8Array {
  const seg = new Uint8Array(out.lens[cell] + out.extLens[cell]);
  const h = slotOffsets[cell];
  seg.set(bytes.subarray(h, h + out.lens[cell]), 0);
  seg.set(bytes.subarray(out.extOffs[cell], out.extOffs[cell] + out.extLens[cell]), out.lens[cell]);
  return seg;
}

interface Outputs {
  lens: Int32Array;
  extOffs: Uint32Array;
  extLens: Uint16Array;
}

function outputs(cellCount: number): Outputs {
  return {
    lens: new Int32Array(cellCount).fill(LENS_SENTINEL),
    extOffs: new Uint32Array(cellCount).fill(EXT_OFFS_SENTINEL),
    extLens: new Uint16Array(cellCount).fill(EXT_LENS_SENTINEL),
  };
}

/**
 * Runs the segmenter on a random layout (with the super-packet at absolute buffer position
 * alignment mod 8, if given) and checks everything against the reference, cut at
 * min(gso_size, maxSegmentBytes - hdr). Returns the segment count.
 */
function segmentAndCheck(
  rand: () => number,
  c: Case,
  useWords: boolean,
  alignment?: number,
  maxSegmentBytes = NO_LIMIT,
): number {
  const seg = cutSize(c, maxSegmentBytes);
  const expected = segmentSuperPacket(vnetFor(c, seg), c.sp);
  assert.equal(tcpSegmentCount(c.sp, 0, c.sp.length, c.gsoSize, maxSegmentBytes), expected.length, 'tcpSegmentCount');
  const firstCell = rand() % 4;
  const spare = rand() % 3;
  const maxCells = expected.length + spare;
  const cellCount = firstCell + maxCells + (rand() % 3);
  let L = layout(rand, c.sp.length, cellCount, useWords);
  while (alignment !== undefined && ((L.bytes.byteOffset + L.off) & 7) !== alignment)
    L = layout(rand, c.sp.length, cellCount, useWords);
  L.bytes.set(c.sp, L.off);
  const before = L.backing.slice();
  const out = outputs(cellCount);

  const n = segmentTcpSuperPacket(
    L.bytes,
    L.words,
    L.off,
    c.sp.length,
    c.gsoSize,
    maxSegmentBytes,
    0,
    L.slotOffsets,
    firstCell,
    maxCells,
    out.lens,
    out.extOffs,
    out.extLens,
  );
  assert.equal(n, expected.length, 'segment count');

  // The whole backing buffer: as before, but for each used cell's first hdr bytes (the reference
  // segment's header). So the super-packet (payload AND header), the rest of every cell, unused
  // cells and the bytes around the view are untouched.
  const want = before.slice();
  const viewStart = L.bytes.byteOffset - L.backing.byteOffset;
  for (let i = 0; i < n; i++) want.set(expected[i].subarray(0, c.hdr), viewStart + L.slotOffsets[firstCell + i]);
  sameBytes(L.backing, want, 'buffer after segmentation');

  const original = parsePacket(c.sp);
  for (let i = 0; i < n; i++) {
    const cell = firstCell + i;
    assert.equal(out.lens[cell], c.hdr, `lens of cell ${cell}`);
    assert.equal(out.extOffs[cell], L.off + c.hdr + i * seg, `extOffs of cell ${cell}`);
    const payload = i < n - 1 ? seg : c.sp.length - c.hdr - i * seg;
    assert.equal(out.extLens[cell], payload, `extLens of cell ${cell}`);
    const segment = gather(L.bytes, L.slotOffsets, out, cell);
    sameBytes(segment, expected[i], `segment ${i} of ${n}`);
    assert.ok(segment.length <= maxSegmentBytes, `segment ${i}: ${segment.length} bytes > ${maxSegmentBytes}`);
    assert.ok(ipChecksumValid(segment), `segment ${i} IP checksum`);
    assert.ok(tcpChecksumValid(segment), `segment ${i} TCP checksum`);
    // Flags, checked directly too (not only through the reference).
    const flags = segment[c.ihl + 13];
    const orig = original.tcp!.flags;
    assert.equal(flags & TCP_CWR, i === 0 ? orig & TCP_CWR : 0, `CWR of segment ${i}`);
    assert.equal(flags & (TCP_PSH | TCP_FIN), i === n - 1 ? orig & (TCP_PSH | TCP_FIN) : 0, `PSH/FIN of segment ${i}`);
    assert.equal(
      flags & ~(TCP_CWR | TCP_PSH | TCP_FIN),
      orig & ~(TCP_CWR | TCP_PSH | TCP_FIN),
      `other flags of segment ${i}`,
    );
  }
  // Entries of the arrays outside the used cells are untouched.
  for (let cell = 0; cell < cellCount; cell++) {
    if (cell >= firstCell && cell < firstCell + n) continue;
    assert.equal(out.lens[cell], LENS_SENTINEL, `lens of unused cell ${cell}`);
    assert.equal(out.extOffs[cell], EXT_OFFS_SENTINEL, `extOffs of unused cell ${cell}`);
    assert.equal(out.extLens[cell], EXT_LENS_SENTINEL, `extLens of unused cell ${cell}`);
  }
  return n;
}

interface RefusalOptions {
  len?: number;
  maxSegmentBytes?: number;
  firstSegment?: number;
  /** The packet itself cannot be segmented: tcpSegmentCount is 0 too (default true). */
  countZero?: boolean;
}

/**
 * Calls the segmenter where it must refuse; checks it returns 0 and writes nothing at all (and,
 * unless the refusal is about firstSegment or maxCells, that tcpSegmentCount is 0 too).
 */
function expectRefused(
  rand: () => number,
  sp: Uint8Array,
  gsoSize: number,
  maxCells: number,
  why: string,
  opts: RefusalOptions = {},
): void {
  const { len = sp.length, maxSegmentBytes = NO_LIMIT, firstSegment = 0, countZero = true } = opts;
  if (countZero) assert.equal(tcpSegmentCount(sp, 0, len, gsoSize, maxSegmentBytes), 0, `${why}: tcpSegmentCount`);
  for (const useWords of [false, true]) {
    const cellCount = maxCells + 2;
    const L = layout(rand, sp.length, cellCount, useWords);
    L.bytes.set(sp, L.off);
    const before = L.backing.slice();
    const out = outputs(cellCount);
    const n = segmentTcpSuperPacket(
      L.bytes,
      L.words,
      L.off,
      len,
      gsoSize,
      maxSegmentBytes,
      firstSegment,
      L.slotOffsets,
      1,
      maxCells,
      out.lens,
      out.extOffs,
      out.extLens,
    );
    assert.equal(n, 0, `${why}: not refused`);
    sameBytes(L.backing, before, `${why}: buffer written`);
    assert.ok(
      out.lens.every((x) => x === LENS_SENTINEL),
      `${why}: lens written`,
    );
    assert.ok(
      out.extOffs.every((x) => x === EXT_OFFS_SENTINEL),
      `${why}: extOffs written`,
    );
    assert.ok(
      out.extLens.every((x) => x === EXT_LENS_SENTINEL),
      `${why}: extLens written`,
    );
  }
}

const BASE: Omit<TcpPacketSpec, 'payload'> = {
  src: 0x0af40102,
  dst: 0x0af40203,
  ttl: 63,
  id: 0xfffe,
  df: true,
  sport: 40000,
  dport: 5201,
  seq: 0xffffff00,
  ack: 77,
  flags: TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR,
  window: 502,
};

describe('segmentTcpSuperPacket', () => {
  test('hand-checked: 250 bytes at gso_size 100 -> 3 segments; seq and id wrap; CWR first, PSH|FIN last', () => {
    const payload = Uint8Array.from({ length: 250 }, (_, i) => i);
    const sp = superPacket(BASE, payload);
    const bytes = new Uint8Array(1024);
    const off = 3; // misaligned on purpose
    bytes.set(sp, off);
    const slotOffsets = new Uint32Array([700, 400, 550, 850]);
    const lens = new Int32Array(4),
      extOffs = new Uint32Array(4),
      extLens = new Uint16Array(4);
    const n = segmentTcpSuperPacket(
      bytes,
      null,
      off,
      sp.length,
      100,
      NO_LIMIT,
      0,
      slotOffsets,
      1,
      3,
      lens,
      extOffs,
      extLens,
    );
    assert.equal(n, 3);
    assert.deepEqual(Array.from(lens), [0, 40, 40, 40]);
    assert.deepEqual(Array.from(extOffs), [0, off + 40, off + 140, off + 240]);
    assert.deepEqual(Array.from(extLens), [0, 100, 100, 50]);
    const segs = [1, 2, 3].map((cell) => {
      const s = new Uint8Array(40 + extLens[cell]);
      s.set(bytes.subarray(slotOffsets[cell], slotOffsets[cell] + 40));
      s.set(bytes.subarray(extOffs[cell], extOffs[cell] + extLens[cell]), 40);
      return parsePacket(s);
    });
    assert.deepEqual(
      segs.map((s) => s.totalLength),
      [140, 140, 90],
    );
    assert.deepEqual(
      segs.map((s) => s.id),
      [0xfffe, 0xffff, 0],
    );
    assert.deepEqual(
      segs.map((s) => s.tcp!.seq),
      [0xffffff00, 0xffffff64, 0xffffffc8],
    );
    assert.deepEqual(
      segs.map((s) => s.tcp!.flags),
      [TCP_ACK | TCP_CWR, TCP_ACK, TCP_ACK | TCP_PSH | TCP_FIN],
    );
    assert.ok(segs.every((s) => s.ipChecksumOk && s.tcpChecksumOk && s.ttl === 63 && s.df));
  });

  test('randomized super-packets against the reference segmenter, byte path and words path', () => {
    let total = 0,
      multi = 0,
      big = 0,
      tiny = 0;
    for (const seed of seeds(400, 0x7e570000)) {
      withSeed('random', seed, (rand) => {
        const c = randomCase(rand);
        const n = segmentAndCheck(rand, c, seed % 2 === 0);
        total += n;
        if (n > 1) multi++;
        if (c.sp.length > 60000) big++;
        if (c.gsoSize < 8) tiny++;
      });
    }
    if (process.env.TCP_SEGMENT_SEED !== undefined) return;
    assert.ok(
      multi > 300 && big > 5 && tiny > 5 && total > 10_000,
      `coverage: ${multi} multi, ${big} big, ${tiny} tiny, ${total} segments`,
    );
  });

  test('a 64 KiB super-packet at gso_size 1420 with timestamps, at every alignment of off', () => {
    const rand = mulberry32(1420);
    const ts = new Uint8Array([1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8]);
    const sp = superPacket({ ...BASE, tcpOptions: ts, flags: TCP_ACK | TCP_PSH }, randomBytes(rand, 65535 - 52));
    const c: Case = { sp, gsoSize: 1420, ihl: 20, hdr: 52 };
    for (let a = 0; a < 8; a++) {
      // 65483 payload bytes / 1420 = 46 full segments + 163 bytes.
      assert.equal(segmentAndCheck(rand, c, a % 2 === 0, a), 47, `alignment ${a}, words ${a % 2 === 0}`);
      assert.equal(segmentAndCheck(rand, c, a % 2 !== 0, a), 47, `alignment ${a}, words ${a % 2 !== 0}`);
    }
  });

  test('headers copied a word at a time (4-aligned super-packet and cell) or bytewise (either misaligned): same segments', () => {
    const rand = mulberry32(0xa11);
    const ts = new Uint8Array([1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8]);
    const shapes: Array<[Uint8Array | undefined, Uint8Array | undefined]> = [
      [undefined, ts],
      [undefined, undefined],
      [new Uint8Array(40).fill(1), randomBytes(rand, 40)],
      [new Uint8Array(4).fill(1), undefined],
    ];
    const gsoSize = 700;
    let runs = 0;
    for (const [ipOptions, tcpOptions] of shapes) {
      const sp = superPacket({ ...BASE, ipOptions, tcpOptions }, randomBytes(rand, 5000));
      const hdr = (sp[0] & 15) * 4 + (sp[(sp[0] & 15) * 4 + 12] >> 4) * 4;
      const expected = segmentSuperPacket(
        { flags: 1, gsoType: 1, hdrLen: hdr, gsoSize, csumStart: (sp[0] & 15) * 4, csumOffset: 16 },
        sp,
      );
      const cells = expected.length;
      // The super-packet at 64 + spShift, then cells SEGMENT_HEADER_CELL + 8 apart, each shifted
      // by 0 (8-aligned: word copy when the super-packet is 4-aligned), 4, or a misaligned 1..3.
      for (const spShift of [0, 4, 1, 2, 3]) {
        for (const cellShifts of [[0], [4], [1], [2, 3], [0, 1, 4, 3, 0, 2]]) {
          const backing = new Uint8Array(64 + sp.length + 8 + cells * (SEGMENT_HEADER_CELL + 8) + 8);
          for (let i = 0; i < backing.length; i++) backing[i] = rand() & 0xff;
          const off = 64 + spShift;
          backing.set(sp, off);
          const cellBase = (64 + sp.length + 8 + 7) & ~7;
          const slotOffsets = Uint32Array.from(
            { length: cells },
            (_, i) => cellBase + i * (SEGMENT_HEADER_CELL + 8) + cellShifts[i % cellShifts.length],
          );
          const before = backing.slice();
          for (const words of [new Uint32Array(backing.buffer), null]) {
            const work = before.slice();
            const w = words === null ? null : new Uint32Array(work.buffer);
            const out = outputs(cells);
            const n = segmentTcpSuperPacket(
              work,
              w,
              off,
              sp.length,
              gsoSize,
              NO_LIMIT,
              0,
              slotOffsets,
              0,
              cells,
              out.lens,
              out.extOffs,
              out.extLens,
            );
            const where =
              `hdr ${hdr}, super-packet +${spShift}, ` +
              `cells +${cellShifts.join(',')}, ${words === null ? 'bytes' : 'words'}`;
            assert.equal(n, cells, where);
            const want = before.slice();
            for (let i = 0; i < n; i++) want.set(expected[i].subarray(0, hdr), slotOffsets[i]);
            sameBytes(work, want, `buffer after segmentation: ${where}`);
            for (let i = 0; i < n; i++) {
              assert.equal(out.lens[i], hdr, where);
              assert.equal(out.extOffs[i], off + hdr + i * gsoSize, where);
              sameBytes(
                work.subarray(out.extOffs[i], out.extOffs[i] + out.extLens[i]),
                expected[i].subarray(hdr),
                `payload ${i}: ${where}`,
              );
            }
            runs++;
          }
        }
      }
    }
    assert.equal(runs, 4 * 5 * 5 * 2);
  });

  test('refusals return 0 and write nothing', () => {
    const rand = mulberry32(404);
    const payload = randomBytes(rand, 3000);
    const ok = superPacket(BASE, payload);
    // Sanity: the unmodified packet is accepted (3 segments of 1000 + 0 -> 3).
    {
      const L = layout(rand, ok.length, 8, false);
      L.bytes.set(ok, L.off);
      const out = outputs(8);
      assert.equal(
        segmentTcpSuperPacket(
          L.bytes,
          null,
          L.off,
          ok.length,
          1000,
          NO_LIMIT,
          0,
          L.slotOffsets,
          1,
          3,
          out.lens,
          out.extOffs,
          out.extLens,
        ),
        3,
      );
    }
    expectRefused(rand, superPacket({ ...BASE, protocol: 17 }, payload), 1000, 5, 'UDP');
    expectRefused(rand, superPacket({ ...BASE, mf: true }, payload), 1000, 5, 'MF');
    expectRefused(rand, superPacket({ ...BASE, fragOffset: 1 }, payload), 1000, 5, 'fragment offset 1');
    expectRefused(rand, superPacket({ ...BASE, fragOffset: 0x1000 }, payload), 1000, 5, 'fragment offset high bit');
    for (const doff of [0, 1, 4]) {
      const p = ok.slice();
      p[32] = (doff << 4) | (p[32] & 15);
      expectRefused(rand, p, 1000, 5, `doff ${doff}`);
    }
    // A 60-byte TCP header claimed in a 20 + 20 + 10 byte packet; then with options, exactly no payload.
    const short = superPacket(BASE, randomBytes(rand, 10));
    short[32] = 0xf0 | (short[32] & 15);
    expectRefused(rand, short, 1000, 5, 'header beyond len');
    const headerOnly = superPacket({ ...BASE, tcpOptions: new Uint8Array(12) }, new Uint8Array(0));
    expectRefused(rand, headerOnly, 1000, 5, 'no payload');
    // Shorter than an IP header plus a minimal TCP header (len passed smaller than the buffer).
    expectRefused(rand, ok, 1000, 5, 'len < ihl + 20', { len: 30 });
    expectRefused(rand, ok, 0, 5000, 'gso_size 0');
    expectRefused(rand, ok, -1, 5000, 'gso_size -1');
    expectRefused(rand, ok, Number.NaN, 5000, 'gso_size NaN');
    // maxSegmentBytes that leaves no payload byte after the 40-byte header (41 leaves one).
    expectRefused(rand, ok, 1000, 5, 'maxSegmentBytes 40 = hdr', { maxSegmentBytes: 40 });
    expectRefused(rand, ok, 1000, 5, 'maxSegmentBytes 0', { maxSegmentBytes: 0 });
    expectRefused(rand, ok, 1000, 5, 'maxSegmentBytes NaN', { maxSegmentBytes: Number.NaN });
    assert.equal(tcpSegmentCount(ok, 0, ok.length, 1000, 41), 3000);
    // The chunk asked for: 3000 / 1000 = 3 segments, numbered 0..2.
    const chunk = { countZero: false };
    expectRefused(rand, ok, 1000, 0, 'maxCells 0', chunk);
    expectRefused(rand, ok, 1000, -1, 'maxCells -1', chunk);
    expectRefused(rand, ok, 1000, 5, 'firstSegment 3 of 3', { ...chunk, firstSegment: 3 });
    expectRefused(rand, ok, 1000, 5, 'firstSegment -1', { ...chunk, firstSegment: -1 });
    expectRefused(rand, ok, 1000, 5, 'firstSegment 1.5', { ...chunk, firstSegment: 1.5 });
    expectRefused(rand, ok, 1000, 5, 'firstSegment NaN', { ...chunk, firstSegment: Number.NaN });
    expectRefused(rand, ok, 41, 5, 'firstSegment 74 of 74 (3000 / 41)', { ...chunk, firstSegment: 74 });
  });

  test('maxCells: exactly enough cells is enough; fewer cut the first maxCells segments, no more', () => {
    const rand = mulberry32(405);
    for (const [payloadLen, gsoSize, segments] of [
      [3000, 1000, 3],
      [3001, 1000, 4],
      [1, 1500, 1],
      [1448 * 45, 1448, 45],
      [500, 1, 500],
    ]) {
      const sp = superPacket(BASE, randomBytes(rand, payloadLen));
      assert.equal(tcpSegmentCount(sp, 0, sp.length, gsoSize, NO_LIMIT), segments);
      const L = layout(rand, sp.length, segments + 2, true);
      L.bytes.set(sp, L.off);
      const whole = outputs(segments + 2);
      assert.equal(
        segmentTcpSuperPacket(
          L.bytes,
          L.words,
          L.off,
          sp.length,
          gsoSize,
          NO_LIMIT,
          0,
          L.slotOffsets,
          1,
          segments,
          whole.lens,
          whole.extOffs,
          whole.extLens,
        ),
        segments,
      );
      assert.equal(whole.lens[0], LENS_SENTINEL);
      assert.equal(whole.lens[segments + 1], LENS_SENTINEL);
      const wholeSegments = Array.from({ length: segments }, (_, i) => gather(L.bytes, L.slotOffsets, whole, 1 + i));
      if (segments === 1) continue;
      // One cell fewer: the first segments - 1 (the same bytes), the last cell left alone.
      const fewer = outputs(segments + 2);
      assert.equal(
        segmentTcpSuperPacket(
          L.bytes,
          L.words,
          L.off,
          sp.length,
          gsoSize,
          NO_LIMIT,
          0,
          L.slotOffsets,
          1,
          segments - 1,
          fewer.lens,
          fewer.extOffs,
          fewer.extLens,
        ),
        segments - 1,
      );
      for (let i = 0; i < segments - 1; i++)
        sameBytes(gather(L.bytes, L.slotOffsets, fewer, 1 + i), wholeSegments[i], `segment ${i} of the shorter chunk`);
      assert.equal(fewer.lens[segments], LENS_SENTINEL, 'no cell beyond maxCells written');
      // More cells than are left after firstSegment: only the rest is cut.
      const rest = outputs(segments + 2);
      assert.equal(
        segmentTcpSuperPacket(
          L.bytes,
          L.words,
          L.off,
          sp.length,
          gsoSize,
          NO_LIMIT,
          segments - 1,
          L.slotOffsets,
          1,
          segments,
          rest.lens,
          rest.extOffs,
          rest.extLens,
        ),
        1,
      );
      sameBytes(gather(L.bytes, L.slotOffsets, rest, 1), wholeSegments[segments - 1], 'the last segment alone');
      assert.equal(rest.lens[2], LENS_SENTINEL);
    }
  });

  test('chunks (random first segment and chunk sizes, cells reused after each) are exactly the whole-packet segments', () => {
    let chunked = 0,
      cut = 0;
    for (const seed of seeds(150, 0xc4a40000)) {
      withSeed('chunks', seed, (rand) => {
        const c = randomCase(rand);
        const limited = rand() % 2 === 0;
        const maxSegmentBytes = limited ? c.hdr + 1 + (rand() % (c.gsoSize + 40)) : NO_LIMIT;
        const total = tcpSegmentCount(c.sp, 0, c.sp.length, c.gsoSize, maxSegmentBytes);
        const expected = segmentSuperPacket(vnetFor(c, cutSize(c, maxSegmentBytes)), c.sp);
        assert.equal(total, expected.length, 'tcpSegmentCount');
        if (cutSize(c, maxSegmentBytes) < c.gsoSize) cut++;
        const useWords = seed % 2 === 0;
        const cells = 1 + (rand() % Math.min(total, 64));
        const L = layout(rand, c.sp.length, cells + 2, useWords);
        L.bytes.set(c.sp, L.off);
        const spBefore = c.sp.slice();
        // From a random first segment to the end, in random chunks into the same cells, gathered
        // after each chunk (as the forwarder sends a chunk before cutting the next into them).
        const start = rand() % 3 === 0 ? 0 : rand() % total;
        const got: Uint8Array[] = [];
        let calls = 0;
        for (let first = start; first < total; calls++) {
          const firstCell = rand() % 3;
          const maxCells = 1 + (rand() % (cells + 1 - Math.max(0, firstCell - 1)));
          const out = outputs(cells + 2);
          const n = segmentTcpSuperPacket(
            L.bytes,
            L.words,
            L.off,
            c.sp.length,
            c.gsoSize,
            maxSegmentBytes,
            first,
            L.slotOffsets,
            firstCell,
            Math.min(maxCells, cells + 2 - firstCell),
            out.lens,
            out.extOffs,
            out.extLens,
          );
          assert.equal(
            n,
            Math.min(Math.min(maxCells, cells + 2 - firstCell), total - first),
            `count of the chunk at ${first}`,
          );
          for (let cell = 0; cell < cells + 2; cell++) {
            if (cell >= firstCell && cell < firstCell + n) got.push(gather(L.bytes, L.slotOffsets, out, cell));
            else assert.equal(out.lens[cell], LENS_SENTINEL, `cell ${cell} outside the chunk`);
          }
          first += n;
        }
        sameBytes(L.bytes.subarray(L.off, L.off + c.sp.length), spBefore, 'super-packet untouched');
        assert.equal(got.length, total - start);
        for (let i = 0; i < got.length; i++) sameBytes(got[i], expected[start + i], `segment ${start + i} of ${total}`);
        if (calls > 1) chunked++;
      });
    }
    if (process.env.TCP_SEGMENT_SEED === undefined)
      assert.ok(chunked > 100 && cut > 40, `coverage: ${chunked} chunked, ${cut} cut below gso_size`);
  });

  test('maxSegmentBytes below hdr + gso_size: the reference cut at maxSegmentBytes - hdr, every segment within it', () => {
    let cut = 0;
    for (const seed of seeds(150, 0x3a770000)) {
      withSeed('max segment bytes', seed, (rand) => {
        const c = randomCase(rand);
        // At most one payload byte per segment up to gso_size - 1 (and sometimes above: no cut).
        const maxSegmentBytes = c.hdr + 1 + (rand() % (c.gsoSize + 8));
        if (maxSegmentBytes - c.hdr < c.gsoSize) cut++;
        segmentAndCheck(rand, c, seed % 2 === 0, undefined, maxSegmentBytes);
      });
    }
    // A 1500-byte MTU with a 1460-byte gso_size and timestamps (52-byte header): 1448 per segment.
    const rand = mulberry32(0x1500);
    const ts = new Uint8Array([1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8]);
    const c: Case = {
      sp: superPacket({ ...BASE, tcpOptions: ts }, randomBytes(rand, 10000)),
      gsoSize: 1460,
      ihl: 20,
      hdr: 52,
    };
    assert.equal(segmentAndCheck(rand, c, true, undefined, 1500), Math.ceil(10000 / 1448));
    assert.equal(
      segmentAndCheck(rand, c, false, undefined, 1512),
      Math.ceil(10000 / 1460),
      'no cut: hdr + gso_size fits',
    );
    if (process.env.TCP_SEGMENT_SEED === undefined) assert.ok(cut > 100, `coverage: ${cut} cut`);
  });

  test('the header length comes from the packet (IP options + TCP options up to 60 + 60 fit a cell)', () => {
    const rand = mulberry32(406);
    const ipOptions = new Uint8Array(40).fill(1);
    const tcpOptions = randomBytes(rand, 40);
    const c: Case = {
      sp: superPacket({ ...BASE, ipOptions, tcpOptions }, randomBytes(rand, 5000)),
      gsoSize: 1337,
      ihl: 60,
      hdr: 120,
    };
    assert.ok(c.hdr <= SEGMENT_HEADER_CELL);
    assert.equal(segmentAndCheck(rand, c, true), 4);
    assert.equal(segmentAndCheck(rand, c, false), 4);
  });
});

describe('completeChecksum', () => {
  /** Places packet at a random offset of a random buffer; returns what is needed to check it. */
  function place(rand: () => number, p: Uint8Array, useWords: boolean) {
    const viewStart = rand() % 8;
    const off = rand() % 16;
    const backing = new Uint8Array((viewStart + off + p.length + 16 + 3) & ~3);
    for (let i = 0; i < backing.length; i++) backing[i] = rand() & 0xff;
    const bytes = backing.subarray(viewStart, viewStart + off + p.length + 8);
    bytes.set(p, off);
    return { backing, bytes, off, words: useWords ? new Uint32Array(backing.buffer) : null };
  }

  test('random TCP and UDP packets whose field holds the pseudo-header sum: completed to the valid checksum', () => {
    let udp = 0,
      tcp = 0,
      withOptions = 0;
    for (const seed of seeds(400, 0xc0c50000)) {
      withSeed('complete', seed, (rand) => {
        const ipOptions = rand() % 4 === 0 ? randomIpOptions(rand) : undefined;
        const ihl = 20 + (ipOptions?.length ?? 0);
        const payloadLen = rand() % 3 === 0 ? rand() % 64 : rand() % 9000;
        const src = rand() >>> 0,
          dst = rand() >>> 0;
        const isUdp = rand() % 2 === 0;
        let valid: Uint8Array;
        let partial: Uint8Array;
        if (isUdp) {
          const spec = {
            src,
            dst,
            sport: rand() & 0xffff,
            dport: rand() & 0xffff,
            payload: randomBytes(rand, payloadLen),
            ipOptions,
          };
          // The valid one: computed by the reference (0 -> 0xffff per RFC 768).
          const probe = buildUdpPacket({ ...spec, check: 0 });
          const sum =
            ~onesSum(probe, ihl, probe.length - ihl, partialChecksum(src, dst, 17, probe.length - ihl)) & 0xffff;
          valid = buildUdpPacket({ ...spec, check: sum === 0 ? 0xffff : sum });
          partial = buildUdpPacket({ ...spec, check: partialChecksum(src, dst, 17, probe.length - ihl) });
          udp++;
        } else {
          valid = buildTcpPacket({
            src,
            dst,
            ipOptions,
            sport: rand() & 0xffff,
            dport: rand() & 0xffff,
            seq: rand() >>> 0,
            ack: rand() >>> 0,
            flags: TCP_ACK,
            window: rand() & 0xffff,
            tcpOptions: randomTcpOptions(rand),
            payload: randomBytes(rand, payloadLen),
          });
          partial = valid.slice();
          const field = partialChecksum(src, dst, 6, valid.length - ihl);
          partial[ihl + 16] = field >> 8;
          partial[ihl + 17] = field & 0xff;
          tcp++;
        }
        if (ipOptions !== undefined) withOptions++;
        const P = place(rand, partial, seed % 2 === 0);
        const want = P.backing.slice();
        want.set(valid, P.bytes.byteOffset - P.backing.byteOffset + P.off);
        assert.equal(completeChecksum(P.bytes, P.words, P.off, partial.length, ihl, isUdp ? 6 : 16), true);
        // Exactly the valid packet, and nothing else in the buffer changed.
        sameBytes(P.backing, want, 'buffer after completion');
        const done = P.bytes.subarray(P.off, P.off + partial.length);
        assert.ok(isUdp ? udpChecksumValid(done) : tcpChecksumValid(done), 'checksum verifies');
      });
    }
    if (process.env.TCP_SEGMENT_SEED === undefined) assert.ok(udp > 100 && tcp > 100 && withOptions > 50);
  });

  test('any csumStart/csumOffset that fit: the field = ~sum(bytes[csumStart, len)) with the field as found', () => {
    for (const seed of seeds(200, 0xc0c51000)) {
      withSeed('generic', seed, (rand) => {
        const len = 20 + 2 + (rand() % 3000);
        const p = randomBytes(rand, len);
        p[0] = 0x45;
        p[9] = 6;
        const csumStart = 20 + (rand() % (len - 21));
        const csumOffset = rand() % (len - csumStart - 1);
        const P = place(rand, p, seed % 2 === 0);
        const expected = ~onesSum(p, csumStart, len - csumStart) & 0xffff;
        const want = P.backing.slice();
        const at = P.bytes.byteOffset - P.backing.byteOffset + P.off + csumStart + csumOffset;
        want[at] = expected >> 8;
        want[at + 1] = expected & 0xff;
        assert.equal(completeChecksum(P.bytes, P.words, P.off, len, csumStart, csumOffset), true);
        sameBytes(P.backing, want, `csumStart ${csumStart} csumOffset ${csumOffset}`);
      });
    }
  });

  test('UDP: a computed checksum of 0 is stored as 0xffff; TCP (or another offset) keeps 0', () => {
    const rand = mulberry32(0x0dd);
    const src = 0x0af40001,
      dst = 0x0af40002;
    for (let r = 0; r < 50; r++) {
      // Two payload bytes are chosen so that the whole sum is 0xffff: ~sum = 0.
      const payload = randomBytes(rand, 2 + 2 * (rand() % 500));
      payload[0] = payload[1] = 0;
      const probe = buildUdpPacket({
        src,
        dst,
        sport: 53,
        dport: 40000,
        payload,
        check: partialChecksum(src, dst, 17, 8 + payload.length),
      });
      const s = onesSum(probe, 20, probe.length - 20);
      const fix = 0xffff - s;
      probe[28] = fix >> 8;
      probe[29] = fix & 0xff;
      assert.equal(onesSum(probe, 20, probe.length - 20), 0xffff, 'constructed sum');
      const asTcpOffset = probe.slice();
      const P = place(rand, probe, r % 2 === 0);
      assert.equal(completeChecksum(P.bytes, P.words, P.off, probe.length, 20, 6), true);
      const done = P.bytes.subarray(P.off, P.off + probe.length);
      assert.equal(done[26] * 256 + done[27], 0xffff, 'UDP zero stored as 0xffff');
      assert.ok(udpChecksumValid(done));
      // The same bytes with the field elsewhere (offset 8 of a protocol-17 packet): 0 stays 0.
      const Q = place(rand, asTcpOffset, false);
      const field = asTcpOffset[26] * 256 + asTcpOffset[27];
      // Move the partial sum to bytes 28..29 (the fix bytes) and put the fix in 26..27: same sum.
      Q.bytes[Q.off + 28] = field >> 8;
      Q.bytes[Q.off + 29] = field & 0xff;
      Q.bytes[Q.off + 26] = fix >> 8;
      Q.bytes[Q.off + 27] = fix & 0xff;
      assert.equal(completeChecksum(Q.bytes, Q.words, Q.off, probe.length, 20, 8), true);
      assert.equal(Q.bytes[Q.off + 28] * 256 + Q.bytes[Q.off + 29], 0, 'offset 8: 0 kept');
      // A TCP packet whose sum is 0xffff: 0 kept.
      Q.bytes[Q.off + 9] = 6;
      Q.bytes[Q.off + 28] = field >> 8;
      Q.bytes[Q.off + 29] = field & 0xff;
      Q.bytes[Q.off + 26] = fix >> 8;
      Q.bytes[Q.off + 27] = fix & 0xff;
      // Put the field at TCP's offset 16 (bytes 36..37) by swapping it with bytes 36..37 (same sum).
      const t0 = Q.bytes[Q.off + 36],
        t1 = Q.bytes[Q.off + 37];
      Q.bytes[Q.off + 36] = field >> 8;
      Q.bytes[Q.off + 37] = field & 0xff;
      Q.bytes[Q.off + 28] = t0;
      Q.bytes[Q.off + 29] = t1;
      assert.equal(completeChecksum(Q.bytes, Q.words, Q.off, probe.length, 20, 16), true);
      assert.equal(Q.bytes[Q.off + 36] * 256 + Q.bytes[Q.off + 37], 0, 'TCP: 0 kept');
    }
  });

  test('refuses csumStart before the end of the IP header or a field beyond len, writing nothing', () => {
    const rand = mulberry32(0xbad);
    const p = buildTcpPacket({ ...BASE, ipOptions: new Uint8Array(8).fill(1), payload: randomBytes(rand, 100) });
    const ihl = 28,
      len = p.length;
    const cases: Array<[number, number, boolean]> = [
      [0, 16, false],
      [20, 16, false],
      [27, 16, false],
      [28, 16, true],
      [28, len - 28 - 2, true],
      [28, len - 28 - 1, false],
      [len - 2, 0, true],
      [len - 1, 0, false],
      [len, 0, false],
      [28, 70000, false],
      [70000, 0, false],
    ];
    for (const [csumStart, csumOffset, fits] of cases) {
      for (const useWords of [false, true]) {
        const P = place(rand, p, useWords);
        const before = P.backing.slice();
        assert.equal(
          completeChecksum(P.bytes, P.words, P.off, len, csumStart, csumOffset),
          fits,
          `csumStart ${csumStart} csumOffset ${csumOffset}`,
        );
        if (!fits) sameBytes(P.backing, before, `csumStart ${csumStart} csumOffset ${csumOffset}: written`);
      }
    }
    assert.equal(ihl, (p[0] & 15) * 4);
  });
});
