import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  configKey,
  formatLeaseAttrs,
  formatSubnetKey,
  LeaseValueError,
  parseLeaseAttrs,
  parseSubnetKey,
  subnetKey,
  subnetsPrefix,
} from '../../src/subnet/lease.js';
import { formatIPv4, parseIPv4 } from '../../src/routing-table/ipv4.js';

test('key paths', () => {
  assert.equal(configKey('/coreos.com/network'), '/coreos.com/network/config');
  assert.equal(configKey('/coreos.com/network/'), '/coreos.com/network/config');
  assert.equal(subnetsPrefix('/coreos.com/network'), '/coreos.com/network/subnets/');
  assert.equal(
    subnetKey('/coreos.com/network', { prefix: parseIPv4('10.244.7.0'), prefixLen: 24 }),
    '/coreos.com/network/subnets/10.244.7.0-24',
  );
});

test('subnet keys round trip', () => {
  for (const s of ['10.244.7.0-24', '10.1.15.0-24', '0.0.0.0-0', '255.255.255.252-30', '192.168.0.128-25']) {
    const p = parseSubnetKey(s);
    assert.ok(p !== null, s);
    assert.equal(formatSubnetKey(p.subnet), s);
    assert.equal(p.ipv6, null);
  }
});

test('subnet keys parse as flannel regex does', () => {
  const ok: Array<[string, string, number, string | null]> = [
    ['10.1.15.0-24&fc00::-64', '10.1.15.0', 24, 'fc00::-64'],
    ['10.1.15.0-24&fc00:0:0:1::-64', '10.1.15.0', 24, 'fc00:0:0:1::-64'],
    ['/coreos.com/network/subnets/10.1.15.0-24', '10.1.15.0', 24, null], // not anchored at the start
    ['10.1.15.0-024', '10.1.15.0', 24, null], // ParseUint accepts leading zeros
    ['10.1.15.0-31', '10.1.15.0', 31, null],
  ];
  for (const [key, ip, len, v6] of ok) {
    const p = parseSubnetKey(key);
    assert.ok(p !== null, key);
    assert.equal(formatIPv4(p.subnet.prefix), ip, key);
    assert.equal(p.subnet.prefixLen, len, key);
    assert.equal(p.ipv6, v6, key);
  }
  const bad = [
    '10.1.15.0-32', // length must fit 5 bits
    '10.1.15.0',
    '10.1.15.0/24',
    '10.1.15.0-24x',
    '300.1.15.0-24',
    '10.1.015.0-24', // leading zero: rejected like Go's ParseIP
    '10.1x15y0-24', // the unescaped dots match, the IP does not parse
    'config',
    '10.1.15.0-24&fc00::-128', // IPv6 length must fit 7 bits
    '10.1.15.0-24&zz::-64',
    '10.1.15.0-24&::::-64',
    '',
  ];
  for (const key of bad) assert.equal(parseSubnetKey(key), null, key);
});

test('lease value written exactly as flannel v0.15+ udp', () => {
  assert.equal(formatLeaseAttrs(parseIPv4('192.0.2.7')), '{"PublicIP":"192.0.2.7","PublicIPv6":null}');
});

test('lease values of every flannel version and backend are read', () => {
  const cases: Array<[string, string, string | null]> = [
    ['{"PublicIP":"9.21.58.21"}', '9.21.58.21', null], // v0.5-v0.14
    ['{"PublicIP":"192.0.2.7","PublicIPv6":null}', '192.0.2.7', null], // v0.15+
    [
      '{"PublicIP":"192.0.2.8","PublicIPv6":"fc00::8","BackendType":"vxlan",' +
        '"BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}',
      '192.0.2.8',
      'vxlan',
    ],
    ['{"PublicIP":"10.0.0.1","BackendType":"host-gw","BackendData":null,"BackendV6Data":null}', '10.0.0.1', 'host-gw'],
    ['{"publicip":"10.0.0.2","backendtype":"udp"}', '10.0.0.2', 'udp'],
    ['{"PUBLICIP":"10.0.0.3","SomethingNew":{"x":[1]}}', '10.0.0.3', null],
    [' {"PublicIP" : "10.0.0.4"} ', '10.0.0.4', null],
  ];
  for (const [value, ip, bt] of cases) {
    const a = parseLeaseAttrs(value);
    assert.equal(formatIPv4(a.publicIp), ip, value);
    assert.equal(a.backendType, bt, value);
  }
});

test('unreadable lease values are errors', () => {
  const bad: Array<[string, RegExp]> = [
    ['', /not JSON/],
    ['{', /not JSON/],
    ['"10.0.0.1"', /not a JSON object/],
    ['[]', /not a JSON object/],
    ['{}', /no PublicIP/],
    ['{"PublicIP":null}', /no PublicIP/],
    ['{"PublicIP":"fc00::1"}', /not an IPv4 address/],
    ['{"PublicIP":"::ffff:10.0.0.1"}', /not an IPv4 address/],
    ['{"PublicIP":"10.0.0"}', /not an IPv4 address/],
    ['{"PublicIP":167772161}', /not a string/],
  ];
  for (const [value, msg] of bad) {
    assert.throws(
      () => parseLeaseAttrs(value),
      (e: unknown) => e instanceof LeaseValueError && msg.test(e.message),
      value,
    );
  }
});
