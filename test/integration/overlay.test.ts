/**
 * End to end: two hosts in network namespaces running the flannel-ts agent (flannel's udp
 * backend), a pod behind each. Needs root, iproute2, ping, iperf3, tcpdump and the built agent
 * (dist/ + the native addon); a missing piece fails the suite with a message saying which.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  FLANNEL_UDP_PORT,
  Lab,
  UNDERLAY_SWITCH_ADDR,
  removeStaleLabNamespaces,
  requireTools,
  type AgentCounters,
} from '../../src/lab/index.js';
import { readPcapRecords, startCapture, udpDatagramsOf } from '../helpers/capture.js';
import { buildIpv4Udp, buildIpv6Like, bytesToIpv4 } from '../helpers/packets.js';
import { encodeFloodSpec, type FloodSpec } from '../helpers/udp-flood.js';

const FLOOD_SCRIPT = fileURLToPath(new URL('../helpers/udp-flood.js', import.meta.url));

/** Counters that must stay at zero while only well-formed traffic between the pods flows. */
const DROPS_THAT_MUST_NOT_HAPPEN = [
  'dropTxMalformed',
  'dropTxNoRoute',
  'dropTxSendError',
  'dropRxMalformed',
  'dropRxOversize',
  'dropRxUnknownSender',
  'dropRxSpoofedSource',
  'dropRxNotForUs',
  'dropRxTtl',
  'dropRxWriteError',
] as const;

function delta(after: AgentCounters, before: AgentCounters, name: string): number {
  const a = after[name];
  const b = before[name];
  assert.ok(typeof a === 'number' && typeof b === 'number', `agent counters lack "${name}": ${JSON.stringify(after)}`);
  return a - b;
}

