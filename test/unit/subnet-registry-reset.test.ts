// A registry reset (etcd wiped, or a new registry at the same address) and a config changed while
// agents run: the detector, the lease manager and route watcher recovering through the store's
// onCompacted, and the config watcher's one line per change.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, MemoryLogger } from '../helpers/manual-clock.js';
import { parseNetworkConfig } from '../../src/subnet/config.js';
import { ConfigWatcher, describeConfigChange } from '../../src/subnet/config-watcher.js';
import { LeaseManager } from '../../src/subnet/lease-manager.js';
import { MemoryKvStore } from '../helpers/memory-kv.js';
import { RefusalCounters } from '../../src/subnet/refusals.js';
import { ResetDetector } from '../../src/subnet/registry-reset.js';
import { RESET_HOLD_MS, RouteWatcher } from '../../src/subnet/route-watcher.js';
import { formatCidr, formatIPv4, parseIPv4 } from '../../src/routing-table/ipv4.js';

const P = '/coreos.com/network/subnets/';
const CONFIG_KEY = '/coreos.com/network/config';
const config = parseNetworkConfig('{"Network":"10.244.0.0/16"}');
const value = (ip: string): string => `{"PublicIP":"${ip}","PublicIPv6":null}`;

test('ResetDetector: a revision that goes back, or another cluster ID, is a reset; a member change is not', () => {
  const d = new ResetDetector();
  const heard: string[] = [];
  const off = d.subscribe((r) => heard.push(r));
  assert.equal(d.observe(5, '111'), false);
  assert.equal(d.observe(9, '111'), false);
  assert.equal(d.observe(9, null), false);
  assert.equal(d.observe(0, null), false, 'no revision given');
  assert.equal(d.observe(3, '111'), true);
  assert.deepEqual(heard, ['its revision went back from 9 to 3']);
  assert.equal(d.observe(4, '111'), false, 'the new registry is followed from there');
  assert.equal(d.observe(50, '222'), true);
  assert.equal(heard[1], 'its cluster ID changed from 111 to 222');
  off();
  assert.equal(d.observe(1, '222'), true);
  assert.equal(heard.length, 2, 'an unsubscribed listener hears nothing');
});

test('ResetDetector: replies judged by what was known when their request was sent', () => {
  const d = new ResetDetector();
  let resets = 0;
  d.subscribe(() => resets++);
  d.observe(10);
  // A listing sent at 10 and served at 11 arrives after a watch event of revision 12: not a reset.
  const listing = d.mark();
  d.observe(12);
  assert.equal(d.observe(11, null, listing), false);
  // The registry is wiped: the first reply that shows it is a reset; replies to requests sent
  // before that (other watches re-created on the new registry) tell nothing more.
  const a = d.mark(),
    b = d.mark();
  assert.equal(d.observe(3, null, a), true);
  assert.equal(d.observe(2, null, b), false);
  assert.equal(resets, 1);
  // From there the new registry is followed, and a second wipe is a second reset.
  d.observe(7);
  assert.equal(d.observe(1, null, d.mark()), true);
  assert.equal(resets, 2);
});

