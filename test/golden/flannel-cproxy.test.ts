/**
 * Golden test against flannel's own udp backend (its C proxy): the captures in
 * test/fixtures/flannel-cproxy (see its README) are replayed through our Forwarder with fake
 * I/O, and what it sends and writes must equal what flannel sent and wrote, byte for byte, in order.
 *
 * Per host, the packets the proxy read from flannel0 and the datagrams it received are merged by
 * timestamp and fed one at a time, each followed by the matching forwarder call, so the order of
 * the outputs is comparable with the captures of flannel's single-threaded proxy.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { C, countersToObject, newCounters, type CounterName } from '../../src/datapath/counters.js';
import { Forwarder, type ForwarderConfig } from '../../src/datapath/forwarder.js';
import { PacketSlab, SUPER_SLOT_SIZE, slotSizeFor } from '../../src/datapath/slab.js';
import { formatIPv4, parseIPv4 } from '../../src/routing-table/ipv4.js';
import { RoutingSnapshot } from '../../src/routing-table/snapshot.js';
import { FakeTun, FakeUdp } from '../helpers/fake-io.js';
import { GOLDEN_DIR } from '../helpers/golden-dir.js';
import {
  LINKTYPE_ETHERNET,
  LINKTYPE_RAW,
  compareTimestamps,
  readPcap,
  stripEthernetIpv4Udp,
  type PcapPacket,
} from '../helpers/pcap.js';

const PORT = 8285;
const MTU = 1472;
const BATCH = 64;

interface HostSpec {
  name: 'h1' | 'h2';
  tunAddress: string;
  subnet: string;
  underlay: string;
  peerSubnet: string;
  peerUnderlay: string;
  /** Counters the replay must end with (bytes are checked against the captures separately). */
  counts: Partial<Record<CounterName, number>>;
}

// Traffic (README): from p1 two echoes, a 1472-byte echo, a 3028-byte echo in three fragments, a
// record-route echo, an echo and a UDP datagram to 10.244.77.7 (no lease), echoes with TTL 2 and
// TTL 3, a UDP datagram to port 9999 and a TCP SYN to port 80; and the replies from p2.
const HOSTS: HostSpec[] = [
  {
    name: 'h1',
    tunAddress: '10.244.1.0',
    subnet: '10.244.1.0',
    underlay: '192.0.2.1',
    peerSubnet: '10.244.2.0',
    peerUnderlay: '192.0.2.2',
    counts: {
      tunReadPackets: 13,
      udpSentPackets: 10,
      // The echo to 10.244.77.7 (ICMP: no error sent) and the UDP datagram to it (net unreachable).
      dropTxNoRoute: 2,
      icmpUnreachableSent: 1,
      // The TTL 2 echo reaches h1's flannel0 with TTL 1.
      dropTxTtl: 1,
      udpRecvPackets: 9,
      tunWritePackets: 9,
    },
  },
  {
    name: 'h2',
    tunAddress: '10.244.2.0',
    subnet: '10.244.2.0',
    underlay: '192.0.2.2',
    peerSubnet: '10.244.1.0',
    peerUnderlay: '192.0.2.1',
    counts: {
      tunReadPackets: 9,
      udpSentPackets: 9,
      udpRecvPackets: 10,
      tunWritePackets: 9,
      // The TTL 3 echo leaves h1 with TTL 1 and dies in h2's forwarder.
      dropRxTtl: 1,
    },
  },
];

// ---------------------------------------------------------------------------------------------
// Reporting helpers

/** One line per 16-byte row where the buffers differ: offset, expected, actual, ^^ under differences. */
function hexDiff(actual: Uint8Array, expected: Uint8Array): string {
  const lines = [`length: expected ${expected.length}, actual ${actual.length}`];
  const rows = Math.ceil(Math.max(actual.length, expected.length) / 16);
  const hex = (b: Uint8Array, i: number): string => (i < b.length ? b[i]!.toString(16).padStart(2, '0') : '--');
  let shown = 0;
  for (let r = 0; r < rows && shown < 12; r++) {
    let differs = false;
    const e: string[] = [],
      a: string[] = [],
      m: string[] = [];
    for (let i = r * 16; i < r * 16 + 16; i++) {
      const d = hex(actual, i) !== hex(expected, i);
      differs ||= d;
      e.push(hex(expected, i));
      a.push(hex(actual, i));
      m.push(d ? '^^' : '  ');
    }
    if (!differs) continue;
    shown++;
    const off = (r * 16).toString(16).padStart(4, '0');
    lines.push(`${off} expected ${e.join(' ')}`, `${off} actual   ${a.join(' ')}`, `              ${m.join(' ')}`);
  }
  return lines.join('\n');
}

