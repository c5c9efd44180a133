import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NetworkConfigError, parseNetworkConfig, subnetFitsConfig } from '../../src/subnet/config.js';
import { formatIPv4, parseIPv4 } from '../../src/routing-table/ipv4.js';

function summary(text: string): string {
  const c = parseNetworkConfig(text);
  const port = c.backend.type === 'udp' ? c.backend.port : '-';
  return (
    `${formatIPv4(c.network.prefix)}/${c.network.prefixLen} len=${c.subnetLen} ` +
    `min=${formatIPv4(c.subnetMin)} max=${formatIPv4(c.subnetMax)} ${c.backend.type}:${port}`
  );
}

test('defaults as flannel computes them', () => {
  const cases: Array<[string, string]> = [
    ['{"Network":"10.244.0.0/16"}', '10.244.0.0/16 len=24 min=10.244.1.0 max=10.244.255.0 udp:8285'],
    ['{"Network":"10.1.5.0/16"}', '10.1.0.0/16 len=24 min=10.1.1.0 max=10.1.255.0 udp:8285'],
    ['{"Network":"10.0.0.0/8"}', '10.0.0.0/8 len=24 min=10.0.1.0 max=10.255.255.0 udp:8285'],
    ['{"Network":"10.0.0.0/22"}', '10.0.0.0/22 len=24 min=10.0.1.0 max=10.0.3.0 udp:8285'],
    ['{"Network":"10.0.0.0/23"}', '10.0.0.0/23 len=25 min=10.0.0.128 max=10.0.1.128 udp:8285'],
    ['{"Network":"10.0.0.0/28"}', '10.0.0.0/28 len=30 min=10.0.0.4 max=10.0.0.12 udp:8285'],
    ['{"Network":"255.255.0.0/16"}', '255.255.0.0/16 len=24 min=255.255.1.0 max=255.255.255.0 udp:8285'],
    ['{"Network":"10.244.0.0/16","SubnetLen":26}', '10.244.0.0/16 len=26 min=10.244.0.64 max=10.244.255.192 udp:8285'],
    [
      '{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0"}',
      '10.244.0.0/16 len=24 min=10.244.10.0 max=10.244.20.0 udp:8285',
    ],
    [
      '{"Network":"10.244.0.0/16","SubnetMin":"0.0.0.0"}',
      '10.244.0.0/16 len=24 min=10.244.1.0 max=10.244.255.0 udp:8285',
    ],
    ['{"Network":"10.244.0.0/16","SubnetLen":0}', '10.244.0.0/16 len=24 min=10.244.1.0 max=10.244.255.0 udp:8285'],
    ['{"Network":"10.244.0.0/16","SubnetLen":null}', '10.244.0.0/16 len=24 min=10.244.1.0 max=10.244.255.0 udp:8285'],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}',
      '10.244.0.0/16 len=24 min=10.244.1.0 max=10.244.255.0 udp:8285',
    ],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"UDP","Port":8999}}',
      '10.244.0.0/16 len=24 min=10.244.1.0 max=10.244.255.0 udp:8999',
    ],
    [
      '{"Network":"10.244.0.0/16","Backend":{"type":"Udp","port":7000}}',
      '10.244.0.0/16 len=24 min=10.244.1.0 max=10.244.255.0 udp:7000',
    ],
    // Case-insensitive keys, unknown keys ignored, last duplicate wins.
    [
      '{"network":"10.244.0.0/16","SUBNETLEN":25,"Whatever":[1,2],"EnableIPv6":false}',
      '10.244.0.0/16 len=25 min=10.244.0.128 max=10.244.255.128 udp:8285',
    ],
    ['{"Network":"10.1.0.0/16","network":"10.2.0.0/16"}', '10.2.0.0/16 len=24 min=10.2.1.0 max=10.2.255.0 udp:8285'],
  ];
  for (const [input, want] of cases) assert.equal(summary(input), want, input);
});

