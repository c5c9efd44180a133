import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import {
  DEFAULT_ETCD_ENDPOINTS,
  FlagError,
  envVarName,
  parseFlags,
  type RegistryFlags,
  type StaticFlags,
} from '../../src/cli/flags.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';

function registry(argv: string[], env: NodeJS.ProcessEnv = {}): RegistryFlags {
  const parsed = parseFlags(argv, env);
  assert.equal(parsed.kind, 'registry');
  return (parsed as { flags: RegistryFlags }).flags;
}

function staticMode(argv: string[], env: NodeJS.ProcessEnv = {}): StaticFlags {
  const parsed = parseFlags(argv, env);
  assert.equal(parsed.kind, 'static');
  return (parsed as { flags: StaticFlags }).flags;
}

function flagError(argv: string[], pattern: RegExp, env: NodeJS.ProcessEnv = {}): void {
  assert.throws(
    () => parseFlags(argv, env),
    (err: unknown) => {
      assert.ok(err instanceof FlagError, `a FlagError, got ${String(err)}`);
      assert.match(err.message, pattern);
      assert.ok(!err.message.includes('\n'), 'one line');
      return true;
    },
  );
}

describe('flanneld mode flags', () => {
  test('defaults are flanneld defaults', () => {
    const f = registry([]);
    assert.deepEqual(f.store, { kind: 'etcd', endpoints: DEFAULT_ETCD_ENDPOINTS, api: 'auto' });
    assert.equal(DEFAULT_ETCD_ENDPOINTS, 'http://127.0.0.1:4001,http://127.0.0.1:2379');
    assert.equal(f.prefix, '/coreos.com/network');
    assert.equal(f.subnetFile, '/run/flannel/subnet.env');
    assert.equal(f.renewMarginMinutes, 60);
    assert.equal(f.ipMasq, false);
    assert.equal(f.iptablesForwardRules, true);
    assert.equal(f.healthzIp, '0.0.0.0');
    assert.equal(f.healthzPort, 0);
    assert.equal(f.publicIp, null);
    assert.deepEqual(f.ifaces, []);
    assert.deepEqual(f.ifaceRegexes, []);
    assert.equal(f.logLevel, 'info');
    assert.equal(f.batch, 64);
  });

  test('single-dash, double-dash, "=value" and next-argument spellings', () => {
    const f = registry([
      '-etcd-endpoints=https://10.0.0.1:2379,https://10.0.0.2:2379',
      '--etcd-prefix',
      '/my/net',
      '-etcd-cafile',
      '/ca.pem',
      '-etcd-certfile=/c.pem',
      '--etcd-keyfile=/k.pem',
      '-etcd-username',
      'flannel',
      '-etcd-password=secret',
      '-iface',
      'eth1',
      '--iface=10.0.0.5',
      '-iface-regex',
      '^10\\.0\\.',
      '-public-ip',
      '203.0.113.7',
      '-subnet-file',
      '/tmp/s.env',
      '-subnet-lease-renew-margin=30',
      '-ip-masq',
      '-healthz-ip',
      '127.0.0.1',
      '-healthz-port=8471',
      '-iptables-forward-rules=false',
      '-v',
      '2',
    ]);
    assert.deepEqual(f.store, {
      kind: 'etcd',
      endpoints: 'https://10.0.0.1:2379,https://10.0.0.2:2379',
      api: 'auto',
      caFile: '/ca.pem',
      certFile: '/c.pem',
      keyFile: '/k.pem',
      username: 'flannel',
      password: 'secret',
    });
    assert.equal(f.prefix, '/my/net');
    assert.deepEqual(f.ifaces, ['eth1', '10.0.0.5']);
    assert.equal(f.ifaceRegexes.length, 1);
    assert.ok(f.ifaceRegexes[0]!.test('10.0.0.9'));
    assert.equal(f.publicIp, parseIPv4('203.0.113.7'));
    assert.equal(f.subnetFile, '/tmp/s.env');
    assert.equal(f.renewMarginMinutes, 30);
    assert.equal(f.ipMasq, true);
    assert.equal(f.healthzIp, '127.0.0.1');
    assert.equal(f.healthzPort, 8471);
    assert.equal(f.iptablesForwardRules, false);
    assert.equal(f.logLevel, 'debug', '-v 2 means debug');
  });

  test("booleans take Go's ParseBool spellings after '=', never the next argument", () => {
    assert.equal(registry(['-ip-masq=true']).ipMasq, true);
    assert.equal(registry(['-ip-masq=T']).ipMasq, true);
    assert.equal(registry(['-ip-masq=0']).ipMasq, false);
    assert.equal(registry(['--ip-masq=False']).ipMasq, false);
    flagError(['-ip-masq=yes'], /invalid boolean value "yes" for -ip-masq/);
    flagError(['-ip-masq', 'true'], /unexpected argument "true"/);
  });

  test('the last of a repeated single-value flag wins; --log-level beats -v', () => {
    assert.equal(registry(['-subnet-file', '/a', '-subnet-file', '/b']).subnetFile, '/b');
    assert.equal(registry(['-v=3', '--log-level', 'warn']).logLevel, 'warn');
    assert.equal(registry(['-v=0']).logLevel, 'info');
  });

  test('--kv-file selects the embedded registry and excludes etcd flags', () => {
    assert.deepEqual(registry(['--kv-file', '/var/lib/flannel/registry.json']).store, {
      kind: 'file',
      path: '/var/lib/flannel/registry.json',
    });
    flagError(
      ['--kv-file', '/r.json', '--etcd-endpoints', 'http://a:2379'],
      /--kv-file and --etcd-endpoints exclude each other/,
    );
    flagError(['--kv-file', '/r.json'], /--kv-file and --etcd-cafile exclude each other/, {
      FLANNELD_ETCD_CAFILE: '/ca.pem',
    });
  });
});

