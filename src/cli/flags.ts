// Command-line flags, flanneld style. Go's flag package rules: -flag and --flag, "=value" or the
// value as the next argument; a boolean flag takes no next argument, only "=value" (Go's ParseBool
// spellings); the last of a repeated single-value flag wins. Bad flags are a FlagError (one line,
// exit 2).
//
// Two modes:
// - static: --network/--subnet/--peer on the command line select it (routes from the command line);
// - registry (flanneld): config, leases and routes from etcd (--etcd-*) or from the embedded file
//   registry (--kv-file). Flags not given on the command line are read from FLANNELD_<UPPER_SNAKE>
//   environment variables, as flanneld does (e.g. FLANNELD_ETCD_ENDPOINTS, FLANNELD_IP_MASQ=true).
//   The environment is not consulted in static mode.
import type { Offloads } from '../backend/udp-datapath.js';
import { ETCD_APIS, type EtcdApi } from '../agent/etcd-api.js';
import { DATAPATH_CHOICES, type DatapathChoice } from '../fastpath/fast-path.js';
import { isIPv4 } from 'node:net';
import { parseEndpoints } from '../etcd/options.js';
import { unknownFlagMessage } from './flag-suggest.js';
import { contains, parseCidr, parseIPv4 } from '../routing-table/ipv4.js';
import { DEFAULT_ETCD_PREFIX } from '../subnet/lease.js';
import { DEFAULT_RENEW_MARGIN_MINUTES } from '../subnet/lease-manager.js';
import { DEFAULT_SUBNET_FILE } from '../subnet/subnet-env.js';
import { FlannelTsError } from '../errors.js';
import { hostBitsProblem, networkProblem, peersProblem } from './static-checks.js';

/** A bad command-line flag or flag value: one line on stderr, exit 2. */
export class FlagError extends FlannelTsError {
  override name = 'FlagError';
  override readonly code = 'FLANNEL_TS_ERR_INVALID_FLAG';
}

/** --datapath-wait: a thread of its own waiting in io_uring, or the main thread's event loop. */
export type DatapathWait = 'io-uring' | 'event-loop';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

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
  /** Which offloads to negotiate (--offloads; --no-offload = none). */
  readonly offloads: Offloads;
  /** flannel0 I/O through io_uring where available (--io-uring=false: plain syscalls). */
  readonly ioUring: boolean;
  /** Forwarding threads: 1 (the main thread) or 2 (a worker per direction). */
  readonly workers: 1 | 2;
  /** --datapath: the kernel fast path where it loads (auto, the default), always (kernel), never (userspace). */
  readonly datapath: DatapathChoice;
  /** How one forwarding lane waits for packets (--datapath-wait); --workers 2 always uses event loops. */
  readonly datapathWait: DatapathWait;
  /** The scheduler time slice of forwarding worker threads, µs (--datapath-slice-us; 0 = the default). */
  readonly datapathSliceUs: number;
  /** µs the forwarding thread busy-polls before it sleeps, after traffic (--datapath-spin-us; 0 = never). */
  readonly datapathSpinUs: number;
  readonly logLevel: LogLevel;
}

export type RegistryStoreFlags =
  | {
      readonly kind: 'etcd';
      /** Comma-separated URLs, as given (validated). */
      readonly endpoints: string;
      /** --etcd-api: which etcd API holds the registry (auto: where the config is, v3 first). */
      readonly api: EtcdApi;
      readonly caFile?: string;
      readonly certFile?: string;
      readonly keyFile?: string;
      readonly username?: string;
      readonly password?: string;
    }
  | { readonly kind: 'file'; readonly path: string };

