/**
 * One agent per host (issue 13, item 1), flanneld mode on a real etcd, with the udp backend and with
 * vxlan: two hosts forward, each with a pod; then on host 1
 *
 * - a second agent started beside the running one is refused by the host lock: exit 1, one line on
 *   stderr naming the first agent's pid; the first keeps forwarding (a ping running across the
 *   attempt loses nothing) and its routes (and vxlan's neighbours and fdb entries) are as they were;
 * - the running agent is killed (SIGKILL: its device and, with the fast path, its filters left as
 *   they were) and two agents start at the same moment: one takes the host over and forwards, the
 *   other is refused naming the winner's pid; the routes are as before and the ping passes.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  AgentProcess,
  Lab,
  agentEntry,
  removeStaleLabNamespaces,
  requireTools,
  waitForExit,
} from '../../src/lab/index.js';
import { etcdAgentFlags, underlayEtcd, type NamespacedEtcd } from '../../src/lab/etcd.js';

const PREFIX = '/coreos.com/network';

/** Host n's routes, neighbours and fdb entries of the flannel network, as text, sorted. */
async function overlayState(lab: Lab, n: number): Promise<string[]> {
  const h = lab.hostNs(n);
  const text = async (argv: string[]): Promise<string[]> =>
    (await lab.execChecked(h, argv)).stdout
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '');
  const routes = (await text(['ip', '-4', 'route', 'show'])).filter(
    (l) => l.startsWith('10.244.') && !l.includes('dev veth0'),
  );
  const links = await text(['ip', '-o', 'link', 'show']);
  const dev = links.map((l) => l.split(': ')[1]!.split('@')[0]!).find((d) => d.startsWith('flannel'));
  assert.ok(dev !== undefined, `host ${n} has a flannel device: ${links.join('\n')}`);
  const neigh = (await text(['ip', 'neigh', 'show', 'dev', dev])).filter((l) => l.includes('PERMANENT'));
  const fdb = (await text(['bridge', 'fdb', 'show', 'dev', dev])).filter((l) => l.includes(' dst '));
  return [`device ${dev}`, ...routes, ...neigh, ...fdb].sort();
}

