// TCP GRO planning (src/encap/tcp-coalesce.ts) against the independent references of
// test/helpers/tcp-segments.ts: the join rules one by one, a greedy reference planner, and a
// reference GSO segmenter that must give back the original segments from every super-packet.
// Randomized tests print their seed on failure; rerun one with TCP_COALESCE_SEED=<seed>.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { planCoalescing, VNET_HDR_SLOT } from '../../src/encap/tcp-coalesce.js';
import {
  SLOT_SIZE,
  RuleCoverage,
  assertPlanOnEveryLayout,
  assertSegmentMatches,
  coalesceHarness,
  forEachSeed,
  timeSingleFlowBatch,
  type CoalesceProtocol,
  type GroupExpectation,
} from '../helpers/coalesce-harness.js';
import { mulberry32, randomBytes } from '../helpers/prng.js';
import {
  TCP_ACK,
  TCP_CWR,
  TCP_ECE,
  TCP_FIN,
  TCP_GROUP_RULES,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  TCP_URG,
  buildTcpPacket,
  ipChecksumValid,
  joinViolations,
  leadViolations,
  onesSum,
  parsePacket,
  pseudoHeader,
  referencePlan,
  segmentSuperPacket,
  tcpChecksumValid,
  type ParsedPacket,
  type TcpPacketSpec,
} from '../helpers/tcp-segments.js';

/**
 * The TCP checks of a planned group on top of the shared harness's: (1) the join rules one by
 * one on the ORIGINAL packets; the leader's PSH is the group's; (5) the TCP checksum field is the
 * pseudo-header sum (folded, not inverted), computed another way, and completing it gives a valid
 * checksum for the whole; (2) re-segmenting gives back the original packets.
 */
const tcp: CoalesceProtocol<ParsedPacket> = {
  parse: (p) => parsePacket(p),
  referencePlan,
  expectGroup(group, i, maxBytes): GroupExpectation {
    const k = group.length;
    assert.deepEqual(leadViolations(group[0]), [], `leader ${i}`);
    for (let j = 1; j < k; j++)
      assert.deepEqual(joinViolations(group.slice(0, j), group[j], maxBytes), [], `member ${i + j}`);
    const L = group[0],
      lt = L.tcp!;
    const hdrLen = L.ihl + lt.headerLength;
    const total = hdrLen + group.reduce((a, m) => a + m.tcp!.payloadLength, 0);
    return {
      vnet: { flags: 1, gsoType: 1, hdrLen, gsoSize: lt.payloadLength, csumStart: L.ihl, csumOffset: 16 },
      total,
      // Total length, IP checksum, PSH and TCP checksum.
      mayChange: new Set([2, 3, 10, 11, L.ihl + 13, L.ihl + 16, L.ihl + 17]),
      check(lead, orig, sp, vnet, originals): void {
        assert.equal(lead[L.ihl + 13] & ~TCP_PSH, orig[L.ihl + 13] & ~TCP_PSH, 'leader flags other than PSH');
        const anyPsh = group.some((m) => (m.tcp!.flags & TCP_PSH) !== 0);
        assert.equal((lead[L.ihl + 13] & TCP_PSH) !== 0, anyPsh, 'PSH of the super-packet');
        const field = lead[L.ihl + 16] * 256 + lead[L.ihl + 17];
        assert.equal(field, onesSum(pseudoHeader(L.src, L.dst, total - L.ihl), 0, 12), 'partial checksum field');
        // Completing the partial checksum the kernel's way gives a valid checksum for the whole.
        const completed = sp.slice();
        const cv = new DataView(completed.buffer);
        cv.setUint16(L.ihl + 16, ~onesSum(completed, L.ihl, total - L.ihl) & 0xffff);
        assert.ok(tcpChecksumValid(completed), 'completed super-packet TCP checksum');

        const segs = segmentSuperPacket(vnet, sp);
        assert.equal(segs.length, k, 'segment count');
        segs.forEach((seg, j) => {
          const original = originals[j];
          assert.ok(ipChecksumValid(seg), `segment ${j} IP checksum`);
          assert.ok(tcpChecksumValid(seg), `segment ${j} TCP checksum`);
          assert.equal(seg.length, original.length, `segment ${j} length`);
          const sv = parsePacket(seg);
          assert.equal(sv.tcp!.seq, group[j].tcp!.seq, `segment ${j} seq`);
          assert.deepEqual(seg.subarray(hdrLen), original.subarray(hdrLen), `segment ${j} payload`);
          // With DF the IP id is free (Linux GRO ignores it); all else must be identical.
          assertSegmentMatches(seg, original, L.df, `segment ${j}`);
        });
      },
    };
  },
};