export interface RegistryFlags {
  readonly store: RegistryStoreFlags;
  readonly prefix: string;
  readonly ifaces: readonly string[];
  readonly ifaceRegexes: readonly RegExp[];
  readonly publicIp: number | null;
  readonly subnetFile: string;
  readonly renewMarginMinutes: number;
  readonly ipMasq: boolean;
  readonly healthzIp: string;
  /** 0: no health server. */
  readonly healthzPort: number;
  readonly iptablesForwardRules: boolean;
  readonly batch: number;
  /** Which offloads to negotiate (--offloads; --no-offload = none). */
  readonly offloads: Offloads;
  /** flannel0 I/O through io_uring where available (--io-uring=false: plain syscalls). */
  readonly ioUring: boolean;
  /** Forwarding threads: 1 (the main thread) or 2 (a worker per direction). */
  readonly workers: 1 | 2;
  /** --datapath: the kernel fast path where it loads (auto, the default), always (kernel), never (userspace). */
  readonly datapath: DatapathChoice;
  /** How one forwarding lane waits for packets (--datapath-wait); --workers 2 always uses event loops. */
  readonly datapathWait: DatapathWait;
  /** The scheduler time slice of forwarding worker threads, µs (--datapath-slice-us; 0 = the default). */
  readonly datapathSliceUs: number;
  /** µs the forwarding thread busy-polls before it sleeps, after traffic (--datapath-spin-us; 0 = never). */
  readonly datapathSpinUs: number;
  readonly logLevel: LogLevel;
}

export type ParsedFlags =
  | { kind: 'help' }
  | { kind: 'version' }
  | { kind: 'static'; flags: StaticFlags }
  | { kind: 'registry'; flags: RegistryFlags };

type FlagType = 'string' | 'list' | 'bool';
/** static: only in static mode; registry: only in flanneld mode; both: either. */
type FlagMode = 'static' | 'registry' | 'both';

interface FlagSpec {
  readonly type: FlagType;
  readonly mode: FlagMode;
}

const FLAGS: Readonly<Record<string, FlagSpec>> = {
  // static mode
  network: { type: 'string', mode: 'static' },
  subnet: { type: 'string', mode: 'static' },
  peer: { type: 'list', mode: 'static' },
  port: { type: 'string', mode: 'static' },
  // both modes
  'public-ip': { type: 'string', mode: 'both' },
  iface: { type: 'list', mode: 'both' },
  batch: { type: 'string', mode: 'both' },
  'no-offload': { type: 'bool', mode: 'both' },
  offloads: { type: 'string', mode: 'both' },
  'io-uring': { type: 'bool', mode: 'both' },
  workers: { type: 'string', mode: 'both' },
  datapath: { type: 'string', mode: 'both' },
  'datapath-wait': { type: 'string', mode: 'both' },
  'datapath-slice-us': { type: 'string', mode: 'both' },
  'datapath-spin-us': { type: 'string', mode: 'both' },
  'log-level': { type: 'string', mode: 'both' },
  v: { type: 'string', mode: 'both' },
  // flanneld mode
  'etcd-endpoints': { type: 'string', mode: 'registry' },
  'etcd-prefix': { type: 'string', mode: 'registry' },
  'etcd-api': { type: 'string', mode: 'registry' },
  'etcd-cafile': { type: 'string', mode: 'registry' },
  'etcd-certfile': { type: 'string', mode: 'registry' },
  'etcd-keyfile': { type: 'string', mode: 'registry' },
  'etcd-username': { type: 'string', mode: 'registry' },
  'etcd-password': { type: 'string', mode: 'registry' },
  'kv-file': { type: 'string', mode: 'registry' },
  'iface-regex': { type: 'list', mode: 'registry' },
  'subnet-file': { type: 'string', mode: 'registry' },
  'subnet-lease-renew-margin': { type: 'string', mode: 'registry' },
  'ip-masq': { type: 'bool', mode: 'registry' },
  'healthz-ip': { type: 'string', mode: 'registry' },
  'healthz-port': { type: 'string', mode: 'registry' },
  'iptables-forward-rules': { type: 'bool', mode: 'registry' },
  help: { type: 'bool', mode: 'both' },
  version: { type: 'bool', mode: 'both' },
};

