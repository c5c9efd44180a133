// UDP GRO planning (planCoalescing in src/encap/tcp-coalesce.ts: UDP GSO, VIRTIO_NET_HDR_GSO_UDP_L4)
// against the independent references of test/helpers/tcp-segments.ts: the UDP join rules one by
// one, a greedy reference planner for batches mixing TCP and UDP, and a reference UDP GSO
// segmenter that must give back the original datagrams byte for byte from every super-packet.
// Randomized tests print their seed on failure; rerun one with UDP_COALESCE_SEED=<seed>.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MAX_GROUP_PACKETS, planCoalescing, VNET_HDR_SLOT } from '../../src/encap/tcp-coalesce.js';
import { VIRTIO_NET_HDR_GSO_UDP_L4 } from '../../src/encap/wire.js';
import {
  SLOT_SIZE,
  RuleCoverage,
  assertPlanOnEveryLayout,
  assertSegmentMatches,
  coalesceHarness,
  forEachSeed,
  timeSingleFlowBatch,
  type BatchResult,
  type CoalesceProtocol,
  type GroupExpectation,
} from '../helpers/coalesce-harness.js';
import { mulberry32, randomBytes } from '../helpers/prng.js';
import {
  TCP_ACK,
  TCP_PSH,
  UDP_GROUP_RULES,
  buildTcpPacket,
  buildUdpDatagram,
  joinViolations,
  leadViolations,
  onesSum,
  parseUdpPacket,
  parseVnetHdr,
  partialChecksum,
  referenceMixedPlan,
  segmentSuperPacket,
  segmentUdpSuperPacket,
  udpChecksumValid,
  udpJoinViolations,
  udpLeadViolations,
  type ParsedUdpPacket,
  type UdpPacketSpec,
} from '../helpers/tcp-segments.js';

/**
 * The checks of a planned group on top of the shared harness's, for UDP and TCP groups in mixed
 * batches: the join rules of the group's protocol one by one; the super-packet's UDP length and
 * the partial (pseudo-header) checksum field; the group's protocol segmenter gives back the
 * originals (UDP: byte for byte, IP id included, since segments are numbered from the leader's,
 * DF or not).
 */
const mixed: CoalesceProtocol<ParsedUdpPacket> = {
  parse: (p) => parseUdpPacket(p),
  referencePlan: referenceMixedPlan,
  expectGroup(group, i, maxBytes): GroupExpectation {
    const k = group.length;
    const L = group[0];
    const isUdp = L.udp !== null;
    if (isUdp) {
      assert.deepEqual(udpLeadViolations(L), [], `UDP leader ${i}`);
      for (let j = 1; j < k; j++)
        assert.deepEqual(udpJoinViolations(group.slice(0, j), group[j], maxBytes), [], `UDP member ${i + j}`);
    } else {
      assert.deepEqual(leadViolations(L), [], `TCP leader ${i}`);
      for (let j = 1; j < k; j++)
        assert.deepEqual(joinViolations(group.slice(0, j), group[j], maxBytes), [], `TCP member ${i + j}`);
    }
    const hdrLen = isUdp ? 28 : L.ihl + L.tcp!.headerLength;
    const payloadOf = (m: ParsedUdpPacket): number => (isUdp ? m.udp!.payloadLength : m.tcp!.payloadLength);
    const total = hdrLen + group.reduce((s, m) => s + payloadOf(m), 0);
    return {
      vnet: {
        flags: 1,
        gsoType: isUdp ? 5 : 1,
        hdrLen,
        gsoSize: payloadOf(L),
        csumStart: 20,
        csumOffset: isUdp ? 6 : 16,
      },
      total,
      // Only the fields the contract names change.
      mayChange: isUdp ? new Set([2, 3, 10, 11, 24, 25, 26, 27]) : new Set([2, 3, 10, 11, 33, 36, 37]),
      check(lead, _orig, sp, vnet, originals): void {
        if (isUdp) {
          assert.equal(lead[24] * 256 + lead[25], total - 20, 'super-packet UDP length');
          assert.equal(
            lead[26] * 256 + lead[27],
            partialChecksum(L.src, L.dst, 17, total - 20),
            'UDP partial checksum field',
          );
        } else {
          assert.equal(
            lead[36] * 256 + lead[37],
            partialChecksum(L.src, L.dst, 6, total - 20),
            'TCP partial checksum field',
          );
        }
        const segs = isUdp ? segmentUdpSuperPacket(vnet, sp) : segmentSuperPacket(vnet, sp);
        assert.equal(segs.length, k, 'segment count');
        segs.forEach((seg, j) => {
          const ignoreId = !isUdp && L.df;
          assertSegmentMatches(seg, originals[j], ignoreId, ignoreId ? `TCP segment ${j}` : `segment ${j}`);
        });
      },
    };
  },
};

