// USO: cutting GSO_UDP_L4 super-packets read from flannel0 into datagrams
// (src/encap/udp-segment.ts) against a reference written here: plain byte loops that build each
// datagram whole, the way Linux's __udp_gso_segment + inet_gso_segment cut it. Buffers are laid out
// at random (misaligned offsets, shuffled cells, views into larger buffers) and filled with
// sentinels, so any stray write shows; every layout runs on the byte path (words null), the
// TypeScript word path and a checksumMemory (WebAssembly SIMD) with identical results. The
// datagrams must also coalesce back (planCoalescing, the UDP GRO of flannel-ts's receive side)
// into the super-packet they came from.
// Randomized tests print their seed on failure; rerun one with UDP_SEGMENT_SEED=<seed>.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { STRIDED_SUMS_CAPACITY } from '../../src/encap/checksum.js';
import { checksumMemory, simdChecksumFor } from '../../src/encap/checksum-simd.js';
import { MAX_GROUP_PACKETS, planCoalescing, VNET_HDR_SLOT } from '../../src/encap/tcp-coalesce.js';
import { SEGMENT_HEADER_CELL } from '../../src/encap/tcp-segment.js';
import { segmentUdpSuperPacket, udpSegmentCount } from '../../src/encap/udp-segment.js';
import { mulberry32, randomBytes, runSeeded, seedsFor } from '../helpers/prng.js';

const NO_LIMIT = 65535;
const LENS_SENTINEL = -7;
const EXT_OFFS_SENTINEL = 0xdeadbeef;
const EXT_LENS_SENTINEL = 0xbeef;

const seeds = (count: number, base: number): number[] => seedsFor('UDP_SEGMENT_SEED', count, base);
const withSeed = (name: string, seed: number, body: (rand: () => number) => void): void =>
  runSeeded(`encap-udp-segment ${name}`, 'UDP_SEGMENT_SEED', seed, body);

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

// ---------------------------------------------------------------- the reference

const be16 = (b: Uint8Array, at: number): number => (b[at] << 8) | b[at + 1];
function put16(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >> 8) & 0xff;
  b[at + 1] = v & 0xff;
}

