import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, MemoryLogger, settle } from '../helpers/manual-clock.js';
import { MemoryKvStore } from '../helpers/memory-kv.js';
import { BareListingStore } from '../helpers/bare-listing-store.js';
import { RouteWatcher } from '../../src/subnet/route-watcher.js';
import type { Route } from '../../src/subnet/route-watcher.js';
import { formatCidr, formatIPv4, parseCidr } from '../../src/routing-table/ipv4.js';

const P = '/coreos.com/network/subnets/';
const v = (ip: string): string => `{"PublicIP":"${ip}","PublicIPv6":null}`;
const show = (routes: Route[]): string =>
  routes.map((r) => `${formatCidr(r.prefix, r.prefixLen)}>${formatIPv4(r.publicIp)}`).join(' ');

function setup() {
  const clock = new ManualClock();
  const store = new MemoryKvStore({ clock });
  const logger = new MemoryLogger();
  const emitted: string[] = [];
  const watcher = new RouteWatcher({
    store,
    ownSubnet: parseCidr('10.244.7.0/24'),
    onRoutes: (r) => emitted.push(show(r)),
    clock,
    logger,
  });
  return { clock, store, logger, emitted, watcher };
}

test('initial listing, adds, removals, own lease skipped, every emission complete', async () => {
  const { store, emitted, watcher, clock } = setup();
  await store.put(`${P}10.244.7.0-24`, v('192.0.2.7'), 60); // own
  await store.put(`${P}10.244.1.0-24`, v('192.0.2.1'), 60);
  await store.put(
    `${P}10.244.3.0-24`,
    '{"PublicIP":"192.0.2.3","BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}',
    0,
  );
  watcher.start();
  await clock.advance(0);
  assert.deepEqual(emitted, ['10.244.1.0/24>192.0.2.1 10.244.3.0/24>192.0.2.3']);

  await store.put(`${P}10.244.2.0-24`, v('192.0.2.2'), 60);
  await clock.advance(0);
  await store.put(`${P}10.244.1.0-24`, v('192.0.2.11'), 60); // PublicIP change
  await clock.advance(0);
  await store.delete(`${P}10.244.3.0-24`);
  await clock.advance(0);
  await store.put(`${P}10.244.7.0-24`, v('192.0.2.7'), 60); // own renewal: no change, no emission
  await clock.advance(0);
  assert.deepEqual(emitted.slice(1), [
    '10.244.1.0/24>192.0.2.1 10.244.2.0/24>192.0.2.2 10.244.3.0/24>192.0.2.3',
    '10.244.1.0/24>192.0.2.11 10.244.2.0/24>192.0.2.2 10.244.3.0/24>192.0.2.3',
    '10.244.1.0/24>192.0.2.11 10.244.2.0/24>192.0.2.2',
  ]);
  assert.equal(show(watcher.currentRoutes()), '10.244.1.0/24>192.0.2.11 10.244.2.0/24>192.0.2.2');
  watcher.stop();
  assert.equal(store.openWatches, 0);
});

test('an empty registry emits an empty route list once', async () => {
  const { emitted, watcher, clock } = setup();
  watcher.start();
  await clock.advance(0);
  assert.deepEqual(emitted, ['']);
  watcher.stop();
});

test('expired leases are removed', async () => {
  const { store, emitted, watcher, clock } = setup();
  await store.put(`${P}10.244.1.0-24`, v('192.0.2.1'), 60);
  await store.put(`${P}10.244.2.0-24`, v('192.0.2.2'), 120);
  watcher.start();
  await clock.advance(0);
  await clock.advance(61_000);
  assert.deepEqual(emitted, ['10.244.1.0/24>192.0.2.1 10.244.2.0/24>192.0.2.2', '10.244.2.0/24>192.0.2.2']);
  await clock.advance(60_000);
  assert.deepEqual(emitted.at(-1), '');
  watcher.stop();
});

test('a bad key or value is logged and ignored, never wiping routes', async () => {
  const { store, emitted, watcher, clock, logger } = setup();
  await store.put(`${P}10.244.1.0-24`, v('192.0.2.1'), 60);
  await store.put(`${P}junk`, v('192.0.2.9'), 60);
  await store.put(`${P}10.244.4.0-24`, 'not json', 60);
  watcher.start();
  await clock.advance(0);
  assert.deepEqual(emitted, ['10.244.1.0/24>192.0.2.1']);
  await store.put(`${P}10.244.1.0-24`, '{"PublicIP":"fc00::1"}', 60); // bad update: keep the old route
  await store.put(`${P}also-junk`, 'x', 60);
  await store.put(`${P}10.244.5.0-24`, '{"PublicIP":"192.0.2.5"}', 60); // old flannel value
  await clock.advance(0);
  assert.deepEqual(emitted.at(-1), '10.244.1.0/24>192.0.2.1 10.244.5.0/24>192.0.2.5');
  assert.ok(logger.lines.some((l) => l.includes('Ignoring bad subnet node /coreos.com/network/subnets/junk')));
  assert.ok(logger.lines.some((l) => l.includes('10.244.1.0-24 with a bad value')));
  watcher.stop();
});