const STATIC_SELECTORS = ['network', 'subnet', 'peer'];
const ETCD_FLAGS = [
  'etcd-endpoints',
  'etcd-api',
  'etcd-cafile',
  'etcd-certfile',
  'etcd-keyfile',
  'etcd-username',
  'etcd-password',
];

export const DEFAULT_ETCD_ENDPOINTS = 'http://127.0.0.1:4001,http://127.0.0.1:2379';

const RENEW_MARGIN = DEFAULT_RENEW_MARGIN_MINUTES;

export const USAGE = `Usage:
  flannel-ts [--etcd-endpoints URLS | --kv-file PATH] [options]      flanneld mode
  flannel-ts --network CIDR --subnet CIDR --peer CIDR=IP [...]        static mode
  flannel-ts mk-docker-opts [-f FILE] [-d FILE] [-i] [-c] [-m] [-k KEY]
      flannel's mk-docker-opts.sh (docs/tutorials.md)

flanneld mode: network config, subnet lease and routes from etcd (or the embedded file registry).
  The backend is the network config's Backend.Type: udp (flannel0 and flannel-ts's datapath),
  vxlan (kernel VXLAN, flannel.<VNI>) or host-gw (kernel routes via each host's PublicIP).
  --etcd-endpoints URLS        comma-separated (default ${DEFAULT_ETCD_ENDPOINTS})
  --etcd-api auto|v2|v3        etcd API of the registry (default auto: where the config is, v3 first, then v2)
  --etcd-prefix PATH           registry prefix (default ${DEFAULT_ETCD_PREFIX})
  --etcd-cafile/--etcd-certfile/--etcd-keyfile FILE   TLS for https endpoints
  --etcd-username/--etcd-password                     etcd authentication
  --kv-file PATH               use the embedded file registry at PATH instead of etcd
  --iface NAME|IP              external interface (repeatable, first match wins)
  --iface-regex RE             external interface by regex on its addresses, then names (repeatable)
  --public-ip IP               PublicIP to announce (default: the interface's address)
  --subnet-file PATH           where to write the subnet env (default ${DEFAULT_SUBNET_FILE})
  --subnet-lease-renew-margin M   renew M minutes before the lease expires, 1..1439 (default ${RENEW_MARGIN})
  --ip-masq                    set up IP masquerade for traffic leaving the flannel network
  --iptables-forward-rules     add FORWARD accept rules for the network (default true)
  --healthz-ip IP              health/metrics server address (default 0.0.0.0)
  --healthz-port N             health/metrics server port (default 0: disabled)
  Every flanneld-mode flag not given may come from FLANNELD_<NAME> (e.g. FLANNELD_ETCD_ENDPOINTS).

Static mode (udp backend only): forwards between flannel0 and UDP with routes given on the command line.
  --network CIDR        the whole flannel network, e.g. 10.244.0.0/16 (routed via flannel0)
  --subnet CIDR         this host's subnet, e.g. 10.244.1.0/24 (flannel0 gets its .0 address as /32)
  --peer CIDR=IP        a peer host's subnet and its PublicIP (repeatable)
  --public-ip IP        this host's PublicIP (default: the external interface's address)
  --iface NAME|IP       external interface (repeatable; default: the default route's)
  --port N              UDP port, the same on every host (default 8285)

Both modes (the udp backend's datapath; vxlan and host-gw leave forwarding to the kernel):
  --batch N             packets per batch, 1..1024 (default 64)
  --offloads LIST       offloads to use where the kernel has them (default tun,udp; or none):
                          tun: TSO and USO super-packets read from flannel0, GRO super-packets written to it
                          udp: UDP GSO on send, UDP GRO on receive
  --no-offload          the same as --offloads=none: one packet per read, write, datagram
  --io-uring=false      read and write flannel0 with one syscall per packet, not io_uring batches
  --datapath MODE       auto (default): the kernel fast path (TC-eBPF) where the kernel takes it,
                          else the userspace datapath; kernel: the fast path or exit; userspace: never
                          the fast path. The "forwarding" line says which runs (datapath=...) and why
  --workers N           forwarding threads: 1 = the main thread (default), 2 = a worker thread per
                          direction (flannel0 -> UDP, UDP -> flannel0), for hosts where one core is the limit
  --datapath-wait MODE  with --workers 1, how the forwarding thread waits for packets: io-uring (default;
                          event-loop with --io-uring=false) = a thread of its own blocks in one
                          io_uring_enter on polls kept armed on flannel0 and the socket, then reads what
                          they found; event-loop = the main thread's event loop, beside the control plane
  --datapath-slice-us N the scheduler time slice forwarding worker threads ask for, 100..100000 µs, or 0 for
                          the kernel's default (default 100: their wake-ups preempt CPU-bound work at once)
  --datapath-spin-us N  after forwarding, busy-poll up to N µs (0..10000) for the answer before sleeping, sparing
                          a wake-up; it yields the CPU between polls, does not run while more tasks want to
                          run than there are CPUs, and pauses while its spins catch nothing (default 200;
                          0 = never)
  --log-level LEVEL     debug|info|warn|error (default info); -v N (N >= 1) means debug
  --version, --help
Flags may be spelled -flag or --flag, with "=value" or the value as the next argument.
`;

