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

  test('flanneld mode: FLANNELD_WORKERS=2 runs two threads, reported by /metrics as flannel_ts_datapath_threads', async () => {
    const dir = join(lab.tempDir, 'flanneld-h1');
    mkdirSync(dir, { recursive: true });
    const kvFile = join(dir, 'registry.json'),
      subnetFile = join(dir, 'subnet.env');
    await new FileKvStore({ path: kvFile }).put(
      '/coreos.com/network/config',
      '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}',
      0,
    );
    writeFileSync(subnetFile, 'FLANNEL_SUBNET=10.244.1.1/24\n');
    const port = 9911;
    const agent = await lab.startAgent(
      1,
      [
        'env',
        'FLANNELD_WORKERS=2',
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
    const scrape = `fetch('http://${lab.hostAddr(1)}:${port}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`;
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
    await agent.stop();
    assert.equal((await agent.exited()).code, 0, agent.describeOutput());
  });
});
