/**
 * Every error class flannel-ts throws on purpose extends FlannelTsError (src/errors.ts), sets `name` to its class
 * name and a stable `code` FLANNEL_TS_ERR_<SOMETHING>, unique across the code base and listed in docs/errors.md,
 * which lists no code the source does not have. Checked on instances of every exported class and on the source
 * text (so a new class, exported or not, cannot skip the base or the table).
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { FlagError, parseFlags } from '../../src/cli/flags.js';
import { RegistryChoiceError } from '../../src/demo/registry-choice.js';
import {
  DatapathClosedError,
  DatapathWorkerError,
  ExternalInterfaceError,
  FlannelTsError,
  LinkCommandError,
  NativeShimLoadError,
  TunOpenError,
  UdpBindError,
} from '../../src/errors.js';
import {
  EtcdClosedError,
  EtcdOptionsError,
  EtcdOutcomeUnknownError,
  EtcdProtocolError,
  EtcdResponseError,
  EtcdUnavailableError,
  EtcdWatchError,
} from '../../src/etcd/errors.js';
import { JsonObjectSplitter } from '../../src/etcd/json-stream.js';
import { parseEndpoints } from '../../src/etcd/options.js';
import { CommandError } from '../../src/lab/exec.js';
import { IptablesError } from '../../src/link/iptables-chain.js';
import { AddressError, parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';
import { NetworkConfigError, parseNetworkConfig } from '../../src/subnet/config.js';
import { FileRegistryClosedError, FileRegistryFormatError, FileRegistryLockError } from '../../src/subnet/file-kv.js';
import { LeaseValueError, parseLeaseAttrs } from '../../src/subnet/lease.js';
import { LeaseRaceError, OutOfSubnetsError } from '../../src/subnet/lease-manager.js';
import { NetworkConfigMissingError } from '../../src/subnet/network-config-source.js';
import { SubnetFileError, dockerOpts } from '../../src/subnet/subnet-env.js';

const repo = fileURLToPath(new URL('../../..', import.meta.url));
const CODE = /^FLANNEL_TS_ERR_[A-Z0-9_]+$/;

/** One instance of every exported error class, made as the code makes them. */
const INSTANCES: readonly Error[] = [
  new FlagError('unknown flag -x'),
  new RegistryChoiceError('bad'),
  new TunOpenError('cannot create the TUN device', 2),
  new UdpBindError('cannot bind UDP', 98),
  new NativeShimLoadError('cannot load'),
  new LinkCommandError('ip link: nope', ['link']),
  new ExternalInterfaceError('no interface'),
  new DatapathClosedError('closed'),
  new DatapathWorkerError('failed'),
  new EtcdResponseError('http://e:2379', '/v3/kv/range', 14, 503, 'etcdserver: no leader'),
  new EtcdUnavailableError('/v3/kv/range', ['http://e:2379: refused']),
  new EtcdClosedError(),
  new EtcdOutcomeUnknownError('broken off'),
  new EtcdProtocolError('not JSON'),
  new EtcdWatchError('canceled'),
  new EtcdOptionsError('bad endpoint'),
  new CommandError(['false'], { stdout: '', stderr: '', code: 1 }),
  new IptablesError('iptables-restore failed'),
  new AddressError('invalid IPv4 address'),
  new NetworkConfigError('bad', 'Network'),
  new FileRegistryClosedError('closed'),
  new FileRegistryFormatError('not a registry'),
  new FileRegistryLockError('locked'),
  new LeaseValueError('bad value'),
  new LeaseRaceError('lost'),
  new OutOfSubnetsError(),
  new NetworkConfigMissingError('/coreos.com/network/config'),
  new SubnetFileError('Invalid value of FLANNEL_IPMASQ: maybe'),
];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name));
}

/** Every code assigned in src/, with the file it is in. */
function codesInSource(): Map<string, string[]> {
  const codes = new Map<string, string[]>();
  for (const file of sourceFiles(join(repo, 'src'))) {
    for (const m of readFileSync(file, 'utf8').matchAll(/readonly code(?:: string)? = '([A-Z0-9_]+)'/g)) {
      codes.set(m[1]!, [...(codes.get(m[1]!) ?? []), file]);
    }
  }
  return codes;
}