interface RawFlags {
  /** Values given on the command line, by flag name. */
  readonly values: Map<string, string | string[] | boolean>;
}

/** Go's strconv.ParseBool. */
function parseGoBool(flag: string, s: string): boolean {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(s)) return false;
  throw new FlagError(`invalid boolean value "${s}" for -${flag}`);
}

/** Tokenizes argv with Go's flag rules. */
function tokenize(argv: readonly string[]): RawFlags {
  const values = new Map<string, string | string[] | boolean>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      if (i + 1 < argv.length) throw new FlagError(`unexpected argument "${argv[i + 1]}"`);
      break;
    }
    if (!arg.startsWith('-') || arg === '-') throw new FlagError(`unexpected argument "${arg}"`);
    const body = arg.startsWith('--') ? arg.slice(2) : arg.slice(1);
    if (body === '' || body.startsWith('-') || body.startsWith('=')) throw new FlagError(`bad flag syntax: ${arg}`);
    const eq = body.indexOf('=');
    let name = eq < 0 ? body : body.slice(0, eq);
    const inline = eq < 0 ? undefined : body.slice(eq + 1);
    if (name === 'h') name = 'help';
    const spec = FLAGS[name];
    if (spec === undefined) throw new FlagError(unknownFlagMessage(name, Object.keys(FLAGS)));
    if (spec.type === 'bool') {
      values.set(name, inline === undefined ? true : parseGoBool(name, inline));
      continue;
    }
    let value = inline;
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new FlagError(`flag needs an argument: -${name}`);
      value = argv[++i]!;
    }
    if (spec.type === 'list') {
      const list = (values.get(name) as string[] | undefined) ?? [];
      list.push(value);
      values.set(name, list);
    } else {
      values.set(name, value);
    }
  }
  return { values };
}

/** flanneld's environment variable for a flag: FLANNELD_ + upper snake case. */
export function envVarName(flag: string): string {
  return `FLANNELD_${flag.toUpperCase().replace(/-/g, '_')}`;
}

function cidr(flag: string, s: string): { prefix: number; prefixLen: number } {
  try {
    return parseCidr(s);
  } catch (err) {
    throw new FlagError(`--${flag}: ${(err as Error).message}`);
  }
}

/** A prefix for static mode: as cidr(), and host bits set are an error rather than cleared. */
function strictCidr(flag: string, s: string): { prefix: number; prefixLen: number } {
  const net = cidr(flag, s);
  const hostBits = hostBitsProblem(s);
  if (hostBits !== null) throw new FlagError(`--${flag} ${hostBits}`);
  return net;
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
  if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > max)
    throw new FlagError(`--${flag}: "${s}" is not an integer in ${min}..${max}`);
  return Number(s);
}