test('a wiped registry: the lease is re-created on the same subnet, the routes are listed again', async () => {
  const clock = new ManualClock();
  const store = new MemoryKvStore({ clock });
  const logger = new MemoryLogger();
  const me = parseIPv4('192.0.2.7');
  await store.put(`${P}10.244.1.0-24`, value('192.0.2.1'), 60);
  const mgr = new LeaseManager({ store, config, publicIp: me, clock, random: () => 0.5, logger });
  const lease = await mgr.acquire();
  const mine = formatCidr(lease.subnet.prefix, lease.subnet.prefixLen);
  const reacquired: string[] = [];
  mgr.start({ onReacquired: (l) => reacquired.push(formatCidr(l.subnet.prefix, l.subnet.prefixLen)) });
  const routes: string[] = [];
  const watcher = new RouteWatcher({
    store,
    ownSubnet: lease.subnet,
    onRoutes: (r) =>
      routes.push(r.map((x) => `${formatCidr(x.prefix, x.prefixLen)}=${formatIPv4(x.publicIp)}`).join(' ')),
    clock,
    logger,
  });
  watcher.start();
  await clock.advance(0);
  assert.equal(routes.at(-1), '10.244.1.0/24=192.0.2.1');
  const resets: string[] = [];
  store.onReset((r) => resets.push(r));

  store.wipe();
  await clock.advance(0);
  assert.equal(resets.length, 1);
  // Our lease is back, on the same subnet; the peer's is not there yet, but its route is held.
  const kv = await store.get(lease.key);
  assert.equal(kv?.value, value('192.0.2.7'), logger.lines.join('\n'));
  assert.deepEqual(reacquired, [mine]);
  assert.equal(routes.at(-1), '10.244.1.0/24=192.0.2.1');
  // The peer re-creates its lease (at another PublicIP: it moved): the watch, re-made after the
  // listing, sees it. Another peer never comes back: its held route goes when the hold is up.
  await store.put(`${P}10.244.1.0-24`, value('192.0.2.11'), 60);
  await clock.advance(0);
  assert.equal(routes.at(-1), '10.244.1.0/24=192.0.2.11');
  mgr.stop();
  watcher.stop();
  assert.equal(store.openWatches, 0);
});

test('after a reset, held routes go when a new lease overlaps them, or when the hold is up', async () => {
  const clock = new ManualClock();
  const store = new MemoryKvStore({ clock });
  const routes: string[] = [];
  await store.put(`${P}10.244.1.0-24`, value('192.0.2.1'), 0);
  await store.put(`${P}10.244.2.0-24`, value('192.0.2.2'), 0);
  await store.put(`${P}10.244.7.0-24`, value('192.0.2.7'), 0); // our own: never held
  const watcher = new RouteWatcher({
    store,
    ownSubnet: { prefix: parseIPv4('10.244.7.0'), prefixLen: 24 },
    onRoutes: (r) =>
      routes.push(r.map((x) => `${formatCidr(x.prefix, x.prefixLen)}=${formatIPv4(x.publicIp)}`).join(' ')),
    clock,
  });
  watcher.start();
  await clock.advance(0);
  assert.equal(routes.at(-1), '10.244.1.0/24=192.0.2.1 10.244.2.0/24=192.0.2.2');
  store.wipe();
  await clock.advance(0);
  assert.equal(routes.at(-1), '10.244.1.0/24=192.0.2.1 10.244.2.0/24=192.0.2.2', 'held');
  // A newcomer on a subnet overlapping host 2's: the held route gives way, without a refusal.
  await store.put(`${P}10.244.2.0-25`, value('192.0.2.9'), 0);
  await clock.advance(0);
  assert.equal(routes.at(-1), '10.244.1.0/24=192.0.2.1 10.244.2.0/25=192.0.2.9');
  await clock.advance(RESET_HOLD_MS);
  assert.equal(routes.at(-1), '10.244.2.0/25=192.0.2.9', 'host 1 never came back');
  watcher.stop();
});

test('stopped, the lease manager and the route watcher leave no watch and hear no reset', async () => {
  const clock = new ManualClock();
  const store = new MemoryKvStore({ clock });
  const mgr = new LeaseManager({ store, config, publicIp: parseIPv4('192.0.2.7'), clock });
  await mgr.acquire();
  mgr.start({});
  let emitted = 0;
  const watcher = new RouteWatcher({ store, ownSubnet: mgr.lease!.subnet, onRoutes: () => emitted++, clock });
  watcher.start();
  await clock.advance(0);
  mgr.stop();
  watcher.stop();
  assert.equal(store.openWatches, 0);
  const before = emitted;
  store.wipe();
  await clock.advance(RESET_HOLD_MS);
  assert.equal(emitted, before);
  assert.equal((await store.list(P)).kvs.length, 0, 'no lease re-created by a stopped manager');
});

