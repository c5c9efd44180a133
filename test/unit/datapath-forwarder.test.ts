// Forwarder batch behaviour: ICMP errors for a whole batch, route swaps between batches, partial
// reads, and I/O failures (with the fakes' shim-like semantics).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { C, newCounters } from '../../src/datapath/counters.js';
import { Forwarder } from '../../src/datapath/forwarder.js';
import { PacketSlab, slotSizeFor } from '../../src/datapath/slab.js';
import { writeNetUnreachable } from '../../src/encap/ipv4.js';
import { formatIPv4, parseIPv4 } from '../../src/routing-table/ipv4.js';
import { RoutingSnapshot } from '../../src/routing-table/snapshot.js';
import { EIO, ENOBUFS, FakeTun, FakeUdp } from '../helpers/fake-io.js';
import { buildIpv4Udp, internetChecksum } from '../helpers/packets.js';
import { buildTcpPacket } from '../helpers/tcp-segments.js';

const MTU = 1472;
const PORT = 8285;
const BATCH = 8;
const TUN_ADDRESS = parseIPv4('10.244.1.0');
const PEER = parseIPv4('192.0.2.2');

function setup(maxPerCall?: number) {
  const slab = new PacketSlab({ slotSize: slotSizeFor(MTU), batch: BATCH });
  const tun = new FakeTun(slab, { maxPerCall });
  const udp = new FakeUdp(slab, { maxPerCall });
  const counters = newCounters();
  const fwd = new Forwarder(
    slab,
    tun,
    udp,
    {
      tunAddress: TUN_ADDRESS,
      subnetPrefix: TUN_ADDRESS,
      subnetLen: 24,
      port: PORT,
      mtu: MTU,
      icmpRateLimit: false, // one ICMP error per offender (the rate limit has its own tests)
    },
    counters,
  );
  fwd.setRoutes(RoutingSnapshot.build([{ prefix: parseIPv4('10.244.2.0'), prefixLen: 24, publicIp: PEER }]));
  return { slab, tun, udp, fwd, counters };
}

const toPod = (dst: string, i = 0) =>
  buildIpv4Udp({ src: '10.244.1.2', dst, srcPort: 40000 + i, dstPort: 53, id: i, data: Buffer.from(`packet ${i}`) });
const fromPeer = (src: string, i = 0) =>
  buildIpv4Udp({ src, dst: '10.244.1.2', srcPort: 53, dstPort: 40000 + i, id: i, data: Buffer.from(`reply ${i}`) });

describe('ICMP net unreachable', () => {
  test('a full batch of misses gives one ICMP error each, all in one write', () => {
    const { tun, udp, fwd, counters } = setup();
    const offenders = Array.from({ length: BATCH }, (_, i) => toPod(`10.244.77.${i + 1}`, i));
    tun.push(...offenders);
    assert.equal(fwd.tunToUdp(), BATCH);
    assert.equal(udp.sent.length, 0);
    assert.equal(tun.writeCalls, 1);
    assert.equal(tun.written.length, BATCH);
    for (const [i, icmp] of tun.written.entries()) {
      const want = new Uint8Array(200);
      const len = writeNetUnreachable(offenders[i]!, 0, offenders[i]!.length, want, 0, TUN_ADDRESS);
      assert.deepEqual(icmp, Buffer.from(want.subarray(0, len)), `ICMP ${i}`);
      assert.equal(formatIPv4(icmp.readUInt32BE(12)), '10.244.1.0');
      assert.equal(formatIPv4(icmp.readUInt32BE(16)), '10.244.1.2');
      assert.equal(icmp.readUInt16BE(28 + 4), i, 'quotes its own offender (IP id)');
      assert.equal(internetChecksum(icmp, 20, icmp.length - 20), 0);
    }
    assert.equal(counters[C.dropTxNoRoute], BATCH);
    assert.equal(counters[C.icmpUnreachableSent], BATCH);
  });

  test('misses and hits in one batch: hits are sent, misses answered, in order', () => {
    const { tun, udp, fwd, counters } = setup();
    tun.push(toPod('10.244.2.2', 0), toPod('10.244.9.9', 1), toPod('10.244.2.3', 2), toPod('10.244.9.9', 3));
    assert.equal(fwd.tunToUdp(), 4);
    assert.deepEqual(
      udp.sent.map((d) => d.data.readUInt16BE(4)),
      [0, 2],
    );
    assert.deepEqual(
      tun.written.map((p) => p.readUInt16BE(28 + 4)),
      [1, 3],
    );
    assert.equal(counters[C.icmpUnreachableSent], 2);
  });

  test('a failed ICMP write is not counted as sent', () => {
    const { tun, fwd, counters } = setup();
    tun.failNextWrites(EIO, 1);
    tun.push(toPod('10.244.9.9', 0), toPod('10.244.9.9', 1));
    fwd.tunToUdp();
    assert.equal(tun.written.length, 1);
    assert.equal(counters[C.icmpUnreachableSent], 1);
    assert.equal(counters[C.dropTxNoRoute], 2);
  });
});

