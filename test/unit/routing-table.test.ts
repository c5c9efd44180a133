import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { formatCidr, formatIPv4, maskOf, parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';
import { referenceLookup } from '../helpers/routing-reference.js';
import { RoutingSnapshot, type Route } from '../../src/routing-table/snapshot.js';
import { mulberry32 } from '../helpers/prng.js';

/** The trie's 256-entry nodes (a private detail of the snapshot, read here to check controlled expansion). */
function trieNodes(snap: RoutingSnapshot): number {
  return (snap as unknown as { nodes: Int32Array }).nodes.length / 256;
}

/** Fixed by default so failures reproduce; set ROUTING_TABLE_SEED=<n> to explore other tables. */
const BASE_SEED = Number(process.env['ROUTING_TABLE_SEED'] ?? 0x5eed_f1a7) >>> 0;

function route(cidr: string, publicIp: string): Route {
  const { prefix, prefixLen } = parseCidr(cidr);
  return { prefix, prefixLen, publicIp: parseIPv4(publicIp) };
}

const ip = parseIPv4;

/** The publicIp the snapshot routes addr to, or null. */
function nextHop(snap: RoutingSnapshot, addr: string): string | null {
  const i = snap.lookup(ip(addr));
  return i < 0 ? null : formatIPv4(snap.publicIpOf[i]!);
}

/** A random table whose prefixes cluster around a few anchors so they nest and overlap. */
function randomTable(rand: () => number): Route[] {
  const count = 1 + (rand() % 500);
  const minLen = [0, 1, 4, 8, 12, 16, 20, 24, 28][rand() % 9]!;
  const anchors = Array.from({ length: 1 + (rand() % 8) }, () => rand());
  const routes: Route[] = [];
  for (let i = 0; i < count; i++) {
    if (routes.length > 0 && rand() % 20 === 0) {
      // Duplicate prefix with a different peer: the later one must win.
      const old = routes[rand() % routes.length]!;
      routes.push({ prefix: old.prefix, prefixLen: old.prefixLen, publicIp: rand() });
      continue;
    }
    const prefixLen = minLen + (rand() % (33 - minLen));
    let base: number;
    if (rand() % 10 < 7) {
      // Near an anchor: flip a few random low bits.
      const anchor = anchors[rand() % anchors.length]!;
      base = anchor ^ (rand() & ~maskOf(rand() % 33));
    } else {
      base = rand();
    }
    routes.push({ prefix: (base & maskOf(prefixLen)) >>> 0, prefixLen, publicIp: rand() });
  }
  return routes;
}

/** Addresses worth probing: every prefix's edges and their outside neighbours, plus random ones. */
function probeAddresses(routes: readonly Route[], rand: () => number): number[] {
  const addrs = [0, 0xffffffff, 0x7fffffff, 0x80000000];
  for (const r of routes) {
    const first = r.prefix;
    const last = (r.prefix | ~maskOf(r.prefixLen)) >>> 0;
    addrs.push(first, last, (first - 1) >>> 0, (last + 1) >>> 0);
    addrs.push((first + (rand() & ~maskOf(r.prefixLen))) >>> 0);
  }
  for (let i = 0; i < 200; i++) addrs.push(rand());
  return addrs;
}

function describeRoute(r: Route | undefined): string {
  return r === undefined ? 'none' : `${formatCidr(r.prefix, r.prefixLen)} -> ${formatIPv4(r.publicIp)}`;
}

/**
 * Asserts that the snapshot agrees with the linear reference over the raw input (where later duplicates
 * win) on addr: same prefix, same length, same peer. De-duplicated prefixes are unique, so this also pins
 * the route index.
 */
function checkAddress(snap: RoutingSnapshot, input: readonly Route[], addr: number): void {
  const got = snap.lookup(addr);
  const expected = referenceLookup(input, addr);
  if (got !== -1 && expected !== -1) {
    const g = snap.routes[got]!;
    const e = input[expected]!;
    if (g.prefix === e.prefix && g.prefixLen === e.prefixLen && snap.publicIpOf[got] === e.publicIp) {
      assert.equal(snap.lookup(addr | 0), got, `signed int32 form of ${formatIPv4(addr)}`);
      return;
    }
  } else if (got === expected) {
    assert.equal(snap.lookup(addr | 0), got, `signed int32 form of ${formatIPv4(addr)}`);
    return;
  }
  assert.fail(
    `addr ${formatIPv4(addr)}: trie says ${describeRoute(snap.routes[got])} ` +
      `(publicIpOf ${got < 0 ? '-' : formatIPv4(snap.publicIpOf[got]!)}), ` +
      `reference says ${describeRoute(input[expected])}`,
  );
}

describe('RoutingSnapshot: randomized against the linear reference', () => {
  it('agrees on 300 random tables of 1..500 routes', () => {
    for (let t = 0; t < 300; t++) {
      const seed = (BASE_SEED + Math.imul(t, 0x9e3779b9)) >>> 0;
      const rand = mulberry32(seed);
      const input = randomTable(rand);
      try {
        const snap = RoutingSnapshot.build(input);
        for (const addr of probeAddresses(input, rand)) checkAddress(snap, input, addr);
        for (let i = 0; i < snap.routeCount; i++) assert.equal(snap.publicIpOf[i], snap.routes[i]!.publicIp);
      } catch (err) {
        console.error(
          `routing-table randomized test failed: table #${t}, seed ${seed} (ROUTING_TABLE_SEED=${BASE_SEED})`,
        );
        throw err;
      }
    }
  });

  it('isPeerAddress agrees with a scan of the routes', () => {
    for (let t = 0; t < 50; t++) {
      const seed = (BASE_SEED ^ (0xabcdef + t)) >>> 0;
      const rand = mulberry32(seed);
      const input = randomTable(rand);
      const snap = RoutingSnapshot.build(input);
      const candidates = input.map((r) => r.publicIp);
      for (let i = 0; i < 100; i++) candidates.push(rand());
      candidates.push(0, 0xffffffff);
      for (const p of candidates) {
        const expected = snap.routes.some((r) => r.publicIp === p);
        assert.equal(snap.isPeerAddress(p), expected, `seed ${seed}: publicIp ${formatIPv4(p)}`);
        assert.equal(snap.isPeerAddress(p | 0), expected, `seed ${seed}: int32 form of ${formatIPv4(p)}`);
      }
    }
  });

  it('resolves every prefix length 0..32 on one nested chain', () => {
    const rand = mulberry32(BASE_SEED ^ 0xc4a1);
    for (let round = 0; round < 50; round++) {
      const anchor = rand();
      const input: Route[] = [];
      for (let len = 32; len >= 0; len--) {
        input.push({ prefix: (anchor & maskOf(len)) >>> 0, prefixLen: len, publicIp: len });
      }
      const snap = RoutingSnapshot.build(input);
      assert.equal(snap.publicIpOf[snap.lookup(anchor)!], 32);
      // An address that first differs from the anchor at bit k shares exactly k leading bits with it.
      for (let k = 0; k < 32; k++) {
        const addr = (anchor ^ (0x80000000 >>> k)) >>> 0;
        assert.equal(snap.publicIpOf[snap.lookup(addr)], k, `anchor ${formatIPv4(anchor)}, bit ${k}`);
      }
    }
  });
});

describe('RoutingSnapshot: fixed cases', () => {
  it("routes flannel's typical table of /24 leases", () => {
    const input: Route[] = [];
    for (let n = 0; n < 256; n++) input.push(route(`10.244.${n}.0/24`, `192.0.2.${n}`));
    const snap = RoutingSnapshot.build(input);
    assert.equal(snap.routeCount, 256);
    assert.equal(nextHop(snap, '10.244.5.77'), '192.0.2.5');
    assert.equal(nextHop(snap, '10.244.0.0'), '192.0.2.0');
    assert.equal(nextHop(snap, '10.244.255.255'), '192.0.2.255');
    assert.equal(nextHop(snap, '10.245.0.1'), null);
    assert.equal(nextHop(snap, '10.243.255.255'), null);
    assert.equal(nextHop(snap, '8.8.8.8'), null);
    assert.equal(snap.lookup(ip('10.244.9.1')), 9, 'route index follows input order');
    assert.equal(snap.isPeerAddress(ip('192.0.2.42')), true);
    assert.equal(snap.isPeerAddress(ip('192.0.3.42')), false);
    assert.equal(trieNodes(snap), 3, 'root, 10/8 node, 10.244/16 node');
  });

  it('an empty table misses everything', () => {
    for (const snap of [RoutingSnapshot.EMPTY, RoutingSnapshot.build([])]) {
      assert.equal(snap.routeCount, 0);
      assert.equal(snap.routes.length, 0);
      assert.equal(snap.publicIpOf.length, 0);
      for (const a of [0, 1, 0x0af40101, 0x80000000, 0xffffffff, -1]) assert.equal(snap.lookup(a), -1);
      assert.equal(snap.isPeerAddress(0), false);
      assert.equal(snap.isPeerAddress(0xffffffff), false);
    }
  });

  it('a /0 default route matches every address, and more specific routes beat it', () => {
    const only = RoutingSnapshot.build([route('0.0.0.0/0', '192.0.2.1')]);
    for (const a of ['0.0.0.0', '255.255.255.255', '10.1.2.3', '127.0.0.1', '128.0.0.0']) {
      assert.equal(nextHop(only, a), '192.0.2.1', a);
    }
    const snap = RoutingSnapshot.build([route('10.0.0.0/8', '192.0.2.2'), route('0.0.0.0/0', '192.0.2.1')]);
    assert.equal(nextHop(snap, '10.200.0.1'), '192.0.2.2');
    assert.equal(nextHop(snap, '11.0.0.0'), '192.0.2.1');
    assert.equal(nextHop(snap, '9.255.255.255'), '192.0.2.1');
  });

  it('a /32 matches exactly one address, also under a covering route', () => {
    const snap = RoutingSnapshot.build([route('1.2.3.4/32', '192.0.2.4')]);
    assert.equal(nextHop(snap, '1.2.3.4'), '192.0.2.4');
    assert.equal(nextHop(snap, '1.2.3.3'), null);
    assert.equal(nextHop(snap, '1.2.3.5'), null);
    const covered = RoutingSnapshot.build([route('1.2.3.4/32', '192.0.2.4'), route('0.0.0.0/0', '192.0.2.1')]);
    assert.equal(nextHop(covered, '1.2.3.4'), '192.0.2.4');
    assert.equal(nextHop(covered, '1.2.3.5'), '192.0.2.1');
    const top = RoutingSnapshot.build([route('255.255.255.255/32', '192.0.2.9')]);
    assert.equal(nextHop(top, '255.255.255.255'), '192.0.2.9');
    assert.equal(top.lookup(-1), 0, 'signed int32 form');
    assert.equal(nextHop(top, '255.255.255.254'), null);
  });

  it('longest prefix wins over first match for overlapping /16 and /24', () => {
    // The C proxy (first match with move-to-front) sends 10.1.2.7 to B once the /16 is in front.
    const wide = route('10.1.0.0/16', '192.0.2.11');
    const narrow = route('10.1.2.0/24', '192.0.2.22');
    for (const input of [
      [wide, narrow],
      [narrow, wide],
    ]) {
      const snap = RoutingSnapshot.build(input);
      assert.equal(nextHop(snap, '10.1.2.7'), '192.0.2.22');
      assert.equal(nextHop(snap, '10.1.3.7'), '192.0.2.11');
      assert.equal(nextHop(snap, '10.1.1.255'), '192.0.2.11');
      assert.equal(nextHop(snap, '10.2.2.7'), null);
    }
  });

  it('prefixes that end inside a stride (/20, /12, /30) expand correctly', () => {
    const snap = RoutingSnapshot.build([
      route('10.240.0.0/12', '192.0.2.12'),
      route('10.244.16.0/20', '192.0.2.20'),
      route('10.244.16.4/30', '192.0.2.30'),
    ]);
    assert.equal(nextHop(snap, '10.239.255.255'), null);
    assert.equal(nextHop(snap, '10.240.0.0'), '192.0.2.12');
    assert.equal(nextHop(snap, '10.255.255.255'), '192.0.2.12');
    assert.equal(nextHop(snap, '10.244.15.255'), '192.0.2.12');
    assert.equal(nextHop(snap, '10.244.16.0'), '192.0.2.20');
    assert.equal(nextHop(snap, '10.244.31.255'), '192.0.2.20');
    assert.equal(nextHop(snap, '10.244.32.0'), '192.0.2.12');
    assert.equal(nextHop(snap, '10.244.16.3'), '192.0.2.20');
    assert.equal(nextHop(snap, '10.244.16.4'), '192.0.2.30');
    assert.equal(nextHop(snap, '10.244.16.7'), '192.0.2.30');
    assert.equal(nextHop(snap, '10.244.16.8'), '192.0.2.20');
  });

  it('a duplicate prefix: the last one wins and keeps the first position', () => {
    const snap = RoutingSnapshot.build([
      route('10.1.0.0/16', '192.0.2.1'),
      route('10.2.0.0/16', '192.0.2.3'),
      route('10.1.0.0/16', '192.0.2.2'),
    ]);
    assert.equal(snap.routeCount, 2);
    assert.equal(snap.routes.length, 2);
    assert.equal(snap.publicIpOf.length, 2);
    assert.equal(formatIPv4(snap.routes[0]!.publicIp), '192.0.2.2');
    assert.equal(formatIPv4(snap.publicIpOf[0]!), '192.0.2.2');
    assert.equal(snap.lookup(ip('10.1.9.9')), 0);
    assert.equal(nextHop(snap, '10.1.9.9'), '192.0.2.2');
    assert.equal(nextHop(snap, '10.2.9.9'), '192.0.2.3');
    assert.equal(snap.isPeerAddress(ip('192.0.2.1')), false, 'the replaced peer is no longer a peer');
    assert.equal(snap.isPeerAddress(ip('192.0.2.2')), true);
    // The same network at a different length is a different route.
    const both = RoutingSnapshot.build([route('10.1.0.0/16', '192.0.2.1'), route('10.1.0.0/24', '192.0.2.2')]);
    assert.equal(both.routeCount, 2);
  });

  it('rejects invalid routes', () => {
    const ok = { prefix: 0x0a000000, prefixLen: 8, publicIp: 0xc0000201 };
    const bad: Array<[string, unknown]> = [
      ['prefixLen 33', { ...ok, prefixLen: 33 }],
      ['prefixLen -1', { ...ok, prefixLen: -1 }],
      ['prefixLen 1.5', { ...ok, prefixLen: 1.5 }],
      ['prefixLen NaN', { ...ok, prefixLen: Number.NaN }],
      ['host bits set', { ...ok, prefix: ip('10.1.2.3'), prefixLen: 24 }],
      ['host bits under /0', { ...ok, prefix: 1, prefixLen: 0 }],
      ['negative prefix', { ...ok, prefix: -1, prefixLen: 32 }],
      ['prefix >= 2^32', { ...ok, prefix: 0x1_0000_0000, prefixLen: 32 }],
      ['prefix as string', { ...ok, prefix: '10.0.0.0' }],
      ['publicIp NaN', { ...ok, publicIp: Number.NaN }],
      ['publicIp negative', { ...ok, publicIp: -5 }],
      ['publicIp missing', { prefix: ok.prefix, prefixLen: ok.prefixLen }],
      ['null route', null],
    ];
    for (const [what, r] of bad) {
      assert.throws(() => RoutingSnapshot.build([ok, r as Route]), /invalid route #1/, what);
    }
    assert.throws(
      () => RoutingSnapshot.build([{ ...ok, prefix: ip('10.1.2.3'), prefixLen: 24 }]),
      /10\.1\.2\.3\/24 has host bits set/,
    );
  });

  it('is immutable and independent of its input', () => {
    const input = [route('10.1.0.0/16', '192.0.2.1')];
    const snap = RoutingSnapshot.build(input);
    (input[0] as { publicIp: number }).publicIp = 7;
    input.push(route('10.2.0.0/16', '192.0.2.2'));
    assert.equal(snap.routeCount, 1);
    assert.equal(formatIPv4(snap.routes[0]!.publicIp), '192.0.2.1');
    assert.equal(nextHop(snap, '10.2.0.1'), null);
    assert.ok(Object.isFrozen(snap.routes));
    assert.ok(Object.isFrozen(snap.routes[0]));
  });

  it('builds 10,000 random /24s under 10.0.0.0/8 quickly and compactly', () => {
    const rand = mulberry32(BASE_SEED ^ 0x10000);
    const input: Route[] = [];
    for (let i = 0; i < 10_000; i++) {
      input.push({ prefix: (0x0a000000 | (rand() & 0x00ffff00)) >>> 0, prefixLen: 24, publicIp: rand() });
    }
    RoutingSnapshot.build(input); // warm up the JIT
    const start = process.hrtime.bigint();
    const snap = RoutingSnapshot.build(input);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    // The target is well under 100 ms; the bound is loose so a busy 2-core CI machine does not flake.
    assert.ok(ms < 500, `build took ${ms.toFixed(1)} ms`);
    assert.ok(trieNodes(snap) <= 2 + 256, `nodeCount ${trieNodes(snap)}`);
    for (let i = 0; i < 2000; i++) checkAddress(snap, input, (0x0a000000 | (rand() & 0x00ffffff)) >>> 0);
  });
});
