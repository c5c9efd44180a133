/**
 * End to end, the way the flanneld v0.7-v0.17 tutorials run it: a real etcd (Debian etcd-server)
 * with --enable-v2 in the lab's underlay namespace on 192.0.2.254:2379, the network config written
 * with `ETCDCTL_API=2 etcdctl set` (SubnetMin/SubnetMax, udp backend), the agents started with a
 * tutorial's flags and nothing more (no --etcd-api: they find the config in v2 by themselves), the
 * leases read back with `etcdctl -o extended get` as flanneld writes them, mk-docker-opts.sh on the
 * subnet file, and a lease written by hand as an old flanneld writes it. Each host's subnet file is
 * pre-seeded with FLANNEL_SUBNET=10.244.N.1/24 so that host N leases the subnet its lab pod lives in.
 * Needs root, iproute2, ping, etcd, etcdctl and the built agent.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  Lab,
  agentEntry,
  removeStaleLabNamespaces,
  requireTools,
  staticAgentArgs,
  type AgentProcess,
} from '../../src/lab/index.js';
import { UNDERLAY_ETCD_ENDPOINT, underlayEtcd, type NamespacedEtcd } from '../../src/lab/etcd.js';
import { assertFlannelHost } from '../helpers/flannel-host.js';

// A tutorial's own prefix, not flannel's default: -etcd-prefix must reach every key.
const PREFIX = '/kubernetes/network';
const CONFIG =
  '{"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.1.0","SubnetMax":"10.244.254.0","Backend":{"Type":"udp"}}';

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

/** `etcdctl -o extended get` output: its fields by name, and the value (the last line). */
function extended(text: string): { fields: Map<string, string>; value: string } {
  const lines = text.trim().split('\n');
  const fields = new Map<string, string>();
  for (const line of lines) {
    const m = /^([A-Za-z-]+): (.*)$/.exec(line);
    if (m !== null) fields.set(m[1]!, m[2]!);
  }
  return { fields, value: lines[lines.length - 1]! };
}

