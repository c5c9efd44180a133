// ICMP errors written back into flannel0: time exceeded for a TTL that runs out here, and the rate
// limit (per destination, and overall) that holds both kinds back under a flood.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { C, newCounters } from '../../src/datapath/counters.js';
import { Forwarder } from '../../src/datapath/forwarder.js';
import { IcmpRateLimiter, KERNEL_ICMP_RATE_LIMIT } from '../../src/datapath/icmp-rate-limit.js';
import { PacketSlab, slotSizeFor } from '../../src/datapath/slab.js';
import { formatIPv4, parseIPv4 } from '../../src/routing-table/ipv4.js';
import { RoutingSnapshot } from '../../src/routing-table/snapshot.js';
import { EIO, FakeTun, FakeUdp } from '../helpers/fake-io.js';
import { buildIpv4Udp, internetChecksum } from '../helpers/packets.js';

const TUN_ADDRESS = parseIPv4('10.244.1.0');

function setup(batch = 64) {
  const slab = new PacketSlab({ slotSize: slotSizeFor(1472), batch });
  const tun = new FakeTun(slab);
  const udp = new FakeUdp(slab);
  const counters = newCounters();
  const clock = { ms: 1_000_000 };
  const fwd = new Forwarder(
    slab,
    tun,
    udp,
    { tunAddress: TUN_ADDRESS, subnetPrefix: TUN_ADDRESS, subnetLen: 24, port: 8285, mtu: 1472, nowMs: () => clock.ms },
    counters,
  );
  fwd.setRoutes(
    RoutingSnapshot.build([{ prefix: parseIPv4('10.244.2.0'), prefixLen: 24, publicIp: parseIPv4('192.0.2.2') }]),
  );
  return { tun, udp, fwd, counters, clock };
}

const packet = (src: string, dst: string, ttl = 64, i = 0) =>
  buildIpv4Udp({ src, dst, ttl, srcPort: 33434 + i, dstPort: 33434, id: i, data: Buffer.alloc(16) });

describe('ICMP time exceeded', () => {
  test('a UDP packet with TTL 1 for a peer: type 11 code 0 from flannel0 to the sender, quoting it', () => {
    const { tun, udp, fwd, counters } = setup();
    const offender = packet('10.244.1.2', '10.244.2.9', 1, 7);
    tun.push(offender);
    fwd.tunToUdp();
    assert.equal(udp.sent.length, 0);
    assert.equal(tun.written.length, 1);
    const icmp = tun.written[0]!;
    assert.equal(icmp[9], 1, 'ICMP');
    assert.equal(formatIPv4(icmp.readUInt32BE(12)), '10.244.1.0', 'from flannel0');
    assert.equal(formatIPv4(icmp.readUInt32BE(16)), '10.244.1.2', 'to the sender');
    assert.equal(icmp[20], 11, 'time exceeded');
    assert.equal(icmp[21], 0, 'in transit');
    assert.deepEqual(icmp.subarray(28), offender.subarray(0, 28), 'quotes the header (TTL as received) and 8 bytes');
    assert.equal(internetChecksum(icmp, 0, 20), 0);
    assert.equal(internetChecksum(icmp, 20, icmp.length - 20), 0);
    assert.equal(counters[C.dropTxTtl], 1);
    assert.equal(counters[C.icmpTimeExceededSent], 1);
    assert.equal(counters[C.icmpUnreachableSent], 0);
  });

  test('not written: counted as failed, not as sent', () => {
    const { tun, fwd, counters } = setup();
    tun.failNextWrites(EIO, 1);
    tun.push(packet('10.244.1.2', '10.244.2.9', 1));
    fwd.tunToUdp();
    assert.equal(counters[C.icmpTimeExceededSent], 0);
    assert.equal(counters[C.icmpTimeExceededFailed], 1);
  });
});

describe('ICMP rate limit', () => {
  test('a flood from one pod: a burst of 6, then one a second; another pod is not held back', () => {
    const { tun, fwd, counters, clock } = setup();
    const flood = Array.from({ length: 64 }, (_, i) => packet('10.244.1.2', '10.244.77.7', 64, i));
    tun.push(...flood);
    fwd.tunToUdp();
    assert.equal(counters[C.dropTxNoRoute], 64);
    assert.equal(counters[C.icmpUnreachableSent], 6, 'the burst');
    assert.equal(counters[C.icmpRateLimited], 58);
    // TTL-exceeded errors to the same pod share its bucket.
    tun.push(packet('10.244.1.2', '10.244.2.9', 1));
    fwd.tunToUdp();
    assert.equal(counters[C.icmpTimeExceededSent], 0);
    // Another pod still gets its errors.
    tun.push(packet('10.244.1.3', '10.244.77.7'));
    fwd.tunToUdp();
    assert.equal(counters[C.icmpUnreachableSent], 7);
    // 2.5 s later: two more tokens for the flooding pod.
    clock.ms += 2500;
    tun.push(...flood.slice(0, 10));
    fwd.tunToUdp();
    assert.equal(counters[C.icmpUnreachableSent], 9);
    assert.equal(tun.written.length, 9, 'only what was sent was written');
  });

  test('overall: 50 in a burst, then 1,000 a second, across destinations', () => {
    const limiter = new IcmpRateLimiter(KERNEL_ICMP_RATE_LIMIT);
    let allowed = 0;
    for (let i = 0; i < 200; i++) if (limiter.allow(parseIPv4('10.244.1.0') + i, 0)) allowed++;
    assert.equal(allowed, 50);
    allowed = 0;
    for (let i = 0; i < 200; i++) if (limiter.allow(parseIPv4('10.245.1.0') + i, 10)) allowed++;
    assert.equal(allowed, 10, '10 ms at 1,000 a second');
  });

  test('per destination, like the kernel: 6 in a burst, then one per second', () => {
    const limiter = new IcmpRateLimiter();
    const pod = parseIPv4('10.244.1.2');
    const at = (ms: number, n: number) =>
      Array.from({ length: n }, () => limiter.allow(pod, ms)).filter(Boolean).length;
    assert.equal(at(0, 10), 6);
    assert.equal(at(999, 5), 0);
    assert.equal(at(1000, 5), 1);
    assert.equal(at(60_000, 10), 6, 'a quiet minute refills the burst, no more');
  });
});
