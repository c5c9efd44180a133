// Every packet the Forwarder must refuse: each gets exactly its drop counter, nothing is sent or
// written, and the forwarder keeps forwarding afterwards.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { COUNTER_NAMES, newCounters, type CounterName } from '../../src/datapath/counters.js';
import { Forwarder } from '../../src/datapath/forwarder.js';
import { PacketSlab, slotSizeFor } from '../../src/datapath/slab.js';
import { formatIPv4, parseIPv4 } from '../../src/routing-table/ipv4.js';
import { RoutingSnapshot } from '../../src/routing-table/snapshot.js';
import { FakeTun, FakeUdp } from '../helpers/fake-io.js';
import { buildIpv4, buildIpv4Udp, buildIpv6Like } from '../helpers/packets.js';

const MTU = 1472;
const PORT = 8285;
const PEER = parseIPv4('192.0.2.2'); // owns 10.244.2.0/24
const OTHER_PEER = parseIPv4('192.0.2.3'); // owns 10.244.3.0/24
const STRANGER = parseIPv4('198.51.100.7');

function setup() {
  const slab = new PacketSlab({ slotSize: slotSizeFor(MTU), batch: 8 });
  const tun = new FakeTun(slab);
  const udp = new FakeUdp(slab);
  const counters = newCounters();
  const fwd = new Forwarder(
    slab,
    tun,
    udp,
    {
      tunAddress: parseIPv4('10.244.1.0'),
      subnetPrefix: parseIPv4('10.244.1.0'),
      subnetLen: 24,
      port: PORT,
      mtu: MTU,
    },
    counters,
  );
  fwd.setRoutes(
    RoutingSnapshot.build([
      { prefix: parseIPv4('10.244.2.0'), prefixLen: 24, publicIp: PEER },
      { prefix: parseIPv4('10.244.3.0'), prefixLen: 24, publicIp: OTHER_PEER },
    ]),
  );
  return { slab, tun, udp, fwd, counters };
}
type Rig = ReturnType<typeof setup>;

/** The counters that moved since `before`, as name -> delta. */
function delta(counters: Float64Array, before: Float64Array): Partial<Record<CounterName, number>> {
  const out: Partial<Record<CounterName, number>> = {};
  COUNTER_NAMES.forEach((name, i) => {
    if (counters[i] !== before[i]) out[name] = counters[i]! - before[i]!;
  });
  return out;
}

function nonZero(counts: Partial<Record<CounterName, number>>): Partial<Record<CounterName, number>> {
  return Object.fromEntries(Object.entries(counts).filter(([, v]) => v !== 0));
}

/** An outgoing packet from our pod to p2 and an incoming one from p2 to our pod: both must pass. */
const outgoing = () =>
  buildIpv4Udp({ src: '10.244.1.2', dst: '10.244.2.2', srcPort: 1000, dstPort: 2000, data: Buffer.from('after') });
const incoming = () =>
  buildIpv4Udp({ src: '10.244.2.2', dst: '10.244.1.2', srcPort: 2000, dstPort: 1000, data: Buffer.from('after') });

function assertStillForwards(rig: Rig): void {
  const { tun, udp, fwd } = rig;
  const sent = udp.sent.length,
    written = tun.written.length;
  tun.push(outgoing());
  assert.equal(fwd.tunToUdp(), 1);
  assert.equal(udp.sent.length, sent + 1, 'a good packet is sent after the bad one');
  assert.equal(formatIPv4(udp.sent.at(-1)!.addr), '192.0.2.2');
  udp.push({ data: incoming(), addr: PEER, port: PORT });
  assert.equal(fwd.udpToTun(), 1);
  assert.equal(tun.written.length, written + 1, 'a good datagram is written after the bad one');
}

/** Feeds one packet from flannel0; requires exactly `drop` (plus the read counters) and no output. */
function refuseFromTun(packet: Uint8Array, drop: CounterName, icmpError?: CounterName): void {
  const rig = setup();
  const before = rig.counters.slice();
  rig.tun.push(packet);
  assert.equal(rig.fwd.tunToUdp(), 1);
  assert.deepEqual(
    delta(rig.counters, before),
    nonZero({
      tunReadPackets: 1,
      tunReadBytes: packet.length,
      tunReadBatches: 1,
      [drop]: 1,
      ...(icmpError !== undefined ? { [icmpError]: 1 } : {}),
    }),
  );
  assert.equal(rig.udp.sent.length, 0, 'nothing sent');
  assert.equal(rig.tun.written.length, icmpError === undefined ? 0 : 1, icmpError ?? 'nothing written');
  assertStillForwards(rig);
}

