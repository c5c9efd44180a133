// The Forwarder with offloaded I/O (fakes with the shim's semantics): TSO super-packets and
// partial checksums read from flannel0, and UDP GRO runs received from the socket. What goes on
// the wire must be exactly what the kernel's own segmentation would send (the reference
// segmenter in test/helpers/tcp-segments.ts), one inner packet per datagram.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { C, newCounters } from '../../src/datapath/counters.js';
import { Forwarder } from '../../src/datapath/forwarder.js';
import { PacketSlab, SEGMENT_CELLS, SUPER_SLOT_SIZE, VIEW_SLOTS, slotSizeFor } from '../../src/datapath/slab.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';
import { RoutingSnapshot } from '../../src/routing-table/snapshot.js';
import { FakeTun, FakeUdp } from '../helpers/fake-io.js';
import {
  buildTcpPacket,
  buildUdpPacket,
  ipChecksumValid,
  onesSum,
  parseVnetHdr,
  partialChecksum,
  segmentSuperPacket,
  tcpChecksumValid,
  udpChecksumValid,
} from '../helpers/tcp-segments.js';

const MTU = 1472;
const PORT = 8285;
const OWN = parseIPv4('10.244.1.0');
const PEER = parseIPv4('192.0.2.2');
const OWN_POD = parseIPv4('10.244.1.2');
const PEER_POD = parseIPv4('10.244.2.2');
const TIMESTAMPS = Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
/** flannel0's MTU minus IP, TCP and timestamp headers: what Linux picks as gso_size. */
const GSO_SIZE = MTU - 20 - 32;

function setup(batch = 8, mtu = MTU) {
  const slab = new PacketSlab({
    slotSize: slotSizeFor(mtu),
    batch,
    readSlotSize: SUPER_SLOT_SIZE,
    receiveSlotSize: SUPER_SLOT_SIZE,
  });
  const tun = new FakeTun(slab),
    udp = new FakeUdp(slab),
    counters = newCounters();
  const fwd = new Forwarder(
    slab,
    tun,
    udp,
    {
      tunAddress: OWN,
      subnetPrefix: OWN,
      subnetLen: 24,
      port: PORT,
      mtu,
      tunGro: true,
    },
    counters,
  );
  fwd.setRoutes(RoutingSnapshot.build([{ prefix: parseIPv4('10.244.2.0'), prefixLen: 24, publicIp: PEER }]));
  return { slab, tun, udp, fwd, counters };
}

