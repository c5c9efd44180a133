// `mk-docker-opts.sh` (the bin) and `flannel-ts mk-docker-opts` against flannel's dist/mk-docker-opts.sh
// (v0.17.0). Every expected text and message below is what that script, run by Debian's /bin/sh
// (dash) with a bare environment (PATH only), wrote for the same subnet file and flags.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';

import { parseMkDockerOptsArgs } from '../../src/cli/mk-docker-opts.js';

const BIN = fileURLToPath(new URL('../../src/cli/mk-docker-opts-main.js', import.meta.url));
const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'fts-mk-docker-opts-'));
const SUBNET_ENV = join(dir, 'subnet.env');
const OUT = join(dir, 'out.env');
writeFileSync(
  SUBNET_ENV,
  'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n',
);

const USAGE = (name: string): string =>
  `${name} [-f FLANNEL-ENV-FILE] [-d DOCKER-ENV-FILE] [-i] [-c] [-m] [-k COMBINED-KEY]\n` +
  '\n' +
  'Generate Docker daemon options based on flannel env file\n' +
  'OPTIONS:\n' +
  '\t-f\tPath to flannel env file. Defaults to /run/flannel/subnet.env\n' +
  '\t-d\tPath to Docker env file to write to. Defaults to /run/docker_opts.env\n' +
  '\t-i\tOutput each Docker option as individual var. e.g. DOCKER_OPT_MTU=1500\n' +
  '\t-c\tOutput combined Docker options into DOCKER_OPTS var\n' +
  '\t-k\tSet the combined options key to this value (default DOCKER_OPTS=)\n' +
  '\t-m\tDo not output --ip-masq (useful for older Docker version)\n' +
  '\n';

const ALL =
  'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\n' +
  'DOCKER_OPT_IPMASQ="--ip-masq=true"\n' +
  'DOCKER_OPT_MTU="--mtu=1472"\n' +
  'DOCKER_OPTS=" --bip=10.244.7.1/24 --ip-masq=true --mtu=1472"\n';

interface Run {
  status: number | null;
  stderr: string;
  stdout: string;
  /** The output file's text, or null when it was not written. */
  out: string | null;
}

function run(args: readonly string[], env: Record<string, string> = {}, entry: string[] = [BIN]): Run {
  rmSync(OUT, { force: true });
  const r = spawnSync(process.execPath, [...entry, ...args], {
    cwd: dir,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env },
    encoding: 'utf8',
  });
  return {
    status: r.status,
    stderr: r.stderr,
    stdout: r.stdout,
    out: existsSync(OUT) ? readFileSync(OUT, 'utf8') : null,
  };
}

after(() => rmSync(dir, { recursive: true, force: true }));

