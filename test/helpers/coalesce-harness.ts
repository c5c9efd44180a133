// The batch harness shared by the TCP and UDP GRO planning tests (planCoalescing in
// src/encap/tcp-coalesce.ts): packets placed in random slots of a fresh slab, planned, and every
// property of the result checked against the originals and a reference plan; the protocol's own
// checks (join rules, leader fields, segmentation) come from a GroupExpectation. Also the
// randomized-seed loop, the rule-coverage counts, the word/byte-path layouts and the micro timing.
import assert from 'node:assert/strict';
import { planCoalescing, VNET_HDR_LEN, VNET_HDR_SLOT } from '../../src/encap/tcp-coalesce.js';
import {
  greedyPlan,
  ipChecksumValid,
  parseVnetHdr,
  type GroupRules,
  type ParsedPacket,
  type VnetHdr,
} from './tcp-segments.js';
import { runSeeded, seedsFor } from './prng.js';

/** Room for one packet: every slot gets at least this many bytes (plus a random 0..7). */
export const SLOT_SIZE = 2048;
const SENTINEL = 0xa5;

/** What a planned group (k >= 2) must have become; built from the ORIGINAL packets. */
export interface GroupExpectation {
  /** The exact virtio_net_hdr of the leader (hdrLen is also every member's offs; gsoSize the leader's payload). */
  vnet: VnetHdr;
  /** The super-packet's IP total length. */
  total: number;
  /** Leader byte offsets the plan may rewrite; all others must be untouched. */
  mayChange: ReadonlySet<number>;
  /**
   * The protocol's own checks: the patched leader against its original bytes, and the super-packet
   * as the writev would gather it against the group's original packets (given the vnet header read back).
   */
  check(lead: Uint8Array, orig: Uint8Array, sp: Uint8Array, vnet: VnetHdr, originals: readonly Uint8Array[]): void;
}

export interface CoalesceProtocol<P extends ParsedPacket> {
  parse(p: Uint8Array): P;
  referencePlan(parsed: readonly P[], maxBytes: number): number[];
  /** Asserts the join rules for group (leader first; it starts at write position at) and says what it must become. */
  expectGroup(group: readonly P[], at: number, maxBytes: number): GroupExpectation;
}

export interface BatchResult {
  groups: number;
  groupLens: number[];
  maxGroup: number;
  /** Groups that a next leader-sized payload would have pushed beyond maxBytes. */
  maxBytesHit: number;
}

function shuffle(a: number[], rand: () => number): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rand() % (i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
}

function vnetBytes(h: VnetHdr): Uint8Array {
  const b = new Uint8Array(VNET_HDR_LEN);
  const v = new DataView(b.buffer);
  b[0] = h.flags;
  b[1] = h.gsoType;
  v.setUint16(2, h.hdrLen, true);
  v.setUint16(4, h.gsoSize, true);
  v.setUint16(6, h.csumStart, true);
  v.setUint16(8, h.csumOffset, true);
  return b;
}

/**
 * A planAndCheck for one protocol: places packets (in write order) into random slots of a fresh
 * slab, plans, and checks every property of the result against the originals. Slot layouts vary:
 * uniform and 4-byte aligned, or slots of random sizes >= SLOT_SIZE at random (odd, misaligned)
 * offsets in shuffled order; the slab is sometimes a view at an odd byteOffset into a larger
 * buffer (words then still cover the whole buffer). Calls alternate between the byte-wise and the
 * 32-bit-word checksum paths (each harness keeps its own alternation).
 */
