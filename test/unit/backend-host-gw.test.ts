import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HostGwBackend } from '../../src/backend/host-gw.js';
import { parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';
import { FakeKernel } from '../helpers/fake-kernel.js';
import { backendContext, captureLog, peer } from '../helpers/backend-fixtures.js';

async function started(routeCheckMs = 10_000) {
  const kernel = new FakeKernel();
  const cap = captureLog();
  const backend = new HostGwBackend(backendContext(kernel, cap.log), routeCheckMs);
  const attrs = await backend.prepare();
  await backend.start(parseCidr('10.244.1.0/24'));
  return { kernel, cap, backend, attrs };
}

test('lease attributes and MTU as flanneld', async () => {
  const { backend, attrs, kernel } = await started();
  assert.deepEqual(attrs, { backendType: 'host-gw' });
  assert.equal(backend.mtu, 1500);
  assert.equal(kernel.links.size, 1, 'no device of its own');
  await backend.close();
});

test('a PublicIP that is not the interface address (NAT) is refused, as flanneld', async () => {
  const cap = captureLog();
  const ctx = { ...backendContext(new FakeKernel(), cap.log), publicIp: parseIPv4('203.0.113.9') };
  await assert.rejects(new HostGwBackend(ctx).prepare(), /probably you're on a NAT/);
});

test('a route per peer via its PublicIP; changed and deleted leases follow; other types ignored', async () => {
  const { kernel, backend, cap } = await started();
  const routes = backend.setPeers([
    peer(2, '192.0.2.2', 'host-gw'),
    peer(3, '192.0.2.3', 'host-gw'),
    peer(4, '192.0.2.4', 'vxlan', { VtepMAC: 'aa:bb:cc:dd:ee:ff' }),
  ]);
  assert.equal(routes.length, 2);
  await backend.settled();
  assert.deepEqual(kernel.routeTexts(), [
    '10.244.2.0/24 via 192.0.2.2 dev eth0',
    '10.244.3.0/24 via 192.0.2.3 dev eth0',
  ]);
  assert.equal(cap.find('warn', /^Ignoring non-host-gw subnet$/).length, 1);
  backend.setPeers([peer(2, '192.0.2.22', 'host-gw')]);
  await backend.settled();
  assert.deepEqual(kernel.routeTexts(), ['10.244.2.0/24 via 192.0.2.22 dev eth0']);
  backend.setPeers([]);
  await backend.settled();
  assert.deepEqual(kernel.routeTexts(), []);
  await backend.close();
});

test('a peer that is not on a directly connected network: one clear log line, the others programmed', async () => {
  const { kernel, backend, cap } = await started(50);
  const peers = [peer(2, '192.0.2.2', 'host-gw'), peer(3, '198.51.100.3', 'host-gw')];
  backend.setPeers(peers);
  await backend.settled();
  await new Promise((r) => setTimeout(r, 200)); // a few retries
  backend.setPeers(peers);
  await backend.settled();
  assert.deepEqual(kernel.routeTexts(), ['10.244.2.0/24 via 192.0.2.2 dev eth0']);
  const lines = cap.find('warn', /host-gw needs every host on a directly connected network/);
  assert.equal(lines.length, 1, JSON.stringify(cap.lines));
  assert.match(String(lines[0]!['error']), /Nexthop has invalid gateway/);
  assert.match(String(lines[0]!['peer']), /10\.244\.3\.0\/24 via 198\.51\.100\.3/);
  // Once the network is reachable, the retry programs it.
  kernel.connected.push(parseCidr('198.51.100.0/24'));
  await new Promise((r) => setTimeout(r, 150));
  await backend.settled();
  assert.equal(kernel.routeTexts().length, 2);
  await backend.close();
});

test('a route deleted by someone else is put back by the periodic check', async () => {
  const { kernel, backend, cap } = await started(100);
  backend.setPeers([peer(2, '192.0.2.2', 'host-gw'), peer(3, '192.0.2.3', 'host-gw')]);
  await backend.settled();
  kernel.routesNow = kernel.routesNow.filter((r) => r.via !== parseIPv4('192.0.2.3'));
  await new Promise((r) => setTimeout(r, 250));
  await backend.settled();
  assert.deepEqual(kernel.routeTexts(), [
    '10.244.2.0/24 via 192.0.2.2 dev eth0',
    '10.244.3.0/24 via 192.0.2.3 dev eth0',
  ]);
  assert.equal(cap.find('info', /^Route recovered$/).length, 1);
  await backend.close();
  // Closed: no more checks.
  kernel.routesNow = [];
  await new Promise((r) => setTimeout(r, 250));
  assert.deepEqual(kernel.routeTexts(), []);
});
