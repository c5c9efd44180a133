/**
 * End to end: the kernel fast path (--datapath kernel/auto, docs/fast-path.md) in the namespace lab.
 *
 * 1. Two fast-path hosts: ping, TCP and UDP both ways carried by the TC programs alone; the wire
 *    (one inner packet per datagram, TTL rules, the outer header's bytes); what the programs hand to
 *    the TypeScript datapath (no route -> ICMP net unreachable, a UDP GSO super-datagram, a
 *    fragment); a flood of strangers and bad datagrams dropped and counted under the userspace
 *    datapath's names; a withdrawn route stops traffic at once.
 * 2. A wire-like underlay (veth offloads off, as on a real wire): a fast-path host with a userspace
 *    flannel-ts host, then with socat as the peer (flannel's wire needs nothing more); `auto`
 *    falling back when loading is refused; a crashed agent's clsact filter replaced, and removed at
 *    a clean stop.
 *
 * Needs root, iproute2 (ip, tc), ping, iperf3, tcpdump, ethtool, socat, python3 and the fast path
 * built at install (clang, libbpf-dev): a missing piece fails the suite.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  AgentProcess,
  FLANNEL_UDP_PORT,
  Lab,
  UNDERLAY_SWITCH_ADDR,
  agentEntry,
  removeStaleLabNamespaces,
  requireTools,
  staticAgentArgs,
  type AgentCounters,
} from '../../src/lab/index.js';
import { readPcapRecords, startCapture } from '../helpers/capture.js';
import { GOLDEN_DIR } from '../helpers/golden-dir.js';
import { buildIpv4Udp, buildIpv6Like } from '../helpers/packets.js';
import { burstReceiver, checksumErrors } from '../helpers/pod-udp.js';
import { encodeFloodSpec, type FloodSpec } from '../helpers/udp-flood.js';

/** Connects to ADDR:80 from a pod and prints how it ended ({"code","ms"}). */
const TCP_PROBE = `
const started = Date.now();
const s = require('node:net').connect({ host: process.argv[1], port: 80, timeout: 5000 });
const done = (code) => { console.log(JSON.stringify({ code, ms: Date.now() - started })); s.destroy(); };
s.on('connect', () => done('CONNECTED'));
s.on('timeout', () => done('TIMEOUT'));
s.on('error', (e) => done(e.code));
`;

const FLOOD_SCRIPT = fileURLToPath(new URL('../helpers/udp-flood.js', import.meta.url));
const ROUTES_SCENARIO = fileURLToPath(new URL('../helpers/fastpath-routes-scenario.js', import.meta.url));

function delta(later: AgentCounters, earlier: AgentCounters, name: string): number {
  const a = later[name];
  const b = earlier[name];
  assert.ok(typeof a === 'number' && typeof b === 'number', `counters lack "${name}": ${JSON.stringify(later)}`);
  return a - b;
}

function forwardingLine(lab: Lab, n: number): Record<string, unknown> {
  const line = lab.agent(n).lines.find((l) => l['msg'] === 'forwarding');
  assert.ok(line, `host ${n} logged "forwarding"`);
  return line;
}

/** The pattern test/helpers/udp-burst.ts checks: a big-endian u32 number, then (seq*31 + i*7) & 0xff. */
function burstPayload(seq: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt32BE(seq, 0);
  for (let i = 4; i < size; i++) b[i] = (seq * 31 + i * 7) & 0xff;
  return b;
}

/**
 * Sends `payload` (hex) from ns, bound to `bind`, to target:8285 with python3: with `segment` > 0 as
 * one UDP GSO super-datagram cut every `segment` bytes; with `fragment`, path-MTU discovery off so
 * that a route with a small MTU fragments it.
 */
async function sendRaw(
  lab: Lab,
  ns: string,
  bind: string,
  target: string,
  payload: Buffer,
  opts: { segment?: number; fragment?: boolean },
): Promise<void> {
  const script = [
    'import socket, sys',
    's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
    `s.bind(("${bind}", 0))`,
    opts.segment ? `s.setsockopt(socket.SOL_UDP, 103, ${opts.segment})` : 'pass',
    opts.fragment ? 's.setsockopt(socket.IPPROTO_IP, 10, 0)' : 'pass', // IP_MTU_DISCOVER = IP_PMTUDISC_DONT
    `s.sendto(bytes.fromhex(sys.argv[1]), ("${target}", ${FLANNEL_UDP_PORT}))`,
  ].join('\n');
  await lab.execChecked(ns, ['python3', '-c', script, payload.toString('hex')]);
}