/** --offloads LIST (tun, udp, both comma-separated, or none); --no-offload wins. */
function offloadsOf(noOffload: boolean, list: string | undefined): Offloads {
  if (noOffload) return { tun: false, udp: false };
  if (list === undefined) return { tun: true, udp: true };
  const names = list
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
  const bad = names.filter((x) => x !== 'tun' && x !== 'udp' && x !== 'none');
  if (bad.length > 0 || names.length === 0 || (names.includes('none') && names.length > 1)) {
    throw new FlagError(`--offloads: "${list}" is not a list of tun, udp, or none`);
  }
  return { tun: names.includes('tun'), udp: names.includes('udp') };
}

/**
 * The default is io-uring (event-loop with --io-uring=false): with busy-polling after traffic (the
 * default --datapath-spin-us), the io-uring lane had the shortest round trips in the latency bench
 * (101 against 162 µs average at 2,000 pings/s, 5,113 against 4,521 one-byte TCP transactions/s)
 * and, in the same build's throughput bench, TCP 0.70 of VXLAN against 0.63 with 1.74x VXLAN's CPU
 * per gigabit against 1.94x (docs/latency.md). Where io_uring cannot wait, the lane's thread falls
 * back to its own event loop.
 */
function datapathWaitOf(value: string | undefined, ioUring: boolean): DatapathWait {
  if (value === undefined) return ioUring ? 'io-uring' : 'event-loop';
  if (value !== 'io-uring' && value !== 'event-loop')
    throw new FlagError(`--datapath-wait: "${value}" is not one of io-uring, event-loop`);
  return value;
}

function sliceOf(value: string | undefined): number {
  const us = integer('datapath-slice-us', value, DEFAULT_SLICE_US, 0, 100_000);
  if (us !== 0 && us < 100) throw new FlagError(`--datapath-slice-us: ${us} is below 100 (or 0 for the default)`);
  return us;
}

/**
 * Busy-polling after traffic for 200 µs by default (a round trip through the next hop takes about
 * that on a VM): 1.6x the one-byte TCP transactions per second in the latency bench, for about a
 * third more agent CPU per lone round trip, only on CPUs nobody else wants (docs/latency.md).
 */
const DEFAULT_SPIN_US = 200;

/** The slice a forwarding worker thread asks for by default: the shortest the kernel grants. */
const DEFAULT_SLICE_US = 100;

function logLevelOf(level: string | undefined, verbosity: string | undefined): LogLevel {
  const v = integer('v', verbosity, 0, 0, 1_000);
  const chosen = level ?? (v >= 1 ? 'debug' : 'info');
  if (!['debug', 'info', 'warn', 'error'].includes(chosen))
    throw new FlagError(`--log-level: "${chosen}" is not one of debug, info, warn, error`);
  return chosen as LogLevel;
}

/**
 * Parses argv (without node and the script). `env` supplies FLANNELD_* variables in flanneld mode.
 * Throws FlagError with a one-line message.
 */
export function parseFlags(argv: readonly string[], env: NodeJS.ProcessEnv = {}): ParsedFlags {
  const { values } = tokenize(argv);
  if (values.get('help') === true) return { kind: 'help' };
  if (values.get('version') === true) return { kind: 'version' };
  const isStatic = STATIC_SELECTORS.some((f) => values.has(f));
  if (isStatic) {
    const foreign = [...values.keys()].find((f) => FLAGS[f]!.mode === 'registry');
    if (foreign !== undefined) {
      throw new FlagError(`--${foreign} cannot be combined with static mode (--network/--subnet/--peer)`);
    }
    return { kind: 'static', flags: staticFlags(values) };
  }
  return { kind: 'registry', flags: registryFlags(values, env) };
}