describe('route snapshot swaps', () => {
  test('a swap between batches takes effect at the next batch, both directions', () => {
    const { tun, udp, fwd, counters } = setup();
    const newPeer = parseIPv4('192.0.2.5');

    tun.push(toPod('10.244.5.5'));
    fwd.tunToUdp();
    udp.push({ data: fromPeer('10.244.5.5'), addr: newPeer, port: PORT });
    fwd.udpToTun();
    assert.equal(udp.sent.length, 0);
    assert.equal(tun.written.length, 1, 'only the ICMP error');
    assert.equal(counters[C.dropRxUnknownSender], 1);

    const next = RoutingSnapshot.build([
      { prefix: parseIPv4('10.244.2.0'), prefixLen: 24, publicIp: PEER },
      { prefix: parseIPv4('10.244.5.0'), prefixLen: 24, publicIp: newPeer },
    ]);
    fwd.setRoutes(next);
    assert.equal(fwd.currentRoutes, next);

    tun.push(toPod('10.244.5.5'));
    fwd.tunToUdp();
    assert.equal(udp.sent.length, 1);
    assert.equal(formatIPv4(udp.sent[0]!.addr), '192.0.2.5');
    udp.push({ data: fromPeer('10.244.5.5'), addr: newPeer, port: PORT });
    fwd.udpToTun();
    assert.equal(tun.written.length, 2, 'the new peer is accepted');

    fwd.setRoutes(RoutingSnapshot.EMPTY);
    tun.push(toPod('10.244.2.2'));
    fwd.tunToUdp();
    assert.equal(udp.sent.length, 1, 'no routes: nothing sent');
    assert.equal(counters[C.dropTxNoRoute], 2);
    udp.push({ data: fromPeer('10.244.2.2'), addr: PEER, port: PORT });
    fwd.udpToTun();
    assert.equal(counters[C.dropRxUnknownSender], 2, 'a removed peer is a stranger');
  });

  test('a peer moving to a new public IP: the old address becomes a stranger', () => {
    const { udp, tun, fwd, counters } = setup();
    fwd.setRoutes(
      RoutingSnapshot.build([{ prefix: parseIPv4('10.244.2.0'), prefixLen: 24, publicIp: parseIPv4('192.0.2.22') }]),
    );
    udp.push({ data: fromPeer('10.244.2.2'), addr: PEER, port: PORT });
    fwd.udpToTun();
    assert.equal(tun.written.length, 0);
    assert.equal(counters[C.dropRxUnknownSender], 1);
  });
});

describe('batches and I/O edges', () => {
  test('a read returning fewer than the batch, then the rest', () => {
    const { tun, udp, fwd } = setup(3);
    tun.push(...Array.from({ length: 5 }, (_, i) => toPod('10.244.2.2', i)));
    assert.equal(fwd.tunToUdp(), 3);
    assert.equal(fwd.tunToUdp(), 2);
    assert.equal(fwd.tunToUdp(), 0, 'empty flannel0');
    assert.deepEqual(
      udp.sent.map((d) => d.data.readUInt16BE(4)),
      [0, 1, 2, 3, 4],
    );
  });

  test('more packets than a batch are taken batch by batch', () => {
    const { tun, udp, fwd, counters } = setup();
    tun.push(...Array.from({ length: BATCH * 2 + 1 }, (_, i) => toPod('10.244.2.2', i)));
    assert.equal(fwd.tunToUdp(), BATCH);
    assert.equal(fwd.tunToUdp(), BATCH);
    assert.equal(fwd.tunToUdp(), 1);
    assert.equal(udp.sent.length, BATCH * 2 + 1);
    assert.equal(udp.sendCalls, 3);
    assert.equal(counters[C.tunReadBatches], 3);
  });

  test('a failed read or receive counts an error and moves nothing', () => {
    const { tun, udp, fwd, counters } = setup();
    tun.failNextRead(EIO);
    tun.push(toPod('10.244.2.2'));
    assert.equal(fwd.tunToUdp(), 0);
    assert.equal(counters[C.tunReadErrors], 1);
    assert.equal(counters[C.tunReadPackets], 0);
    udp.failNextRecv(EIO);
    assert.equal(fwd.udpToTun(), 0);
    assert.equal(counters[C.udpRecvErrors], 1);
    assert.equal(fwd.tunToUdp(), 1, 'the queued packet comes with the next read');
    assert.equal(udp.sent.length, 1);
  });

  test('a failed send: counted as a send error, its bytes not counted as sent', () => {
    const { tun, udp, fwd, counters } = setup();
    const packets = [toPod('10.244.2.2', 0), toPod('10.244.2.2', 1), toPod('10.244.2.2', 2)];
    udp.failNextSends(ENOBUFS, 1);
    tun.push(...packets);
    fwd.tunToUdp();
    assert.equal(udp.sent.length, 2);
    assert.equal(counters[C.udpSentPackets], 2);
    assert.equal(counters[C.dropTxSendError], 1);
    assert.equal(counters[C.udpSentBytes], packets[1]!.length + packets[2]!.length);
    // The next batch is unaffected.
    tun.push(toPod('10.244.2.2', 3));
    fwd.tunToUdp();
    assert.equal(counters[C.udpSentPackets], 3);
    assert.equal(counters[C.dropTxSendError], 1);
  });

  test('a failed write to flannel0: counted as a write error', () => {
    const { tun, udp, fwd, counters } = setup();
    tun.failNextWrites(EIO, 2);
    udp.push(...[0, 1, 2].map((i) => ({ data: fromPeer('10.244.2.9', i), addr: PEER, port: PORT })));
    fwd.udpToTun();
    assert.equal(tun.written.length, 1);
    assert.equal(counters[C.tunWritePackets], 1);
    assert.equal(counters[C.dropRxWriteError], 2);
    assert.equal(counters[C.tunWriteBytes], tun.written[0]!.length);
  });

  test('a forwarded datagram: TTL - 1, checksum valid, the rest unchanged', () => {
    const { udp, tun, fwd } = setup();
    const p = fromPeer('10.244.2.9');
    udp.push({ data: p, addr: PEER, port: 12345 });
    fwd.udpToTun();
    const out = tun.written[0]!;
    assert.equal(out[8], p[8]! - 1);
    assert.equal(internetChecksum(out, 0, 20), 0);
    assert.deepEqual(out.subarray(12), p.subarray(12));
    assert.deepEqual(out.subarray(0, 8), p.subarray(0, 8));
  });
});

