// Hostile input never crashes the Forwarder, and every packet is accounted for. Seeded random
// batches both ways: random bytes, and real TCP/UDP packets and super-packets with random bytes
// flipped, under random virtio-net headers (any GSO type, sizes, checksum offsets) on the way out
// and random UDP GRO segment sizes and senders on the way in. After each batch:
//  - flannel0 -> UDP: every packet read is sent (one datagram, or the segments of a TSO/USO
//    super-packet) or counted in one drop counter; every datagram is a well-formed IPv4 packet of
//    at most the MTU with a valid header checksum and a live TTL, for a peer's address, and every
//    segment cut from a super-packet also has the right TCP/UDP length and a valid checksum;
//  - UDP -> flannel0: every datagram received is written or counted in one drop counter; what is
//    written comes from a peer's subnet, for ours, with a live TTL.
// Rerun one seed alone with FUZZ_SEED=<seed>.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { C, newCounters } from '../../src/datapath/counters.js';
import { Forwarder } from '../../src/datapath/forwarder.js';
import { PacketSlab, SEGMENT_CELLS, SUPER_SLOT_SIZE, slotSizeFor } from '../../src/datapath/slab.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';
import { RoutingSnapshot } from '../../src/routing-table/snapshot.js';
import { FakeTun, FakeUdp } from '../helpers/fake-io.js';
import { randomBytes, runSeeded, seedsFor } from '../helpers/prng.js';
import {
  buildTcpPacket,
  buildUdpPacket,
  ipChecksumValid,
  partialChecksum,
  tcpChecksumValid,
  udpChecksumValid,
} from '../helpers/tcp-segments.js';

const MTU = 1472;
const PORT = 8285;
const OWN = parseIPv4('10.244.1.0');
const OWN_POD = parseIPv4('10.244.1.2');
const PEER = parseIPv4('192.0.2.2'); // owns 10.244.2.0/24
const PEER_POD = parseIPv4('10.244.2.2');
const STRANGER = parseIPv4('198.51.100.7');
const BATCHES = 40;
const BATCH = 16;

const TX_DROPS = [
  'dropTxMalformed',
  'dropTxOversize',
  'dropTxNoRoute',
  'dropTxTtl',
  'dropTxBadOffload',
  'dropTxSendError',
] as const;
const RX_DROPS = [
  'dropRxMalformed',
  'dropRxOversize',
  'dropRxUnknownSender',
  'dropRxSpoofedSource',
  'dropRxNotForUs',
  'dropRxTtl',
  'dropRxWriteError',
] as const;