test('enableIPv6 is reported but not validated', () => {
  const c = parseNetworkConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}');
  assert.equal(c.enableIPv6, true);
  assert.equal(parseNetworkConfig('{"Network":"10.244.0.0/16"}').enableIPv6, false);
});

test('every invalid config gives a clear error naming the field', () => {
  const cases: Array<[string, RegExp, string | null]> = [
    ['{}', /^please define a correct Network parameter in the flannel config$/, 'Network'],
    ['null', /^please define a correct Network parameter in the flannel config$/, 'Network'],
    ['{"Network":"0.0.0.0/0"}', /^please define a correct Network parameter/, 'Network'],
    ['{"Network":"10.0.0.0/0"}', /^please define a correct Network parameter/, 'Network'],
    ['{"Network":"10.244.0.0"}', /^Network: invalid CIDR address: 10\.244\.0\.0$/, 'Network'],
    ['{"Network":"10.244.0.0/33"}', /^Network: invalid CIDR address: 10\.244\.0\.0\/33$/, 'Network'],
    ['{"Network":null}', /^Network: invalid CIDR address: null$/, 'Network'],
    ['{"Network":16}', /^Network: invalid CIDR address: 16$/, 'Network'],
    ['{"Network":"fc00::/48"}', /^Network: invalid IPv4 CIDR format: fc00::\/48$/, 'Network'],
    ['{"Network":"10.0.0.0/29"}', /^network is too small\. Minimum useful network prefix is \/28$/, 'Network'],
    ['{"Network":"10.244.0.0/16","SubnetLen":31}', /^SubnetLen must be less than \/31$/, 'SubnetLen'],
    [
      '{"Network":"10.244.0.0/16","SubnetLen":17}',
      /^network must be able to accommodate at least four subnets$/,
      'SubnetLen',
    ],
    ['{"Network":"10.244.0.0/16","SubnetLen":-1}', /^SubnetLen must be a non-negative integer, got -1$/, 'SubnetLen'],
    ['{"Network":"10.244.0.0/16","SubnetLen":"24"}', /^SubnetLen must be a non-negative integer/, 'SubnetLen'],
    ['{"Network":"10.244.0.0/16","SubnetLen":24.5}', /^SubnetLen must be a non-negative integer/, 'SubnetLen'],
    [
      '{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0"}',
      /^SubnetMin is not in the range of the Network$/,
      'SubnetMin',
    ],
    [
      '{"Network":"10.244.0.0/16","SubnetMax":"10.245.0.0"}',
      /^SubnetMax is not in the range of the Network$/,
      'SubnetMax',
    ],
    [
      '{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.7"}',
      /^SubnetMin is not on a SubnetLen boundary: 10\.244\.1\.7$/,
      'SubnetMin',
    ],
    [
      '{"Network":"10.244.0.0/16","SubnetMax":"10.244.9.128"}',
      /^SubnetMax is not on a SubnetLen boundary: 10\.244\.9\.128$/,
      'SubnetMax',
    ],
    ['{"Network":"10.244.0.0/16","SubnetMin":"banana"}', /^SubnetMin: Invalid IP address format/, 'SubnetMin'],
    ['{"Network":"10.244.0.0/16","SubnetMin":null}', /^SubnetMin: Invalid IP address format/, 'SubnetMin'],
    ['{"Network":"10.244.0.0/16","SubnetMax":"fc00::1"}', /^SubnetMax: fc00::1 is not an IPv4 address$/, 'SubnetMax'],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"ipip"}}',
      /^backend type ipip is not supported by flannel-ts \(udp, vxlan, host-gw\)$/,
      'Backend.Type',
    ],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"WireGuard"}}',
      /^backend type wireguard is not supported by flannel-ts \(udp, vxlan, host-gw\)$/,
      'Backend.Type',
    ],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}',
      /Backend\.VNI must be an integer/,
      'Backend.VNI',
    ],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}',
      /Backend\.VNI must be an integer 0\.\.16777215/,
      'Backend.VNI',
    ],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":-1}}',
      /Backend\.Port must be an integer 0\.\.65535/,
      'Backend.Port',
    ],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":50}}',
      /Backend\.MTU must be an integer 118\.\.65535/,
      'Backend.MTU',
    ],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":"yes"}}',
      /Backend\.DirectRouting must be true or false/,
      'Backend.DirectRouting',
    ],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","GBP":1}}',
      /Backend\.GBP must be true or false/,
      'Backend.GBP',
    ],
    ['{"Network":"10.244.0.0/16","Backend":{}}', /^unknown backend type: /, 'Backend.Type'],
    ['{"Network":"10.244.0.0/16","Backend":null}', /^unknown backend type: /, 'Backend.Type'],
    [
      '{"Network":"10.244.0.0/16","Backend":"udp"}',
      /^error decoding Backend property of config: Backend must be a JSON object/,
      'Backend',
    ],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":5}}', /Backend\.Type must be a string/, 'Backend.Type'],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":0}}',
      /Backend\.Port must be an integer 1\.\.65535, got 0/,
      'Backend.Port',
    ],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":70000}}',
      /Backend\.Port must be an integer 1\.\.65535/,
      'Backend.Port',
    ],
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":"8285"}}',
      /Backend\.Port must be an integer/,
      'Backend.Port',
    ],
    [
      '{"Network":"10.244.0.0/16","EnableIPv4":false}',
      /^EnableIPv4=false is not supported by flannel-ts/,
      'EnableIPv4',
    ],
    ['{"Network":"10.244.0.0/16","EnableIPv4":"yes"}', /^EnableIPv4 must be true or false/, 'EnableIPv4'],
    ['{"Network":', /^invalid network config JSON: /, null],
    ['[1,2]', /^invalid network config: expected a JSON object$/, null],
  ];
  for (const [input, message, field] of cases) {
    assert.throws(
      () => parseNetworkConfig(input),
      (err: unknown) => {
        assert.ok(err instanceof NetworkConfigError, input);
        assert.match(err.message, message, input);
        assert.equal(err.field, field, input);
        return true;
      },
      input,
    );
  }
});

