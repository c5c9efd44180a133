/**
 * Production hazards (issue 13) in namespaces with a real etcd (in the lab's underlay namespace)
 * and two flanneld-mode hosts, each with a pod:
 *
 * - bad peer leases written to etcd are refused (one log line each, counted in /metrics) and never
 *   routed, while traffic between the good hosts flows;
 * - ICMP errors reach the pod on a host with neither accept_local nor a loose rp_filter (the agent
 *   sets accept_local on flannel0 alone): net unreachable for a subnet with no lease, time exceeded
 *   for a TTL that runs out at the agent, both from flannel0's address; under a flood the rate
 *   limit holds;
 * - the network config changed under running agents: refused with one line and a counter each;
 * - etcd wiped and restarted empty under running agents, while a new host takes host 1's subnet
 *   before host 1 can reach etcd again: each agent says so in one line, /readyz goes 503 and back
 *   to 200, the leases are re-created within seconds (host 2 on its subnet, host 1 on a new one),
 *   and no two hosts share a subnet.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab, removeStaleLabNamespaces, requireTools, type AgentProcess } from '../../src/lab/index.js';
import { etcdAgentFlags, underlayEtcd, type NamespacedEtcd } from '../../src/lab/etcd.js';

const PREFIX = '/coreos.com/network';
const CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}';
const HEALTHZ_PORT = 9921;

/**
 * Sends `count` UDP datagrams with TTL `ttl` to argv[1]:33434 from a pod, and prints the ICMP
 * messages the pod then receives (a raw socket: [source, type, code] each) as JSON.
 */
const ICMP_PROBE = `
import json, socket, sys, time
dst, ttl, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
started = time.time()
for i in range(count):
    try:
        udp.sendto(b'probe %d' % i, (dst, 33434))
    except OSError:
        pass
sent_for = time.time() - started
got = []
raw.settimeout(1.0)
while True:
    try:
        data, addr = raw.recvfrom(4096)
    except socket.timeout:
        break
    ihl = (data[0] & 15) * 4
    got.append([addr[0], data[ihl], data[ihl + 1]])
print(json.dumps({'icmp': got, 'seconds': sent_for}))
`;

