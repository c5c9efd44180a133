// flannel's --ip-masq and --iptables-forward-rules chains, applied for real with iptables inside a
// network namespace this test creates (unique name per run, deleted in finally and by exit/signal
// handlers). The modules run iptables through a command prefix (`ip netns exec NS`), so the host's
// own tables are never touched. A missing iptables or ip fails the test, naming the package.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { applyIpMasq, ipMasqInPlace, removeIpMasq } from '../../src/link/ipmasq.js';
import { startFlannelIptables } from '../../src/link/iptables-rules.js';
import { applyForwardRules, forwardRulesInPlace, removeForwardRules } from '../../src/link/forward-rules.js';
import {
  ensureChain,
  runIptables,
  tableRuleLines,
  tableChains,
  versionSupportsRandomFully,
  type ManagedChain,
} from '../../src/link/iptables-chain.js';
import { parseCidr } from '../../src/routing-table/ipv4.js';
import { requireToolsFor } from '../../src/lab/exec.js';

const TOOLS: Record<string, string> = {
  ip: 'iproute2',
  iptables: 'iptables',
  'iptables-save': 'iptables',
  'iptables-restore': 'iptables',
};
const SEARCH_PATH = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin']);
const NS_PREFIX = 'ftipm';

function requireTools(): void {
  requireToolsFor('the ipmasq integration test', Object.keys(TOOLS));
}

const env = { ...process.env, PATH: SEARCH_PATH.join(':') };
const sh = (argv: string[]) =>
  execFileSync(argv[0], argv.slice(1), { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'pipe'] });