/** Turns a host's and its switch port's checksum and segmentation offloads off: a wire, not a veth. */
async function wireLike(lab: Lab, n: number): Promise<void> {
  const off = ['rx', 'off', 'tx', 'off', 'sg', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off'];
  await lab.execChecked(lab.hostNs(n), ['ethtool', '-K', 'eth0', ...off]);
  await lab.execChecked(lab.underlayNs, ['ethtool', '-K', `h${n}`, ...off]);
}

describe('kernel fast path between two hosts', { timeout: 240_000 }, () => {
  let lab: Lab;

  before(async () => {
    removeStaleLabNamespaces();
    await requireTools(['tcpdump', 'iperf3', 'ping', 'python3']);
    lab = await Lab.create({ hosts: 2, mode: 'flannel-ts', agentArgs: ['--datapath', 'kernel'] });
  });

  after(async () => {
    await lab?.destroy();
  });

  test('both agents run the fast path, attached by tcx links (log line "forwarding")', () => {
    for (const n of lab.hostNumbers()) {
      const line = forwardingLine(lab, n);
      assert.equal(line['datapath'], 'kernel', JSON.stringify(line));
      assert.equal(line['attach'], 'tcx', JSON.stringify(line));
    }
  });

  test('ping, TCP and UDP both ways are carried by the TC programs alone', async () => {
    const before1 = await lab.agentCounters(1);
    const before2 = await lab.agentCounters(2);
    for (const [from, to] of [
      [1, 2],
      [2, 1],
    ] as const) {
      const ping = await lab.ping(lab.podNs(from), lab.podAddr(to), { count: 5, intervalSec: 0.05 });
      assert.equal(ping.received, 5, `ping pod${from} -> pod${to}: ${ping.raw}`);
      const tcp = await lab.iperf3Tcp(from, to, 2);
      assert.ok(tcp.receivedBitsPerSecond > 100e6, `TCP pod${from} -> pod${to}: ${tcp.receivedBitsPerSecond}`);
      const udp = await lab.iperf3Udp(from, to, 2, { payloadBytes: 1200, bandwidth: '20M' });
      assert.ok(udp.deliveredPackets > 1000, `UDP pod${from} -> pod${to} delivered ${udp.deliveredPackets}`);
      assert.ok(udp.lostPercent < 10, `UDP pod${from} -> pod${to} loss ${udp.lostPercent}%`);
    }
    const after1 = await lab.agentCounters(1);
    const after2 = await lab.agentCounters(2);
    for (const [host, a, b] of [
      ['h1', after1, before1],
      ['h2', after2, before2],
    ] as const) {
      const all = JSON.stringify({ before: b, after: a });
      assert.ok(delta(a, b, 'udpSentPackets') > 1000, `${host} sent in the kernel: ${all}`);
      assert.ok(delta(a, b, 'tunWritePackets') > 1000, `${host} delivered in the kernel: ${all}`);
      assert.equal(delta(a, b, 'tunReadPackets'), 0, `${host}: nothing went through the TypeScript datapath: ${all}`);
      assert.equal(delta(a, b, 'kernelTxPassedUp'), 0, `${host}: nothing handed up: ${all}`);
      assert.equal(delta(a, b, 'kernelRxPassedUp'), 0, `${host}: nothing handed up: ${all}`);
      for (const name of [
        'dropRxUnknownSender',
        'dropRxSpoofedSource',
        'dropRxTtl',
        'kernelTxFailed',
        'kernelRxFailed',
      ])
        assert.equal(delta(a, b, name), 0, `${host}.${name}: ${all}`);
    }
  });

  test("on the underlay: one inner packet per datagram, inner TTL - 1, the outer header flanneld's but for id and checksums", async () => {
    // flanneld's first datagram in the reference capture: an echo request (84 bytes) from 10.244.1.2
    // to 10.244.2.2, sent 192.0.2.1:8285 -> 192.0.2.2:8285: the same addresses as this lab's.
    const golden = readPcapRecords(readFileSync(join(GOLDEN_DIR, 'h1-udp-sent.pcap'))).packets[0]!.data.subarray(14);
    assert.equal(golden.length, 28 + 84);
    const capture = await startCapture(lab, lab.hostNs(1), 'eth0', `udp port ${FLANNEL_UDP_PORT}`, 'fastpath');
    const n = 5;
    const r = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: n, intervalSec: 0.05 });
    const pcap = readPcapRecords(await capture.stop());
    assert.equal(r.received, n);
    const frames = pcap.packets.map((p) => p.data).filter((d) => d.length > 42 && d.readUInt16BE(12) === 0x0800);
    const sent = frames.filter((d) => d.subarray(26, 30).join('.') === lab.hostAddr(1));
    assert.ok(sent.length >= n, `${n} datagrams from host 1, got ${sent.length}`);
    for (const d of sent) {
      const outer = d.subarray(14);
      assert.equal(outer[0], 0x45, 'outer IPv4, no options');
      assert.equal(outer.readUInt16BE(6), 0x4000, 'DF set, not a fragment');
      assert.equal(outer[8], 64, 'outer TTL 64');
      assert.equal(outer.readUInt16BE(2), outer.length, 'outer total length');
      assert.equal(outer.readUInt16BE(20), FLANNEL_UDP_PORT, 'UDP source port 8285');
      assert.equal(outer.readUInt16BE(22), FLANNEL_UDP_PORT, 'UDP destination port 8285');
      assert.equal(outer.readUInt16BE(24), outer.length - 20, 'UDP length');
      // Differences from flanneld's socket-sent datagrams, by design (docs/fast-path.md): the
      // UDP checksum is zero (no checksum, legal in IPv4) and the outer IP id is 0.
      assert.equal(outer.readUInt16BE(26), 0, 'UDP checksum 0');
      const inner = outer.subarray(28);
      assert.equal(inner.readUInt16BE(2), inner.length, 'exactly one inner packet');
      assert.equal(inner.length, 20 + 8 + 56);
      // 64 from the pod, -1 by host 1's routing into flannel0, -1 by the egress program.
      assert.equal(inner[8], 62, 'inner TTL on the wire');
      // Byte for byte flanneld's outer header, but for the IP id (bytes 4-5: the kernel's per-socket
      // counter there, 0 here), the IP header checksum (10-11: it covers the id) and the UDP
      // checksum (26-27: zero here). Same length, tos, DF, TTL, protocol, addresses and ports.
      const mask = (b: Buffer): Buffer => {
        const c = Buffer.from(b.subarray(0, 28));
        for (const i of [4, 5, 10, 11, 26, 27]) c[i] = 0;
        return c;
      };
      assert.deepEqual(mask(outer), mask(golden), `outer header ${outer.subarray(0, 28).toString('hex')}`);
      assert.equal(outer.readUInt16BE(4), 0, 'outer IP id 0');
      assert.notEqual(golden.readUInt16BE(26), 0, "flanneld's socket computes the UDP checksum");
    }
  });

  test('TTL: a packet that would leave with TTL 0 is dropped and counted on each side', async () => {
    const before1 = await lab.agentCounters(1);
    const before2 = await lab.agentCounters(2);
    // TTL 2: host 1's routing makes it 1, the egress program drops it.
    await lab.exec(lab.podNs(1), ['ping', '-n', '-q', '-c', '3', '-i', '0.05', '-W', '1', '-t', '2', lab.podAddr(2)]);
    // TTL 3: it leaves host 1 with TTL 1, the ingress program of host 2 drops it.
    await lab.exec(lab.podNs(1), ['ping', '-n', '-q', '-c', '3', '-i', '0.05', '-W', '1', '-t', '3', lab.podAddr(2)]);
    const after1 = await lab.agentCounters(1);
    const after2 = await lab.agentCounters(2);
    assert.equal(delta(after1, before1, 'dropTxTtl'), 3, JSON.stringify(after1));
    assert.equal(delta(after2, before2, 'dropRxTtl'), 3, JSON.stringify(after2));
  });

  test('no route: handed to the TypeScript datapath, which answers ICMP net unreachable', async () => {
    const before1 = await lab.agentCounters(1);
    // A TCP connect fails at once with the agent's ICMP net unreachable (flannel answers no ICMP with ICMP).
    const probe = await lab.exec(lab.podNs(1), [process.execPath, '-e', TCP_PROBE, '10.244.99.2'], 10_000);
    const outcome = JSON.parse(probe.stdout) as { code: string; ms: number };
    assert.equal(outcome.code, 'ENETUNREACH', probe.stdout + probe.stderr);
    assert.ok(outcome.ms < 2000, `failed fast: ${outcome.ms} ms`);
    const after1 = await lab.agentCounters(1);
    assert.ok(delta(after1, before1, 'dropTxNoRoute') >= 1, JSON.stringify(after1));
    assert.ok(delta(after1, before1, 'icmpUnreachableSent') >= 1, JSON.stringify(after1));
    assert.equal(
      delta(after1, before1, 'kernelTxPassedUp'),
      delta(after1, before1, 'dropTxNoRoute'),
      JSON.stringify(after1),
    );
  });

  test('strangers and bad datagrams: dropped and counted under the userspace names, forwarding goes on', async () => {
    const per = 200;
    const target = lab.hostAddr(1);
    const valid = (src: string, dst: string, ttl = 64): Buffer =>
      buildIpv4Udp({ src, dst, ttl, srcPort: 40000, dstPort: 9, data: Buffer.from('flannel-ts flood test') });
    const badIhl = valid(lab.podAddr(2), lab.podAddr(1));
    badIhl[0] = 0x44;
    const badLength = valid(lab.podAddr(2), lab.podAddr(1));
    badLength.writeUInt16BE(badLength.length + 40, 2);
    const oversize = Buffer.alloc(1480, 0x45);
    const fromStranger: FloodSpec = {
      bind: UNDERLAY_SWITCH_ADDR,
      target,
      port: FLANNEL_UDP_PORT,
      datagrams: [{ hex: valid(lab.podAddr(2), lab.podAddr(1)).toString('hex'), count: 5 * per }],
    };
    const fromPeer: FloodSpec = {
      bind: lab.hostAddr(2),
      target,
      port: FLANNEL_UDP_PORT,
      datagrams: [
        { hex: Buffer.from([0x45, 0, 0, 10, 0, 0, 0, 0, 64, 17]).toString('hex'), count: per },
        { hex: badIhl.toString('hex'), count: per },
        { hex: badLength.toString('hex'), count: per },
        { hex: buildIpv6Like().toString('hex'), count: per },
        { hex: oversize.toString('hex'), count: per },
        { hex: valid('10.244.9.9', lab.podAddr(1)).toString('hex'), count: per },
        { hex: valid(lab.podAddr(2), '10.244.3.3').toString('hex'), count: per },
        { hex: valid(lab.podAddr(2), lab.podAddr(1), 1).toString('hex'), count: per },
      ],
    };
    const before1 = await lab.agentCounters(1);
    for (const [ns, spec] of [
      [lab.underlayNs, fromStranger],
      [lab.hostNs(2), fromPeer],
    ] as const) {
      const r = await lab.exec(ns, [process.execPath, FLOOD_SCRIPT, encodeFloodSpec(spec)], 60_000);
      assert.equal(r.code, 0, `flood sender failed: ${r.stderr}`);
    }
    await new Promise((r) => setTimeout(r, 300));
    const after1 = await lab.agentCounters(1);
    const d = (name: string): number => delta(after1, before1, name);
    const all = JSON.stringify({ before: before1, after: after1 });
    assert.equal(d('dropRxUnknownSender'), 5 * per, `strangers, dropped in the kernel: ${all}`);
    assert.equal(d('dropRxSpoofedSource'), per, `a peer with a foreign inner source: ${all}`);
    assert.equal(d('dropRxNotForUs'), per, `a peer sending another subnet's packet: ${all}`);
    assert.equal(d('dropRxTtl'), per, `TTL 1: ${all}`);
    // Malformed and oversize datagrams are not the kernel's to judge: handed up, dropped there.
    assert.equal(d('kernelRxPassedUp'), 5 * per, `handed up: ${all}`);
    assert.equal(d('dropRxMalformed'), 4 * per, `truncated, bad IHL, bad length, IPv6: ${all}`);
    assert.equal(d('dropRxOversize'), per, `oversize: ${all}`);
    assert.equal(d('udpRecvPackets'), 13 * per, `every datagram received and classified once: ${all}`);
    assert.equal(d('tunWritePackets'), 0, `nothing of the flood reached flannel0: ${all}`);
    const r = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 5, intervalSec: 0.05 });
    assert.equal(r.received, 5, `pod1 -> pod2 after the flood: ${r.raw}`);
  });

  test('a UDP GSO super-datagram from a peer reaches the pod through the TypeScript datapath', async () => {
    const count = 8;
    const size = 600;
    const port = 7001;
    const receiver = await burstReceiver(lab, 1, port, count, 5000);
    const datagrams = Array.from({ length: count }, (_, seq) =>
      buildIpv4Udp({
        src: lab.podAddr(2),
        dst: lab.podAddr(1),
        srcPort: 40001,
        dstPort: port,
        data: burstPayload(seq, size),
      }),
    );
    const before1 = await lab.agentCounters(1);
    // From host 2's address (a peer), another source port than its agent's: veths carry the GSO
    // datagram whole, so host 1's ingress program sees one skb of `count` datagrams.
    await sendRaw(lab, lab.hostNs(2), lab.hostAddr(2), lab.hostAddr(1), Buffer.concat(datagrams), {
      segment: datagrams[0]!.length,
    });
    const got = await receiver.result;
    assert.deepEqual(got, { received: count, intact: count, inOrder: true });
    const after1 = await lab.agentCounters(1);
    assert.ok(delta(after1, before1, 'kernelRxPassedUp') >= 1, JSON.stringify(after1));
    assert.equal(delta(after1, before1, 'udpRecvBatches') > 0, true, 'the TypeScript datapath received it');
  });

  test('a fragmented datagram from a peer reaches the pod through the TypeScript datapath', async () => {
    const port = 7002;
    const receiver = await burstReceiver(lab, 1, port, 1, 5000);
    const inner = buildIpv4Udp({
      src: lab.podAddr(2),
      dst: lab.podAddr(1),
      srcPort: 40002,
      dstPort: port,
      data: burstPayload(0, 1200),
    });
    const before1 = await lab.agentCounters(1);
    const route = ['ip', 'route', 'add', `${lab.hostAddr(1)}/32`, 'dev', 'eth0', 'mtu', 'lock', '800'];
    await lab.execChecked(lab.hostNs(2), route);
    try {
      await sendRaw(lab, lab.hostNs(2), lab.hostAddr(2), lab.hostAddr(1), inner, { fragment: true });
    } finally {
      await lab.execChecked(lab.hostNs(2), ['ip', 'route', 'del', `${lab.hostAddr(1)}/32`]);
    }
    assert.deepEqual(await receiver.result, { received: 1, intact: 1, inOrder: true });
    const after1 = await lab.agentCounters(1);
    assert.equal(
      delta(after1, before1, 'kernelRxPassedUp'),
      1,
      `the first fragment handed up: ${JSON.stringify(after1)}`,
    );
    assert.equal(delta(after1, before1, 'udpRecvPackets'), 1, 'one datagram, reassembled, in TypeScript');
  });

  test('a withdrawn route stops traffic to that peer at once, and comes back with the route', async () => {
    await lab.agent(1).stop();
    const host = AgentProcess.start(lab.hostNs(1), [
      process.execPath,
      ROUTES_SCENARIO,
      'eth0',
      '10.244.0.0/16',
      lab.subnet(1),
      `${lab.subnet(2)}=${lab.hostAddr(2)}`,
    ]);
    try {
      const fwd = await host.waitForwarding(20_000);
      assert.equal(fwd['datapath'], 'kernel', JSON.stringify(fwd));
      let r = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 3, intervalSec: 0.05 });
      assert.equal(r.received, 3, `with the route: ${r.raw}`);

      let from = host.lines.length;
      host.child.kill('SIGUSR2');
      await host.waitForLine((l) => l['msg'] === 'routes', 5000, from);
      r = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 3, intervalSec: 0.05, timeoutSec: 1 });
      assert.equal(r.received, 0, `without the route: ${r.raw}`);
      // The replies' way back is gone too: host 2's datagrams to pod 1 are now a stranger's.
      const before = await host.counters();
      await lab.exec(lab.podNs(2), ['ping', '-n', '-q', '-c', '3', '-i', '0.05', '-W', '1', lab.podAddr(1)]);
      const afterPing = await host.counters();
      assert.equal(delta(afterPing, before, 'dropRxUnknownSender'), 3, JSON.stringify(afterPing));
      assert.equal(delta(afterPing, before, 'tunWritePackets'), 0, JSON.stringify(afterPing));

      from = host.lines.length;
      host.child.kill('SIGHUP');
      await host.waitForLine((l) => l['msg'] === 'routes', 5000, from);
      r = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 3, intervalSec: 0.05 });
      assert.equal(r.received, 3, `with the route again: ${r.raw}`);

      // The lease moves (to the first half of the subnet, where pod 1 still is): the programs are
      // loaded again with the new subnet, the routes carry over, the counters never go back.
      const beforeMove = await host.counters();
      from = host.lines.length;
      host.child.kill('SIGWINCH');
      const moved = await host.waitForLine((l) => l['msg'] === 'subnet', 5000, from);
      assert.equal(moved['datapath'], 'kernel', JSON.stringify(moved));
      r = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 3, intervalSec: 0.05 });
      assert.equal(r.received, 3, `after the lease moved: ${r.raw}`);
      const afterMove = await host.counters();
      assert.ok(delta(afterMove, beforeMove, 'udpSentPackets') >= 3, JSON.stringify(afterMove));
      assert.ok(delta(afterMove, beforeMove, 'tunWritePackets') >= 3, JSON.stringify(afterMove));
      assert.equal(
        delta(afterMove, beforeMove, 'tunReadPackets'),
        0,
        `still the kernel's: ${JSON.stringify(afterMove)}`,
      );
    } finally {
      await host.stop();
    }
  });
});

