// EtcdKvStore against a real etcd (its own network namespace, test/helpers/etcd-netns.ts): a renewal
// that moves a key to a new lease revokes the old one (unless other keys are on it), and an etcd
// wiped and restarted empty under an open watch is reported as a reset (onReset, with the reason),
// the watch ending with onCompacted so that its consumer lists again.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { EtcdAgent, waitUntil, type AgentStore } from '../helpers/etcd-agent.js';
import { EtcdNetns, requireTools, type EtcdInstance } from '../helpers/etcd-netns.js';

async function leaseIds(etcd: EtcdInstance): Promise<string[]> {
  // Lease IDs are 64-bit: read them from the text, not through a JS number.
  const out = await etcd.ctl(['lease', 'list', '-w', 'json']);
  return [...out.matchAll(/"id":(\d+)/g)].map((m) => m[1]!);
}

async function leaseOf(etcd: EtcdInstance, key: string): Promise<bigint> {
  const out = await etcd.ctl(['get', key, '-w', 'json']);
  return BigInt(/"lease":(\d+)/.exec(out)?.[1] ?? '0');
}

describe('etcd: lease revocation and registry identity (real etcd in a private netns)', { timeout: 120_000 }, () => {
  let env: EtcdNetns | undefined;
  let agent: EtcdAgent | undefined;
  let etcd: EtcdInstance;
  let kv: AgentStore;

  before(async () => {
    requireTools();
    env = EtcdNetns.create();
    etcd = env.etcd({ name: 'identity', clientPort: 2379, peerPort: 2380 });
    await etcd.start();
    agent = EtcdAgent.spawn(env);
    kv = await agent.open('main', { endpoints: etcd.clientUrl });
  });

  after(async () => {
    agent?.kill();
    await env?.destroy();
  });

  it('a renewal revokes the lease the key left; a lease other keys still use is kept', async () => {
    await kv.put('/r/lease-a', 'v1', 3600);
    const first = await leaseOf(etcd, '/r/lease-a');
    assert.ok(first > 0n);
    await kv.put('/r/lease-a', 'v2', 3600);
    const second = await leaseOf(etcd, '/r/lease-a');
    assert.notEqual(second, first);
    const live = await leaseIds(etcd);
    assert.ok(!live.includes(first.toString()), `the old lease ${first} was revoked: ${live.join(' ')}`);
    assert.ok(live.includes(second.toString()), `${second} in ${live.join(' ')}`);

    // Someone else attached another key to our current lease: renewing must not revoke it (it would delete that key).
    await etcd.ctl(['put', '/r/other', 'kept', `--lease=${second.toString(16)}`]);
    await kv.put('/r/lease-a', 'v3', 3600);
    assert.ok((await leaseIds(etcd)).includes(second.toString()), 'a lease with keys on it is not revoked');
    assert.equal((await etcd.ctl(['get', '--print-value-only', '/r/other'])).trim(), 'kept');
  });

  it('etcd wiped and restarted empty: a reset is reported and the open watch ends as compacted', async () => {
    await kv.onReset();
    for (let i = 0; i < 20; i++) await kv.put(`/w/k${i}`, `v${i}`);
    const listing = await kv.list('/w/');
    const log = await kv.watch('w', '/w/', listing.revision + 1);
    await etcd.stop();
    rmSync(etcd.dataDir, { recursive: true, force: true });
    await etcd.start();
    // The reset may be seen by another request than the watch's (then its report can come after the
    // watch ended): wait for both.
    await waitUntil(
      'the watch to end as compacted and the reset to be reported',
      () => log.compacted === 1 && kv.resets.length > 0,
      15_000,
      () => ({
        resets: kv.resets,
        errors: log.errors,
      }),
    );
    assert.equal(kv.resets.length, 1, kv.resets.join('\n'));
    assert.match(kv.resets[0]!, /^main: etcd at .*2379: its revision went back from \d+ to 1$/);
    // The consumer lists again, on the new registry, and watches from there.
    const fresh = await kv.list('/w/');
    assert.equal(fresh.kvs.length, 0);
    const again = await kv.watch('w2', '/w/', fresh.revision + 1);
    await kv.put('/w/new', 'after the wipe');
    await waitUntil('the new watch to see the put', () => again.events.length === 1, 10_000);
    assert.equal(kv.resets.length, 1, 'one reset, reported once');
  });
});
