// Per-peer counters (src/datapath/peer-counters.ts): the Forwarder counts every datagram sent to a peer route and
// every packet from it written to flannel0, with bytes, and the drops after the route is known; a route swap
// carries the counts of the routes that stay, per direction, and a removed route's counts go.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { newCounters } from '../../src/datapath/counters.js';
import { Forwarder } from '../../src/datapath/forwarder.js';
import { P, PEER_FIELDS, carryPeerCounters, newPeerCounters, peerTotals } from '../../src/datapath/peer-counters.js';
import { PacketSlab, slotSizeFor } from '../../src/datapath/slab.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';
import { RoutingSnapshot, type Route } from '../../src/routing-table/snapshot.js';
import { EIO, ENOBUFS, FakeTun, FakeUdp } from '../helpers/fake-io.js';
import { buildIpv4Udp } from '../helpers/packets.js';

const MTU = 1472;
const OWN = parseIPv4('10.244.1.0');
const route = (subnet: string, publicIp: string): Route => ({
  prefix: parseIPv4(subnet),
  prefixLen: 24,
  publicIp: parseIPv4(publicIp),
});
const R2 = route('10.244.2.0', '192.0.2.2');
const R3 = route('10.244.3.0', '192.0.2.3');

function setup(routes: Route[]) {
  const slab = new PacketSlab({ slotSize: slotSizeFor(MTU), batch: 8 });
  const tun = new FakeTun(slab);
  const udp = new FakeUdp(slab);
  const fwd = new Forwarder(
    slab,
    tun,
    udp,
    { tunAddress: OWN, subnetPrefix: OWN, subnetLen: 24, port: 8285, mtu: MTU },
    newCounters(),
  );
  fwd.setRoutes(RoutingSnapshot.build(routes));
  return { tun, udp, fwd };
}

const toPod = (dst: string, size: number, ttl = 64) =>
  buildIpv4Udp({ src: '10.244.1.2', dst, ttl, srcPort: 1, dstPort: 2, data: Buffer.alloc(size) });
const fromPod = (src: string, dst: string, size: number, ttl = 64) =>
  buildIpv4Udp({ src, dst, ttl, srcPort: 2, dstPort: 1, data: Buffer.alloc(size) });

describe('per-peer counters', () => {
  test('sent datagrams and bytes per route; a TTL drop and a send error count against their route', () => {
    const { tun, udp, fwd } = setup([R2, R3]);
    tun.push(toPod('10.244.2.5', 100), toPod('10.244.2.6', 200), toPod('10.244.3.5', 300), toPod('10.244.3.6', 1, 1));
    tun.push(toPod('10.244.9.9', 10)); // no route: counted globally, never per peer
    fwd.tunToUdp();
    const counts = fwd.peerCounters;
    assert.deepEqual(peerTotals(counts, 0), {
      sentPackets: 2,
      sentBytes: 128 + 228,
      sentDrops: 0,
      receivedPackets: 0,
      receivedBytes: 0,
      receivedDrops: 0,
    });
    assert.equal(peerTotals(counts, 1).sentPackets, 1);
    assert.equal(peerTotals(counts, 1).sentBytes, 328);
    assert.equal(peerTotals(counts, 1).sentDrops, 1, 'the TTL-1 packet');
    udp.failNextSends(ENOBUFS, 1);
    tun.push(toPod('10.244.3.7', 50));
    fwd.tunToUdp();
    assert.equal(peerTotals(counts, 1).sentDrops, 2, 'the refused send');
    assert.equal(peerTotals(counts, 1).sentPackets, 1);
  });

  test('received packets and bytes per route, from the right peer only; drops after the sender check', () => {
    const { tun, udp, fwd } = setup([R2, R3]);
    udp.push(
      { data: fromPod('10.244.2.5', '10.244.1.2', 100), addr: R2.publicIp, port: 8285 },
      { data: fromPod('10.244.3.5', '10.244.1.2', 50), addr: R3.publicIp, port: 8285 },
      { data: fromPod('10.244.3.5', '10.244.1.2', 50), addr: R2.publicIp, port: 8285 }, // spoofed: not per peer
      { data: fromPod('10.244.2.5', '10.244.7.2', 10), addr: R2.publicIp, port: 8285 }, // not for us
      { data: fromPod('10.244.2.5', '10.244.1.2', 10, 1), addr: R2.publicIp, port: 8285 }, // TTL
    );
    fwd.udpToTun();
    const counts = fwd.peerCounters;
    assert.equal(peerTotals(counts, 0).receivedPackets, 1);
    assert.equal(peerTotals(counts, 0).receivedBytes, 128);
    assert.equal(peerTotals(counts, 0).receivedDrops, 2);
    assert.equal(peerTotals(counts, 1).receivedPackets, 1);
    assert.equal(peerTotals(counts, 1).receivedBytes, 78);
    assert.equal(peerTotals(counts, 1).receivedDrops, 0);
    tun.failNextWrites(EIO, 1);
    udp.push({ data: fromPod('10.244.3.5', '10.244.1.2', 50), addr: R3.publicIp, port: 8285 });
    fwd.udpToTun();
    assert.equal(peerTotals(counts, 1).receivedDrops, 1, 'the failed write');
    assert.equal(peerTotals(counts, 1).receivedPackets, 1);
  });

  test('a route swap carries the counts of the routes that stay, to their new indices; a removed route goes', () => {
    const before = RoutingSnapshot.build([R2, R3]);
    const old = newPeerCounters(2);
    for (let f = 0; f < PEER_FIELDS; f++) {
      old[0 * PEER_FIELDS + f] = 10 + f;
      old[1 * PEER_FIELDS + f] = 20 + f;
    }
    const R4 = route('10.244.4.0', '192.0.2.4');
    const R3moved = route('10.244.3.0', '192.0.2.33'); // same subnet, new PublicIP: a new series
    const after = RoutingSnapshot.build([R4, R3moved, R2]);
    const next = newPeerCounters(3);
    carryPeerCounters(before, old, after, next, 'both');
    const at = (snapshot: RoutingSnapshot, r: Route) =>
      snapshot.routes.findIndex((x) => x.prefix === r.prefix && x.publicIp === r.publicIp);
    assert.equal(peerTotals(next, at(after, R2)).sentPackets, 10);
    assert.equal(peerTotals(next, at(after, R2)).receivedDrops, 15);
    assert.equal(peerTotals(next, at(after, R3moved)).sentPackets, 0);
    assert.equal(peerTotals(next, at(after, R4)).sentPackets, 0);
  });

  test('a lane per direction carries only its own fields into a shared array', () => {
    const before = RoutingSnapshot.build([R2]);
    const old = newPeerCounters(1);
    old.fill(7);
    const after = RoutingSnapshot.build([R2, R3]);
    const shared = newPeerCounters(2, true);
    carryPeerCounters(before, old, after, shared, 'tx');
    const i = after.routes.findIndex((x) => x.prefix === R2.prefix);
    assert.deepEqual(
      [...shared.subarray(i * PEER_FIELDS, (i + 1) * PEER_FIELDS)],
      [7, 7, 7, 0, 0, 0],
      'tx fields only',
    );
    carryPeerCounters(before, old, after, shared, 'rx');
    assert.equal(shared[i * PEER_FIELDS + P.rxBytes], 7);
  });
});