describe('GRO into flannel0 (tunGro)', () => {
  const PEER_SUBNET_HOST = parseIPv4('10.244.2.2');
  const POD = parseIPv4('10.244.1.2');
  // A run of full-size segments of one TCP flow from the peer's pod to ours: coalescable.
  const segment = (i: number) =>
    buildTcpPacket({
      src: PEER_SUBNET_HOST,
      dst: POD,
      ttl: 64,
      df: true,
      id: i,
      sport: 5201,
      dport: 40000,
      seq: 1000 + i * 1000,
      ack: 7,
      flags: 0x10,
      window: 512,
      payload: new Uint8Array(1000).fill(i),
    });

  function groSetup() {
    const slab = new PacketSlab({ slotSize: slotSizeFor(MTU), batch: BATCH });
    const tun = new FakeTun(slab),
      udp = new FakeUdp(slab),
      counters = newCounters();
    const fwd = new Forwarder(
      slab,
      tun,
      udp,
      {
        tunAddress: TUN_ADDRESS,
        subnetPrefix: TUN_ADDRESS,
        subnetLen: 24,
        port: PORT,
        mtu: MTU,
        tunGro: true,
      },
      counters,
    );
    fwd.setRoutes(RoutingSnapshot.build([{ prefix: parseIPv4('10.244.2.0'), prefixLen: 24, publicIp: PEER }]));
    const receive = (n: number) => {
      for (let i = 0; i < n; i++) udp.push({ data: segment(i), addr: PEER, port: PORT });
      fwd.udpToTun();
    };
    return { tun, counters, receive };
  }

  test('a run of one flow is written as one group and counted', () => {
    const { tun, counters, receive } = groSetup();
    receive(6);
    assert.deepEqual(tun.writeGroups, [[6, 0, 0, 0, 0, 0]]);
    assert.equal(counters[C.tunGroWrites], 1);
    assert.equal(counters[C.tunGroPackets], 6);
    assert.equal(counters[C.tunWritePackets], 6);
  });

  test('a transient write failure (ENOBUFS) loses those packets but keeps GRO on', () => {
    const { tun, counters, receive } = groSetup();
    tun.failNextWrites(105 /* ENOBUFS */, 1);
    receive(4);
    assert.equal(counters[C.tunGroFallbacks], 0);
    receive(4);
    assert.deepEqual(tun.writeGroups.at(-1), [4, 0, 0, 0]);
    assert.equal(counters[C.tunGroWrites], 1);
  });

  test('a refused super-packet turns GRO off: later batches are written plain', () => {
    const { tun, counters, receive } = groSetup();
    tun.failNextWrites(22 /* EINVAL */, 1);
    receive(4);
    assert.equal(counters[C.tunGroFallbacks], 1);
    assert.equal(counters[C.tunGroWrites], 0);
    assert.ok(counters[C.dropRxWriteError]! >= 1);
    receive(4);
    assert.deepEqual(tun.writeGroups.at(-1), null);
    assert.equal(counters[C.tunWritePackets], 3 + 4);
  });
});
