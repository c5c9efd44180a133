// Every counter belongs to one direction, and only that direction's loop writes it (but the lane's
// busy-polling counts, SPIN_COUNTERS, which no Forwarder writes): what the
// metrics' direction labels and --workers 2 rely on (each worker's lane counts one direction in
// its own array; the agent reports their sum). A Forwarder is driven through traffic that reaches
// every counter (plain, TSO and USO packets, partial checksums, every drop, I/O errors, UDP GRO runs,
// coalesced writes and their fallback); after each call, the counters that changed must all be of
// the direction called. Then the same traffic through two Forwarders, one per direction, on their
// own slabs and counters (the worker-lanes arrangement) must add up to the very same counters.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  COUNTER_NAMES,
  SPIN_COUNTERS,
  countersToObject,
  newCounters,
  type CounterName,
} from '../../src/datapath/counters.js';
import { Forwarder } from '../../src/datapath/forwarder.js';
import { KERNEL_ICMP_RATE_LIMIT } from '../../src/datapath/icmp-rate-limit.js';
import { PacketSlab, SUPER_SLOT_SIZE, slotSizeFor } from '../../src/datapath/slab.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';
import { RoutingSnapshot } from '../../src/routing-table/snapshot.js';
import { EIO, ENOBUFS, FakeTun, FakeUdp, MIX_HOST, mixRoutes, mixedTraffic } from '../helpers/fake-io.js';
import { buildTcpPacket, buildUdpPacket, partialChecksum } from '../helpers/tcp-segments.js';

/** The counters of UDP -> flannel0 (Forwarder.udpToTun); every other one is flannel0 -> UDP's. */
const RX_COUNTER_NAMES: ReadonlySet<CounterName> = new Set<CounterName>([
  'udpRecvPackets',
  'udpRecvBytes',
  'tunWritePackets',
  'tunWriteBytes',
  'dropRxMalformed',
  'dropRxOversize',
  'dropRxUnknownSender',
  'dropRxSpoofedSource',
  'dropRxNotForUs',
  'dropRxTtl',
  'dropRxWriteError',
  'tunGroWrites',
  'tunGroPackets',
  'tunGroFallbacks',
  'udpGroRuns',
  'udpGroDatagrams',
  'udpRecvBatches',
  'udpRecvErrors',
]);

const BATCH = 16;
/** The ICMP rate limit's clock: an hour passes before each step, so each starts with full buckets. */
let clockMs = 0;
const STEP_GAP_MS = 3_600_000;
const EINVAL = 22;
const OWN_POD = (MIX_HOST.subnetPrefix | 2) >>> 0; // 10.244.1.2
const PEER = parseIPv4('192.0.2.2'); // owns 10.244.2.0/24 in mixRoutes()
const PEER_POD = parseIPv4('10.244.2.9');
const NO_ROUTE_POD = parseIPv4('10.244.77.7');
const TIMESTAMPS = Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
const GSO_SIZE = MIX_HOST.mtu - 20 - 32;

/**
 * Counters no traffic through the fakes can reach. Empty: every counter is reached below. A
 * counter added to COUNTER_NAMES without traffic for it makes the coverage test fail until it is
 * either reached or listed here (with the reason).
 */
const UNREACHABLE: readonly CounterName[] = [];

/** The lane's busy-polling counts: copied from the shim by the lane, never written by a Forwarder. */
const isSpinCounter = (name: CounterName): boolean => (SPIN_COUNTERS as readonly CounterName[]).includes(name);

type Direction = 'tx' | 'rx';

interface Io {
  tun: FakeTun;
  udp: FakeUdp;
}

/** One step of the traffic: queue input (and faults) on the fakes, then drive one direction until it is idle. */
interface Step {
  readonly name: string;
  readonly direction: Direction;
  prepare(io: Io): void;
}