/** A little-endian virtio_net_hdr. */
function vnetHdr(h: {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}): Uint8Array {
  const b = new Uint8Array(10);
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
 * A TSO super-packet as flannel0 hands it out: one TCP packet with `payload` bytes and a partial
 * checksum (the pseudo-header sum over the whole TCP length), and its virtio_net_hdr.
 */
function superPacket(
  payload: number,
  opts: { ttl?: number; flags?: number; seq?: number; id?: number; gsoSize?: number; dst?: number } = {},
) {
  const dst = opts.dst ?? PEER_POD;
  const p = buildTcpPacket({
    src: OWN_POD,
    dst,
    ttl: opts.ttl ?? 64,
    df: true,
    id: opts.id ?? 100,
    sport: 40000,
    dport: 5201,
    seq: opts.seq ?? 0xfffff000,
    ack: 77,
    flags: opts.flags ?? 0x18,
    window: 500,
    tcpOptions: TIMESTAMPS,
    payload: Uint8Array.from({ length: payload }, (_, i) => (i * 7 + 3) & 0xff),
  });
  new DataView(p.buffer).setUint16(20 + 16, partialChecksum(OWN_POD, dst, 6, p.length - 20));
  const hdr = vnetHdr({
    flags: 1,
    gsoType: 1,
    hdrLen: 52,
    gsoSize: opts.gsoSize ?? GSO_SIZE,
    csumStart: 20,
    csumOffset: 16,
  });
  return { packet: p, hdr };
}

/** The packet after the forwarder's TTL - 1 (header checksum recomputed). */
function afterTtl(packet: Uint8Array): Buffer {
  const p = Buffer.from(packet);
  p[8]--;
  p.writeUInt16BE(0, 10);
  p.writeUInt16BE(~onesSum(p, 0, 20) & 0xffff, 10);
  return p;
}

/** What the kernel would send for the super-packet, after the forwarder's TTL - 1. */
function expectedSegments(packet: Uint8Array, hdr: Uint8Array): Buffer[] {
  return segmentSuperPacket(parseVnetHdr(hdr, 0), afterTtl(packet)).map((s) => Buffer.from(s));
}

/** Records how many datagrams each send call of udp carried. */
function recordSendCalls(udp: FakeUdp): number[] {
  const sizes: number[] = [];
  const send = udp.send.bind(udp);
  udp.send = (list, count) => {
    sizes.push(count);
    return send(list, count);
  };
  return sizes;
}

/** A plain TCP packet from our pod to the peer's, payload bytes all `fill`. */
function plainPacket(payload: number, fill = 0, dst = PEER_POD): Uint8Array {
  return buildTcpPacket({
    src: OWN_POD,
    dst,
    ttl: 64,
    sport: 1,
    dport: 2,
    seq: 5,
    ack: 6,
    flags: 0x10,
    window: 9,
    payload: new Uint8Array(payload).fill(fill),
  });
}

describe('TSO super-packets from flannel0', () => {
  test('a 64 KiB super-packet goes out as the kernel segmentation would send it, one segment per datagram', () => {
    const { tun, udp, fwd, counters } = setup();
    const { packet, hdr } = superPacket(65535 - 52);
    tun.pushOffloaded(packet, hdr);
    assert.equal(fwd.tunToUdp(), 1);
    const want = expectedSegments(packet, hdr);
    assert.equal(want.length, Math.ceil((65535 - 52) / GSO_SIZE));
    assert.deepEqual(
      udp.sent.map((d) => d.data),
      want,
    );
    for (const d of udp.sent) {
      assert.equal(d.addr, PEER);
      assert.equal(d.port, PORT);
      assert.ok(d.data.length <= MTU, 'no datagram larger than the MTU');
      assert.ok(ipChecksumValid(d.data) && tcpChecksumValid(d.data));
    }
    assert.equal(counters[C.tunTsoPackets], 1);
    assert.equal(counters[C.tunTsoSegments], want.length);
    assert.equal(counters[C.udpSentPackets], want.length);
    assert.equal(
      counters[C.udpSentBytes],
      want.reduce((n, s) => n + s.length, 0),
    );
    assert.equal(counters[C.tunReadPackets], 1);
  });

  test('more segments than header cells in one batch: sent in several calls, in order, none lost', () => {
    const batch = 32;
    const { tun, udp, fwd, counters } = setup(batch);
    const want: Buffer[] = [];
    for (let i = 0; i < batch; i++) {
      const { packet, hdr } = superPacket(40000 + i * 500, { seq: i * 100000, id: i * 100 });
      tun.pushOffloaded(packet, hdr);
      want.push(...expectedSegments(packet, hdr));
    }
    assert.ok(want.length > SEGMENT_CELLS, `${want.length} segments`);
    assert.equal(fwd.tunToUdp(), batch);
    assert.ok(udp.sendCalls >= 2);
    assert.equal(udp.sent.length, want.length);
    assert.ok(
      udp.sent.every((d, i) => d.data.equals(want[i]!)),
      'every segment as the reference, in order',
    );
    assert.equal(counters[C.tunTsoSegments], want.length);
  });

  test('plain packets and super-packets mixed keep their order', () => {
    const { tun, udp, fwd } = setup();
    const plain = buildTcpPacket({
      src: OWN_POD,
      dst: PEER_POD,
      ttl: 64,
      sport: 1,
      dport: 2,
      seq: 5,
      ack: 6,
      flags: 0x10,
      window: 9,
      payload: new Uint8Array(3),
    });
    const { packet, hdr } = superPacket(3 * GSO_SIZE);
    tun.push(plain);
    tun.pushOffloaded(packet, hdr);
    tun.push(plain);
    fwd.tunToUdp();
    assert.equal(udp.sent.length, 5);
    assert.deepEqual(
      udp.sent.map((d) => d.data.length),
      [plain.length, MTU, MTU, MTU, plain.length],
    );
  });

  test('FIN and PSH only on the last segment; seq and IP id advance', () => {
    const { tun, udp, fwd } = setup();
    const { packet, hdr } = superPacket(2 * GSO_SIZE + 10, { flags: 0x19, seq: 0xffffffff, id: 0xffff });
    tun.pushOffloaded(packet, hdr);
    fwd.tunToUdp();
    const segs = udp.sent.map((d) => d.data);
    assert.deepEqual(
      segs.map((s) => s[33]),
      [0x10, 0x10, 0x19],
    );
    assert.deepEqual(
      segs.map((s) => s.readUInt32BE(24)),
      [0xffffffff, GSO_SIZE - 1, 2 * GSO_SIZE - 1],
    );
    assert.deepEqual(
      segs.map((s) => s.readUInt16BE(4)),
      [0xffff, 0, 1],
    );
    assert.deepEqual(
      segs.map((s) => s[8]),
      [63, 63, 63],
      'TTL - 1 on every segment',
    );
  });

  test('a partial checksum (NEEDS_CSUM, no GSO) is completed before sending', () => {
    const { tun, udp, fwd, counters } = setup();
    const p = buildUdpPacket({
      src: OWN_POD,
      dst: PEER_POD,
      sport: 5353,
      dport: 53,
      payload: Uint8Array.from([1, 2, 3, 4, 5]),
      ttl: 64,
      check: partialChecksum(OWN_POD, PEER_POD, 17, 8 + 5),
    });
    tun.pushOffloaded(p, vnetHdr({ flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 20, csumOffset: 6 }));
    fwd.tunToUdp();
    assert.equal(udp.sent.length, 1);
    assert.ok(udpChecksumValid(udp.sent[0]!.data));
    assert.equal(counters[C.tunCsumCompleted], 1);
  });

  test('offloaded reads we cannot handle are dropped and counted, the rest of the batch goes on', () => {
    const { tun, udp, fwd, counters } = setup();
    const { packet, hdr } = superPacket(3 * GSO_SIZE);
    const udpPacket = buildUdpPacket({
      src: OWN_POD,
      dst: PEER_POD,
      sport: 1,
      dport: 2,
      payload: new Uint8Array(4000),
      check: 0,
    });
    const smallUdp = buildUdpPacket({
      src: OWN_POD,
      dst: PEER_POD,
      sport: 1,
      dport: 2,
      payload: new Uint8Array(400),
      check: 0,
    });
    // UFO (gso_type 3), TCP segmentation asked for a UDP packet, gso_size 0, a checksum offset beyond the packet.
    tun.pushOffloaded(
      packet.slice(),
      vnetHdr({ flags: 1, gsoType: 3, hdrLen: 52, gsoSize: GSO_SIZE, csumStart: 20, csumOffset: 16 }),
    );
    tun.pushOffloaded(
      udpPacket.slice(),
      vnetHdr({ flags: 1, gsoType: 1, hdrLen: 28, gsoSize: 1000, csumStart: 20, csumOffset: 6 }),
    );
    tun.pushOffloaded(
      packet.slice(),
      vnetHdr({ flags: 1, gsoType: 1, hdrLen: 52, gsoSize: 0, csumStart: 20, csumOffset: 16 }),
    );
    tun.pushOffloaded(
      smallUdp,
      vnetHdr({ flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 20, csumOffset: smallUdp.length }),
    );
    tun.pushOffloaded(packet, hdr);
    assert.equal(fwd.tunToUdp(), 5);
    assert.equal(counters[C.dropTxBadOffload], 4);
    assert.equal(counters[C.dropTxOversize], 0);
    assert.equal(udp.sent.length, 3, 'the good super-packet still goes');
  });

  test('gso_size + headers above the MTU: cut at MTU - headers, as the reference cut there, no datagram above the MTU', () => {
    for (const gsoSize of [MTU - 52 + 1, 9000, 65535]) {
      const { tun, udp, fwd, counters } = setup();
      const { packet, hdr } = superPacket(30000, { gsoSize });
      tun.pushOffloaded(packet, hdr);
      assert.equal(fwd.tunToUdp(), 1);
      const cutHdr = vnetHdr({ flags: 1, gsoType: 1, hdrLen: 52, gsoSize: MTU - 52, csumStart: 20, csumOffset: 16 });
      const want = expectedSegments(packet, cutHdr);
      assert.equal(want.length, Math.ceil(30000 / (MTU - 52)));
      assert.equal(udp.sent.length, want.length, `gso_size ${gsoSize}`);
      assert.ok(
        udp.sent.every((d, i) => d.data.equals(want[i]!)),
        `gso_size ${gsoSize}: every segment as the reference cut at ${MTU - 52}`,
      );
      for (const d of udp.sent) {
        assert.ok(d.data.length <= MTU, `a ${d.data.length}-byte datagram`);
        assert.ok(ipChecksumValid(d.data) && tcpChecksumValid(d.data));
      }
      assert.equal(udp.sent[0]!.data.length, MTU, 'full segments fill the MTU');
      assert.equal(counters[C.tunTsoSegments], want.length);
      assert.equal(counters[C.dropTxOversize], 0);
    }
  });

  test('a super-packet whose headers leave no room within the MTU is dropped as oversize; the batch goes on', () => {
    // MTU 52: exactly the 20 + 32 header bytes, not one payload byte more.
    const { tun, udp, fwd, counters } = setup(8, 52);
    const { packet, hdr } = superPacket(3000);
    const small = plainPacket(4);
    tun.pushOffloaded(packet, hdr);
    tun.push(small);
    assert.equal(fwd.tunToUdp(), 2);
    assert.equal(counters[C.dropTxOversize], 1);
    assert.equal(counters[C.dropTxBadOffload], 0);
    assert.equal(counters[C.tunTsoPackets], 0);
    assert.deepEqual(
      udp.sent.map((d) => d.data),
      [afterTtl(small)],
    );
  });

  test('a plain packet longer than the MTU (a 64 KiB read slot takes one) is dropped and counted, not sent', () => {
    const { tun, udp, fwd, counters } = setup();
    const over = plainPacket(MTU - 40 + 1, 1);
    const exact = plainPacket(MTU - 40, 2);
    const hugeUdp = buildUdpPacket({
      src: OWN_POD,
      dst: PEER_POD,
      sport: 5353,
      dport: 53,
      payload: new Uint8Array(60000),
      ttl: 64,
      check: partialChecksum(OWN_POD, PEER_POD, 17, 8 + 60000),
    });
    tun.push(over);
    tun.push(exact);
    // Also with a partial checksum to complete (NEEDS_CSUM, no GSO): still one plain packet.
    tun.pushOffloaded(hugeUdp, vnetHdr({ flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 20, csumOffset: 6 }));
    assert.equal(fwd.tunToUdp(), 3);
    assert.equal(counters[C.dropTxOversize], 2);
    assert.equal(counters[C.dropTxMalformed], 0);
    assert.equal(counters[C.tunCsumCompleted], 0);
    assert.equal(counters[C.tunReadPackets], 3);
    assert.deepEqual(
      udp.sent.map((d) => d.data),
      [afterTtl(exact)],
      'only the packet of exactly the MTU',
    );
    assert.equal(counters[C.udpSentPackets], 1);
  });

  test('gso_size 48 (the minimum MSS) on a 60,000-byte payload: all 1250 segments, in order, in several send calls', () => {
    const { tun, udp, fwd, counters } = setup();
    const calls = recordSendCalls(udp);
    const { packet, hdr } = superPacket(60000, { gsoSize: 48 });
    tun.pushOffloaded(packet, hdr);
    assert.equal(fwd.tunToUdp(), 1);
    const want = expectedSegments(packet, hdr);
    assert.equal(want.length, 1250);
    assert.equal(udp.sent.length, 1250);
    assert.ok(
      udp.sent.every((d, i) => d.data.equals(want[i]!)),
      'every segment as the reference, in order',
    );
    assert.ok(calls.length >= 2 && calls.every((n) => n <= 1024), `send calls: ${calls.join(', ')}`);
    assert.equal(
      calls.reduce((a, b) => a + b, 0),
      1250,
    );
    assert.equal(counters[C.tunTsoPackets], 1);
    assert.equal(counters[C.tunTsoSegments], 1250);
    assert.equal(counters[C.udpSentPackets], 1250);
    assert.equal(counters[C.dropTxBadOffload] + counters[C.dropTxOversize] + counters[C.dropTxSendError], 0);
  });

  test('gso_size below TCP_MIN_GSO_SIZE (8): one bad-offload drop, nothing cut; 8 is cut', () => {
    const { tun, udp, fwd, counters } = setup();
    const tiny = superPacket(4000, { gsoSize: 7 });
    tun.pushOffloaded(tiny.packet, tiny.hdr);
    const least = superPacket(4000, { gsoSize: 8 });
    tun.pushOffloaded(least.packet, least.hdr);
    assert.equal(fwd.tunToUdp(), 2);
    assert.equal(counters[C.dropTxBadOffload], 1);
    const want = expectedSegments(least.packet, least.hdr);
    assert.equal(want.length, 500);
    assert.ok(
      udp.sent.length === 500 && udp.sent.every((d, i) => d.data.equals(want[i]!)),
      'the gso_size 8 one as the reference',
    );
    assert.equal(counters[C.tunTsoSegments], 500);
  });

  test('a batch mixing minimum-MSS super-packets with plain packets and other super-packets keeps every packet in order', () => {
    const { tun, udp, fwd, counters } = setup();
    const calls = recordSendCalls(udp);
    const a = plainPacket(10, 0xa1),
      b = plainPacket(20, 0xb2),
      c = plainPacket(30, 0xc3);
    const tiny1 = superPacket(60000, { gsoSize: 48, seq: 1000, id: 10 });
    const normal = superPacket(20000, { seq: 2000000, id: 2000 });
    const tiny2 = superPacket(65535 - 52, { gsoSize: 48, seq: 3000000, id: 3000 });
    tun.push(a);
    tun.pushOffloaded(tiny1.packet, tiny1.hdr);
    tun.pushOffloaded(normal.packet, normal.hdr);
    tun.push(b);
    tun.pushOffloaded(tiny2.packet, tiny2.hdr);
    tun.push(c);
    assert.equal(fwd.tunToUdp(), 6);
    const want = [
      afterTtl(a),
      ...expectedSegments(tiny1.packet, tiny1.hdr),
      ...expectedSegments(normal.packet, normal.hdr),
      afterTtl(b),
      ...expectedSegments(tiny2.packet, tiny2.hdr),
      afterTtl(c),
    ];
    assert.equal(want.length, 1 + 1250 + Math.ceil(20000 / GSO_SIZE) + 1 + Math.ceil((65535 - 52) / 48) + 1);
    assert.equal(udp.sent.length, want.length);
    assert.ok(
      udp.sent.every((d, i) => d.data.equals(want[i]!)),
      'every datagram as expected, in order',
    );
    assert.ok(
      calls.every((n) => n <= 1024),
      `send calls: ${calls.join(', ')}`,
    );
    assert.equal(counters[C.tunTsoPackets], 3);
    assert.equal(counters[C.tunTsoSegments], want.length - 3);
  });

  test('a super-packet with TTL 1: one dropTxTtl, nothing sent, one ICMP time exceeded', () => {
    const { tun, udp, fwd, counters } = setup();
    const { packet, hdr } = superPacket(60000, { gsoSize: 48, ttl: 1 });
    tun.pushOffloaded(packet, hdr);
    assert.equal(fwd.tunToUdp(), 1);
    assert.equal(counters[C.dropTxTtl], 1);
    assert.equal(counters[C.tunTsoPackets], 0);
    assert.equal(counters[C.tunTsoSegments], 0);
    assert.equal(udp.sent.length, 0);
    assert.equal(tun.written.length, 1);
    assert.equal(tun.written[0]![20], 11, 'time exceeded');
    assert.equal(counters[C.icmpTimeExceededSent], 1);
  });

  test('a super-packet with no route: exactly one ICMP net-unreachable quoting its header, nothing sent', () => {
    const { tun, udp, fwd, counters } = setup();
    const { packet, hdr } = superPacket(20000, { dst: parseIPv4('10.244.9.9') });
    tun.pushOffloaded(packet, hdr);
    assert.equal(fwd.tunToUdp(), 1);
    assert.equal(counters[C.dropTxNoRoute], 1);
    assert.equal(counters[C.icmpUnreachableSent], 1);
    assert.equal(counters[C.tunTsoPackets], 0);
    assert.equal(udp.sent.length, 0);
    assert.equal(tun.written.length, 1);
    const icmp = tun.written[0]!;
    assert.equal(icmp.length, 20 + 8 + 20 + 8);
    assert.equal(icmp[9], 1, 'ICMP');
    assert.equal(icmp.readUInt32BE(16), OWN_POD, 'to the sender');
    assert.deepEqual([icmp[20], icmp[21]], [3, 0], 'destination unreachable, net unreachable');
    assert.equal(onesSum(icmp, 20, icmp.length - 20), 0xffff, 'ICMP checksum');
    assert.ok(ipChecksumValid(icmp));
    // The super-packet's own IP header (total length 20052, TTL as read) and its first 8 TCP bytes.
    assert.deepEqual(icmp.subarray(28), Buffer.from(packet.subarray(0, 28)));
    assert.equal(icmp.readUInt16BE(28 + 2), 20052);
  });

  test('a NEEDS_CSUM UDP packet whose checksum comes out 0 is sent with 0xffff (RFC 768)', () => {
    const { tun, udp, fwd, counters } = setup();
    for (let r = 0; r < 4; r++) {
      const payload = Uint8Array.from({ length: 2 + 37 * r }, (_, i) => (i * 29 + r * 7 + 1) & 0xff);
      payload[0] = payload[1] = 0;
      const p = buildUdpPacket({
        src: OWN_POD,
        dst: PEER_POD,
        sport: 5353,
        dport: 53,
        payload,
        ttl: 64,
        check: partialChecksum(OWN_POD, PEER_POD, 17, 8 + payload.length),
      });
      // The first two payload bytes make the sum over the UDP part (with the partial field) 0xffff: ~sum = 0.
      const fix = 0xffff - onesSum(p, 20, p.length - 20);
      p[28] = fix >> 8;
      p[29] = fix & 0xff;
      assert.equal(onesSum(p, 20, p.length - 20), 0xffff, 'constructed sum');
      tun.pushOffloaded(p, vnetHdr({ flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 20, csumOffset: 6 }));
    }
    assert.equal(fwd.tunToUdp(), 4);
    assert.equal(udp.sent.length, 4);
    for (const d of udp.sent) {
      assert.equal(d.data.readUInt16BE(26), 0xffff, 'zero checksum sent as 0xffff');
      assert.ok(udpChecksumValid(d.data));
      assert.ok(ipChecksumValid(d.data));
    }
    assert.equal(counters[C.tunCsumCompleted], 4);
  });
});

describe('UDP GRO runs from the socket', () => {
  // Segments of one flow from the peer's pod to ours, back to back as a coalesced receive.
  const segment = (i: number, src = PEER_POD) =>
    buildTcpPacket({
      src,
      dst: OWN_POD,
      ttl: 64,
      df: true,
      id: i,
      sport: 5201,
      dport: 40000,
      seq: 1000 + i * 1400,
      ack: 7,
      flags: 0x10,
      window: 512,
      payload: new Uint8Array(1400).fill(i),
    });
  const run = (packets: Uint8Array[]) => Buffer.concat(packets);

  test('a run is split into its datagrams, checked one by one, and written coalesced', () => {
    const { tun, udp, fwd, counters } = setup();
    const packets = [0, 1, 2, 3, 4].map((i) => segment(i));
    udp.push({ data: run(packets), addr: PEER, port: PORT, segSize: packets[0]!.length });
    assert.equal(fwd.udpToTun(), 1);
    assert.equal(counters[C.udpGroRuns], 1);
    assert.equal(counters[C.udpGroDatagrams], 5);
    assert.equal(counters[C.udpRecvPackets], 5);
    assert.equal(counters[C.tunWritePackets], 5);
    assert.deepEqual(tun.writeGroups, [[5, 0, 0, 0, 0]]);
  });

  test('a spoofed datagram inside a run is dropped alone', () => {
    const { tun, udp, fwd, counters } = setup();
    const packets = [segment(0), segment(1), segment(2, parseIPv4('10.244.9.9')), segment(3)];
    udp.push({ data: run(packets), addr: PEER, port: PORT, segSize: packets[0]!.length });
    fwd.udpToTun();
    assert.equal(counters[C.dropRxSpoofedSource], 1);
    assert.equal(counters[C.tunWritePackets], 3);
    assert.equal(tun.written.length, 3);
  });

  test('a shorter last datagram, and runs beyond the view slots of one call, all arrive in order', () => {
    const batch = 32;
    const { tun, udp, fwd, counters } = setup(batch);
    let total = 0;
    for (let r = 0; r < batch; r++) {
      const packets = Array.from({ length: 40 }, (_, i) => segment(r * 40 + i));
      const last = buildTcpPacket({
        src: PEER_POD,
        dst: OWN_POD,
        ttl: 64,
        sport: 1,
        dport: 2,
        seq: 0,
        ack: 0,
        flags: 0x10,
        window: 1,
        payload: new Uint8Array(10),
      });
      udp.push({ data: run([...packets, last]), addr: PEER, port: PORT, segSize: packets[0]!.length });
      total += 41;
    }
    assert.ok(total > VIEW_SLOTS);
    assert.equal(fwd.udpToTun(), batch);
    assert.ok(tun.writeCalls >= 2);
    assert.equal(counters[C.tunWritePackets], total);
    assert.equal(tun.written.length, total);
    assert.equal(tun.written[40]!.length, 50, 'the short last datagram of the first run');
  });

  test('a run larger than its slot (truncated) is one oversize drop', () => {
    const { udp, fwd, counters } = setup();
    udp.push({ data: new Uint8Array(SUPER_SLOT_SIZE + 100), addr: PEER, port: PORT, segSize: 1400 });
    fwd.udpToTun();
    assert.equal(counters[C.dropRxOversize], 1);
    assert.equal(counters[C.tunWritePackets], 0);
  });
});

/**
 * A USO super-packet as flannel0 hands it out (one sendmsg of a UDP_SEGMENT socket): one UDP packet
 * with `payload` bytes, the UDP length of the whole, a partial checksum, and its virtio_net_hdr.
 */
function usoPacket(payload: number, gsoSize: number, id = 300) {
  const data = Uint8Array.from({ length: payload }, (_, i) => (i * 13 + 5) & 0xff);
  const p = buildUdpPacket({
    src: OWN_POD,
    dst: PEER_POD,
    sport: 4433,
    dport: 443,
    payload: data,
    ttl: 64,
    id,
    check: partialChecksum(OWN_POD, PEER_POD, 17, 8 + payload),
  });
  return { packet: p, data, hdr: vnetHdr({ flags: 1, gsoType: 5, hdrLen: 28, gsoSize, csumStart: 20, csumOffset: 6 }) };
}

/** Checks that `sent` are the datagrams of a USO super-packet of `data` cut every gsoSize bytes (id0 = the
 * super-packet's id). */
function assertUsoDatagrams(
  sent: readonly { data: Buffer; addr: number; port: number }[],
  data: Uint8Array,
  gsoSize: number,
  id0: number,
): void {
  assert.equal(sent.length, Math.ceil(data.length / gsoSize));
  sent.forEach((d, k) => {
    const p = d.data,
      v = new DataView(p.buffer, p.byteOffset, p.length);
    const n = Math.min(gsoSize, data.length - k * gsoSize);
    assert.equal(p.length, 28 + n, `datagram ${k} length`);
    assert.ok(p.length <= MTU);
    assert.equal(v.getUint16(2), 28 + n, 'IP total length');
    assert.equal(v.getUint16(4), (id0 + k) & 0xffff, 'IP id advances');
    assert.equal(p[8], 63, 'TTL decremented once');
    assert.ok(ipChecksumValid(p), `datagram ${k}: IP checksum`);
    assert.equal(v.getUint16(20), 4433);
    assert.equal(v.getUint16(22), 443);
    assert.equal(v.getUint16(24), 8 + n, 'UDP length');
    assert.ok(udpChecksumValid(p), `datagram ${k}: UDP checksum`);
    assert.ok(
      Buffer.from(p.subarray(28)).equals(Buffer.from(data.subarray(k * gsoSize, k * gsoSize + n))),
      `datagram ${k}: payload`,
    );
    assert.equal(d.addr, PEER);
    assert.equal(d.port, PORT);
  });
}

describe('USO super-packets from flannel0', () => {
  test('a UDP GSO super-packet goes out as its datagrams, one per datagram, the last one shorter', () => {
    const { tun, udp, fwd, counters } = setup();
    const gso = 1200;
    const { packet, data, hdr } = usoPacket(40 * gso - 200, gso);
    tun.pushOffloaded(packet, hdr);
    assert.equal(fwd.tunToUdp(), 1);
    assertUsoDatagrams(udp.sent, data, gso, 300);
    assert.equal(counters[C.tunUsoPackets], 1);
    assert.equal(counters[C.tunUsoSegments], 40);
    assert.equal(counters[C.tunTsoPackets], 0);
    assert.equal(counters[C.udpSentPackets], 40);
    assert.equal(counters[C.dropTxBadOffload] + counters[C.dropTxOversize], 0);
  });

  test("datagrams over the MTU are not re-cut (their boundaries are the application's): one oversize drop, the batch goes on", () => {
    const { tun, udp, fwd, counters } = setup();
    tun.pushOffloaded(usoPacket(3 * 1460, 1460).packet, usoPacket(3 * 1460, 1460).hdr); // 28 + 1460 > 1472
    const after = plainPacket(100, 7);
    tun.push(after);
    assert.equal(fwd.tunToUdp(), 2);
    assert.equal(counters[C.dropTxOversize], 1);
    assert.equal(counters[C.tunUsoPackets], 0);
    assert.deepEqual(
      udp.sent.map((d) => d.data),
      [afterTtl(after)],
    );
  });

  test('a GSO_UDP_L4 header on what is not a UDP super-packet Linux builds: one bad-offload drop each', () => {
    const { tun, udp, fwd, counters } = setup();
    const wrongLength = usoPacket(3000, 1000);
    new DataView(wrongLength.packet.buffer).setUint16(24, 8 + 2999); // UDP length != IP payload
    tun.pushOffloaded(wrongLength.packet, wrongLength.hdr);
    const tcpUnderUdpHeader = superPacket(3000);
    tun.pushOffloaded(
      tcpUnderUdpHeader.packet,
      vnetHdr({ flags: 1, gsoType: 5, hdrLen: 28, gsoSize: 1000, csumStart: 20, csumOffset: 6 }),
    );
    assert.equal(fwd.tunToUdp(), 2);
    assert.equal(counters[C.dropTxBadOffload], 2);
    assert.equal(udp.sent.length, 0);
  });

  test('more datagrams than UDP_MAX_SEGMENTS (128): one bad-offload drop, nothing cut; 128 go out whole', () => {
    const { tun, udp, fwd, counters } = setup();
    const gso = 40;
    const over = usoPacket(128 * gso + 1, gso); // 129 datagrams: no Linux sender builds it
    tun.pushOffloaded(over.packet, over.hdr);
    const max = usoPacket(128 * gso, gso, 0xfff0); // the id wraps
    tun.pushOffloaded(max.packet, max.hdr);
    assert.equal(fwd.tunToUdp(), 2);
    assert.equal(counters[C.dropTxBadOffload], 1);
    assertUsoDatagrams(udp.sent, max.data, gso, 0xfff0);
    assert.equal(counters[C.tunUsoPackets], 1);
    assert.equal(counters[C.tunUsoSegments], 128);
  });

  test('more datagrams in one batch than header cells: sent in several calls, in order, none lost', () => {
    const { tun, udp, fwd, counters } = setup(12);
    const gso = 40;
    const packets = Array.from({ length: 12 }, (_, i) => usoPacket(128 * gso - i, gso, 1000 * i));
    for (const p of packets) tun.pushOffloaded(p.packet, p.hdr);
    const calls = recordSendCalls(udp);
    assert.equal(fwd.tunToUdp(), 12);
    assert.ok(calls.length >= 2, `send calls: ${calls.join(',')}`);
    assert.ok(calls.every((n) => n <= SEGMENT_CELLS));
    packets.forEach((p, i) => assertUsoDatagrams(udp.sent.slice(128 * i, 128 * (i + 1)), p.data, gso, 1000 * i));
    assert.equal(udp.sent.length, 12 * 128);
    assert.equal(counters[C.tunUsoSegments], 12 * 128);
  });
});