test('subnetFitsConfig is flannel isSubnetConfigCompat', () => {
  const c = parseNetworkConfig('{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0"}');
  assert.equal(subnetFitsConfig(c, { prefix: parseIPv4('10.244.10.0'), prefixLen: 24 }), true);
  assert.equal(subnetFitsConfig(c, { prefix: parseIPv4('10.244.20.0'), prefixLen: 24 }), true);
  assert.equal(subnetFitsConfig(c, { prefix: parseIPv4('10.244.9.0'), prefixLen: 24 }), false);
  assert.equal(subnetFitsConfig(c, { prefix: parseIPv4('10.244.21.0'), prefixLen: 24 }), false);
  assert.equal(subnetFitsConfig(c, { prefix: parseIPv4('10.244.12.0'), prefixLen: 25 }), false);
});

test("fetchNetworkConfig reads <prefix>/config, with flannel's message when it is missing", async () => {
  const { MemoryKvStore } = await import('../helpers/memory-kv.js');
  const { fetchNetworkConfig, NetworkConfigMissingError } = await import('../../src/subnet/network-config-source.js');
  const store = new MemoryKvStore();
  await assert.rejects(
    fetchNetworkConfig(store),
    (e: unknown) =>
      e instanceof NetworkConfigMissingError && /Did you create your config using etcdv3 API\?/.test(e.message),
  );
  await store.put('/my/prefix/config', '{"Network":"10.9.0.0/16","Backend":{"Type":"udp","Port":9000}}', 0);
  const c = await fetchNetworkConfig(store, '/my/prefix');
  assert.deepEqual(c.backend, { type: 'udp', port: 9000 });
  assert.equal(formatIPv4(c.subnetMin), '10.9.1.0');
  await store.put('/coreos.com/network/config', '{"Network":"10.9.0.0/16","Backend":{"Type":"ipip"}}', 0);
  await assert.rejects(fetchNetworkConfig(store), NetworkConfigError);
});

