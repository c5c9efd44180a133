// The datapath's latency histograms: the bucket arithmetic, and residence / wait / work timed
// through the Forwarder with a fake clock (the fakes stamp arrivals and call returns as the shim does).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { newCounters } from '../../src/datapath/counters.js';
import { Forwarder } from '../../src/datapath/forwarder.js';
import {
  L,
  LATENCY_BUCKETS,
  SERIES_STRIDE,
  addLatency,
  bucketOf,
  bucketUpperBound,
  newLatency,
  quantileUs,
  record,
  summarize,
} from '../../src/datapath/latency.js';
import { PacketSlab, SUPER_SLOT_SIZE, slotSizeFor } from '../../src/datapath/slab.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';
import { RoutingSnapshot } from '../../src/routing-table/snapshot.js';
import { renderMetrics } from '../../src/observability/metrics.js';
import { FakeClock, FakeTun, FakeUdp } from '../helpers/fake-io.js';
import { buildIpv4Udp } from '../helpers/packets.js';
import { buildTcpPacket, partialChecksum } from '../helpers/tcp-segments.js';

const MTU = 1472;
const PORT = 8285;
const OWN = parseIPv4('10.244.1.0');
const PEER = parseIPv4('192.0.2.2');

function setup() {
  const slab = new PacketSlab({
    slotSize: slotSizeFor(MTU),
    batch: 8,
    readSlotSize: SUPER_SLOT_SIZE,
    receiveSlotSize: SUPER_SLOT_SIZE,
  });
  const clock = new FakeClock();
  const tun = new FakeTun(slab, { clock }),
    udp = new FakeUdp(slab, { clock }),
    latency = newLatency();
  const config = { tunAddress: OWN, subnetPrefix: OWN, subnetLen: 24, port: PORT, mtu: MTU, tunGro: true };
  const fwd = new Forwarder(slab, tun, udp, config, newCounters(), latency);
  fwd.setRoutes(RoutingSnapshot.build([{ prefix: parseIPv4('10.244.2.0'), prefixLen: 24, publicIp: PEER }]));
  return { clock, tun, udp, fwd, latency };
}

const toPeerPod = (dst: string, i = 0) =>
  buildIpv4Udp({ src: '10.244.1.2', dst, srcPort: 40000 + i, dstPort: 53, id: i, data: Buffer.from(`packet ${i}`) });
const fromPeerPod = (i = 0) =>
  buildIpv4Udp({
    src: '10.244.2.2',
    dst: '10.244.1.2',
    srcPort: 53,
    dstPort: 40000 + i,
    id: i,
    data: Buffer.from('r'),
  });

describe('latency buckets', () => {
  test('every duration lands in the bucket whose bounds hold it, buckets in order', () => {
    let lower = 0;
    for (let b = 0; b < LATENCY_BUCKETS; b++) {
      const upper = bucketUpperBound(b);
      assert.ok(upper > lower, `bucket ${b}`);
      for (const us of [lower, (lower + upper) / 2, upper - 0.5]) assert.equal(bucketOf(us), b, `${us} µs`);
      lower = upper;
    }
    assert.equal(bucketOf(-5), 0);
    assert.equal(bucketOf(Number.NaN), 0);
    assert.equal(bucketOf(1e12), LATENCY_BUCKETS - 1, 'beyond the last bound: the last bucket');
    assert.ok(bucketUpperBound(LATENCY_BUCKETS - 1) >= 2 ** 24);
  });

  test('buckets above 8 µs are at most a quarter octave wide', () => {
    for (let b = 9; b < LATENCY_BUCKETS; b++) {
      const ratio = bucketUpperBound(b) / bucketUpperBound(b - 1);
      assert.ok(ratio <= 1.25 + 1e-9, `bucket ${b}: ${ratio}`);
    }
  });

  test('quantiles, sums and merging', () => {
    const a = newLatency(),
      b = newLatency();
    for (let i = 1; i <= 99; i++) record(a, L.txResidence, 10);
    record(b, L.txResidence, 5000);
    addLatency(a, b);
    const s = summarize(a, L.txResidence);
    assert.equal(s.count, 100);
    assert.equal(s.avgUs, (99 * 10 + 5000) / 100);
    assert.equal(s.p50Us, bucketUpperBound(bucketOf(10)));
    assert.equal(s.p99Us, bucketUpperBound(bucketOf(10)));
    assert.equal(s.maxUs, bucketUpperBound(bucketOf(5000)));
    assert.ok(s.maxUs > 5000 && s.maxUs <= 5000 * 1.25);
    assert.equal(quantileUs(a, L.rxResidence, 0.99), 0, 'an empty series');
  });
});

