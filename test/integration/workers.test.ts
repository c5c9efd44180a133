/**
 * --workers 2 end to end: the datapath on two worker threads, one per direction, each with its own
 * slab and ring over flannel0 and the UDP socket, writing one shared counters array. Two hosts
 * both with --workers 2 must report it, forward both ways, carry TCP with every offload in force
 * (TSO read on the sender, UDP GRO and coalesced writes on the receiver), and stop cleanly on
 * SIGTERM with final counters. Then host 2 comes back with the default (one thread) and the mixed
 * pair must interoperate. Last, host 1 in flanneld mode (embedded file registry) with
 * FLANNELD_WORKERS=2 reports it as the gauge flannel_ts_datapath_threads.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab, agentEntry, removeStaleLabNamespaces, requireTools, type AgentCounters } from '../../src/lab/index.js';
import { FileKvStore } from '../../src/subnet/file-kv.js';

function counter(c: AgentCounters, name: string): number {
  const v = c[name];
  assert.ok(typeof v === 'number', `agent counters lack "${name}": ${JSON.stringify(c)}`);
  return v;
}

function forwardingLine(lab: Lab, n: number): Record<string, unknown> {
  const line = lab.agent(n).lines.find((l) => l['msg'] === 'forwarding');
  assert.ok(line, `agent ${n} printed a "forwarding" line:\n${lab.agent(n).describeOutput()}`);
  return line;
}

/** Send and write failures: none expected, a handful tolerated (a socket buffer full on a busy 2-core machine). */
function assertFewIoFailures(c: AgentCounters, what: string): void {
  const packets = counter(c, 'udpSentPackets') + counter(c, 'tunWritePackets');
  const allowed = Math.max(10, packets / 1000);
  for (const name of ['dropRxWriteError', 'dropTxSendError']) {
    assert.ok(counter(c, name) <= allowed, `${what}: ${name} ${counter(c, name)} > ${allowed}: ${JSON.stringify(c)}`);
  }
  for (const name of ['dropRxMalformed', 'dropTxMalformed', 'dropTxBadOffload'])
    assert.equal(counter(c, name), 0, `${what}: ${name}`);
}

async function pingBothWays(lab: Lab, what: string): Promise<void> {
  const there = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 3, intervalSec: 0.1 });
  assert.equal(there.received, 3, `${what}: pod1 -> pod2: ${there.raw}`);
  const back = await lab.ping(lab.podNs(2), lab.podAddr(1), { count: 3, intervalSec: 0.1 });
  assert.equal(back.received, 3, `${what}: pod2 -> pod1: ${back.raw}`);
}