function newSlab(): PacketSlab {
  return new PacketSlab({
    slotSize: slotSizeFor(MIX_HOST.mtu),
    batch: BATCH,
    readSlotSize: SUPER_SLOT_SIZE,
    receiveSlotSize: SUPER_SLOT_SIZE,
  });
}

function newForwarder(counters: Float64Array): Io & { fwd: Forwarder } {
  const slab = newSlab();
  const tun = new FakeTun(slab),
    udp = new FakeUdp(slab);
  const fwd = new Forwarder(
    slab,
    tun,
    udp,
    { ...MIX_HOST, tunGro: true, icmpRateLimit: KERNEL_ICMP_RATE_LIMIT, nowMs: () => clockMs },
    counters,
  );
  fwd.setRoutes(RoutingSnapshot.build(mixRoutes()));
  return { tun, udp, fwd };
}

/** A little-endian virtio_net_hdr. */
function vnetHdr(
  flags: number,
  gsoType: number,
  hdrLen: number,
  gsoSize: number,
  csumStart: number,
  csumOffset: number,
): Uint8Array {
  const b = new Uint8Array(10);
  const v = new DataView(b.buffer);
  b[0] = flags;
  b[1] = gsoType;
  v.setUint16(2, hdrLen, true);
  v.setUint16(4, gsoSize, true);
  v.setUint16(6, csumStart, true);
  v.setUint16(8, csumOffset, true);
  return b;
}

/** A TSO super-packet from our pod (partial TCP checksum) and its virtio-net header. */
function superPacket(payload: number, dst = PEER_POD): { packet: Uint8Array; hdr: Uint8Array } {
  const packet = buildTcpPacket({
    src: OWN_POD,
    dst,
    ttl: 64,
    df: true,
    id: 7,
    sport: 40000,
    dport: 5201,
    seq: 1,
    ack: 77,
    flags: 0x18,
    window: 500,
    tcpOptions: TIMESTAMPS,
    payload: Uint8Array.from({ length: payload }, (_, i) => (i * 7 + 3) & 0xff),
  });
  new DataView(packet.buffer).setUint16(20 + 16, partialChecksum(OWN_POD, dst, 6, packet.length - 20));
  return { packet, hdr: vnetHdr(1, 1, 52, GSO_SIZE, 20, 16) };
}

/** A plain TCP packet from our pod with `payload` bytes. */
function plainToPeer(payload: number, dst = PEER_POD): Uint8Array {
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
    payload: new Uint8Array(payload).fill(1),
  });
}

/** Consecutive full segments of one TCP flow from the peer's pod to ours: a UDP GRO run, and coalescable into flannel0.
 * */
function flowSegments(count: number, firstSeq: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) =>
    buildTcpPacket({
      src: PEER_POD,
      dst: OWN_POD,
      ttl: 64,
      df: true,
      id: i,
      sport: 5201,
      dport: 40000,
      seq: firstSeq + i * 1000,
      ack: 7,
      flags: 0x10,
      window: 512,
      payload: new Uint8Array(1000).fill(i),
    }),
  );
}

const ttlOneToPeer = () =>
  buildUdpPacket({
    src: OWN_POD,
    dst: PEER_POD,
    sport: 33434,
    dport: 33435,
    payload: new Uint8Array(12),
    ttl: 1,
    check: 0,
  });

const fromPeer = (i: number) =>
  buildUdpPacket({
    src: PEER_POD,
    dst: OWN_POD,
    sport: 53,
    dport: 40000 + i,
    payload: new Uint8Array(20 + i),
    ttl: 64,
    check: 0,
  });

