// EtcdV2KvStore against a real etcd 3.4 serving the v2 keys API (--enable-v2), in a private network
// namespace (test/helpers/etcd-netns.ts). The client runs in an agent child process driven over
// stdin/stdout (test/helpers/etcd-agent-main.ts), so this file can restart etcd mid-watch. What
// flanneld's v2 registry reads and writes is checked with `ETCDCTL_API=2 etcdctl`, as a user would.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import type { WatchEvent } from '../../src/subnet/kv.js';
import { AgentCallError, EtcdAgent, waitUntil, type AgentStore } from '../helpers/etcd-agent.js';
import { EtcdNetns, requireTools, type EtcdInstance, type TlsFiles } from '../helpers/etcd-netns.js';

const V2 = { name: 'v2', clientPort: 2379, peerPort: 2380, enableV2: true };
const DEAD_ENDPOINT = 'http://127.0.0.1:2399';

function summary(events: readonly WatchEvent[]): string[] {
  return events.map((e) => (e.type === 'put' ? `put ${e.kv.key}=${e.kv.value}` : `delete ${e.key}`));
}

/** The "TTL: N" line of `etcdctl -o extended get` (etcdctl prints "TTL: 0" for a key without one). */
function ttlLine(extended: string): number {
  const m = /^TTL: (\d+)$/m.exec(extended);
  if (m === null) throw new Error(`no TTL line in ${extended}`);
  return Number(m[1]);
}