for (const backend of ['udp', 'vxlan'] as const) {
  describe(`one agent per host, flanneld mode, ${backend} backend, real etcd`, { timeout: 180_000 }, () => {
    let lab: Lab;
    let etcd: NamespacedEtcd | null = null;
    let tempDir = '';
    const others: AgentProcess[] = [];
    const subnetFile = (n: number): string => join(tempDir, `subnet-h${n}.env`);
    const agentFlags = (n: number): string[] => etcdAgentFlags(subnetFile(n));
    const agentArgv = (n: number): string[] => [process.execPath, agentEntry(lab.repoDir), ...agentFlags(n)];
    const startOther = (): AgentProcess => {
      const a = AgentProcess.start(lab.hostNs(1), agentArgv(1));
      others.push(a);
      return a;
    };
    /** The refused agent's exit code (null: still running after 20 s) and stderr. */
    const refusal = async (a: AgentProcess): Promise<{ code: number | null; stderr: string[] }> => {
      const exited = await Promise.race([
        waitForExit(a.child).then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 20_000).unref()),
      ]);
      await new Promise((r) => setTimeout(r, 50)); // readline's last lines
      const stderr = a.otherOutput.filter((l) => l.startsWith('stderr: ')).map((l) => l.slice(8));
      return { code: exited ? a.child.exitCode : null, stderr };
    };
    const assertRefused = (r: { code: number | null; stderr: string[] }, holderPid: number): void => {
      assert.equal(r.code, 1, r.stderr.join('\n'));
      assert.equal(r.stderr.length, 1, r.stderr.join('\n'));
      assert.match(
        r.stderr[0]!,
        new RegExp(
          `^flannel-ts: another flannel-ts agent runs in this network namespace: pid ${holderPid} \\(flanneld mode, since [0-9T:.Z-]+\\); stop it first$`,
        ),
      );
    };
    const pingAcross = (count: number) =>
      lab.ping(lab.podNs(1), lab.podAddr(2), { count, intervalSec: 0.1, timeoutSec: 1 });
    /**
     * Until pod 1 reaches pod 2, at most 15 s: each agent learns the other's lease through the
     * watch after it started, and the vxlan backend programs the kernel after its "routes" line.
     */
    const reachable = async (): Promise<void> => {
      const deadline = Date.now() + 15_000;
      for (;;) {
        const p = await pingAcross(1);
        if (p.received === 1) return;
        assert.ok(Date.now() < deadline, `pod 2 never became reachable:\n${p.raw}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    before(async () => {
      removeStaleLabNamespaces();
      await requireTools(['ping', 'etcd', 'etcdctl', 'bridge']);
      lab = await Lab.create({
        hosts: 2,
        mode: 'flannel-ts',
        agentStaticConfig: false,
        agentArgs: agentFlags,
        ...(backend === 'vxlan' ? { podMtu: 1450 } : {}),
        beforeAgents: async (l) => {
          tempDir = l.tempDir;
          etcd = underlayEtcd(l, join(tempDir, 'etcd-data'));
          await etcd.start();
          await etcd.ctl('put', `${PREFIX}/config`, `{"Network":"10.244.0.0/16","Backend":{"Type":"${backend}"}}`);
          for (const n of l.hostNumbers()) writeFileSync(subnetFile(n), `FLANNEL_SUBNET=10.244.${n}.1/24\n`);
        },
      });
    });

    after(async () => {
      for (const a of others) if (a.running) await a.stop(2000).catch(() => undefined);
      await lab?.destroy();
    });

    test('a second agent started beside the first is refused naming it; the first keeps forwarding and its routes', async () => {
      const first = lab.agent(1);
      await reachable();
      const warm = await pingAcross(5);
      assert.equal(warm.received, 5, warm.raw);
      const stateBefore = await overlayState(lab, 1);
      assert.ok(
        stateBefore.some((l) => l.startsWith('10.244.')),
        `host 1 routes the flannel network: ${stateBefore.join('\n')}`,
      );
      const pings = pingAcross(40); // 4 s, across the second agent's whole attempt
      const second = startOther();
      const refused = await refusal(second);
      const during = await pings;
      assert.equal(during.received, 40, `no ping lost while the second agent tried: ${during.raw}`);
      assert.deepEqual(await overlayState(lab, 1), stateBefore, 'host 1 kept its device, routes and entries');
      assert.ok(first.running, 'the first agent still runs');
      assertRefused(refused, first.pid);
      const afterwards = await pingAcross(5);
      assert.equal(afterwards.received, 5, afterwards.raw);
    });

    test('the first agent killed, two started at the same moment: one takes over, the other is refused naming it', async () => {
      const first = lab.agent(1);
      const stateBefore = await overlayState(lab, 1);
      first.child.kill('SIGKILL');
      await first.exited();
      const a = startOther();
      const b = startOther();
      const outcome = (x: AgentProcess): Promise<'forwarding' | 'exited'> =>
        Promise.race([
          x.waitForwarding(30_000).then(() => 'forwarding' as const),
          waitForExit(x.child).then(() => 'exited' as const),
        ]);
      const [oa, ob] = await Promise.all([outcome(a), outcome(b)]);
      assert.notEqual(oa, ob, `exactly one forwards:\nA:\n${a.describeOutput()}\nB:\n${b.describeOutput()}`);
      const [winner, loser] = oa === 'forwarding' ? [a, b] : [b, a];
      const refused = await refusal(loser);
      assert.ok(winner.running, 'the winner still runs');
      const r = await pingAcross(10);
      assert.equal(r.received, 10, r.raw);
      assert.deepEqual(await overlayState(lab, 1), stateBefore, 'the winner has the same device, routes and entries');
      assertRefused(refused, winner.pid);
      // And a third, late, is refused by the winner with the routes untouched.
      assertRefused(await refusal(startOther()), winner.pid);
      assert.deepEqual(await overlayState(lab, 1), stateBefore);
      const last = await pingAcross(5);
      assert.equal(last.received, 5, last.raw);
    });
  });
}
