/**
 * Naming, ownership and removal of the lab's network namespaces.
 *
 * A lab's namespaces share a per-run prefix: `ft` + 5 base36 characters (`ftk3v9q`), followed by
 * a role: `u` (underlay switch), `h1`..`h3` (hosts), `p1`..`p3` (pods). Before creating any
 * namespace a lab writes an ownership record `/run/flannel-ts-lab/<prefix>` holding its pid, so a
 * later run can tell a crashed lab's leftovers (owner dead) from a lab that is running right now
 * in another process (owner alive), which must be left alone.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { runSyncQuiet } from './exec.js';

const OWNER_DIR = '/run/flannel-ts-lab';
const PREFIX_PATTERN = /^ft[0-9a-z]{5}$/;
const NAMESPACE_PATTERN = /^(ft[0-9a-z]{5})(u|h[1-9]|p[1-9])$/;

export function newPrefix(): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';
  const bytes = randomBytes(5);
  let suffix = '';
  for (const b of bytes) suffix += alphabet[b % 36];
  return `ft${suffix}`;
}

export function recordOwner(prefix: string): void {
  mkdirSync(OWNER_DIR, { recursive: true });
  writeFileSync(join(OWNER_DIR, prefix), `${process.pid}\n`);
}

export function forgetOwner(prefix: string): void {
  rmSync(join(OWNER_DIR, prefix), { force: true });
}

function ownerAlive(prefix: string): boolean {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(join(OWNER_DIR, prefix), 'utf8'), 10);
  } catch {
    return false;
  }
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    // A killed owner may linger as a zombie until its parent reaps it: that is dead too.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Names of all network namespaces, as `ip netns list` shows them. */
export function listNamespaces(): string[] {
  return runSyncQuiet(['ip', 'netns', 'list'])
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name.length > 0);
}

/**
 * Kills every process inside each namespace, then deletes the namespaces. Synchronous, so it can
 * run from a process 'exit' handler. Errors are ignored: this is best-effort cleanup.
 */
export function deleteNamespacesSync(namespaces: readonly string[]): void {
  const existing = new Set(listNamespaces());
  for (const ns of namespaces) {
    if (!existing.has(ns)) continue;
    const pids = runSyncQuiet(['ip', 'netns', 'pids', ns])
      .split('\n')
      .map((s) => Number.parseInt(s, 10))
      .filter((pid) => Number.isInteger(pid) && pid > 0 && pid !== process.pid);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (const ns of namespaces) {
    if (existing.has(ns)) runSyncQuiet(['ip', 'netns', 'delete', ns]);
  }
}

/**
 * Removes namespaces left by lab runs whose owning process no longer exists (a crash, a SIGKILL).
 * Labs of live processes, and namespaces that do not follow the lab's naming, are never touched.
 * Returns the names removed.
 */
export function removeStaleLabNamespaces(): string[] {
  const stale: string[] = [];
  const stalePrefixes = new Set<string>();
  for (const ns of listNamespaces()) {
    const m = NAMESPACE_PATTERN.exec(ns);
    if (!m) continue;
    const prefix = m[1]!;
    let owned = true;
    try {
      readFileSync(join(OWNER_DIR, prefix));
    } catch {
      owned = false;
    }
    if (!owned || ownerAlive(prefix)) continue;
    stale.push(ns);
    stalePrefixes.add(prefix);
  }
  deleteNamespacesSync(stale);
  // Ownership records whose owner died and whose namespaces are gone.
  let records: string[];
  try {
    records = readdirSync(OWNER_DIR);
  } catch {
    records = [];
  }
  for (const prefix of records) {
    if (PREFIX_PATTERN.test(prefix) && (stalePrefixes.has(prefix) || !ownerAlive(prefix))) forgetOwner(prefix);
  }
  for (const prefix of stalePrefixes) rmSync(join('/tmp', `${prefix}-lab`), { recursive: true, force: true });
  return stale;
}

/** Directory for a lab's files (captures, subnet files); removed with the lab. */
export function labTempDir(prefix: string): string {
  return join('/tmp', `${prefix}-lab`);
}