describe('mk-docker-opts.sh, as flannel v0.17.0 writes it', () => {
  it('no flags: the individual variables, then the combined one', () => {
    const r = run(['-f', SUBNET_ENV, '-d', OUT]);
    assert.deepEqual([r.status, r.stdout, r.stderr, r.out], [0, '', '', ALL]);
  });

  it("-k renames the combined variable (the tutorials' DOCKER_NETWORK_OPTIONS)", () => {
    assert.equal(
      run(['-k', 'DOCKER_NETWORK_OPTIONS', '-d', OUT, '-f', SUBNET_ENV]).out,
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\n' +
        'DOCKER_OPT_IPMASQ="--ip-masq=true"\n' +
        'DOCKER_OPT_MTU="--mtu=1472"\n' +
        'DOCKER_NETWORK_OPTIONS=" --bip=10.244.7.1/24 --ip-masq=true --mtu=1472"\n',
    );
  });

  it('-i only the individual ones, -c only the combined one, -ic both, -m without --ip-masq', () => {
    assert.equal(
      run(['-f', SUBNET_ENV, '-d', OUT, '-i']).out,
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=true"\nDOCKER_OPT_MTU="--mtu=1472"\n',
    );
    assert.equal(
      run(['-f', SUBNET_ENV, '-d', OUT, '-c']).out,
      'DOCKER_OPTS=" --bip=10.244.7.1/24 --ip-masq=true --mtu=1472"\n',
    );
    assert.equal(run(['-f', SUBNET_ENV, '-d', OUT, '-ic']).out, ALL);
    assert.equal(
      run(['-f', SUBNET_ENV, '-d', OUT, '-m']).out,
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_MTU="--mtu=1472"\nDOCKER_OPTS=" --bip=10.244.7.1/24 --mtu=1472"\n',
    );
    assert.equal(
      run(['-f', SUBNET_ENV, '-d', OUT, '-c', '-m', '-k', 'OPTS']).out,
      'OPTS=" --bip=10.244.7.1/24 --mtu=1472"\n',
    );
  });

  it('getopts spellings: attached values; operands end the flags', () => {
    assert.equal(
      run([`-f${SUBNET_ENV}`, `-d${OUT}`, '-kKEY']).out,
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\n' +
        'DOCKER_OPT_IPMASQ="--ip-masq=true"\n' +
        'DOCKER_OPT_MTU="--mtu=1472"\n' +
        'KEY=" --bip=10.244.7.1/24 --ip-masq=true --mtu=1472"\n',
    );
    assert.equal(
      run(['-f', SUBNET_ENV, '-d', OUT, '-i', '-k', 'X', 'extra', '-c']).out,
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=true"\nDOCKER_OPT_MTU="--mtu=1472"\n',
    );
    assert.deepEqual(parseMkDockerOptsArgs(['-mi', '--', '-c']), {
      flannelEnv: '/run/flannel/subnet.env',
      dockerEnv: '/run/docker_opts.env',
      key: 'DOCKER_OPTS',
      individual: true,
      combined: false,
      omitIpMasq: true,
    });
  });

  it('FLANNEL_IPMASQ=true (flannel masquerades) gives docker --ip-masq=false', () => {
    const masq = join(dir, 'masq.env');
    writeFileSync(
      masq,
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n',
    );
    assert.equal(
      run(['-f', masq, '-d', OUT]).out,
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\n' +
        'DOCKER_OPT_IPMASQ="--ip-masq=false"\n' +
        'DOCKER_OPT_MTU="--mtu=1472"\n' +
        'DOCKER_OPTS=" --bip=10.244.7.1/24 --ip-masq=false --mtu=1472"\n',
    );
  });

  it('the environment: an existing $KEY, other DOCKER_OPT_* variables, FLANNEL_* the file lacks', () => {
    assert.equal(
      run(['-f', SUBNET_ENV, '-d', OUT], { DOCKER_OPTS: '--foo' }).out,
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\n' +
        'DOCKER_OPT_IPMASQ="--ip-masq=true"\n' +
        'DOCKER_OPT_MTU="--mtu=1472"\n' +
        'DOCKER_OPTS="--foo  --bip=10.244.7.1/24 --ip-masq=true --mtu=1472"\n',
    );
    assert.equal(
      run(['-f', SUBNET_ENV, '-d', OUT], { DOCKER_OPT_ZZZ: 'z', DOCKER_OPT_A: 'a' }).out,
      'DOCKER_OPT_A="a"\n' +
        'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\n' +
        'DOCKER_OPT_IPMASQ="--ip-masq=true"\n' +
        'DOCKER_OPT_MTU="--mtu=1472"\n' +
        'DOCKER_OPT_ZZZ="z"\n' +
        'DOCKER_OPTS=" a --bip=10.244.7.1/24 --ip-masq=true --mtu=1472 z"\n',
    );
    const part = join(dir, 'part.env');
    writeFileSync(part, 'FLANNEL_SUBNET=10.244.7.1/24\n');
    assert.equal(
      run(['-f', part, '-d', OUT]).out,
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPTS=" --bip=10.244.7.1/24"\n',
    );
    assert.equal(
      run(['-f', part, '-d', OUT], { FLANNEL_MTU: '9000' }).out,
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_MTU="--mtu=9000"\nDOCKER_OPTS=" --bip=10.244.7.1/24 --mtu=9000"\n',
    );
  });

  it('a missing subnet file is skipped: DOCKER_OPTS=""', () => {
    const r = run(['-f', join(dir, 'missing.env'), '-d', OUT]);
    assert.deepEqual([r.status, r.stderr, r.out], [0, '', 'DOCKER_OPTS=""\n']);
  });

  it("the script's errors: bad FLANNEL_IPMASQ, unknown flag, missing value, -h, unwritable output", () => {
    const bad = join(dir, 'bad.env');
    writeFileSync(bad, 'FLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_IPMASQ=yes\n');
    assert.deepEqual(run(['-f', bad, '-d', OUT]), {
      status: 1,
      stdout: '',
      stderr: 'Invalid value of FLANNEL_IPMASQ: yes\n',
      out: null,
    });
    assert.equal(
      run(['-f', bad, '-d', OUT, '-m']).out,
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPTS=" --bip=10.244.7.1/24"\n',
    );

    const illegal = run(['-x', '-d', OUT]);
    assert.deepEqual([illegal.status, illegal.stderr, illegal.out], [1, `Illegal option -x\n${USAGE(BIN)}`, null]);
    const noArg = run(['-f']);
    assert.deepEqual([noArg.status, noArg.stderr], [1, `No arg for -f option\n${USAGE(BIN)}`]);
    const noKey = run(['-k']);
    assert.deepEqual([noKey.status, noKey.stderr], [1, `No arg for -k option\n${USAGE(BIN)}`]);
    const help = run(['-h']);
    assert.deepEqual([help.status, help.stderr, help.stdout], [1, USAGE(BIN), '']);

    const nowhere = join(dir, 'nonexistent', 'out.env');
    const r = run(['-f', SUBNET_ENV, '-d', nowhere]);
    assert.deepEqual([r.status, r.stderr], [2, `${BIN}: cannot create ${nowhere}: Directory nonexistent\n`]);
  });

  it('flannel-ts mk-docker-opts is the same command', () => {
    const r = run(['mk-docker-opts', '-f', SUBNET_ENV, '-d', OUT], {}, [MAIN]);
    assert.deepEqual([r.status, r.stderr, r.out], [0, '', ALL]);
    const illegal = run(['mk-docker-opts', '-x'], {}, [MAIN]);
    assert.deepEqual([illegal.status, illegal.stderr], [1, `Illegal option -x\n${USAGE('flannel-ts mk-docker-opts')}`]);
  });

  it('package.json ships it as the mk-docker-opts.sh bin', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
      bin: Record<string, string>;
    };
    assert.equal(pkg.bin['mk-docker-opts.sh'], 'dist/src/cli/mk-docker-opts-main.js');
  });
});