export function coalesceHarness<P extends ParsedPacket>(
  protocol: CoalesceProtocol<P>,
): (packets: Uint8Array[], rand: () => number, maxBytes?: number) => BatchResult {
  let wordPathToggle = false;
  return (packets, rand, maxBytes) => {
    const count = packets.length;
    const slotCount = count + (rand() % 8);
    const slots = Array.from({ length: slotCount }, (_, s) => s);
    shuffle(slots, rand);
    const slotOffsets = new Uint32Array(slotCount);
    const uniform = rand() % 3 === 0;
    const order = Array.from({ length: slotCount }, (_, s) => s);
    if (!uniform) shuffle(order, rand);
    let at = uniform ? 0 : rand() % 8;
    for (const s of order) {
      slotOffsets[s] = at;
      at += SLOT_SIZE + (uniform ? 0 : rand() % 8);
    }
    const viewStart = uniform ? 0 : rand() % 8;
    const backing = new Uint8Array((viewStart + at + 11) & ~3); // a whole number of words
    const bytes = backing.subarray(viewStart, viewStart + at);
    for (let i = 0; i < backing.length; i++) backing[i] = (i * 31 + 7) & 0xff;
    const lens = new Int32Array(slotCount).fill(-1);
    const offs = new Uint16Array(slotCount).fill(0xbeef);
    const vnet = new Uint8Array(slotCount * VNET_HDR_SLOT).fill(SENTINEL);
    const list = new Uint16Array(count + 3).fill(0xffff);
    const groupLens = new Uint16Array(count + 3).fill(0xeeee);
    packets.forEach((p, i) => {
      const slot = slots[i];
      list[i] = slot;
      lens[slot] = p.length;
      bytes.set(p, slotOffsets[slot]);
    });
    const before = bytes.slice();
    const backingBefore = backing.slice();
    const effectiveMax = maxBytes ?? 65535;

    // Both the byte-wise and the word path must agree with the reference.
    wordPathToggle = !wordPathToggle;
    const words = wordPathToggle ? new Uint32Array(bytes.buffer) : null;
    const groups =
      maxBytes === undefined && words === null
        ? planCoalescing(bytes, slotOffsets, lens, offs, vnet, list, count, groupLens)
        : planCoalescing(bytes, slotOffsets, lens, offs, vnet, list, count, groupLens, effectiveMax, words);
    // Nothing outside the slab view is written.
    assert.deepEqual(
      backing.subarray(0, viewStart),
      backingBefore.subarray(0, viewStart),
      'wrote before the slab view',
    );
    assert.deepEqual(
      backing.subarray(viewStart + at),
      backingBefore.subarray(viewStart + at),
      'wrote after the slab view',
    );

    const parsed = packets.map((p) => protocol.parse(p));
    const got = Array.from(groupLens.subarray(0, count));
    // Greedy and exact: the same groups as the reference planner (so not merely "allowed").
    assert.deepEqual(got, protocol.referencePlan(parsed, effectiveMax), 'groupLens differ from the reference plan');
    assert.deepEqual(Array.from(groupLens.subarray(count)), [0xeeee, 0xeeee, 0xeeee], 'wrote beyond count');
    assert.equal(groups, got.filter((k) => k >= 2).length, 'return value = number of groups');

    let maxGroup = 1,
      maxBytesHit = 0;
    const leaderSlots = new Set<number>();
    for (let i = 0; i < count;) {
      const k = got[i];
      assert.ok(k >= 1 && i + k <= count, `groupLens[${i}] = ${k}`);
      for (let j = i + 1; j < i + k; j++) assert.equal(got[j], 0, `member ${j} of the group at ${i}`);
      const slot = list[i];
      const off = slotOffsets[slot];
      assert.equal(offs[slot], 0, 'offs of a leader or single');
      if (k === 1) {
        // Singles are byte-for-byte untouched, and so is their vnet header slot.
        assert.deepEqual(
          bytes.subarray(off, off + SLOT_SIZE),
          before.subarray(off, off + SLOT_SIZE),
          `single ${i} changed`,
        );
        assert.ok(
          vnet.subarray(slot * VNET_HDR_SLOT, (slot + 1) * VNET_HDR_SLOT).every((x) => x === SENTINEL),
          `vnet of single ${i}`,
        );
        i++;
        continue;
      }
      leaderSlots.add(slot);
      maxGroup = Math.max(maxGroup, k);
      const expected = protocol.expectGroup(parsed.slice(i, i + k), i, effectiveMax);
      const { hdrLen, gsoSize } = expected.vnet;
      const total = expected.total;
      if (total + gsoSize > effectiveMax) maxBytesHit++;
      // Members: untouched bytes, offs = the header length.
      for (let j = 1; j < k; j++) {
        const ms = list[i + j],
          mo = slotOffsets[ms];
        assert.equal(offs[ms], hdrLen, `offs of member ${i + j}`);
        assert.deepEqual(
          bytes.subarray(mo, mo + SLOT_SIZE),
          before.subarray(mo, mo + SLOT_SIZE),
          `member ${i + j} changed`,
        );
        assert.ok(
          vnet.subarray(ms * VNET_HDR_SLOT, (ms + 1) * VNET_HDR_SLOT).every((x) => x === SENTINEL),
          `vnet of member ${i + j}`,
        );
      }
      // Leader: only the fields the contract names change; payload and the rest of the slot untouched.
      const lead = bytes.subarray(off, off + lens[slot]);
      const orig = before.subarray(off, off + lens[slot]);
      assert.deepEqual(
        bytes.subarray(off + lens[slot], off + SLOT_SIZE),
        before.subarray(off + lens[slot], off + SLOT_SIZE),
      );
      for (let b = 0; b < lead.length; b++)
        if (!expected.mayChange.has(b)) assert.equal(lead[b], orig[b], `leader ${i} byte ${b}`);
      assert.equal(lead[2] * 256 + lead[3], total, 'super-packet IP total length');
      assert.ok(ipChecksumValid(lead), 'super-packet IP checksum');
      // The vnet header, exactly, and its padding untouched.
      const vo = slot * VNET_HDR_SLOT;
      assert.deepEqual(vnet.subarray(vo, vo + VNET_HDR_LEN), vnetBytes(expected.vnet), 'vnet header');
      assert.ok(
        vnet.subarray(vo + VNET_HDR_LEN, vo + VNET_HDR_SLOT).every((x) => x === SENTINEL),
        'vnet padding',
      );

      // The super-packet as the writev would gather it.
      const sp = new Uint8Array(total);
      sp.set(lead, 0);
      let pos = lead.length;
      for (let j = 1; j < k; j++) {
        const ms = list[i + j],
          mo = slotOffsets[ms];
        const piece = bytes.subarray(mo + offs[ms], mo + lens[ms]);
        sp.set(piece, pos);
        pos += piece.length;
      }
      assert.equal(pos, total);
      expected.check(lead, orig, sp, parseVnetHdr(vnet, vo), packets.slice(i, i + k));
      i += k;
    }
    // Slots not in the list are untouched; every byte outside leaders' headers is as before.
    for (let s = 0; s < slotCount; s++) {
      if (leaderSlots.has(s)) continue;
      const o = slotOffsets[s];
      assert.deepEqual(bytes.subarray(o, o + SLOT_SIZE), before.subarray(o, o + SLOT_SIZE), `slot ${s} changed`);
      if (!list.subarray(0, count).includes(s)) assert.equal(offs[s], 0xbeef, `offs of unlisted slot ${s}`);
    }
    return { groups, groupLens: got, maxGroup, maxBytesHit };
  };
}