function codesInDocs(): Set<string> {
  const text = readFileSync(join(repo, 'docs', 'errors.md'), 'utf8');
  return new Set([...text.matchAll(/`(FLANNEL_TS_ERR_[A-Z0-9_]+)`/g)].map((m) => m[1]!));
}

describe('errors: name and stable code', () => {
  test('every exported error class: a FlannelTsError and an Error, name = class name, a FLANNEL_TS_ERR_ code', () => {
    for (const e of INSTANCES) {
      assert.ok(e instanceof FlannelTsError, `${e.constructor.name} extends FlannelTsError`);
      assert.ok(e instanceof Error);
      assert.equal(e.name, e.constructor.name);
      const code = (e as FlannelTsError).code;
      assert.match(code, CODE, `${e.name}.code`);
      assert.equal(String(e).split(':')[0], e.name, 'String(error) starts with the name');
    }
  });

  test('codes are unique: one class per code', () => {
    const seen = new Map<string, string>();
    for (const e of INSTANCES) {
      const code = (e as FlannelTsError).code;
      assert.equal(seen.get(code), undefined, `${code} used by ${seen.get(code)} and ${e.name}`);
      seen.set(code, e.name);
    }
    for (const [code, files] of codesInSource()) assert.equal(files.length, 1, `${code} assigned in ${files}`);
  });

  test('docs/errors.md lists exactly the codes the source assigns', () => {
    const source = new Set([...codesInSource().keys()].filter((c) => c !== 'FLANNEL_TS_ERR'));
    const docs = codesInDocs();
    for (const code of source) assert.ok(CODE.test(code), `${code} has the FLANNEL_TS_ERR_ form`);
    assert.deepEqual([...source].filter((c) => !docs.has(c)).sort(), [], 'codes missing from docs/errors.md');
    assert.deepEqual([...docs].filter((c) => !source.has(c)).sort(), [], 'codes in docs/errors.md but not in src');
  });

  test('no error class in src/ extends Error directly, except the base', () => {
    const offenders: string[] = [];
    for (const file of sourceFiles(join(repo, 'src'))) {
      if (file.endsWith(join('src', 'errors.ts'))) continue;
      for (const m of readFileSync(file, 'utf8').matchAll(/class (\w+) extends (Error|TypeError|RangeError)\b/g)) {
        offenders.push(`${m[1]} in ${file}`);
      }
    }
    assert.deepEqual(offenders, []);
  });

  test('thrown by the code itself, with the right class and code', () => {
    const codeOf = (fn: () => unknown): string => {
      try {
        fn();
      } catch (err) {
        assert.ok(err instanceof FlannelTsError, `a FlannelTsError: ${String(err)}`);
        return err.code;
      }
      assert.fail('nothing was thrown');
    };
    assert.equal(
      codeOf(() => parseFlags(['--no-such-flag'], {})),
      'FLANNEL_TS_ERR_INVALID_FLAG',
    );
    assert.equal(
      codeOf(() => parseIPv4('10.244.1')),
      'FLANNEL_TS_ERR_INVALID_ADDRESS',
    );
    assert.equal(
      codeOf(() => parseCidr('10.244.0.0')),
      'FLANNEL_TS_ERR_INVALID_ADDRESS',
    );
    assert.equal(
      codeOf(() => parseNetworkConfig('{"Network":"10.244.0.0/30"}')),
      'FLANNEL_TS_ERR_INVALID_NETWORK_CONFIG',
    );
    assert.equal(
      codeOf(() => parseLeaseAttrs('{"PublicIP":null}')),
      'FLANNEL_TS_ERR_INVALID_LEASE_VALUE',
    );
    assert.equal(
      codeOf(() => parseEndpoints('ftp://e:2379')),
      'FLANNEL_TS_ERR_ETCD_OPTIONS',
    );
    assert.equal(
      codeOf(() => new JsonObjectSplitter().push(Buffer.from('x'))),
      'FLANNEL_TS_ERR_ETCD_PROTOCOL',
    );
    assert.equal(
      codeOf(() => dockerOpts({ FLANNEL_IPMASQ: 'maybe' })),
      'FLANNEL_TS_ERR_INVALID_SUBNET_FILE',
    );
  });
});