function staticFlags(values: Map<string, string | string[] | boolean>): StaticFlags {
  const str = (k: string) => values.get(k) as string | undefined;
  const list = (k: string) => (values.get(k) as string[] | undefined) ?? [];
  if (!str('network')) throw new FlagError('--network is required (e.g. --network 10.244.0.0/16)');
  if (!str('subnet')) throw new FlagError('--subnet is required (e.g. --subnet 10.244.1.0/24)');
  const network = strictCidr('network', str('network')!);
  const subnet = strictCidr('subnet', str('subnet')!);
  const badNetwork = networkProblem(network);
  if (badNetwork !== null) throw new FlagError(`--network ${badNetwork}`);
  const inNetwork = (p: { prefix: number; prefixLen: number }) =>
    p.prefixLen >= network.prefixLen && contains(network.prefix, network.prefixLen, p.prefix);
  if (!inNetwork(subnet)) throw new FlagError(`--subnet ${str('subnet')} is not inside --network ${str('network')}`);
  if (subnet.prefixLen > 30) throw new FlagError(`--subnet ${str('subnet')}: a subnet must be /30 or larger`);
  const peers = list('peer').map((spec): PeerFlag => {
    const m = /^([^=]+)=([^=]+)$/.exec(spec);
    if (!m) throw new FlagError(`--peer "${spec}": expected CIDR=IP, e.g. 10.244.2.0/24=192.0.2.2`);
    const p = strictCidr('peer', m[1]!);
    if (!inNetwork(p)) throw new FlagError(`--peer ${m[1]} is not inside --network ${str('network')}`);
    const overlaps =
      contains(p.prefix, p.prefixLen, subnet.prefix) || contains(subnet.prefix, subnet.prefixLen, p.prefix);
    if (overlaps) throw new FlagError(`--peer ${m[1]} overlaps this host's --subnet ${str('subnet')}`);
    return { ...p, publicIp: address('peer', m[2]!) };
  });
  const publicIp = str('public-ip') === undefined ? null : address('public-ip', str('public-ip')!);
  const badPeers = peersProblem(peers, publicIp);
  if (badPeers !== null) throw new FlagError(badPeers);
  return {
    network,
    subnet,
    publicIp,
    ifaces: list('iface'),
    peers,
    port: integer('port', str('port'), 8285, 1, 65535),
    batch: integer('batch', str('batch'), 64, 1, 1024),
    offloads: offloadsOf(values.get('no-offload') === true, str('offloads')),
    ioUring: values.get('io-uring') !== false,
    workers: integer('workers', str('workers'), 1, 1, 2) as 1 | 2,
    datapath: datapathOf(str('datapath')),
    datapathWait: datapathWaitOf(str('datapath-wait'), values.get('io-uring') !== false),
    datapathSliceUs: sliceOf(str('datapath-slice-us')),
    datapathSpinUs: integer('datapath-spin-us', str('datapath-spin-us'), DEFAULT_SPIN_US, 0, 10_000),
    logLevel: logLevelOf(str('log-level'), str('v')),
  };
}

function datapathOf(s: string | undefined): DatapathChoice {
  if (s === undefined) return 'auto';
  if (!(DATAPATH_CHOICES as readonly string[]).includes(s))
    throw new FlagError(`--datapath: "${s}" is not one of ${DATAPATH_CHOICES.join(', ')}`);
  return s as DatapathChoice;
}

