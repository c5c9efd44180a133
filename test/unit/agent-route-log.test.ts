import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ROUTE_LIST_LOG_LIMIT, RouteChangeLog, routeListFields } from '../../src/agent/registry-agent.js';
import { createLogger, type Level } from '../../src/observability/log.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';
import type { Route } from '../../src/routing-table/snapshot.js';

const route = (i: number): Route => ({
  prefix: parseIPv4(`10.${i >> 8}.${i & 255}.0`),
  prefixLen: 24,
  publicIp: parseIPv4(`192.0.2.${(i % 250) + 1}`),
});
const routes = (from: number, to: number): Route[] => Array.from({ length: to - from }, (_, k) => route(from + k));

function capture(level: Level) {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger(level, (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
  return { lines, log };
}

test('a short route list is logged in full, with the change since the last line', () => {
  const { lines, log } = capture('info');
  const routeLog = new RouteChangeLog(log, false);
  routeLog.changed([route(1), route(2)]);
  routeLog.changed([route(2), route(3)]);
  assert.deepEqual(
    lines.map(({ time: _t, ...rest }) => rest),
    [
      {
        level: 'info',
        msg: 'routes',
        routeCount: 2,
        added: ['10.0.1.0/24=192.0.2.2', '10.0.2.0/24=192.0.2.3'],
        removed: [],
        routes: ['10.0.1.0/24=192.0.2.2', '10.0.2.0/24=192.0.2.3'],
      },
      {
        level: 'info',
        msg: 'routes',
        routeCount: 2,
        added: ['10.0.3.0/24=192.0.2.4'],
        removed: ['10.0.1.0/24=192.0.2.2'],
        routes: ['10.0.2.0/24=192.0.2.3', '10.0.3.0/24=192.0.2.4'],
      },
    ],
  );
});

test('a long route list: info lines carry the count and the change; the full list only at debug', () => {
  const n = ROUTE_LIST_LOG_LIMIT + 936;
  for (const debug of [false, true]) {
    const { lines, log } = capture(debug ? 'debug' : 'info');
    const routeLog = new RouteChangeLog(log, debug);
    routeLog.changed(routes(0, n));
    routeLog.changed(routes(0, n + 1));
    const info = lines.filter((l) => l['level'] === 'info');
    assert.equal(info.length, 2);
    assert.ok(info.every((l) => !('routes' in l)));
    assert.equal((info[0]!['added'] as string[]).length, n);
    assert.deepEqual(info[1]!['added'], ['10.3.232.0/24=192.0.2.1']);
    assert.deepEqual(info[1]!['removed'], []);
    assert.equal(info[1]!['routeCount'], n + 1);
    const full = lines.filter((l) => l['level'] === 'debug');
    assert.deepEqual(
      full.map((l) => (l['routes'] as string[]).length),
      debug ? [n, n + 1] : [],
    );
  }
});

test('the forwarding line: routeCount always, routes only up to the limit', () => {
  assert.deepEqual(routeListFields([route(5)]), { routeCount: 1, routes: ['10.0.5.0/24=192.0.2.6'] });
  assert.deepEqual(routeListFields(routes(0, ROUTE_LIST_LOG_LIMIT + 1)), { routeCount: ROUTE_LIST_LOG_LIMIT + 1 });
});