const planMixed = coalesceHarness(mixed);

/** planMixed, with how many of the groups it made are UDP and how many TCP. */
function planAndCheck(
  packets: Uint8Array[],
  rand: () => number,
  maxBytes?: number,
): BatchResult & { udpGroups: number; tcpGroups: number } {
  const r = planMixed(packets, rand, maxBytes);
  const udpLeaders = r.groupLens.filter((k, i) => k >= 2 && parseUdpPacket(packets[i]).udp !== null).length;
  return { ...r, udpGroups: udpLeaders, tcpGroups: r.groups - udpLeaders };
}

// ---- random traffic --------------------------------------------------------------------------

interface Flow {
  udp: boolean;
  src: number;
  dst: number;
  sport: number;
  dport: number;
  ttl: number;
  tos: number;
  df: boolean;
  id: number;
  size: number;
  /** TCP only. */
  seq: number;
  ack: number;
  window: number;
}

function newFlow(rand: () => number, sizeMax: number, udp: boolean): Flow {
  return {
    udp,
    src: (0x0af40000 | (rand() & 0xffff)) >>> 0,
    dst: (0x0af40000 | (rand() & 0xffff)) >>> 0,
    sport: 1024 + (rand() % 60000),
    dport: rand() % 4 === 0 ? 4789 : 1 + (rand() % 65535),
    ttl: 63 + (rand() % 2),
    tos: rand() % 4 === 0 ? 0x02 : 0,
    df: rand() % 2 === 0,
    id: rand() & 0xffff,
    size: 1 + (rand() % sizeMax),
    seq: rand() >>> 0,
    ack: rand() >>> 0,
    window: rand() & 0xffff,
  };
}

const UDP_EVENTS: Array<[string, number]> = [
  ['full', 600],
  ['short', 50],
  ['empty', 10],
  ['longer', 15],
  ['none', 15],
  ['corrupt', 15],
  ['ip-options', 10],
  ['mf', 8],
  ['frag-offset', 8],
  ['id-gap', 15],
  ['id-same', 8],
  ['df', 10],
  ['ip-reserved', 5],
  ['ttl', 10],
  ['tos', 10],
  ['src', 8],
  ['dst', 8],
  ['sport', 8],
  ['dport', 8],
  ['bad-ip-checksum', 10],
  ['udp-length', 8],
  ['size-change', 10],
  ['icmp', 8],
];
const UDP_EVENT_TOTAL = UDP_EVENTS.reduce((s, [, w]) => s + w, 0);

function pickUdpEvent(roll: number): string {
  for (const [name, w] of UDP_EVENTS) {
    if (roll < w) return name;
    roll -= w;
  }
  return 'full';
}

