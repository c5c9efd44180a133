import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileKvStore } from '../../src/subnet/file-kv.js';
import type { WatchEvent } from '../../src/subnet/kv.js';
import { parseNetworkConfig } from '../../src/subnet/config.js';
import { LeaseManager } from '../../src/subnet/lease-manager.js';
import { RouteWatcher } from '../../src/subnet/route-watcher.js';
import { formatCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'flannel-ts-filekv-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const waitFor = async (cond: () => boolean, ms = 3000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
};

test('basic operations, revisions persisted across instances, atomic file', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'sub', 'registry.json');
    const a = new FileKvStore({ path });
    assert.deepEqual(await a.list('/x/'), { kvs: [], revision: 1 });
    assert.equal(await a.createIfAbsent('/x/a', '1', 0), true);
    assert.equal(await a.createIfAbsent('/x/a', '2', 0), false);
    await a.put('/x/b', '3', 60);
    const b = new FileKvStore({ path });
    const listing = await b.list('/x/');
    assert.equal(listing.revision, 3);
    assert.deepEqual(
      listing.kvs.map((k) => `${k.key}=${k.value}@${k.modRevision}`),
      ['/x/a=1@2', '/x/b=3@3'],
    );
    assert.equal(listing.kvs[0]!.expiresAt, null);
    assert.ok(listing.kvs[1]!.expiresAt! > Date.now());
    assert.equal(await b.delete('/x/a'), true);
    assert.equal(await b.delete('/x/a'), false);
    assert.equal(await a.get('/x/a'), null);
    assert.equal((await a.get('/x/b'))?.value, '3');
    assert.deepEqual((await readdir(join(dir, 'sub'))).sort(), ['registry.json'], 'no temp or lock files left');
    await a.close();
    await b.close();
  });
});

test('two instances racing createIfAbsent on one file: exactly one wins', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'registry.json');
    const stores = [new FileKvStore({ path }), new FileKvStore({ path })];
    for (let round = 0; round < 20; round++) {
      const key = `/k/${round}`;
      const results = await Promise.all(stores.map((s, i) => s.createIfAbsent(key, `v${i}`, 0)));
      assert.equal(results.filter(Boolean).length, 1, `round ${round}`);
      const winner = results.indexOf(true);
      assert.equal((await stores[0]!.get(key))?.value, `v${winner}`);
    }
    // Many concurrent puts: none lost.
    await Promise.all(Array.from({ length: 30 }, (_, i) => stores[i % 2]!.put(`/p/${i}`, String(i), 0)));
    assert.equal((await stores[1]!.list('/p/')).kvs.length, 30);
    assert.equal((await stores[0]!.list('/')).revision, 1 + 20 + 30);
  });
});

test('TTL expiry is evaluated on read and recorded as a delete for watchers', async () => {
  await withDir(async (dir) => {
    let now = 1_000_000;
    const s = new FileKvStore({ path: join(dir, 'r.json'), now: () => now, pollIntervalMs: 10 });
    await s.put('/s/a', 'x', 10);
    await s.put('/s/r', 'reserved', 0);
    const listing = await s.list('/s/');
    const events: WatchEvent[] = [];
    const w = s.watchPrefix('/s/', listing.revision + 1, { onEvents: (e) => events.push(...e), onCompacted() {} });
    now += 10_000;
    assert.equal(await s.get('/s/a'), null, 'invisible at once');
    assert.deepEqual(
      (await s.list('/s/')).kvs.map((k) => k.key),
      ['/s/r'],
    );
    await waitFor(() => events.length > 0);
    assert.deepEqual(
      events.map((e) => `${e.type}:${e.type === 'put' ? e.kv.key : e.key}`),
      ['delete:/s/a'],
    );
    w.close();
    await s.close();
  });
});

test("watch by polling sees the other instance's writes; history overflow means compaction", async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'r.json');
    const a = new FileKvStore({ path, pollIntervalMs: 10, historyLimit: 5 });
    const b = new FileKvStore({ path, pollIntervalMs: 10, historyLimit: 5 });
    const start = await a.list('/w/');
    const events: string[] = [];
    let compacted = 0;
    const w = a.watchPrefix('/w/', start.revision + 1, {
      onEvents: (es) =>
        events.push(...es.map((e) => (e.type === 'put' ? `put:${e.kv.key}=${e.kv.value}` : `del:${e.key}`))),
      onCompacted: () => compacted++,
    });
    await b.put('/w/1', 'a', 0);
    await b.put('/other/1', 'x', 0);
    await b.delete('/w/1');
    await waitFor(() => events.length === 2);
    assert.deepEqual(events, ['put:/w/1=a', 'del:/w/1']);
    w.close();
    // A watch starting before the retained history is told it was compacted.
    for (let i = 0; i < 10; i++) await b.put(`/w/${i}`, 'z', 0);
    const w2 = a.watchPrefix('/w/', start.revision + 1, { onEvents() {}, onCompacted: () => compacted++ });
    await waitFor(() => compacted === 1);
    w2.close();
    await a.close();
    await b.close();
  });
});

test('a stale lock left by a crashed writer is broken; a fresh one is waited for', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'r.json');
    const s = new FileKvStore({ path, lockStaleMs: 1000, lockTimeoutMs: 300 });
    await writeFile(`${path}.lock`, '99999 0\n');
    await assert.rejects(s.put('/a', '1', 0), /could not lock/);
    const old = new Date(Date.now() - 5000);
    await utimes(`${path}.lock`, old, old);
    await s.put('/a', '1', 0);
    assert.equal((await s.get('/a'))?.value, '1');
    await assert.rejects(stat(`${path}.lock`), /ENOENT/);
  });
});

test('leases and routes through the file registry: two agents see each other', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'r.json');
    const config = parseNetworkConfig('{"Network":"10.244.0.0/16"}');
    const agents = ['192.0.2.1', '192.0.2.2'].map((ip) => {
      const store = new FileKvStore({ path, pollIntervalMs: 10 });
      return { ip, store, mgr: new LeaseManager({ store, config, publicIp: parseIPv4(ip), random: () => 0 }) };
    });
    const leases = await Promise.all(agents.map((a) => a.mgr.acquire()));
    assert.notEqual(formatCidr(leases[0]!.subnet.prefix, 24), formatCidr(leases[1]!.subnet.prefix, 24));
    let routes = '';
    const rw = new RouteWatcher({
      store: agents[0]!.store,
      ownSubnet: leases[0]!.subnet,
      onRoutes: (r) => (routes = r.map((x) => `${formatCidr(x.prefix, x.prefixLen)}`).join(' ')),
    });
    rw.start();
    await waitFor(() => routes === formatCidr(leases[1]!.subnet.prefix, 24));
    await agents[1]!.store.delete(leases[1]!.key);
    await waitFor(() => routes === '');
    rw.stop();
    for (const a of agents) await a.store.close();
  });
});
