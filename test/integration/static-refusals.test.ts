/**
 * Static mode refuses, before creating anything, a network that would replace or shadow one of the
 * host's routes: in a namespace of its own (an underlay eth0 on a veth pair), the agent exits 2
 * with one line and the host's routes are untouched. A second agent on a host where one already
 * forwards is refused by the host lock (one line naming the first), and the first keeps its route.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { EtcdNetns } from '../helpers/etcd-netns.js';
import { requireToolsFor } from '../../src/lab/exec.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

describe('static mode against the host', { timeout: 60_000 }, () => {
  let ns: EtcdNetns;
  const routes = async (): Promise<string> => (await ns.exec('ip', ['-4', 'route', 'show', 'table', 'all'])).trim();
  const runAgent = (args: string[]): Promise<{ code: number | null; stderr: string }> =>
    new Promise((resolve) => {
      const child = ns.spawn(process.execPath, [MAIN, '--iface', 'eth0', ...args]);
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      child.once('exit', (code) => resolve({ code, stderr }));
    });

  before(() => {
    requireToolsFor('the static refusal tests', ['ip']);
    ns = EtcdNetns.create();
  });
  after(async () => {
    await ns?.destroy();
  });

  test('a network overlapping the underlay or another route: exit 2, one line, routes untouched', async () => {
    await ns.exec('ip', ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
    await ns.exec('ip', ['link', 'set', 'eth0p', 'up']);
    await ns.exec('ip', ['addr', 'add', '192.0.2.1/24', 'dev', 'eth0']);
    await ns.exec('ip', ['link', 'set', 'eth0', 'up']);
    await ns.exec('ip', ['route', 'add', 'default', 'via', '192.0.2.254']);
    await ns.exec('ip', ['route', 'add', '10.245.0.0/16', 'via', '192.0.2.253']);
    const before = await routes();
    for (const [args, why] of [
      [['--network', '192.0.0.0/16', '--subnet', '192.0.1.0/24'], /contains this host's own address 192\.0\.2\.1/],
      [['--network', '192.0.2.0/24', '--subnet', '192.0.2.0/26'], /own address|underlay route/],
      [['--network', '10.0.0.0/8', '--subnet', '10.244.1.0/24'], /overlaps the host route 10\.245\.0\.0\/16/],
      [['--network', '0.0.0.0/0', '--subnet', '10.244.1.0/24'], /default route/],
      [['--network', '10.244.0.0/16', '--subnet', '10.244.1.0/24', '--peer', '10.244.2.0/24=192.0.2.1'], /own/],
    ] as const) {
      const r = await runAgent([...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, why);
      assert.equal(await routes(), before, `${args.join(' ')} left the routes as they were`);
    }
  });

  test('a second agent is refused by the host lock, naming the first; the first keeps forwarding with its route', async () => {
    const args = ['--network', '10.244.0.0/16', '--subnet', '10.244.1.0/24', '--peer', '10.244.2.0/24=192.0.2.2'];
    const first = ns.spawn(process.execPath, [MAIN, '--iface', 'eth0', ...args]);
    let out = '';
    await new Promise<void>((resolve, reject) => {
      first.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('"forwarding"')) resolve();
      });
      first.once('exit', (code) => reject(new Error(`first agent exited ${code}: ${out}`)));
    });
    assert.match(await routes(), /10\.244\.0\.0\/16 dev flannel0/);
    const second = await runAgent(args);
    assert.equal(second.code, 1, second.stderr);
    assert.equal(second.stderr.trim().split('\n').length, 1, second.stderr);
    assert.match(
      second.stderr,
      new RegExp(`another flannel-ts agent runs in this network namespace: pid ${first.pid} \\(static mode`),
    );
    assert.match(await routes(), /10\.244\.0\.0\/16 dev flannel0/, 'the first agent kept its route');
    assert.equal(first.exitCode, null, 'the first agent still runs');
    first.kill('SIGTERM');
    await new Promise((r) => first.once('exit', r));
  });
});
