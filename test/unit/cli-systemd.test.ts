import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { notifySystemdReady } from '../../src/agent/systemd.js';
import { createLogger } from '../../src/observability/log.js';

function capture(): { log: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger('debug', (l) => lines.push(JSON.parse(l) as Record<string, unknown>)), lines };
}

test('without NOTIFY_SOCKET nothing is run or logged', async () => {
  const { log, lines } = capture();
  await notifySystemdReady(log, { PATH: '/nonexistent' });
  assert.deepEqual(lines, []);
});

test('with NOTIFY_SOCKET, systemd-notify --ready --pid=<own pid> is run', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fts-notify-'));
  try {
    const record = join(dir, 'args');
    writeFileSync(join(dir, 'systemd-notify'), `#!/bin/sh\necho "$@ $NOTIFY_SOCKET" > ${record}\n`);
    chmodSync(join(dir, 'systemd-notify'), 0o755);
    const { log, lines } = capture();
    await notifySystemdReady(log, { PATH: dir, NOTIFY_SOCKET: '/run/systemd/notify' });
    assert.equal(readFileSync(record, 'utf8'), `--ready --pid=${process.pid} /run/systemd/notify\n`);
    assert.equal(lines.at(-1)?.['msg'], 'notified systemd: ready');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a missing systemd-notify is a warning, not a failure', async () => {
  const { log, lines } = capture();
  await notifySystemdReady(log, { PATH: '/nonexistent', NOTIFY_SOCKET: '/run/systemd/notify' });
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!['level'], 'warn');
  assert.match(String(lines[0]!['msg']), /systemd-notify could not run/);
});
