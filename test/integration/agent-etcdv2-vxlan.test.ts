/**
 * The flanneld v0.17 tutorial as it is written, vxlan backend included: a real etcd (Debian
 * etcd-server) with --enable-v2 in the lab's underlay namespace, the config written with
 * `ETCDCTL_API=2 etcdctl set` (SubnetMin/SubnetMax, "Backend":{"Type":"vxlan"}), two flannel-ts
 * agents started with a tutorial's flags only (no --etcd-api, no subnet file seeded: each host is
 * new and leases a subnet of its own choosing), the leases read back with `etcdctl -o extended get`
 * as flanneld v0.17's vxlan backend writes them, flannel.1 and the subnet file, mk-docker-opts.sh on
 * it, pods that ping both ways once given their host's leased subnet (as docker would be with
 * --bip), and a restart that keeps the subnet and the VtepMAC.
 * Needs root, iproute2 (ip, bridge), ping, etcd, etcdctl and the built agent.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab, agentEntry, removeStaleLabNamespaces, requireTools, type AgentProcess } from '../../src/lab/index.js';
import { UNDERLAY_ETCD_ENDPOINT, underlayEtcd, type NamespacedEtcd } from '../../src/lab/etcd.js';
import { ipJson, overlayRoutes, waitFor } from '../helpers/kernel-backend-lab.js';

const PREFIX = '/coreos.com/network';
const CONFIG =
  '{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.254.0","Backend":{"Type":"vxlan"}}';
const DEV = 'flannel.1';
const VXLAN_MTU = 1450;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** flanneld v0.17's vxlan lease value: Go's json.Marshal of LeaseAttrs with vxlanLeaseAttrs inside. */
const leaseValue = (n: number, mac: string): string =>
  `{"PublicIP":"192.0.2.${n}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;

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

interface LinkJson {
  address: string;
  mtu: number;
  flags: string[];
  linkinfo: {
    info_kind: string;
    info_data: { id: number; local: string; link: string; port: number; learning: boolean };
  };
}

describe('flanneld v0.17 tutorial with the vxlan backend: etcd v2 registry, two hosts', { timeout: 240_000 }, () => {
  let lab: Lab;
  let etcd: NamespacedEtcd;
  let tempDir = '';
  /** Host n's leased subnet, by its third octet (10.244.x.0/24), as its subnet file says. */
  const third = new Map<number, number>();
  const subnetFile = (n: number): string => join(tempDir, `subnet-h${n}.env`);
  // A tutorial's unit file: ExecStart=/usr/bin/flanneld -etcd-endpoints=... -iface=...
  const tutorialArgs = (n: number): string[] => [
    `-etcd-endpoints=${UNDERLAY_ETCD_ENDPOINT}`,
    '-iface=eth0',
    `--subnet-file=${subnetFile(n)}`,
  ];
  const startAgent = (n: number): Promise<AgentProcess> =>
    lab.startAgent(n, [process.execPath, agentEntry(lab.repoDir), ...tutorialArgs(n)], 20_000);
  const leaseKey = (n: number): string => `${PREFIX}/subnets/10.244.${third.get(n)}.0-24`;
  const podAddr = (n: number): string => `10.244.${third.get(n)}.2`;
  const other = (n: number): number => 3 - n;

  async function vxlanLink(n: number): Promise<LinkJson> {
    const [link] = await ipJson<LinkJson>(lab, lab.hostNs(n), ['ip', '-d', '-j', 'link', 'show', 'dev', DEV]);
    assert.ok(link, `host ${n} has ${DEV}`);
    return link;
  }

  /** What docker does with --bip from the subnet file: the pod network moves into the leased subnet. */
  async function movePodIntoLease(n: number): Promise<void> {
    const x = third.get(n)!;
    await lab.execChecked(lab.hostNs(n), ['ip', '-4', 'addr', 'flush', 'dev', 'veth0']);
    await lab.execChecked(lab.hostNs(n), ['ip', 'addr', 'add', `10.244.${x}.1/24`, 'dev', 'veth0']);
    await lab.execChecked(lab.podNs(n), ['ip', '-4', 'addr', 'flush', 'dev', 'eth0']);
    await lab.execChecked(lab.podNs(n), ['ip', 'addr', 'add', `10.244.${x}.2/24`, 'dev', 'eth0']);
    await lab.execChecked(lab.podNs(n), ['ip', 'route', 'replace', 'default', 'via', `10.244.${x}.1`]);
  }

  /** Host n's neighbour, fdb entry and onlink route for the other host, as flanneld programs them. */
  async function waitPeerEntries(n: number, peerMac: string): Promise<void> {
    const m = other(n);
    const vtep = `10.244.${third.get(m)}.0`;
    const want = JSON.stringify({
      neigh: [`${vtep}=${peerMac}`],
      fdb: [`${peerMac}>192.0.2.${m}`],
      routes: [`${vtep}/24 via ${vtep} dev ${DEV} onlink`],
    });
    let got = '';
    await waitFor(
      `host ${n}'s entries for host ${m}`,
      async () => {
        const h = lab.hostNs(n);
        const neigh = await ipJson<{ dst: string; lladdr?: string; state?: string[] }>(lab, h, [
          'ip', '-j', 'neigh', 'show', 'dev', DEV,
        ]); // prettier-ignore
        const fdb = await ipJson<{ mac: string; dst?: string }>(lab, h, ['bridge', '-j', 'fdb', 'show', 'dev', DEV]);
        got = JSON.stringify({
          neigh: neigh.filter((e) => e.state?.includes('PERMANENT')).map((e) => `${e.dst}=${e.lladdr}`),
          fdb: fdb.filter((e) => e.dst !== undefined).map((e) => `${e.mac}>${e.dst}`),
          routes: await overlayRoutes(lab, n),
        });
        return got === want;
      },
      15_000,
      () => `want ${want}\ngot  ${got}\n${lab.agent(n).describeOutput()}`,
    );
  }

  async function pingBothWays(what: string): Promise<void> {
    for (const from of lab.hostNumbers()) {
      const r = await lab.ping(lab.podNs(from), podAddr(other(from)), { count: 2, intervalSec: 0.1 });
      assert.equal(r.received, 2, `pod${from} -> pod${other(from)} ${what}: ${r.raw}`);
    }
  }

  before(async () => {
    removeStaleLabNamespaces();
    await requireTools(['ping', 'etcd', 'etcdctl', 'bridge']);
    lab = await Lab.create({
      hosts: 2,
      mode: 'flannel-ts',
      agentStaticConfig: false,
      agentArgs: tutorialArgs,
      podMtu: VXLAN_MTU,
      beforeAgents: async (l) => {
        tempDir = l.tempDir;
        etcd = underlayEtcd(l, join(tempDir, 'etcd-data'), { enableV2: true });
        await etcd.start();
        // Exactly as the tutorial has the user do it.
        await etcd.ctl2('set', `${PREFIX}/config`, CONFIG);
      },
    });
    for (const n of lab.hostNumbers()) {
      const m = /^FLANNEL_SUBNET=10\.244\.(\d+)\.1\/24$/m.exec(readFileSync(subnetFile(n), 'utf8'));
      assert.ok(m, `host ${n}'s subnet file names a /24 in 10.244.0.0/16:\n${readFileSync(subnetFile(n), 'utf8')}`);
      third.set(n, Number(m[1]));
    }
    for (const n of lab.hostNumbers()) await movePodIntoLease(n);
  });

  after(async () => {
    await lab?.destroy();
  });

  test('each agent found the config in v2, said so, and leased in v2 only, within SubnetMin..SubnetMax', async () => {
    for (const n of lab.hostNumbers()) {
      const chosen = lab.agent(n).lines.find((l) => l['msg'] === 'etcd API');
      assert.equal(chosen?.['api'], 'v2', lab.agent(n).describeOutput());
      assert.match(String(chosen?.['reason']), /no network config .* in etcd's v3 API; found in its v2 API/);
      const x = third.get(n)!;
      assert.ok(x >= 10 && x <= 254, `host ${n} leased 10.244.${x}.0/24`);
    }
    assert.notEqual(third.get(1), third.get(2));
    const listed = (await etcd.ctl2('ls', `${PREFIX}/subnets`)).trim().split('\n').sort();
    assert.deepEqual(listed, [leaseKey(1), leaseKey(2)].sort());
    assert.equal((await etcd.ctl('get', '--prefix', PREFIX)).trim(), '', 'nothing under the prefix in v3');
  });

  test("leases read with etcdctl are flanneld v0.17's vxlan leases, with a 24 h TTL, their VtepMAC flannel.1's", async () => {
    for (const n of lab.hostNumbers()) {
      const { fields, value } = extended(await etcd.ctl2('-o', 'extended', 'get', leaseKey(n)));
      assert.equal(fields.get('Key'), leaseKey(n));
      const mac = (await vxlanLink(n)).address;
      assert.match(mac, MAC);
      assert.equal(value, leaseValue(n, mac));
      const ttl = Number(fields.get('TTL'));
      assert.ok(ttl > 86_000 && ttl <= 86_400, `TTL ${fields.get('TTL')}`);
    }
  });

  test('flannel.1 and each subnet file are right, and mk-docker-opts.sh turns the file into docker options', async () => {
    for (const n of lab.hostNumbers()) {
      const x = third.get(n)!;
      const link = await vxlanLink(n);
      assert.equal(link.mtu, VXLAN_MTU);
      assert.ok(link.flags.includes('UP'));
      assert.equal(link.linkinfo.info_kind, 'vxlan');
      const d = link.linkinfo.info_data;
      assert.deepEqual([d.id, d.local, d.link, d.port, d.learning], [1, `192.0.2.${n}`, 'eth0', 8472, false]);
      const [addrs] = await ipJson<{ addr_info: { local: string; prefixlen: number }[] }>(lab, lab.hostNs(n), [
        'ip', '-j', '-4', 'addr', 'show', 'dev', DEV,
      ]); // prettier-ignore
      assert.deepEqual(
        addrs!.addr_info.map((a) => `${a.local}/${a.prefixlen}`),
        [`10.244.${x}.0/32`],
      );
      assert.equal(
        readFileSync(subnetFile(n), 'utf8'),
        `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.${x}.1/24\nFLANNEL_MTU=${VXLAN_MTU}\nFLANNEL_IPMASQ=false\n`,
      );
    }
    // ExecStartPost=/usr/bin/mk-docker-opts.sh -k DOCKER_NETWORK_OPTIONS -d /run/flannel/docker
    const out = join(tempDir, 'docker-h1.env');
    const bin = join(lab.repoDir, 'dist', 'src', 'cli', 'mk-docker-opts-main.js');
    const r = spawnSync(process.execPath, [bin, '-k', 'DOCKER_NETWORK_OPTIONS', '-d', out, '-f', subnetFile(1)], {
      encoding: 'utf8',
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' },
    });
    assert.equal(r.status, 0, r.stderr);
    const bip = `10.244.${third.get(1)}.1/24`;
    assert.equal(
      readFileSync(out, 'utf8'),
      `DOCKER_OPT_BIP="--bip=${bip}"\n` +
        'DOCKER_OPT_IPMASQ="--ip-masq=true"\n' +
        'DOCKER_OPT_MTU="--mtu=1450"\n' +
        `DOCKER_NETWORK_OPTIONS=" --bip=${bip} --ip-masq=true --mtu=1450"\n`,
    );
  });

  test('each host has the neighbour, fdb entry and onlink route of the other, and the pods ping both ways', async () => {
    for (const n of lab.hostNumbers()) await waitPeerEntries(n, (await vxlanLink(other(n))).address);
    await pingBothWays('');
    // Full-size packets pass at the vxlan MTU, without fragmentation.
    const big = await lab.ping(lab.podNs(1), podAddr(2), { count: 2, sizeBytes: VXLAN_MTU - 28, dontFragment: true });
    assert.equal(big.received, 2, big.raw);
  });

  test('a restarted agent keeps its subnet and its VtepMAC (its lease stayed in etcd v2)', async () => {
    const mac = (await vxlanLink(2)).address;
    const env = readFileSync(subnetFile(2), 'utf8');
    const old = lab.agent(2);
    await old.stop();
    assert.equal((await old.exited()).code, 0, old.describeOutput());
    assert.equal((await etcd.ctl2('get', leaseKey(2))).trim(), leaseValue(2, mac));
    const agent = await startAgent(2);
    const reused = new RegExp(`Found lease \\(10\\.244\\.${third.get(2)}\\.0/24\\) for current IP, reusing`);
    assert.ok(
      agent.lines.some((l) => reused.test(String(l['msg']))),
      agent.describeOutput(),
    );
    const { fields, value } = extended(await etcd.ctl2('-o', 'extended', 'get', leaseKey(2)));
    assert.equal(value, leaseValue(2, mac));
    assert.ok(Number(fields.get('TTL')) > 86_000, `TTL ${fields.get('TTL')}`);
    assert.deepEqual(
      (await etcd.ctl2('ls', `${PREFIX}/subnets`)).trim().split('\n').sort(),
      [leaseKey(1), leaseKey(2)].sort(),
    );
    assert.equal((await vxlanLink(2)).address, mac);
    assert.equal(readFileSync(subnetFile(2), 'utf8'), env);
    await waitPeerEntries(2, (await vxlanLink(1)).address);
    await waitPeerEntries(1, mac);
    await pingBothWays('after the restart');
  });
});