describe('flannel-ts overlay between two hosts', { timeout: 180_000 }, () => {
  let lab: Lab;

  before(async () => {
    removeStaleLabNamespaces();
    await requireTools(['tcpdump', 'iperf3', 'ping']);
    // The TypeScript datapath's own behaviour: the kernel fast path is tested in fast-path.test.ts.
    lab = await Lab.create({ hosts: 2, mode: 'flannel-ts', agentArgs: ['--datapath', 'userspace'] });
  });

  after(async () => {
    await lab?.destroy();
  });

  test('the agents created flannel0 as flannel does (10.244.N.0/32, MTU 1472, route for the network)', async () => {
    const addr = await lab.execChecked(lab.hostNs(1), ['ip', '-j', 'addr', 'show', 'dev', 'flannel0']);
    const [link] = JSON.parse(addr.stdout) as { mtu: number; addr_info: { local: string; prefixlen: number }[] }[];
    assert.ok(link, 'flannel0 exists on host 1');
    assert.equal(link.mtu, 1472);
    assert.deepEqual(
      link.addr_info.map((a) => `${a.local}/${a.prefixlen}`),
      ['10.244.1.0/32'],
    );
    const route = await lab.execChecked(lab.hostNs(1), ['ip', 'route', 'show', '10.244.0.0/16']);
    assert.match(route.stdout, /^10\.244\.0\.0\/16 dev flannel0/m);
  });

  test('pods reach each other both ways, and a host reaches the remote pod', async () => {
    const there = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 5, intervalSec: 0.05 });
    assert.equal(there.received, 5, `pod1 -> pod2: ${there.raw}`);
    const back = await lab.ping(lab.podNs(2), lab.podAddr(1), { count: 5, intervalSec: 0.05 });
    assert.equal(back.received, 5, `pod2 -> pod1: ${back.raw}`);
    const fromHost = await lab.ping(lab.hostNs(1), lab.podAddr(2), { count: 3, intervalSec: 0.05 });
    assert.equal(fromHost.received, 3, `host1 -> pod2: ${fromHost.raw}`);
    // A full-size packet for the pod MTU (1472 - 28 = 1444 bytes of ICMP data) with DF set fits.
    const big = await lab.ping(lab.podNs(1), lab.podAddr(2), {
      count: 2,
      intervalSec: 0.05,
      sizeBytes: 1444,
      dontFragment: true,
    });
    assert.equal(big.received, 2, `full-MTU ping: ${big.raw}`);
  });

  test('the agents count what the pings sent and received, with no unexpected drops', async () => {
    const before1 = await lab.agentCounters(1);
    const before2 = await lab.agentCounters(2);
    const n = 20;
    const r = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: n, intervalSec: 0.02 });
    assert.equal(r.received, n);
    const after1 = await lab.agentCounters(1);
    const after2 = await lab.agentCounters(2);
    assert.ok(delta(after1, before1, 'tunReadPackets') >= n, 'h1 read the echo requests from flannel0');
    assert.ok(delta(after1, before1, 'udpSentPackets') >= n, 'h1 sent them over UDP');
    assert.ok(delta(after2, before2, 'udpRecvPackets') >= n, 'h2 received them');
    assert.ok(delta(after2, before2, 'tunWritePackets') >= n, 'h2 wrote them into flannel0');
    assert.ok(delta(after2, before2, 'udpSentPackets') >= n, 'h2 sent the replies');
    assert.ok(delta(after1, before1, 'tunWritePackets') >= n, 'h1 delivered the replies');
    // 84-byte ICMP packets (20 IP + 8 ICMP + 56 data): the byte counters move with them.
    assert.ok(delta(after1, before1, 'udpSentBytes') >= n * 84);
    for (const [host, counters] of [
      ['h1', after1],
      ['h2', after2],
    ] as const) {
      for (const name of DROPS_THAT_MUST_NOT_HAPPEN) {
        assert.equal(counters[name], 0, `${host}.${name} should be 0; counters: ${JSON.stringify(counters)}`);
      }
    }
  });

  test('iperf3 TCP and UDP run through the overlay', async () => {
    const tcp = await lab.iperf3Tcp(1, 2, 2);
    assert.ok(
      tcp.receivedBitsPerSecond > 10e6,
      `TCP pod1 -> pod2 at ${(tcp.receivedBitsPerSecond / 1e6).toFixed(1)} Mbit/s`,
    );
    // A rate the overlay can carry: the loss must then be small.
    const udp = await lab.iperf3Udp(2, 1, 2, { payloadBytes: 1200, bandwidth: '20M' });
    assert.ok(udp.deliveredPackets > 1000, `UDP delivered ${udp.deliveredPackets} datagrams`);
    assert.ok(udp.lostPercent < 10, `UDP loss ${udp.lostPercent.toFixed(2)}% at 20 Mbit/s`);
  });

  test('on the underlay, each packet travels as one UDP 8285 datagram carrying the raw inner IPv4 packet', async () => {
    const capture = await startCapture(lab, lab.hostNs(1), 'eth0', `udp port ${FLANNEL_UDP_PORT}`, 'underlay');
    const n = 5;
    const r = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: n, intervalSec: 0.05, sizeBytes: 100 });
    const pcap = readPcapRecords(await capture.stop());
    assert.equal(r.received, n);
    const datagrams = udpDatagramsOf(pcap.linkType, pcap.packets);
    const requests = datagrams.filter((d) => d.outerSrc === lab.hostAddr(1));
    const replies = datagrams.filter((d) => d.outerSrc === lab.hostAddr(2));
    assert.ok(requests.length >= n, `expected ${n} datagrams 192.0.2.1 -> 192.0.2.2, got ${requests.length}`);
    assert.ok(replies.length >= n, `expected ${n} datagrams 192.0.2.2 -> 192.0.2.1, got ${replies.length}`);
    for (const d of [...requests, ...replies]) {
      assert.equal(d.srcPort, FLANNEL_UDP_PORT);
      assert.equal(d.dstPort, FLANNEL_UDP_PORT);
      const inner = d.payload;
      assert.equal(inner[0], 0x45, 'payload starts with an IPv4 header (version 4, IHL 5): no framing of our own');
      assert.equal(
        inner.readUInt16BE(2),
        inner.length,
        'inner total length = UDP payload length: one packet per datagram',
      );
      assert.equal(inner[9], 1, 'inner protocol ICMP');
      assert.equal(inner.length, 20 + 8 + 100, 'ICMP echo with 100 data bytes');
    }
    const req = requests[0]!.payload;
    assert.equal(bytesToIpv4(req, 12), lab.podAddr(1));
    assert.equal(bytesToIpv4(req, 16), lab.podAddr(2));
    assert.equal(req[20], 8, 'ICMP echo request');
    // 64 from the pod, -1 by host 1's kernel routing into flannel0, -1 by the agent (as flannel).
    assert.equal(req[8], 62, 'inner TTL on the wire');
    const rep = replies[0]!.payload;
    assert.equal(bytesToIpv4(rep, 12), lab.podAddr(2));
    assert.equal(bytesToIpv4(rep, 16), lab.podAddr(1));
    assert.equal(rep[20], 0, 'ICMP echo reply');
  });

  test('a flood of malformed and stranger datagrams is dropped, counted by reason, and forwarding goes on', async () => {
    const per = 200;
    const target = lab.hostAddr(1);
    const valid = (src: string, dst: string, ttl = 64): Buffer =>
      buildIpv4Udp({ src, dst, ttl, srcPort: 40000, dstPort: 9, data: Buffer.from('flannel-ts flood test') });
    const badIhl = valid(lab.podAddr(2), lab.podAddr(1));
    badIhl[0] = 0x44; // IHL 4: shorter than the minimum header
    const badLength = valid(lab.podAddr(2), lab.podAddr(1));
    badLength.writeUInt16BE(badLength.length + 40, 2); // claims more bytes than the datagram has
    const oversize = Buffer.alloc(1480, 0x45); // larger than flannel0's MTU (1472)

    // From the switch's address: not a peer.
    const fromStranger: FloodSpec = {
      bind: UNDERLAY_SWITCH_ADDR,
      target,
      port: FLANNEL_UDP_PORT,
      datagrams: [
        { hex: Buffer.from([0x45, 0, 0, 10, 0, 0, 0, 0, 64, 17]).toString('hex'), count: per }, // truncated
        { hex: badIhl.toString('hex'), count: per },
        { hex: badLength.toString('hex'), count: per },
        { hex: buildIpv6Like().toString('hex'), count: per },
        { hex: oversize.toString('hex'), count: per },
        // Well-formed and plausible (peer subnet -> our pod), but from a non-peer address.
        { hex: valid(lab.podAddr(2), lab.podAddr(1)).toString('hex'), count: per },
      ],
    };
    // From peer host 2's own address, but not packets that host 2 may send us.
    const fromPeer: FloodSpec = {
      bind: lab.hostAddr(2),
      target,
      port: FLANNEL_UDP_PORT,
      datagrams: [
        { hex: valid('10.244.9.9', lab.podAddr(1)).toString('hex'), count: per }, // source outside h2's subnet
        { hex: valid(lab.podAddr(2), '10.244.3.3').toString('hex'), count: per }, // not for h1's subnet
        { hex: valid(lab.podAddr(2), lab.podAddr(1), 1).toString('hex'), count: per }, // TTL would reach 0
      ],
    };

    const before1 = await lab.agentCounters(1);
    for (const [ns, spec] of [
      [lab.underlayNs, fromStranger],
      [lab.hostNs(2), fromPeer],
    ] as const) {
      const r = await lab.exec(ns, [process.execPath, FLOOD_SCRIPT, encodeFloodSpec(spec)], 60_000);
      assert.equal(r.code, 0, `flood sender failed: ${r.stderr}`);
      const total = spec.datagrams.reduce((s, d) => s + d.count, 0);
      assert.deepEqual(JSON.parse(r.stdout), { sent: total });
    }
    // Let the agent drain its socket.
    await new Promise((r) => setTimeout(r, 300));
    const agent = lab.agent(1);
    assert.ok(agent.running, `agent on h1 died during the flood:\n${agent.describeOutput()}`);
    const after1 = await lab.agentCounters(1);
    const d = (name: string): number => delta(after1, before1, name);
    const counters = JSON.stringify({ before: before1, after: after1 });
    assert.equal(d('dropRxMalformed'), 4 * per, `truncated, bad IHL, bad length, IPv6: ${counters}`);
    assert.equal(d('dropRxOversize'), per, `oversize: ${counters}`);
    assert.equal(d('dropRxUnknownSender'), per, `valid-looking from a stranger: ${counters}`);
    assert.equal(d('dropRxSpoofedSource'), per, `peer with a foreign inner source: ${counters}`);
    assert.equal(d('dropRxNotForUs'), per, `peer sending another subnet's packet: ${counters}`);
    assert.equal(d('dropRxTtl'), per, `TTL 1: ${counters}`);
    assert.equal(d('udpRecvPackets'), 9 * per, `every datagram of the flood was received and classified: ${counters}`);
    assert.equal(d('tunWritePackets'), 0, `nothing of the flood reached flannel0: ${counters}`);

    // Still forwarding, both ways.
    const r = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 5, intervalSec: 0.05 });
    assert.equal(r.received, 5, `pod1 -> pod2 after the flood: ${r.raw}`);
    const later1 = await lab.agentCounters(1);
    assert.ok(delta(later1, after1, 'tunWritePackets') >= 5, 'h1 still writes replies into flannel0');
  });

  test('on SIGTERM the agent exits cleanly, prints its final counters and removes flannel0', async () => {
    const agent = lab.agent(2);
    const final = await agent.stop();
    const { code } = await agent.exited();
    assert.equal(code, 0, `agent exit code; output:\n${agent.describeOutput()}`);
    assert.ok(final, 'a final counters line');
    assert.ok((final.udpRecvPackets ?? 0) > 0, 'the final counters carry the traffic of this suite');
    const link = await lab.exec(lab.hostNs(2), ['ip', 'link', 'show', 'flannel0']);
    assert.notEqual(link.code, 0, 'flannel0 is gone with the agent');
  });
});
