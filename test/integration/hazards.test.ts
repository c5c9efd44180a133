/**
 * Production hazards (issue 13) in namespaces with a real etcd (in the lab's underlay namespace)
 * and two flanneld-mode hosts, each with a pod:
 *
 * - bad peer leases written to etcd are refused (one log line each, counted in /metrics) and never
 *   routed, while traffic between the good hosts flows;
 * - ICMP errors reach the pod on a host with neither accept_local nor a loose rp_filter (the agent
 *   sets accept_local on flannel0 alone): net unreachable for a subnet with no lease, time exceeded
 *   for a TTL that runs out at the agent, both from flannel0's address; under a flood the rate
 *   limit holds.
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
});
