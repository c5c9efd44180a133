import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VxlanBackend, vtepMacOf } from '../../src/backend/vxlan.js';
import { parseMac } from '../../src/backend/mac.js';
import { parseNetworkConfig, type VxlanBackendConfig } from '../../src/subnet/config.js';
import { parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';
import { FakeKernel } from '../helpers/fake-kernel.js';
import { backendContext, captureLog, peer, vxlanPeer } from '../helpers/backend-fixtures.js';

const MAC_A = 'aa:aa:aa:00:00:02';
const MAC_B = 'aa:aa:aa:00:00:03';

function vxlanConfig(extra = ''): VxlanBackendConfig {
  return parseNetworkConfig(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"${extra}}}`)
    .backend as VxlanBackendConfig;
}

async function started(extra = '', own: Parameters<VxlanBackend['prepare']>[0] = null) {
  const kernel = new FakeKernel();
  const cap = captureLog();
  const backend = new VxlanBackend(vxlanConfig(extra), backendContext(kernel, cap.log));
  const attrs = await backend.prepare(own);
  await backend.start(parseCidr('10.244.1.0/24'));
  return { kernel, cap, backend, attrs };
}

test('device flannel.<VNI> as flanneld makes it, lease attributes in flanneld format', async () => {
  const { kernel, backend, attrs } = await started();
  const dev = kernel.links.get('flannel.1')!;
  assert.equal(dev.info.kind, 'vxlan');
  assert.deepEqual(dev.info.vxlan, {
    vni: 1,
    local: parseIPv4('192.0.2.1'),
    dev: 'eth0',
    port: 8472,
    learning: false,
    gbp: false,
  });
  assert.equal(dev.info.mtu, 1450);
  assert.equal(backend.mtu, 1450);
  assert.equal(dev.info.up, true);
  assert.deepEqual(dev.addresses, [{ prefix: parseIPv4('10.244.1.0'), prefixLen: 32 }]);
  const mac = dev.info.mac!;
  assert.match(mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  assert.equal(parseInt(mac.slice(0, 2), 16) & 0x03, 0x02, 'unicast, locally administered');
  assert.deepEqual(attrs, { backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac } });
});

test('VNI, Port, MTU, GBP and Learning from the config', async () => {
  const { kernel, backend } = await started(',"VNI":7,"Port":4789,"MTU":9000,"GBP":true,"Learning":true');
  const dev = kernel.links.get('flannel.7')!;
  assert.equal(dev.info.mtu, 8950, 'Backend.MTU - 50, as flanneld');
  assert.equal(backend.mtu, 8950);
  assert.deepEqual(dev.info.vxlan, {
    vni: 7,
    local: parseIPv4('192.0.2.1'),
    dev: 'eth0',
    port: 4789,
    learning: true,
    gbp: true,
  });
});

test('the MAC is taken back from the own lease; an existing compatible device is kept as it is', async () => {
  const own = { publicIp: parseIPv4('192.0.2.1'), backendType: 'vxlan', backendData: { VtepMAC: 'AA-BB-CC-00-11-22' } };
  const { kernel, backend, attrs } = await started('', own);
  assert.equal(kernel.links.get('flannel.1')!.info.mac, 'aa:bb:cc:00:11:22');
  assert.equal(backend.mac, 'aa:bb:cc:00:11:22');
  assert.deepEqual(attrs.backendData, { VNI: 1, VtepMAC: 'aa:bb:cc:00:11:22' });
  // A second agent run on the same kernel (a restart) keeps the device, whatever the lease says.
  const cap = captureLog();
  const again = new VxlanBackend(vxlanConfig(), backendContext(kernel, cap.log));
  const attrs2 = await again.prepare(null);
  assert.deepEqual(attrs2.backendData, { VNI: 1, VtepMAC: 'aa:bb:cc:00:11:22' });
  assert.equal(kernel.log.filter((l) => l.startsWith('link add')).length, 1, 'not recreated');
  await backend.close();
  await again.close();
});

test('an incompatible device of that name is recreated', async () => {
  const kernel = new FakeKernel();
  const cap = captureLog();
  const ctx = backendContext(kernel, cap.log);
  await kernel.addVxlan({
    name: 'flannel.1',
    vni: 1,
    local: parseIPv4('192.0.2.1'),
    dev: 'eth0',
    port: 4789,
    learning: false,
    gbp: false,
    mtu: 1450,
    mac: MAC_A,
  });
  const backend = new VxlanBackend(vxlanConfig(), ctx);
  await backend.prepare(null);
  assert.equal(kernel.links.get('flannel.1')!.info.vxlan!.port, 8472);
  assert.equal(cap.find('warn', /incompatible configuration: port: 8472 vs 4789/).length, 1);
});

test('per peer, in flanneld order: neighbour, fdb, route; removed when the lease goes', async () => {
  const { kernel, backend } = await started();
  kernel.log.length = 0;
  const routes = backend.setPeers([vxlanPeer(2, '192.0.2.2', MAC_A), vxlanPeer(3, '192.0.2.3', MAC_B)]);
  assert.equal(routes.length, 2);
  await backend.settled();
  assert.deepEqual(kernel.log, [
    `neigh replace 10.244.2.0 lladdr ${MAC_A} dev flannel.1`,
    `neigh replace 10.244.3.0 lladdr ${MAC_B} dev flannel.1`,
    `fdb replace ${MAC_A} dev flannel.1 dst 192.0.2.2`,
    `fdb replace ${MAC_B} dev flannel.1 dst 192.0.2.3`,
    'route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink',
    'route replace 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink',
  ]);
  assert.equal(kernel.batches, 3, 'one batch per step, not per peer');
  kernel.log.length = 0;
  backend.setPeers([vxlanPeer(3, '192.0.2.3', MAC_B)]);
  await backend.settled();
  assert.deepEqual(kernel.log, [
    'neigh del 10.244.2.0 dev flannel.1',
    `fdb del ${MAC_A} dev flannel.1 dst 192.0.2.2`,
    'route del 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink',
  ]);
  assert.deepEqual([...kernel.neighbours.keys()], ['flannel.1 10.244.3.0']);
  assert.deepEqual([...kernel.fdb], [`flannel.1 ${MAC_B} 192.0.2.3`]);
  assert.deepEqual(kernel.routeTexts(), ['10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink']);
  await backend.close();
  assert.equal(kernel.watcherCount, 0);
});

test('a change of PublicIP or VtepMAC replaces all three entries; a rewrite with no change touches nothing', async () => {
  const { kernel, backend } = await started();
  backend.setPeers([vxlanPeer(2, '192.0.2.2', MAC_A)]);
  await backend.settled();
  backend.setPeers([vxlanPeer(2, '192.0.2.9', MAC_A)]);
  await backend.settled();
  assert.deepEqual([...kernel.fdb], [`flannel.1 ${MAC_A} 192.0.2.9`], 'the old fdb entry is gone (flanneld keeps it)');
  backend.setPeers([vxlanPeer(2, '192.0.2.9', MAC_B)]);
  await backend.settled();
  assert.deepEqual([...kernel.fdb], [`flannel.1 ${MAC_B} 192.0.2.9`]);
  assert.equal(kernel.neighbours.get('flannel.1 10.244.2.0'), MAC_B);
  assert.deepEqual(kernel.routeTexts(), ['10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink']);
  kernel.log.length = 0;
  backend.setPeers([vxlanPeer(2, '192.0.2.9', MAC_B.toUpperCase())]);
  await backend.settled();
  assert.deepEqual(kernel.log, []);
  await backend.close();
});

test('a re-listing after a watch gap: what vanished meanwhile is removed, the rest untouched', async () => {
  const { kernel, backend } = await started();
  backend.setPeers([2, 3, 4].map((n) => vxlanPeer(n, `192.0.2.${n}`, `aa:aa:aa:00:00:0${n}`)));
  await backend.settled();
  kernel.log.length = 0;
  // The listing after the gap: 3 went, 5 came, 4 changed its MAC.
  backend.setPeers([
    vxlanPeer(2, '192.0.2.2', 'aa:aa:aa:00:00:02'),
    vxlanPeer(4, '192.0.2.4', 'aa:aa:aa:00:00:44'),
    vxlanPeer(5, '192.0.2.5', 'aa:aa:aa:00:00:05'),
  ]);
  await backend.settled();
  assert.ok(!kernel.log.some((l) => l.includes('10.244.2.0')), 'peer 2 untouched');
  assert.deepEqual(kernel.routeTexts(), [
    '10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink',
    '10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink',
    '10.244.5.0/24 via 10.244.5.0 dev flannel.1 onlink',
  ]);
  assert.equal(kernel.neighbours.get('flannel.1 10.244.4.0'), 'aa:aa:aa:00:00:44');
  assert.equal(kernel.fdb.size, 3);
  await backend.close();
});

test('leases of another type and bad BackendData are warnings, once each; the others are programmed', async () => {
  const { kernel, backend, cap } = await started();
  const peers = [
    peer(2, '192.0.2.2', 'host-gw'),
    peer(3, '192.0.2.3', null),
    peer(4, '192.0.2.4', 'vxlan', { VtepMAC: 'not-a-mac' }),
    peer(5, '192.0.2.5', 'vxlan', 'aa:bb'),
    peer(6, '192.0.2.6', 'vxlan', null),
    vxlanPeer(7, '192.0.2.7', MAC_A),
  ];
  const routes = backend.setPeers(peers);
  backend.setPeers(peers);
  await backend.settled();
  assert.equal(routes.length, 1);
  assert.deepEqual(kernel.routeTexts(), ['10.244.7.0/24 via 10.244.7.0 dev flannel.1 onlink']);
  assert.equal(cap.find('warn', /^ignoring non-vxlan subnet$/).length, 2);
  assert.equal(cap.find('warn', /^error decoding subnet lease JSON/).length, 3);
  await backend.close();
});

test('DirectRouting: a peer on a directly connected network gets a plain route via its PublicIP', async () => {
  const { kernel, backend } = await started(',"DirectRouting":true');
  backend.setPeers([vxlanPeer(2, '192.0.2.2', MAC_A), vxlanPeer(3, '198.51.100.3', MAC_B)]);
  await backend.settled();
  assert.deepEqual(kernel.routeTexts(), [
    '10.244.2.0/24 via 192.0.2.2',
    '10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink',
  ]);
  assert.deepEqual([...kernel.fdb], [`flannel.1 ${MAC_B} 198.51.100.3`]);
  await backend.close();
});

test('the device deleted under the agent is rebuilt with the same MAC, address and entries', async () => {
  const { kernel, backend, cap } = await started();
  backend.setPeers([vxlanPeer(2, '192.0.2.2', MAC_A)]);
  await backend.settled();
  const mac = backend.mac;
  await kernel.deleteLink('flannel.1');
  assert.equal(kernel.routeTexts().length, 0);
  await new Promise((r) => setImmediate(r));
  await backend.settled();
  const dev = kernel.links.get('flannel.1')!;
  assert.equal(dev.info.mac, mac);
  assert.equal(dev.info.up, true);
  assert.deepEqual(dev.addresses, [{ prefix: parseIPv4('10.244.1.0'), prefixLen: 32 }]);
  assert.deepEqual(kernel.routeTexts(), ['10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink']);
  assert.equal(kernel.neighbours.get('flannel.1 10.244.2.0'), MAC_A);
  assert.equal(cap.find('info', /VXLAN device recreated/).length, 1);
  await backend.close();
});

test('a failed step is cleaned up, logged once, and retried', async () => {
  const { kernel, backend, cap } = await started();
  kernel.failing.add(`fdb replace ${MAC_A} dev flannel.1 dst 192.0.2.2`);
  backend.setPeers([vxlanPeer(2, '192.0.2.2', MAC_A), vxlanPeer(3, '192.0.2.3', MAC_B)]);
  await backend.settled();
  assert.deepEqual(kernel.routeTexts(), ['10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink']);
  assert.equal(kernel.neighbours.has('flannel.1 10.244.2.0'), false, 'its neighbour entry was removed again');
  assert.equal(cap.find('warn', /could not program a peer/).length, 1);
  kernel.failing.clear();
  await new Promise((r) => setTimeout(r, 1100));
  await backend.settled();
  assert.equal(kernel.routeTexts().length, 2);
  await backend.close();
});

test('a subnet change moves the device address', async () => {
  const { kernel, backend } = await started();
  await backend.changeSubnet(parseCidr('10.244.9.0/24'));
  assert.deepEqual(kernel.links.get('flannel.1')!.addresses, [{ prefix: parseIPv4('10.244.9.0'), prefixLen: 32 }]);
  await backend.close();
});

test('VtepMAC forms that Go accepts', () => {
  assert.equal(parseMac('AA:BB:CC:DD:EE:FF'), 'aa:bb:cc:dd:ee:ff');
  assert.equal(parseMac('aa-bb-cc-dd-ee-ff'), 'aa:bb:cc:dd:ee:ff');
  assert.equal(parseMac('aabb.ccdd.eeff'), 'aa:bb:cc:dd:ee:ff');
  assert.equal(parseMac('aa:bb-cc:dd:ee:ff'), null);
  assert.equal(parseMac('aa:bb:cc:dd:ee'), null);
  assert.equal(vtepMacOf({ vtepmac: 'aa:bb:cc:dd:ee:ff' }), 'aa:bb:cc:dd:ee:ff');
  assert.equal(vtepMacOf([]), null);
});
