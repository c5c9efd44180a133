// flanneld's flags as the tutorials spell them, and the one-line hint for a misspelt one.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';

import { editDistance, nearestFlag, unknownFlagMessage } from '../../src/cli/flag-suggest.js';
import { FlagError, parseFlags, type RegistryFlags } from '../../src/cli/flags.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';

function registry(argv: string[], env: NodeJS.ProcessEnv = {}): RegistryFlags {
  const parsed = parseFlags(argv, env);
  assert.equal(parsed.kind, 'registry');
  return (parsed as { flags: RegistryFlags }).flags;
}

function message(argv: string[]): string {
  try {
    parseFlags(argv, {});
  } catch (err) {
    assert.ok(err instanceof FlagError);
    assert.ok(!err.message.includes('\n'), 'one line');
    return err.message;
  }
  throw new Error(`no error for ${argv.join(' ')}`);
}

describe("flanneld's flags, as the tutorials write them", () => {
  test('a v0.7-v0.17 unit file command line', () => {
    const f = registry([
      '-etcd-endpoints=https://192.0.2.10:2379,https://192.0.2.11:2379',
      '-etcd-prefix=/kubernetes/network',
      '-etcd-cafile=/etc/kubernetes/ssl/ca.pem',
      '-etcd-certfile=/etc/kubernetes/ssl/kubernetes.pem',
      '-etcd-keyfile=/etc/kubernetes/ssl/kubernetes-key.pem',
      '-iface=eth0',
      '-ip-masq',
      '--subnet-file=/run/flannel/subnet.env',
      '--public-ip',
      '192.0.2.10',
      '--subnet-lease-renew-margin=30',
    ]);
    assert.deepEqual(f.store, {
      kind: 'etcd',
      endpoints: 'https://192.0.2.10:2379,https://192.0.2.11:2379',
      api: 'auto',
      caFile: '/etc/kubernetes/ssl/ca.pem',
      certFile: '/etc/kubernetes/ssl/kubernetes.pem',
      keyFile: '/etc/kubernetes/ssl/kubernetes-key.pem',
    });
    assert.equal(f.prefix, '/kubernetes/network');
    assert.deepEqual(f.ifaces, ['eth0']);
    assert.equal(f.ipMasq, true);
    assert.equal(f.subnetFile, '/run/flannel/subnet.env');
    assert.equal(f.publicIp, parseIPv4('192.0.2.10'));
    assert.equal(f.renewMarginMinutes, 30);
  });

  test('the same from FLANNELD_* variables (an EnvironmentFile)', () => {
    const f = registry([], {
      FLANNELD_ETCD_ENDPOINTS: 'http://192.0.2.254:2379',
      FLANNELD_ETCD_PREFIX: '/coreos.com/network',
      FLANNELD_IFACE: 'eth1',
      FLANNELD_IP_MASQ: 'true',
      FLANNELD_SUBNET_FILE: '/run/flannel/subnet.env',
      FLANNELD_PUBLIC_IP: '192.0.2.3',
      FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '120',
      FLANNELD_ETCD_API: 'v2',
    });
    assert.equal(f.store.kind === 'etcd' && f.store.endpoints, 'http://192.0.2.254:2379');
    assert.equal(f.store.kind === 'etcd' && f.store.api, 'v2');
    assert.deepEqual(
      [f.prefix, f.ifaces, f.ipMasq, f.renewMarginMinutes],
      ['/coreos.com/network', ['eth1'], true, 120],
    );
    assert.equal(f.publicIp, parseIPv4('192.0.2.3'));
  });
});

describe('an unknown flag names the nearest known one', () => {
  test('other dashes or case, a typo, a missing letter, an abbreviation', () => {
    assert.equal(
      message(['--etcd-ca-file', '/ca.pem']),
      'flag provided but not defined: -etcd-ca-file; did you mean --etcd-cafile?',
    );
    assert.match(message(['-etcd_cert_file=/c.pem']), /did you mean --etcd-certfile\?$/);
    assert.match(message(['--etcd-endpoint', 'http://a:2379']), /did you mean --etcd-endpoints\?$/);
    assert.match(message(['--etcd-endpionts=http://a:2379']), /did you mean --etcd-endpoints\?$/);
    assert.match(message(['--ipmasq']), /did you mean --ip-masq\?$/);
    assert.match(message(['--subnetfile=/x']), /did you mean --subnet-file\?$/);
    assert.match(message(['--public-IP=1.2.3.4']), /did you mean --public-ip\?$/);
    assert.match(message(['--subnet-lease-renew']), /did you mean --subnet-lease-renew-margin\?$/);
    assert.match(message(['--etcd-pefix=/x']), /did you mean --etcd-prefix\?$/);
  });

  test("nothing close: Go's message alone; flanneld-only flags say what they are", () => {
    assert.equal(message(['--frobnicate']), 'flag provided but not defined: -frobnicate');
    assert.match(
      message(['-kube-subnet-mgr']),
      /^flag provided but not defined: -kube-subnet-mgr \(a flanneld flag flannel-ts does not have: .*Kubernetes/,
    );
    assert.match(message(['--public-ipv6=fd00::1']), /IPv4 only/);
  });

  test('nearestFlag and editDistance', () => {
    const known = ['etcd-cafile', 'etcd-certfile', 'etcd-keyfile', 'iface', 'iface-regex'];
    assert.equal(nearestFlag('ifce', known), 'iface');
    assert.equal(nearestFlag('xyz', known), null);
    assert.equal(nearestFlag('', known), null);
    assert.equal(editDistance('etcdcafiel', 'etcdcafile'), 1);
    assert.equal(editDistance('abc', ''), 3);
    assert.equal(unknownFlagMessage('ifac', known), 'flag provided but not defined: -ifac; did you mean --iface?');
  });

  test('the command line: one line on stderr, exit 2', () => {
    const main = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
    const r = spawnSync(process.execPath, [main, '--etcd-ca-file=/ca.pem'], { encoding: 'utf8', env: {} });
    assert.equal(r.status, 2);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      'flannel-ts: flag provided but not defined: -etcd-ca-file; did you mean --etcd-cafile? (see --help)\n',
    );
  });
});