test('compaction: re-list and diff, re-emitting a PublicIP changed during the gap', async () => {
  const { store, emitted, watcher, clock } = setup();
  await store.put(`${P}10.244.1.0-24`, v('192.0.2.1'), 0);
  await store.put(`${P}10.244.2.0-24`, v('192.0.2.2'), 0);
  watcher.start();
  await clock.advance(0);
  // The gap: the store is unreachable, changes happen, history is compacted away.
  store.setReachable(false);
  await clock.advance(0);
  assert.equal(emitted.length, 1, 'routes stay while the store is unreachable');
  store.setReachable(true);
  // Meanwhile other hosts write, and the history is compacted before our watch catches up.
  store.pauseWatchDelivery(true);
  await store.put(`${P}10.244.1.0-24`, v('192.0.2.101'), 0);
  await store.delete(`${P}10.244.2.0-24`);
  await store.put(`${P}10.244.3.0-24`, v('192.0.2.3'), 0);
  store.compact();
  store.pauseWatchDelivery(false);
  await clock.advance(0);
  assert.equal(emitted.at(-1), '10.244.1.0/24>192.0.2.101 10.244.3.0/24>192.0.2.3');
  assert.equal(emitted.length, 2, 'one emission for the whole re-list');
  assert.equal(store.openWatches, 1, 'watching again after the re-list');
  await store.put(`${P}10.244.4.0-24`, v('192.0.2.4'), 0);
  await clock.advance(0);
  assert.equal(emitted.at(-1), '10.244.1.0/24>192.0.2.101 10.244.3.0/24>192.0.2.3 10.244.4.0/24>192.0.2.4');
  watcher.stop();
});

test('re-list after compaction sees a PublicIP change the watch never delivered', async () => {
  const { store, emitted, watcher, clock } = setup();
  await store.put(`${P}10.244.1.0-24`, v('192.0.2.1'), 0);
  watcher.start();
  await clock.advance(0);
  // The change is compacted away before it reaches the watch.
  store.pauseWatchDelivery(true);
  await store.put(`${P}10.244.1.0-24`, v('192.0.2.55'), 0);
  store.simulateCompaction();
  store.pauseWatchDelivery(false);
  await clock.advance(0);
  assert.deepEqual(emitted, ['10.244.1.0/24>192.0.2.1', '10.244.1.0/24>192.0.2.55']);
  watcher.stop();
});

test('a failed initial listing is retried with backoff 100 ms doubling to 5 s', async () => {
  const { store, emitted, watcher, clock, logger } = setup();
  await store.put(`${P}10.244.1.0-24`, v('192.0.2.1'), 0);
  store.setReachable(false);
  watcher.start();
  await settle();
  // Attempts at 0, 100, 300, 700, 1500, 3100, 6300 (5 s cap), 11300, ...
  await clock.advance(11_300);
  const failures = logger.lines.filter((l) => l.includes('listing subnet leases failed'));
  assert.deepEqual(
    failures.map((l) => /retrying in (\d+) ms/.exec(l)![1]),
    ['100', '200', '400', '800', '1600', '3200', '5000', '5000'],
  );
  assert.deepEqual(emitted, []);
  store.setReachable(true);
  await clock.advance(5_000);
  assert.deepEqual(emitted, ['10.244.1.0/24>192.0.2.1']);
  watcher.stop();
});

test('setOwnSubnet: the old own subnet becomes a route, the new one is skipped', async () => {
  const { store, emitted, watcher, clock } = setup();
  await store.put(`${P}10.244.7.0-24`, v('192.0.2.70'), 0);
  await store.put(`${P}10.244.8.0-24`, v('192.0.2.7'), 0);
  watcher.start();
  await clock.advance(0);
  watcher.setOwnSubnet(parseCidr('10.244.8.0/24'));
  assert.deepEqual(emitted, ['10.244.8.0/24>192.0.2.7', '10.244.7.0/24>192.0.2.70']);
  watcher.stop();
});

test('host bits in a key are cleared; a dual-stack key is routed by its IPv4 part', async () => {
  const { store, emitted, watcher, clock } = setup();
  await store.put(`${P}10.244.1.5-24`, v('192.0.2.1'), 0);
  await store.put(`${P}10.244.2.0-24&fc00:0:0:2::-64`, v('192.0.2.2'), 0);
  watcher.start();
  await clock.advance(0);
  assert.deepEqual(emitted, ['10.244.1.0/24>192.0.2.1 10.244.2.0/24>192.0.2.2']);
  watcher.stop();
});

test('the listing asks for no expiries (routes need none) and yields every route', async () => {
  const clock = new ManualClock();
  const store = new BareListingStore({ clock });
  const emitted: string[] = [];
  const watcher = new RouteWatcher({
    store,
    ownSubnet: parseCidr('10.244.7.0/24'),
    onRoutes: (r) => emitted.push(show(r)),
    clock,
  });
  await store.put(`${P}10.244.1.0-24`, v('192.0.2.1'), 60);
  await store.put(`${P}10.244.2.0-24`, v('192.0.2.2'), 0);
  watcher.start();
  await clock.advance(0);
  assert.deepEqual(store.listings, ['bare']);
  assert.deepEqual(emitted, ['10.244.1.0/24>192.0.2.1 10.244.2.0/24>192.0.2.2']);
  watcher.stop();
});