/** The next datagram of a UDP flow; in messy traffic with an event that may break coalescing. */
function nextDatagram(rand: () => number, f: Flow, messy: boolean): Uint8Array {
  const ev = messy ? pickUdpEvent(rand() % UDP_EVENT_TOTAL) : 'full';
  if (ev === 'size-change') f.size = 1 + (rand() % 1400);
  if (ev === 'df') f.df = !f.df; // persistent: the flow now sends the other way
  if (ev === 'id-gap') f.id = (f.id + 1 + (rand() % 1000)) & 0xffff;
  let n = f.size;
  if (ev === 'short') n = 1 + (rand() % f.size);
  if (ev === 'empty') n = 0;
  if (ev === 'longer') n = Math.min(f.size + 1 + (rand() % 40), SLOT_SIZE - 100);
  const spec: UdpPacketSpec = {
    src: f.src,
    dst: f.dst,
    sport: f.sport,
    dport: f.dport,
    tos: f.tos,
    ttl: f.ttl,
    id: f.id,
    df: f.df,
    payload: randomBytes(rand, n),
  };
  switch (ev) {
    case 'none':
      spec.noChecksum = true;
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
    case 'id-same':
      spec.id = (f.id - 1) & 0xffff;
      break;
    case 'ip-reserved':
      spec.reservedBit = true;
      break;
    case 'ttl':
      spec.ttl = f.ttl - 1;
      break;
    case 'tos':
      spec.tos = f.tos ^ (1 << (rand() % 8));
      break;
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
    case 'bad-ip-checksum':
      spec.badIpChecksum = true;
      break;
    case 'udp-length':
      spec.lengthDelta = rand() % 2 === 0 ? -1 : 1;
      break;
  }
  f.id = (f.id + 1) & 0xffff;
  let p: Uint8Array;
  if (ev === 'icmp') {
    p = buildTcpPacket({
      src: f.src,
      dst: f.dst,
      protocol: 1,
      sport: 0,
      dport: 0,
      seq: 0,
      ack: 0,
      flags: 0,
      window: 0,
      payload: randomBytes(rand, 8 + (rand() % 200)),
      df: f.df,
      id: spec.id,
    });
  } else {
    p = buildUdpDatagram(spec);
  }
  // A payload corrupted in transit (after the sender's checksum): must never be merged (nor repaired).
  if (ev === 'corrupt') p[28 + (rand() % n || 0)] ^= 1 << (rand() % 8);
  return p;
}

/** The next TCP segment of a TCP flow: mostly full, sometimes short or PSH. */
function nextSegment(rand: () => number, f: Flow): Uint8Array {
  const roll = rand() % 100;
  const n = roll < 8 ? rand() % f.size : f.size;
  const p = buildTcpPacket({
    src: f.src,
    dst: f.dst,
    tos: f.tos,
    ttl: f.ttl,
    id: f.id,
    df: f.df,
    sport: f.sport,
    dport: f.dport,
    seq: f.seq,
    ack: f.ack,
    flags: roll >= 96 ? TCP_ACK | TCP_PSH : TCP_ACK,
    window: f.window,
    payload: randomBytes(rand, n),
  });
  f.seq = (f.seq + n) >>> 0;
  f.id = (f.id + 1) & 0xffff;
  return p;
}

/** A random batch: a few UDP and TCP flows (some sharing addresses and ports), interleaved at random or in runs. */
function randomBatch(rand: () => number): { packets: Uint8Array[]; maxBytes: number | undefined } {
  const messy = rand() % 3 !== 0;
  const sizeMax = [1472, 1400, 600, 60][rand() % 4];
  const flows = Array.from({ length: 1 + (rand() % 4) }, () => newFlow(rand, sizeMax, rand() % 4 !== 0));
  // Sometimes a TCP flow and a UDP flow share addresses and ports: only the protocol differs.
  if (flows.length >= 2 && rand() % 3 === 0) {
    const a = flows[0],
      b = flows[1];
    b.src = a.src;
    b.dst = a.dst;
    b.sport = a.sport;
    b.dport = a.dport;
    b.udp = !a.udp;
  }
  const count = 1 + (rand() % (messy ? 150 : 250));
  const stickiness = rand() % 4;
  const packets: Uint8Array[] = [];
  let f = 0;
  for (let n = 0; n < count; n++) {
    if (stickiness === 0 || rand() % (stickiness * 12) === 0) f = rand() % flows.length;
    const flow = flows[f];
    packets.push(flow.udp ? nextDatagram(rand, flow, messy) : nextSegment(rand, flow));
  }
  const maxRoll = rand() % 5;
  const maxBytes = maxRoll < 3 ? undefined : maxRoll === 3 ? 65535 - (rand() % 2000) : 28 + (rand() % 30000);
  return { packets, maxBytes };
}

