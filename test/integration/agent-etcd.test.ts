/**
 * End to end, flanneld mode with a real etcd server (Debian etcd-server) in the lab's underlay
 * namespace on 192.0.2.254:2379, and three hosts, each with a pod. A user's steps: the config is
 * written with `etcdctl put`, the agents start with --etcd-endpoints. Each host's subnet file is
 * pre-seeded with FLANNEL_SUBNET=10.244.N.1/24, so flannel's previous-subnet rule gives host N the
 * subnet its lab pod lives in. Needs root, iproute2, ping, etcd, etcdctl and the built agent.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  Lab,
  agentEntry,
  removeStaleLabNamespaces,
  requireTools,
  staticAgentArgs,
  type AgentCounters,
  type AgentProcess,
} from '../../src/lab/index.js';
import { UNDERLAY_ETCD_ENDPOINT, etcdAgentFlags, underlayEtcd, type NamespacedEtcd } from '../../src/lab/etcd.js';
import { assertFlannelHost } from '../helpers/flannel-host.js';

const PREFIX = '/coreos.com/network';
const ENDPOINT = UNDERLAY_ETCD_ENDPOINT;
const CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}';

function latestRoutes(agent: AgentProcess): string[] | null {
  for (let i = agent.lines.length - 1; i >= 0; i--) {
    const l = agent.lines[i]!;
    if (l['msg'] === 'routes') return [...(l['routes'] as string[])].sort();
  }
  return null;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 15_000, describe?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${describe ? `\n${describe()}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Connects to argv[1]:80 and prints how it failed and how fast ({code, ms}). */
const TCP_PROBE = `
const started = Date.now();
const s = require('node:net').connect({ host: process.argv[1], port: 80, timeout: 5000 });
const done = (code) => { console.log(JSON.stringify({ code, ms: Date.now() - started })); s.destroy(); };
s.on('connect', () => done('CONNECTED'));
s.on('timeout', () => done('TIMEOUT'));
s.on('error', (e) => done(e.code));
`;

function delta(after: AgentCounters, before: AgentCounters, name: string): number {
  return (after[name] ?? 0) - (before[name] ?? 0);
}

