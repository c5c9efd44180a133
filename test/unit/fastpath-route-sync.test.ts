// The order in which the fast path's maps follow a route list (src/fastpath/route-sync.ts): the
// routes map never sends to a PublicIP the peers map lacks, and a withdrawn route goes first.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { applyPlan, NOTHING_INSTALLED, planRouteSync, type InstalledRoutes } from '../../src/fastpath/route-sync.js';
import { parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';
import { RoutingSnapshot, type Route } from '../../src/routing-table/snapshot.js';
import { mulberry32, runSeeded, seedsFor } from '../helpers/prng.js';

const route = (cidr: string, ip: string): Route => ({ ...parseCidr(cidr), publicIp: parseIPv4(ip) });
const ip = (s: string): number => parseIPv4(s);

/** Applies ops one at a time and checks the contract after each. */
function checkEveryStep(from: InstalledRoutes, next: readonly Route[]): InstalledRoutes {
  const ops = planRouteSync(from, next);
  const withdrawn = [...from.routes.keys()].filter((k) => !next.some((r) => r.prefix * 64 + r.prefixLen === k));
  let state = from;
  for (const [i, op] of ops.entries()) {
    state = applyPlan(state, [op]);
    for (const [key, publicIp] of state.routes) {
      assert.ok(state.peers.has(publicIp), `after op ${i} (${op.op}) route ${key} sends to a non-peer`);
    }
    if (op.op !== 'routeDelete') {
      for (const key of withdrawn) assert.ok(!state.routes.has(key), `withdrawn route ${key} outlived op ${i}`);
    }
  }
  const want = new Map(next.map((r) => [r.prefix * 64 + r.prefixLen, r.publicIp]));
  assert.deepEqual(state.routes, want);
  assert.deepEqual(state.peers, new Set(next.map((r) => r.publicIp)));
  return state;
}

describe('planRouteSync', () => {
  test('from nothing: the peers first, then their routes', () => {
    const next = [route('10.244.2.0/24', '192.0.2.2'), route('10.244.3.0/24', '192.0.2.3')];
    assert.deepEqual(
      planRouteSync(NOTHING_INSTALLED, next).map((o) => o.op),
      ['peerSet', 'peerSet', 'routeSet', 'routeSet'],
    );
    checkEveryStep(NOTHING_INSTALLED, next);
  });

  test('a lease gone: its route is deleted first, its peer last', () => {
    const start = applyPlan(
      NOTHING_INSTALLED,
      planRouteSync(NOTHING_INSTALLED, [route('10.244.2.0/24', '192.0.2.2'), route('10.244.3.0/24', '192.0.2.3')]),
    );
    const ops = planRouteSync(start, [route('10.244.2.0/24', '192.0.2.2')]);
    assert.deepEqual(ops, [
      { op: 'routeDelete', prefix: ip('10.244.3.0'), prefixLen: 24 },
      { op: 'peerDelete', publicIp: ip('192.0.2.3') },
    ]);
  });

  test('a subnet leased again by another host: the new peer, then the route re-pointed in place, then the old peer goes', () => {
    const start = applyPlan(NOTHING_INSTALLED, planRouteSync(NOTHING_INSTALLED, [route('10.244.3.0/24', '192.0.2.3')]));
    assert.deepEqual(planRouteSync(start, [route('10.244.3.0/24', '192.0.2.9')]), [
      { op: 'peerSet', publicIp: ip('192.0.2.9') },
      { op: 'routeSet', prefix: ip('10.244.3.0'), prefixLen: 24, publicIp: ip('192.0.2.9') },
      { op: 'peerDelete', publicIp: ip('192.0.2.3') },
    ]);
  });

  test('an unchanged list: nothing to do', () => {
    const list = [route('10.244.2.0/24', '192.0.2.2'), route('10.244.0.0/16', '192.0.2.2')];
    const start = applyPlan(NOTHING_INSTALLED, planRouteSync(NOTHING_INSTALLED, list));
    assert.deepEqual(planRouteSync(start, list), []);
  });

  for (const seed of seedsFor('FASTPATH_SYNC_SEED', 30, 500)) {
    test(`random route lists in a row keep the contract at every step (seed ${seed})`, () => {
      runSeeded('route-sync', 'FASTPATH_SYNC_SEED', seed, () => {
        const rand = mulberry32(seed);
        let state: InstalledRoutes = NOTHING_INSTALLED;
        for (let round = 0; round < 20; round++) {
          const list: Route[] = [];
          for (let i = rand() % 12; i > 0; i--) {
            const len = 16 + (rand() % 13);
            const prefix = ((0x0af40000 | (rand() & 0xffff)) >>> (32 - len)) << (32 - len);
            list.push({ prefix: prefix >>> 0, prefixLen: len, publicIp: 0xc0000200 + (rand() % 6) });
          }
          state = checkEveryStep(state, RoutingSnapshot.build(list).routes);
        }
      });
    });
  }
});