describe('FLANNELD_* environment variables', () => {
  test('names are FLANNELD_ + upper snake case', () => {
    assert.equal(envVarName('etcd-endpoints'), 'FLANNELD_ETCD_ENDPOINTS');
    assert.equal(envVarName('subnet-lease-renew-margin'), 'FLANNELD_SUBNET_LEASE_RENEW_MARGIN');
    assert.equal(envVarName('ip-masq'), 'FLANNELD_IP_MASQ');
  });

  test('fill in flags not given on the command line', () => {
    const f = registry([], {
      FLANNELD_ETCD_ENDPOINTS: 'http://192.0.2.254:2379',
      FLANNELD_ETCD_PREFIX: '/env/net',
      FLANNELD_IFACE: 'eth9',
      FLANNELD_IP_MASQ: 'true',
      FLANNELD_SUBNET_FILE: '/env/subnet.env',
      FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '90',
      FLANNELD_HEALTHZ_PORT: '9999',
      FLANNELD_PUBLIC_IP: '192.0.2.9',
      FLANNELD_KV_FILE: '',
    });
    assert.deepEqual(f.store, { kind: 'etcd', endpoints: 'http://192.0.2.254:2379', api: 'auto' });
    assert.equal(f.prefix, '/env/net');
    assert.deepEqual(f.ifaces, ['eth9']);
    assert.equal(f.ipMasq, true);
    assert.equal(f.subnetFile, '/env/subnet.env');
    assert.equal(f.renewMarginMinutes, 90);
    assert.equal(f.healthzPort, 9999);
    assert.equal(f.publicIp, parseIPv4('192.0.2.9'));
  });

  test('the command line wins over the environment; empty variables are unset', () => {
    const env = { FLANNELD_ETCD_PREFIX: '/env/net', FLANNELD_IP_MASQ: 'true', FLANNELD_SUBNET_FILE: '' };
    const f = registry(['-etcd-prefix', '/cli/net', '-ip-masq=false'], env);
    assert.equal(f.prefix, '/cli/net');
    assert.equal(f.ipMasq, false);
    assert.equal(f.subnetFile, '/run/flannel/subnet.env');
  });

  test('a bad value from the environment is a one-line error naming the variable or flag', () => {
    flagError([], /FLANNELD_IP_MASQ: invalid boolean value "maybe"/, { FLANNELD_IP_MASQ: 'maybe' });
    flagError([], /--subnet-lease-renew-margin: "0" is not an integer in 1\.\.1439/, {
      FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '0',
    });
  });

  test('static mode does not read the environment', () => {
    const f = staticMode(['--network', '10.244.0.0/16', '--subnet', '10.244.1.0/24'], {
      FLANNELD_IFACE: 'eth9',
      FLANNELD_IP_MASQ: 'bogus',
    });
    assert.deepEqual(f.ifaces, []);
  });
});

