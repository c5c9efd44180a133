/**
 * Running commands inside network namespaces.
 *
 * Every command goes through `ip netns exec NS argv...` (which execs argv after setns, so the
 * child's pid is the command's own pid and signals reach it directly). Nothing here touches the
 * root namespace's network configuration.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { FlannelTsError } from '../errors.js';

/** PATH with the sbin directories, where ip, sysctl and tcpdump live, even for a non-login shell. */
const LAB_PATH = [
  ...(process.env['PATH'] ?? '').split(':').filter((d) => d.length > 0),
  '/usr/local/sbin',
  '/usr/sbin',
  '/sbin',
]
  .filter((d, i, all) => all.indexOf(d) === i)
  .join(':');
const LAB_ENV = { ...process.env, PATH: LAB_PATH };

/** Debian packages that provide the tools the lab uses, for error messages. */
const TOOL_PACKAGES: Record<string, string> = {
  ip: 'iproute2',
  bridge: 'iproute2',
  ss: 'iproute2',
  sysctl: 'procps',
  ping: 'iputils-ping',
  iperf3: 'iperf3',
  tcpdump: 'tcpdump',
  etcd: 'etcd-server',
  etcdctl: 'etcd-client',
  openssl: 'openssl',
  iptables: 'iptables',
  'iptables-save': 'iptables',
  'iptables-restore': 'iptables',
  socat: 'socat',
  cc: 'build-essential',
  python3: 'python3',
  taskset: 'util-linux',
};

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit code; -1 when the process was killed by a signal. */
  code: number;
}

/** A command the lab ran exited with a non-zero status. */
export class CommandError extends FlannelTsError {
  override name = 'CommandError';
  override readonly code = 'FLANNEL_TS_ERR_LAB_COMMAND';
  constructor(
    readonly argv: readonly string[],
    readonly result: ExecResult,
  ) {
    super(`command failed (exit ${result.code}): ${argv.join(' ')}\n${result.stderr.trim() || result.stdout.trim()}`);
  }
}

/** argv that runs `argv` inside namespace `ns`. */
export function inNamespace(ns: string, argv: readonly string[]): string[] {
  return ['ip', 'netns', 'exec', ns, ...argv];
}

/** Runs argv (in the caller's namespace) and resolves with its output; never rejects on exit code. */
export function run(argv: readonly string[], timeoutMs = 60_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(
      argv[0]!,
      argv.slice(1),
      { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8', env: LAB_ENV },
      (error, stdout, stderr) => {
        let code = 0;
        if (error) {
          const e = error as NodeJS.ErrnoException & { code?: unknown };
          code = typeof e.code === 'number' ? e.code : -1;
          if (e.code === 'ENOENT') stderr = `${stderr}${argv[0]}: not found`;
        }
        resolve({ stdout, stderr, code });
      },
    );
  });
}

/** Like run(), but rejects with CommandError on a non-zero exit. */
export async function runChecked(argv: readonly string[], timeoutMs?: number): Promise<ExecResult> {
  const result = await run(argv, timeoutMs);
  if (result.code !== 0) throw new CommandError(argv, result);
  return result;
}

/** Synchronous variant for exit handlers; returns stdout or '' on any failure. */
export function runSyncQuiet(argv: readonly string[]): string {
  try {
    return execFileSync(argv[0]!, argv.slice(1), {
      encoding: 'utf8',
      env: LAB_ENV,
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
    });
  } catch {
    return '';
  }
}

/** Starts argv inside `ns` with piped stdout/stderr. */
export function spawnIn(ns: string, argv: readonly string[]): ChildProcess {
  const full = inNamespace(ns, argv);
  return spawn(full[0]!, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: LAB_ENV });
}

/** Resolves when `child` has exited (immediately if it already has). */
export function waitForExit(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

/** Sends `signal`, then SIGKILL if the process is still alive after `graceMs`. */
export async function terminate(
  child: ChildProcess,
  signal: NodeJS.Signals = 'SIGTERM',
  graceMs = 3000,
): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = waitForExit(child);
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Checks, for `who` ("the network lab", "the etcd tests", ...), that each tool is on PATH (sbin
 * included) and that we are root; throws one error naming every missing tool and its Debian
 * package. Tests call it first: a missing tool fails them, it never skips them.
 */
export function requireToolsFor(who: string, tools: readonly string[]): void {
  const dirs = LAB_PATH.split(':');
  const found = (tool: string) =>
    dirs.some((dir) => {
      try {
        accessSync(join(dir, tool), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  const missing = tools.filter((t) => !found(t));
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((t) => TOOL_PACKAGES[t]).filter((p) => p !== undefined))];
    throw new Error(
      `${who} needs these tools, which are not installed: ${missing.join(', ')}` +
        (packages.length > 0 ? ` (apt-get install ${packages.join(' ')})` : ''),
    );
  }
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new Error(`${who} needs root (it creates network namespaces)`);
  }
}

/** requireToolsFor('the network lab', tools), kept async for its callers. */
export async function requireTools(tools: readonly string[]): Promise<void> {
  requireToolsFor('the network lab', tools);
}
