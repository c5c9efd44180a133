/**
 * The host-gw backend end to end, on real etcd: hosts 1 and 2 run flannel-ts in flanneld mode with
 * `"Backend":{"Type":"host-gw"}`; host 3 is set up by hand exactly as flanneld's host-gw sets a host
 * up (its lease, a route per other host via its PublicIP). Pods ping across all three; a deleted
 * lease takes its route with it; a route deleted by someone else comes back (flanneld's 10 s check);
 * a peer that is not directly connected is refused with one log line; another type is a warning.
 * Needs root, iproute2, ping, etcd, etcdctl and the built agent.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Lab } from '../../src/lab/index.js';
import {
  PREFIX,
  createKernelBackendLab,
  overlayRoutes,
  waitFor,
  type KernelBackendLab,
} from '../helpers/kernel-backend-lab.js';

const CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}';
const key = (n: number): string => `${PREFIX}/subnets/10.244.${n}.0-24`;
const leaseOf = (n: number): string => `{"PublicIP":"192.0.2.${n}","PublicIPv6":null,"BackendType":"host-gw"}`;
const routesFor = (peers: readonly number[]): string[] =>
  peers.map((m) => `10.244.${m}.0/24 via 192.0.2.${m} dev eth0`).sort();

describe('host-gw backend: two flannel-ts hosts beside a host set up as flanneld', { timeout: 240_000 }, () => {
  let k: KernelBackendLab;
  let lab: Lab;

  async function waitRoutes(n: number, peers: readonly number[], what: string, timeoutMs = 15_000): Promise<void> {
    const want = JSON.stringify(routesFor(peers));
    let last = '';
    await waitFor(
      `host ${n}: ${what}`,
      async () => (last = JSON.stringify(await overlayRoutes(lab, n))) === want,
      timeoutMs,
      () => `want ${want}\ngot  ${last}\n${lab.agent(n).describeOutput()}`,
    );
  }

  before(async () => {
    k = await createKernelBackendLab(CONFIG, 1500);
    lab = k.lab;
    await k.etcd.ctl('put', key(3), leaseOf(3));
    for (const m of [1, 2]) {
      await lab.execChecked(lab.hostNs(3), [
        'ip',
        'route',
        'replace',
        `10.244.${m}.0/24`,
        'via',
        `192.0.2.${m}`,
        'dev',
        'eth0',
      ]);
    }
  });

  after(async () => {
    await lab?.destroy();
  });

  test("leases and subnet files are flanneld's; each host routes to the others via their PublicIP", async () => {
    const leases = await k.etcd.getPrefix(`${PREFIX}/subnets/`);
    for (const n of [1, 2]) {
      assert.equal(leases.get(key(n)), leaseOf(n));
      const env = readFileSync(k.subnetFile(n), 'utf8');
      assert.match(env, /^FLANNEL_MTU=1500$/m);
      await waitRoutes(
        n,
        [1, 2, 3].filter((m) => m !== n),
        'routes to the others',
      );
    }
  });

  test('pods ping across all three hosts, both ways, at full size', async () => {
    for (const from of [1, 2, 3]) {
      for (const to of [1, 2, 3]) {
        if (from === to) continue;
        const r = await lab.ping(lab.podNs(from), lab.podAddr(to), { count: 2, intervalSec: 0.1 });
        assert.equal(r.received, 2, `pod ${from} -> pod ${to}: ${r.raw}`);
      }
    }
    const big = await lab.ping(lab.podNs(1), lab.podAddr(3), { count: 2, sizeBytes: 1500 - 28, dontFragment: true });
    assert.equal(big.received, 2, big.raw);
  });

  test('a peer not on a directly connected network: one log line; another type: a warning; no crash', async () => {
    await k.etcd.ctl('put', key(7), '{"PublicIP":"198.51.100.7","PublicIPv6":null,"BackendType":"host-gw"}');
    await k.etcd.ctl(
      'put',
      key(8),
      '{"PublicIP":"192.0.2.8","BackendType":"vxlan","BackendData":{"VtepMAC":"0a:00:00:00:00:08"}}',
    );
    for (const n of [1, 2]) {
      const agent = lab.agent(n);
      await waitFor(
        `host ${n} warned`,
        () =>
          agent.lines.some((l) => l['msg'] === 'Ignoring non-host-gw subnet') &&
          agent.lines.some((l) => String(l['msg']).includes('directly connected network')),
      );
    }
    await new Promise((r) => setTimeout(r, 11_000)); // past one route check and retry
    for (const n of [1, 2]) {
      const refusals = lab.agent(n).lines.filter((l) => String(l['msg']).includes('directly connected network'));
      assert.equal(refusals.length, 1, lab.agent(n).describeOutput());
      assert.match(String(refusals[0]!['peer']), /10\.244\.7\.0\/24 via 198\.51\.100\.7/);
      assert.ok(lab.agent(n).running);
      await waitRoutes(
        n,
        [1, 2, 3].filter((m) => m !== n),
        'unchanged',
      );
    }
    await k.etcd.ctl('del', key(7));
    await k.etcd.ctl('del', key(8));
  });

  test('a route deleted by someone else is put back within the 10 s check', async () => {
    await lab.execChecked(lab.hostNs(1), ['ip', 'route', 'del', '10.244.3.0/24']);
    await waitRoutes(1, [2, 3], 'route to host 3 recovered', 15_000);
    assert.ok(lab.agent(1).lines.some((l) => l['msg'] === 'Route recovered'));
  });

  test('a deleted lease removes its route; put back, the route comes back', async () => {
    await k.etcd.ctl('del', key(3));
    for (const n of [1, 2]) await waitRoutes(n, [3 - n], 'host 3 gone');
    await k.etcd.ctl('put', key(3), leaseOf(3));
    for (const n of [1, 2]) await waitRoutes(n, [3 - n, 3], 'host 3 back');
  });

  test('a restart keeps the subnet; the routes stay while the agent is down', async () => {
    await lab.agent(2).stop();
    const during = await lab.ping(lab.podNs(2), lab.podAddr(3), { count: 2, intervalSec: 0.1 });
    assert.equal(during.received, 2, during.raw);
    await k.startAgent(2);
    const leases = await k.etcd.getPrefix(`${PREFIX}/subnets/`);
    assert.equal(leases.get(key(2)), leaseOf(2));
    await waitRoutes(2, [1, 3], 'routes after the restart');
  });
});