describe('static mode', () => {
  test('is selected by --network/--subnet/--peer and parses as before', () => {
    const f = staticMode([
      '-network=10.244.0.0/16',
      '--subnet',
      '10.244.1.0/24',
      '-peer',
      '10.244.2.0/24=192.0.2.2',
      '--peer=10.244.3.0/24=192.0.2.3',
      '-iface',
      'eth0',
      '--public-ip',
      '192.0.2.1',
      '--port',
      '8300',
      '--batch',
      '128',
    ]);
    assert.deepEqual(f.network, { prefix: parseIPv4('10.244.0.0'), prefixLen: 16 });
    assert.deepEqual(f.subnet, { prefix: parseIPv4('10.244.1.0'), prefixLen: 24 });
    assert.deepEqual(f.peers, [
      { prefix: parseIPv4('10.244.2.0'), prefixLen: 24, publicIp: parseIPv4('192.0.2.2') },
      { prefix: parseIPv4('10.244.3.0'), prefixLen: 24, publicIp: parseIPv4('192.0.2.3') },
    ]);
    assert.deepEqual(f.ifaces, ['eth0']);
    assert.equal(f.publicIp, parseIPv4('192.0.2.1'));
    assert.equal(f.port, 8300);
    assert.equal(f.batch, 128);
  });

  test('static checks still apply', () => {
    flagError(['--network', '10.244.0.0/16'], /--subnet is required/);
    flagError(['--subnet', '10.244.1.0/24'], /--network is required/);
    flagError(['--network', '10.244.0.0/16', '--subnet', '10.9.1.0/24'], /is not inside --network/);
    flagError(
      ['--network', '10.244.0.0/16', '--subnet', '10.244.1.0/24', '--peer', '10.244.1.0/25=192.0.2.2'],
      /overlaps/,
    );
    flagError(
      ['--network', '10.244.0.0/16', '--subnet', '10.244.1.0/24', '--peer', '10.244.2.0/24'],
      /expected CIDR=IP/,
    );
  });

  test('flanneld-mode flags cannot be mixed in', () => {
    flagError(
      ['--network', '10.244.0.0/16', '--subnet', '10.244.1.0/24', '--etcd-endpoints', 'http://a:2379'],
      /--etcd-endpoints cannot be combined with static mode/,
    );
    flagError(['--subnet', '10.244.1.0/24', '--network', '10.244.0.0/16', '-ip-masq'], /--ip-masq cannot be combined/);
  });
});

describe('offloads', () => {
  const S = ['--network', '10.244.0.0/16', '--subnet', '10.244.1.0/24'];
  test('all by default; --offloads picks; --no-offload (or none) turns all off, in both modes', () => {
    assert.deepEqual(staticMode(S).offloads, { tun: true, udp: true });
    assert.deepEqual(registry([]).offloads, { tun: true, udp: true });
    assert.deepEqual(staticMode([...S, '--offloads=tun']).offloads, { tun: true, udp: false });
    assert.deepEqual(staticMode([...S, '--offloads', 'udp']).offloads, { tun: false, udp: true });
    assert.deepEqual(registry(['-offloads=udp,tun']).offloads, { tun: true, udp: true });
    assert.deepEqual(registry(['--offloads=none']).offloads, { tun: false, udp: false });
    assert.deepEqual(staticMode([...S, '--no-offload']).offloads, { tun: false, udp: false });
    assert.deepEqual(
      staticMode([...S, '--no-offload', '--offloads=tun']).offloads,
      { tun: false, udp: false },
      '--no-offload wins',
    );
    assert.deepEqual(registry([], { FLANNELD_OFFLOADS: 'tun' }).offloads, { tun: true, udp: false });
  });

  test('io_uring for flannel0 by default; --io-uring=false (or FLANNELD_IO_URING=false) turns it off', () => {
    assert.equal(staticMode(S).ioUring, true);
    assert.equal(registry([]).ioUring, true);
    assert.equal(staticMode([...S, '--io-uring=false']).ioUring, false);
    assert.equal(registry(['-io-uring=0']).ioUring, false);
    assert.equal(registry([], { FLANNELD_IO_URING: 'false' }).ioUring, false);
    flagError([...S, '--io-uring=maybe'], /invalid boolean value "maybe" for -io-uring/);
  });

  test('an unknown offload is one clear line', () => {
    flagError([...S, '--offloads=tso'], /--offloads: "tso" is not a list of tun, udp, or none/);
    flagError(['--offloads=none,udp'], /--offloads/);
    flagError([...S, '--offloads='], /--offloads/);
  });
});