const PROTOCOLS: Record<number, string> = { 1: 'ICMP', 6: 'TCP', 17: 'UDP' };

function describeIpv4(p: Uint8Array): string {
  if (p.length < 20) return `${p.length}-byte runt`;
  const frag = ((p[6]! << 8) | p[7]!) & 0x1fff;
  const proto = PROTOCOLS[p[9]!] ?? `proto ${p[9]}`;
  const src = formatIPv4(((p[12]! << 24) | (p[13]! << 16) | (p[14]! << 8) | p[15]!) >>> 0);
  const dst = formatIPv4(((p[16]! << 24) | (p[17]! << 16) | (p[18]! << 8) | p[19]!) >>> 0);
  return `${proto} ${src} -> ${dst}, ${p.length} bytes, ttl ${p[8]}${frag !== 0 ? `, frag offset ${frag * 8}` : ''}`;
}

function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (Buffer.compare(Buffer.from(actual), Buffer.from(expected)) === 0) return;
  assert.fail(
    `${what} differs\n  expected: ${describeIpv4(expected)}\n` +
      `  actual:   ${describeIpv4(actual)}\n${hexDiff(actual, expected)}`,
  );
}

// ---------------------------------------------------------------------------------------------
// Loading the captures

function loadPcap(file: string, linkType: number): PcapPacket[] {
  const pcap = readPcap(readFileSync(join(GOLDEN_DIR, file)));
  assert.equal(pcap.linkType, linkType, `${file}: link type`);
  for (const [i, p] of pcap.packets.entries()) {
    assert.equal(p.data.length, p.origLen, `${file} #${i}: captured with a snaplen cut`);
  }
  return pcap.packets;
}

interface HostCaptures {
  tunRead: PcapPacket[];
  tunWritten: PcapPacket[];
  udpSent: (ReturnType<typeof stripEthernetIpv4Udp> & { ts: PcapPacket })[];
  udpReceived: (ReturnType<typeof stripEthernetIpv4Udp> & { ts: PcapPacket })[];
}

function loadHost(h: HostSpec): HostCaptures {
  const frames = (file: string) =>
    loadPcap(file, LINKTYPE_ETHERNET).map((p) => ({ ...stripEthernetIpv4Udp(p.data), ts: p }));
  return {
    tunRead: loadPcap(`${h.name}-tun-read.pcap`, LINKTYPE_RAW),
    tunWritten: loadPcap(`${h.name}-tun-written.pcap`, LINKTYPE_RAW),
    udpSent: frames(`${h.name}-udp-sent.pcap`),
    udpReceived: frames(`${h.name}-udp-received.pcap`),
  };
}

/**
 * A forwarder for host h. With offloads, set up as the agent does when the kernel grants them all
 * (super-packet slots for TSO reads and UDP GRO receives, GRO writes into flannel0): the captures
 * hold no TCP runs or super-packets, so the outputs must not change by a byte.
 */
function newHostForwarder(h: HostSpec, offloads = false) {
  const slab = new PacketSlab({
    slotSize: slotSizeFor(MTU),
    batch: BATCH,
    ...(offloads ? { readSlotSize: SUPER_SLOT_SIZE, receiveSlotSize: SUPER_SLOT_SIZE } : {}),
  });
  const tun = new FakeTun(slab);
  const udp = new FakeUdp(slab);
  const config: ForwarderConfig = {
    tunAddress: parseIPv4(h.tunAddress),
    subnetPrefix: parseIPv4(h.subnet),
    subnetLen: 24,
    port: PORT,
    mtu: MTU,
    tunGro: offloads,
  };
  const counters = newCounters();
  const fwd = new Forwarder(slab, tun, udp, config, counters);
  fwd.setRoutes(
    RoutingSnapshot.build([{ prefix: parseIPv4(h.peerSubnet), prefixLen: 24, publicIp: parseIPv4(h.peerUnderlay) }]),
  );
  return { slab, tun, udp, fwd, counters };
}