/**
 * A segment cut from a super-packet against its original: byte for byte, or (ignoreId: a DF TCP
 * flow, whose IP id Linux GRO ignores) identical but for the IP id and the IP checksum.
 */
export function assertSegmentMatches(seg: Uint8Array, original: Uint8Array, ignoreId: boolean, what: string): void {
  if (!ignoreId) {
    assert.deepEqual(seg, original, `${what} differs from the original`);
    return;
  }
  const a = seg.slice(),
    b = original.slice();
  a[4] = b[4] = a[5] = b[5] = a[10] = b[10] = a[11] = b[11] = 0;
  assert.deepEqual(a, b, `${what} (DF) differs beyond id`);
}

/**
 * The seeds of a randomized test: seedCount seeds from firstSeed, or only the one in the
 * environment variable envVar. A failing seed is printed with how to rerun it. Returns whether
 * the full set ran (coverage assertions only make sense then).
 */
export function forEachSeed(
  label: string,
  envVar: string,
  firstSeed: number,
  seedCount: number,
  body: (seed: number) => void,
): boolean {
  for (const seed of seedsFor(envVar, seedCount, firstSeed)) runSeeded(label, envVar, seed, () => body(seed));
  return process.env[envVar] === undefined;
}

/** Counts, per join rule, how often it alone refused a packet: each rule shown to matter. */
export class RuleCoverage<P> {
  private readonly sole: Map<string, number>;

