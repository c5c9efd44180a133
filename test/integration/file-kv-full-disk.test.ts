/**
 * The file registry and the subnet file on a full disk: a 256 KiB tmpfs mounted by the test in a
 * temp dir (unmounted afterwards, also when a test fails or the process is interrupted). A write
 * that cannot be made fails fast with a FileWriteError naming the file and "no space left on the
 * device (ENOSPC)"; it leaves no lock file, no temp file and no open descriptor behind, the
 * registry keeps its last good content, another writer is not kept waiting for a stale lock, and
 * once space is freed writes work again. A directory that cannot be created is named, with why.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FileKvStore } from '../../src/subnet/file-kv.js';
import { FileWriteError } from '../../src/subnet/file-writes.js';
import { writeSubnetEnv } from '../../src/subnet/subnet-env.js';
import { parseCidr } from '../../src/routing-table/ipv4.js';

/** Descriptors of this process open on a path under dir. */
function openUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir)) out.push(`${fd} -> ${target}`);
    } catch {
      // closed meanwhile (the readdir's own descriptor)
    }
  }
  return out;
}

function fillUp(dir: string): void {
  const chunk = Buffer.alloc(4096, 1);
  for (let i = 0; ; i++) {
    try {
      writeFileSync(join(dir, `filler-${i}`), chunk);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') return;
      throw err;
    }
  }
}

function isEnospc(err: unknown, path: RegExp): boolean {
  return (
    err instanceof FileWriteError &&
    err.code === 'FLANNEL_TS_ERR_FILE_WRITE' &&
    err.errno === 'ENOSPC' &&
    /no space left on the device \(ENOSPC\)/.test(err.message) &&
    path.test(err.message) &&
    !err.message.includes('\n')
  );
}

describe('the file registry on a full disk', { timeout: 60_000 }, () => {
  let base = '';
  let dir = '';
  let mounted = false;
  const unmount = (): void => {
    if (!mounted) return;
    try {
      execFileSync('umount', [dir], { stdio: 'pipe' });
    } catch {
      execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
    }
    mounted = false;
    rmSync(base, { recursive: true, force: true });
  };
  const onSignal = (): void => {
    unmount();
    process.exit(130);
  };

  before(() => {
    base = mkdtempSync(join(tmpdir(), 'fts-fulldisk-'));
    dir = join(base, 'mnt');
    execFileSync('mkdir', [dir]);
    process.on('exit', unmount);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0755', 'tmpfs', dir], { stdio: 'pipe' });
    mounted = true;
  });

  after(() => {
    unmount();
    process.removeListener('exit', unmount);
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  });

  test('a full disk: a precise error, no lock or temp file left, no descriptor leaked, content intact', async () => {
    const path = join(dir, 'registry.json');
    const store = new FileKvStore({ path, lockTimeoutMs: 3_000 });
    await store.put('/coreos.com/network/config', '{"Network":"10.244.0.0/16"}', 0);
    await store.put('/coreos.com/network/subnets/10.244.1.0-24', '{"PublicIP":"192.0.2.1"}', 60);
    fillUp(dir);

    const big = 'x'.repeat(64 * 1024);
    await assert.rejects(store.put('/coreos.com/network/subnets/10.244.2.0-24', big, 60), (err) =>
      isEnospc(err, /the file registry .*registry\.json|the lock .*registry\.json\.lock/),
    );
    assert.deepEqual(
      readdirSync(dir).filter((f) => !f.startsWith('filler-')),
      ['registry.json'],
      'no lock file and no temp file left',
    );
    assert.deepEqual(openUnder(dir), [], 'no descriptor left open');

    // Another writer fails as fast and as precisely: it is not kept waiting for a stale lock.
    const other = new FileKvStore({ path, lockTimeoutMs: 10_000 });
    const started = Date.now();
    await assert.rejects(other.put('/coreos.com/network/subnets/10.244.3.0-24', big, 60), (err) =>
      isEnospc(err, /registry\.json/),
    );
    assert.ok(Date.now() - started < 2_000, `failed fast: ${Date.now() - started} ms`);

    // The registry kept its content, readable by both.
    const listing = await other.list('/coreos.com/network/subnets/');
    assert.deepEqual(
      listing.kvs.map((k) => k.key),
      ['/coreos.com/network/subnets/10.244.1.0-24'],
    );
    assert.equal((await store.get('/coreos.com/network/config'))?.value, '{"Network":"10.244.0.0/16"}');

    // Not even room for an inode's first block: the lock itself cannot be written.
    await assert.rejects(store.delete('/coreos.com/network/config'), (err) => err instanceof FileWriteError);
    assert.deepEqual(openUnder(dir), [], 'no descriptor left open');
    assert.ok(!readdirSync(dir).includes('registry.json.lock'), 'no lock left');

    // Space freed: writes work again.
    for (const f of readdirSync(dir).filter((f) => f.startsWith('filler-'))) rmSync(join(dir, f));
    await store.put('/coreos.com/network/subnets/10.244.2.0-24', '{"PublicIP":"192.0.2.2"}', 60);
    assert.equal((await other.list('/coreos.com/network/subnets/')).kvs.length, 2);
    await store.close();
    await other.close();
  });

  test('the subnet file on a full disk, or in a directory that cannot be created: one precise line', async () => {
    const content = {
      network: parseCidr('10.244.0.0/16'),
      subnet: parseCidr('10.244.1.0/24'),
      mtu: 1472,
      ipMasq: false,
    };
    fillUp(dir);
    await assert.rejects(
      writeSubnetEnv(join(dir, 'run', 'subnet.env'), content),
      (err) =>
        err instanceof FileWriteError &&
        /^cannot write the subnet file .*\/run\/subnet\.env: no space left on the device \(ENOSPC\)$/.test(err.message),
    );
    assert.deepEqual(readdirSync(join(dir, 'run')), [], 'no temp file left');
    assert.deepEqual(openUnder(dir), [], 'no descriptor left open');
    writeFileSync(join(base, 'a-file'), '');
    await assert.rejects(
      writeSubnetEnv(join(base, 'a-file', 'flannel', 'subnet.env'), content),
      (err) => err instanceof FileWriteError && /a-file is not a directory/.test(err.message),
    );
    await assert.rejects(
      writeSubnetEnv('/proc/flannel-ts-test/subnet.env', content),
      (err) =>
        err instanceof FileWriteError &&
        /cannot create the directory \/proc\/flannel-ts-test for the subnet file: the file system at \/proc does not allow creating directories/.test(
          err.message,
        ),
    );
    for (const f of readdirSync(dir).filter((f) => f.startsWith('filler-'))) rmSync(join(dir, f));
  });
});