describe('flanneld mode with a real etcd, three hosts', { timeout: 240_000 }, () => {
  let lab: Lab;
  let etcd: NamespacedEtcd;
  let tempDir = '';
  const subnetFile = (n: number): string => join(tempDir, `subnet-h${n}.env`);
  // Host 1 forwards on a worker thread per direction, so that route updates, a moved lease
  // (new subnet) and stopping are also exercised across threads.
  const agentArgs = (n: number): string[] => [
    ...etcdAgentFlags(subnetFile(n), ENDPOINT),
    ...(n === 1 ? ['--workers', '2'] : []),
  ];
  const startEtcdAgent = (n: number): Promise<AgentProcess> =>
    lab.startAgent(n, [process.execPath, agentEntry(lab.repoDir), ...agentArgs(n)], 20_000);
  /** Routes every agent but `except` should have, with host `without` absent. */
  const expectedRoutes = (n: number, hosts: readonly number[]): string[] =>
    hosts
      .filter((m) => m !== n)
      .map((m) => `10.244.${m}.0/24=192.0.2.${m}`)
      .sort();
  const waitRoutes = (n: number, expected: readonly string[], extra = ''): Promise<void> =>
    waitFor(
      `host ${n} routes = ${expected.join(' ')} ${extra}`,
      () => JSON.stringify(latestRoutes(lab.agent(n))) === JSON.stringify(expected),
      15_000,
      () => lab.agent(n).describeOutput(),
    );

  before(async () => {
    removeStaleLabNamespaces();
    await requireTools(['ping', 'etcd', 'etcdctl']);
    lab = await Lab.create({
      hosts: 3,
      mode: 'flannel-ts',
      agentStaticConfig: false,
      agentArgs,
      beforeAgents: async (l) => {
        tempDir = l.tempDir;
        etcd = underlayEtcd(l, join(tempDir, 'etcd-data'));
        await etcd.start();
        // Exactly as a flannel tutorial (v3 API) has the user do it.
        await etcd.ctl('put', `${PREFIX}/config`, CONFIG);
        for (const n of l.hostNumbers()) writeFileSync(subnetFile(n), `FLANNEL_SUBNET=10.244.${n}.1/24\n`);
      },
    });
  });

  after(async () => {
    await lab?.destroy();
  });

  test('each agent leased a distinct subnet, written in flannel format', async () => {
    const leases = await etcd.getPrefix(`${PREFIX}/subnets/`);
    assert.deepEqual(
      [...leases.keys()].sort(),
      [1, 2, 3].map((n) => `${PREFIX}/subnets/10.244.${n}.0-24`),
    );
    for (const n of lab.hostNumbers()) {
      assert.equal(leases.get(`${PREFIX}/subnets/10.244.${n}.0-24`), `{"PublicIP":"192.0.2.${n}","PublicIPv6":null}`);
    }
    // flannel's 24 h TTL on each lease.
    const ttl = await etcd.ctl('get', `${PREFIX}/subnets/10.244.1.0-24`, '-w', 'json');
    // The lease ID is a 64-bit integer: read it from the text, not through a JS number.
    const leaseId = BigInt(/"lease":(\d+)/.exec(ttl)?.[1] ?? '0');
    assert.ok(leaseId > 0n, `the key is attached to an etcd lease: ${ttl}`);
    const ttlOut = await etcd.ctl('lease', 'timetolive', leaseId.toString(16));
    const seconds = Number(/remaining\((\d+)s\)/.exec(ttlOut)?.[1]);
    assert.ok(seconds > 86_000 && seconds <= 86_400, `TTL ${ttlOut}`);
  });

  test('each subnet file and flannel0 are right', async () => {
    for (const n of lab.hostNumbers()) {
      await assertFlannelHost(lab, n, subnetFile(n));
    }
  });

  test('every pod pings every other', async () => {
    for (const n of lab.hostNumbers()) await waitRoutes(n, expectedRoutes(n, [1, 2, 3]));
    for (const from of lab.hostNumbers()) {
      for (const to of lab.hostNumbers()) {
        if (from === to) continue;
        const r = await lab.ping(lab.podNs(from), lab.podAddr(to), { count: 2, intervalSec: 0.05 });
        assert.equal(r.received, 2, `pod${from} -> pod${to}: ${r.raw}`);
      }
    }
  });

  test('a restarted agent gets the same subnet back (its lease stayed in etcd)', async () => {
    const old = lab.agent(2);
    await old.stop();
    assert.equal((await old.exited()).code, 0, old.describeOutput());
    const leases = await etcd.getPrefix(`${PREFIX}/subnets/`);
    assert.ok(leases.has(`${PREFIX}/subnets/10.244.2.0-24`), 'SIGTERM left the lease in etcd');
    const agent = await startEtcdAgent(2);
    assert.ok(
      agent.lines.some((l) => /Found lease \(10\.244\.2\.0\/24\) for current IP, reusing/.test(String(l['msg']))),
      agent.describeOutput(),
    );
    await waitRoutes(2, expectedRoutes(2, [1, 2, 3]));
    const r = await lab.ping(lab.podNs(2), lab.podAddr(1), { count: 2, intervalSec: 0.05 });
    assert.equal(r.received, 2, `pod2 -> pod1 after the restart: ${r.raw}`);
  });

  test('etcd restarted mid-traffic: no route is lost, traffic goes on, the watch resumes', async () => {
    const routesBefore = lab.hostNumbers().map((n) => latestRoutes(lab.agent(n)));
    const count = 30;
    const pinging = lab.ping(lab.podNs(1), lab.podAddr(3), { count, intervalSec: 0.1, timeoutSec: 1 });
    await new Promise((r) => setTimeout(r, 500));
    await etcd.kill();
    await new Promise((r) => setTimeout(r, 1500));
    const during = await lab.ping(lab.podNs(2), lab.podAddr(1), { count: 3, intervalSec: 0.05 });
    assert.equal(during.received, 3, `pod2 -> pod1 while etcd is down: ${during.raw}`);
    await etcd.start();
    const r = await pinging;
    assert.equal(r.received, count, `pod1 -> pod3 across the etcd restart: ${r.raw}`);
    for (const n of lab.hostNumbers()) {
      assert.ok(lab.agent(n).running, `agent ${n} survived the etcd restart:\n${lab.agent(n).describeOutput()}`);
      assert.deepEqual(latestRoutes(lab.agent(n)), routesBefore[n - 1], `host ${n} kept its routes`);
    }
    // The watches reconnected by themselves: a new lease reaches every agent, and so does its removal.
    await etcd.ctl('put', `${PREFIX}/subnets/10.244.77.0-24`, '{"PublicIP":"192.0.2.77","PublicIPv6":null}');
    for (const n of lab.hostNumbers())
      await waitRoutes(
        n,
        [...expectedRoutes(n, [1, 2, 3]), '10.244.77.0/24=192.0.2.77'].sort(),
        'after the etcd restart',
      );
    await etcd.ctl('del', `${PREFIX}/subnets/10.244.77.0-24`);
    for (const n of lab.hostNumbers()) await waitRoutes(n, expectedRoutes(n, [1, 2, 3]));
  });

  test("a stopped host's deleted lease removes its route on the others (net unreachable)", async () => {
    await lab.agent(3).stop();
    await etcd.ctl('del', `${PREFIX}/subnets/10.244.3.0-24`);
    await waitRoutes(1, expectedRoutes(1, [1, 2]));
    await waitRoutes(2, expectedRoutes(2, [1, 2]));
    const before1 = await lab.agentCounters(1);
    // flannel sends no ICMP error about an ICMP packet: ping just goes unanswered...
    const r = await lab.ping(lab.podNs(1), lab.podAddr(3), { count: 2, intervalSec: 0.05, timeoutSec: 1 });
    assert.equal(r.received, 0, r.raw);
    // ...while a TCP connect fails at once with the agent's ICMP net unreachable.
    const probe = await lab.exec(lab.podNs(1), [process.execPath, '-e', TCP_PROBE, lab.podAddr(3)], 10_000);
    const outcome = JSON.parse(probe.stdout) as { code: string; ms: number };
    assert.equal(outcome.code, 'ENETUNREACH', probe.stdout + probe.stderr);
    assert.ok(outcome.ms < 2000, `failed fast: ${outcome.ms} ms`);
    const after1 = await lab.agentCounters(1);
    assert.ok(delta(after1, before1, 'dropTxNoRoute') >= 3, `host 1 had no route: ${JSON.stringify(after1)}`);
    assert.ok(
      delta(after1, before1, 'icmpUnreachableSent') >= 1,
      `host 1 answered net unreachable: ${JSON.stringify(after1)}`,
    );
  });

  test('a peer whose lease was written by hand in flannel format (as flanneld writes it) gets traffic', async () => {
    // Host 3 now plays a flanneld host: its lease put with etcdctl, its forwarding by the static agent.
    await etcd.ctl('put', `${PREFIX}/subnets/10.244.3.0-24`, '{"PublicIP":"192.0.2.3","PublicIPv6":null}');
    await waitRoutes(1, expectedRoutes(1, [1, 2, 3]));
    await waitRoutes(2, expectedRoutes(2, [1, 2, 3]));
    const standIn = await lab.startAgent(
      3,
      [process.execPath, agentEntry(lab.repoDir), ...staticAgentArgs(lab, 3)],
      20_000,
    );
    for (const [from, to] of [
      [1, 3],
      [3, 2],
      [2, 3],
    ] as const) {
      const r = await lab.ping(lab.podNs(from), lab.podAddr(to), { count: 2, intervalSec: 0.05 });
      assert.equal(r.received, 2, `pod${from} -> pod${to}: ${r.raw}`);
    }
    // And a flannel-ts agent started on that host takes the hand-written entry (no TTL: a reservation).
    await standIn.stop();
    const agent = await startEtcdAgent(3);
    assert.ok(
      agent.lines.some((l) => /Found reservation \(10\.244\.3\.0\/24\) for current IP, reusing/.test(String(l['msg']))),
      agent.describeOutput(),
    );
    const r = await lab.ping(lab.podNs(3), lab.podAddr(1), { count: 2, intervalSec: 0.05 });
    assert.equal(r.received, 2, `pod3 -> pod1: ${r.raw}`);
  });
  test('a lease taken over by another PublicIP: the agent re-acquires, moves flannel0 and rewrites the subnet file', async () => {
    const agent = lab.agent(1);
    const from = agent.lines.length;
    await etcd.ctl('put', `${PREFIX}/subnets/10.244.1.0-24`, '{"PublicIP":"192.0.2.99","PublicIPv6":null}');
    const moved = await agent.waitForLine((l) => l['msg'] === 'lease lost and re-acquired', 15_000, from);
    const subnet = String(moved['subnet']);
    const m = /^10\.244\.(\d+)\.0\/24$/.exec(subnet);
    assert.ok(m && subnet !== '10.244.1.0/24', `a new subnet: ${JSON.stringify(moved)}`);
    await agent.waitForLine((l) => l['msg'] === 'subnet file written', 5000, from);
    assert.equal(
      readFileSync(subnetFile(1), 'utf8'),
      `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.${m[1]}.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n`,
    );
    const addr = await lab.execChecked(lab.hostNs(1), ['ip', '-j', 'addr', 'show', 'dev', 'flannel0']);
    const [link] = JSON.parse(addr.stdout) as { addr_info: { local: string; prefixlen: number }[] }[];
    assert.deepEqual(
      link!.addr_info.map((a) => `${a.local}/${a.prefixlen}`),
      [`10.244.${m[1]}.0/32`],
    );
    const leases = await etcd.getPrefix(`${PREFIX}/subnets/`);
    assert.equal(leases.get(`${PREFIX}/subnets/10.244.${m[1]}.0-24`), '{"PublicIP":"192.0.2.1","PublicIPv6":null}');
    await waitRoutes(
      2,
      [`10.244.${m[1]}.0/24=192.0.2.1`, '10.244.1.0/24=192.0.2.99', '10.244.3.0/24=192.0.2.3'].sort(),
    );
    // Host 1 (its source address is now flannel0's new one) reaches pod 2, and the reply comes back.
    const r = await lab.ping(lab.hostNs(1), lab.podAddr(2), { count: 2, intervalSec: 0.05 });
    assert.equal(r.received, 2, `host1 -> pod2 from the new subnet: ${r.raw}`);
  });
});