describe(
  'kernel fast path on a wire-like underlay: with a userspace host, with socat; fallback; leftovers',
  { timeout: 240_000 },
  () => {
    let lab: Lab;

    before(async () => {
      removeStaleLabNamespaces();
      await requireTools(['iperf3', 'ping', 'ethtool', 'socat', 'tc', 'clang', 'cc']);
      lab = await Lab.create({
        hosts: 2,
        mode: 'flannel-ts',
        agentArgs: (n) => ['--datapath', n === 1 ? 'kernel' : 'userspace'],
        beforeAgents: async (l) => {
          for (const n of l.hostNumbers()) await wireLike(l, n);
        },
      });
    });

    after(async () => {
      await lab?.destroy();
    });

    /** Restarts host n's agent with `env` (NAME=VALUE strings) before its argv. */
    async function restartAgent(
      n: number,
      env: string[],
      extra: string[],
      kill: 'SIGTERM' | 'SIGKILL',
    ): Promise<AgentProcess> {
      const old = lab.agent(n);
      if (kill === 'SIGKILL') {
        old.child.kill('SIGKILL');
        await old.exited();
      } else await old.stop();
      const argv = ['env', ...env, process.execPath, agentEntry(lab.repoDir), ...staticAgentArgs(lab, n), ...extra];
      return lab.startAgent(n, argv, 20_000);
    }

    async function bothWays(what: string): Promise<void> {
      for (const [from, to] of [
        [1, 2],
        [2, 1],
      ] as const) {
        const ping = await lab.ping(lab.podNs(from), lab.podAddr(to), { count: 3, intervalSec: 0.05 });
        assert.equal(ping.received, 3, `${what}: ping pod${from} -> pod${to}: ${ping.raw}`);
        const tcp = await lab.iperf3Tcp(from, to, 2);
        assert.ok(
          tcp.receivedBitsPerSecond > 50e6,
          `${what}: TCP pod${from} -> pod${to}: ${tcp.receivedBitsPerSecond}`,
        );
        const udp = await lab.iperf3Udp(from, to, 2, { payloadBytes: 1200, bandwidth: '20M' });
        assert.ok(udp.deliveredPackets > 1000, `${what}: UDP pod${from} -> pod${to}: ${udp.deliveredPackets}`);
        // A userspace sender (flannel-ts, socat) starved of CPU on a shared machine loses datagrams
        // at flannel0's queue: loss here is a bound, not the interop check (the drop counters and
        // the pods' checksum errors are).
        assert.ok(udp.lostPercent < 25, `${what}: UDP pod${from} -> pod${to} loss ${udp.lostPercent}%`);
      }
      for (const pod of [1, 2]) {
        assert.equal(await checksumErrors(lab, pod, 'Tcp'), 0, `${what}: pod ${pod} TCP checksum errors`);
        assert.equal(await checksumErrors(lab, pod, 'Udp'), 0, `${what}: pod ${pod} UDP checksum errors`);
      }
    }

    test('fast path <-> userspace flannel-ts: ping, TCP and UDP both ways, nothing dropped', async () => {
      assert.equal(forwardingLine(lab, 1)['datapath'], 'kernel');
      assert.equal(forwardingLine(lab, 2)['datapath'], 'userspace');
      await bothWays('kernel <-> userspace');
      const c2 = await lab.agentCounters(2);
      for (const name of [
        'dropRxMalformed',
        'dropRxOversize',
        'dropRxUnknownSender',
        'dropRxSpoofedSource',
        'dropRxTtl',
      ])
        assert.equal(c2[name], 0, `userspace host: ${name}: ${JSON.stringify(c2)}`);
      assert.ok((c2['udpRecvPackets'] ?? 0) > 1000, 'the userspace host received the fast path datagrams');
      const c1 = await lab.agentCounters(1);
      for (const name of [
        'dropRxUnknownSender',
        'dropRxSpoofedSource',
        'dropRxTtl',
        'kernelRxFailed',
        'kernelTxFailed',
      ])
        assert.equal(c1[name], 0, `fast-path host: ${name}: ${JSON.stringify(c1)}`);
      assert.ok((c1['tunWritePackets'] ?? 0) > 1000, 'the fast-path host delivered the userspace host datagrams');
    });

    test('fast path <-> socat (flannel0 as a plain TUN, one packet per datagram): ping, TCP and UDP both ways', async () => {
      await lab.agent(2).stop();
      const socat = lab.spawn(lab.hostNs(2), [
        'socat',
        `UDP4-DATAGRAM:${lab.hostAddr(1)}:${FLANNEL_UDP_PORT},bind=${lab.hostAddr(2)}:${FLANNEL_UDP_PORT},range=${lab.hostAddr(1)}/32`,
        'TUN:10.244.2.0/16,tun-name=flannel0,tun-type=tun,iff-no-pi,iff-up',
      ]);
      try {
        const deadline = Date.now() + 5000;
        while ((await lab.exec(lab.hostNs(2), ['ip', 'link', 'show', 'flannel0'])).code !== 0) {
          assert.ok(Date.now() < deadline && socat.exitCode === null, 'socat created flannel0');
          await new Promise((r) => setTimeout(r, 50));
        }
        await lab.execChecked(lab.hostNs(2), ['ip', 'link', 'set', 'flannel0', 'mtu', '1472']);
        await bothWays('kernel <-> socat');
      } finally {
        socat.kill('SIGTERM');
      }
    });

    test('auto falls back to the userspace datapath when loading is refused (no ELF; the verifier), and says why', async () => {
      const notElf = join(lab.tempDir, 'not-a-bpf-object.o');
      writeFileSync(notElf, 'this is not an ELF file\n');
      // Programs of the right names that the verifier refuses: a packet read without a bounds check.
      const source = join(lab.tempDir, 'unverifiable.bpf.c');
      writeFileSync(
        source,
        [
          '#include <linux/bpf.h>',
          '#include <bpf/bpf_helpers.h>',
          'SEC("tc") int flannel_egress(struct __sk_buff *skb) { return ((unsigned char *)(long)skb->data)[100]; }',
          'SEC("tc") int flannel_ingress(struct __sk_buff *skb) { return 0; }',
          'char LICENSE[] SEC("license") = "GPL";',
        ].join('\n'),
      );
      const unverifiable = join(lab.tempDir, 'unverifiable.bpf.o');
      const triple = execFileSync('cc', ['-print-multiarch'], { encoding: 'utf8' }).trim();
      execFileSync('clang', ['-O2', '-target', 'bpf', `-I/usr/include/${triple}`, '-c', source, '-o', unverifiable]);
      // Host 2 runs no agent now (socat is gone): its userspace agent again.
      lab.agents.delete(2);
      await lab.startAgent(
        2,
        [process.execPath, agentEntry(lab.repoDir), ...staticAgentArgs(lab, 2), '--datapath', 'userspace'],
        20_000,
      );
      for (const [object, why] of [
        [notElf, /cannot open the BPF object/],
        [unverifiable, /the kernel refused the BPF programs: Permission denied .*libbpf: /],
      ] as const) {
        const agent = await restartAgent(1, [`FLANNEL_TS_BPF_OBJECT=${object}`], ['--datapath', 'auto'], 'SIGTERM');
        const line = agent.lines.find((l) => l['msg'] === 'forwarding')!;
        assert.equal(line['datapath'], 'userspace', JSON.stringify(line));
        assert.match(String(line['datapathReason']), why, JSON.stringify(line));
        const ping = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 3, intervalSec: 0.05 });
        assert.equal(ping.received, 3, ping.raw);
      }
    });

    test('kernel refuses to start when loading is refused: exit 1, one line', async () => {
      const bogus = join(lab.tempDir, 'not-a-bpf-object.o');
      writeFileSync(bogus, 'this is not an ELF file\n');
      // In the switch's namespace (a host of its own: no flannel0 or route there to clash with).
      const refused = AgentProcess.start(lab.underlayNs, [
        'env',
        `FLANNEL_TS_BPF_OBJECT=${bogus}`,
        process.execPath,
        agentEntry(lab.repoDir),
        ...['--network', '10.244.0.0/16', '--subnet', '10.244.9.0/24', '--iface', 'br0', '--datapath', 'kernel'],
      ]);
      const { code } = await refused.exited();
      assert.equal(code, 1, refused.describeOutput());
      const fatal = refused.lines.find((l) => l['msg'] === 'fatal');
      assert.match(String(fatal?.['error']), /cannot open the BPF object/, refused.describeOutput());
    });

    test("a crashed agent's clsact filter is replaced by the next agent, and removed when it stops", async () => {
      const filters = async (): Promise<string> =>
        (await lab.execChecked(lab.hostNs(1), ['tc', 'filter', 'show', 'dev', 'eth0', 'ingress'])).stdout;
      let agent = await restartAgent(1, ['FLANNEL_TS_FASTPATH_ATTACH=tc'], ['--datapath', 'kernel'], 'SIGTERM');
      assert.equal(agent.lines.find((l) => l['msg'] === 'forwarding')!['attach'], 'tc');
      assert.equal((await filters()).match(/handle 0x8285 flannel_ingress/g)?.length, 1, await filters());
      // Crash: the filter outlives the process (flannel0, and its egress filter, do not).
      agent = await restartAgent(1, ['FLANNEL_TS_FASTPATH_ATTACH=tc'], ['--datapath', 'kernel'], 'SIGKILL');
      assert.equal(
        (await filters()).match(/handle 0x8285 flannel_ingress/g)?.length,
        1,
        `one filter, the new one: ${await filters()}`,
      );
      const ping = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 3, intervalSec: 0.05 });
      assert.equal(ping.received, 3, ping.raw);
      const c1 = await agent.counters();
      assert.ok((c1['tunWritePackets'] ?? 0) >= 3, `the new agent's programs carry the replies: ${JSON.stringify(c1)}`);
      await agent.stop();
      assert.doesNotMatch(await filters(), /flannel_ingress/, 'removed at a clean stop');
    });
  },
);
