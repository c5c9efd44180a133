/**
 * The vxlan backend end to end, on real etcd: hosts 1 and 2 run flannel-ts in flanneld mode with
 * `"Backend":{"Type":"vxlan"}`; host 3 is set up by hand exactly as flanneld sets a host up (flannel.1,
 * its lease in flanneld's format, its neighbour, fdb and route for each other host). Pods ping across
 * all three; a deleted lease takes every entry with it; a bad BackendData is a warning; a device
 * deleted under an agent comes back; a restart keeps the subnet and the VtepMAC.
 * Needs root, iproute2 (ip, bridge), ping, etcd, etcdctl and the built agent.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Lab } from '../../src/lab/index.js';
import {
  PREFIX,
  createKernelBackendLab,
  ipJson,
  overlayRoutes,
  waitFor,
  type KernelBackendLab,
} from '../helpers/kernel-backend-lab.js';

const CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';
const DEV = 'flannel.1';
const H3_MAC = '0a:58:0a:f4:03:00';
const h3Lease = (mac: string): string =>
  `{"PublicIP":"192.0.2.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;
const key = (n: number): string => `${PREFIX}/subnets/10.244.${n}.0-24`;

interface LinkJson {
  address: string;
  mtu: number;
  flags: string[];
  linkinfo: {
    info_kind: string;
    info_data: { id: number; local: string; link: string; port: number; learning: boolean };
  };
}

async function vxlanLink(lab: Lab, n: number): Promise<LinkJson | undefined> {
  const r = await lab.exec(lab.hostNs(n), ['ip', '-d', '-j', 'link', 'show', 'dev', DEV]);
  return r.code === 0 ? (JSON.parse(r.stdout) as LinkJson[])[0] : undefined;
}

/** Host n's neighbours and fdb entries on flannel.1 as "ip=mac" and "mac>dst". */
async function entries(lab: Lab, n: number): Promise<{ neigh: string[]; fdb: string[] }> {
  const h = lab.hostNs(n);
  const neigh = await ipJson<{ dst: string; lladdr?: string; state?: string[] }>(lab, h, [
    'ip',
    '-j',
    'neigh',
    'show',
    'dev',
    DEV,
  ]);
  const fdb = await ipJson<{ mac: string; dst?: string }>(lab, h, ['bridge', '-j', 'fdb', 'show', 'dev', DEV]);
  return {
    neigh: neigh
      .filter((e) => e.state?.includes('PERMANENT'))
      .map((e) => `${e.dst}=${e.lladdr}`)
      .sort(),
    fdb: fdb
      .filter((e) => e.dst !== undefined)
      .map((e) => `${e.mac}>${e.dst}`)
      .sort(),
  };
}

/** What flanneld programs on a host for peer m (subnet 10.244.m.0/24, PublicIP 192.0.2.m). */
function expectedFor(peers: Map<number, string>): { neigh: string[]; fdb: string[]; routes: string[] } {
  const ms = [...peers.keys()].sort();
  return {
    neigh: ms.map((m) => `10.244.${m}.0=${peers.get(m)}`).sort(),
    fdb: ms.map((m) => `${peers.get(m)}>192.0.2.${m}`).sort(),
    routes: ms.map((m) => `10.244.${m}.0/24 via 10.244.${m}.0 dev ${DEV} onlink`).sort(),
  };
}

