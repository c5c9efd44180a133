import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { C, newCounters } from '../../src/datapath/counters.js';
import { startHealthServer } from '../../src/observability/http.js';
import type { MetricsSource } from '../../src/observability/metrics.js';
import { parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';

function source(): MetricsSource {
  const counters = newCounters();
  counters[C.udpSentPackets] = 42;
  return {
    counters,
    routes: () => [{ ...parseCidr('10.244.2.0/24'), publicIp: parseIPv4('192.0.2.2') }],
    lease: () => null,
  };
}

async function get(port: number, path: string, method = 'GET') {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text() };
}

test('healthz, readyz before and after ready, metrics, 404, 405', async () => {
  let ready = false;
  const src = source();
  const server = await startHealthServer({ host: '127.0.0.1', port: 0, source: src, isReady: () => ready });
  try {
    assert.ok(server.port > 0);

    const health = await get(server.port, '/healthz');
    assert.equal(health.status, 200);
    assert.equal(health.body, 'flanneld is running');

    const notReady = await get(server.port, '/readyz');
    assert.equal(notReady.status, 503);
    assert.equal(notReady.body, 'flanneld is not ready yet');

    ready = true;
    const isReady = await get(server.port, '/readyz');
    assert.equal(isReady.status, 200);
    assert.equal(isReady.body, 'flanneld is ready');

    const metrics = await get(server.port, '/metrics');
    assert.equal(metrics.status, 200);
    assert.equal(metrics.type, 'text/plain; version=0.0.4; charset=utf-8');
    assert.match(metrics.body, /^flannel_ts_udp_sent_packets_total 42$/m);
    assert.match(metrics.body, /^flannel_ts_route_info\{subnet="10.244.2.0\/24",public_ip="192.0.2.2"\} 1$/m);

    // Each scrape reads the live counters.
    src.counters[C.udpSentPackets] = 43;
    assert.match((await get(server.port, '/metrics?x=1')).body, /^flannel_ts_udp_sent_packets_total 43$/m);

    const head = await get(server.port, '/healthz', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');

    const missing = await get(server.port, '/nope');
    assert.equal(missing.status, 404);
    assert.equal(missing.body, '404 page not found\n');

    const post = await get(server.port, '/healthz', 'POST');
    assert.equal(post.status, 405);
  } finally {
    await server.close();
  }
  // Closed: the port no longer answers.
  await assert.rejects(fetch(`http://127.0.0.1:${server.port}/healthz`));
});

test('a metrics rendering failure is a 500 reported to onError, and the server keeps serving', async () => {
  const errors: Error[] = [];
  const broken: MetricsSource = {
    ...source(),
    routes: () => {
      throw new Error('snapshot gone');
    },
  };
  const server = await startHealthServer({
    host: '127.0.0.1',
    port: 0,
    source: broken,
    isReady: () => true,
    onError: (e) => errors.push(e),
  });
  try {
    assert.equal((await get(server.port, '/metrics')).status, 500);
    assert.equal(errors[0]?.message, 'snapshot gone');
    assert.equal((await get(server.port, '/healthz')).status, 200);
  } finally {
    await server.close();
  }
});

test('a port already in use gives a clear message naming the flag', async () => {
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const port = (blocker.address() as { port: number }).port;
  try {
    await assert.rejects(
      startHealthServer({ host: '127.0.0.1', port, source: source(), isReady: () => true }),
      (err: Error) => {
        assert.equal(
          err.message,
          `cannot serve /healthz on 127.0.0.1:${port}: the port is already in use (choose another --healthz-port)`,
        );
        return true;
      },
    );
  } finally {
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
  }
});

test('an address no interface has gives a clear message naming --healthz-ip', async () => {
  // 192.0.2.0/24 is TEST-NET-1: never assigned to a local interface here.
  await assert.rejects(
    startHealthServer({ host: '192.0.2.77', port: 0, source: source(), isReady: () => true }),
    /no local interface has that address \(check --healthz-ip\)/,
  );
});