const planAndCheck = coalesceHarness(tcp);

// ---- random traffic --------------------------------------------------------------------------

interface Flow {
  src: number;
  dst: number;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  window: number;
  ttl: number;
  tos: number;
  df: boolean;
  id: number;
  mss: number;
  timestamps: boolean;
  tsVal: number;
  tsEcr: number;
}

function newFlow(rand: () => number, mssMax: number): Flow {
  return {
    src: (0x0af40000 | (rand() & 0xffff)) >>> 0,
    dst: (0x0af40000 | (rand() & 0xffff)) >>> 0,
    sport: 1024 + (rand() % 60000),
    dport: rand() % 4 === 0 ? 443 : 1 + (rand() % 65535),
    seq: rand() >>> 0,
    ack: rand() >>> 0,
    window: rand() & 0xffff,
    ttl: 63 + (rand() % 2),
    tos: rand() % 4 === 0 ? 0x02 : 0,
    df: rand() % 10 < 7,
    id: rand() & 0xffff,
    mss: 1 + (rand() % mssMax),
    timestamps: rand() % 3 !== 0,
    tsVal: rand() >>> 0,
    tsEcr: rand() >>> 0,
  };
}

function tsOptions(f: Flow): Uint8Array | undefined {
  if (!f.timestamps) return undefined;
  const o = new Uint8Array(12);
  const v = new DataView(o.buffer);
  o[0] = 1;
  o[1] = 1;
  o[2] = 8;
  o[3] = 10;
  v.setUint32(4, f.tsVal);
  v.setUint32(8, f.tsEcr);
  return o;
}

/** clean: rare short/PSH segments; messy: every kind of event; full: only full segments. */
type Mess = 'clean' | 'messy' | 'full';

