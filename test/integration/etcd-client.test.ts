// EtcdKvStore against real etcd 3.4 servers. Each run creates its own network namespace (see
// test/helpers/etcd-netns.ts); etcd and the client under test both run inside it, the client in
// an agent child process (test/helpers/etcd-agent-main.ts) driven from here over stdin/stdout, so
// this file can restart etcd, compact it, or toggle auth while the client is mid-watch.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { WatchEvent } from '../../src/subnet/kv.js';
import { EtcdKvStore } from '../../src/etcd/kv-store.js';
import { AgentCallError, EtcdAgent, waitUntil, type AgentStore } from '../helpers/etcd-agent.js';
import { EtcdNetns, requireTools, type EtcdInstance, type TlsFiles } from '../helpers/etcd-netns.js';

const PLAIN = { name: 'plain', clientPort: 2379, peerPort: 2380 };
const DEAD_ENDPOINT = 'http://127.0.0.1:2399';

function summary(events: readonly WatchEvent[]): string[] {
  return events.map((e) => (e.type === 'put' ? `put ${e.kv.key}=${e.kv.value}` : `delete ${e.key}`));
}

describe('etcd v3 client (real etcd in a private netns)', { timeout: 180_000 }, () => {
  let env: EtcdNetns | undefined;
  let agent: EtcdAgent | undefined;
  let plain: EtcdInstance;
  let kv: AgentStore;

  before(async () => {
    requireTools();
    env = EtcdNetns.create();
    plain = env.etcd(PLAIN);
    await plain.start();
    agent = EtcdAgent.spawn(env);
    kv = await agent.open('plain', { endpoints: plain.clientUrl });
  });

  after(async () => {
    agent?.kill();
    await env?.destroy();
  });

  it('puts, gets, lists a prefix with its revision, and deletes', async () => {
    await kv.put('/t1/a', 'alpha');
    await kv.put('/t1/b', 'beta');
    await kv.put('/t10', 'outside the prefix');
    await kv.put('/t1/é', 'ünïcode');
    const a = await kv.get('/t1/a');
    assert.equal(a?.value, 'alpha');
    assert.equal(a?.expiresAt, null);
    assert.ok(a!.modRevision > 0);
    assert.equal(await kv.get('/t1/missing'), null);

    const listing = await kv.list('/t1/');
    assert.deepEqual(
      listing.kvs.map((k) => [k.key, k.value]),
      [
        ['/t1/a', 'alpha'],
        ['/t1/b', 'beta'],
        ['/t1/é', 'ünïcode'],
      ],
    );
    const status = JSON.parse(await plain.ctl(['endpoint', 'status', '-w', 'json'])) as {
      Status: { header: { revision: number } };
    }[];
    assert.equal(listing.revision, status[0]!.Status.header.revision);

    assert.equal(await kv.delete('/t1/a'), true);
    assert.equal(await kv.delete('/t1/a'), false);
    assert.equal(await kv.get('/t1/a'), null);
    // The value etcdctl sees is the one we wrote.
    assert.equal((await plain.ctl(['get', '--print-value-only', '/t1/b'])).trim(), 'beta');
  });

  it('createIfAbsent: of two concurrent creators exactly one wins', async () => {
    const other = await agent!.open('plain-2', { endpoints: plain.clientUrl });
    for (let round = 0; round < 5; round++) {
      const key = `/t2/race-${round}`;
      const results = await Promise.all([kv.createIfAbsent(key, 'first', 30), other.createIfAbsent(key, 'second', 30)]);
      assert.equal(results.filter(Boolean).length, 1, `round ${round}: ${JSON.stringify(results)}`);
      const winner = results[0] ? 'first' : 'second';
      assert.equal((await kv.get(key))?.value, winner);
    }
    assert.equal(await kv.createIfAbsent('/t2/race-0', 'late', 0), false);
    assert.equal(await kv.createIfAbsent('/t2/fresh', 'v', 0), true);
    await other.close();
  });

  it('lists without expiries on request: same keys, values and revisions, no expiresAt', async () => {
    await kv.put('/t3x/leased', 'x', 60);
    await kv.put('/t3x/reserved', 'y', 0);
    const full = await kv.list('/t3x/');
    const bare = await kv.listWithoutExpiries('/t3x/');
    assert.equal(bare.revision, full.revision);
    assert.deepEqual(
      bare.kvs,
      full.kvs.map(({ key, value, modRevision }) => ({ key, value, modRevision })),
    );
    assert.ok(
      bare.kvs.every((k) => !('expiresAt' in k)),
      JSON.stringify(bare.kvs),
    );
  });

  it('many concurrent requests (more than the socket pool) succeed without MaxListenersExceededWarning', async () => {
    assert.equal(await kv.burst('/t3y/', 120, 'burst', 30), 120);
    const listing = await kv.list('/t3y/');
    assert.equal(listing.kvs.length, 120);
    assert.ok(
      listing.kvs.every((k) => k.expiresAt !== null),
      'every listed expiry looked up',
    );
    assert.deepEqual(await kv.warnings(), []);
  });

  it('TTL: a put with ttl expires about now+ttl; a put without one has no expiry', async () => {
    const before = Date.now();
    await kv.put('/t3/leased', 'x', 60);
    await kv.put('/t3/reserved', 'y', 0);
    assert.equal(await kv.createIfAbsent('/t3/created', 'z', 90), true);
    const listing = await kv.list('/t3/');
    const byKey = new Map(listing.kvs.map((k) => [k.key, k]));
    const leased = byKey.get('/t3/leased')!.expiresAt;
    assert.ok(
      leased !== null && leased >= before + 57_000 && leased <= Date.now() + 61_000,
      `leased expiresAt ${leased}`,
    );
    const created = byKey.get('/t3/created')!.expiresAt;
    assert.ok(
      created !== null && created >= before + 87_000 && created <= Date.now() + 91_000,
      `created expiresAt ${created}`,
    );
    assert.equal(byKey.get('/t3/reserved')!.expiresAt, null);
    // The lease is a real etcd lease: the key goes away when it runs out.
    await kv.put('/t3/short', 's', 2);
    const deadline = Date.now() + 10_000;
    while ((await kv.get('/t3/short')) !== null) {
      assert.ok(Date.now() < deadline, 'key with a 2 s lease still there after 10 s');
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  });

  it('watch delivers puts and deletes in order, with revisions', async () => {
    const start = await kv.list('/t4/');
    const log = await kv.watch('w4', '/t4/', start.revision + 1);
    await kv.put('/t4/a', '1');
    await kv.put('/t4/b', '2', 30);
    await kv.put('/t5/outside', 'no');
    await kv.delete('/t4/a');
    await kv.put('/t4/a', '3');
    await waitUntil(
      '4 watch events',
      () => log.events.length >= 4,
      10_000,
      () => log,
    );
    assert.deepEqual(summary(log.events), ['put /t4/a=1', 'put /t4/b=2', 'delete /t4/a', 'put /t4/a=3']);
    const revisions = log.events.map((e) => (e.type === 'put' ? e.kv.modRevision : e.modRevision));
    assert.ok(
      revisions.every((r, i) => i === 0 || r > revisions[i - 1]!),
      `revisions ${revisions}`,
    );
    for (const batch of log.batches) {
      const last = batch.events[batch.events.length - 1]!;
      assert.ok(batch.revision >= (last.type === 'put' ? last.kv.modRevision : last.modRevision));
    }
    const leased = log.events[1] as Extract<WatchEvent, { type: 'put' }>;
    assert.ok(leased.kv.expiresAt !== null && leased.kv.expiresAt > Date.now() + 20_000);
    assert.equal((log.events[0] as Extract<WatchEvent, { type: 'put' }>).kv.expiresAt, null);
    await kv.unwatch('w4');
  });

  it('watch resumes after etcd is killed and restarted, losing no event', async () => {
    const start = await kv.list('/t6/');
    const log = await kv.watch('w6', '/t6/', start.revision + 1);
    for (let i = 0; i < 5; i++) await kv.put(`/t6/k${i}`, `v${i}`);
    await waitUntil(
      'the first 5 events',
      () => log.events.length >= 5,
      10_000,
      () => log,
    );

    await plain.stop('SIGKILL');
    // While the watch keeps failing, the same member (same data dir) serves on another port
    // for a while and takes writes the watch surely has not seen.
    const elsewhere = env!.etcd({ ...PLAIN, clientPort: 2381 });
    await elsewhere.start();
    for (let i = 5; i < 8; i++) await elsewhere.ctl(['put', `/t6/k${i}`, `v${i}`]);
    await elsewhere.stop('SIGKILL');
    await plain.start();
    // And writes through the client, whose pooled connections died with etcd.
    for (let i = 8; i < 10; i++) await kv.put(`/t6/k${i}`, `v${i}`);
    await kv.delete('/t6/k0');

    await waitUntil(
      'all 11 events',
      () => log.events.length >= 11,
      15_000,
      () => log,
    );
    const expected = [...Array.from({ length: 10 }, (_, i) => `put /t6/k${i}=v${i}`), 'delete /t6/k0'];
    assert.deepEqual(summary(log.events), expected);
    assert.ok(log.errors.length >= 1, 'the broken stream was reported through onError');
    assert.equal(log.compacted, 0);
    await kv.unwatch('w6');
  });

  it('a watch from a compacted revision calls onCompacted and stops', async () => {
    await kv.put('/t7/a', '1');
    const old = await kv.list('/t7/');
    await kv.put('/t7/a', '2');
    await kv.put('/t7/a', '3');
    const now = await kv.list('/t7/');
    await plain.ctl(['compact', String(now.revision)]);
    const log = await kv.watch('w7', '/t7/', old.revision + 1);
    await waitUntil(
      'onCompacted',
      () => log.compacted > 0,
      10_000,
      () => log,
    );
    // The watch is over: later writes are not delivered, and a new watch from the fresh listing works.
    await kv.put('/t7/a', '4');
    const fresh = await kv.list('/t7/');
    const log2 = await kv.watch('w7b', '/t7/', fresh.revision + 1);
    await kv.put('/t7/a', '5');
    await waitUntil(
      'the new watch to see a=5',
      () => log2.events.length >= 1,
      10_000,
      () => log2,
    );
    assert.deepEqual(summary(log2.events), ['put /t7/a=5']);
    assert.equal(log.compacted, 1);
    assert.deepEqual(log.events, []);
    await kv.unwatch('w7b');
  });

  it('fails over from a dead endpoint to a live one, for calls and watches', async () => {
    const store = await agent!.open('failover', { endpoints: `${DEAD_ENDPOINT},${plain.clientUrl}` });
    await store.put('/t8/a', 'via failover');
    assert.equal((await store.get('/t8/a'))?.value, 'via failover');
    const listing = await store.list('/t8/');
    const log = await store.watch('w8', '/t8/', listing.revision + 1);
    await store.put('/t8/b', 'watched');
    await waitUntil(
      'the failover watch event',
      () => log.events.length >= 1,
      10_000,
      () => log,
    );
    assert.deepEqual(summary(log.events), ['put /t8/b=watched']);
    await store.close();
  });

  it('an unreachable cluster gives an error naming every endpoint tried', async () => {
    const store = await agent!.open('dead', { endpoints: [DEAD_ENDPOINT, 'http://127.0.0.1:2398'] });
    await assert.rejects(store.get('/x'), (err: AgentCallError) => {
      assert.equal(err.errorName, 'EtcdUnavailableError');
      assert.match(err.message, /127\.0\.0\.1:2399.*ECONNREFUSED/);
      assert.match(err.message, /127\.0\.0\.1:2398.*ECONNREFUSED/);
      return true;
    });
    await store.close();
  });

  it('maps etcd errors to messages naming the endpoint', async () => {
    // etcd refuses an empty key: "etcdserver: key is not provided" (InvalidArgument, HTTP 400).
    await assert.rejects(kv.put('', 'v'), (err: Error) => {
      assert.match(err.message, /key is not provided/);
      assert.match(err.message, /127\.0\.0\.1:2379/);
      assert.match(err.message, /INVALID_ARGUMENT/);
      return true;
    });
  });

  describe('TLS with client certificates', () => {
    let tls: TlsFiles;
    let secure: EtcdInstance;

    before(async () => {
      tls = env!.makeTlsFiles();
      secure = env!.etcd({ name: 'tls', clientPort: 2479, peerPort: 2480, tls });
      await secure.start();
    });

    after(async () => {
      await secure?.stop();
    });

    it('works over https with a client certificate, calls and watch', async () => {
      const store = await agent!.open('tls', {
        endpoints: secure.clientUrl,
        caFile: tls.ca,
        certFile: tls.clientCert,
        keyFile: tls.clientKey,
      });
      await store.put('/t9/a', 'secure');
      assert.equal((await store.get('/t9/a'))?.value, 'secure');
      assert.equal(await store.createIfAbsent('/t9/b', 'x', 30), true);
      const listing = await store.list('/t9/');
      assert.equal(listing.kvs.length, 2);
      const log = await store.watch('w9', '/t9/', listing.revision + 1);
      await store.delete('/t9/a');
      await waitUntil(
        'the tls watch event',
        () => log.events.length >= 1,
        10_000,
        () => log,
      );
      assert.deepEqual(summary(log.events), ['delete /t9/a']);
      // etcdctl with the same files reads what we wrote.
      assert.equal((await secure.ctl(['get', '--print-value-only', '/t9/b'])).trim(), 'x');
      await store.close();
    });

    it('is refused without a client certificate', async () => {
      const store = await agent!.open('tls-nocert', { endpoints: secure.clientUrl, caFile: tls.ca });
      await assert.rejects(store.get('/t9/a'), (err: Error) => {
        assert.match(err.message, /https:\/\/127\.0\.0\.1:2479: .*bad certificate/);
        assert.match(err.message, /client certificate/);
        return true;
      });
      await store.close();
    });

    it('rejects an unknown server CA', async () => {
      const store = await agent!.open('tls-noca', {
        endpoints: secure.clientUrl,
        certFile: tls.clientCert,
        keyFile: tls.clientKey,
      });
      await assert.rejects(
        store.get('/t9/a'),
        /127\.0\.0\.1:2479: UNABLE_TO_VERIFY_LEAF_SIGNATURE.*not trusted.*caFile/,
      );
      await store.close();
    });

    it('reports bad TLS files at construction, naming the file and the reason', () => {
      const notPem = join(env!.dir, 'not-a-cert.pem');
      writeFileSync(notPem, 'hello\n');
      const missing = join(env!.dir, 'missing.pem');
      const endpoints = secure.clientUrl;
      assert.throws(
        () => new EtcdKvStore({ endpoints, caFile: missing }),
        (err: Error) => err.message.includes(missing) && /ENOENT|no such file/.test(err.message),
      );
      assert.throws(
        () => new EtcdKvStore({ endpoints, caFile: tls.ca, certFile: notPem, keyFile: tls.clientKey }),
        (err: Error) => err.message.includes(notPem) && /certificate/.test(err.message),
      );
      assert.throws(
        () => new EtcdKvStore({ endpoints, certFile: tls.clientCert, keyFile: tls.clientCert }),
        (err: Error) => err.message.includes(tls.clientCert) && /key/.test(err.message),
      );
      assert.throws(
        () => new EtcdKvStore({ endpoints, certFile: tls.clientCert, keyFile: tls.serverKey }),
        (err: Error) => err.message.includes(tls.serverKey) && /does not match/.test(err.message),
      );
      assert.throws(() => new EtcdKvStore({ endpoints, certFile: tls.clientCert }), /both certFile and keyFile/);
    });
  });

  describe('username/password auth', () => {
    let secured: EtcdInstance;

    before(async () => {
      secured = env!.etcd({ name: 'auth', clientPort: 2579, peerPort: 2580 });
      await secured.start();
      await secured.ctl(['user', 'add', 'root:rootpw']);
      await secured.ctl(['auth', 'enable']);
      secured.user = 'root:rootpw';
    });

    after(async () => {
      await secured?.stop();
    });

    it('authenticates, and re-authenticates when its token is invalidated', async () => {
      const store = await agent!.open('auth', { endpoints: secured.clientUrl, username: 'root', password: 'rootpw' });
      await store.put('/t11/a', 'authed', 30);
      assert.equal((await store.get('/t11/a'))?.value, 'authed');
      const listing = await store.list('/t11/');
      assert.ok(listing.kvs[0]!.expiresAt !== null);
      const log = await store.watch('w11', '/t11/', listing.revision + 1);
      await store.put('/t11/b', 'watched');
      await waitUntil(
        'the authenticated watch event',
        () => log.events.length >= 1,
        10_000,
        () => log,
      );
      assert.deepEqual(summary(log.events), ['put /t11/b=watched']);

      // Turning auth off and on drops every simple token: the next call must log in again.
      await secured.ctl(['auth', 'disable']);
      await secured.ctl(['auth', 'enable']);
      assert.equal((await store.get('/t11/b'))?.value, 'watched');
      assert.equal(await store.createIfAbsent('/t11/c', 'after re-auth', 0), true);

      // The watch's stream breaks and, while it is down, the tokens are dropped again (on the
      // same member serving elsewhere: etcd replays logins from its log on restart, so a plain
      // restart keeps them). Its reconnect is refused for a stale token and must log in again.
      await secured.stop('SIGKILL');
      const elsewhere = env!.etcd({ name: 'auth', clientPort: 2581, peerPort: 2580 });
      elsewhere.user = 'root:rootpw';
      await elsewhere.start();
      await elsewhere.ctl(['auth', 'disable']);
      await elsewhere.ctl(['auth', 'enable']);
      await elsewhere.ctl(['put', '/t11/d', 'while reconnecting']);
      await elsewhere.stop('SIGKILL');
      await secured.start();
      await waitUntil(
        'the watch to resume after re-authenticating',
        () => log.events.length >= 3,
        15_000,
        () => log,
      );
      assert.deepEqual(summary(log.events), [
        'put /t11/b=watched',
        'put /t11/c=after re-auth',
        'put /t11/d=while reconnecting',
      ]);
      await store.close();
    });

    it('fails clearly with a wrong password or without credentials', async () => {
      const wrong = await agent!.open('auth-wrong', {
        endpoints: secured.clientUrl,
        username: 'root',
        password: 'nope',
      });
      await assert.rejects(wrong.get('/t11/a'), /authentication failed/);
      await wrong.close();
      const anonymous = await agent!.open('auth-none', { endpoints: secured.clientUrl });
      await assert.rejects(anonymous.get('/t11/a'), /user name is empty/);
      await anonymous.close();
    });
  });

  it('close() leaves nothing behind: the client process exits by itself', async () => {
    const store = await agent!.open('closing', { endpoints: `${DEAD_ENDPOINT},${plain.clientUrl}` });
    const listing = await store.list('/t12/');
    await store.watch('w12', '/t12/', listing.revision + 1);
    await store.put('/t12/a', 'x', 30);
    // A watch stuck retrying against a dead cluster must be stopped by close() too.
    // Let it fail 5 times (after 100+200+400+800 ms of back-off): its next retry is then 1.6 s
    // away, longer than the exit deadline below, so a retry timer left running would be caught.
    const dead = await agent!.open('closing-dead', { endpoints: DEAD_ENDPOINT });
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