test('the missing-config message names the etcd API in use: v3, v2, or neither yet (auto)', async () => {
  const { MemoryKvStore } = await import('../helpers/memory-kv.js');
  const { fetchNetworkConfig } = await import('../../src/subnet/network-config-source.js');
  const { EtcdApiChooser } = await import('../../src/agent/etcd-api.js');
  const { EtcdV2KvStore } = await import('../../src/etcdv2/kv-store.js');
  const { EtcdKvStore } = await import('../../src/etcd/kv-store.js');
  const quiet = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
  const messageOf = async (store: import('../../src/subnet/kv.js').KvStore): Promise<string> => {
    const err = await fetchNetworkConfig(store).then(
      () => assert.fail('the config should be missing'),
      (e: Error) => e,
    );
    return err.message;
  };

  // The real stores say which API they speak (no request is needed to know it).
  const v2Store = new EtcdV2KvStore({ endpoints: 'http://127.0.0.1:9' });
  const v3Store = new EtcdKvStore({ endpoints: 'http://127.0.0.1:9' });
  assert.equal(v2Store.api, 'v2');
  assert.equal(v3Store.api, 'v3');
  await v2Store.close();
  await v3Store.close();

  const v2 = Object.assign(new MemoryKvStore(), { api: 'v2' as const });
  const v2Message = await messageOf(v2);
  assert.match(v2Message, /flannel config not found in etcd store \(\/coreos\.com\/network\/config\)/);
  assert.match(v2Message, /etcdv2 API/);
  assert.match(v2Message, /ETCDCTL_API=2 etcdctl set/);
  assert.doesNotMatch(v2Message, /etcdv3/);

  const v3 = Object.assign(new MemoryKvStore(), { api: 'v3' as const });
  assert.match(await messageOf(v3), /Did you create your config using etcdv3 API\?$/);

  // auto, before a choice: the config is in neither API, and the message says how to write it in each.
  const chooser = new EtcdApiChooser(new MemoryKvStore(), new MemoryKvStore(), '/coreos.com/network', quiet);
  const autoMessage = await messageOf(chooser);
  assert.match(autoMessage, /neither/);
  assert.match(autoMessage, /ETCDCTL_API=3 etcdctl put/);
  assert.match(autoMessage, /ETCDCTL_API=2 etcdctl set/);
  assert.doesNotMatch(autoMessage, /\n/);
});

test("vxlan and host-gw backends: flannel's fields and defaults", () => {
  const net = '"Network":"10.244.0.0/16"';
  assert.deepEqual(parseNetworkConfig(`{${net},"Backend":{"Type":"vxlan"}}`).backend, {
    type: 'vxlan',
    vni: 1,
    port: 0,
    mtu: null,
    gbp: false,
    learning: false,
    directRouting: false,
  });
  assert.deepEqual(
    parseNetworkConfig(
      `{${net},"Backend":{"Type":"VXLAN","vni":42,"port":4789,"MTU":9000,"GBP":true,"learning":true,"DirectRouting":true}}`,
    ).backend,
    { type: 'vxlan', vni: 42, port: 4789, mtu: 9000, gbp: true, learning: true, directRouting: true },
  );
  // null keeps the default, as Go's decoder does.
  assert.equal(
    (parseNetworkConfig(`{${net},"Backend":{"Type":"vxlan","VNI":null}}`).backend as { vni: number }).vni,
    1,
  );
  assert.deepEqual(parseNetworkConfig(`{${net},"Backend":{"Type":"host-gw"}}`).backend, { type: 'host-gw' });
});