type InputEvent =
  | { kind: 'tun'; index: number; ts: PcapPacket; data: Buffer }
  | { kind: 'udp'; index: number; ts: PcapPacket; data: Buffer; addr: number; port: number };

/** Both inputs of a host, merged by capture timestamp (stable: ties keep tun-read first). */
function inputsInTimeOrder(c: HostCaptures): InputEvent[] {
  const events: InputEvent[] = [
    ...c.tunRead.map((p, index): InputEvent => ({ kind: 'tun', index, ts: p, data: p.data })),
    ...c.udpReceived.map((d, index): InputEvent => ({
      kind: 'udp',
      index,
      ts: d.ts,
      data: d.payload,
      addr: d.srcIp,
      port: d.srcPort,
    })),
  ];
  return events.sort((a, b) => compareTimestamps(a.ts, b.ts));
}

// ---------------------------------------------------------------------------------------------

describe("golden: flannel's C proxy captures", () => {
  test('the reference captures are present', () => {
    assert.ok(
      existsSync(join(GOLDEN_DIR, 'h1-tun-read.pcap')),
      `no captures in ${GOLDEN_DIR} (set FLANNEL_GOLDEN_DIR)`,
    );
  });

  for (const h of HOSTS) {
    describe(`${h.name} (${h.subnet}/24, underlay ${h.underlay})`, () => {
      test('the captures are what the README describes', () => {
        const c = loadHost(h);
        for (const d of [...c.udpSent, ...c.udpReceived]) {
          assert.equal(d.srcPort, PORT);
          assert.equal(d.dstPort, PORT);
        }
        for (const d of c.udpSent) assert.equal(formatIPv4(d.srcIp), h.underlay);
        for (const d of c.udpReceived) assert.equal(formatIPv4(d.dstIp), h.underlay);
        assert.equal(c.tunRead.length, h.counts.tunReadPackets);
        assert.equal(c.udpReceived.length, h.counts.udpRecvPackets);
      });

      for (const offloads of [false, true])
        test(`replayed in timestamp order${offloads ? ', offloads set up' : ''}, it sends and writes exactly what flannel did`, () => {
          const c = loadHost(h);
          const { tun, udp, fwd, counters } = newHostForwarder(h, offloads);
          const events = inputsInTimeOrder(c);
          // Which input produced each output, for messages and the causality check.
          const sentBy: InputEvent[] = [];
          const writtenBy: InputEvent[] = [];
          for (const ev of events) {
            if (ev.kind === 'tun') {
              tun.push(ev.data);
              assert.equal(fwd.tunToUdp(), 1, `tun-read #${ev.index} was not read`);
            } else {
              udp.push({ data: ev.data, addr: ev.addr, port: ev.port });
              assert.equal(fwd.udpToTun(), 1, `udp-received #${ev.index} was not received`);
            }
            while (sentBy.length < udp.sent.length) sentBy.push(ev);
            while (writtenBy.length < tun.written.length) writtenBy.push(ev);
          }
          const origin = (ev: InputEvent | undefined): string =>
            ev === undefined
              ? 'nothing'
              : `${ev.kind === 'tun' ? 'tun-read' : 'udp-received'} #${ev.index} (${describeIpv4(ev.data)})`;

          // flannel0 -> UDP: payload and destination of every datagram, in order.
          const n = Math.max(udp.sent.length, c.udpSent.length);
          for (let i = 0; i < n; i++) {
            const actual = udp.sent[i],
              expected = c.udpSent[i];
            assert.ok(
              expected !== undefined,
              `${h.name}: extra datagram #${i} (${describeIpv4(actual!.data)}), from ${origin(sentBy[i])}`,
            );
            assert.ok(
              actual !== undefined,
              `${h.name}: datagram #${i} (${describeIpv4(expected.payload)}) was never sent`,
            );
            assertSameBytes(actual.data, expected.payload, `${h.name} udp-sent #${i} (from ${origin(sentBy[i])})`);
            assert.equal(
              formatIPv4(actual.addr),
              formatIPv4(expected.dstIp),
              `${h.name} udp-sent #${i}: destination address`,
            );
            assert.equal(actual.port, expected.dstPort, `${h.name} udp-sent #${i}: destination port`);
            assert.ok(
              compareTimestamps(expected.ts, sentBy[i]!.ts) >= 0,
              `${h.name} udp-sent #${i} was captured before its input`,
            );
          }

          // UDP -> flannel0, and the ICMP errors written back: every packet, in order.
          const m = Math.max(tun.written.length, c.tunWritten.length);
          for (let i = 0; i < m; i++) {
            const actual = tun.written[i],
              expected = c.tunWritten[i];
            assert.ok(
              expected !== undefined,
              `${h.name}: extra packet #${i} written to flannel0 ` +
                `(${describeIpv4(actual!)}), from ${origin(writtenBy[i])}`,
            );
            assert.ok(
              actual !== undefined,
              `${h.name}: tun-written #${i} (${describeIpv4(expected.data)}) was never written`,
            );
            assertSameBytes(actual, expected.data, `${h.name} tun-written #${i} (from ${origin(writtenBy[i])})`);
            assert.ok(
              compareTimestamps(expected, writtenBy[i]!.ts) >= 0,
              `${h.name} tun-written #${i} was captured before its input`,
            );
          }

          // Counters: the listed packet counts, byte counts from the captures, every other counter 0.
          const sum = (ps: { length: number }[]): number => ps.reduce((s, p) => s + p.length, 0);
          const writtenFromUdp = tun.written.filter((_, i) => writtenBy[i]!.kind === 'udp');
          const expected = Object.fromEntries(Object.keys(countersToObject(counters)).map((k) => [k, 0])) as Record<
            CounterName,
            number
          >;
          Object.assign(expected, h.counts, {
            tunReadBytes: sum(c.tunRead.map((p) => p.data)),
            udpSentBytes: sum(c.udpSent.map((d) => d.payload)),
            udpRecvBytes: sum(c.udpReceived.map((d) => d.payload)),
            tunWriteBytes: sum(writtenFromUdp),
            // One packet per read call in this replay.
            tunReadBatches: c.tunRead.length,
            udpRecvBatches: c.udpReceived.length,
          });
          assert.deepEqual(countersToObject(counters), expected);
        });

      for (const offloads of [false, true])
        test(`replayed in whole batches per direction${offloads ? ', offloads set up' : ''}, the outputs are the same`, () => {
          // Reference attribution from the one-at-a-time replay: which written packets the
          // flannel0 -> UDP direction produced (ICMP errors) and which came from peers.
          const c = loadHost(h);
          const ref = newHostForwarder(h);
          const fromTun: Buffer[] = [],
            fromUdp: Buffer[] = [];
          for (const ev of inputsInTimeOrder(c)) {
            const before = ref.tun.written.length;
            if (ev.kind === 'tun') {
              ref.tun.push(ev.data);
              ref.fwd.tunToUdp();
            } else {
              ref.udp.push({ data: ev.data, addr: ev.addr, port: ev.port });
              ref.fwd.udpToTun();
            }
            (ev.kind === 'tun' ? fromTun : fromUdp).push(...ref.tun.written.slice(before));
          }

          const { tun, udp, fwd, counters } = newHostForwarder(h, offloads);
          tun.push(...c.tunRead.map((p) => p.data));
          assert.equal(fwd.tunToUdp(), c.tunRead.length);
          const icmps = tun.written.splice(0);
          udp.push(...c.udpReceived.map((d) => ({ data: d.payload, addr: d.srcIp, port: d.srcPort })));
          assert.equal(fwd.udpToTun(), c.udpReceived.length);
          assert.equal(udp.sendCalls, 1, 'one batch, one send call');

          assert.deepEqual(
            udp.sent.map((d) => d.data),
            c.udpSent.map((d) => d.payload),
          );
          assert.deepEqual(
            udp.sent.map((d) => d.addr),
            c.udpSent.map((d) => d.dstIp),
          );
          assert.deepEqual(icmps, fromTun);
          assert.deepEqual(tun.written, fromUdp);
          assert.deepEqual(
            { ...countersToObject(counters), tunReadBatches: 0, udpRecvBatches: 0 },
            { ...countersToObject(ref.counters), tunReadBatches: 0, udpRecvBatches: 0 },
          );
          assert.equal(counters[C.tunReadBatches], 1);
          assert.equal(counters[C.udpRecvBatches], 1);
        });
    });
  }
});