function setup() {
  const slab = new PacketSlab({
    slotSize: slotSizeFor(MTU),
    batch: BATCH,
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
    { tunAddress: OWN, subnetPrefix: OWN, subnetLen: 24, port: PORT, mtu: MTU, tunGro: true },
    counters,
  );
  fwd.setRoutes(RoutingSnapshot.build([{ prefix: parseIPv4('10.244.2.0'), prefixLen: 24, publicIp: PEER }]));
  return { slab, tun, udp, fwd, counters };
}

const pick = <T>(rand: () => number, items: readonly T[]): T => items[rand() % items.length]!;

/** A packet that is real but for a few random bytes (or not at all), or plain garbage. */
function hostilePacket(rand: () => number, src: number, dst: number, maxLen: number): Uint8Array {
  const kind = rand() % 4;
  const payload = randomBytes(rand, rand() % Math.min(maxLen, 1 + (rand() % 2 === 0 ? 1400 : 60000)));
  let p: Uint8Array;
  if (kind === 0) {
    p = randomBytes(rand, rand() % 200);
  } else if (kind === 1) {
    p = buildTcpPacket({
      src,
      dst,
      ttl: 1 + (rand() % 64),
      df: true,
      id: rand() & 0xffff,
      sport: 40000,
      dport: 5201,
      seq: rand(),
      ack: rand(),
      flags: pick(rand, [0x10, 0x18, 0x11, 0x02, 0x80 | 0x10]),
      window: 500,
      payload,
    });
    new DataView(p.buffer).setUint16(36, partialChecksum(src, dst, 6, p.length - 20));
  } else {
    p = buildUdpPacket({
      src,
      dst,
      sport: 4433,
      dport: 443,
      payload,
      ttl: 1 + (rand() % 64),
      id: rand() & 0xffff,
      check: partialChecksum(src, dst, 17, 8 + payload.length),
    });
  }
  if (p.length > maxLen) p = p.subarray(0, maxLen);
  const flips = kind === 0 ? 0 : rand() % 4;
  for (let k = 0; k < flips && p.length > 0; k++) p[rand() % Math.min(p.length, 64)] = rand() & 0xff;
  // The local kernel never hands flannel0 a bad IP header checksum, and the forwarder keeps a
  // packet's own (flannel does too): the header stays checksummed, whatever else was flipped.
  const ihl = (p[0]! & 15) * 4;
  if (kind !== 0 && ihl >= 20 && p.length >= ihl) {
    p[10] = p[11] = 0;
    let sum = 0;
    for (let j = 0; j < ihl; j += 2) sum += (p[j]! << 8) | p[j + 1]!;
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    p[10] = (~sum >> 8) & 0xff;
    p[11] = ~sum & 0xff;
  }
  return p;
}

/** A virtio-net header as a hostile or confused kernel might hand it out. */
function hostileVnet(rand: () => number): Uint8Array {
  const b = new Uint8Array(10);
  const v = new DataView(b.buffer);
  b[0] = pick(rand, [0, 1, 1, 3, rand() & 0xff]);
  b[1] = pick(rand, [0, 1, 1, 5, 5, 3, 4, rand() & 0xff]);
  v.setUint16(2, pick(rand, [0, 28, 52, rand() & 0xffff]), true);
  v.setUint16(4, pick(rand, [0, 1, 48, 1000, 1420, 1444, 1460, rand() & 0xffff]), true);
  v.setUint16(6, pick(rand, [20, 20, 0, 24, rand() & 0xffff]), true);
  v.setUint16(8, pick(rand, [16, 6, 0, rand() & 0xffff]), true);
  return b;
}

describe('hostile input: the Forwarder never throws and accounts for every packet', () => {
  for (const seed of seedsFor('FUZZ_SEED', 4, 0xf022)) {
    test(`flannel0 -> UDP, seed ${seed}`, () =>
      runSeeded('datapath-fuzz tx', 'FUZZ_SEED', seed, (rand) => {
        const { slab, tun, udp, fwd, counters: c } = setup();
        let segments = 0;
        for (let b = 0; b < BATCHES; b++) {
          const sentBefore = udp.sent.length;
          for (let i = 0; i < BATCH; i++) {
            const p = hostilePacket(
              rand,
              OWN_POD,
              rand() % 8 === 0 ? parseIPv4('10.244.9.9') : PEER_POD,
              SUPER_SLOT_SIZE,
            );
            if (rand() % 3 === 0) tun.push(p);
            else tun.pushOffloaded(p, hostileVnet(rand));
          }
          while (fwd.tunToUdp() > 0) {
            /* drain */
          }
          for (const d of udp.sent.slice(sentBefore)) {
            assert.ok(d.data.length >= 20 && d.data.length <= MTU, `a ${d.data.length}-byte datagram`);
            assert.equal(d.data[0]! >> 4, 4);
            assert.equal(d.data.readUInt16BE(2), d.data.length, 'IP total length = datagram length');
            assert.ok(ipChecksumValid(d.data), 'IP header checksum');
            assert.ok(d.data[8]! >= 1, 'TTL');
            assert.equal(d.addr, PEER);
            assert.equal(d.port, PORT);
            if (d.slot >= slab.cellFirst && d.slot < slab.cellFirst + SEGMENT_CELLS) {
              segments++;
              const l4 = (d.data[0]! & 15) * 4,
                proto = d.data[9];
              if (proto === 17) {
                assert.equal(d.data.readUInt16BE(l4 + 4), d.data.length - l4, "a cut datagram's UDP length");
                assert.ok(udpChecksumValid(d.data), "a cut datagram's UDP checksum");
              } else {
                assert.equal(proto, 6, 'a segment is TCP or UDP');
                assert.ok(tcpChecksumValid(d.data), "a cut segment's TCP checksum");
              }
            }
          }
        }
        assert.equal(segments, c[C.tunTsoSegments]! + c[C.tunUsoSegments]!, 'every cut segment was checked');
        // Each packet read: sent as itself, sent as a super-packet's segments, or one drop.
        const plainSent = c[C.udpSentPackets]! - c[C.tunTsoSegments]! - c[C.tunUsoSegments]!;
        const dropped = TX_DROPS.reduce((n, name) => n + c[C[name]]!, 0);
        assert.equal(plainSent + c[C.tunTsoPackets]! + c[C.tunUsoPackets]! + dropped, c[C.tunReadPackets]!);
        assert.equal(c[C.tunReadPackets], BATCHES * BATCH);
        // The batches did reach the offload paths and the drops (else this proves little).
        assert.ok(
          c[C.tunTsoPackets]! > 0 && c[C.tunUsoPackets]! > 0 && c[C.tunCsumCompleted]! > 0,
          'TSO, USO and checksum completion reached',
        );
        assert.ok(
          c[C.dropTxBadOffload]! > 0 && c[C.dropTxMalformed]! > 0 && c[C.dropTxOversize]! > 0,
          'offload, malformed and oversize drops reached',
        );
      }));

    test(`UDP -> flannel0, seed ${seed}`, () =>
      runSeeded('datapath-fuzz rx', 'FUZZ_SEED', seed, (rand) => {
        const { tun, udp, fwd, counters: c } = setup();
        let datagrams = 0;
        for (let b = 0; b < BATCHES; b++) {
          const writtenBefore = tun.written.length;
          for (let i = 0; i < BATCH; i++) {
            const from = rand() % 6 === 0 ? STRANGER : PEER;
            const src = rand() % 6 === 0 ? parseIPv4('10.244.3.3') : PEER_POD;
            if (rand() % 2 === 0) {
              const p = hostilePacket(rand, src, OWN_POD, 2000);
              udp.push({ data: p, addr: from, port: PORT });
              datagrams++;
            } else {
              // A UDP GRO run: datagrams of one size back to back (the last shorter), or a lying segSize.
              const size = pick(rand, [60, 1000, 1472, 1500]),
                n = 1 + (rand() % 40);
              const parts = Array.from({ length: n }, () => hostilePacket(rand, src, OWN_POD, size));
              const run = Buffer.concat(
                parts.map((p, k) => (k < n - 1 ? Buffer.concat([p, Buffer.alloc(size - p.length)]) : Buffer.from(p))),
              );
              const segSize = rand() % 5 === 0 ? 1 + (rand() % 2000) : size;
              if (run.length === 0) continue;
              udp.push({ data: run, addr: from, port: PORT, segSize });
              datagrams += run.length > SUPER_SLOT_SIZE ? 1 : Math.ceil(run.length / segSize);
            }
          }
          while (fwd.udpToTun() > 0) {
            /* drain */
          }
          for (const w of tun.written.slice(writtenBefore)) {
            assert.ok(w.length >= 20);
            assert.equal(w.readUInt32BE(12) >>> 8, PEER_POD >>> 8, "from the peer's subnet");
            assert.equal(w.readUInt32BE(16) >>> 8, OWN_POD >>> 8, 'for our subnet');
            assert.ok(w[8]! >= 1, 'TTL');
          }
        }
        const dropped = RX_DROPS.reduce((n, name) => n + c[C[name]]!, 0);
        assert.equal(c[C.udpRecvPackets], datagrams, 'every datagram of every run seen');
        assert.equal(c[C.tunWritePackets]! + dropped, c[C.udpRecvPackets]!);
        assert.ok(c[C.udpGroRuns]! > 0 && c[C.tunWritePackets]! > 0, 'GRO runs split, packets written');
        assert.ok(
          c[C.dropRxMalformed]! > 0 && c[C.dropRxUnknownSender]! > 0 && c[C.dropRxSpoofedSource]! > 0,
          'drops reached',
        );
      }));
  }
});