/** Deletes namespaces left by earlier runs that were killed before their cleanup could run. */
function sweepOrphans(): void {
  let names: string[];
  try {
    names = readdirSync('/run/netns').filter((n) => n.startsWith(NS_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(/^ftipm(\d+)x/.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    try {
      process.kill(pid, 0);
      continue; // its owner is alive: not ours to remove
    } catch {
      // owner gone
    }
    try {
      sh(['ip', 'netns', 'del', name]);
    } catch {
      // already gone
    }
  }
}

const ns = `${NS_PREFIX}${process.pid}x${randomBytes(3).toString('hex')}`;
let created = false;
const inNs = { commandPrefix: ['ip', 'netns', 'exec', ns] };

function deleteNamespace(): void {
  if (!created) return;
  created = false;
  try {
    sh(['ip', 'netns', 'del', ns]);
  } catch {
    // best effort
  }
}

function onSignal(signal: NodeJS.Signals): void {
  deleteNamespace();
  process.kill(process.pid, signal);
}

before(() => {
  requireTools();
  sweepOrphans();
  process.on('exit', deleteNamespace);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(s, onSignal);
  sh(['ip', 'netns', 'add', ns]);
  created = true;
});

after(() => {
  deleteNamespace();
  assert.ok(!existsSync(join('/run/netns', ns)), `namespace ${ns} should be gone`);
});

const save = (table: 'nat' | 'filter') => sh(['ip', 'netns', 'exec', ns, 'iptables-save', '-t', table]);
const iptablesInNs = (...args: string[]) => sh(['ip', 'netns', 'exec', ns, 'iptables', '-w', ...args]);

const network = parseCidr('10.244.0.0/16');
const subnet = parseCidr('10.244.7.0/24');

function masqLines(subnetCidr: string, randomFully: boolean): string[] {
  const rf = randomFully ? ' --random-fully' : '';
  return [
    '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
    '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
    `-A FLANNEL-POSTRTG -s ${subnetCidr} -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
    `-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d ${subnetCidr} -m comment --comment "flanneld masq" -j RETURN`,
    `-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d ${subnetCidr} -m comment --comment "flanneld masq" -j RETURN`,
    `-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE${rf}`,
    `-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE${rf}`,
  ];
}

const OTHER_NAT = '-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE';
const OTHER_FILTER = '-A FORWARD -i eth9 -j DROP';

test('--ip-masq: apply, idempotent re-apply, repair, subnet change, remove', async () => {
  const randomFully = versionSupportsRandomFully(sh(['ip', 'netns', 'exec', ns, 'iptables', '--version']));
  // Someone else's rule, which must survive everything below.
  iptablesInNs('-t', 'nat', '-A', 'POSTROUTING', '-s', '172.17.0.0/16', '!', '-o', 'docker0', '-j', 'MASQUERADE');

  await applyIpMasq({ ...inNs, network, subnet });
  assert.deepEqual(tableRuleLines(save('nat'), 'nat'), [OTHER_NAT, ...masqLines('10.244.7.0/24', randomFully)]);
  assert.equal(await ipMasqInPlace({ ...inNs, network, subnet }), true);

  // Re-applying changes nothing: still exactly one jump and six rules.
  await applyIpMasq({ ...inNs, network, subnet });
  assert.deepEqual(tableRuleLines(save('nat'), 'nat'), [OTHER_NAT, ...masqLines('10.244.7.0/24', randomFully)]);

  // A rule deleted behind our back is noticed and restored, in its place.
  iptablesInNs('-t', 'nat', '-D', 'FLANNEL-POSTRTG', '3');
  assert.equal(await ipMasqInPlace({ ...inNs, network, subnet }), false);
  await applyIpMasq({ ...inNs, network, subnet });
  assert.deepEqual(tableRuleLines(save('nat'), 'nat'), [OTHER_NAT, ...masqLines('10.244.7.0/24', randomFully)]);

  // A new lease replaces the old subnet's rules (flanneld deletes the old ones first).
  const newSubnet = parseCidr('10.244.9.0/24');
  assert.equal(await ipMasqInPlace({ ...inNs, network, subnet: newSubnet }), false);
  await applyIpMasq({ ...inNs, network, subnet: newSubnet });
  assert.deepEqual(tableRuleLines(save('nat'), 'nat'), [OTHER_NAT, ...masqLines('10.244.9.0/24', randomFully)]);

  // --ip-masq-fully-random-disable.
  await applyIpMasq({ ...inNs, network, subnet, randomFullyDisable: true });
  assert.deepEqual(tableRuleLines(save('nat'), 'nat'), [OTHER_NAT, ...masqLines('10.244.7.0/24', false)]);

  await removeIpMasq(inNs);
  const after = save('nat');
  assert.deepEqual(tableRuleLines(after, 'nat'), [OTHER_NAT]);
  assert.equal(tableChains(after, 'nat').has('FLANNEL-POSTRTG'), false);
  // Removing again is a no-op, not an error.
  await removeIpMasq(inNs);
  assert.deepEqual(tableRuleLines(save('nat'), 'nat'), [OTHER_NAT]);
  // The filter table was never touched.
  assert.equal(tableChains(save('filter'), 'filter').has('FLANNEL-POSTRTG'), false);
});

test('--iptables-forward-rules: apply, idempotent re-apply, remove', async () => {
  iptablesInNs('-A', 'FORWARD', '-i', 'eth9', '-j', 'DROP');
  const FORWARD = [
    '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
    '-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
    '-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
  ];
  await applyForwardRules({ ...inNs, network });
  assert.deepEqual(tableRuleLines(save('filter'), 'filter'), [OTHER_FILTER, ...FORWARD]);
  assert.equal(await forwardRulesInPlace({ ...inNs, network }), true);
  await applyForwardRules({ ...inNs, network });
  assert.deepEqual(tableRuleLines(save('filter'), 'filter'), [OTHER_FILTER, ...FORWARD]);

  await removeForwardRules(inNs);
  const after = save('filter');
  assert.deepEqual(tableRuleLines(after, 'filter'), [OTHER_FILTER]);
  assert.equal(tableChains(after, 'filter').has('FLANNEL-FWD'), false);
  assert.equal(await forwardRulesInPlace({ ...inNs, network }), false);
});

test("an iptables failure inside the namespace is reported with the tool's message and changes nothing", async () => {
  const bad: ManagedChain = {
    table: 'filter',
    chain: 'FLANNEL-TEST',
    jump: { chain: 'FORWARD', spec: ['-j', 'FLANNEL-TEST'] },
    rules: [{ chain: 'FLANNEL-TEST', spec: ['-j', 'NO-SUCH-CHAIN'] }],
  };
  const before = save('filter');
  await assert.rejects(
    ensureChain(bad, inNs),
    /^IptablesError: ip netns exec \S+ iptables-restore --wait=10 --noflush failed: .+/,
  );
  // The restore is one transaction: the failing rule took the jump and the chain with it.
  assert.equal(save('filter').replace(/^#.*\n/gm, ''), before.replace(/^#.*\n/gm, ''));
});

test('a tool missing inside the namespace is reported as missing, naming the package', async () => {
  await assert.rejects(runIptables(['flannel-ts-no-such-iptables'], inNs), (err: Error) => {
    assert.match(
      err.message,
      /^flannel-ts-no-such-iptables not found: install the iptables package \(apt-get install iptables\)/,
    );
    return true;
  });
});

test('startFlannelIptables installs both chains, repairs them on resync, follows a new lease, tears down', async () => {
  const randomFully = versionSupportsRandomFully(sh(['ip', 'netns', 'exec', ns, 'iptables', '--version']));
  const errors: Error[] = [];
  const rules = await startFlannelIptables({
    ...inNs,
    network,
    subnet,
    ipMasq: true,
    forwardRules: true,
    resyncSeconds: 0.2,
    onResyncError: (e) => errors.push(e),
  });
  try {
    const masq = () => tableRuleLines(save('nat'), 'nat').filter((l) => l.includes('flanneld masq'));
    const fwd = () => tableRuleLines(save('filter'), 'filter').filter((l) => l.includes('flanneld forward'));
    assert.deepEqual(masq(), masqLines('10.244.7.0/24', randomFully));
    assert.equal(fwd().length, 3);

    // Someone flushes the chain: the next resync puts the rules back.
    iptablesInNs('-t', 'nat', '-F', 'FLANNEL-POSTRTG');
    const deadline = Date.now() + 5000;
    while (masq().length !== 7 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(masq(), masqLines('10.244.7.0/24', randomFully));

    await rules.update(parseCidr('10.244.9.0/24'));
    assert.deepEqual(masq(), masqLines('10.244.9.0/24', randomFully));
    assert.deepEqual(errors, []);
  } finally {
    await rules.teardown();
  }
  assert.equal(
    tableRuleLines(save('nat'), 'nat').some((l) => l.includes('FLANNEL')),
    false,
  );
  assert.equal(
    tableRuleLines(save('filter'), 'filter').some((l) => l.includes('FLANNEL')),
    false,
  );
});
