// One flannel-owned iptables chain, hooked into a built-in chain by a single jump rule (flannel's
// FLANNEL-POSTRTG and FLANNEL-FWD). Two halves:
//  - pure: the rules as iptables-save lines and the iptables-restore payloads that install or
//    remove them (unit-tested against the exact text);
//  - thin: running iptables-save / iptables-restore --noflush, optionally behind a command prefix
//    (e.g. `ip netns exec NS`) so tests can act inside their own namespace.
//
// Installing is idempotent and atomic per table: the payload declares the chain, which under
// --noflush empties it, then appends its rules, so the chain always ends up exactly as generated
// (stale rules from an older network or subnet vanish), and appends the jump only if absent.
// Control plane only; nothing here is on the packet path.

import { spawn } from 'node:child_process';
import { FlannelTsError } from '../errors.js';

export type IptablesTable = 'nat' | 'filter';

export interface IptablesRule {
  readonly chain: string;
  /** Match and target arguments, in iptables-save's canonical order (so lines compare exactly). */
  readonly spec: readonly string[];
}

export interface ManagedChain {
  readonly table: IptablesTable;
  /** The chain flannel owns, e.g. FLANNEL-POSTRTG. */
  readonly chain: string;
  /** The rule in a built-in chain that jumps to `chain`. */
  readonly jump: IptablesRule;
  /** The chain's rules, in order. */
  readonly rules: readonly IptablesRule[];
}

/** One argument as iptables-save writes it: quoted when it holds anything but plain characters. */
function quoteArg(arg: string): string {
  return /^[A-Za-z0-9_./:!+-]+$/.test(arg) ? arg : `"${arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** The rule as iptables-save prints it, e.g. `-A FLANNEL-FWD -s 10.244.0.0/16 ... -j ACCEPT`. */
export function ruleLine(rule: IptablesRule): string {
  return ['-A', rule.chain, ...rule.spec].map((a, i) => (i < 2 ? a : quoteArg(a))).join(' ');
}

/** Every line a correctly installed chain shows in iptables-save: the jump, then the rules. */
export function chainLines(chain: ManagedChain): string[] {
  return [ruleLine(chain.jump), ...chain.rules.map(ruleLine)];
}

/** The lines of `table` in an iptables-save dump (rules only: `-A ...`). */
export function tableRuleLines(save: string, table: IptablesTable): string[] {
  const lines: string[] = [];
  let inTable = false;
  for (const raw of save.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) inTable = line === `*${table}`;
    else if (line === 'COMMIT') inTable = false;
    else if (inTable && line.startsWith('-A ')) lines.push(line);
  }
  return lines;
}

/** The chains declared in `table` of an iptables-save dump. */
export function tableChains(save: string, table: IptablesTable): Set<string> {
  const chains = new Set<string>();
  let inTable = false;
  for (const raw of save.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) inTable = line === `*${table}`;
    else if (line === 'COMMIT') inTable = false;
    else if (inTable && line.startsWith(':')) chains.add(line.slice(1).split(' ', 1)[0]);
  }
  return chains;
}

/** What of `chain` is currently installed, read from an iptables-save dump of its table. */
export interface InstalledState {
  readonly chainExists: boolean;
  /** How many copies of the jump rule the built-in chain holds. */
  readonly jumps: number;
  /** The lines currently in the owned chain, in order. */
  readonly rules: string[];
}

export function installedState(save: string, chain: ManagedChain): InstalledState {
  const lines = tableRuleLines(save, chain.table);
  const jump = ruleLine(chain.jump);
  return {
    chainExists: tableChains(save, chain.table).has(chain.chain),
    jumps: lines.filter((l) => l === jump).length,
    rules: lines.filter((l) => l.startsWith(`-A ${chain.chain} `)),
  };
}

/** True when the chain holds exactly its rules, in order, and exactly one jump leads to it. */
export function isInPlace(state: InstalledState, chain: ManagedChain): boolean {
  const want = chain.rules.map(ruleLine);
  return (
    state.chainExists &&
    state.jumps === 1 &&
    state.rules.length === want.length &&
    state.rules.every((l, i) => l === want[i])
  );
}

/**
 * iptables-restore --noflush input that makes the chain exactly as generated, with exactly one
 * jump (an existing jump keeps its position; duplicates are deleted).
 */
export function installPayload(chain: ManagedChain, state: InstalledState): string {
  const lines = [`*${chain.table}`, `:${chain.chain} - [0:0]`];
  if (state.jumps === 0) lines.push(ruleLine(chain.jump));
  for (let i = 1; i < state.jumps; i++) lines.push(jumpDeleteLine(chain));
  for (const rule of chain.rules) lines.push(ruleLine(rule));
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** Deletes the first copy of the jump rule (iptables -D by rule spec). */
function jumpDeleteLine(chain: ManagedChain): string {
  return ruleLine(chain.jump).replace(/^-A /, '-D ');
}

/** iptables-restore --noflush input that removes every jump and the chain; null if nothing is there. */
export function removePayload(chain: ManagedChain, state: InstalledState): string | null {
  if (state.jumps === 0 && !state.chainExists) return null;
  const lines = [`*${chain.table}`];
  for (let i = 0; i < state.jumps; i++) lines.push(jumpDeleteLine(chain));
  if (state.chainExists) lines.push(`-F ${chain.chain}`, `-X ${chain.chain}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

// ---- the thin layer: running iptables ----

export interface IptablesRunOptions {
  /**
   * Prepended to every command, e.g. ['ip', 'netns', 'exec', 'ns1'] to act inside a namespace.
   * Default: none (the agent's own namespace).
   */
  readonly commandPrefix?: readonly string[];
}

/** Seconds iptables-restore waits for the xtables lock (legacy backend) before failing. */
const LOCK_WAIT_SECONDS = 10;
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** iptables-save or iptables-restore failed (missing, refused the rules, the xtables lock timed out). */
export class IptablesError extends FlannelTsError {
  override name = 'IptablesError';
  override readonly code = 'FLANNEL_TS_ERR_IPTABLES';
}

/** PATH with the sbin directories, where iptables lives, even for a non-root login's PATH. */
function pathWithSbin(): string {
  const dirs = (process.env.PATH ?? '').split(':').filter(Boolean);
  for (const d of SBIN_DIRS) if (!dirs.includes(d)) dirs.push(d);
  return dirs.join(':');
}

const IPTABLES_TIMEOUT_MS = 30_000;

/** Runs one command; resolves with stdout, rejects with a message carrying the tool's stderr. */
export function runIptables(
  argv: readonly string[],
  options: IptablesRunOptions = {},
  input?: string,
): Promise<string> {
  const full = [...(options.commandPrefix ?? []), ...argv];
  const tool = argv[0];
  return new Promise((resolve, reject) => {
    const child = spawn(full[0], full.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PATH: pathWithSbin() },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err: NodeJS.ErrnoException) => {
      reject(
        err.code === 'ENOENT'
          ? new IptablesError(`${full[0]} not found: install the iptables package (apt-get install iptables)`)
          : new IptablesError(`${full.join(' ')}: ${err.message}`),
      );
    });
    // A hung iptables (a held xtables lock, a wedged kernel) must not hold the agent's rule
    // upkeep, or its shutdown, forever.
    const timer = setTimeout(() => child.kill('SIGKILL'), IPTABLES_TIMEOUT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) {
        resolve(stdout);
        return;
      }
      const detail = stderr.trim() || (signal ? `killed by ${signal}` : `exit status ${code}`);
      // Under a prefix (ip netns exec) a missing tool shows up as the prefix's exec failure.
      const missing = /No such file or directory/.test(stderr) && /exec/.test(stderr);
      reject(
        new IptablesError(
          missing
            ? `${tool} not found: install the iptables package (apt-get install iptables) (${detail})`
            : `${full.join(' ')} failed: ${detail}`,
        ),
      );
    });
    child.stdin.on('error', () => {
      // The child exited before reading its input: 'close' reports why.
    });
    child.stdin.end(input ?? '');
  });
}

