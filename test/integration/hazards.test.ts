/**
 * Production hazards (issue 13) in namespaces with a real etcd (in the lab's underlay namespace)
 * and two flanneld-mode hosts, each with a pod:
 *
 * - bad peer leases written to etcd are refused (one log line each, counted in /metrics) and never
 *   routed, while traffic between the good hosts flows.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab, removeStaleLabNamespaces, requireTools, type AgentProcess } from '../../src/lab/index.js';
import { UNDERLAY_ETCD_ENDPOINT, underlayEtcd, type NamespacedEtcd } from '../../src/lab/etcd.js';

const PREFIX = '/coreos.com/network';
const CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}';
const HEALTHZ_PORT = 9921;

function latestRoutes(agent: AgentProcess): string[] | null {
  for (let i = agent.lines.length - 1; i >= 0; i--) {
    const l = agent.lines[i]!;
    if (l['msg'] === 'routes') return [...(l['routes'] as string[])].sort();
  }
  return null;
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('production hazards, flanneld mode with a real etcd, two hosts', { timeout: 300_000 }, () => {
  let lab: Lab;
  let etcd: NamespacedEtcd;
  let tempDir = '';
  const subnetFile = (n: number): string => join(tempDir, `subnet-h${n}.env`);
  const agentArgs = (n: number): string[] => [
    '--etcd-endpoints',
    UNDERLAY_ETCD_ENDPOINT,
    '--iface',
    'eth0',
    '--subnet-file',
    subnetFile(n),
    '--healthz-port',
    String(HEALTHZ_PORT),
  ];
  const metrics = async (n: number): Promise<string> => {
    const scrape = `fetch('http://${lab.hostAddr(n)}:${HEALTHZ_PORT}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`;
    return (await lab.exec(lab.hostNs(n), [process.execPath, '-e', scrape], 5000)).stdout;
  };
  const refusedLines = (n: number): string[] =>
    lab
      .agent(n)
      .lines.map((l) => String(l['msg']))
      .filter((m) => m.startsWith('Refusing lease'));

  before(async () => {
    removeStaleLabNamespaces();
    await requireTools(['ping', 'etcd', 'etcdctl']);
    lab = await Lab.create({
      hosts: 2,
      mode: 'flannel-ts',
      agentStaticConfig: false,
      agentArgs,
      beforeAgents: async (l) => {
        tempDir = l.tempDir;
        etcd = underlayEtcd(l, join(tempDir, 'etcd-data'));
        await etcd.start();
        await etcd.ctl('put', `${PREFIX}/config`, CONFIG);
        for (const n of l.hostNumbers()) writeFileSync(subnetFile(n), `FLANNEL_SUBNET=10.244.${n}.1/24\n`);
      },
    });
  });

  after(async () => {
    await lab?.destroy();
  });

  test('bad peer leases are refused with one line and a counter each, and never routed; good traffic flows', async () => {
    const good = ['10.244.1.0/24=192.0.2.1', '10.244.2.0/24=192.0.2.2'];
    for (const n of lab.hostNumbers()) {
      await waitFor(
        `host ${n} routes`,
        () => JSON.stringify(latestRoutes(lab.agent(n))) === JSON.stringify(good.filter((r) => !r.endsWith(`.${n}`))),
      );
    }
    const pinging = lab.ping(lab.podNs(1), lab.podAddr(2), { count: 20, intervalSec: 0.1, timeoutSec: 1 });
    const bad: [string, string, RegExp][] = [
      ['10.9.0.0-24', '192.0.2.9', /not inside network 10\.244\.0\.0\/16.*outside_network/],
      ['0.0.0.0-0', '192.0.2.9', /outside_network/],
      ['10.244.1.128-25', '192.0.2.9', /overlaps our own subnet.*overlaps_own_subnet/],
      ['10.244.30.0-24', '127.0.0.1', /loopback.*public_ip_not_unicast/],
      ['10.244.31.0-24', '0.0.0.0', /public_ip_not_unicast/],
      ['10.244.32.0-24', '224.0.0.1', /multicast.*public_ip_not_unicast/],
      ['10.244.33.0-24', '255.255.255.255', /broadcast.*public_ip_not_unicast/],
      ['10.244.34.0-24', '192.0.2.1', /our own.*public_ip_ours/],
      ['10.244.2.64-26', '192.0.2.9', /overlaps the older lease .*10\.244\.2\.0-24.*overlaps_lease/],
    ];
    for (const [key, ip] of bad) {
      await etcd.ctl('put', `${PREFIX}/subnets/${key}`, `{"PublicIP":"${ip}","PublicIPv6":null}`);
    }
    // The same bad values again (as a renewal storm would): no new lines.
    for (const [key, ip] of bad.slice(0, 3)) {
      await etcd.ctl('put', `${PREFIX}/subnets/${key}`, `{"PublicIP":"${ip}","PublicIPv6":null}`);
    }
    await waitFor('host 1 refused every bad lease', () => refusedLines(1).length >= bad.length);
    await new Promise((r) => setTimeout(r, 500));
    const lines = refusedLines(1);
    assert.equal(lines.length, bad.length, lines.join('\n'));
    for (const [key, , re] of bad) {
      const line = lines.find((l) => l.includes(`/subnets/${key}:`));
      assert.ok(line, `a line for ${key}:\n${lines.join('\n')}`);
      assert.match(line, re);
    }
    assert.deepEqual(latestRoutes(lab.agent(1)), ['10.244.2.0/24=192.0.2.2'], 'nothing routed from a bad lease');
    const r = await pinging;
    assert.equal(r.received, 20, `pod1 -> pod2 while bad leases arrived: ${r.raw}`);
    const text = await metrics(1);
    const count = (reason: string): number =>
      Number(
        new RegExp(`^flannel_ts_refusals_total\\{input="lease",reason="${reason}"\\} (\\d+)$`, 'm').exec(text)?.[1] ??
          0,
      );
    assert.equal(count('outside_network'), 2, text);
    assert.equal(count('overlaps_own_subnet'), 1, text);
    assert.equal(count('public_ip_not_unicast'), 4, text);
    assert.equal(count('public_ip_ours'), 1, text);
    assert.equal(count('overlaps_lease'), 1, text);
    for (const [key] of bad) await etcd.ctl('del', `${PREFIX}/subnets/${key}`);
  });
});
