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
  buildTcpPacket, buildUdpPacket, ipChecksumValid, parseVnetHdr, partialChecksum, segmentSuperPacket,
  tcpChecksumValid, udpChecksumValid,
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

function setup(batch = 8) {
  const slab = new PacketSlab({ slotSize: slotSizeFor(MTU), batch, readSlotSize: SUPER_SLOT_SIZE, receiveSlotSize: SUPER_SLOT_SIZE });
  const tun = new FakeTun(slab), udp = new FakeUdp(slab), counters = newCounters();
  const fwd = new Forwarder(slab, tun, udp, {
    tunAddress: OWN, subnetPrefix: OWN, subnetLen: 24, port: PORT, mtu: MTU, tunGro: true,
  }, counters);
  fwd.setRoutes(RoutingSnapshot.build([{ prefix: parseIPv4('10.244.2.0'), prefixLen: 24, publicIp: PEER }]));
  return { slab, tun, udp, fwd, counters };
}

/** A little-endian virtio_net_hdr. */
function vnetHdr(h: { flags: number; gsoType: number; hdrLen: number; gsoSize: number; csumStart: number; csumOffset: number }): Uint8Array {
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
function superPacket(payload: number, opts: { ttl?: number; flags?: number; seq?: number; id?: number } = {}) {
  const p = buildTcpPacket({
    src: OWN_POD, dst: PEER_POD, ttl: opts.ttl ?? 64, df: true, id: opts.id ?? 100, sport: 40000, dport: 5201,
    seq: opts.seq ?? 0xfffff000, ack: 77, flags: opts.flags ?? 0x18, window: 500, tcpOptions: TIMESTAMPS,
    payload: Uint8Array.from({ length: payload }, (_, i) => (i * 7 + 3) & 0xff),
  });
  new DataView(p.buffer).setUint16(20 + 16, partialChecksum(OWN_POD, PEER_POD, 6, p.length - 20));
  const hdr = vnetHdr({ flags: 1, gsoType: 1, hdrLen: 52, gsoSize: GSO_SIZE, csumStart: 20, csumOffset: 16 });
  return { packet: p, hdr };
}

/** What the kernel would send for the super-packet, after the forwarder's TTL - 1. */
function expectedSegments(packet: Uint8Array, hdr: Uint8Array): Buffer[] {
  const sp = packet.slice();
  const v = new DataView(sp.buffer);
  sp[8]--;
  v.setUint16(10, 0);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += v.getUint16(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  v.setUint16(10, ~sum & 0xffff);
  return segmentSuperPacket(parseVnetHdr(hdr, 0), sp).map((s) => Buffer.from(s));
}

describe('TSO super-packets from flannel0', () => {
  test('a 64 KiB super-packet goes out as the kernel segmentation would send it, one segment per datagram', () => {
    const { tun, udp, fwd, counters } = setup();
    const { packet, hdr } = superPacket(65535 - 52);
    tun.pushOffloaded(packet, hdr);
    assert.equal(fwd.tunToUdp(), 1);
    const want = expectedSegments(packet, hdr);
    assert.equal(want.length, Math.ceil((65535 - 52) / GSO_SIZE));
    assert.deepEqual(udp.sent.map((d) => d.data), want);
    for (const d of udp.sent) {
      assert.equal(d.addr, PEER);
      assert.equal(d.port, PORT);
      assert.ok(d.data.length <= MTU, 'no datagram larger than the MTU');
      assert.ok(ipChecksumValid(d.data) && tcpChecksumValid(d.data));
    }
    assert.equal(counters[C.tunTsoPackets], 1);
    assert.equal(counters[C.tunTsoSegments], want.length);
    assert.equal(counters[C.udpSentPackets], want.length);
    assert.equal(counters[C.udpSentBytes], want.reduce((n, s) => n + s.length, 0));
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
    assert.ok(udp.sent.every((d, i) => d.data.equals(want[i]!)), 'every segment as the reference, in order');
    assert.equal(counters[C.tunTsoSegments], want.length);
  });

  test('plain packets and super-packets mixed keep their order', () => {
    const { tun, udp, fwd } = setup();
    const plain = buildTcpPacket({ src: OWN_POD, dst: PEER_POD, ttl: 64, sport: 1, dport: 2, seq: 5, ack: 6, flags: 0x10, window: 9, payload: new Uint8Array(3) });
    const { packet, hdr } = superPacket(3 * GSO_SIZE);
    tun.push(plain);
    tun.pushOffloaded(packet, hdr);
    tun.push(plain);
    fwd.tunToUdp();
    assert.equal(udp.sent.length, 5);
    assert.deepEqual(udp.sent.map((d) => d.data.length), [plain.length, MTU, MTU, MTU, plain.length]);
  });

  test('FIN and PSH only on the last segment; seq and IP id advance', () => {
    const { tun, udp, fwd } = setup();
    const { packet, hdr } = superPacket(2 * GSO_SIZE + 10, { flags: 0x19, seq: 0xffffffff, id: 0xffff });
    tun.pushOffloaded(packet, hdr);
    fwd.tunToUdp();
    const segs = udp.sent.map((d) => d.data);
    assert.deepEqual(segs.map((s) => s[33]), [0x10, 0x10, 0x19]);
    assert.deepEqual(segs.map((s) => s.readUInt32BE(24)), [0xffffffff, GSO_SIZE - 1, 2 * GSO_SIZE - 1]);
    assert.deepEqual(segs.map((s) => s.readUInt16BE(4)), [0xffff, 0, 1]);
    assert.deepEqual(segs.map((s) => s[8]), [63, 63, 63], 'TTL - 1 on every segment');
  });

  test('a partial checksum (NEEDS_CSUM, no GSO) is completed before sending', () => {
    const { tun, udp, fwd, counters } = setup();
    const p = buildUdpPacket({
      src: OWN_POD, dst: PEER_POD, sport: 5353, dport: 53, payload: Uint8Array.from([1, 2, 3, 4, 5]), ttl: 64,
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
    const udpPacket = buildUdpPacket({ src: OWN_POD, dst: PEER_POD, sport: 1, dport: 2, payload: new Uint8Array(4000), check: 0 });
    // UFO (gso_type 3), TCP segmentation asked for a UDP packet, gso_size 0, a checksum offset beyond the packet.
    tun.pushOffloaded(packet.slice(), vnetHdr({ flags: 1, gsoType: 3, hdrLen: 52, gsoSize: GSO_SIZE, csumStart: 20, csumOffset: 16 }));
    tun.pushOffloaded(udpPacket.slice(), vnetHdr({ flags: 1, gsoType: 1, hdrLen: 28, gsoSize: 1000, csumStart: 20, csumOffset: 6 }));
    tun.pushOffloaded(packet.slice(), vnetHdr({ flags: 1, gsoType: 1, hdrLen: 52, gsoSize: 0, csumStart: 20, csumOffset: 16 }));
    tun.pushOffloaded(udpPacket.slice(), vnetHdr({ flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 20, csumOffset: udpPacket.length }));
    tun.pushOffloaded(packet, hdr);
    assert.equal(fwd.tunToUdp(), 5);
    assert.equal(counters[C.dropTxBadOffload], 4);
    assert.equal(udp.sent.length, 3, 'the good super-packet still goes');
  });
});

describe('UDP GRO runs from the socket', () => {
  // Segments of one flow from the peer's pod to ours, back to back as a coalesced receive.
  const segment = (i: number, src = PEER_POD) => buildTcpPacket({
    src, dst: OWN_POD, ttl: 64, df: true, id: i, sport: 5201, dport: 40000, seq: 1000 + i * 1400, ack: 7,
    flags: 0x10, window: 512, payload: new Uint8Array(1400).fill(i),
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
      const last = buildTcpPacket({ src: PEER_POD, dst: OWN_POD, ttl: 64, sport: 1, dport: 2, seq: 0, ack: 0, flags: 0x10, window: 1, payload: new Uint8Array(10) });
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