/** Feeds one datagram from addr; requires exactly `drop` (plus the receive counters) and no output. */
function refuseFromUdp(data: Uint8Array, drop: CounterName, addr = PEER): void {
  const rig = setup();
  const before = rig.counters.slice();
  rig.udp.push({ data, addr, port: PORT });
  assert.equal(rig.fwd.udpToTun(), 1);
  assert.deepEqual(
    delta(rig.counters, before),
    nonZero({
      udpRecvPackets: 1,
      udpRecvBytes: data.length,
      udpRecvBatches: 1,
      [drop]: 1,
    }),
  );
  assert.equal(rig.tun.written.length, 0, 'nothing written');
  assert.equal(rig.udp.sent.length, 0, 'nothing sent');
  assertStillForwards(rig);
}

/** Malformed variants of a packet src -> dst, each a fresh Buffer. */
function malformedVariants(src: string, dst: string): [string, Buffer][] {
  const good = () => buildIpv4Udp({ src, dst, srcPort: 1, dstPort: 2, data: Buffer.alloc(32, 7) });
  const edit = (f: (p: Buffer) => void): Buffer => {
    const p = good();
    f(p);
    return p;
  };
  return [
    ['empty', Buffer.alloc(0)],
    ['1 byte', Buffer.from([0x45])],
    ['19 bytes (a header cut short)', good().subarray(0, 19)],
    [
      'version 0',
      edit((p) => {
        p[0] = 0x05;
      }),
    ],
    [
      'version 5',
      edit((p) => {
        p[0] = 0x55;
      }),
    ],
    ['IPv6', buildIpv6Like()],
    [
      'IHL 4',
      edit((p) => {
        p[0] = 0x44;
      }),
    ],
    [
      'IHL 0',
      edit((p) => {
        p[0] = 0x40;
      }),
    ],
    [
      'IHL beyond the length',
      (() => {
        const p = Buffer.alloc(40);
        p[0] = 0x4f;
        p.writeUInt16BE(40, 2);
        p[8] = 64;
        return p;
      })(),
    ],
    [
      'total length larger than the bytes',
      edit((p) => {
        p.writeUInt16BE(p.length + 1, 2);
      }),
    ],
    [
      'total length smaller than the bytes',
      edit((p) => {
        p.writeUInt16BE(p.length - 4, 2);
      }),
    ],
    [
      'total length 0',
      edit((p) => {
        p.writeUInt16BE(0, 2);
      }),
    ],
  ];
}

describe('flannel0 -> UDP refuses', () => {
  for (const [name, packet] of malformedVariants('10.244.1.2', '10.244.2.2')) {
    test(`malformed: ${name}`, () => refuseFromTun(packet, 'dropTxMalformed'));
  }

  test('TTL 1 (answered with ICMP time exceeded; flannel sends none)', () => {
    refuseFromTun(
      buildIpv4Udp({ src: '10.244.1.2', dst: '10.244.2.2', ttl: 1, srcPort: 1, dstPort: 2, data: Buffer.alloc(8) }),
      'dropTxTtl',
      'icmpTimeExceededSent',
    );
  });

  test('TTL 0 (flannel would wrap it to 255 and forward it)', () => {
    refuseFromTun(
      buildIpv4Udp({ src: '10.244.1.2', dst: '10.244.2.2', ttl: 0, srcPort: 1, dstPort: 2, data: Buffer.alloc(8) }),
      'dropTxTtl',
      'icmpTimeExceededSent',
    );
  });

  test('an ICMP echo with TTL 1: dropped, no ICMP error about it (as flannel, for any ICMP)', () => {
    refuseFromTun(
      buildIpv4({ src: '10.244.1.2', dst: '10.244.2.2', ttl: 1, protocol: 1, payload: Buffer.alloc(64) }),
      'dropTxTtl',
    );
  });

  test('an ICMP packet with no route: dropped, no ICMP error about it', () => {
    refuseFromTun(
      buildIpv4({ src: '10.244.1.2', dst: '10.244.77.7', protocol: 1, payload: Buffer.alloc(64) }),
      'dropTxNoRoute',
    );
  });

  test('a packet for our own subnet has no route (flannel: net unreachable)', () => {
    const rig = setup();
    rig.tun.push(buildIpv4Udp({ src: '10.244.1.2', dst: '10.244.1.3', srcPort: 1, dstPort: 2, data: Buffer.alloc(8) }));
    rig.fwd.tunToUdp();
    assert.equal(rig.udp.sent.length, 0);
    assert.equal(rig.tun.written.length, 1, 'the ICMP error');
    assert.equal(rig.tun.written[0]![20], 3, 'destination unreachable');
  });
});