test('a wiped registry where another host took our subnet meanwhile: we move, no two hosts on one subnet', async () => {
  const clock = new ManualClock();
  const store = new MemoryKvStore({ clock });
  const mgr = new LeaseManager({ store, config, publicIp: parseIPv4('192.0.2.7'), clock, random: () => 0 });
  const lease = await mgr.acquire();
  mgr.start({});
  store.wipe();
  await store.put(lease.key, value('192.0.2.9'), 60); // a new host, faster than us
  await clock.advance(0);
  const now = mgr.lease!;
  assert.notEqual(now.key, lease.key);
  const listing = await store.list(P);
  const owners = listing.kvs.map((k) => `${k.key.slice(P.length)}=${JSON.parse(k.value).PublicIP}`).sort();
  assert.deepEqual(owners, [`${lease.key.slice(P.length)}=192.0.2.9`, `${now.key.slice(P.length)}=192.0.2.7`].sort());
  mgr.stop();
});

test('describeConfigChange names what changed', () => {
  const other = parseNetworkConfig('{"Network":"10.245.0.0/16","SubnetLen":26,"Backend":{"Type":"udp","Port":8300}}');
  assert.equal(
    describeConfigChange(config, other),
    'Network 10.244.0.0/16 -> 10.245.0.0/16, SubnetLen 24 -> 26, SubnetMin 10.244.1.0 -> 10.245.0.64, SubnetMax 10.244.255.0 -> 10.245.255.192, Backend.Port 8285 -> 8300',
  );
  assert.equal(describeConfigChange(config, parseNetworkConfig(' {"network":"10.244.0.0/16"} ')), '');
});

test('ConfigWatcher: a change, a deletion, an invalid value: one line and a count each; an equal re-put is quiet', async () => {
  const clock = new ManualClock();
  const store = new MemoryKvStore({ clock });
  const logger = new MemoryLogger();
  const refusals = new RefusalCounters();
  await store.put(CONFIG_KEY, '{"Network":"10.244.0.0/16"}', 0);
  const w = new ConfigWatcher({ store, inUse: config, logger, refusals, clock });
  w.start();
  await clock.advance(0);
  assert.equal(logger.lines.length, 0, logger.lines.join('\n'));
  await store.put(CONFIG_KEY, '{"Network":"10.245.0.0/16"}', 0);
  await clock.advance(0);
  await store.put(CONFIG_KEY, '{"Network":"10.245.0.0/16"}', 0); // the same again: nothing new
  await clock.advance(0);
  await store.put(CONFIG_KEY, '{"Network":"10.244.0.0/16"}', 0); // back to the one in use
  await clock.advance(0);
  await store.put(CONFIG_KEY, '{"Network":', 0);
  await clock.advance(0);
  await store.delete(CONFIG_KEY);
  await clock.advance(0);
  const warnings = logger.lines.filter((l) => l.startsWith('W '));
  assert.equal(warnings.length, 3, logger.lines.join('\n'));
  assert.match(
    warnings[0]!,
    /changed while this agent runs \(Network 10\.244\.0\.0\/16 -> 10\.245\.0\.0\/16.*restart the agents to apply it/,
  );
  assert.match(warnings[1]!, /is now invalid/);
  assert.match(warnings[2]!, /was deleted from the registry; keeping the one in use/);
  assert.deepEqual(Object.fromEntries(refusals.entries().map((r) => [`${r.input}/${r.reason}`, r.count])), {
    'config/changed_while_running': 1,
    'config/invalid': 1,
    'config/deleted': 1,
  });
  // A wipe: the watcher looks again (nothing there: already reported as deleted, so quiet), then a restore.
  store.wipe();
  await clock.advance(0);
  await store.put(CONFIG_KEY, '{"Network":"10.244.0.0/16"}', 0);
  await clock.advance(0);
  assert.equal(logger.lines.filter((l) => l.startsWith('W ')).length, 3);
  w.stop();
  assert.equal(store.openWatches, 0);
});