const UDP_RULES = [
  'not-udp',
  'ip-options',
  'fragment',
  'ip-checksum',
  'udp-length',
  'udp-checksum-none',
  'udp-checksum',
  'addresses',
  'tos',
  'ttl',
  'ip-flags',
  'ip-id',
  'ports',
  'empty-payload',
  'longer-than-leader',
  'after-short',
  'max-bytes',
  'max-packets',
];

function udpFlow(
  over: Partial<UdpPacketSpec> = {},
): (n: number, id: number, extra?: Partial<UdpPacketSpec>) => Uint8Array {
  return (n, id, extra = {}) =>
    buildUdpDatagram({
      src: 0x0a000001,
      dst: 0x0a000002,
      sport: 5000,
      dport: 53,
      ttl: 64,
      df: true,
      payload: Uint8Array.from({ length: n }, (_, j) => (j * 7 + id) & 0xff),
      id,
      ...over,
      ...extra,
    });
}

describe('planCoalescing: UDP', () => {
  test('the virtio GSO type of a UDP super-packet is GSO_UDP_L4 (5)', () => {
    assert.equal(VIRTIO_NET_HDR_GSO_UDP_L4, 5);
  });

  test('worked example: three datagrams, the last shorter, leader patch and vnet header exactly', () => {
    const mk = udpFlow();
    const a = mk(100, 7),
      b = mk(100, 8),
      c = mk(40, 9);
    const bytes = new Uint8Array(4 * 256);
    bytes.set(a, 2 * 256);
    bytes.set(b, 0);
    bytes.set(c, 3 * 256);
    const lens = new Int32Array([128, 0, 128, 68]);
    const offs = new Uint16Array(4);
    const vnet = new Uint8Array(4 * VNET_HDR_SLOT);
    const groupLens = new Uint16Array(3);
    const n = planCoalescing(
      bytes,
      new Uint32Array([0, 256, 512, 768]),
      lens,
      offs,
      vnet,
      new Uint16Array([2, 0, 3]),
      3,
      groupLens,
    );
    assert.equal(n, 1);
    assert.deepEqual(Array.from(groupLens), [3, 0, 0]);
    assert.deepEqual(Array.from(offs), [28, 0, 0, 28]);
    const h = bytes.subarray(512, 512 + 28);
    // IP: total 28 + 240 = 0x010c; checksum over 4500 010c 0007 4000 4011 0000 0a00 0001 0a00 0002
    // = 0xda27, inverted 0x25d8.
    assert.equal(Buffer.from(h.subarray(0, 20)).toString('hex'), '4500010c000740004011' + '25d8' + '0a0000010a000002');
    // UDP: ports 5000 (0x1388) and 53; length 8 + 240 = 0x00f8; checksum field = 0a00 + 0001 +
    // 0a00 + 0002 + 0011 + 00f8 = 0x150c (the pseudo-header sum, not inverted).
    assert.equal(Buffer.from(h.subarray(20, 28)).toString('hex'), '1388003500f8150c');
    // flags 1, gso_type 5, hdr_len 28, gso_size 100, csum_start 20, csum_offset 6 (little-endian).
    assert.equal(
      Buffer.from(vnet.subarray(2 * VNET_HDR_SLOT, 2 * VNET_HDR_SLOT + 10)).toString('hex'),
      '01051c00640014000600',
    );
    assert.ok(
      vnet.subarray(0, 2 * VNET_HDR_SLOT).every((x) => x === 0) &&
        vnet.subarray(3 * VNET_HDR_SLOT).every((x) => x === 0),
    );
    assert.deepEqual(bytes.subarray(0, 128), b, 'member untouched');
    assert.deepEqual(bytes.subarray(768, 768 + 68), c, 'member untouched');
    // And the reference segmenter gives back a, b, c.
    const sp = new Uint8Array(268);
    sp.set(bytes.subarray(512, 640));
    sp.set(b.subarray(28), 128);
    sp.set(c.subarray(28), 228);
    assert.deepEqual(segmentUdpSuperPacket(parseVnetHdr(vnet, 2 * VNET_HDR_SLOT), sp), [a, b, c]);
  });

  test('checksum 0, a corrupted payload, a bad IP checksum: written alone, the run resumes after', () => {
    const mk = udpFlow({ df: false });
    const corrupt = mk(200, 4);
    corrupt[100] ^= 0x10;
    const packets = [
      mk(200, 1),
      mk(200, 2),
      mk(200, 3, { noChecksum: true }),
      corrupt,
      mk(200, 5, { badIpChecksum: true }),
      mk(200, 6),
      mk(200, 7),
      mk(200, 8),
    ];
    assert.ok(!udpChecksumValid(corrupt) && udpChecksumValid(packets[0]));
    const r = planAndCheck(packets, mulberry32(1));
    assert.deepEqual(r.groupLens, [2, 0, 1, 1, 1, 3, 0, 0]);
  });

  test('a datagram whose checksum computes to 0 (sent as 0xffff) joins and comes back as 0xffff', () => {
    const mk = udpFlow();
    // Find a payload whose UDP checksum computes to 0: adjust its first two bytes.
    const make = (id: number): Uint8Array => {
      const p = mk(64, id);
      const v = new DataView(p.buffer);
      v.setUint16(28, 0);
      v.setUint16(26, 0);
      const s = onesSum(p, 20, p.length - 20, partialChecksum(0x0a000001, 0x0a000002, 17, p.length - 20));
      v.setUint16(28, 0xffff - s); // now the sum without the checksum field is 0xffff: checksum 0
      v.setUint16(26, 0xffff);
      return p;
    };
    const packets = [make(10), make(11), mk(64, 12), make(13)];
    packets.forEach((p, i) => {
      if (i !== 2) assert.equal(p[26] * 256 + p[27], 0xffff);
      assert.ok(udpChecksumValid(p));
    });
    // planAndCheck segments the groups back and compares byte for byte: the 0xffff fields included.
    assert.deepEqual(planAndCheck(packets, mulberry32(2)).groupLens, [4, 0, 0, 0]);
    // The same datagram sent with checksum 0 ("none") also sums to 0xffff, but must not join: its
    // segment would come back with 0xffff. Nor lead.
    const none = make(14);
    none[26] = none[27] = 0;
    assert.equal(
      onesSum(none, 20, none.length - 20, partialChecksum(0x0a000001, 0x0a000002, 17, none.length - 20)),
      0xffff,
    );
    const none2 = make(15);
    none2[26] = none2[27] = 0;
    assert.deepEqual(
      planAndCheck([...packets, none, none2, make(16), make(17)], mulberry32(3)).groupLens,
      [4, 0, 0, 0, 1, 1, 2, 0],
    );
  });

  test('IP ids must count up from the leader, DF or not; a gap or repeat starts a new group', () => {
    for (const df of [true, false]) {
      const mk = udpFlow({ df });
      const packets = [mk(300, 0xfffe), mk(300, 0xffff), mk(300, 0), mk(300, 2), mk(300, 3), mk(300, 3), mk(300, 4)];
      assert.deepEqual(planAndCheck(packets, mulberry32(3)).groupLens, [3, 0, 0, 2, 0, 2, 0], `df ${df}`);
    }
  });

  test('a short datagram ends a group; a longer one cannot join; an empty one never groups', () => {
    const mk = udpFlow();
    const sizes = [500, 500, 200, 500, 500, 600, 600, 0, 600, 600];
    const packets = sizes.map((n, i) => mk(n, i));
    // 200 ends the first group; 500 then leads; 600 cannot join a 500 leader; 0 breaks the 600s.
    assert.deepEqual(planAndCheck(packets, mulberry32(4)).groupLens, [3, 0, 0, 2, 0, 2, 0, 1, 2, 0]);
  });

  test('UDP and TCP runs are separate groups, even with the same addresses and ports', () => {
    const mkU = udpFlow({ sport: 7000, dport: 80 });
    let seq = 1000;
    const mkT = (id: number): Uint8Array => {
      const p = buildTcpPacket({
        src: 0x0a000001,
        dst: 0x0a000002,
        ttl: 64,
        df: true,
        id,
        sport: 7000,
        dport: 80,
        seq,
        ack: 1,
        flags: TCP_ACK,
        window: 100,
        payload: new Uint8Array(300).fill(id),
      });
      seq += 300;
      return p;
    };
    const packets = [mkU(300, 1), mkU(300, 2), mkT(3), mkT(4), mkT(5), mkU(300, 6), mkT(7), mkU(300, 8), mkU(300, 9)];
    const r = planAndCheck(packets, mulberry32(5));
    assert.deepEqual(r.groupLens, [2, 0, 3, 0, 0, 1, 1, 2, 0]);
    assert.equal(r.udpGroups, 2);
    assert.equal(r.tcpGroups, 1);
  });

  test('IP options, fragments, inconsistent UDP length, other header fields: never grouped or joined', () => {
    const mk = udpFlow({ df: false });
    const packets = [
      mk(100, 1, { ipOptions: new Uint8Array([1, 1, 1, 0]) }),
      mk(100, 2, { ipOptions: new Uint8Array([1, 1, 1, 0]) }),
      mk(100, 3, { mf: true }),
      mk(100, 4, { mf: true }),
      mk(100, 5, { fragOffset: 8 }),
      mk(100, 6, { fragOffset: 8 }),
      mk(100, 7, { lengthDelta: -1 }),
      mk(100, 8, { lengthDelta: -1 }),
      mk(100, 9),
      mk(100, 10, { ttl: 63 }),
      mk(100, 11, { tos: 4 }),
      mk(100, 12, { df: true }),
      mk(100, 13, { reservedBit: true }),
      mk(100, 14, { sport: 5001 }),
      mk(100, 15, { dport: 54 }),
      mk(100, 16, { src: 0x0a000003 }),
      mk(100, 17, { dst: 0x0a000003 }),
    ];
    const r = planAndCheck(packets, mulberry32(6));
    assert.equal(r.groups, 0);
    assert.deepEqual(
      r.groupLens,
      packets.map(() => 1),
    );
  });

  test('at most 64 datagrams per group: 200 give 64 + 64 + 64 + 8', () => {
    const mk = udpFlow({ df: false });
    const packets = Array.from({ length: 200 }, (_, i) => mk(100, (0xff00 + i) & 0xffff));
    const r = planAndCheck(packets, mulberry32(7));
    assert.deepEqual(
      r.groupLens.filter((k) => k > 0),
      [MAX_GROUP_PACKETS, 64, 64, 8],
    );
  });

  test('maxBytes: a group is cut where the next payload would exceed it, exactly at the boundary', () => {
    const mk = udpFlow();
    const packets = Array.from({ length: 50 }, (_, i) => mk(1000, i));
    assert.deepEqual(
      planAndCheck(packets, mulberry32(8)).groupLens.filter((k) => k > 0),
      [50],
    );
    assert.deepEqual(
      planAndCheck(packets, mulberry32(9), 28 + 7000).groupLens.filter((k) => k > 0),
      [7, 7, 7, 7, 7, 7, 7, 1],
    );
    assert.deepEqual(
      planAndCheck(packets, mulberry32(10), 28 + 6999).groupLens.filter((k) => k > 0),
      [6, 6, 6, 6, 6, 6, 6, 6, 2],
    );
    assert.equal(planAndCheck(packets, mulberry32(11), 28 + 1999).groups, 0);
    // Default maxBytes 65535: at most 65507 payload bytes, 46 x 1400.
    const big = Array.from({ length: 70 }, (_, i) => mk(1400, i));
    assert.deepEqual(
      planAndCheck(big, mulberry32(12)).groupLens.filter((k) => k > 0),
      [46, 24],
    );
  });

  test('every header byte matters the same on the word path (aligned) and the byte path', () => {
    // One bit of one header byte of the leader or the first member is flipped (checksums then made
    // valid again, so only the field comparison decides); the plan must equal the reference plan
    // with the packets aligned (word path), misaligned (byte path) and without words.
    let joined = 0,
      refused = 0;
    for (const df of [true, false]) {
      const mk = udpFlow({ df, tos: 0x10 });
      const clean = [mk(300, 40), mk(300, 41), mk(300, 42)];
      for (const target of [0, 1]) {
        for (let j = 1; j < 28; j++) {
          // byte 0 (0x45) is checked, but the parser has no version field
          for (const bit of [0, 7]) {
            const packets = clean.map((p) => p.slice());
            const p = packets[target];
            p[j] ^= 1 << bit;
            // Valid checksums again (IP header; UDP over the whole datagram, unless its field is the flipped byte).
            const v = new DataView(p.buffer);
            if (j !== 10 && j !== 11) {
              v.setUint16(10, 0);
              v.setUint16(10, ~onesSum(p, 0, (p[0] & 15) * 4) & 0xffff);
            }
            if (j < 24 || j > 27) {
              v.setUint16(26, 0);
              const c =
                ~onesSum(p, 20, p.length - 20, partialChecksum(v.getUint32(12), v.getUint32(16), 17, p.length - 20)) &
                0xffff;
              v.setUint16(26, c === 0 ? 0xffff : c);
            }
            const expected = referenceMixedPlan(
              packets.map((x) => parseUdpPacket(x)),
              65535,
            );
            if (expected[0] === 3) joined++;
            else refused++;
            assertPlanOnEveryLayout(packets, expected, `df ${df}, packet ${target}, byte ${j} bit ${bit}`);
          }
        }
      }
    }
    // Only the checksum bytes may change and still join; every compared field refuses.
    assert.ok(joined >= 4 && refused > 150, `${joined} joined, ${refused} refused`);
  });

  test('randomized mixed UDP/TCP batches against the reference planner and segmenters', () => {
    const coverage = new RuleCoverage(UDP_RULES, UDP_GROUP_RULES);
    let udpGroups = 0,
      tcpGroups = 0,
      full64 = 0,
      maxBytesHit = 0;
    const full = forEachSeed('encap-udp-coalesce', 'UDP_COALESCE_SEED', 0x0d900000, 500, (seed) => {
      const rand = mulberry32(seed);
      const batch = randomBatch(rand);
      const r = planAndCheck(batch.packets, rand, batch.maxBytes);
      udpGroups += r.udpGroups;
      tcpGroups += r.tcpGroups;
      if (r.maxGroup === 64) full64++;
      maxBytesHit += r.maxBytesHit;
      // Coverage: which UDP rules alone refused a datagram (each rule shown to matter).
      coverage.record(
        batch.packets.map((p) => parseUdpPacket(p)),
        batch.maxBytes ?? 65535,
      );
    });
    if (!full) return;
    if (process.env.UDP_COALESCE_STATS)
      console.log({ udpGroups, tcpGroups, full64, maxBytesHit, sole: coverage.counts() });
    coverage.assertEveryRuleSoleReason();
    assert.ok(udpGroups > 1000 && tcpGroups > 100, `too little coalescing: ${udpGroups} UDP, ${tcpGroups} TCP groups`);
    assert.ok(
      full64 > 5 && maxBytesHit > 5,
      `limits not exercised: ${full64} full groups, ${maxBytesHit} cut by maxBytes`,
    );
  });

  test('microbenchmark: one 64-datagram flow batch becomes one group (ns per packet as a diagnostic)', (t) => {
    const mk = udpFlow({ df: false });
    const packets = Array.from({ length: 64 }, (_, i) => mk(1000, i));
    const ns = timeSingleFlowBatch(packets, 28, true);
    t.diagnostic(`planCoalescing (UDP): ${ns.toFixed(1)} ns per packet (64-datagram single-flow batch, words)`);
  });
});
