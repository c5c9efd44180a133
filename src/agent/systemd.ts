// systemd Type=notify readiness. Node cannot send datagrams on a unix socket, so the agent runs
// `systemd-notify --ready --pid=<own pid>` when NOTIFY_SOCKET is set. systemd then receives the
// message from the helper's pid, so the unit needs NotifyAccess=all (see docs/agent.md, "systemd").
import { spawn } from 'node:child_process';
import type { Logger } from '../observability/log.js';

/** Tells systemd the agent is ready, if it runs under Type=notify. Never throws. */
export function notifySystemdReady(log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  if (!env['NOTIFY_SOCKET']) return Promise.resolve();
  return new Promise((resolve) => {
    const child = spawn('systemd-notify', ['--ready', `--pid=${process.pid}`], { stdio: 'ignore', env });
    child.once('error', (err) => {
      log.warn('NOTIFY_SOCKET is set but systemd-notify could not run', { error: err.message });
      resolve();
    });
    child.once('exit', (code) => {
      if (code !== 0) log.warn('systemd-notify --ready failed', { exitCode: code });
      else log.info('notified systemd: ready');
      resolve();
    });
  });
}
