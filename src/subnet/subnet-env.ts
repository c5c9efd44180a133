// The subnet file (`--subnet-file`, default /run/flannel/subnet.env) and the docker options that
// flannel's dist/mk-docker-opts.sh derives from it. See FLANNEL-UDP-SPEC.md §6.

import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { formatCidr, parseCidr } from '../routing-table/ipv4.js';
import type { Ipv4Net } from './config.js';

export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

export interface SubnetEnvContent {
  /** The config's Network. */
  readonly network: Ipv4Net;
  /** The leased subnet (network address); the file gets its first usable address. */
  readonly subnet: Ipv4Net;
  /** flannel0's MTU: external MTU - 28. */
  readonly mtu: number;
  readonly ipMasq: boolean;
}

/** The file's exact text: four lines, flannel's order, each ending in "\n". */
export function formatSubnetEnv(c: SubnetEnvContent): string {
  const firstUsable = (c.subnet.prefix + 1) >>> 0;
  return (
    `FLANNEL_NETWORK=${formatCidr(c.network.prefix, c.network.prefixLen)}\n` +
    `FLANNEL_SUBNET=${formatCidr(firstUsable, c.subnet.prefixLen)}\n` +
    `FLANNEL_MTU=${c.mtu}\n` +
    `FLANNEL_IPMASQ=${c.ipMasq ? 'true' : 'false'}\n`
  );
}

/**
 * Writes the subnet file atomically: the directory is created (0755), the text goes to a temporary
 * file in the same directory, which gets mode 0644 whatever the umask, is fsynced, then renamed over
 * the target. Readers see either the old file or the new one, never a partial one.
 */
export async function writeSubnetEnv(path: string, c: SubnetEnvContent): Promise<void> {
  await writeFileAtomically(path, formatSubnetEnv(c), 0o644);
}

/** Atomic replace of `path` (temp file in the same directory + rename). Shared with file-kv. */
export async function writeFileAtomically(path: string, text: string, mode: number): Promise<void> {
  const dir = dirname(path);
  await makeDirectory(dir);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await chmod(tmp, mode);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** mkdir -p with mode 0755 whatever the umask, applied only to the directories it creates. */
async function makeDirectory(dir: string): Promise<void> {
  const firstCreated = await mkdir(dir, { recursive: true, mode: 0o755 });
  if (firstCreated === undefined) return;
  const created: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    created.push(d);
    if (d === firstCreated || dirname(d) === d) break;
  }
  for (const d of created.reverse()) await chmod(d, 0o755);
}

/**
 * Parses env-file text the tolerant way flannel's godotenv reader is used: `KEY=VALUE` lines, an
 * optional `export ` prefix, `#` comments, single or double quotes around the value. Lines that are
 * not assignments are skipped. Later assignments win.
 */
export function parseEnvText(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const rawLine of text.split(/\r?\n/)) {
    let line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('export ')) line = line.slice('export '.length).trim();
    const m = /^([A-Za-z_][A-Za-z0-9_.]*)\s*[=:]\s*(.*)$/.exec(line);
    if (m === null) continue;
    vars.set(m[1]!, unquote(m[2]!));
  }
  return vars;
}

function unquote(v: string): string {
  const q = v[0];
  if ((q === '"' || q === "'") && v.length >= 2) {
    const end = v.indexOf(q, 1);
    if (end > 0) return v.slice(1, end);
  }
  // Unquoted: an inline comment starts at " #".
  const hash = v.search(/\s#/);
  return (hash >= 0 ? v.slice(0, hash) : v).trim();
}

/**
 * FLANNEL_SUBNET as the previous subnet: "10.244.7.1/24" -> 10.244.7.0/24 (host bits cleared, as
 * net.ParseCIDR does). A comma-separated list with more than one value, or anything unparsable, gives
 * null (flannel logs it and ignores it).
 */
export function previousSubnetFromEnv(vars: ReadonlyMap<string, string>): Ipv4Net | null {
  const raw = vars.get('FLANNEL_SUBNET');
  if (raw === undefined) return null;
  const parts = raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (parts.length !== 1) return null;
  try {
    return parseCidr(parts[0]!);
  } catch {
    return null;
  }
}

/** Reads the subnet file's variables; null when the file does not exist. */
export async function readSubnetEnv(path: string): Promise<Map<string, string> | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  return parseEnvText(text);
}