/** The next packet of a flow, with (in messy traffic) an event that may break coalescing. */
function nextPacket(rand: () => number, f: Flow, mess: Mess): Uint8Array {
  const roll = rand() % 1000;
  const ev =
    mess === 'full'
      ? 'full'
      : mess === 'clean'
        ? roll < 985
          ? 'full'
          : roll < 993
            ? 'short'
            : 'psh'
        : pickEvent(rand() % EVENT_TOTAL);
  if (ev === 'udp' || ev === 'icmp') {
    return buildTcpPacket({
      src: f.src,
      dst: f.dst,
      protocol: ev === 'udp' ? 17 : 1,
      sport: 0,
      dport: 0,
      seq: 0,
      ack: 0,
      flags: 0,
      window: 0,
      payload: randomBytes(rand, 8 + (rand() % 200)),
      df: f.df,
      id: f.id++ & 0xffff,
    });
  }
  // Persistent changes to the flow.
  if (ev === 'gap') f.seq = (f.seq + 1 + (rand() % 3000)) >>> 0;
  if (ev === 'retrans') f.seq = (f.seq - f.mss) >>> 0;
  if (ev === 'ack-advance') f.ack = (f.ack + 1 + (rand() % 5000)) >>> 0;
  if (ev === 'window-update') f.window = rand() & 0xffff;
  if (ev === 'ts-advance') f.tsVal = (f.tsVal + 1) >>> 0;
  if (ev === 'ts-toggle') f.timestamps = !f.timestamps;

  let payloadLen = f.mss;
  if (ev === 'short') payloadLen = rand() % f.mss;
  if (ev === 'pure-ack') payloadLen = 0;
  if (ev === 'longer') payloadLen = Math.min(f.mss + 1 + (rand() % 40), SLOT_SIZE - 100);
  if (ev === 'psh' && rand() % 2 === 0) payloadLen = 1 + (rand() % f.mss);
  let flags = TCP_ACK;
  if (ev === 'psh') flags |= TCP_PSH;
  if (ev === 'odd-flags') {
    const odd = [TCP_FIN, TCP_SYN, TCP_RST, TCP_URG, TCP_ECE, TCP_CWR, TCP_FIN | TCP_PSH];
    flags = odd[rand() % odd.length] | (rand() % 5 === 0 ? 0 : TCP_ACK);
  }
  if (ev === 'no-ack') flags = rand() % 2 === 0 ? 0 : TCP_PSH;

  const spec: TcpPacketSpec = {
    src: f.src,
    dst: f.dst,
    tos: f.tos,
    ttl: f.ttl,
    id: f.id & 0xffff,
    df: f.df,
    sport: f.sport,
    dport: f.dport,
    seq: f.seq,
    ack: f.ack,
    flags,
    window: f.window,
    tcpOptions: tsOptions(f),
    payload: randomBytes(rand, payloadLen),
  };
  // One-off changes to this packet only.
  switch (ev) {
    // Field changes flip one random bit, so that every byte of every field gets compared.
    case 'src':
      spec.src = (f.src ^ (1 << (rand() % 32))) >>> 0;
      break;
    case 'dst':
      spec.dst = (f.dst ^ (1 << (rand() % 32))) >>> 0;
      break;
    case 'sport':
      spec.sport = f.sport ^ (1 << (rand() % 16));
      break;
    case 'dport':
      spec.dport = f.dport ^ (1 << (rand() % 16));
      break;
    case 'ack':
      spec.ack = (f.ack ^ (1 << (rand() % 32))) >>> 0;
      break;
    case 'window':
      spec.window = f.window ^ (1 << (rand() % 16));
      break;
    case 'tos':
      spec.tos = f.tos ^ (1 << (rand() % 8));
      break;
    case 'ttl':
      spec.ttl = f.ttl - 1;
      break;
    case 'df':
      spec.df = !f.df;
      break;
    case 'ip-reserved':
      spec.reservedBit = true;
      break;
    case 'tcp-reserved':
      spec.tcpReserved = 1 + (rand() % 15);
      break;
    case 'urgent':
      spec.urgent = 1 << (rand() % 16);
      break;
    case 'options-bit':
      if (f.timestamps) {
        const o = tsOptions(f)!;
        o[rand() % 12] ^= 1 << (rand() % 8);
        spec.tcpOptions = o;
      }
      break;
    case 'ts-once':
      if (f.timestamps) {
        spec.tcpOptions = tsOptions({ ...f, tsEcr: (f.tsEcr ^ (1 << (rand() % 32))) >>> 0 });
      }
      break;
    case 'id':
      spec.id = (f.id + 2) & 0xffff;
      break;
    case 'bad-ip-checksum':
      spec.badIpChecksum = true;
      break;
    case 'ip-options':
      spec.ipOptions = new Uint8Array([1, 1, 1, 0]);
      break;
    case 'mf':
      spec.mf = true;
      break;
    case 'frag-offset':
      spec.fragOffset = 1 + (rand() % 0x1fff);
      break;
  }
  f.seq = (f.seq + payloadLen) >>> 0;
  f.id = (f.id + 1) & 0xffff;
  const packet = buildTcpPacket(spec);
  // A payload corrupted in transit (after the sender's checksum): must never be merged.
  if (ev === 'bad-tcp-checksum' && payloadLen > 0)
    packet[packet.length - 1 - (rand() % payloadLen)] ^= 1 << (rand() % 8);
  return packet;
}

const EVENTS: Array<[string, number]> = [
  ['full', 520],
  ['short', 50],
  ['psh', 40],
  ['odd-flags', 30],
  ['no-ack', 5],
  ['pure-ack', 25],
  ['gap', 20],
  ['retrans', 15],
  ['ack-advance', 20],
  ['window-update', 15],
  ['ts-advance', 30],
  ['ts-toggle', 5],
  ['longer', 15],
  ['udp', 15],
  ['icmp', 15],
  ['src', 8],
  ['dst', 8],
  ['sport', 8],
  ['dport', 8],
  ['ack', 8],
  ['window', 8],
  ['tos', 8],
  ['ttl', 8],
  ['df', 8],
  ['ip-reserved', 5],
  ['tcp-reserved', 5],
  ['urgent', 8],
  ['ts-once', 5],
  ['options-bit', 5],
  ['id', 15],
  ['bad-ip-checksum', 10],
  ['bad-tcp-checksum', 10],
  ['ip-options', 12],
  ['mf', 10],
  ['frag-offset', 10],
];
const EVENT_TOTAL = EVENTS.reduce((s, [, w]) => s + w, 0);

function pickEvent(roll: number): string {
  for (const [name, w] of EVENTS) {
    if (roll < w) return name;
    roll -= w;
  }
  return 'full';
}