const STEPS: readonly Step[] = [
  {
    // Forwarded packets (small and full-MTU) with no-route (-> ICMP), TTL 1 and malformed drops among them.
    name: 'mixed traffic from flannel0',
    direction: 'tx',
    prepare: ({ tun }) => tun.push(...mixedTraffic(5 * BATCH).tunPackets),
  },
  {
    name: 'mixed datagrams: strangers, spoofed sources, not for us, TTL 1, oversize',
    direction: 'rx',
    prepare: ({ udp }) => udp.push(...mixedTraffic(5 * BATCH).udpDatagrams),
  },
  {
    name: 'a plain packet over the MTU, a partial checksum to complete, offloads we cannot handle',
    direction: 'tx',
    prepare: ({ tun }) => {
      tun.push(plainToPeer(MIX_HOST.mtu));
      const udpPacket = buildUdpPacket({
        src: OWN_POD,
        dst: PEER_POD,
        sport: 5353,
        dport: 53,
        payload: Uint8Array.from([1, 2, 3, 4, 5]),
        ttl: 64,
        check: partialChecksum(OWN_POD, PEER_POD, 17, 8 + 5),
      });
      tun.pushOffloaded(udpPacket, vnetHdr(1, 0, 0, 0, 20, 6));
      const { packet } = superPacket(3 * GSO_SIZE);
      tun.pushOffloaded(packet, vnetHdr(1, 3 /* UFO */, 52, GSO_SIZE, 20, 16));
    },
  },
  {
    name: 'a malformed datagram from a peer',
    direction: 'rx',
    prepare: ({ udp }) => {
      const p = fromPeer(0);
      p[0] = 0x65; // IP version 6
      udp.push({ data: p, addr: PEER, port: MIX_HOST.port });
    },
  },
  {
    name: 'TSO super-packets, one with no route',
    direction: 'tx',
    prepare: ({ tun }) => {
      const a = superPacket(20000),
        b = superPacket(5000, NO_ROUTE_POD);
      tun.pushOffloaded(a.packet, a.hdr);
      tun.pushOffloaded(b.packet, b.hdr);
    },
  },
  {
    name: 'a USO super-packet (UDP GSO from our pod)',
    direction: 'tx',
    prepare: ({ tun }) => {
      const payload = Uint8Array.from({ length: 2500 }, (_, i) => i & 0xff);
      const packet = buildUdpPacket({
        src: OWN_POD,
        dst: PEER_POD,
        sport: 4433,
        dport: 443,
        payload,
        ttl: 64,
        check: partialChecksum(OWN_POD, PEER_POD, 17, 8 + payload.length),
      });
      tun.pushOffloaded(packet, vnetHdr(1, 5 /* GSO_UDP_L4 */, 28, 1000, 20, 6));
    },
  },
  {
    name: 'UDP GRO runs of one TCP flow, written coalesced',
    direction: 'rx',
    prepare: ({ udp }) => {
      const run = flowSegments(6, 1000);
      udp.push({ data: Buffer.concat(run), segSize: run[0]!.length, addr: PEER, port: MIX_HOST.port });
    },
  },
  {
    name: 'send errors',
    direction: 'tx',
    prepare: ({ tun, udp }) => {
      udp.failNextSends(ENOBUFS, 2);
      tun.push(plainToPeer(10), plainToPeer(20), plainToPeer(30));
    },
  },
  {
    name: 'write errors',
    direction: 'rx',
    prepare: ({ tun, udp }) => {
      tun.failNextWrites(ENOBUFS, 2); // transient: GRO stays on
      udp.push(...[0, 1, 2].map((i) => ({ data: fromPeer(i), addr: PEER, port: MIX_HOST.port })));
    },
  },
  {
    name: 'an ICMP error that flannel0 does not take',
    direction: 'tx',
    prepare: ({ tun }) => {
      tun.failNextWrites(ENOBUFS, 1);
      tun.push(plainToPeer(10, NO_ROUTE_POD));
    },
  },
  {
    name: 'a UDP packet whose TTL runs out here: ICMP time exceeded',
    direction: 'tx',
    prepare: ({ tun }) => tun.push(ttlOneToPeer()),
  },
  {
    name: 'a time-exceeded error that flannel0 does not take',
    direction: 'tx',
    prepare: ({ tun }) => {
      tun.failNextWrites(ENOBUFS, 1);
      tun.push(ttlOneToPeer());
    },
  },
  {
    name: 'a flood with no route from one pod: 6 ICMP errors (the burst), the rest held back',
    direction: 'tx',
    prepare: ({ tun }) => tun.push(...Array.from({ length: 10 }, () => plainToPeer(10, NO_ROUTE_POD))),
  },
  {
    name: 'a read error',
    direction: 'tx',
    prepare: ({ tun }) => tun.failNextRead(EIO),
  },
  {
    name: 'a receive error',
    direction: 'rx',
    prepare: ({ udp }) => udp.failNextRecv(EIO),
  },
  {
    // Last of the rx steps that coalesce: GRO stays off from here on.
    name: 'flannel0 refuses a super-packet: GRO falls back to plain writes',
    direction: 'rx',
    prepare: ({ tun, udp }) => {
      tun.failNextWrites(EINVAL, 1);
      for (const p of flowSegments(4, 100000)) udp.push({ data: p, addr: PEER, port: MIX_HOST.port });
    },
  },
];

