import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, MemoryLogger, settle } from '../helpers/manual-clock.js';
import { parseNetworkConfig } from '../../src/subnet/config.js';
import { LeaseManager, LEASE_TTL_SECONDS, OutOfSubnetsError } from '../../src/subnet/lease-manager.js';
import type { Lease } from '../../src/subnet/lease-manager.js';
import { MemoryKvStore } from '../helpers/memory-kv.js';
import { BareListingStore } from '../helpers/bare-listing-store.js';
import { formatCidr, parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';

const P = '/coreos.com/network/subnets/';
const HOUR = 3_600_000;
const config = parseNetworkConfig('{"Network":"10.244.0.0/16"}');
const ME = parseIPv4('192.0.2.7');
const value = (ip: string): string => `{"PublicIP":"${ip}","PublicIPv6":null}`;
const cidr = (l: Lease): string => formatCidr(l.subnet.prefix, l.subnet.prefixLen);

function setup(extra: Partial<ConstructorParameters<typeof LeaseManager>[0]> = {}) {
  const clock = new ManualClock();
  const store = new MemoryKvStore({ clock });
  const logger = new MemoryLogger();
  const mgr = new LeaseManager({ store, config, publicIp: ME, clock, random: () => 0, logger, ...extra });
  return { clock, store, logger, mgr };
}

test('fresh acquisition: random pick among the first 100 free subnets, 24 h TTL, exact value', async () => {
  const picks: string[] = [];
  for (const r of [0, 0.5, 0.999999]) {
    const { store, mgr, clock } = setup({ random: () => r });
    await store.put(`${P}10.244.1.0-24`, value('192.0.2.1'), 0); // taken
    const lease = await mgr.acquire();
    picks.push(cidr(lease));
    const kv = await store.get(lease.key);
    assert.equal(kv?.value, '{"PublicIP":"192.0.2.7","PublicIPv6":null}');
    assert.equal(kv?.expiresAt, clock.now() + LEASE_TTL_SECONDS * 1000);
    assert.equal(lease.expiresAt, clock.now() + 24 * HOUR);
  }
  // Candidates are 10.244.2.0 .. 10.244.101.0 (the first 100 free ones from SubnetMin, .1 being taken); index floor(r *
  // 100).
  assert.deepEqual(picks, ['10.244.2.0/24', '10.244.52.0/24', '10.244.101.0/24']);
});

test('reuses the lease already held for our PublicIP (overwriting the value, renewing the TTL)', async () => {
  const { store, mgr, clock } = setup();
  await store.put(`${P}10.244.42.0-24`, '{"PublicIP":"192.0.2.7","BackendType":"vxlan"}', 60);
  const lease = await mgr.acquire();
  assert.equal(cidr(lease), '10.244.42.0/24');
  const kv = await store.get(`${P}10.244.42.0-24`);
  assert.equal(kv?.value, value('192.0.2.7'));
  assert.equal(kv?.expiresAt, clock.now() + 24 * HOUR);
});

test('a held lease that no longer fits the config is deleted, then the normal order applies', async () => {
  const { store, mgr } = setup();
  await store.put(`${P}10.99.0.0-24`, value('192.0.2.7'), 60);
  await store.put(`${P}10.244.5.0-25`, value('192.0.2.9'), 60);
  const lease = await mgr.acquire();
  assert.equal(await store.get(`${P}10.99.0.0-24`), null);
  assert.equal(cidr(lease), '10.244.1.0/24');
});

test('a reservation for our PublicIP stays a reservation (flannel #1329 fixed) and is never renewed', async () => {
  const { store, mgr, clock } = setup();
  await store.put(`${P}10.244.77.0-24`, value('192.0.2.7'), 0);
  const lease = await mgr.acquire();
  assert.equal(cidr(lease), '10.244.77.0/24');
  assert.equal(lease.expiresAt, null);
  assert.equal((await store.get(lease.key))?.expiresAt, null);
  mgr.start();
  const rev = store.revision;
  await clock.advance(30 * 24 * HOUR);
  assert.equal(store.revision, rev, 'no write to the store');
  assert.equal((await store.get(lease.key))?.expiresAt, null);
  mgr.stop();
});

test("other hosts' reservations are respected by allocation", async () => {
  const cfg = parseNetworkConfig('{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.3.0"}');
  const { store, mgr } = setup({ config: cfg });
  await store.put(`${P}10.244.1.0-24`, value('192.0.2.1'), 0);
  await store.put(`${P}10.244.2.0-24`, value('192.0.2.2'), 0);
  const lease = await mgr.acquire();
  assert.equal(cidr(lease), '10.244.3.0/24');
  assert.equal((await store.get(`${P}10.244.1.0-24`))?.value, value('192.0.2.1'));
});

test('previous subnet from the subnet file is used when free and fitting, otherwise skipped', async () => {
  {
    const { mgr } = setup({ previousSubnet: parseCidr('10.244.200.1/24') });
    assert.equal(cidr(await mgr.acquire()), '10.244.200.0/24');
  }
  {
    const { store, mgr } = setup({ previousSubnet: parseCidr('10.244.200.0/24') });
    await store.put(`${P}10.244.200.0-24`, value('192.0.2.99'), 60); // someone else holds it
    const lease = await mgr.acquire();
    assert.equal(cidr(lease), '10.244.1.0/24');
    assert.equal((await store.get(`${P}10.244.200.0-24`))?.value, value('192.0.2.99'), 'not taken over');
  }
  {
    const { store, mgr } = setup({ previousSubnet: parseCidr('10.244.200.0/24') });
    await store.put(`${P}10.244.0.0-16`, value('192.0.2.98'), 60); // overlaps it
    await assert.rejects(mgr.acquire(), OutOfSubnetsError);
  }
  {
    const { mgr } = setup({ previousSubnet: parseCidr('10.5.0.0/24') }); // outside the Network
    assert.equal(cidr(await mgr.acquire()), '10.244.1.0/24');
  }
  {
    // Our own lease beats the subnet file.
    const { store, mgr } = setup({ previousSubnet: parseCidr('10.244.200.0/24') });
    await store.put(`${P}10.244.9.0-24`, value('192.0.2.7'), 60);
    assert.equal(cidr(await mgr.acquire()), '10.244.9.0/24');
  }
});

test('out of subnets; bad keys ignored but unreadable values still occupy their subnet', async () => {
  const cfg = parseNetworkConfig('{"Network":"10.0.0.0/28"}'); // subnets .4 .8 .12 (/30)
  const { store, mgr, logger } = setup({ config: cfg });
  await store.put(`${P}10.0.0.4-30`, value('192.0.2.1'), 60);
  await store.put(`${P}10.0.0.8-30`, 'garbage', 60);
  await store.put(`${P}not-a-subnet`, value('192.0.2.3'), 60);
  const lease = await mgr.acquire();
  assert.equal(cidr(lease), '10.0.0.12/30');
  assert.ok(logger.lines.some((l) => l.includes('Ignoring bad subnet node')));
  const other = new LeaseManager({ store, config: cfg, publicIp: parseIPv4('192.0.2.50'), random: () => 0 });
  await assert.rejects(
    other.acquire(),
    (e: unknown) => e instanceof OutOfSubnetsError && e.message === 'out of subnets',
  );
});

test('racing managers on one store never share a subnet; a lost race is retried', async () => {
  const clock = new ManualClock();
  const store = new MemoryKvStore({ clock });
  const managers = Array.from(
    { length: 8 },
    (_, i) => new LeaseManager({ store, config, publicIp: parseIPv4(`192.0.2.${i + 10}`), clock, random: () => 0 }),
  );
  const leases = await Promise.all(managers.map((m) => m.acquire()));
  const subnets = leases.map(cidr);
  assert.equal(new Set(subnets).size, 8, subnets.join(' '));
  const listing = await store.list(P);
  assert.equal(listing.kvs.length, 8);
});

test('more than 10 lost races is an error', async () => {
  const clock = new ManualClock();
  const store = new MemoryKvStore({ clock });
  // A store where every create loses.
  const losing = Object.create(store) as MemoryKvStore;
  let attempts = 0;
  losing.createIfAbsent = async () => {
    attempts++;
    return false;
  };
  const mgr = new LeaseManager({ store: losing, config, publicIp: ME, clock, random: () => 0 });
  await assert.rejects(mgr.acquire(), /Max retries reached trying to acquire a subnet/);
  assert.equal(attempts, 10);
});

test('renew margin is validated (1..1439 minutes)', () => {
  const store = new MemoryKvStore();
  for (const bad of [0, 1440, -5, 1.5]) {
    assert.throws(() => new LeaseManager({ store, config, publicIp: ME, renewMarginMinutes: bad }), /1\.\.1439/);
  }
  assert.doesNotThrow(() => new LeaseManager({ store, config, publicIp: ME, renewMarginMinutes: 1439 }));
});

test('renewal happens renewMargin before expiry; a failed renewal is retried after 1 minute', async () => {
  const { store, mgr, clock } = setup({ renewMarginMinutes: 60 });
  const lease = await mgr.acquire();
  const t0 = clock.now();
  mgr.start();
  await clock.advance(23 * HOUR - 1000);
  assert.equal((await store.get(lease.key))?.expiresAt, t0 + 24 * HOUR, 'not renewed yet');
  await clock.advance(1000);
  assert.equal((await store.get(lease.key))?.expiresAt, t0 + 47 * HOUR, 'renewed at 23 h');
  assert.equal(mgr.lease?.expiresAt, t0 + 47 * HOUR);

  // Next renewal at 46 h: the store is down then; retried every minute until it is back.
  await clock.advance(23 * HOUR - 1000);
  store.setReachable(false);
  await clock.advance(1000 + 60_000 + 60_000);
  store.setReachable(true);
  await clock.advance(59_000);
  assert.equal((await store.get(lease.key))?.expiresAt, t0 + 47 * HOUR, 'not yet: next retry at +3 min');
  await clock.advance(1000);
  assert.equal((await store.get(lease.key))?.expiresAt, t0 + 46 * HOUR + 3 * 60_000 + 24 * HOUR);
  mgr.stop();
});

test('custom margin: renewed margin minutes before expiry', async () => {
  const { store, mgr, clock } = setup({ renewMarginMinutes: 5 });
  const lease = await mgr.acquire();
  const t0 = clock.now();
  mgr.start();
  await clock.advance(24 * HOUR - 5 * 60_000 - 1);
  assert.equal((await store.get(lease.key))?.expiresAt, t0 + 24 * HOUR);
  await clock.advance(1);
  assert.equal((await store.get(lease.key))?.expiresAt, t0 + 48 * HOUR - 5 * 60_000);
  mgr.stop();
});

test('a deleted lease is re-acquired (same subnet, as it is now free)', async () => {
  const { store, mgr, clock } = setup();
  const lease = await mgr.acquire();
  const events: Array<[string, string]> = [];
  mgr.start({ onReacquired: (l, prev) => events.push([cidr(l), cidr(prev)]) });
  await settle();
  await store.delete(lease.key);
  await clock.advance(0);
  assert.deepEqual(events, [['10.244.1.0/24', '10.244.1.0/24']]);
  assert.equal((await store.get(lease.key))?.value, value('192.0.2.7'));
  mgr.stop();
});

test('a lease taken over by another host is replaced by a new subnet', async () => {
  const { store, mgr, clock } = setup();
  const lease = await mgr.acquire();
  const events: Array<[string, string]> = [];
  mgr.start({ onReacquired: (l, prev) => events.push([cidr(l), cidr(prev)]) });
  await settle();
  await store.put(lease.key, value('192.0.2.66'), 60);
  await clock.advance(0);
  assert.deepEqual(events, [['10.244.2.0/24', '10.244.1.0/24']]);
  assert.equal(mgr.lease && cidr(mgr.lease), '10.244.2.0/24');
  assert.equal((await store.get(lease.key))?.value, value('192.0.2.66'), 'the other host keeps it');
});

test('an expired lease (renewals failing past expiry) is re-acquired once the store is back', async () => {
  const { store, mgr, clock } = setup();
  const lease = await mgr.acquire();
  const events: string[] = [];
  mgr.start({ onReacquired: (l) => events.push(cidr(l)) });
  store.setReachable(false);
  await clock.advance(25 * HOUR);
  assert.deepEqual(events, []);
  // Back: the resumed watch delivers the expiry's delete event, and the lease is re-acquired at once.
  store.setReachable(true);
  await clock.advance(0);
  assert.deepEqual(events, ['10.244.1.0/24']);
  const kv = await store.get(lease.key);
  assert.equal(kv?.expiresAt, clock.now() + 24 * HOUR);
  mgr.stop();
});

test('compaction of the own-lease watch: re-checked and watched again', async () => {
  const { store, mgr, clock } = setup();
  const lease = await mgr.acquire();
  const events: string[] = [];
  mgr.start({ onReacquired: (l) => events.push(cidr(l)) });
  await settle();
  store.simulateCompaction();
  await clock.advance(0);
  assert.equal(store.openWatches, 1, 'a new watch is open');
  assert.deepEqual(events, []);
  await store.delete(lease.key);
  await clock.advance(0);
  assert.deepEqual(events, ['10.244.1.0/24']);
  mgr.stop();
  assert.equal(store.openWatches, 0);
});

test('acquisition lists without expiries (no per-lease lookups) and still tells a reservation from a lease', async () => {
  for (const [ttl, expected] of [
    [0, 'reservation'],
    [60, 'lease'],
  ] as const) {
    const clock = new ManualClock();
    const store = new BareListingStore({ clock });
    const mgr = new LeaseManager({ store, config, publicIp: ME, clock, random: () => 0, logger: new MemoryLogger() });
    for (let i = 1; i <= 20; i++) await store.put(`${P}10.244.${i}.0-24`, value(`192.0.2.${100 + i}`), 60);
    await store.put(`${P}10.244.77.0-24`, value('192.0.2.7'), ttl);
    const lease = await mgr.acquire();
    assert.deepEqual(store.listings, ['bare'], 'one listing, without expiries');
    assert.equal(cidr(lease), '10.244.77.0/24');
    assert.equal(lease.expiresAt === null ? 'reservation' : 'lease', expected);
    const kv = await store.get(lease.key);
    assert.equal(kv?.expiresAt, ttl === 0 ? null : clock.now() + 24 * HOUR);
  }
});

test('a compaction during a renewal does not lose the watch on our own key', async () => {
  const clock = new ManualClock();
  const mem = new MemoryKvStore({ clock });
  // A store whose get() can be held, to keep a renewal in flight.
  let gate: Promise<void> | null = null;
  const store = new Proxy(mem, {
    get(target, prop) {
      if (prop === 'get')
        return async (key: string) => {
          if (gate) await gate;
          return target.get(key);
        };
      const v = Reflect.get(target, prop) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  const lm = new LeaseManager({ store, config, publicIp: ME, clock, logger: new MemoryLogger() });
  const lease = await lm.acquire();
  let reacquired = 0;
  lm.start({
    onReacquired: () => {
      reacquired++;
    },
  });
  await clock.advance(1000);
  let release = (): void => {};
  gate = new Promise<void>((r) => {
    release = r;
  });
  await clock.advance(23 * HOUR); // the renewal starts and waits on get()
  mem.simulateCompaction(); // closes the own-key watch while the renewal is busy
  await settle();
  release();
  gate = null;
  await settle();
  await settle();
  assert.equal(mem.openWatches, 1, 'the own-key watch was re-armed after the renewal');
  await mem.delete(lease.key);
  await clock.advance(1000);
  await settle();
  assert.equal(reacquired, 1, 'losing the key is noticed at once, not at the next renewal');
  lm.stop();
});