describe('UDP -> flannel0 refuses', () => {
  for (const [name, packet] of malformedVariants('10.244.2.2', '10.244.1.2')) {
    test(`malformed: ${name}`, () => refuseFromUdp(packet, 'dropRxMalformed'));
  }

  test('a datagram larger than the MTU, even if well-formed', () => {
    const p = buildIpv4Udp({
      src: '10.244.2.2',
      dst: '10.244.1.2',
      srcPort: 1,
      dstPort: 2,
      data: Buffer.alloc(MTU - 28 + 1),
    });
    assert.equal(p.length, MTU + 1);
    refuseFromUdp(p, 'dropRxOversize');
  });

  test('a datagram larger than a slot (truncated by the receive, lens is its real size)', () => {
    const p = buildIpv4Udp({ src: '10.244.2.2', dst: '10.244.1.2', srcPort: 1, dstPort: 2, data: Buffer.alloc(3000) });
    assert.ok(p.length > slotSizeFor(MTU));
    refuseFromUdp(p, 'dropRxOversize');
  });

  test('exactly the MTU is accepted', () => {
    const rig = setup();
    rig.udp.push({
      data: buildIpv4Udp({
        src: '10.244.2.2',
        dst: '10.244.1.2',
        srcPort: 1,
        dstPort: 2,
        data: Buffer.alloc(MTU - 28),
      }),
      addr: PEER,
      port: PORT,
    });
    rig.fwd.udpToTun();
    assert.equal(rig.tun.written.length, 1);
    assert.equal(rig.tun.written[0]!.length, MTU);
  });

  test('a datagram from a stranger (not any peer)', () => {
    refuseFromUdp(incoming(), 'dropRxUnknownSender', STRANGER);
  });

  test('a stranger using an address with no route as inner source', () => {
    refuseFromUdp(
      buildIpv4Udp({ src: '10.9.9.9', dst: '10.244.1.2', srcPort: 1, dstPort: 2, data: Buffer.alloc(8) }),
      'dropRxUnknownSender',
      STRANGER,
    );
  });

  test("a peer sending an inner source in another peer's subnet (spoofed)", () => {
    refuseFromUdp(
      buildIpv4Udp({ src: '10.244.3.5', dst: '10.244.1.2', srcPort: 1, dstPort: 2, data: Buffer.alloc(8) }),
      'dropRxSpoofedSource',
    );
  });

  test('a peer sending an inner source outside every subnet (spoofed)', () => {
    refuseFromUdp(
      buildIpv4Udp({ src: '8.8.8.8', dst: '10.244.1.2', srcPort: 1, dstPort: 2, data: Buffer.alloc(8) }),
      'dropRxSpoofedSource',
    );
  });

  test('a peer sending an inner source in our own subnet (spoofed)', () => {
    refuseFromUdp(
      buildIpv4Udp({ src: '10.244.1.9', dst: '10.244.1.2', srcPort: 1, dstPort: 2, data: Buffer.alloc(8) }),
      'dropRxSpoofedSource',
    );
  });

  test("inner destination in another peer's subnet (not for us)", () => {
    refuseFromUdp(
      buildIpv4Udp({ src: '10.244.2.2', dst: '10.244.3.9', srcPort: 1, dstPort: 2, data: Buffer.alloc(8) }),
      'dropRxNotForUs',
    );
  });

  test('inner destination outside the overlay (flannel would inject it)', () => {
    refuseFromUdp(
      buildIpv4Udp({ src: '10.244.2.2', dst: '99.99.99.99', srcPort: 1, dstPort: 2, data: Buffer.alloc(8) }),
      'dropRxNotForUs',
    );
  });

  test('TTL 1', () => {
    refuseFromUdp(
      buildIpv4Udp({ src: '10.244.2.2', dst: '10.244.1.2', ttl: 1, srcPort: 1, dstPort: 2, data: Buffer.alloc(8) }),
      'dropRxTtl',
    );
  });

  test('TTL 0 (flannel would wrap it to 255 and write it)', () => {
    refuseFromUdp(
      buildIpv4Udp({ src: '10.244.2.2', dst: '10.244.1.2', ttl: 0, srcPort: 1, dstPort: 2, data: Buffer.alloc(8) }),
      'dropRxTtl',
    );
  });
});

describe('a batch mixing every refusal with good packets', () => {
  test('flannel0 -> UDP: the good ones are sent in order, each bad one counted', () => {
    const rig = setup();
    const bad = malformedVariants('10.244.1.2', '10.244.2.2').map(([, p]) => p);
    const goods: Buffer[] = [];
    const queue: Buffer[] = [];
    for (const [i, p] of bad.entries()) {
      const g = buildIpv4Udp({
        src: '10.244.1.2',
        dst: i % 2 ? '10.244.2.2' : '10.244.3.3',
        srcPort: i,
        dstPort: 2,
        data: Buffer.from([i]),
      });
      goods.push(g);
      queue.push(p, g);
    }
    rig.tun.push(...queue);
    let read = 0;
    while (rig.tun.inbound.length > 0) read += rig.fwd.tunToUdp();
    assert.equal(read, queue.length);
    assert.equal(rig.counters[COUNTER_NAMES.indexOf('dropTxMalformed')], bad.length);
    assert.equal(rig.udp.sent.length, goods.length);
    for (const [i, s] of rig.udp.sent.entries()) {
      assert.equal(s.data[8], 63, 'TTL decremented');
      assert.deepEqual(s.data.subarray(12), goods[i]!.subarray(12), `packet ${i} unchanged past the checksum`);
      assert.equal(formatIPv4(s.addr), i % 2 ? '192.0.2.2' : '192.0.2.3');
      assert.equal(s.port, PORT);
    }
  });
});