/** Calls the direction's loop until it reads nothing (at least once: a failed read counts too). */
function drive(fwd: Forwarder, direction: Direction, onCall: () => void, before: () => void): void {
  for (let calls = 0; calls < 100; calls++) {
    before();
    const n = direction === 'tx' ? fwd.tunToUdp() : fwd.udpToTun();
    onCall();
    if (n === 0 && calls > 0) return;
  }
  assert.fail(`the ${direction} loop did not go idle`);
}

describe('counters: each belongs to one direction', () => {
  test('RX_COUNTER_NAMES holds only counter names, and leaves both directions some counters', () => {
    const all = new Set<string>(COUNTER_NAMES);
    assert.equal(all.size, COUNTER_NAMES.length, 'no duplicate names');
    for (const name of RX_COUNTER_NAMES) assert.ok(all.has(name), `${name} is not a counter`);
    assert.ok(RX_COUNTER_NAMES.size > 0 && RX_COUNTER_NAMES.size < COUNTER_NAMES.length);
    for (const name of ['udpRecvPackets', 'tunWritePackets', 'udpGroRuns', 'tunGroWrites', 'udpRecvErrors'] as const) {
      assert.ok(RX_COUNTER_NAMES.has(name), `${name} is rx`);
    }
    for (const name of [
      'tunReadPackets',
      'udpSentPackets',
      'icmpUnreachableSent',
      'tunTsoPackets',
      'tunReadErrors',
    ] as const) {
      assert.ok(!RX_COUNTER_NAMES.has(name), `${name} is tx`);
    }
  });

  test('tunToUdp writes only tx counters, udpToTun only rx counters, and together they reach every counter', () => {
    const counters = newCounters();
    const { tun, udp, fwd } = newForwarder(counters);
    const reached = new Set<CounterName>();
    let snapshot = new Float64Array(counters);
    let calls = { tunReads: 0, udpRecvs: 0, udpSends: 0 };
    for (const step of STEPS) {
      clockMs += STEP_GAP_MS;
      step.prepare({ tun, udp });
      drive(
        fwd,
        step.direction,
        () => {
          const changed = COUNTER_NAMES.filter((_, i) => counters[i] !== snapshot[i]);
          for (const name of changed) {
            reached.add(name);
            assert.ok(!isSpinCounter(name), `${step.name}: a Forwarder changed the lane's counter ${name}`);
            if (step.direction === 'tx')
              assert.ok(!RX_COUNTER_NAMES.has(name), `${step.name}: tunToUdp changed the rx counter ${name}`);
            else assert.ok(RX_COUNTER_NAMES.has(name), `${step.name}: udpToTun changed the tx counter ${name}`);
          }
          for (let i = 0; i < counters.length; i++)
            assert.ok(counters[i]! >= snapshot[i]!, `${step.name}: ${COUNTER_NAMES[i]} went down`);
          // Nor does a direction touch the other's I/O: each worker has its own ring over the same fds.
          if (step.direction === 'tx') {
            assert.equal(udp.recvCalls, calls.udpRecvs, `${step.name}: tunToUdp received from UDP`);
          } else {
            assert.equal(tun.readCalls, calls.tunReads, `${step.name}: udpToTun read flannel0`);
            assert.equal(udp.sendCalls, calls.udpSends, `${step.name}: udpToTun sent on UDP`);
          }
        },
        () => {
          snapshot = new Float64Array(counters);
          calls = { tunReads: tun.readCalls, udpRecvs: udp.recvCalls, udpSends: udp.sendCalls };
        },
      );
      assert.equal(tun.inbound.length + udp.inbound.length, 0, `${step.name}: all input consumed`);
    }
    const missed = COUNTER_NAMES.filter((n) => !reached.has(n) && !UNREACHABLE.includes(n) && !isSpinCounter(n));
    assert.deepEqual(missed, [], 'every reachable counter was reached (reach it or list it in UNREACHABLE)');
    assert.ok(
      reached.size >= COUNTER_NAMES.length - UNREACHABLE.length - SPIN_COUNTERS.length,
      `${reached.size} of ${COUNTER_NAMES.length} counters reached`,
    );
    for (const name of COUNTER_NAMES) {
      if (!UNREACHABLE.includes(name) && !isSpinCounter(name))
        assert.ok(counters[COUNTER_NAMES.indexOf(name)]! > 0, `${name} is non-zero`);
    }
    // Spot checks that the steps did what their names say.
    const c = countersToObject(counters);
    assert.equal(c.tunGroFallbacks, 1);
    assert.equal(c.tunReadErrors, 1);
    assert.equal(c.udpRecvErrors, 1);
    assert.equal(c.dropTxSendError, 2);
    assert.ok(c.dropRxWriteError >= 2);
    assert.equal(c.tunTsoPackets, 1);
    assert.equal(c.icmpUnreachableFailed, 1);
    assert.equal(c.icmpTimeExceededFailed, 1);
    assert.ok(c.icmpRateLimited >= 4, `the flood was held back: ${c.icmpRateLimited}`);
  });

  test('one forwarder per direction, each on its own slab and counters: they add up to one forwarder', () => {
    const single = newCounters();
    const one = newForwarder(single);
    const txCounters = newCounters(),
      rxCounters = newCounters();
    const tx = newForwarder(txCounters),
      rx = newForwarder(rxCounters);
    for (const step of STEPS) {
      clockMs += STEP_GAP_MS;
      step.prepare(one);
      drive(
        one.fwd,
        step.direction,
        () => {},
        () => {},
      );
      const lane = step.direction === 'tx' ? tx : rx;
      step.prepare(lane);
      drive(
        lane.fwd,
        step.direction,
        () => {},
        () => {},
      );
    }
    const summed = txCounters.map((v, i) => v + rxCounters[i]!);
    assert.deepEqual(countersToObject(summed), countersToObject(single));
    assert.ok(
      single.every((v, i) => v > 0 || UNREACHABLE.includes(COUNTER_NAMES[i]!) || isSpinCounter(COUNTER_NAMES[i]!)),
      'not a comparison of zeros',
    );
    assert.deepEqual(tx.udp.sent, one.udp.sent, 'the same datagrams sent');
    assert.equal(rx.udp.sent.length, 0, 'the rx lane sends nothing');
    assert.equal(tx.udp.recvCalls, 0, 'the tx lane receives nothing');
    assert.equal(rx.tun.readCalls, 0, 'the rx lane reads nothing from flannel0');
    assert.equal(
      tx.tun.written.length + rx.tun.written.length,
      one.tun.written.length,
      'as many packets written to flannel0',
    );
  });
});
