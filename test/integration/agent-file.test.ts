/**
 * End to end, flanneld mode with the embedded file registry (--kv-file): two hosts in network
 * namespaces share one registry file, no etcd. The config is written late and first invalid, so
 * the agents must wait with a message and retry; then they lease, write their subnet files and
 * route to each other from the registry. Needs root, iproute2, ping and the built agent.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab, agentEntry, removeStaleLabNamespaces, requireTools, type AgentProcess } from '../../src/lab/index.js';
import { FileKvStore } from '../../src/subnet/file-kv.js';
import { assertFlannelHost } from '../helpers/flannel-host.js';

const PREFIX = '/coreos.com/network';
const GOOD_CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}';
const BAD_CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"ipip"}}';

function latestRoutes(agent: AgentProcess): string[] | null {
  for (let i = agent.lines.length - 1; i >= 0; i--) {
    const l = agent.lines[i]!;
    if (l['msg'] === 'routes') return [...(l['routes'] as string[])].sort();
  }
  return null;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('flanneld mode with the embedded file registry (--kv-file), two hosts', { timeout: 120_000 }, () => {
  let lab: Lab;
  let kvPath = '';
  /** The lab's temp dir, known from beforeAgents on (before Lab.create returns). */
  let tempDir = '';
  const subnetFile = (n: number): string => join(tempDir, `subnet-h${n}.env`);
  const agentArgs = (n: number): string[] => ['--kv-file', kvPath, '-iface', 'eth0', `-subnet-file=${subnetFile(n)}`];
  const timers: NodeJS.Timeout[] = [];

  before(async () => {
    removeStaleLabNamespaces();
    await requireTools(['ping']);
    lab = await Lab.create({
      hosts: 2,
      mode: 'flannel-ts',
      agentStaticConfig: false,
      agentArgs,
      beforeAgents: async (l) => {
        tempDir = l.tempDir;
        kvPath = join(tempDir, 'registry', 'flannel.json');
        // flannel's previous-subnet rule: host N asks for 10.244.N.0/24, where the lab's pod lives.
        for (const n of l.hostNumbers()) writeFileSync(subnetFile(n), `FLANNEL_SUBNET=10.244.${n}.1/24\n`);
        // No config at first; an invalid one after 1.5 s; the right one after 3 s.
        const store = new FileKvStore({ path: kvPath });
        const put = (value: string): void => {
          store.put(`${PREFIX}/config`, value, 0).catch(() => undefined);
        };
        timers.push(
          setTimeout(() => put(BAD_CONFIG), 1500),
          setTimeout(() => put(GOOD_CONFIG), 3000),
        );
      },
    });
  });

  after(async () => {
    for (const t of timers) clearTimeout(t);
    await lab?.destroy();
  });

  test('the agents waited for the config with a message, named the invalid field, then started', () => {
    for (const n of lab.hostNumbers()) {
      const lines = lab.agent(n).lines;
      const waiting = lines.find((l) => l['msg'] === 'waiting for the network config');
      assert.ok(waiting, `host ${n} said it waits for the config:\n${lab.agent(n).describeOutput()}`);
      assert.equal(waiting['key'], `${PREFIX}/config`);
      const invalid = lines.find((l) => l['msg'] === 'invalid network config');
      assert.ok(invalid, `host ${n} reported the invalid config`);
      assert.equal(invalid['field'], 'Backend.Type');
      assert.match(String(invalid['error']), /ipip/);
      assert.ok(
        lines.some((l) => l['msg'] === 'forwarding'),
        'and then forwarded',
      );
    }
  });

  test('each host leased its previous subnet; the registry holds flannel-format leases', async () => {
    const store = new FileKvStore({ path: kvPath });
    const listing = await store.list(`${PREFIX}/subnets/`);
    const byKey = Object.fromEntries(listing.kvs.map((kv) => [kv.key, kv]));
    for (const n of lab.hostNumbers()) {
      const kv = byKey[`${PREFIX}/subnets/10.244.${n}.0-24`];
      assert.ok(kv, `lease of host ${n} in ${JSON.stringify(Object.keys(byKey))}`);
      assert.equal(kv.value, `{"PublicIP":"192.0.2.${n}","PublicIPv6":null}`);
      assert.ok(kv.expiresAt !== null && kv.expiresAt > Date.now() + 23 * 3600_000, 'a 24 h TTL');
    }
    assert.equal(listing.kvs.length, 2);
  });

  test('subnet files and flannel0 are as flanneld makes them', async () => {
    for (const n of lab.hostNumbers()) {
      await assertFlannelHost(lab, n, subnetFile(n));
    }
  });

  test('routes come from the registry and pods ping each other both ways', async () => {
    await waitFor(
      'routes on both hosts',
      () =>
        JSON.stringify(latestRoutes(lab.agent(1))) === JSON.stringify(['10.244.2.0/24=192.0.2.2']) &&
        JSON.stringify(latestRoutes(lab.agent(2))) === JSON.stringify(['10.244.1.0/24=192.0.2.1']),
    );
    const there = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 3, intervalSec: 0.1 });
    assert.equal(there.received, 3, `pod1 -> pod2: ${there.raw}`);
    const back = await lab.ping(lab.podNs(2), lab.podAddr(1), { count: 3, intervalSec: 0.1 });
    assert.equal(back.received, 3, `pod2 -> pod1: ${back.raw}`);
  });

  test('SIGTERM keeps the lease; a restarted agent gets the same subnet back and forwards again', async () => {
    const agent = lab.agent(2);
    await agent.stop();
    assert.equal((await agent.exited()).code, 0, agent.describeOutput());
    const gone = await lab.exec(lab.hostNs(2), ['ip', 'link', 'show', 'flannel0']);
    assert.notEqual(gone.code, 0, 'flannel0 went with the agent');
    const store = new FileKvStore({ path: kvPath });
    const kept = await store.get(`${PREFIX}/subnets/10.244.2.0-24`);
    assert.ok(kept, 'the lease stays in the registry');

    const again = await lab.startAgent(2, [process.execPath, agentEntry(lab.repoDir), ...agentArgs(2)], 20_000);
    assert.ok(
      again.lines.some((l) => /Found lease \(10\.244\.2\.0\/24\) for current IP, reusing/.test(String(l['msg']))),
      again.describeOutput(),
    );
    const back = await lab.ping(lab.podNs(2), lab.podAddr(1), { count: 3, intervalSec: 0.1 });
    assert.equal(back.received, 3, `pod2 -> pod1 after the restart: ${back.raw}`);
  });
});