  constructor(
    private readonly ruleNames: readonly string[],
    private readonly rules: GroupRules<P>,
  ) {
    this.sole = new Map(ruleNames.map((r) => [r, 0]));
  }

  /** Walks a batch greedily under the rules, counting refusals with a single reason. */
  record(parsed: readonly P[], maxBytes: number): void {
    greedyPlan(parsed, [this.rules], maxBytes, (v) => {
      if (v.length === 1) this.sole.set(v[0], this.sole.get(v[0])! + 1);
    });
  }

  counts(): Record<string, number> {
    return Object.fromEntries(this.sole);
  }

  assertEveryRuleSoleReason(): void {
    const uncovered = this.ruleNames.filter((r) => this.sole.get(r) === 0);
    assert.deepEqual(uncovered, [], `rules never the sole reason for a refusal: ${JSON.stringify(this.counts())}`);
  }
}

const LAYOUTS: Array<[string, number[], boolean]> = [
  ['aligned, words', [0, 0, 0], true],
  ['misaligned, words', [1, 2, 3], true],
  ['leader aligned only, words', [0, 3, 1], true],
  ['members aligned only, words', [2, 0, 0], true],
  ['aligned, no words', [0, 0, 0], false],
];

/**
 * Plans three packets with them aligned (word path), misaligned (byte path), partly aligned and
 * without words: every layout must give the expected groupLens.
 */
export function assertPlanOnEveryLayout(packets: readonly Uint8Array[], expected: number[], what: string): void {
  for (const [name, shifts, useWords] of LAYOUTS) {
    const bytes = new Uint8Array(3 * SLOT_SIZE + 8);
    const slotOffsets = Uint32Array.from(shifts, (sh, i) => i * SLOT_SIZE + sh);
    packets.forEach((x, i) => bytes.set(x, slotOffsets[i]));
    const lens = Int32Array.from(packets, (x) => x.length);
    const groupLens = new Uint16Array(3);
    planCoalescing(
      bytes,
      slotOffsets,
      lens,
      new Uint16Array(3),
      new Uint8Array(3 * VNET_HDR_SLOT),
      new Uint16Array([0, 1, 2]),
      3,
      groupLens,
      65535,
      useWords ? new Uint32Array(bytes.buffer) : null,
    );
    assert.deepEqual(Array.from(groupLens), expected, `${what}: ${name}`);
  }
}

/**
 * Times planCoalescing on one 64-packet batch in uniform slots (2,000 warm-up and 20,000 timed
 * runs, the leader's first headerBytes restored before each), with words or with the defaults.
 * Asserts every run made exactly one group of 64; returns ns per packet.
 */
export function timeSingleFlowBatch(packets: readonly Uint8Array[], headerBytes: number, useWords: boolean): number {
  assert.equal(packets.length, 64);
  const bytes = new Uint8Array(64 * SLOT_SIZE);
  const lens = new Int32Array(64),
    offs = new Uint16Array(64),
    vnet = new Uint8Array(64 * VNET_HDR_SLOT);
  const list = new Uint16Array(64),
    groupLens = new Uint16Array(64);
  const slotOffsets = Uint32Array.from({ length: 64 }, (_, i) => i * SLOT_SIZE);
  packets.forEach((p, i) => {
    bytes.set(p, i * SLOT_SIZE);
    lens[i] = p.length;
    list[i] = i;
  });
  const words = useWords ? new Uint32Array(bytes.buffer) : null;
  const leaderCopy = bytes.slice(0, headerBytes);
  const plan = (): number => {
    bytes.set(leaderCopy, 0);
    return words === null
      ? planCoalescing(bytes, slotOffsets, lens, offs, vnet, list, 64, groupLens)
      : planCoalescing(bytes, slotOffsets, lens, offs, vnet, list, 64, groupLens, 65535, words);
  };
  let n = 0;
  const iterations = 20_000;
  for (let r = 0; r < 2000; r++) n += plan();
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < iterations; r++) n += plan();
  const ns = Number(process.hrtime.bigint() - t0) / (iterations * 64);
  assert.equal(n, 2000 + iterations);
  assert.equal(groupLens[0], 64);
  return ns;
}