function registryFlags(cli: Map<string, string | string[] | boolean>, env: NodeJS.ProcessEnv): RegistryFlags {
  // Command line first; then FLANNELD_* for every flag the command line did not give (flanneld's
  // flagutil.SetFlagsFromEnv: empty variables count as unset). A list flag takes the whole value.
  const values = new Map(cli);
  for (const [name, spec] of Object.entries(FLAGS)) {
    if (spec.mode === 'static' || values.has(name) || name === 'help' || name === 'version') continue;
    const raw = env[envVarName(name)];
    if (raw === undefined || raw === '') continue;
    if (spec.type === 'bool') {
      try {
        values.set(name, parseGoBool(name, raw));
      } catch {
        throw new FlagError(`${envVarName(name)}: invalid boolean value "${raw}"`);
      }
    } else values.set(name, spec.type === 'list' ? [raw] : raw);
  }
  const str = (k: string) => {
    const v = values.get(k) as string | undefined;
    return v === '' ? undefined : v;
  };
  const list = (k: string) => (values.get(k) as string[] | undefined) ?? [];
  const bool = (k: string, dflt: boolean) => (values.get(k) as boolean | undefined) ?? dflt;

  let store: RegistryStoreFlags;
  const kvFile = str('kv-file');
  if (kvFile !== undefined) {
    const etcd = ETCD_FLAGS.find((f) => str(f) !== undefined);
    if (etcd !== undefined)
      throw new FlagError(`--kv-file and --${etcd} exclude each other: choose the file registry or etcd`);
    store = { kind: 'file', path: kvFile };
  } else {
    const endpoints = str('etcd-endpoints') ?? DEFAULT_ETCD_ENDPOINTS;
    try {
      parseEndpoints(endpoints);
    } catch (err) {
      throw new FlagError(`--etcd-endpoints: ${(err as Error).message.replace(/^etcd: /, '')}`);
    }
    const certFile = str('etcd-certfile');
    const keyFile = str('etcd-keyfile');
    if ((certFile === undefined) !== (keyFile === undefined)) {
      throw new FlagError('--etcd-certfile and --etcd-keyfile must be given together');
    }
    const username = str('etcd-username');
    const password = str('etcd-password');
    if ((username === undefined) !== (password === undefined)) {
      throw new FlagError('--etcd-username and --etcd-password must be given together');
    }
    const api = str('etcd-api') ?? 'auto';
    if (!(ETCD_APIS as readonly string[]).includes(api)) {
      throw new FlagError(`--etcd-api: "${api}" is not one of ${ETCD_APIS.join(', ')}`);
    }
    store = {
      kind: 'etcd',
      endpoints,
      api: api as EtcdApi,
      ...(str('etcd-cafile') !== undefined ? { caFile: str('etcd-cafile')! } : {}),
      ...(certFile !== undefined ? { certFile, keyFile: keyFile! } : {}),
      ...(username !== undefined ? { username, password: password! } : {}),
    };
  }

  const ifaceRegexes = list('iface-regex').map((re) => {
    try {
      return new RegExp(re);
    } catch (err) {
      throw new FlagError(`--iface-regex "${re}": ${(err as Error).message}`);
    }
  });
  const healthzIp = str('healthz-ip') ?? '0.0.0.0';
  if (!isIPv4(healthzIp)) throw new FlagError(`--healthz-ip: "${healthzIp}" is not an IPv4 address`);
  const prefix = str('etcd-prefix') ?? DEFAULT_ETCD_PREFIX;
  if (!prefix.startsWith('/')) throw new FlagError(`--etcd-prefix: "${prefix}" must start with "/"`);

  return {
    store,
    prefix,
    ifaces: list('iface'),
    ifaceRegexes,
    publicIp: str('public-ip') === undefined ? null : address('public-ip', str('public-ip')!),
    subnetFile: str('subnet-file') ?? DEFAULT_SUBNET_FILE,
    renewMarginMinutes: integer(
      'subnet-lease-renew-margin',
      str('subnet-lease-renew-margin'),
      DEFAULT_RENEW_MARGIN_MINUTES,
      1,
      1439,
    ),
    ipMasq: bool('ip-masq', false),
    healthzIp,
    healthzPort: integer('healthz-port', str('healthz-port'), 0, 0, 65535),
    iptablesForwardRules: bool('iptables-forward-rules', true),
    batch: integer('batch', str('batch'), 64, 1, 1024),
    offloads: offloadsOf(bool('no-offload', false), str('offloads')),
    ioUring: bool('io-uring', true),
    workers: integer('workers', str('workers'), 1, 1, 2) as 1 | 2,
    datapath: datapathOf(str('datapath')),
    datapathWait: datapathWaitOf(str('datapath-wait'), bool('io-uring', true)),
    datapathSliceUs: sliceOf(str('datapath-slice-us')),
    datapathSpinUs: integer('datapath-spin-us', str('datapath-spin-us'), DEFAULT_SPIN_US, 0, 10_000),
    logLevel: logLevelOf(str('log-level'), str('v')),
  };
}