describe('bad flags', () => {
  test('each gives one clear line', () => {
    flagError(['--etcd-endpoint', 'http://a:2379'], /flag provided but not defined: -etcd-endpoint/);
    flagError(['-kube-subnet-mgr'], /flag provided but not defined: -kube-subnet-mgr/);
    flagError(['--etcd-prefix'], /flag needs an argument: -etcd-prefix/);
    flagError(['stray'], /unexpected argument "stray"/);
    flagError(['---iface', 'eth0'], /bad flag syntax/);
    flagError(['--subnet-lease-renew-margin', '1440'], /1\.\.1439/);
    flagError(['--subnet-lease-renew-margin', 'ten'], /"ten" is not an integer/);
    flagError(['--healthz-port', '70000'], /--healthz-port/);
    flagError(['--healthz-ip', 'localhost'], /--healthz-ip: "localhost" is not an IPv4 address/);
    flagError(['--etcd-endpoints', 'ftp://a:2379'], /--etcd-endpoints: .*scheme must be http or https/);
    flagError(['--etcd-endpoints', 'a:2379:x'], /--etcd-endpoints/);
    flagError(['--etcd-certfile', '/c.pem'], /--etcd-certfile and --etcd-keyfile must be given together/);
    flagError(['--etcd-username', 'u'], /--etcd-username and --etcd-password must be given together/);
    flagError(['--iface-regex', '(eth'], /--iface-regex "\(eth"/);
    flagError(['--public-ip', '300.1.1.1'], /--public-ip/);
    flagError(['--etcd-prefix', 'coreos.com/network'], /must start with "\/"/);
    flagError(['--log-level', 'loud'], /--log-level: "loud"/);
    flagError(['-v', 'x'], /-v: "x"/);
  });

  test('help and version', () => {
    assert.deepEqual(parseFlags(['-h']), { kind: 'help' });
    assert.deepEqual(parseFlags(['--help']), { kind: 'help' });
    assert.deepEqual(parseFlags(['-version']), { kind: 'version' });
  });

  test('--help names the backends and says static mode is udp only', () => {
    const main = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
    const r = spawnSync(process.execPath, [main, '--help'], { encoding: 'utf8', env: {} });
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^Static mode \(udp backend only\)/m);
    assert.match(r.stdout, /Backend\.Type: udp .*\n.*vxlan .*host-gw/);
  });

  test('the program prints one line on stderr and exits 2', () => {
    const main = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
    const r = spawnSync(process.execPath, [main, '-etcd-endpoints'], { encoding: 'utf8', env: {} });
    assert.equal(r.status, 2);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, 'flannel-ts: flag needs an argument: -etcd-endpoints (see --help)\n');
  });
});

describe('--workers', () => {
  const S = ['--network', '10.244.0.0/16', '--subnet', '10.244.1.0/24'];
  test('1 by default; --workers 2 / --workers=2 (static), -workers=2 or FLANNELD_WORKERS=2 (flanneld)', () => {
    assert.equal(staticMode(S).workers, 1);
    assert.equal(registry([]).workers, 1);
    assert.equal(staticMode([...S, '--workers', '2']).workers, 2);
    assert.equal(staticMode([...S, '--workers=2']).workers, 2);
    assert.equal(staticMode([...S, '--workers=1']).workers, 1);
    assert.equal(registry(['-workers=2']).workers, 2);
    assert.equal(registry(['--workers', '2']).workers, 2);
    assert.equal(registry([], { FLANNELD_WORKERS: '2' }).workers, 2);
    assert.equal(registry([], { FLANNELD_WORKERS: '1' }).workers, 1);
  });

  test('anything but 1 or 2 is one clear line, in both modes', () => {
    flagError([...S, '--workers', '3'], /^--workers: "3" is not an integer in 1\.\.2$/);
    flagError([...S, '--workers=0'], /^--workers: "0" is not an integer in 1\.\.2$/);
    flagError([...S, '--workers', 'two'], /^--workers: "two" is not an integer in 1\.\.2$/);
    flagError(['--workers=3'], /^--workers: "3" is not an integer in 1\.\.2$/);
    flagError([], /^--workers: "0" is not an integer in 1\.\.2$/, { FLANNELD_WORKERS: '0' });
    flagError([], /^--workers: "two" is not an integer in 1\.\.2$/, { FLANNELD_WORKERS: 'two' });
    flagError([...S, '--workers'], /flag needs an argument: -workers/);
  });
});

