import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, MemoryLogger } from '../helpers/manual-clock.js';
import { MemoryKvStore } from '../helpers/memory-kv.js';
import { RouteWatcher, type Route } from '../../src/subnet/route-watcher.js';
import { checkPeerLease, type CandidateLease } from '../../src/subnet/lease-validation.js';
import { RefusalCounters } from '../../src/subnet/refusals.js';
import { notUnicastReason } from '../../src/subnet/address-checks.js';
import { formatCidr, formatIPv4, parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';
import { renderMetrics } from '../../src/observability/metrics.js';
import { COUNTER_NAMES } from '../../src/datapath/counters.js';

const P = '/coreos.com/network/subnets/';
const v = (ip: string): string => `{"PublicIP":"${ip}","PublicIPv6":null}`;
const show = (routes: Route[]): string =>
  routes.map((r) => `${formatCidr(r.prefix, r.prefixLen)}>${formatIPv4(r.publicIp)}`).join(' ');
const OWN = parseCidr('10.244.7.0/24');
const NETWORK = parseCidr('10.244.0.0/16');
const OWN_IP = parseIPv4('192.0.2.7');

function setup() {
  const clock = new ManualClock();
  const store = new MemoryKvStore({ clock });
  const logger = new MemoryLogger();
  const refusals = new RefusalCounters();
  const emitted: string[] = [];
  const watcher = new RouteWatcher({
    store,
    ownSubnet: OWN,
    network: NETWORK,
    ownPublicIp: OWN_IP,
    refusals,
    onRoutes: (r) => emitted.push(show(r)),
    clock,
    logger,
  });
  return { clock, store, logger, refusals, emitted, watcher };
}

const lease = (subnet: string, ip: string, modRevision = 1): CandidateLease => ({
  key: `${P}${subnet.replace('/', '-')}`,
  subnet: parseCidr(subnet),
  publicIp: parseIPv4(ip),
  modRevision,
});
const ctx = { network: NETWORK, ownSubnet: OWN, ownPublicIp: OWN_IP };

test('checkPeerLease: each rule, with its reason', () => {
  const reason = (subnet: string, ip: string) => checkPeerLease(lease(subnet, ip), ctx)?.reason ?? 'ok';
  assert.equal(reason('10.244.1.0/24', '192.0.2.1'), 'ok');
  assert.equal(reason('10.245.1.0/24', '192.0.2.1'), 'outside_network');
  assert.equal(reason('0.0.0.0/0', '192.0.2.1'), 'outside_network');
  assert.equal(reason('10.0.0.0/8', '192.0.2.1'), 'outside_network');
  assert.equal(reason('10.244.7.128/25', '192.0.2.1'), 'overlaps_own_subnet');
  assert.equal(reason('10.244.6.0/23', '192.0.2.1'), 'overlaps_own_subnet');
  for (const ip of ['127.0.0.1', '0.0.0.0', '224.0.0.1', '239.1.2.3', '255.255.255.255', '240.0.0.1'])
    assert.equal(reason('10.244.1.0/24', ip), 'public_ip_not_unicast', ip);
  assert.equal(reason('10.244.1.0/24', '192.0.2.7'), 'public_ip_ours');
  // Without a known network or PublicIP, those two checks are off.
  assert.equal(
    checkPeerLease(lease('10.245.1.0/24', '192.0.2.7'), { network: null, ownSubnet: OWN, ownPublicIp: null }),
    null,
  );
  assert.match(checkPeerLease(lease('10.244.1.0/24', '127.0.0.1'), ctx)!.detail, /127\.0\.0\.1 is a loopback/);
});

test('notUnicastReason: unicast addresses pass, the special blocks do not', () => {
  for (const ip of ['1.0.0.0', '192.0.2.1', '126.255.255.255', '128.0.0.0', '223.255.255.255', '169.254.1.1'])
    assert.equal(notUnicastReason(parseIPv4(ip)), null, ip);
  for (const ip of ['0.0.0.1', '127.255.0.1', '224.0.0.0', '255.255.255.255', '250.1.1.1'])
    assert.notEqual(notUnicastReason(parseIPv4(ip)), null, ip);
});

test('bad leases are not routed, logged once per change and counted; good ones flow', async () => {
  const { store, clock, logger, refusals, emitted, watcher } = setup();
  await store.put(`${P}10.244.1.0-24`, v('192.0.2.1'), 60);
  await store.put(`${P}10.244.2.0-24`, v('127.0.0.1'), 60);
  await store.put(`${P}10.9.0.0-24`, v('192.0.2.9'), 60);
  await store.put(`${P}10.244.7.128-25`, v('192.0.2.8'), 60);
  await store.put(`${P}0.0.0.0-0`, v('192.0.2.10'), 60);
  await store.put(`${P}10.244.3.0-24`, v('224.0.0.1'), 60);
  await store.put(`${P}10.244.4.0-24`, v('192.0.2.7'), 60);
  watcher.start();
  await clock.advance(0);
  assert.deepEqual(emitted, ['10.244.1.0/24>192.0.2.1']);
  const refused = logger.lines.filter((l) => l.startsWith('W Refusing lease'));
  assert.equal(refused.length, 6, refused.join('\n'));
  assert.ok(refused.some((l) => l.includes('10.244.2.0-24: PublicIP 127.0.0.1 is a loopback address')));
  assert.ok(refused.some((l) => l.includes('0.0.0.0-0: subnet 0.0.0.0/0 is not inside network 10.244.0.0/16')));
  assert.equal(refusals.total('lease'), 6);

  // An event storm that re-puts the same bad values (renewals), or changes good leases: no new lines.
  for (let i = 0; i < 20; i++) {
    await store.put(`${P}10.244.2.0-24`, v('127.0.0.1'), 60);
    await store.put(`${P}10.244.5.${i}-32`, v('192.0.2.5'), 60);
    await clock.advance(0);
  }
  assert.equal(logger.lines.filter((l) => l.startsWith('W Refusing lease')).length, 6);
  assert.equal(refusals.total('lease'), 6);

  // The bad lease changes (still bad): one more line. Then it is fixed: routed.
  await store.put(`${P}10.244.2.0-24`, v('0.0.0.0'), 60);
  await clock.advance(0);
  assert.equal(logger.lines.filter((l) => l.startsWith('W Refusing lease')).length, 7);
  await store.put(`${P}10.244.2.0-24`, v('192.0.2.2'), 60);
  await clock.advance(0);
  assert.match(emitted.at(-1)!, /10\.244\.2\.0\/24>192\.0\.2\.2/);
  // Refused again later: logged again.
  await store.put(`${P}10.244.2.0-24`, v('127.0.0.1'), 60);
  await clock.advance(0);
  assert.equal(logger.lines.filter((l) => l.startsWith('W Refusing lease')).length, 8);
  assert.doesNotMatch(emitted.at(-1)!, /10\.244\.2\.0/);

  const byReason = Object.fromEntries(refusals.entries().map((r) => [r.reason, r.count]));
  assert.deepEqual(byReason, {
    public_ip_not_unicast: 4,
    outside_network: 2,
    overlaps_own_subnet: 1,
    public_ip_ours: 1,
  });
  watcher.stop();
});

test('overlapping leases: the older keeps its route, the newer is refused', async () => {
  const { store, clock, logger, emitted, watcher, refusals } = setup();
  await store.put(`${P}10.244.17.0-24`, v('192.0.2.1'), 60);
  watcher.start();
  await clock.advance(0);
  await store.put(`${P}10.244.16.0-20`, v('192.0.2.2'), 60); // contains 10.244.17.0/24
  await store.put(`${P}10.244.17.64-26`, v('192.0.2.3'), 60); // inside both
  await store.put(`${P}10.244.2.0-24`, v('192.0.2.4'), 60); // disjoint: fine
  await clock.advance(0);
  assert.equal(emitted.at(-1), '10.244.2.0/24>192.0.2.4 10.244.17.0/24>192.0.2.1');
  const lines = logger.lines.filter((l) => l.includes('overlaps the older lease'));
  assert.equal(lines.length, 2, logger.lines.join('\n'));
  assert.equal(refusals.total(), 2);
  // The oldest goes away: of the two left, the /20 was written first and takes over.
  await store.delete(`${P}10.244.17.0-24`);
  await clock.advance(0);
  assert.equal(emitted.at(-1), '10.244.2.0/24>192.0.2.4 10.244.16.0/20>192.0.2.2');
  watcher.stop();
});

test('/metrics exposes the refusals by input and reason', () => {
  const refusals = new RefusalCounters();
  refusals.add('lease', 'outside_network');
  refusals.add('lease', 'outside_network');
  refusals.add('config', 'changed');
  const text = renderMetrics({
    counters: new Float64Array(COUNTER_NAMES.length),
    routes: () => [],
    lease: () => null,
    refusals: () => refusals.entries(),
  });
  assert.match(text, /# TYPE flannel_ts_refusals_total counter/);
  assert.match(text, /flannel_ts_refusals_total\{input="lease",reason="outside_network"\} 2\n/);
  assert.match(text, /flannel_ts_refusals_total\{input="config",reason="changed"\} 1\n/);
});