/** A random batch: a few flows, interleaved at random or in runs, clean or messy. */
function randomBatch(rand: () => number): { packets: Uint8Array[]; maxBytes: number | undefined } {
  const mess: Mess = rand() % 3 === 0 ? 'clean' : 'messy';
  const mssMax = [1460, 1400, 600, 80][rand() % 4];
  const flows = Array.from({ length: 1 + (rand() % 4) }, () => newFlow(rand, mssMax));
  const count = 1 + (rand() % (mess === 'clean' ? 200 : 120));
  const stickiness = rand() % 4; // 0: interleave at random; more: longer runs per flow
  const packets: Uint8Array[] = [];
  let f = 0;
  for (let n = 0; n < count; n++) {
    if (stickiness === 0 || rand() % (stickiness * 12) === 0) f = rand() % flows.length;
    packets.push(nextPacket(rand, flows[f], mess));
  }
  const maxRoll = rand() % 5;
  const maxBytes = maxRoll < 3 ? undefined : maxRoll === 3 ? 65535 - (rand() % 2000) : 40 + (rand() % 30000);
  return { packets, maxBytes };
}

/** Rewrites the IP header checksum and the TCP checksum of an IPv4 packet so both verify. */
function fixChecksums(p: Uint8Array): void {
  const ihl = (p[0] & 15) * 4;
  const v = new DataView(p.buffer, p.byteOffset, p.length);
  v.setUint16(10, 0);
  v.setUint16(10, ~onesSum(p, 0, ihl) & 0xffff);
  const tcpLen = p.length - ihl;
  v.setUint16(ihl + 16, 0);
  v.setUint16(
    ihl + 16,
    ~onesSum(p, ihl, tcpLen, onesSum(pseudoHeader(v.getUint32(12), v.getUint32(16), tcpLen), 0, 12)) & 0xffff,
  );
}

const RULES = [
  'not-tcp',
  'ip-options',
  'fragment',
  'ip-checksum',
  'tcp-checksum',
  'addresses',
  'tos',
  'ttl',
  'ip-flags',
  'ip-id',
  'ports',
  'ack',
  'window',
  'doff',
  'options',
  'urgent-pointer',
  'flags',
  'prev-psh',
  'seq',
  'empty-payload',
  'longer-than-leader',
  'after-short',
  'max-bytes',
  'max-packets',
];

