// Command-line flags, flanneld style: Go's flag package accepts -flag and --flag, with
// "=value" or the value as the next argument. Bad flags are a FlagError (one line, exit 2).
import { parseArgs } from 'node:util';
import { contains, parseCidr, parseIPv4 } from '../routing-table/ipv4.js';

export class FlagError extends Error {}

export interface PeerFlag {
  readonly prefix: number;
  readonly prefixLen: number;
  readonly publicIp: number;
}

export interface StaticFlags {
  readonly network: { prefix: number; prefixLen: number };
  readonly subnet: { prefix: number; prefixLen: number };
  readonly publicIp: number | null;
  readonly ifaces: readonly string[];
  readonly peers: readonly PeerFlag[];
  readonly port: number;
  readonly batch: number;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
}

export type ParsedFlags = { kind: 'help' } | { kind: 'version' } | { kind: 'static'; flags: StaticFlags };

const options = {
  network: { type: 'string' },
  subnet: { type: 'string' },
  'public-ip': { type: 'string' },
  iface: { type: 'string', multiple: true },
  peer: { type: 'string', multiple: true },
  port: { type: 'string' },
  batch: { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const;

export const USAGE = `Usage: flannel-ts --network CIDR --subnet CIDR --peer CIDR=IP [--peer ...] [options]

Static mode: forwards between flannel0 and UDP with routes given on the command line.
  --network CIDR        the whole flannel network, e.g. 10.244.0.0/16 (routed via flannel0)
  --subnet CIDR         this host's subnet, e.g. 10.244.1.0/24 (flannel0 gets its .0 address as /32)
  --peer CIDR=IP        a peer host's subnet and its PublicIP (repeatable)
  --public-ip IP        this host's PublicIP (default: the external interface's address)
  --iface NAME|IP       external interface (repeatable; default: the default route's)
  --port N              UDP port, the same on every host (default 8285)
  --batch N             packets per batch, 1..1024 (default 64)
  --log-level LEVEL     debug|info|warn|error (default info)
  --version, --help
`;

/** flanneld spellings: "-iface eth0" and "-iface=eth0" become "--iface ...". */
function normalize(argv: readonly string[]): string[] {
  return argv.map((a) => (/^-[a-z][a-z-]+(=.*)?$/.test(a) ? '-' + a : a));
}

function cidr(flag: string, s: string): { prefix: number; prefixLen: number } {
  try {
    return parseCidr(s);
  } catch (err) {
    throw new FlagError(`--${flag}: ${(err as Error).message}`);
  }
}

function address(flag: string, s: string): number {
  try {
    return parseIPv4(s);
  } catch (err) {
    throw new FlagError(`--${flag}: ${(err as Error).message}`);
  }
}

function integer(flag: string, s: string | undefined, dflt: number, min: number, max: number): number {
  if (s === undefined) return dflt;
  if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > max) throw new FlagError(`--${flag}: "${s}" is not an integer in ${min}..${max}`);
  return Number(s);
}

export function parseFlags(argv: readonly string[]): ParsedFlags {
  let values: Record<string, unknown>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: normalize(argv), options, strict: true, allowPositionals: true }));
  } catch (err) {
    throw new FlagError((err as Error).message.split('\n')[0]!);
  }
  if (values.help) return { kind: 'help' };
  if (values.version) return { kind: 'version' };
  if (positionals.length > 0) throw new FlagError(`unexpected argument "${positionals[0]}"`);
  const str = (k: string) => values[k] as string | undefined;
  const list = (k: string) => (values[k] as string[] | undefined) ?? [];
  if (!str('network')) throw new FlagError('--network is required (e.g. --network 10.244.0.0/16)');
  if (!str('subnet')) throw new FlagError('--subnet is required (e.g. --subnet 10.244.1.0/24)');
  const network = cidr('network', str('network')!);
  const subnet = cidr('subnet', str('subnet')!);
  const inNetwork = (p: { prefix: number; prefixLen: number }) =>
    p.prefixLen >= network.prefixLen && contains(network.prefix, network.prefixLen, p.prefix);
  if (!inNetwork(subnet)) throw new FlagError(`--subnet ${str('subnet')} is not inside --network ${str('network')}`);
  if (subnet.prefixLen > 30) throw new FlagError(`--subnet ${str('subnet')}: a subnet must be /30 or larger`);
  const peers = list('peer').map((spec): PeerFlag => {
    const m = /^([^=]+)=([^=]+)$/.exec(spec);
    if (!m) throw new FlagError(`--peer "${spec}": expected CIDR=IP, e.g. 10.244.2.0/24=192.0.2.2`);
    const p = cidr('peer', m[1]!);
    if (!inNetwork(p)) throw new FlagError(`--peer ${m[1]} is not inside --network ${str('network')}`);
    const overlaps = contains(p.prefix, p.prefixLen, subnet.prefix) || contains(subnet.prefix, subnet.prefixLen, p.prefix);
    if (overlaps) throw new FlagError(`--peer ${m[1]} overlaps this host's --subnet ${str('subnet')}`);
    return { ...p, publicIp: address('peer', m[2]!) };
  });
  const logLevel = str('log-level') ?? 'info';
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) throw new FlagError(`--log-level: "${logLevel}" is not one of debug, info, warn, error`);
  return {
    kind: 'static',
    flags: {
      network,
      subnet,
      publicIp: str('public-ip') === undefined ? null : address('public-ip', str('public-ip')!),
      ifaces: list('iface'),
      peers,
      port: integer('port', str('port'), 8285, 1, 65535),
      batch: integer('batch', str('batch'), 64, 1, 1024),
      logLevel: logLevel as StaticFlags['logLevel'],
    },
  };
}