describe('residence, wait and work through the Forwarder (fake clock)', () => {
  test('flannel0 -> UDP: per packet sent from arrival to the send return; wait and work per batch', () => {
    const { clock, tun, udp, fwd, latency } = setup();
    clock.now = 1000;
    tun.push(toPeerPod('10.244.2.2', 0), toPeerPod('10.244.2.3', 1));
    clock.now = 1030;
    tun.push(toPeerPod('10.244.2.4', 2));
    clock.now = 1100; // the agent wakes up
    clock.readCostUs = 4;
    clock.writeCostUs = 20;
    assert.equal(fwd.tunToUdp(), 3);
    assert.equal(udp.sent.length, 3);
    // Read returns at 1104, the send at 1124.
    const res = summarize(latency, L.txResidence);
    assert.equal(res.count, 3);
    assert.equal(latency[L.txResidence * SERIES_STRIDE + 1], 124 + 124 + 94, 'sum of µs');
    assert.equal(latency[L.txWait * SERIES_STRIDE], 1, 'one batch');
    assert.equal(latency[L.txWait * SERIES_STRIDE + 1], 104, 'first packet: arrival to read return');
    assert.equal(latency[L.txWork * SERIES_STRIDE + 1], 20, 'read return to send return');
    assert.equal(summarize(latency, L.rxResidence).count, 0, 'nothing the other way');
  });

  test('dropped packets are not timed; an ICMP error is not a packet carried out', () => {
    const { clock, tun, fwd, latency } = setup();
    clock.writeCostUs = 7;
    tun.push(toPeerPod('10.244.99.1'), toPeerPod('10.244.2.2'));
    clock.now = 50;
    fwd.tunToUdp();
    assert.equal(summarize(latency, L.txResidence).count, 1);
    assert.equal(latency[L.txResidence * SERIES_STRIDE + 1], 57);
  });

  test('a batch with nothing sent records its wait but no work', () => {
    const { clock, tun, fwd, latency } = setup();
    tun.push(toPeerPod('10.244.99.1'));
    clock.now = 10;
    fwd.tunToUdp();
    assert.equal(latency[L.txWait * SERIES_STRIDE], 1);
    assert.equal(latency[L.txWork * SERIES_STRIDE], 0);
    assert.equal(latency[L.txResidence * SERIES_STRIDE], 0);
  });

  test('every segment of a TSO super-packet carries the super-packet arrival', () => {
    const { clock, tun, udp, fwd, latency } = setup();
    const own = parseIPv4('10.244.1.2'),
      dst = parseIPv4('10.244.2.2');
    const p = buildTcpPacket({
      src: own,
      dst,
      ttl: 64,
      df: true,
      id: 1,
      sport: 40000,
      dport: 5201,
      seq: 1,
      ack: 1,
      flags: 0x18,
      window: 500,
      payload: new Uint8Array(10 * 1000).fill(7),
    });
    new DataView(p.buffer).setUint16(20 + 16, partialChecksum(own, dst, 6, p.length - 20));
    const hdr = new Uint8Array(10);
    const v = new DataView(hdr.buffer);
    hdr[0] = 1; // NEEDS_CSUM
    hdr[1] = 1; // GSO_TCPV4
    v.setUint16(2, 40, true);
    v.setUint16(4, 1000, true);
    v.setUint16(6, 20, true);
    v.setUint16(8, 16, true);
    clock.now = 200;
    tun.pushOffloaded(p, hdr);
    clock.now = 260;
    clock.writeCostUs = 15;
    fwd.tunToUdp();
    assert.equal(udp.sent.length, 10);
    const res = summarize(latency, L.txResidence);
    assert.equal(res.count, 10, 'one per datagram carried out');
    assert.equal(latency[L.txResidence * SERIES_STRIDE + 1], 10 * 75);
  });

  test('UDP -> flannel0: from the kernel receive stamp to the write return, GRO runs per datagram', () => {
    const { clock, udp, fwd, latency } = setup();
    clock.now = 5000;
    udp.push({ data: fromPeerPod(1), addr: PEER, port: PORT });
    const a = fromPeerPod(2),
      b = fromPeerPod(3);
    udp.push({ data: Buffer.concat([a, b]), addr: PEER, port: PORT, segSize: a.length });
    udp.push({ data: fromPeerPod(4), addr: parseIPv4('192.0.2.99'), port: PORT }); // a stranger: dropped
    clock.now = 5200;
    clock.readCostUs = 2;
    clock.writeCostUs = 8;
    assert.equal(fwd.udpToTun(), 3);
    const res = summarize(latency, L.rxResidence);
    assert.equal(res.count, 3, 'one datagram and a run of two, the stranger not');
    assert.equal(res.avgUs, 210);
    assert.equal(latency[L.rxWait * SERIES_STRIDE + 1], 202);
    assert.equal(latency[L.rxWork * SERIES_STRIDE + 1], 8);
  });

  test('the metrics exposition carries cumulative histograms per direction', () => {
    const { clock, tun, udp, fwd, latency } = setup();
    clock.writeCostUs = 300;
    tun.push(toPeerPod('10.244.2.2'));
    fwd.tunToUdp();
    udp.push({ data: fromPeerPod(1), addr: PEER, port: PORT });
    clock.writeCostUs = 3;
    fwd.udpToTun();
    const text = renderMetrics({ counters: newCounters(), routes: () => [], lease: () => null, latency });
    assert.match(text, /# TYPE flannel_ts_datapath_residence_seconds histogram/);
    assert.match(text, /flannel_ts_datapath_residence_seconds_bucket\{direction="tx",le="0\.000256"\} 0\n/);
    assert.match(text, /flannel_ts_datapath_residence_seconds_bucket\{direction="tx",le="0\.000512"\} 1\n/);
    assert.match(text, /flannel_ts_datapath_residence_seconds_bucket\{direction="rx",le="0\.000004"\} 1\n/);
    assert.match(text, /flannel_ts_datapath_residence_seconds_bucket\{direction="tx",le="\+Inf"\} 1\n/);
    assert.match(text, /flannel_ts_datapath_residence_seconds_sum\{direction="tx"\} 0\.0003\n/);
    assert.match(text, /flannel_ts_datapath_residence_seconds_count\{direction="rx"\} 1\n/);
    assert.match(text, /flannel_ts_datapath_work_seconds_count\{direction="rx"\} 1\n/);
  });
});