export async function readInstalledState(
  chain: ManagedChain,
  options: IptablesRunOptions = {},
): Promise<InstalledState> {
  const save = await runIptables(['iptables-save', '-t', chain.table], options);
  return installedState(save, chain);
}

/** Makes the chain exactly as generated; does nothing when it already is. Idempotent. */
export async function ensureChain(chain: ManagedChain, options: IptablesRunOptions = {}): Promise<void> {
  const state = await readInstalledState(chain, options);
  if (isInPlace(state, chain)) return;
  await runIptables(
    ['iptables-restore', `--wait=${LOCK_WAIT_SECONDS}`, '--noflush'],
    options,
    installPayload(chain, state),
  );
}

/** Removes the jump(s) and the chain; does nothing when neither is there. Idempotent. */
export async function removeChain(chain: ManagedChain, options: IptablesRunOptions = {}): Promise<void> {
  const state = await readInstalledState(chain, options);
  const payload = removePayload(chain, state);
  if (payload === null) return;
  await runIptables(['iptables-restore', `--wait=${LOCK_WAIT_SECONDS}`, '--noflush'], options, payload);
}

/**
 * Whether this iptables accepts MASQUERADE --random-fully: version 1.6.2 or later, the test
 * flannel (go-iptables) applies.
 */
export async function iptablesSupportsRandomFully(options: IptablesRunOptions = {}): Promise<boolean> {
  const out = await runIptables(['iptables', '--version'], options);
  return versionSupportsRandomFully(out);
}

/** Parses `iptables --version` output ("iptables v1.8.9 (nf_tables)"). */
export function versionSupportsRandomFully(versionOutput: string): boolean {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(versionOutput);
  if (!m) return false;
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return major > 1 || (major === 1 && (minor > 6 || (minor === 6 && patch >= 2)));
}