describe('flanneld v0.17 tutorial: etcd v2 registry, three hosts', { timeout: 240_000 }, () => {
  let lab: Lab;
  let etcd: NamespacedEtcd;
  let tempDir = '';
  const subnetFile = (n: number): string => join(tempDir, `subnet-h${n}.env`);
  // A tutorial's unit file: ExecStart=/usr/bin/flanneld -etcd-endpoints=... -etcd-prefix=... -iface=...
  const tutorialArgs = (n: number): string[] => [
    `-etcd-endpoints=${UNDERLAY_ETCD_ENDPOINT}`,
    `-etcd-prefix=${PREFIX}`,
    '-iface=eth0',
    `--subnet-file=${subnetFile(n)}`,
  ];
  const startAgent = (n: number): Promise<AgentProcess> =>
    lab.startAgent(n, [process.execPath, agentEntry(lab.repoDir), ...tutorialArgs(n)], 20_000);
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
  const leaseKey = (n: number): string => `${PREFIX}/subnets/10.244.${n}.0-24`;

  before(async () => {
    removeStaleLabNamespaces();
    await requireTools(['ping', 'etcd', 'etcdctl']);
    lab = await Lab.create({
      hosts: 3,
      mode: 'flannel-ts',
      agentStaticConfig: false,
      agentArgs: tutorialArgs,
      beforeAgents: async (l) => {
        tempDir = l.tempDir;
        etcd = underlayEtcd(l, join(tempDir, 'etcd-data'), { enableV2: true });
        await etcd.start();
        // Exactly as the tutorial has the user do it.
        await etcd.ctl2('set', `${PREFIX}/config`, CONFIG);
        for (const n of l.hostNumbers()) writeFileSync(subnetFile(n), `FLANNEL_SUBNET=10.244.${n}.1/24\n`);
      },
    });
  });

  after(async () => {
    await lab?.destroy();
  });

  test('each agent found the config in v2, said so, and leased in v2 only', async () => {
    for (const n of lab.hostNumbers()) {
      const chosen = lab.agent(n).lines.find((l) => l['msg'] === 'etcd API');
      assert.equal(chosen?.['api'], 'v2', lab.agent(n).describeOutput());
      assert.match(String(chosen?.['reason']), /no network config .* in etcd's v3 API; found in its v2 API/);
    }
    const listed = (await etcd.ctl2('ls', `${PREFIX}/subnets`)).trim().split('\n').sort();
    assert.deepEqual(listed, [1, 2, 3].map(leaseKey));
    // Never half-used: nothing under the prefix in v3.
    assert.equal((await etcd.ctl('get', '--prefix', PREFIX)).trim(), '');
  });

  test("leases read with etcdctl are flanneld's: the value, and a 24 h TTL on the key", async () => {
    for (const n of lab.hostNumbers()) {
      const { fields, value } = extended(await etcd.ctl2('-o', 'extended', 'get', leaseKey(n)));
      assert.equal(fields.get('Key'), leaseKey(n));
      assert.equal(value, `{"PublicIP":"192.0.2.${n}","PublicIPv6":null}`);
      const ttl = Number(fields.get('TTL'));
      assert.ok(ttl > 86_000 && ttl <= 86_400, `TTL ${fields.get('TTL')}`);
    }
    assert.equal((await etcd.ctl2('get', leaseKey(1))).trim(), '{"PublicIP":"192.0.2.1","PublicIPv6":null}');
  });

  test('each subnet file and flannel0 are right, and mk-docker-opts.sh turns the file into docker options', async () => {
    for (const n of lab.hostNumbers()) await assertFlannelHost(lab, n, subnetFile(n));
    // ExecStartPost=/usr/bin/mk-docker-opts.sh -k DOCKER_NETWORK_OPTIONS -d /run/flannel/docker
    const out = join(tempDir, 'docker-h1.env');
    const bin = join(lab.repoDir, 'dist', 'src', 'cli', 'mk-docker-opts-main.js');
    const r = spawnSync(process.execPath, [bin, '-k', 'DOCKER_NETWORK_OPTIONS', '-d', out, '-f', subnetFile(1)], {
      encoding: 'utf8',
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      readFileSync(out, 'utf8'),
      'DOCKER_OPT_BIP="--bip=10.244.1.1/24"\n' +
        'DOCKER_OPT_IPMASQ="--ip-masq=true"\n' +
        'DOCKER_OPT_MTU="--mtu=1472"\n' +
        'DOCKER_NETWORK_OPTIONS=" --bip=10.244.1.1/24 --ip-masq=true --mtu=1472"\n',
    );
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

  test('a restarted agent gets the same subnet back (its lease stayed in etcd v2)', async () => {
    const old = lab.agent(2);
    await old.stop();
    assert.equal((await old.exited()).code, 0, old.describeOutput());
    assert.equal((await etcd.ctl2('get', leaseKey(2))).trim(), '{"PublicIP":"192.0.2.2","PublicIPv6":null}');
    const agent = await startAgent(2);
    assert.ok(
      agent.lines.some((l) => /Found lease \(10\.244\.2\.0\/24\) for current IP, reusing/.test(String(l['msg']))),
      agent.describeOutput(),
    );
    await waitRoutes(2, expectedRoutes(2, [1, 2, 3]));
    const r = await lab.ping(lab.podNs(2), lab.podAddr(1), { count: 2, intervalSec: 0.05 });
    assert.equal(r.received, 2, `pod2 -> pod1 after the restart: ${r.raw}`);
  });

  test('etcd restarted under the agents: routes kept, traffic goes on, the v2 watches resume', async () => {
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
    await etcd.ctl2('set', '--ttl', '600', `${PREFIX}/subnets/10.244.77.0-24`, '{"PublicIP":"192.0.2.77"}');
    for (const n of lab.hostNumbers())
      await waitRoutes(n, [...expectedRoutes(n, [1, 2, 3]), '10.244.77.0/24=192.0.2.77'].sort(), 'after the restart');
    await etcd.ctl2('rm', `${PREFIX}/subnets/10.244.77.0-24`);
    for (const n of lab.hostNumbers()) await waitRoutes(n, expectedRoutes(n, [1, 2, 3]));
  });

  test('a lease written by hand as an old flanneld writes it is routed, and reused by a flannel-ts agent', async () => {
    // Host 3 turns into an old flanneld host: its lease is the v0.5-v0.14 value with a 24 h TTL,
    // and its forwarding is done by the static agent.
    await lab.agent(3).stop();
    await etcd.ctl2('rm', leaseKey(3));
    await waitRoutes(1, expectedRoutes(1, [1, 2]));
    await etcd.ctl2('set', '--ttl', '86400', leaseKey(3), '{"PublicIP":"192.0.2.3"}');
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
    // The host switches to flannel-ts with the same flags: it takes over that lease and renews it.
    await standIn.stop();
    const agent = await startAgent(3);
    assert.ok(
      agent.lines.some((l) => /Found lease \(10\.244\.3\.0\/24\) for current IP, reusing/.test(String(l['msg']))),
      agent.describeOutput(),
    );
    const { value, fields } = extended(await etcd.ctl2('-o', 'extended', 'get', leaseKey(3)));
    assert.equal(value, '{"PublicIP":"192.0.2.3","PublicIPv6":null}');
    assert.ok(Number(fields.get('TTL')) > 86_000);
    const r = await lab.ping(lab.podNs(3), lab.podAddr(1), { count: 2, intervalSec: 0.05 });
    assert.equal(r.received, 2, `pod3 -> pod1: ${r.raw}`);
  });
});