interface ProbeResult {
  icmp: [string, number, number][];
  seconds: number;
}

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
  const agentArgs = (n: number): string[] => [...etcdAgentFlags(subnetFile(n)), '--healthz-port', String(HEALTHZ_PORT)];
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
        // A strict host: no accept_local anywhere (the lab sets it by default) and strict reverse-path
        // filtering; whatever ICMP delivery needs, the agent must set itself.
        for (const n of l.hostNumbers()) {
          await l.execChecked(l.hostNs(n), [
            'sysctl',
            '-q',
            '-w',
            'net.ipv4.conf.default.accept_local=0',
            'net.ipv4.conf.all.accept_local=0',
            'net.ipv4.conf.eth0.accept_local=0',
            'net.ipv4.conf.veth0.accept_local=0',
            'net.ipv4.conf.default.rp_filter=1',
            'net.ipv4.conf.all.rp_filter=1',
          ]);
        }
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

  const probe = async (n: number, dst: string, ttl: number, count: number): Promise<ProbeResult> => {
    const r = await lab.execChecked(
      lab.podNs(n),
      ['python3', '-c', ICMP_PROBE, dst, String(ttl), String(count)],
      60_000,
    );
    return JSON.parse(r.stdout) as ProbeResult;
  };

  test('flannel0 has accept_local (set by the agent), and nothing else does', async () => {
    for (const n of lab.hostNumbers()) {
      const r = await lab.execChecked(lab.hostNs(n), [
        'sysctl',
        '-n',
        'net.ipv4.conf.flannel0.accept_local',
        'net.ipv4.conf.all.accept_local',
        'net.ipv4.conf.eth0.accept_local',
      ]);
      assert.deepEqual(r.stdout.trim().split('\n'), ['1', '0', '0'], `host ${n}`);
    }
  });

  test('a pod gets net unreachable from flannel0 for a subnet with no lease', async () => {
    const before = await lab.agentCounters(1);
    const r = await probe(1, '10.244.77.7', 64, 1);
    assert.deepEqual(r.icmp, [['10.244.1.0', 3, 0]], JSON.stringify(r));
    const after = await lab.agentCounters(1);
    assert.equal((after['icmpUnreachableSent'] ?? 0) - (before['icmpUnreachableSent'] ?? 0), 1);
  });

  test('a pod gets time exceeded from flannel0 for a TTL that runs out at the agent (traceroute sees the hop)', async () => {
    // TTL 2: host 1's kernel forwards it with TTL 1 into flannel0, where the agent cannot forward it.
    const r = await probe(1, lab.podAddr(2), 2, 1);
    assert.deepEqual(r.icmp, [['10.244.1.0', 11, 0]], JSON.stringify(r));
    // TTL 1: host 1's own kernel answers, from the pod's gateway.
    const k = await probe(1, lab.podAddr(2), 1, 1);
    assert.deepEqual(k.icmp, [[lab.podGateway(1), 11, 0]], JSON.stringify(k));
  });

  test('under a flood with no route, the rate limit holds: a burst of 6, then about one a second', async () => {
    await new Promise((r) => setTimeout(r, 1500)); // let the earlier tests' tokens come back
    const before = await lab.agentCounters(1);
    const r = await probe(1, '10.244.77.7', 64, 30_000);
    const after = await lab.agentCounters(1);
    const sent = (after['icmpUnreachableSent'] ?? 0) - (before['icmpUnreachableSent'] ?? 0);
    const limited = (after['icmpRateLimited'] ?? 0) - (before['icmpRateLimited'] ?? 0);
    const noRoute = (after['dropTxNoRoute'] ?? 0) - (before['dropTxNoRoute'] ?? 0);
    const allowed = 6 + Math.ceil(r.seconds) + 1;
    assert.ok(noRoute > 10_000, `the flood reached the agent: ${noRoute}`);
    assert.ok(
      sent >= 6 && sent <= allowed,
      `${sent} net unreachable sent in ${r.seconds.toFixed(1)} s (at most ${allowed})`,
    );
    assert.equal(sent + limited, noRoute, 'every offender answered or counted as held back');
    assert.equal(r.icmp.length, sent, `the pod received what was sent: ${JSON.stringify(r.icmp)}`);
    assert.ok(lab.agent(1).running);
  });

  const readyz = async (n: number): Promise<number> => {
    const get = `fetch('http://${lab.hostAddr(n)}:${HEALTHZ_PORT}/readyz').then((r) => process.stdout.write(String(r.status)), () => process.stdout.write('0'))`;
    return Number((await lab.exec(lab.hostNs(n), [process.execPath, '-e', get], 5000)).stdout);
  };
  test('a network config changed under running agents: one line and a counter on each, nothing changes', async () => {
    const from = lab.hostNumbers().map((n) => lab.agent(n).lines.length);
    await etcd.ctl('put', `${PREFIX}/config`, '{"Network":"10.245.0.0/16","Backend":{"Type":"udp"}}');
    await etcd.ctl('put', `${PREFIX}/config`, '{"Network":"10.245.0.0/16","Backend":{"Type":"udp"}}');
    for (const n of lab.hostNumbers()) {
      await lab
        .agent(n)
        .waitForLine(
          (l) =>
            /changed while this agent runs \(Network 10\.244\.0\.0\/16 -> 10\.245\.0\.0\/16,/.test(String(l['msg'])),
          10_000,
          from[n - 1],
        );
      const text = await metrics(n);
      assert.match(text, /^flannel_ts_refusals_total\{input="config",reason="changed_while_running"\} 1$/m, text);
    }
    await etcd.ctl('put', `${PREFIX}/config`, CONFIG);
    const r = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 2, intervalSec: 0.05 });
    assert.equal(r.received, 2, r.raw);
  });

  test("etcd wiped under running agents (and a newcomer on host 1's subnet): leases re-created, /readyz follows, no shared subnet", async () => {
    for (const n of lab.hostNumbers()) assert.equal(await readyz(n), 200);
    const from = lab.hostNumbers().map((n) => lab.agent(n).lines.length);
    // /readyz polled every 20 ms from inside host 2, each change of status printed.
    const statuses: number[] = [];
    const poller = lab.spawn(lab.hostNs(2), [
      process.execPath,
      '-e',
      `let last = 0; setInterval(() => fetch('http://${lab.hostAddr(2)}:${HEALTHZ_PORT}/readyz').then((r) => { if (r.status !== last) { last = r.status; console.log(last); } }, () => {}), 20);`,
    ]);
    let pollerErr = '';
    poller.stdout!.on('data', (d: Buffer) => statuses.push(...d.toString().trim().split('\n').map(Number)));
    poller.stderr!.on('data', (d: Buffer) => (pollerErr += d.toString()));
    await waitFor('the /readyz poller to see 200', () => statuses.length > 0 || pollerErr !== '');
    assert.deepEqual(statuses, [200], pollerErr);
    // Host 1 cannot reach etcd for a while (its connections refused at once).
    const block = [
      'OUTPUT',
      '-d',
      '192.0.2.254',
      '-p',
      'tcp',
      '--dport',
      '2379',
      '-j',
      'REJECT',
      '--reject-with',
      'tcp-reset',
    ];
    await lab.execChecked(lab.hostNs(1), ['iptables', '-I', ...block]);
    try {
      await etcd.kill();
      rmSync(join(tempDir, 'etcd-data'), { recursive: true, force: true });
      await etcd.start();
      const back = Date.now();
      // The operator restores the config; a new host leases 10.244.1.0/24, which host 1 still uses.
      await etcd.ctl('put', `${PREFIX}/config`, CONFIG);
      await etcd.ctl('put', `${PREFIX}/subnets/10.244.1.0-24`, '{"PublicIP":"192.0.2.99","PublicIPv6":null}');
      // Host 2: one line, not ready, then its lease back on the same subnet within seconds, ready again.
      const said = await lab
        .agent(2)
        .waitForLine(
          (l) =>
            l['msg'] ===
            'the registry was reset: re-creating our lease and listing the peers again; not ready until done',
          15_000,
          from[1],
        );
      assert.match(String(said['reason']), /revision went back/);
      const done = await lab
        .agent(2)
        .waitForLine((l) => l['msg'] === 'lease re-created after the registry reset', 15_000, from[1]);
      await new Promise((r) => setTimeout(r, 200));
      poller.kill();
      assert.equal(done['subnet'], '10.244.2.0/24');
      assert.ok(Date.now() - back < 10_000, `re-created ${Date.now() - back} ms after etcd came back`);
      assert.deepEqual(
        statuses.slice(-2),
        [503, 200],
        `/readyz: 503 while the lease was re-created, then 200: ${statuses.join(' ')}`,
      );
      assert.equal(await readyz(2), 200);
      assert.equal(
        lab
          .agent(2)
          .lines.slice(from[1])
          .filter((l) => String(l['msg']).startsWith('the registry was reset')).length,
        1,
        'one line',
      );
    } finally {
      poller.kill();
      await lab.execChecked(lab.hostNs(1), ['iptables', '-D', ...block]);
    }
    // Host 1 comes back to a registry where its subnet is taken: it moves, and says so.
    const moved = await lab
      .agent(1)
      .waitForLine((l) => l['msg'] === 'lease re-created after the registry reset', 20_000, from[0]);
    assert.notEqual(moved['subnet'], '10.244.1.0/24', JSON.stringify(moved));
    assert.equal(await readyz(1), 200);
    const leases = await etcd.getPrefix(`${PREFIX}/subnets/`);
    const bySubnet = [...leases.entries()]
      .map(([k, v]) => `${k.slice(`${PREFIX}/subnets/`.length)}=${(JSON.parse(v) as { PublicIP: string }).PublicIP}`)
      .sort();
    const host1 = String(moved['subnet']).replace('/', '-');
    assert.deepEqual(bySubnet, [`10.244.1.0-24=192.0.2.99`, '10.244.2.0-24=192.0.2.2', `${host1}=192.0.2.1`].sort());
    // Host 2 routes to host 1's new subnet.
    await waitFor('host 2 routes to host 1 on its new subnet', () =>
      (latestRoutes(lab.agent(2)) ?? []).includes(`${moved['subnet']}=192.0.2.1`),
    );
  });
});