describe('vxlan backend: two flannel-ts hosts beside a host set up as flanneld', { timeout: 240_000 }, () => {
  let k: KernelBackendLab;
  let lab: Lab;
  const macs = new Map<number, string>();

  /** Host 3, by hand, as flanneld's vxlan backend: device, address, then ARP, FDB, route per peer. */
  async function programHost3For(m: number, mac: string): Promise<void> {
    const h = lab.hostNs(3);
    const vtep = `10.244.${m}.0`;
    await lab.execChecked(h, ['ip', 'neigh', 'replace', vtep, 'lladdr', mac, 'dev', DEV, 'nud', 'permanent']);
    await lab.execChecked(h, ['bridge', 'fdb', 'replace', mac, 'dev', DEV, 'dst', `192.0.2.${m}`, 'self', 'permanent']);
    await lab.execChecked(h, ['ip', 'route', 'replace', `10.244.${m}.0/24`, 'via', vtep, 'dev', DEV, 'onlink']);
  }

  async function waitEntries(n: number, peers: Map<number, string>, what: string): Promise<void> {
    const want = expectedFor(peers);
    let last = '';
    await waitFor(
      `host ${n}: ${what}`,
      async () => {
        const got = { ...(await entries(lab, n)), routes: await overlayRoutes(lab, n) };
        last = JSON.stringify(got);
        return last === JSON.stringify(want);
      },
      15_000,
      () => `want ${JSON.stringify(want)}\ngot  ${last}\n${lab.agent(n).describeOutput()}`,
    );
  }

  before(async () => {
    k = await createKernelBackendLab(CONFIG, 1450);
    lab = k.lab;
    const h = lab.hostNs(3);
    await lab.execChecked(h, [
      'ip', 'link', 'add', DEV, 'address', H3_MAC, 'mtu', '1450', 'type', 'vxlan', 'id', '1',
      'local', '192.0.2.3', 'dev', 'eth0', 'dstport', '0', 'nolearning',
    ]); // prettier-ignore
    await lab.execChecked(h, ['ip', 'addr', 'add', '10.244.3.0/32', 'dev', DEV]);
    await lab.execChecked(h, ['ip', 'link', 'set', DEV, 'up']);
    await k.etcd.ctl('put', key(3), h3Lease(H3_MAC));
    const leases = await k.etcd.getPrefix(`${PREFIX}/subnets/`);
    for (const n of [1, 2]) {
      const v = JSON.parse(leases.get(key(n)) ?? 'null') as { BackendData?: { VtepMAC?: string } } | null;
      const mac = v?.BackendData?.VtepMAC;
      assert.ok(mac, `host ${n}'s lease carries a VtepMAC: ${leases.get(key(n))}`);
      macs.set(n, mac);
      await programHost3For(n, mac);
    }
    macs.set(3, H3_MAC);
  });

  after(async () => {
    await lab?.destroy();
  });

  test("leases, devices and subnet files are flanneld's", async () => {
    const leases = await k.etcd.getPrefix(`${PREFIX}/subnets/`);
    for (const n of [1, 2]) {
      assert.equal(
        leases.get(key(n)),
        `{"PublicIP":"192.0.2.${n}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${macs.get(n)}"}}`,
      );
      const link = await vxlanLink(lab, n);
      assert.ok(link, `host ${n} has ${DEV}`);
      assert.equal(link.address, macs.get(n));
      assert.equal(link.mtu, 1450);
      assert.ok(link.flags.includes('UP'));
      assert.equal(link.linkinfo.info_kind, 'vxlan');
      const d = link.linkinfo.info_data;
      assert.deepEqual([d.id, d.local, d.link, d.port, d.learning], [1, `192.0.2.${n}`, 'eth0', 8472, false]);
      const addrs = await ipJson<{ addr_info: { local: string; prefixlen: number }[] }>(lab, lab.hostNs(n), [
        'ip', '-j', '-4', 'addr', 'show', 'dev', DEV,
      ]); // prettier-ignore
      assert.deepEqual(
        addrs[0]!.addr_info.map((a) => `${a.local}/${a.prefixlen}`),
        [`10.244.${n}.0/32`],
      );
      const env = readFileSync(k.subnetFile(n), 'utf8');
      assert.match(env, new RegExp(`^FLANNEL_SUBNET=10\\.244\\.${n}\\.1/24$`, 'm'));
      assert.match(env, /^FLANNEL_MTU=1450$/m);
    }
  });

  test('each flannel-ts host has the neighbour, fdb entry and onlink route of each other host', async () => {
    for (const n of [1, 2]) {
      await waitEntries(n, new Map([...macs].filter(([m]) => m !== n)), 'entries for the two others');
    }
  });

  test('pods ping across all three hosts, both ways', async () => {
    for (const from of [1, 2, 3]) {
      for (const to of [1, 2, 3]) {
        if (from === to) continue;
        const r = await lab.ping(lab.podNs(from), lab.podAddr(to), { count: 2, intervalSec: 0.1 });
        assert.equal(r.received, 2, `pod ${from} -> pod ${to}: ${r.raw}`);
      }
    }
    // Full-size packets pass at the vxlan MTU, without fragmentation.
    const big = await lab.ping(lab.podNs(1), lab.podAddr(3), { count: 2, sizeBytes: 1450 - 28, dontFragment: true });
    assert.equal(big.received, 2, big.raw);
  });

  test('a lease with a bad BackendData, or of another backend type, is a warning, not a crash', async () => {
    await k.etcd.ctl('put', key(8), '{"PublicIP":"192.0.2.8","BackendType":"vxlan","BackendData":{"VtepMAC":"zz"}}');
    await k.etcd.ctl('put', key(9), '{"PublicIP":"192.0.2.9","PublicIPv6":null,"BackendType":"host-gw"}');
    for (const n of [1, 2]) {
      const agent = lab.agent(n);
      await waitFor(`host ${n} warned twice`, () => {
        const w = agent.lines.filter((l) => l['level'] === 'warn');
        return (
          w.some((l) => String(l['msg']).startsWith('error decoding subnet lease JSON')) &&
          w.some((l) => l['msg'] === 'ignoring non-vxlan subnet')
        );
      });
      assert.ok(agent.running);
    }
    await k.etcd.ctl('del', key(8));
    await k.etcd.ctl('del', key(9));
    for (const n of [1, 2]) await waitEntries(n, new Map([...macs].filter(([m]) => m !== n)), 'unchanged');
  });

  test("a changed lease replaces all three entries (host 3's new MAC)", async () => {
    const newMac = '0a:58:0a:f4:03:99';
    await lab.execChecked(lab.hostNs(3), ['ip', 'link', 'set', DEV, 'address', newMac]);
    // A new MAC flushes the device's neighbours (permanent ones too): host 3 programs them again.
    for (const m of [1, 2]) await programHost3For(m, macs.get(m)!);
    await k.etcd.ctl('put', key(3), h3Lease(newMac));
    macs.set(3, newMac);
    for (const n of [1, 2]) await waitEntries(n, new Map([...macs].filter(([m]) => m !== n)), 'new MAC of host 3');
    const r = await lab.ping(lab.podNs(1), lab.podAddr(3), { count: 2, intervalSec: 0.1 });
    assert.equal(r.received, 2, r.raw);
  });

  test('a deleted lease removes everything programmed for it', async () => {
    await k.etcd.ctl('del', key(3));
    for (const n of [1, 2]) await waitEntries(n, new Map([[3 - n, macs.get(3 - n)!]]), 'host 3 gone');
    await k.etcd.ctl('put', key(3), h3Lease(macs.get(3)!));
    for (const n of [1, 2]) await waitEntries(n, new Map([...macs].filter(([m]) => m !== n)), 'host 3 back');
  });

  test('the device deleted under a running agent comes back, same MAC, with its entries', async () => {
    await lab.execChecked(lab.hostNs(1), ['ip', 'link', 'del', DEV]);
    await waitFor('flannel.1 back on host 1', async () => (await vxlanLink(lab, 1)) !== undefined);
    const link = await vxlanLink(lab, 1);
    assert.equal(link!.address, macs.get(1));
    await waitEntries(1, new Map([...macs].filter(([m]) => m !== 1)), 'entries after the rebuild');
    const r = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 2, intervalSec: 0.1 });
    assert.equal(r.received, 2, r.raw);
    assert.ok(lab.agent(1).lines.some((l) => l['msg'] === 'VXLAN device recreated'));
  });

  test('a restart keeps the subnet and the VtepMAC, even when the device went meanwhile (reboot)', async () => {
    await lab.agent(2).stop();
    // flanneld leaves the device and its entries when it stops: traffic goes on.
    const during = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 2, intervalSec: 0.1 });
    assert.equal(during.received, 2, `while host 2's agent is stopped: ${during.raw}`);
    await lab.execChecked(lab.hostNs(2), ['ip', 'link', 'del', DEV]);
    await k.startAgent(2);
    const leases = await k.etcd.getPrefix(`${PREFIX}/subnets/`);
    assert.equal(
      leases.get(key(2)),
      `{"PublicIP":"192.0.2.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${macs.get(2)}"}}`,
    );
    assert.equal((await vxlanLink(lab, 2))!.address, macs.get(2));
    await waitEntries(2, new Map([...macs].filter(([m]) => m !== 2)), 'entries after the restart');
    const r = await lab.ping(lab.podNs(3), lab.podAddr(2), { count: 2, intervalSec: 0.1 });
    assert.equal(r.received, 2, r.raw);
  });
});