describe('--workers 2: one datapath thread per direction', { timeout: 90_000 }, () => {
  let lab: Lab;

  before(async () => {
    removeStaleLabNamespaces();
    await requireTools(['iperf3', 'ping']);
    lab = await Lab.create({
      hosts: 2,
      mode: 'flannel-ts',
      agentArgs: () => ['--workers', '2', '--datapath', 'userspace'],
    });
  });

  after(async () => {
    await lab?.destroy();
  });

  test('each agent reports two forwarding threads (log line "forwarding")', () => {
    for (const n of [1, 2]) {
      const line = forwardingLine(lab, n);
      assert.equal(line['workers'], 2, JSON.stringify(line));
      // The offloads are negotiated as with one thread: the lanes report them together.
      assert.equal(line['tunTso'], true, JSON.stringify(line));
      assert.equal(line['tunGro'], true, JSON.stringify(line));
      assert.equal(line['udpGro'], true, JSON.stringify(line));
      assert.ok(Number(line['udpGso']) > 1, JSON.stringify(line));
    }
  });

  test('ping both ways', async () => {
    await pingBothWays(lab, 'both --workers 2');
  });

  test('TCP for 2 s: TSO read on the sender, UDP GRO and coalesced writes on the receiver', async () => {
    const before1 = await lab.agentCounters(1),
      before2 = await lab.agentCounters(2);
    const tcp = await lab.iperf3Tcp(1, 2, 2);
    assert.ok(tcp.receivedBitsPerSecond > 10e6, `TCP 1->2 ${tcp.receivedBitsPerSecond} bit/s`);
    const c1 = await lab.agentCounters(1),
      c2 = await lab.agentCounters(2);
    const d = (now: AgentCounters, then: AgentCounters, name: string) => counter(now, name) - counter(then, name);
    assert.ok(d(c1, before1, 'tunTsoPackets') > 0, `the sender read TSO super-packets: ${JSON.stringify(c1)}`);
    assert.ok(
      d(c1, before1, 'tunTsoSegments') > d(c1, before1, 'tunTsoPackets'),
      'and cut them into several datagrams',
    );
    assert.ok(d(c2, before2, 'udpGroRuns') > 0, `the receiver received UDP GRO runs: ${JSON.stringify(c2)}`);
    assert.ok(d(c2, before2, 'tunGroWrites') > 0, `the receiver wrote coalesced super-packets: ${JSON.stringify(c2)}`);
    // Both threads wrote the shared counters: the tx lane's and the rx lane's on each host.
    assert.ok(
      d(c1, before1, 'udpSentPackets') > 1000 && d(c1, before1, 'udpRecvPackets') > 0,
      'host 1 sent data, received ACKs',
    );
    assert.ok(
      d(c2, before2, 'udpRecvPackets') > 1000 && d(c2, before2, 'udpSentPackets') > 0,
      'host 2 received data, sent ACKs',
    );
    assert.ok(d(c2, before2, 'udpRecvPackets') >= 0.99 * d(c1, before1, 'udpSentPackets'), JSON.stringify({ c1, c2 }));
    assertFewIoFailures(c1, 'host 1');
    assertFewIoFailures(c2, 'host 2');
  });

  test('on SIGTERM an agent with --workers 2 exits 0, prints its final counters and removes flannel0', async () => {
    const agent = lab.agent(2);
    const last = await lab.agentCounters(2);
    const final = await agent.stop();
    const { code, signal } = await agent.exited();
    assert.equal(code, 0, `agent exit code (signal ${signal}); output:\n${agent.describeOutput()}`);
    assert.ok(final, `a final counters line; output:\n${agent.describeOutput()}`);
    for (const name of [
      'udpRecvPackets',
      'tunWritePackets',
      'tunReadPackets',
      'udpSentPackets',
      'udpGroRuns',
      'tunGroWrites',
    ]) {
      assert.ok(
        counter(final, name) >= counter(last, name),
        `final ${name} ${counter(final, name)} < ${counter(last, name)}`,
      );
    }
    assert.ok(
      agent.lines.some((l) => l['msg'] === 'stopping'),
      'it logged why it stopped',
    );
    const link = await lab.exec(lab.hostNs(2), ['ip', 'link', 'show', 'flannel0']);
    assert.notEqual(link.code, 0, 'flannel0 is gone with the agent');
  });

  test('host 2 back with the default (one thread): the mixed pair interoperates', async () => {
    const old = lab.agent(2);
    assert.ok(!old.running, 'the previous agent has exited');
    const argv = old.argv.filter((a, i, all) => a !== '--workers' && all[i - 1] !== '--workers');
    assert.equal(argv.length, old.argv.length - 2, `argv without --workers 2: ${argv.join(' ')}`);
    await lab.startAgent(2, argv, 20_000);
    assert.equal(forwardingLine(lab, 2)['workers'], 1);
    assert.equal(forwardingLine(lab, 1)['workers'], 2);
    await pingBothWays(lab, 'host 1 --workers 2, host 2 default');
    // The receiving side on worker threads, fed by a sender on one thread.
    const tcp = await lab.iperf3Tcp(2, 1, 1);
    assert.ok(tcp.receivedBitsPerSecond > 10e6, `TCP 2->1 ${tcp.receivedBitsPerSecond} bit/s`);
    assertFewIoFailures(await lab.agentCounters(1), 'host 1 (--workers 2)');
    assertFewIoFailures(await lab.agentCounters(2), 'host 2 (default)');
  });

  test('the --workers 2 agent also stops cleanly after the mixed traffic', async () => {
    const agent = lab.agent(1);
    const final = await agent.stop();
    assert.equal((await agent.exited()).code, 0, agent.describeOutput());
    assert.ok(
      final && counter(final, 'udpRecvPackets') > 0 && counter(final, 'udpSentPackets') > 0,
      JSON.stringify(final),
    );
  });

  test('flanneld mode: FLANNELD_WORKERS=2 runs two threads (flannel_ts_datapath_threads) and counts per peer', async () => {
    const dir = join(lab.tempDir, 'flanneld-h1');
    mkdirSync(dir, { recursive: true });
    const kvFile = join(dir, 'registry.json'),
      subnetFile = join(dir, 'subnet.env');
    const store = new FileKvStore({ path: kvFile });
    await store.put('/coreos.com/network/config', '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}', 0);
    // Host 2 (static mode, from the test before) as a peer: a reservation for its subnet.
    const peerLabels = `subnet="10.244.2.0/24",public_ip="${lab.hostAddr(2)}"`;
    await store.put(
      '/coreos.com/network/subnets/10.244.2.0-24',
      `{"PublicIP":"${lab.hostAddr(2)}","PublicIPv6":null}`,
      0,
    );
    writeFileSync(subnetFile, 'FLANNEL_SUBNET=10.244.1.1/24\n');
    const port = 9911;
    const agent = await lab.startAgent(
      1,
      [
        'env',
        'FLANNELD_WORKERS=2',
        // The TypeScript datapath's threads and per-peer counts are under test, not the kernel fast path.
        'FLANNELD_DATAPATH=userspace',
        process.execPath,
        agentEntry(lab.repoDir),
        '--kv-file',
        kvFile,
        '-iface',
        'eth0',
        `-subnet-file=${subnetFile}`,
        '-healthz-port',
        String(port),
      ],
      20_000,
    );
    const line = forwardingLine(lab, 1);
    assert.equal(line['workers'], 2, JSON.stringify(line));
    // The health server starts just after the "forwarding" line: retry briefly.
    const url = `http://${lab.hostAddr(1)}:${port}/metrics`;
    const scrape = `fetch('${url}').then((r) => r.text()).then((t) => process.stdout.write(t))`;
    let metrics = '';
    for (let attempt = 0; attempt < 40 && !metrics.includes('flannel_ts_datapath_threads'); attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 100));
      metrics = (await lab.exec(lab.hostNs(1), [process.execPath, '-e', scrape], 5000)).stdout;
    }
    assert.match(
      metrics,
      /^flannel_ts_datapath_threads 2$/m,
      `metrics:\n${metrics}\nagent:\n${agent.describeOutput()}`,
    );
    // Per-peer counts, written by both worker threads into one shared array, kept across a route change.
    await pingBothWays(lab, 'host 1 flanneld mode --workers 2, host 2 static');
    const peerSample = (text: string, family: string, extra = ''): number => {
      const m = new RegExp(`^flannel_ts_${family}\\{${peerLabels}${extra}\\} (\\d+)$`, 'm').exec(text);
      assert.ok(m, `${family} for host 2 in:\n${text}`);
      return Number(m[1]);
    };
    const scrapeNow = async () => (await lab.exec(lab.hostNs(1), [process.execPath, '-e', scrape], 5000)).stdout;
    const first = await scrapeNow();
    assert.ok(peerSample(first, 'peer_sent_packets_total') >= 6, 'echo requests and replies sent to host 2');
    assert.ok(peerSample(first, 'peer_received_packets_total') >= 6, 'and received from it');
    assert.ok(peerSample(first, 'peer_sent_bytes_total') >= 6 * 84);
    assert.equal(peerSample(first, 'peer_dropped_packets_total', ',direction="rx"'), 0);
    await store.put('/coreos.com/network/subnets/10.244.3.0-24', '{"PublicIP":"192.0.2.3","PublicIPv6":null}', 0);
    let second = '';
    for (let attempt = 0; attempt < 40 && !second.includes('10.244.3.0/24'); attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 100));
      second = await scrapeNow();
    }
    assert.match(second, /^flannel_ts_peer_sent_packets_total\{subnet="10.244.3.0\/24",[^}]*\} 0$/m, second);
    for (const family of ['peer_sent_packets_total', 'peer_received_packets_total', 'peer_received_bytes_total']) {
      assert.ok(peerSample(second, family) >= peerSample(first, family), `${family} carried over the route change`);
    }
    await agent.stop();
    assert.equal((await agent.exited()).code, 0, agent.describeOutput());
  });
});