/** RFC 1071 one's-complement sum of b[from, to) as big-endian words from `from`, plus initial; folded, not inverted. */
function sum16(b: Uint8Array, from: number, to: number, initial = 0): number {
  let s = initial;
  for (let i = from; i < to; i += 2) s += (b[i] << 8) | (i + 1 < to ? b[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** The IPv4 pseudo-header sum for the packet p (src, dst, protocol 17, udpLength), unfolded. */
function udpPseudoSum(p: Uint8Array, udpLength: number): number {
  return be16(p, 12) + be16(p, 14) + be16(p, 16) + be16(p, 18) + 17 + udpLength;
}

/** The datagram's UDP checksum verifies (and is present). */
function udpChecksumOk(d: Uint8Array): boolean {
  const ihl = (d[0] & 15) * 4;
  return be16(d, ihl + 6) !== 0 && sum16(d, ihl, d.length, udpPseudoSum(d, d.length - ihl)) === 0xffff;
}

function ipChecksumOk(d: Uint8Array): boolean {
  return sum16(d, 0, (d[0] & 15) * 4) === 0xffff;
}

/**
 * The datagrams Linux's UDP GSO makes of the super-packet sp at gso_size gso, each built whole:
 * header copied, IP total length and id (id0 + k) and header checksum; UDP length 8 + n and the
 * full checksum over pseudo-header, header and payload, 0 sent as 0xffff.
 */
function referenceSegments(sp: Uint8Array, gso: number): Uint8Array[] {
  const ihl = (sp[0] & 15) * 4;
  const hdr = ihl + 8;
  const id0 = be16(sp, 4);
  const out: Uint8Array[] = [];
  for (let k = 0, at = hdr; at < sp.length; k++, at += gso) {
    const n = Math.min(gso, sp.length - at);
    const d = new Uint8Array(hdr + n);
    for (let i = 0; i < hdr; i++) d[i] = sp[i];
    for (let i = 0; i < n; i++) d[hdr + i] = sp[at + i];
    put16(d, 2, hdr + n);
    put16(d, 4, (id0 + k) & 0xffff);
    put16(d, 10, 0);
    put16(d, 10, ~sum16(d, 0, ihl) & 0xffff);
    put16(d, ihl + 4, 8 + n);
    put16(d, ihl + 6, 0);
    const check = ~sum16(d, ihl, d.length, udpPseudoSum(d, 8 + n)) & 0xffff;
    put16(d, ihl + 6, check === 0 ? 0xffff : check);
    out.push(d);
  }
  return out;
}

// ---------------------------------------------------------------- super-packets

interface SuperSpec {
  src: number;
  dst: number;
  sport: number;
  dport: number;
  id: number;
  ttl: number;
  tos: number;
  df: boolean;
  ipOptions?: Uint8Array;
  /** Defaults: 17, false, 0, 0. */
  protocol?: number;
  mf?: boolean;
  fragOffset?: number;
  udpLengthDelta?: number;
}

/**
 * A GSO_UDP_L4 super-packet as flannel0 hands it over: a valid IPv4 header (total length = its
 * length), UDP length = the whole IP payload, and the UDP check field holding the pseudo-header
 * sum (folded, not inverted: CHECKSUM_PARTIAL).
 */
function superPacket(s: SuperSpec, payload: Uint8Array): Uint8Array {
  const ihl = 20 + (s.ipOptions?.length ?? 0);
  const p = new Uint8Array(ihl + 8 + payload.length);
  p[0] = 0x40 | (ihl / 4);
  p[1] = s.tos;
  put16(p, 2, p.length);
  put16(p, 4, s.id);
  put16(p, 6, (s.df ? 0x4000 : 0) | (s.mf ? 0x2000 : 0) | (s.fragOffset ?? 0));
  p[8] = s.ttl;
  p[9] = s.protocol ?? 17;
  put16(p, 12, s.src >>> 16);
  put16(p, 14, s.src & 0xffff);
  put16(p, 16, s.dst >>> 16);
  put16(p, 18, s.dst & 0xffff);
  if (s.ipOptions) p.set(s.ipOptions, 20);
  put16(p, 10, ~sum16(p, 0, ihl) & 0xffff);
  put16(p, ihl, s.sport);
  put16(p, ihl + 2, s.dport);
  const udpLength = p.length - ihl;
  put16(p, ihl + 4, (udpLength + (s.udpLengthDelta ?? 0)) & 0xffff);
  put16(p, ihl + 6, sum16(p, 0, 0, udpPseudoSum(p, udpLength)));
  p.set(payload, ihl + 8);
  return p;
}

/** IP options: NOPs and an end-of-list, a multiple of 4 bytes (4..40). */
function randomIpOptions(rand: () => number): Uint8Array {
  const o = new Uint8Array(4 * (1 + (rand() % 10)));
  o.fill(1);
  o[o.length - 1] = 0;
  return o;
}

function randomSpec(rand: () => number, withOptions: boolean): SuperSpec {
  return {
    src: rand() >>> 0,
    dst: rand() >>> 0,
    sport: rand() & 0xffff,
    dport: rand() & 0xffff,
    id: rand() % 3 === 0 ? 0xffff - (rand() % 100) : rand() & 0xffff,
    ttl: 1 + (rand() % 255),
    tos: rand() & 0xff,
    df: rand() % 2 === 0,
    ipOptions: withOptions ? randomIpOptions(rand) : undefined,
  };
}

interface Case {
  sp: Uint8Array;
  gso: number;
  hdr: number;
}

/** A random super-packet: gso 1..1472, payload 1..64k (at most ~400 datagrams, some exact multiples, some single). */
function randomCase(rand: () => number): Case {
  const spec = randomSpec(rand, rand() % 4 === 0);
  const hdr = 20 + (spec.ipOptions?.length ?? 0) + 8;
  const gRoll = rand() % 6;
  const gso =
    gRoll === 0 ? 1 + (rand() % 32) : gRoll === 1 ? [1472, 1452, 1200, 1350][rand() % 4] : 1 + (rand() % 1472);
  const room = Math.min(65536, 65535 - hdr);
  const pRoll = rand() % 8;
  let payloadLen: number;
  if (pRoll === 0)
    payloadLen = Math.min(room, gso * (1 + (rand() % 44))); // an exact multiple (or the room)
  else if (pRoll === 1)
    payloadLen = 1 + (rand() % Math.min(room, gso)); // a single datagram
  else if (pRoll === 2 && gso >= 200)
    payloadLen = room - (rand() % 100); // the biggest super-packets
  else payloadLen = 1 + (rand() % Math.min(room, gso * 400));
  return { sp: superPacket(spec, randomBytes(rand, payloadLen)), gso, hdr };
}

// ---------------------------------------------------------------- layouts and runs

/** Where things lie: the super-packet and the cells in shuffled order with gaps, in a view at viewStart of a buffer. */
interface Geometry {
  viewStart: number;
  size: number;
  off: number;
  slotOffsets: Uint32Array;
  fill: Uint8Array;
}

function geometry(rand: () => number, spLen: number, cellCount: number): Geometry {
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
    // Mostly 8-aligned cells (the word copy), sometimes misaligned ones.
    at += rand() % 3 === 0 ? rand() % 8 : (8 - (at & 7)) & 7;
  }
  const viewStart = rand() % 8;
  const fill = randomBytes(rand, (viewStart + at + 16) & ~3);
  return { viewStart, size: at, off, slotOffsets, fill };
}

type PathKind = 'bytes' | 'words' | 'simd';
const PATHS: readonly PathKind[] = ['bytes', 'words', 'simd'];

interface Layout {
  backing: Uint8Array;
  bytes: Uint8Array;
  words: Uint32Array | null;
}

/** The geometry in a fresh buffer for one checksum path: plain (words null or a TS words view) or a checksumMemory. */
function instantiate(g: Geometry, sp: Uint8Array, kind: PathKind): Layout {
  const backing = kind === 'simd' ? checksumMemory(g.fill.length) : new Uint8Array(g.fill.length);
  if (kind === 'simd')
    assert.ok(simdChecksumFor(backing.buffer) !== null, 'no WebAssembly SIMD: checksumMemory gave a plain buffer');
  backing.set(g.fill);
  const bytes = backing.subarray(g.viewStart, g.viewStart + g.size);
  bytes.set(sp, g.off);
  return { backing, bytes, words: kind === 'bytes' ? null : new Uint32Array(backing.buffer) };
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
 * Cuts the whole super-packet in chunks of at most maxCells (successive calls, each starting at
 * the next datagram, cells firstCell onwards); checks every call's return value. Returns the outputs.
 */
function segmentInChunks(
  L: Layout,
  g: Geometry,
  c: Case,
  maxSegmentBytes: number,
  firstCell: number,
  maxCells: number,
  cellCount: number,
  total: number,
): Outputs {
  const out = outputs(cellCount);
  for (let done = 0; done < total;) {
    const n = segmentUdpSuperPacket(
      L.bytes,
      L.words,
      g.off,
      c.sp.length,
      c.gso,
      maxSegmentBytes,
      done,
      g.slotOffsets,
      firstCell + done,
      maxCells,
      out.lens,
      out.extOffs,
      out.extLens,
    );
    assert.equal(n, Math.min(maxCells, total - done), `chunk at ${done}`);
    done += n;
  }
  return out;
}

/** Datagram `cell` as the sendmsg gathers it: the header cell, then the payload inside the super-packet. */
function gather(bytes: Uint8Array, slotOffsets: Uint32Array, out: Outputs, cell: number): Uint8Array {
  const d = new Uint8Array(out.lens[cell] + out.extLens[cell]);
  const h = slotOffsets[cell];
  d.set(bytes.subarray(h, h + out.lens[cell]), 0);
  d.set(bytes.subarray(out.extOffs[cell], out.extOffs[cell] + out.extLens[cell]), out.lens[cell]);
  return d;
}

/**
 * Segments c on a random geometry along all three checksum paths, with one call and (when there
 * is more than one datagram) in random small chunks; checks each against the reference: the
 * buffer (only the used cells' first hdr bytes may change), the outputs, every gathered datagram,
 * and that unused output entries stay untouched. Returns the datagrams.
 */
function segmentAndCheck(rand: () => number, c: Case, maxSegmentBytes = NO_LIMIT): Uint8Array[] {
  const expected = referenceSegments(c.sp, c.gso);
  const total = expected.length;
  assert.equal(udpSegmentCount(c.sp, 0, c.sp.length, c.gso, maxSegmentBytes), total, 'udpSegmentCount');
  const firstCell = rand() % 4;
  const cellCount = firstCell + total + (rand() % 3);
  const g = geometry(rand, c.sp.length, cellCount);
  const chunkings = total > 1 ? [total + (rand() % 3), 1 + (rand() % Math.min(7, total - 1))] : [1 + (rand() % 3)];
  let first: { backing: Uint8Array; out: Outputs } | null = null;
  for (const maxCells of chunkings) {
    for (const kind of PATHS) {
      const L = instantiate(g, c.sp, kind);
      const before = L.backing.slice();
      const out = segmentInChunks(L, g, c, maxSegmentBytes, firstCell, maxCells, cellCount, total);
      const where = `${kind} path, maxCells ${maxCells}`;
      if (first === null) {
        // Against the reference, once; every other path and chunking must give the same bytes.
        const want = before.slice();
        for (let k = 0; k < total; k++)
          want.set(expected[k].subarray(0, c.hdr), g.viewStart + g.slotOffsets[firstCell + k]);
        sameBytes(L.backing, want, `buffer after segmentation (${where})`);
        for (let k = 0; k < total; k++) {
          const cell = firstCell + k;
          assert.equal(out.lens[cell], c.hdr, `lens of cell ${cell}`);
          assert.equal(out.extOffs[cell], g.off + c.hdr + k * c.gso, `extOffs of cell ${cell}`);
          assert.equal(out.extLens[cell], expected[k].length - c.hdr, `extLens of cell ${cell}`);
          sameBytes(gather(L.bytes, g.slotOffsets, out, cell), expected[k], `datagram ${k} of ${total}`);
        }
        for (let cell = 0; cell < cellCount; cell++) {
          if (cell >= firstCell && cell < firstCell + total) continue;
          assert.equal(out.lens[cell], LENS_SENTINEL, `lens of unused cell ${cell}`);
          assert.equal(out.extOffs[cell], EXT_OFFS_SENTINEL, `extOffs of unused cell ${cell}`);
          assert.equal(out.extLens[cell], EXT_LENS_SENTINEL, `extLens of unused cell ${cell}`);
        }
        first = { backing: L.backing.slice(), out };
      } else {
        sameBytes(L.backing, first.backing, `buffer differs from the first run (${where})`);
        assert.deepEqual(out, first.out, `outputs differ from the first run (${where})`);
      }
    }
  }
  return expected;
}

// ---------------------------------------------------------------- tests

const BASE: SuperSpec = {
  src: 0x0af40102,
  dst: 0x0af40203,
  sport: 40000,
  dport: 443,
  id: 0xfffe,
  ttl: 63,
  tos: 0,
  df: true,
};

describe('segmentUdpSuperPacket', () => {
  test('hand-checked: 250 bytes at gso_size 100 -> datagrams of 100, 100, 50; ids wrap; full checksums', () => {
    const sp = superPacket(
      BASE,
      Uint8Array.from({ length: 250 }, (_, i) => i),
    );
    const bytes = new Uint8Array(1024);
    const off = 3; // misaligned on purpose
    bytes.set(sp, off);
    const slotOffsets = new Uint32Array([700, 400, 550, 850]);
    const lens = new Int32Array(4),
      extOffs = new Uint32Array(4),
      extLens = new Uint16Array(4);
    assert.equal(udpSegmentCount(bytes, off, sp.length, 100, NO_LIMIT), 3);
    const n = segmentUdpSuperPacket(
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
    assert.deepEqual(Array.from(lens), [0, 28, 28, 28]);
    assert.deepEqual(Array.from(extOffs), [0, off + 28, off + 128, off + 228]);
    assert.deepEqual(Array.from(extLens), [0, 100, 100, 50]);
    const ds = [1, 2, 3].map((cell) => gather(bytes, slotOffsets, { lens, extOffs, extLens }, cell));
    assert.deepEqual(
      ds.map((d) => be16(d, 2)),
      [128, 128, 78],
      'IP total lengths',
    );
    assert.deepEqual(
      ds.map((d) => be16(d, 4)),
      [0xfffe, 0xffff, 0],
      'IP ids',
    );
    assert.deepEqual(
      ds.map((d) => be16(d, 24)),
      [108, 108, 58],
      'UDP lengths',
    );
    assert.ok(
      ds.every((d) => ipChecksumOk(d) && udpChecksumOk(d)),
      'checksums',
    );
    assert.ok(
      ds.every((d) => d[8] === 63 && be16(d, 6) === 0x4000 && be16(d, 20) === 40000 && be16(d, 22) === 443),
      'copied fields',
    );
    assert.deepEqual(
      Array.from(ds[2].subarray(28)),
      Array.from({ length: 50 }, (_, i) => 200 + i),
      'last payload',
    );
    // The super-packet itself is untouched.
    sameBytes(bytes.subarray(off, off + sp.length), sp, 'super-packet');
  });

  test('randomized super-packets against the reference: one call and small chunks, byte, word and SIMD paths', () => {
    let datagrams = 0,
      multi = 0,
      single = 0,
      big = 0,
      tiny = 0,
      options = 0,
      noDf = 0,
      wrapped = 0;
    for (const seed of seeds(160, 0x05a0000)) {
      withSeed('random', seed, (rand) => {
        const c = randomCase(rand);
        const ds = segmentAndCheck(rand, c);
        datagrams += ds.length;
        if (ds.length > 1) multi++;
        else single++;
        if (c.sp.length > 60000) big++;
        if (c.gso <= 32) tiny++;
        if (c.hdr > 28) options++;
        if ((c.sp[6] & 0x40) === 0) noDf++;
        if (be16(c.sp, 4) + ds.length > 0x10000) wrapped++;
        // Independently of the reference: every datagram is valid and in order.
        ds.forEach((d, k) => {
          assert.ok(ipChecksumOk(d) && udpChecksumOk(d), `datagram ${k}: checksums`);
          assert.equal(be16(d, c.hdr - 4), d.length - c.hdr + 8, `datagram ${k}: UDP length`);
        });
      });
    }
    if (process.env.UDP_SEGMENT_SEED !== undefined) return;
    assert.ok(
      multi > 100 &&
        single > 10 &&
        big > 3 &&
        tiny > 10 &&
        options > 20 &&
        noDf > 40 &&
        wrapped > 5 &&
        datagrams > 5000,
      `coverage: ${multi} multi, ${single} single, ${big} big, ${tiny} ` +
        `tiny gso, ${options} with IP options, ${noDf} without DF, ` +
        `${wrapped} id wraps, ${datagrams} datagrams`,
    );
  });

  test(`chunks across ${STRIDED_SUMS_CAPACITY}-datagram strided sums: gso 1, 7 and 100 over ~60 KB, all paths equal`, () => {
    const rand = mulberry32(0x5e9);
    for (const gso of [1, 7, 100]) {
      const payloadLen = gso === 1 ? 1500 : gso === 7 ? 4000 : 60000;
      const sp = superPacket({ ...BASE, id: 0xff00 }, randomBytes(rand, payloadLen));
      const ds = segmentAndCheck(rand, { sp, gso, hdr: 28 });
      assert.equal(ds.length, Math.ceil(payloadLen / gso));
    }
  });

  test('a 64 KiB super-packet with 40 bytes of IP options at gso_size 1200, at every alignment', () => {
    const rand = mulberry32(0x40);
    const ipOptions = new Uint8Array(40).fill(1);
    const sp = superPacket({ ...BASE, ipOptions, df: false }, randomBytes(rand, 65535 - 68));
    assert.equal(sp.length, 65535);
    for (let a = 0; a < 4; a++) {
      // 65467 payload bytes / 1200 = 54 full datagrams + 667 bytes.
      const ds = segmentAndCheck(rand, { sp, gso: 1200, hdr: 68 });
      assert.equal(ds.length, 55);
      assert.equal(ds[54].length, 68 + 667);
    }
  });

  test('a computed UDP checksum of 0 is sent as 0xffff', () => {
    // Datagram 1 of 3: set its first two payload bytes so its checksum sum folds to 0xffff.
    const gso = 64;
    const payload = Uint8Array.from({ length: 3 * gso - 5 }, (_, i) => (i * 13 + 5) & 0xff);
    let sp = superPacket(BASE, payload);
    const d1 = referenceSegments(sp, gso)[1];
    d1[28] = 0;
    d1[29] = 0;
    d1[26] = 0;
    d1[27] = 0;
    const rest = sum16(d1, 20, d1.length, udpPseudoSum(d1, d1.length - 20));
    const w = 0xffff - rest; // rest + w = 0xffff: the sum of every word is "negative zero"
    payload[gso] = w >> 8;
    payload[gso + 1] = w & 0xff;
    sp = superPacket(BASE, payload);
    const ds = segmentAndCheck(mulberry32(0), { sp, gso, hdr: 28 });
    assert.equal(be16(ds[1], 26), 0xffff, 'check field of datagram 1');
    assert.equal(sum16(ds[1], 20, ds[1].length, udpPseudoSum(ds[1], ds[1].length - 20)), 0xffff, 'and it verifies');
    assert.ok(be16(ds[0], 26) !== 0xffff && be16(ds[2], 26) !== 0xffff, 'the other datagrams are ordinary');
  });

  test('one datagram (payload <= gso_size): the super-packet itself, its checksum completed', () => {
    const rand = mulberry32(0x1);
    for (const [payloadLen, gso] of [
      [1, 1],
      [1, 1472],
      [1000, 1000],
      [999, 1000],
      [1472, 1472],
    ]) {
      const sp = superPacket(BASE, randomBytes(rand, payloadLen));
      const ds = segmentAndCheck(rand, { sp, gso, hdr: 28 });
      assert.equal(ds.length, 1);
      const want = sp.slice();
      want.set(ds[0].subarray(26, 28), 26); // only the check field differs (partial -> full)
      sameBytes(ds[0], want, `payload ${payloadLen}, gso ${gso}`);
      assert.ok(udpChecksumOk(ds[0]));
    }
  });

  test('maxSegmentBytes: datagrams are never re-cut; the largest must fit', () => {
    const rand = mulberry32(0x3a);
    const sp = superPacket(BASE, randomBytes(rand, 3000)); // hdr 28, gso 1000: 3 x 1028 bytes
    assert.equal(udpSegmentCount(sp, 0, sp.length, 1000, 1028), 3, 'exact fit');
    segmentAndCheck(rand, { sp, gso: 1000, hdr: 28 }, 1028);
    assert.equal(udpSegmentCount(sp, 0, sp.length, 1000, 1027), 0, 'one byte over');
    expectRefused(rand, sp, 1000, 4, 'datagrams beyond maxSegmentBytes', { maxSegmentBytes: 1027 });
    assert.equal(
      udpSegmentCount(sp, 0, sp.length, 1000, NO_LIMIT),
      3,
      'the caller tells oversize from malformed with 65535',
    );
    // A single datagram is measured by its own size, not by gso_size.
    const one = superPacket(BASE, randomBytes(rand, 500));
    assert.equal(udpSegmentCount(one, 0, one.length, 1472, 528), 1, 'single datagram that fits');
    segmentAndCheck(rand, { sp: one, gso: 1472, hdr: 28 }, 528);
    assert.equal(udpSegmentCount(one, 0, one.length, 1472, 527), 0, 'single datagram one byte over');
    // The last, shorter datagram does not matter: only the gso_size ones must fit.
    const ragged = superPacket(BASE, randomBytes(rand, 2100));
    assert.equal(udpSegmentCount(ragged, 0, ragged.length, 1000, 1028), 3);
    assert.equal(udpSegmentCount(ragged, 0, ragged.length, 1000, 1027), 0);
  });
});

/** The first len bytes of p as a well-formed IPv4 packet: total length len, IP checksum recomputed. */
function truncated(p: Uint8Array, len: number): Uint8Array {
  const t = p.slice(0, len);
  put16(t, 2, len);
  put16(t, 10, 0);
  put16(t, 10, ~sum16(t, 0, (t[0] & 15) * 4) & 0xffff);
  return t;
}

interface RefusalOptions {
  len?: number;
  maxSegmentBytes?: number;
  firstSegment?: number;
  countZero?: boolean;
}

/**
 * Calls the segmenter where it must refuse, on every checksum path: returns 0 and writes nothing
 * at all (and, unless the refusal is about firstSegment or maxCells, udpSegmentCount is 0 too).
 */
function expectRefused(
  rand: () => number,
  sp: Uint8Array,
  gso: number,
  maxCells: number,
  why: string,
  opts: RefusalOptions = {},
): void {
  const { len = sp.length, maxSegmentBytes = NO_LIMIT, firstSegment = 0, countZero = true } = opts;
  if (countZero) assert.equal(udpSegmentCount(sp, 0, len, gso, maxSegmentBytes), 0, `${why}: udpSegmentCount`);
  const cellCount = (Number.isFinite(maxCells) ? Math.max(1, maxCells) : 1) + 2;
  const g = geometry(rand, sp.length, cellCount);
  for (const kind of PATHS) {
    const L = instantiate(g, sp, kind);
    const before = L.backing.slice();
    const out = outputs(cellCount);
    const n = segmentUdpSuperPacket(
      L.bytes,
      L.words,
      g.off,
      len,
      gso,
      maxSegmentBytes,
      firstSegment,
      g.slotOffsets,
      1,
      maxCells,
      out.lens,
      out.extOffs,
      out.extLens,
    );
    assert.equal(n, 0, `${why}: not refused (${kind})`);
    sameBytes(L.backing, before, `${why}: buffer written (${kind})`);
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

describe('udpSegmentCount and segmentUdpSuperPacket refuse', () => {
  const rand = mulberry32(0xbad);
  const payload = randomBytes(rand, 700);
  const ok = superPacket(BASE, payload);

  test('the valid packet the refusals start from is accepted', () => {
    assert.equal(udpSegmentCount(ok, 0, ok.length, 300, NO_LIMIT), 3);
  });

  test('not UDP (TCP, ICMP)', () => {
    expectRefused(rand, superPacket({ ...BASE, protocol: 6 }, payload), 300, 4, 'TCP');
    expectRefused(rand, superPacket({ ...BASE, protocol: 1 }, payload), 300, 4, 'ICMP');
  });

  test('a fragment: MF set, or a fragment offset', () => {
    expectRefused(rand, superPacket({ ...BASE, mf: true }, payload), 300, 4, 'MF');
    expectRefused(rand, superPacket({ ...BASE, fragOffset: 1 }, payload), 300, 4, 'offset 1');
    expectRefused(rand, superPacket({ ...BASE, df: false, fragOffset: 0x1fff }, payload), 300, 4, 'offset 0x1fff');
  });

  test('no UDP payload byte, or no room for the UDP header', () => {
    expectRefused(rand, superPacket(BASE, new Uint8Array(0)), 300, 4, 'empty payload');
    expectRefused(
      rand,
      superPacket({ ...BASE, ipOptions: new Uint8Array(8).fill(1) }, new Uint8Array(0)),
      300,
      4,
      'empty payload, IP options',
    );
    // ihl + 8 > len: 4 bytes after the IP header (total length and IP checksum fixed up, as the caller checked them).
    expectRefused(rand, truncated(superPacket(BASE, new Uint8Array(0)), 24), 300, 4, 'UDP header truncated');
    const withOptions = superPacket({ ...BASE, ipOptions: new Uint8Array(40).fill(1) }, new Uint8Array(0));
    expectRefused(rand, truncated(withOptions, 67), 300, 4, 'UDP header truncated after 40 bytes of IP options');
  });

  test('a UDP length field other than the IP payload length', () => {
    for (const delta of [-1, 1, -708, 100]) {
      expectRefused(
        rand,
        superPacket({ ...BASE, udpLengthDelta: delta }, payload),
        300,
        4,
        `UDP length delta ${delta}`,
      );
    }
    const zero = superPacket(BASE, payload);
    put16(zero, 24, 0);
    expectRefused(rand, zero, 300, 4, 'UDP length 0 (jumbogram style)');
  });

  test('gso_size below 1', () => {
    for (const gso of [0, -1, -1472, Number.NaN]) expectRefused(rand, ok, gso, 4, `gso ${gso}`);
  });

  test('maxSegmentBytes without room for a datagram', () => {
    for (const max of [0, 28, 327, Number.NaN])
      expectRefused(rand, ok, 300, 4, `maxSegmentBytes ${max}`, { maxSegmentBytes: max });
  });

  test('firstSegment outside [0, total) or not an integer, maxCells below 1 (the packet itself is fine)', () => {
    for (const firstSegment of [-1, 3, 4, 0.5, Number.NaN]) {
      expectRefused(rand, ok, 300, 4, `firstSegment ${firstSegment}`, { firstSegment, countZero: false });
    }
    for (const maxCells of [0, -1, Number.NaN])
      expectRefused(rand, ok, 300, maxCells, `maxCells ${maxCells}`, { countZero: false });
  });

  test('every header fits a cell: the largest (60-byte IP header + 8) is below SEGMENT_HEADER_CELL', () => {
    // The hdr > SEGMENT_HEADER_CELL rule cannot trigger for IPv4 (ihl <= 15 words); this pins why.
    assert.ok(60 + 8 <= SEGMENT_HEADER_CELL);
    const sp = superPacket({ ...BASE, ipOptions: new Uint8Array(40).fill(1) }, randomBytes(rand, 900));
    assert.equal(segmentAndCheck(rand, { sp, gso: 300, hdr: 68 }).length, 3);
  });
});

// ---------------------------------------------------------------- round trip through UDP GRO

/**
 * The super-packet UDP GRO must rebuild from datagrams first .. first+count-1 of sp (20-byte IP
 * header): sp's header with IP total length, id (id0 + first) and header checksum, UDP length and
 * the partial (pseudo-header) check field for those datagrams, then their payloads.
 */
function expectedRegroup(sp: Uint8Array, gso: number, first: number, count: number): Uint8Array {
  const payload = sp.subarray(28 + first * gso, Math.min(sp.length, 28 + (first + count) * gso));
  const g = new Uint8Array(28 + payload.length);
  g.set(sp.subarray(0, 28));
  g.set(payload, 28);
  put16(g, 2, g.length);
  put16(g, 4, (be16(sp, 4) + first) & 0xffff);
  put16(g, 10, 0);
  put16(g, 10, ~sum16(g, 0, 20) & 0xffff);
  put16(g, 24, g.length - 20);
  put16(g, 26, sum16(g, 0, 0, udpPseudoSum(g, g.length - 20)));
  return g;
}

describe('what we send coalesces on a flannel-ts receiver (planCoalescing, UDP GRO)', () => {
  for (const seed of seeds(8, 0x6a0000)) {
    test(`random super-packets cut, received back to back, regrouped into the original (seed ${seed})`, () => {
      withSeed('gro', seed, (rand) => {
        for (let t = 0; t < 6; t++) {
          // t 1: more than MAX_GROUP_PACKETS datagrams (gso <= 1000 keeps 65 of them within 65535 bytes).
          const gso = t === 0 ? 1 + (rand() % 8) : t === 1 ? 1 + (rand() % 1000) : 1 + (rand() % 1472);
          const spec = randomSpec(rand, false); // the GRO planner groups 20-byte IP headers only
          const payloadLen =
            t === 1 ? gso * MAX_GROUP_PACKETS + 1 + (rand() % gso) : 1 + (rand() % Math.min(65535 - 28, gso * 150));
          const sp = superPacket(spec, randomBytes(rand, payloadLen));
          const total = udpSegmentCount(sp, 0, sp.length, gso, NO_LIMIT);
          assert.equal(total, Math.ceil(payloadLen / gso));
          if (t === 1) assert.ok(total > MAX_GROUP_PACKETS);
          // Cut on a SIMD slab as the datapath does, in chunks.
          const g = geometry(rand, sp.length, total);
          const L = instantiate(g, sp, 'simd');
          const out = segmentInChunks(L, g, { sp, gso, hdr: 28 }, NO_LIMIT, 0, 1 + (rand() % 300), total, total);
          const datagrams = Array.from({ length: total }, (_, k) => gather(L.bytes, g.slotOffsets, out, k));

          // Received: one slot per datagram, back to back at the first one's stride (as a UDP GRO run lands).
          const stride = (datagrams[0].length + 7) & ~7;
          const slab = checksumMemory(stride * total + 8);
          const slotOffsets = Uint32Array.from({ length: total }, (_, k) => k * stride);
          const lens = Int32Array.from(datagrams, (d) => d.length);
          datagrams.forEach((d, k) => slab.set(d, slotOffsets[k]));
          const offs = new Uint16Array(total);
          const vnet = new Uint8Array(total * VNET_HDR_SLOT);
          const list = Uint16Array.from({ length: total }, (_, k) => k);
          const groupLens = new Uint16Array(total);
          const words = t % 2 === 0 ? new Uint32Array(slab.buffer) : null;
          const groups = planCoalescing(slab, slotOffsets, lens, offs, vnet, list, total, groupLens, 65535, words);

          // Runs of MAX_GROUP_PACKETS from the first datagram; a last run of one stays single.
          const expectedLens: number[] = [];
          for (let k = 0; k < total; k += MAX_GROUP_PACKETS) {
            const n = Math.min(MAX_GROUP_PACKETS, total - k);
            expectedLens.push(n, ...new Array<number>(n - 1).fill(0));
          }
          const where = `gso ${gso}, ${total} datagrams, DF ${spec.df}`;
          assert.deepEqual(Array.from(groupLens), expectedLens, `groups (${where})`);
          assert.equal(groups, expectedLens.filter((n) => n >= 2).length);
          for (let k = 0; k < total; k += MAX_GROUP_PACKETS) {
            const n = groupLens[k];
            if (n < 2) continue;
            // The super-packet as the writev gathers it: the patched leader, then each member's payload.
            const parts = [slab.subarray(slotOffsets[k], slotOffsets[k] + lens[k])];
            for (let j = k + 1; j < k + n; j++) {
              assert.equal(offs[j], 28);
              parts.push(slab.subarray(slotOffsets[j] + offs[j], slotOffsets[j] + lens[j]));
            }
            const regrouped = Buffer.concat(parts);
            const want = expectedRegroup(sp, gso, k, n);
            sameBytes(new Uint8Array(regrouped), want, `group at ${k} (${where})`);
            if (n === total) sameBytes(new Uint8Array(regrouped), sp, `the original super-packet (${where})`);
            const v = new DataView(vnet.buffer, k * VNET_HDR_SLOT, 10);
            assert.deepEqual(
              [
                v.getUint8(0),
                v.getUint8(1),
                v.getUint16(2, true),
                v.getUint16(4, true),
                v.getUint16(6, true),
                v.getUint16(8, true),
              ],
              [1, 5, 28, gso, 20, 6],
              `vnet header of group at ${k}`,
            );
          }
        }
      });
    });
  }
});