describe('etcd v2 keys API client (real etcd --enable-v2 in a private netns)', { timeout: 180_000 }, () => {
  let env: EtcdNetns | undefined;
  let agent: EtcdAgent | undefined;
  let etcd: EtcdInstance;
  let kv: AgentStore;

  before(async () => {
    requireTools();
    env = EtcdNetns.create();
    etcd = env.etcd(V2);
    await etcd.start();
    agent = EtcdAgent.spawn(env);
    kv = await agent.open('v2', { endpoints: etcd.clientUrl }, 'v2');
  });

  after(async () => {
    agent?.kill();
    await env?.destroy();
  });

  it('lists a directory that does not exist yet as empty, at the current index', async () => {
    const empty = await kv.list('/t0/');
    assert.deepEqual(empty.kvs, []);
    assert.ok(empty.revision >= 1);
    await kv.put('/t0/a', '1');
    const one = await kv.list('/t0/');
    assert.equal(one.kvs.length, 1);
    assert.ok(one.revision > empty.revision);
    assert.equal(one.kvs[0]!.modRevision, one.revision);
  });

  it('puts, gets, lists a prefix (nested keys too, sorted, not its siblings) and deletes', async () => {
    await kv.put('/t1/b', 'beta');
    await kv.put('/t1/a', 'alpha');
    await kv.put('/t1/d/e', 'nested');
    await kv.put('/t10', 'outside the prefix');
    await kv.put('/t1/é', 'ünïcode');
    const a = await kv.get('/t1/a');
    assert.equal(a?.value, 'alpha');
    assert.equal(a?.expiresAt, null);
    assert.ok(a!.modRevision > 0);
    assert.equal(await kv.get('/t1/missing'), null);
    // What etcdctl v2 reads is what we wrote.
    assert.equal((await etcd.ctl2(['get', '/t1/a'])).trim(), 'alpha');

    const listing = await kv.list('/t1/');
    assert.deepEqual(
      listing.kvs.map((k) => [k.key, k.value]),
      [
        ['/t1/a', 'alpha'],
        ['/t1/b', 'beta'],
        ['/t1/d/e', 'nested'],
        ['/t1/é', 'ünïcode'],
      ],
    );
    assert.ok(listing.kvs.every((k) => k.modRevision <= listing.revision));
    // A prefix that is not a directory: keys starting with it, from its parent directory.
    assert.deepEqual(
      (await kv.list('/t1/d')).kvs.map((k) => k.key),
      ['/t1/d/e'],
    );
    assert.deepEqual(
      (await kv.listWithoutExpiries('/t1/')).kvs.map((k) => k.key),
      listing.kvs.map((k) => k.key),
    );

    assert.equal(await kv.delete('/t1/a'), true);
    assert.equal(await kv.delete('/t1/a'), false);
    assert.equal(await kv.get('/t1/a'), null);
    await assert.rejects(kv.get('/t1/d'), /is a directory/);
  });

  it('createIfAbsent is prevExist=false: of two concurrent creators exactly one wins', async () => {
    const results = await Promise.all([
      kv.createIfAbsent('/t2/k', 'first', 60),
      kv.createIfAbsent('/t2/k', 'second', 60),
    ]);
    assert.deepEqual([...results].sort(), [false, true]);
    const winner = results[0] ? 'first' : 'second';
    assert.equal((await kv.get('/t2/k'))?.value, winner);
    assert.equal(await kv.createIfAbsent('/t2/k', 'third', 60), false);
  });

  it('keeps the TTL on the key, as flanneld does: 24 h leases, renewals, reservations', async () => {
    const key = '/coreos.com/network/subnets/10.244.7.0-24';
    const value = '{"PublicIP":"192.0.2.7","PublicIPv6":null}';
    assert.equal(await kv.createIfAbsent(key, value, 86_400), true);
    const extended = await etcd.ctl2(['-o', 'extended', 'get', key]);
    assert.match(extended, new RegExp(`^Key: ${key}$`, 'm'));
    assert.ok(ttlLine(extended) > 86_390 && ttlLine(extended) <= 86_400, extended);
    assert.ok(extended.trim().endsWith(value), extended);
    const kvTtl = await kv.get(key);
    assert.ok(kvTtl!.expiresAt! > Date.now() + 86_390_000 && kvTtl!.expiresAt! <= Date.now() + 86_401_000);

    // A renewal is a plain put with a fresh TTL; a put without one makes it a reservation.
    await kv.put(key, value, 600);
    assert.ok(ttlLine(await etcd.ctl2(['-o', 'extended', 'get', key])) <= 600);
    await kv.put(key, value, 0);
    assert.equal(ttlLine(await etcd.ctl2(['-o', 'extended', 'get', key])), 0);
    assert.equal((await kv.get(key))?.expiresAt, null);
    assert.equal((await kv.list('/coreos.com/network/subnets/')).kvs[0]?.expiresAt, null);

    // A key with a short TTL is gone once it runs out.
    await kv.put('/t3/short', 'x', 1);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    assert.equal(await kv.get('/t3/short'), null);
  });

  it('watch delivers puts, deletes and expiries in order, with v2 indexes, skipping other keys', async () => {
    const start = await kv.list('/t4/');
    const log = await kv.watch('w4', '/t4/', start.revision + 1);
    await kv.put('/t4/a', '1');
    await kv.put('/t4/b', '2', 1);
    await kv.put('/t4x/outside', 'no');
    await kv.delete('/t4/a');
    await etcd.ctl2(['set', '/t4/a', '3']);
    await waitUntil(
      '5 watch events (the expiry of /t4/b included)',
      () => log.events.length >= 5,
      10_000,
      () => log,
    );
    const got = summary(log.events);
    assert.deepEqual(got.slice(0, 2), ['put /t4/a=1', 'put /t4/b=2']);
    assert.deepEqual(
      got.filter((e) => e.includes('/t4/a')),
      ['put /t4/a=1', 'delete /t4/a', 'put /t4/a=3'],
    );
    assert.ok(got.includes('delete /t4/b'), 'the TTL running out is a delete');
    const revisions = log.events.map((e) => (e.type === 'put' ? e.kv.modRevision : e.modRevision));
    assert.ok(
      revisions.every((r, i) => i === 0 || r > revisions[i - 1]!),
      `revisions ${revisions}`,
    );
    assert.ok((log.events[1] as Extract<WatchEvent, { type: 'put' }>).kv.expiresAt !== null);
    await kv.unwatch('w4');
  });

  it('watch resumes after etcd is killed and restarted, losing no change', async () => {
    const start = await kv.list('/t6/');
    const log = await kv.watch('w6', '/t6/', start.revision + 1);
    for (let i = 0; i < 3; i++) await kv.put(`/t6/k${i}`, `v${i}`);
    await waitUntil(
      'the first 3 events',
      () => log.events.length >= 3,
      10_000,
      () => log,
    );
    await etcd.stop('SIGKILL');
    // While the watch keeps failing, the same member serves on another port and takes writes.
    const elsewhere = env!.etcd({ ...V2, clientPort: 2381 });
    await elsewhere.start();
    for (let i = 3; i < 5; i++) await elsewhere.ctl2(['set', `/t6/k${i}`, `v${i}`]);
    await elsewhere.stop('SIGKILL');
    await etcd.start();
    for (let i = 5; i < 7; i++) await kv.put(`/t6/k${i}`, `v${i}`);
    await kv.delete('/t6/k0');
    await waitUntil(
      'all 8 events',
      () => log.events.length >= 8,
      15_000,
      () => log,
    );
    assert.deepEqual(summary(log.events), [
      ...Array.from({ length: 7 }, (_, i) => `put /t6/k${i}=v${i}`),
      'delete /t6/k0',
    ]);
    assert.ok(log.errors.length >= 1, 'the broken poll was reported through onError');
    assert.equal(log.compacted, 0);
    await kv.unwatch('w6');
  });

  it('a waitIndex out of the 1000-change history (401 EventIndexCleared) calls onCompacted', async () => {
    await kv.put('/t7/a', '1');
    const old = await kv.list('/t7/');
    assert.equal(await kv.burst('/t7x/', 1010, 'filler'), 1010);
    const log = await kv.watch('w7', '/t7/', old.revision + 1);
    await waitUntil(
      'onCompacted',
      () => log.compacted > 0,
      10_000,
      () => log,
    );
    const fresh = await kv.list('/t7/');
    const log2 = await kv.watch('w7b', '/t7/', fresh.revision + 1);
    await kv.put('/t7/a', '2');
    await waitUntil(
      'the new watch to see a=2',
      () => log2.events.length >= 1,
      10_000,
      () => log2,
    );
    assert.deepEqual(summary(log2.events), ['put /t7/a=2']);
    assert.deepEqual(log.events, []);
    await kv.unwatch('w7b');
  });

  it('removing the directory of the watched keys (etcdctl rm -r) calls onCompacted', async () => {
    await kv.put('/t8/dir/a', '1');
    const start = await kv.list('/t8/dir/');
    const log = await kv.watch('w8', '/t8/dir/', start.revision + 1);
    await etcd.ctl2(['rm', '-r', '/t8/dir']);
    await waitUntil(
      'onCompacted',
      () => log.compacted > 0,
      10_000,
      () => log,
    );
    assert.equal((await kv.list('/t8/dir/')).kvs.length, 0);
  });

  it('fails over from a dead endpoint to a live one, for calls and watches', async () => {
    const store = await agent!.open('failover', { endpoints: `${DEAD_ENDPOINT},${etcd.clientUrl}` }, 'v2');
    await store.put('/t9/a', 'via failover');
    assert.equal((await store.get('/t9/a'))?.value, 'via failover');
    const listing = await store.list('/t9/');
    const log = await store.watch('w9', '/t9/', listing.revision + 1);
    await store.put('/t9/b', 'watched');
    await waitUntil(
      'the failover watch event',
      () => log.events.length >= 1,
      10_000,
      () => log,
    );
    assert.deepEqual(summary(log.events), ['put /t9/b=watched']);
    await store.close();
  });

  it('an unreachable cluster gives an error naming every endpoint tried', async () => {
    const store = await agent!.open('dead', { endpoints: [DEAD_ENDPOINT, 'http://127.0.0.1:2398'] }, 'v2');
    await assert.rejects(store.get('/x'), (err: AgentCallError) => {
      assert.equal(err.errorName, 'EtcdUnavailableError');
      assert.match(err.message, /127\.0\.0\.1:2399.*ECONNREFUSED/);
      assert.match(err.message, /127\.0\.0\.1:2398.*ECONNREFUSED/);
      return true;
    });
    await store.close();
  });

  it('an etcd without --enable-v2 is named as such', async () => {
    const v3only = env!.etcd({ name: 'v3only', clientPort: 2479, peerPort: 2480 });
    await v3only.start();
    try {
      const store = await agent!.open('v3only', { endpoints: v3only.clientUrl }, 'v2');
      await assert.rejects(store.get('/coreos.com/network/config'), /404.*--enable-v2/);
      await store.close();
    } finally {
      await v3only.stop();
    }
  });

  describe('TLS with client certificates', () => {
    let tls: TlsFiles;
    let secure: EtcdInstance;

    before(async () => {
      tls = env!.makeTlsFiles();
      secure = env!.etcd({ name: 'tls', clientPort: 2579, peerPort: 2580, tls, enableV2: true });
      await secure.start();
    });

    after(async () => {
      await secure?.stop();
    });

    it('works over https with a client certificate, calls and watch', async () => {
      const store = await agent!.open(
        'tls',
        { endpoints: secure.clientUrl, caFile: tls.ca, certFile: tls.clientCert, keyFile: tls.clientKey },
        'v2',
      );
      await store.put('/t11/a', 'secure');
      assert.equal((await store.get('/t11/a'))?.value, 'secure');
      assert.equal((await secure.ctl2(['get', '/t11/a'])).trim(), 'secure');
      const listing = await store.list('/t11/');
      const log = await store.watch('w11', '/t11/', listing.revision + 1);
      await store.put('/t11/b', 'watched');
      await waitUntil(
        'the TLS watch event',
        () => log.events.length >= 1,
        10_000,
        () => log,
      );
      await store.close();
    });

    it('is refused without a client certificate', async () => {
      const store = await agent!.open('tls-nocert', { endpoints: secure.clientUrl, caFile: tls.ca }, 'v2');
      await assert.rejects(store.get('/t11/a'), /client certificate|certificate required|bad certificate/i);
      await store.close();
    });
  });

  it('username/password: HTTP basic auth, as v2 wants; missing or wrong credentials are refused', async () => {
    const guarded = env!.etcd({ name: 'auth', clientPort: 2679, peerPort: 2680, enableV2: true });
    await guarded.start();
    try {
      await guarded.ctl2(['user', 'add', 'root:rootpw']);
      await guarded.ctl2(['auth', 'enable']);
      await guarded.ctl2(['-u', 'root:rootpw', 'role', 'revoke', 'guest', '-path', '/*', '-readwrite']);
      const store = await agent!.open(
        'auth',
        { endpoints: guarded.clientUrl, username: 'root', password: 'rootpw' },
        'v2',
      );
      await store.put('/t13/a', 'guarded');
      assert.equal((await store.get('/t13/a'))?.value, 'guarded');
      const listing = await store.list('/t13/');
      const log = await store.watch('w13', '/t13/', listing.revision + 1);
      await store.put('/t13/b', 'watched');
      await waitUntil(
        'the authenticated watch event',
        () => log.events.length >= 1,
        10_000,
        () => log,
      );
      await store.close();
      for (const [name, creds] of [
        ['anonymous', {}],
        ['wrong', { username: 'root', password: 'nope' }],
      ] as const) {
        const refused = await agent!.open(`auth-${name}`, { endpoints: guarded.clientUrl, ...creds }, 'v2');
        await assert.rejects(refused.get('/t13/a'), /requires user authentication.*error 110, HTTP 401/);
        await refused.close();
      }
    } finally {
      await guarded.stop();
    }
  });

  it('close() leaves nothing behind: the client process exits by itself', async () => {
    const store = await agent!.open('closing', { endpoints: `${DEAD_ENDPOINT},${etcd.clientUrl}` }, 'v2');
    const listing = await store.list('/t12/');
    await store.watch('w12', '/t12/', listing.revision + 1);
    await store.put('/t12/a', 'x', 30);
    const dead = await agent!.open('closing-dead', { endpoints: DEAD_ENDPOINT }, 'v2');
    const deadLog = await dead.watch('w12-dead', '/t12/', 1);
    await waitUntil(
      '5 failed watch attempts',
      () => deadLog.errors.length >= 5,
      10_000,
      () => deadLog,
    );
    assert.match(deadLog.errors[0]!, /127\.0\.0\.1:2399.*ECONNREFUSED.*retrying in 100 ms/);
    await store.close();
    await dead.close();
    await kv.close();
    assert.equal(await agent!.idleExit(1_000), 0);
  });
});
