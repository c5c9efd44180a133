import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { FlagError, parseFlags } from '../../src/cli/flags.js';
import { hostRoutesProblem, staticHostProblem, type HostRoute } from '../../src/cli/static-checks.js';
import { parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';

const BASE = ['--network', '10.244.0.0/16', '--subnet', '10.244.1.0/24'];

function refused(argv: string[], pattern: RegExp): void {
  assert.throws(
    () => parseFlags(argv),
    (err: unknown) => err instanceof FlagError && pattern.test(err.message) && !err.message.includes('\n'),
    argv.join(' '),
  );
}

test('host bits in --network, --subnet or --peer are refused, naming the prefix', () => {
  refused(
    ['--network', '10.244.0.1/16', '--subnet', '10.244.1.0/24'],
    /--network 10\.244\.0\.1\/16 has host bits set \(the prefix is 10\.244\.0\.0\/16\)/,
  );
  refused(['--network', '10.244.0.0/16', '--subnet', '10.244.1.1/24'], /--subnet 10\.244\.1\.1\/24 has host bits set/);
  refused([...BASE, '--peer', '10.244.2.7/24=192.0.2.2'], /--peer 10\.244\.2\.7\/24 has host bits set/);
});

test('a default-route or special-purpose network is refused', () => {
  refused(
    ['--network', '0.0.0.0/0', '--subnet', '10.244.1.0/24'],
    /--network 0\.0\.0\.0\/0 would replace the host's default route/,
  );
  refused(['--network', '0.0.0.0/1', '--subnet', '10.244.1.0/24'], /special-purpose block 0\.0\.0\.0\/8/);
  refused(['--network', '127.0.0.0/8', '--subnet', '127.0.1.0/24'], /special-purpose block 127\.0\.0\.0\/8/);
  refused(['--network', '224.0.0.0/16', '--subnet', '224.0.1.0/24'], /224\.0\.0\.0\/4/);
});

test('duplicate or overlapping peers, and special or own peer addresses, are refused', () => {
  refused(
    [...BASE, '--peer', '10.244.2.0/24=192.0.2.2', '--peer', '10.244.2.0/24=192.0.2.3'],
    /--peer 10\.244\.2\.0\/24 is given twice/,
  );
  refused(
    [...BASE, '--peer', '10.244.2.0/23=192.0.2.2', '--peer', '10.244.3.0/24=192.0.2.3'],
    /--peer 10\.244\.3\.0\/24 overlaps --peer 10\.244\.2\.0\/23/,
  );
  for (const [ip, why] of [
    ['127.0.0.1', /loopback/],
    ['224.0.0.1', /multicast/],
    ['0.0.0.0', /unspecified/],
    ['255.255.255.255', /broadcast/],
  ] as const) {
    refused([...BASE, '--peer', `10.244.2.0/24=${ip}`], why);
  }
  refused(
    [...BASE, '--public-ip', '192.0.2.1', '--peer', '10.244.2.0/24=192.0.2.1'],
    /the PublicIP is this host's own/,
  );
  // Good peers still parse.
  const ok = parseFlags([...BASE, '--peer', '10.244.2.0/24=192.0.2.2', '--peer', '10.244.3.0/24=192.0.2.3']);
  assert.equal(ok.kind, 'static');
});

const ctx = {
  network: parseCidr('10.244.0.0/16'),
  subnet: parseCidr('10.244.1.0/24'),
  extName: 'eth0',
  ownAddresses: [parseIPv4('192.0.2.1')],
};
const routes: HostRoute[] = [
  { dst: 'default', dev: 'eth0' },
  { dst: '192.0.2.0/24', dev: 'eth0' },
  { dst: '10.244.1.0/24', dev: 'cni0' },
  { dst: '10.244.1.1', dev: 'cni0', table: 'local', type: 'local' },
  { dst: '10.244.1.255', dev: 'cni0', table: 'local', type: 'broadcast' },
  { dst: '192.0.2.1', dev: 'eth0', table: 'local', type: 'local' },
];

test('the network against the host: the pod bridge and the default route are fine, the rest is not', () => {
  assert.equal(hostRoutesProblem(routes, ctx), null);
  assert.match(
    hostRoutesProblem(routes, { ...ctx, network: parseCidr('192.0.0.0/16'), subnet: parseCidr('192.0.9.0/24') })!,
    /contains this host's own address 192\.0\.2\.1/,
  );
  assert.match(
    hostRoutesProblem([...routes, { dst: '10.244.9.0/24', dev: 'eth1' }], ctx)!,
    /--network 10\.244\.0\.0\/16 overlaps the host route 10\.244\.9\.0\/24 dev eth1/,
  );
  assert.match(
    hostRoutesProblem([...routes, { dst: '10.0.0.0/8', dev: 'tun9', table: 'vpn' }], ctx)!,
    /10\.0\.0\.0\/8 dev tun9 table vpn/,
  );
  assert.match(
    hostRoutesProblem([...routes, { dst: '10.244.0.0/16', dev: 'flannel0' }], ctx)!,
    /the route of a flannel agent already running/,
  );
  assert.match(
    hostRoutesProblem([...routes, { dst: '10.244.128.0/17', dev: 'eth0' }], ctx)!,
    /overlaps the underlay route 10\.244\.128\.0\/17 dev eth0/,
  );
});

test('staticHostProblem: a peer at the interface address is refused', () => {
  const flags = {
    network: ctx.network,
    subnet: ctx.subnet,
    peers: [{ ...parseCidr('10.244.2.0/24'), publicIp: parseIPv4('192.0.2.1') }],
  };
  assert.match(
    staticHostProblem(flags, { name: 'eth0', address: parseIPv4('192.0.2.1') }, parseIPv4('198.51.100.1'), routes)!,
    /this host's own/,
  );
  assert.equal(
    staticHostProblem(
      { ...flags, peers: [] },
      { name: 'eth0', address: parseIPv4('192.0.2.1') },
      parseIPv4('192.0.2.1'),
      routes,
    ),
    null,
  );
});

test('the CLI: a bad flag value is one line on stderr and exit 2', () => {
  const main = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
  const r = spawnSync(process.execPath, [main, '--network', '0.0.0.0/0', '--subnet', '10.244.1.0/24'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /default route/);
});