describe('planCoalescing', () => {
  test('hand-computed example: two segments, PSH on the second', () => {
    const base = {
      src: 0x0a000001,
      dst: 0x0a000002,
      ttl: 64,
      df: true,
      sport: 1000,
      dport: 80,
      ack: 5,
      window: 100,
    };
    const a = buildTcpPacket({ ...base, id: 7, seq: 1000, flags: TCP_ACK, payload: new Uint8Array(100).fill(1) });
    const b = buildTcpPacket({
      ...base,
      id: 8,
      seq: 1100,
      flags: TCP_ACK | TCP_PSH,
      payload: new Uint8Array(100).fill(2),
    });
    const bytes = new Uint8Array(4 * 256);
    bytes.set(a, 3 * 256);
    bytes.set(b, 1 * 256);
    const lens = new Int32Array([0, 140, 0, 140]);
    const offs = new Uint16Array(4);
    const vnet = new Uint8Array(4 * VNET_HDR_SLOT);
    const groupLens = new Uint16Array(2);
    const n = planCoalescing(
      bytes,
      new Uint32Array([0, 256, 512, 768]),
      lens,
      offs,
      vnet,
      new Uint16Array([3, 1]),
      2,
      groupLens,
    );
    assert.equal(n, 1);
    assert.deepEqual(Array.from(groupLens), [2, 0]);
    assert.deepEqual(Array.from(offs), [0, 40, 0, 0]);
    const h = bytes.subarray(3 * 256, 3 * 256 + 40);
    // IP: total 40 + 200 = 0x00f0; checksum over 4500 00f0 0007 4000 4006 0000 0a00 0001 0a00 0002
    // = 0xda00, inverted 0x25ff.
    assert.equal(Buffer.from(h.subarray(0, 20)).toString('hex'), '450000f0000740004006' + '25ff' + '0a0000010a000002');
    // TCP flags ACK|PSH; checksum field = 0a00 + 0001 + 0a00 + 0002 + 0006 + 00dc (TCP length 220) = 0x14e5.
    assert.equal(h[33], 0x18);
    assert.equal(h[36] * 256 + h[37], 0x14e5);
    assert.equal(
      Buffer.from(vnet.subarray(3 * VNET_HDR_SLOT, 3 * VNET_HDR_SLOT + 10)).toString('hex'),
      '01012800640014001000',
    );
    assert.ok(
      vnet.subarray(0, 3 * VNET_HDR_SLOT).every((x) => x === 0),
      'other vnet slots untouched',
    );
    // The member is untouched.
    assert.deepEqual(bytes.subarray(256, 256 + 140), b);
  });

  test('nothing can coalesce: returns 0 and changes nothing', () => {
    const rand = mulberry32(6);
    const f = newFlow(rand, 1000);
    f.timestamps = false;
    const mk = (over: Partial<TcpPacketSpec>): Uint8Array =>
      buildTcpPacket({
        src: f.src,
        dst: f.dst,
        sport: f.sport,
        dport: f.dport,
        seq: 100,
        ack: 1,
        flags: TCP_ACK,
        window: 9,
        df: true,
        payload: new Uint8Array(500),
        ...over,
      });
    const packets = [
      mk({ flags: TCP_SYN }),
      mk({ seq: 100, flags: TCP_ACK | TCP_PSH }),
      mk({ seq: 600 }),
      mk({ seq: 9999 }),
      mk({ seq: 10499, protocol: 17 }),
      mk({ seq: 10499, payload: new Uint8Array(0) }),
      mk({ seq: 10499, flags: TCP_ACK | TCP_FIN }),
      mk({ seq: 11000, mf: true }),
      mk({ seq: 11500, ipOptions: new Uint8Array(4) }),
    ];
    const r = planAndCheck(packets, rand);
    assert.equal(r.groups, 0);
    assert.deepEqual(
      r.groupLens,
      packets.map(() => 1),
    );
  });

  test('at most 64 packets per group: 200 segments give 64 + 64 + 64 + 8', () => {
    const rand = mulberry32(64);
    const f = newFlow(rand, 100);
    f.mss = 100;
    const packets = Array.from({ length: 200 }, () => nextPacket(rand, f, 'full'));
    const r = planAndCheck(packets, rand);
    assert.equal(r.groups, 4);
    assert.deepEqual(
      r.groupLens.filter((k) => k > 0),
      [64, 64, 64, 8],
    );
  });

  test('maxBytes: a group is cut where the next payload would exceed it, exactly at the boundary', () => {
    const rand = mulberry32(1500);
    const f = newFlow(rand, 1000);
    f.mss = 1000;
    const packets = Array.from({ length: 50 }, () => nextPacket(rand, f, 'full'));
    const hdr = packets[0].length - 1000;
    // Default 65535: 50 payloads and a header fit.
    assert.deepEqual(
      planAndCheck(packets, rand).groupLens.filter((k) => k > 0),
      [50],
    );
    assert.deepEqual(
      planAndCheck(packets, rand, hdr + 7000).groupLens.filter((k) => k > 0),
      [7, 7, 7, 7, 7, 7, 7, 1],
    );
    assert.deepEqual(
      planAndCheck(packets, rand, hdr + 6999).groupLens.filter((k) => k > 0),
      [6, 6, 6, 6, 6, 6, 6, 6, 2],
    );
    // Below two packets nothing coalesces.
    assert.equal(planAndCheck(packets, rand, hdr + 1999).groups, 0);
  });

  test('a short tail ends a group; a longer segment cannot join a shorter leader', () => {
    const rand = mulberry32(77);
    const f = newFlow(rand, 1000);
    f.mss = 1000;
    const ofLength = (n: number): Uint8Array => {
      const m = f.mss;
      f.mss = n;
      const p = nextPacket(rand, f, 'full');
      f.mss = m;
      return p;
    };
    const packets = [1000, 1000, 300, 1000, 1000, 400, 400, 500, 100].map(ofLength);
    // 300 may end the first group; the next full one cannot follow it. The second 400 cannot
    // follow the first (a short segment is last); 500 cannot join a 400 leader; 100 can join 500.
    assert.deepEqual(planAndCheck(packets, rand).groupLens, [3, 0, 0, 3, 0, 0, 1, 2, 0]);
  });

  test('TCP headers that do not fit the packet are written alone', () => {
    const rand = mulberry32(5);
    const f = newFlow(rand, 1000);
    f.timestamps = false;
    const a = nextPacket(rand, f, 'full');
    const b = nextPacket(rand, f, 'full');
    const bad = nextPacket(rand, f, 'full').slice(0, 30);
    bad[2] = 0;
    bad[3] = 30;
    bad[10] = bad[11] = 0;
    const ck = ~onesSum(bad, 0, 20) & 0xffff;
    bad[10] = ck >> 8;
    bad[11] = ck & 0xff;
    const r = planAndCheck([a, b, bad], rand);
    assert.deepEqual(r.groupLens, [2, 0, 1]);
    // A 60-byte TCP header claimed in a packet of 40 + 10 bytes.
    f.mss = 10;
    const bigDoff = nextPacket(rand, f, 'full');
    bigDoff[32] = 0xf0;
    const r2 = planAndCheck([bigDoff, nextPacket(rand, f, 'full'), nextPacket(rand, f, 'full')], rand);
    assert.deepEqual(r2.groupLens, [1, 2, 0]);
  });

  test('header fields compared a word at a time (4-aligned packets) or bytewise: every header byte matters the same', () => {
    // One bit of one header byte of the leader or the first member is flipped (checksums then
    // made valid again, so only the field comparison decides); the plan must equal the reference
    // plan with the packets 8-aligned (word path), misaligned (byte path) and without words.
    const rand = mulberry32(0xf11b);
    let joined = 0,
      refused = 0;
    for (const df of [true, false]) {
      const f = newFlow(rand, 1000);
      f.df = df;
      f.timestamps = true;
      f.mss = 300;
      const clean = [nextPacket(rand, f, 'full'), nextPacket(rand, f, 'full'), nextPacket(rand, f, 'full')];
      const hdr = clean[0].length - 300;
      for (const target of [0, 1]) {
        for (let j = 1; j < hdr; j++) {
          for (const bit of [0, 7]) {
            const packets = clean.map((p) => p.slice());
            const p = packets[target];
            p[j] ^= 1 << bit;
            fixChecksums(p);
            const expected = referencePlan(
              packets.map((x) => parsePacket(x)),
              65535,
            );
            if (expected[0] === 3) joined++;
            else refused++;
            assertPlanOnEveryLayout(packets, expected, `df ${df}, packet ${target}, byte ${j} bit ${bit}`);
          }
        }
      }
    }
    // Checksum, total length and (with DF) id bytes still join; every compared field refuses.
    assert.ok(joined > 20 && refused > 150, `${joined} joined, ${refused} refused`);
  });

  test('randomized batches against the reference planner and segmenter', () => {
    const coverage = new RuleCoverage(RULES, TCP_GROUP_RULES);
    let groups = 0,
      packets = 0,
      grouped = 0,
      full64 = 0,
      maxBytesHit = 0;
    const full = forEachSeed('encap-tcp-coalesce', 'TCP_COALESCE_SEED', 0x5eed0000, 600, (seed) => {
      const rand = mulberry32(seed);
      const batch = randomBatch(rand);
      const r = planAndCheck(batch.packets, rand, batch.maxBytes);
      groups += r.groups;
      packets += batch.packets.length;
      grouped += r.groupLens.reduce((s, k) => s + (k >= 2 ? k : 0), 0);
      if (r.maxGroup === 64) full64++;
      maxBytesHit += r.maxBytesHit;
      coverage.record(
        batch.packets.map((p) => parsePacket(p)),
        batch.maxBytes ?? 65535,
      );
    });
    if (!full) return;
    if (process.env.TCP_COALESCE_STATS)
      console.log({ groups, packets, grouped, full64, maxBytesHit, sole: coverage.counts() });
    coverage.assertEveryRuleSoleReason();
    assert.ok(
      groups > 1000 && grouped > packets / 3,
      `too little coalescing: ${groups} groups, ${grouped}/${packets} packets`,
    );
    assert.ok(
      full64 > 5 && maxBytesHit > 5,
      `limits not exercised: ${full64} full groups, ${maxBytesHit} cut by maxBytes`,
    );
  });

  test('microbenchmark: one 64-packet flow batch becomes one group (ns per packet as a diagnostic)', (t) => {
    const rand = mulberry32(99);
    const f = newFlow(rand, 1448);
    f.mss = 1000; // 64 x 1000 + header fits 65535
    const packets = Array.from({ length: 64 }, () => nextPacket(rand, f, 'full'));
    const ns = timeSingleFlowBatch(packets, 80, false);
    t.diagnostic(`planCoalescing: ${ns.toFixed(1)} ns per packet (64-packet single-flow batch)`);
  });
});