describe('--etcd-api', () => {
  test('auto by default; v2 or v3 from the flag or FLANNELD_ETCD_API; the flag wins', () => {
    const api = (argv: string[], env: NodeJS.ProcessEnv = {}): string => {
      const store = registry(argv, env).store;
      assert.equal(store.kind, 'etcd');
      return (store as { api: string }).api;
    };
    assert.equal(api([]), 'auto');
    assert.equal(api(['-etcd-api=v2']), 'v2');
    assert.equal(api(['--etcd-api', 'v3']), 'v3');
    assert.equal(api([], { FLANNELD_ETCD_API: 'v2' }), 'v2');
    assert.equal(api(['--etcd-api=v3'], { FLANNELD_ETCD_API: 'v2' }), 'v3');
  });

  test('anything else is a one-line error; it excludes --kv-file', () => {
    flagError(['--etcd-api=v4'], /^--etcd-api: "v4" is not one of auto, v2, v3$/);
    flagError([], /^--etcd-api: "V2" is not one of auto, v2, v3$/, { FLANNELD_ETCD_API: 'V2' });
    flagError(['--kv-file', '/tmp/x.json', '--etcd-api', 'v2'], /--kv-file and --etcd-api exclude each other/);
  });
});

describe('--datapath-wait and --datapath-slice-us', () => {
  const S = ['--network', '10.244.0.0/16', '--subnet', '10.244.1.0/24'];
  test('io-uring by default (event-loop with --io-uring=false), either when asked; FLANNELD_DATAPATH_WAIT', () => {
    assert.equal(staticMode(S).datapathWait, 'io-uring');
    assert.equal(registry([]).datapathWait, 'io-uring');
    assert.equal(staticMode([...S, '--io-uring=false']).datapathWait, 'event-loop');
    assert.equal(registry(['-io-uring=false']).datapathWait, 'event-loop');
    assert.equal(staticMode([...S, '--datapath-wait=event-loop']).datapathWait, 'event-loop');
    assert.equal(staticMode([...S, '--datapath-wait=io-uring']).datapathWait, 'io-uring');
    assert.equal(registry(['-datapath-wait', 'io-uring']).datapathWait, 'io-uring');
    assert.equal(registry([], { FLANNELD_DATAPATH_WAIT: 'io-uring' }).datapathWait, 'io-uring');
    assert.equal(registry(['-io-uring=false', '--datapath-wait=io-uring']).datapathWait, 'io-uring');
    flagError([...S, '--datapath-wait=poll'], /^--datapath-wait: "poll" is not one of io-uring, event-loop$/);
  });

  test('a 100 µs slice by default; 0 for the kernel default; 100..100000', () => {
    assert.equal(staticMode(S).datapathSliceUs, 100);
    assert.equal(registry([]).datapathSliceUs, 100);
    assert.equal(staticMode([...S, '--datapath-slice-us=0']).datapathSliceUs, 0);
    assert.equal(registry([], { FLANNELD_DATAPATH_SLICE_US: '3000' }).datapathSliceUs, 3000);
    flagError([...S, '--datapath-slice-us=50'], /^--datapath-slice-us: 50 is below 100 \(or 0 for the default\)$/);
    flagError([...S, '--datapath-slice-us=200000'], /^--datapath-slice-us: "200000" is not an integer in 0\.\.100000$/);
  });

  test('busy-polling of 200 µs by default; --datapath-spin-us 0..10000', () => {
    assert.equal(staticMode(S).datapathSpinUs, 200);
    assert.equal(registry(['-datapath-spin-us=50']).datapathSpinUs, 50);
    flagError([...S, '--datapath-spin-us=20000'], /^--datapath-spin-us: "20000" is not an integer in 0\.\.10000$/);
  });
});
