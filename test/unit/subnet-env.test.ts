import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  dockerOpts,
  formatSubnetEnv,
  parseEnvText,
  previousSubnetFromEnv,
  readPreviousSubnet,
  readSubnetEnv,
  writeSubnetEnv,
} from '../../src/subnet/subnet-env.js';
import { formatCidr, parseCidr } from '../../src/routing-table/ipv4.js';

const content = {
  network: parseCidr('10.244.0.0/16'),
  subnet: parseCidr('10.244.7.0/24'),
  mtu: 1472,
  ipMasq: false,
};
const EXPECTED =
  'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n';

test("subnet.env text is exactly flannel's", () => {
  assert.equal(formatSubnetEnv(content), EXPECTED);
  assert.equal(
    formatSubnetEnv({ network: parseCidr('10.1.0.0/16'), subnet: parseCidr('10.1.15.0/24'), mtu: 8973, ipMasq: true }),
    'FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.15.1/24\nFLANNEL_MTU=8973\nFLANNEL_IPMASQ=true\n',
  );
});

test('writeSubnetEnv: atomic, 0644 whatever the umask, directory 0755, exact bytes, read back', async () => {
  const root = await mkdtemp(join(tmpdir(), 'flannel-ts-env-'));
  const oldUmask = process.umask(0o077);
  try {
    const path = join(root, 'run', 'flannel', 'subnet.env');
    await writeSubnetEnv(path, content);
    assert.equal(await readFile(path, 'utf8'), EXPECTED);
    assert.equal((await stat(path)).mode & 0o777, 0o644);
    assert.equal((await stat(join(root, 'run', 'flannel'))).mode & 0o777, 0o755);
    // Overwrite: the file is replaced, no temp files are left behind.
    await writeSubnetEnv(path, { ...content, subnet: parseCidr('10.244.9.0/24') });
    assert.equal((await readdir(join(root, 'run', 'flannel'))).join(','), 'subnet.env');
    const prev = await readPreviousSubnet(path);
    assert.ok(prev !== null);
    assert.equal(formatCidr(prev.prefix, prev.prefixLen), '10.244.9.0/24');
    const vars = await readSubnetEnv(path);
    assert.equal(vars?.get('FLANNEL_MTU'), '1472');
    assert.equal(await readSubnetEnv(join(root, 'nope.env')), null);
    assert.equal(await readPreviousSubnet(join(root, 'nope.env')), null);
  } finally {
    process.umask(oldUmask);
    await rm(root, { recursive: true, force: true });
  }
});

test('reader tolerates junk, quotes, comments and export', async () => {
  const vars = parseEnvText(
    '# written by hand\n\ngarbage line\nexport FLANNEL_NETWORK="10.1.0.0/16"\n' +
      "FLANNEL_SUBNET=10.1.15.1/24 # mine\r\n=oops\nFLANNEL_MTU='1450'\n",
  );
  assert.equal(vars.get('FLANNEL_NETWORK'), '10.1.0.0/16');
  assert.equal(vars.get('FLANNEL_SUBNET'), '10.1.15.1/24');
  assert.equal(vars.get('FLANNEL_MTU'), '1450');
  const sn = previousSubnetFromEnv(vars);
  assert.ok(sn !== null);
  assert.equal(formatCidr(sn.prefix, sn.prefixLen), '10.1.15.0/24');

  assert.equal(previousSubnetFromEnv(new Map([['FLANNEL_SUBNET', '10.1.15.1/24,10.1.16.1/24']])), null);
  assert.equal(previousSubnetFromEnv(new Map([['FLANNEL_SUBNET', 'junk']])), null);
  assert.equal(previousSubnetFromEnv(new Map()), null);
  const single = previousSubnetFromEnv(new Map([['FLANNEL_SUBNET', '10.1.15.1/24,']]));
  assert.equal(single && formatCidr(single.prefix, single.prefixLen), '10.1.15.0/24');

  const root = await mkdtemp(join(tmpdir(), 'flannel-ts-env-'));
  try {
    await writeFile(join(root, 'bad.env'), '\u0000\u0001 nothing useful');
    assert.equal(await readPreviousSubnet(join(root, 'bad.env')), null);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('dockerOpts matches mk-docker-opts.sh output', () => {
  const env = parseEnvText(formatSubnetEnv(content));
  assert.equal(
    dockerOpts(env),
    'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=true"\nDOCKER_OPT_MTU="--mtu=1472"\n' +
      'DOCKER_OPTS=" --bip=10.244.7.1/24 --ip-masq=true --mtu=1472"\n',
  );
  const masq = parseEnvText(formatSubnetEnv({ ...content, ipMasq: true }));
  assert.equal(
    dockerOpts(masq),
    'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=false"\nDOCKER_OPT_MTU="--mtu=1472"\n' +
      'DOCKER_OPTS=" --bip=10.244.7.1/24 --ip-masq=false --mtu=1472"\n',
  );
  assert.equal(
    dockerOpts(masq, { combined: true, key: 'DOCKER_NETWORK_OPTIONS' }),
    'DOCKER_NETWORK_OPTIONS=" --bip=10.244.7.1/24 --ip-masq=false --mtu=1472"\n',
  );
  assert.equal(
    dockerOpts(masq, { individual: true }),
    'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=false"\nDOCKER_OPT_MTU="--mtu=1472"\n',
  );
  assert.equal(
    dockerOpts(masq, { omitIpMasq: true }),
    'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_MTU="--mtu=1472"\n' +
      'DOCKER_OPTS=" --bip=10.244.7.1/24 --mtu=1472"\n',
  );
  // An existing $KEY value comes first, followed by a space (then each option's own leading space).
  assert.equal(
    dockerOpts({ FLANNEL_SUBNET: '10.1.15.1/24', FLANNEL_MTU: '1472', DOCKER_OPTS: '--debug' }, { combined: true }),
    'DOCKER_OPTS="--debug  --bip=10.1.15.1/24 --mtu=1472"\n',
  );
  assert.equal(dockerOpts({}), 'DOCKER_OPTS=""\n');
  assert.throws(() => dockerOpts({ FLANNEL_IPMASQ: 'yes' }), {
    name: 'SubnetFileError',
    code: 'FLANNEL_TS_ERR_INVALID_SUBNET_FILE',
    message: 'Invalid value of FLANNEL_IPMASQ: yes',
  });
  assert.equal(dockerOpts({ FLANNEL_IPMASQ: 'yes' }, { omitIpMasq: true }), 'DOCKER_OPTS=""\n');
});