/** Reads the previous subnet from the subnet file; null when absent or unreadable. */
export async function readPreviousSubnet(path: string): Promise<Ipv4Net | null> {
  try {
    const vars = await readSubnetEnv(path);
    return vars === null ? null : previousSubnetFromEnv(vars);
  } catch {
    return null;
  }
}

export interface DockerOptsOptions {
  /** `-k KEY`: name of the combined variable (default DOCKER_OPTS). */
  readonly key?: string;
  /** `-i`: write the individual DOCKER_OPT_* variables. */
  readonly individual?: boolean;
  /** `-c`: write the combined variable. Neither -i nor -c means both. */
  readonly combined?: boolean;
  /** `-m`: leave out --ip-masq. */
  readonly omitIpMasq?: boolean;
}

/**
 * The text flannel's dist/mk-docker-opts.sh (v0.17.0, POSIX sh) writes to its output file, given
 * the variables it sees: the caller's environment overlaid with the subnet file's assignments.
 * Throws "Invalid value of FLANNEL_IPMASQ: X" where the script exits 1.
 *
 * The script's rules, followed here: DOCKER_OPT_BIP, _IPMASQ (inverted: when flannel masquerades,
 * docker must not) and _MTU are set only from non-empty FLANNEL_SUBNET, FLANNEL_IPMASQ (unless -m),
 * FLANNEL_MTU; then every variable whose name holds "DOCKER_OPT_" (it greps `set`), those of the
 * environment too, is written in `set`'s order (by name), its value as an unquoted `echo` prints it
 * (whitespace runs become one space); the combined variable is the existing `$KEY` plus a space if
 * non-empty, then " value" per option.
 */
export function dockerOpts(
  env: ReadonlyMap<string, string> | Readonly<Record<string, string>>,
  options: DockerOptsOptions = {},
): string {
  const vars = new Map<string, string>(env instanceof Map ? env : Object.entries(env as Record<string, string>));
  const get = (name: string): string => vars.get(name) ?? '';
  const key = options.key ?? 'DOCKER_OPTS';
  let individual = options.individual === true;
  let combined = options.combined === true;
  if (!individual && !combined) {
    individual = true;
    combined = true;
  }

  const subnet = get('FLANNEL_SUBNET');
  if (subnet !== '') vars.set('DOCKER_OPT_BIP', `--bip=${subnet}`);
  const mtu = get('FLANNEL_MTU');
  if (mtu !== '') vars.set('DOCKER_OPT_MTU', `--mtu=${mtu}`);
  const ipMasq = get('FLANNEL_IPMASQ');
  if (ipMasq !== '' && options.omitIpMasq !== true) {
    if (ipMasq === 'true') vars.set('DOCKER_OPT_IPMASQ', '--ip-masq=false');
    else if (ipMasq === 'false') vars.set('DOCKER_OPT_IPMASQ', '--ip-masq=true');
    else throw new Error(`Invalid value of FLANNEL_IPMASQ: ${ipMasq}`);
  }

  const names = [...vars.keys()].filter((name) => name.includes('DOCKER_OPT_')).sort();
  const existing = get(key);
  let combinedValue = existing !== '' ? `${existing} ` : '';
  let out = '';
  for (const name of names) {
    const value = echoed(vars.get(name)!);
    if (individual) out += `${name}="${value}"\n`;
    combinedValue += ` ${value}`;
  }
  if (combined) out += `${key}="${combinedValue}"\n`;
  return out;
}

/** What `echo $VALUE` prints (without the newline): the words of VALUE joined by single spaces. */
function echoed(value: string): string {
  return value
    .split(/[ \t\n]+/)
    .filter((word) => word !== '')
    .join(' ');
}
