/**
 * Process-wide safety net: every live lab registers here, and if the process exits, or gets
 * SIGINT/SIGTERM/SIGHUP, before the lab was destroyed, its processes are killed and its
 * namespaces deleted synchronously. Callers still use try/finally + `lab.destroy()`; this only
 * covers the paths where that cannot run.
 */
import { constants } from 'node:os';

export interface SyncCleanup {
  cleanupSync(): void;
}

const live = new Set<SyncCleanup>();
let installed = false;

function cleanupAll(): void {
  for (const lab of [...live]) {
    live.delete(lab);
    try {
      lab.cleanupSync();
    } catch {
      // best effort: keep cleaning the others
    }
  }
}

function onSignal(signal: NodeJS.Signals): void {
  cleanupAll();
  // Exit as a process killed by that signal would be reported by a shell (128 + number).
  process.exit(128 + (constants.signals[signal] ?? 0));
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal);
}

export function registerLive(lab: SyncCleanup): void {
  install();
  live.add(lab);
}

export function unregisterLive(lab: SyncCleanup): void {
  live.delete(lab);
}
