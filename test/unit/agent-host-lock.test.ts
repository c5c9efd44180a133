// The host lock: an abstract unix socket (per network namespace), released with its holder, naming
// the holder to whoever is refused. Each test uses a name of its own, so that it never meets a real
// agent's lock.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { HostLockHeldError, takeHostLock } from '../../src/agent/host-lock.js';

const uniqueName = (): string => `flannel-ts-test/${process.pid}/${randomBytes(4).toString('hex')}`;

test('a second taker is refused with the holder named; after release the lock can be taken again', async () => {
  const name = uniqueName();
  const first = await takeHostLock('static', name);
  await assert.rejects(takeHostLock('flanneld', name), (err: unknown) => {
    assert.ok(err instanceof HostLockHeldError);
    assert.equal(err.code, 'FLANNEL_TS_ERR_HOST_LOCKED');
    assert.equal(err.holder?.pid, process.pid);
    assert.equal(err.holder?.mode, 'static');
    assert.match(
      err.message,
      new RegExp(
        `^another flannel-ts agent runs in this network namespace: pid ${process.pid} \\(static mode, since \\d{4}-`,
      ),
    );
    return true;
  });
  await first.release();
  const again = await takeHostLock('flanneld', name);
  await again.release();
});

test('a killed holder leaves no stale lock', async () => {
  const name = uniqueName();
  const hostLock = fileURLToPath(new URL('../../src/agent/host-lock.js', import.meta.url));
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const m = await import(${JSON.stringify(hostLock)}); await m.takeHostLock('static', ${JSON.stringify(name)}); console.log('held'); setInterval(() => {}, 1000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
  await assert.rejects(
    takeHostLock('static', name),
    (err: unknown) => err instanceof HostLockHeldError && err.holder?.pid === child.pid,
  );
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const lock = await takeHostLock('static', name);
  await lock.release();
});
