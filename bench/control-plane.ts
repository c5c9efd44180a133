/**
 * Control-plane benchmark (issue 3): a 1,000-node cluster's leases in a real etcd.
 *
 *   (a) 1,000 peer leases loaded into routes: the real agent from process spawn to its
 *       "forwarding" line with 1,000 routes (and, from its own log, from "starting" to the first
 *       "routes" line); and a RouteWatcher + EtcdKvStore in-process from start() to the first
 *       onRoutes with 1,000 routes;
 *   (b) a new lease routable after its put, p50/p99 over `puts` new leases, one at a time: from the
 *       moment the put is issued (lease grant + put, as an agent's own registration does it) to
 *       (1) the running agent's "routes" line listing it as added, i.e. after the agent built and swapped
 *       the datapath's snapshot; (2) an in-process RouteWatcher's onRoutes listing it;
 *   (c) the agent's VmRSS (and VmHWM) from /proc/PID/status, idle with 1,000 peers;
 *   (d) the same three with the vxlan backend (issue 12), measured in the kernel: 1,000 vxlan peer
 *       leases programmed (neighbour, fdb entry and route each) from the agent's spawn to the last
 *       route seen by `ip monitor route`; a new lease's route in the kernel after its put; the idle
 *       agent's RSS with 1,000 vxlan peers; and, for the choice of iproute2 over rtnetlink, what one
 *       `ip -batch` / `bridge -batch` of 1,000 entries and one single `ip` command cost here.
 *
 * (b1) is the figure the issue asks about: it is end to end through the agent's own process,
 * including its snapshot rebuild of ~1,000 routes and its JSON log line; the line is timestamped
 * when it arrives on the benchmark's pipe, which adds well under a millisecond. (b2) shows what
 * the watch alone costs.
 *
 * etcd runs in a network namespace created for the run (loopback, plus a veth eth0 for the
 * agent's PublicIP); the measuring code must reach it, so it runs as a worker inside that
 * namespace: this same file, started with `--worker`. Everything is removed afterwards.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { EtcdKvStore } from '../src/etcd/kv-store.js';
import { EtcdNamespace, etcdAgentFlags } from '../src/lab/etcd.js';
import { agentEntry, removeStaleLabNamespaces, requireTools } from '../src/lab/index.js';
import { formatIPv4, parseIPv4 } from '../src/routing-table/ipv4.js';
import { LEASE_TTL_SECONDS } from '../src/subnet/lease-manager.js';
import { DEFAULT_ETCD_PREFIX, configKey, formatLeaseAttrs, subnetKey } from '../src/subnet/lease.js';
import { RouteWatcher, type Route } from '../src/subnet/route-watcher.js';

export interface ControlPlaneOptions {
  /** Peer leases seeded before the agent starts. Default 1000. */
  peers: number;
  /** New leases put one at a time for (b). Default 100. */
  puts: number;
  log: (line: string) => void;
}

export const DEFAULT_CONTROL_PLANE_OPTIONS: ControlPlaneOptions = {
  peers: 1000,
  puts: 100,
  log: (line) => process.stderr.write(`${line}\n`),
};

export interface Percentiles {
  p50: number;
  p99: number;
  max: number;
  samples: number;
}

export interface ControlPlaneResult {
  date: string;
  node: string;
  etcdVersion: string;
  peers: number;
  network: string;
  seedMs: number;
  /** (a) the agent: spawn -> "forwarding" with `peers` routes. */
  agentSpawnToForwardingMs: number;
  /** (a) the agent's own log: "starting" -> first "routes" line (ms resolution). */
  agentStartingToRoutesMs: number;
  agentRoutesAtForwarding: number;
  /** (a) the agent's own log: "subnet file written" (its RouteWatcher starts next) -> first "routes". */
  agentWatchToRoutesMs: number;
  /** (a) in-process RouteWatcher start() -> onRoutes with `peers` routes, one per run. */
  watcherLoadMs: number[];
  /** (b) ms from the put being issued. */
  newLeaseToAgentRouteMs: Percentiles;
  newLeaseToWatcherRouteMs: Percentiles;
  /** (b) the put itself (lease grant + put, acknowledged). */
  putAckMs: Percentiles;
  /** (c) baseline: the idle agent with no peers (same agent, before the cluster is seeded). */
  agentNoPeersRssMB: number;
  /** (c) the idle agent with `peers` peers. */
  agentIdleRssMB: number;
  agentIdleHwmMB: number;
  /** (c) after (b), with peers + puts routes. */
  agentRssAfterPutsMB: number;
  /** (d) the vxlan backend. */
  vxlan?: VxlanControlPlane;
  totalMs: number;
}

export interface VxlanControlPlane {
  peers: number;
  /** Agent spawn -> the last of the peers' routes in the kernel. */
  spawnToProgrammedMs: number;
  /** The agent's own log: "starting" -> "forwarding". */
  startingToForwardingMs: number;
  /** A new lease's put issued -> its route in the kernel (ip monitor). */
  newLeaseToKernelRouteMs: Percentiles;
  idleRssMB: number;
  idleHwmMB: number;
  /** One iproute2 batch of `peers` entries: neighbours, fdb entries, routes; and one single `ip` run. */
  batchNeighMs: number;
  batchFdbMs: number;
  batchRouteMs: number;
  singleIpMs: Percentiles;
}

const BENCH_NETWORK = '10.0.0.0/8';
const NETWORK_CONFIG = `{"Network":"${BENCH_NETWORK}","SubnetLen":24,"Backend":{"Type":"udp"}}`;
const AGENT_ADDR = '192.0.2.1';
/** Below 10: EtcdKvStore's transport adds one 'connect' listener per request queued on a connecting socket. */
const SEED_CONCURRENCY = 8;

/** Peer i's subnet: 10.1.0.0/24, 10.1.1.0/24, ... ; new leases for (b) live in 10.200.0.0/16. */
function peerSubnet(i: number): { prefix: number; prefixLen: number } {
  return { prefix: parseIPv4(`10.${1 + (i >> 8)}.${i & 255}.0`), prefixLen: 24 };
}
function newLeaseSubnet(i: number): { prefix: number; prefixLen: number } {
  return { prefix: parseIPv4(`10.200.${i & 255}.0`), prefixLen: 24 };
}
/** Peer i's PublicIP, in 172.16.0.0/12. */
function peerPublicIp(i: number): number {
  return (parseIPv4('172.16.0.1') + i) >>> 0;
}

export function percentiles(values: readonly number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number): number =>
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
  return { p50: rank(50), p99: rank(99), max: sorted[sorted.length - 1] ?? Number.NaN, samples: sorted.length };
}

// ---- the parent: namespace, etcd, worker ---------------------------------------------------------

/** Builds the namespace and etcd, runs the worker inside it, tears everything down. */
export async function runControlPlaneBench(options: Partial<ControlPlaneOptions> = {}): Promise<ControlPlaneResult> {
  const opts = { ...DEFAULT_CONTROL_PLANE_OPTIONS, ...options };
  await requireTools(['ip', 'etcd', 'etcdctl']);
  removeStaleLabNamespaces();
  const started = performance.now();
  const ns = await EtcdNamespace.create();
  try {
    // A veth pair with both ends inside the namespace (the kernel may lack the dummy driver) gives
    // the agent an external interface and PublicIP.
    await ns.execChecked(ns.name, ['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0peer']);
    await ns.execChecked(ns.name, ['ip', 'link', 'set', 'eth0peer', 'up']);
    await ns.execChecked(ns.name, ['ip', 'addr', 'add', `${AGENT_ADDR}/24`, 'dev', 'eth0']);
    await ns.execChecked(ns.name, ['ip', 'link', 'set', 'eth0', 'up']);
    const etcd = ns.etcd();
    await etcd.start();
    const version = (await ns.exec(ns.name, ['etcd', '--version'])).stdout.split('\n')[0]?.trim() ?? '';
    opts.log(`control plane: etcd up in ${ns.name} (${etcd.endpoint}); worker: ${opts.peers} peers, ${opts.puts} puts`);
    const job: WorkerJob = {
      endpoint: etcd.endpoint,
      tempDir: ns.tempDir,
      agentEntry: agentEntry(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')),
      peers: opts.peers,
      puts: opts.puts,
    };
    const worker = ns.spawn(ns.name, [
      process.execPath,
      fileURLToPath(import.meta.url),
      '--worker',
      JSON.stringify(job),
    ]);
    const result = await collectWorker(worker, opts.log);
    await etcd.stop();
    return { ...result, etcdVersion: version, totalMs: performance.now() - started };
  } finally {
    await ns.destroy();
  }
}

function collectWorker(
  worker: ChildProcess,
  log: (line: string) => void,
): Promise<Omit<ControlPlaneResult, 'etcdVersion' | 'totalMs'>> {
  return new Promise((resolvePromise, reject) => {
    let result: Omit<ControlPlaneResult, 'etcdVersion' | 'totalMs'> | null = null;
    const stderr: string[] = [];
    createInterface({ input: worker.stdout! }).on('line', (line) => {
      if (line.startsWith('{')) result = JSON.parse(line) as typeof result;
      else log(`  ${line}`);
    });
    createInterface({ input: worker.stderr! }).on('line', (line) => {
      stderr.push(line);
      if (stderr.length > 40) stderr.shift();
    });
    worker.once('exit', (code, signal) => {
      if (code === 0 && result !== null) resolvePromise(result);
      else reject(new Error(`control-plane worker failed (exit ${String(code ?? signal)}):\n${stderr.join('\n')}`));
    });
  });
}

export function controlPlaneTable(r: ControlPlaneResult): string {
  const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
  const pct = (p: Percentiles): string => `p50 ${ms(p.p50)} ms, p99 ${ms(p.p99)} ms (max ${ms(p.max)}, n=${p.samples})`;
  const rows: [string, string, string][] = [
    [
      `(a) ${r.peers} peer leases -> routes, agent: spawn to "forwarding" (${r.agentRoutesAtForwarding} routes)`,
      `${ms(r.agentSpawnToForwardingMs)} ms`,
      '< 1 s',
    ],
    [
      '(a) same, agent\'s own log: "starting" to first "routes" (config, lease, flannel0, routes)',
      `${ms(r.agentStartingToRoutesMs)} ms`,
      '< 1 s',
    ],
    [
      '(a) same, agent\'s own log: "subnet file written" (RouteWatcher start) to first "routes"',
      `${ms(r.agentWatchToRoutesMs)} ms`,
      '< 1 s',
    ],
    [
      `(a) same, RouteWatcher + EtcdKvStore in-process: start() to ${r.peers} routes`,
      r.watcherLoadMs.map((v) => `${ms(v)} ms`).join(', '),
      '< 1 s',
    ],
    ['(b) new lease routable after its put: agent\'s "routes" line', pct(r.newLeaseToAgentRouteMs), 'p99 < 100 ms'],
    ['(b) same, in-process RouteWatcher onRoutes', pct(r.newLeaseToWatcherRouteMs), ''],
    ['(b) the put itself (lease grant + put, acknowledged)', pct(r.putAckMs), ''],
    ['(c) idle agent RSS with no peers (VmRSS), for comparison', `${r.agentNoPeersRssMB.toFixed(1)} MB`, ''],
    [
      `(c) idle agent RSS with ${r.peers} peers (VmRSS; peak VmHWM)`,
      `${r.agentIdleRssMB.toFixed(1)} MB (peak ${r.agentIdleHwmMB.toFixed(1)} MB)`,
      '< 80 MB',
    ],
    [
      `(c) agent RSS after (b), ${r.peers + r.newLeaseToAgentRouteMs.samples} peers`,
      `${r.agentRssAfterPutsMB.toFixed(1)} MB`,
      '',
    ],
  ];
  const v = r.vxlan;
  if (v !== undefined) {
    rows.push(
      [
        `(d) vxlan: ${v.peers} peer leases programmed (neighbour, fdb, route each): agent spawn to the last route in the kernel`,
        `${ms(v.spawnToProgrammedMs)} ms`,
        '< 1 s (issue 12)',
      ],
      ['(d) vxlan: same, agent\'s own log: "starting" to "forwarding"', `${ms(v.startingToForwardingMs)} ms`, ''],
      ["(d) vxlan: new lease's route in the kernel after its put", pct(v.newLeaseToKernelRouteMs), 'p99 < 100 ms'],
      [
        `(d) vxlan: idle agent RSS with ${v.peers} peers (VmRSS; peak VmHWM)`,
        `${v.idleRssMB.toFixed(1)} MB (peak ${v.idleHwmMB.toFixed(1)} MB)`,
        '< 80 MB',
      ],
      [
        `(d) iproute2: one batch of ${v.peers} neighbours / fdb entries / routes`,
        `${ms(v.batchNeighMs)} / ${ms(v.batchFdbMs)} / ${ms(v.batchRouteMs)} ms`,
        '',
      ],
      ['(d) iproute2: one single `ip` command (spawn to exit)', pct(v.singleIpMs), ''],
    );
  }
  return [
    '| measurement | result | issue 3 target |',
    '|---|---|---|',
    ...rows.map((c) => `| ${c.join(' | ')} |`),
  ].join('\n');
}

export function saveControlPlaneResult(r: ControlPlaneResult, resultsDir: string): string {
  mkdirSync(resultsDir, { recursive: true });
  const path = join(resultsDir, 'control-plane.json');
  writeFileSync(path, `${JSON.stringify(r, null, 2)}\n`);
  return path;
}

// ---- the worker: inside the namespace, next to etcd ---------------------------------------------

interface WorkerJob {
  endpoint: string;
  tempDir: string;
  agentEntry: string;
  peers: number;
  puts: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function withDeadline<T>(what: string, promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function readMemoryMB(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

/** The agent as a child of the worker, its JSON lines timestamped on arrival. */
class TimedAgent {
  readonly child: ChildProcess;
  private waiters: {
    match: (l: Record<string, unknown>) => boolean;
    resolve: (at: number, l: Record<string, unknown>) => void;
  }[] = [];
  readonly lines: Record<string, unknown>[] = [];

  constructor(argv: readonly string[]) {
    this.child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    createInterface({ input: this.child.stdout! }).on('line', (text) => {
      const at = performance.now();
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(text) as Record<string, unknown>;
      } catch {
        return;
      }
      // Keep the small lines only: a "routes" line may list many routes.
      if (line['msg'] !== 'routes' && line['msg'] !== 'forwarding') this.lines.push(line);
      else this.lines.push({ msg: line['msg'], time: line['time'] });
      for (const w of [...this.waiters]) {
        if (w.match(line)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(at, line);
        }
      }
    });
    this.child.stderr!.resume();
  }

  next(match: (l: Record<string, unknown>) => boolean): Promise<{ at: number; line: Record<string, unknown> }> {
    return new Promise((resolveLine) => this.waiters.push({ match, resolve: (at, line) => resolveLine({ at, line }) }));
  }
}

async function runWorker(job: WorkerJob): Promise<void> {
  const say = (text: string): void => {
    process.stdout.write(`${text}\n`);
  };
  const store = new EtcdKvStore({ endpoints: job.endpoint });
  let agent: TimedAgent | null = null;
  try {
    await store.put(configKey(DEFAULT_ETCD_PREFIX), NETWORK_CONFIG, 0);

    const subnetFile = join(job.tempDir, 'subnet.env');
    const agentArgv = [process.execPath, job.agentEntry, ...etcdAgentFlags(subnetFile, job.endpoint)];
    // (c) baseline: the same agent with no peers. Its lease stays in etcd; the agent started
    // later reuses it (same PublicIP), so it is never counted as a peer.
    const lonely = new TimedAgent(agentArgv);
    await withDeadline(
      'agent forwarding without peers',
      lonely.next((l) => l['msg'] === 'forwarding'),
      30_000,
    );
    await sleep(2000);
    const agentNoPeersRssMB = readMemoryMB(lonely.child.pid!).rss;
    await stopAgent(lonely);
    say(`idle agent without peers: VmRSS ${agentNoPeersRssMB.toFixed(1)} MB`);

    // Seed the cluster: flannel's lease values, each under its own 24 h etcd lease.
    const seedStart = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: SEED_CONCURRENCY }, async () => {
        for (let i = next++; i < job.peers; i = next++) {
          await store.put(
            subnetKey(DEFAULT_ETCD_PREFIX, peerSubnet(i)),
            formatLeaseAttrs(peerPublicIp(i)),
            LEASE_TTL_SECONDS,
          );
        }
      }),
    );
    const seedMs = performance.now() - seedStart;
    say(`seeded ${job.peers} leases in ${seedMs.toFixed(0)} ms`);

    // (a) in-process: three cold loads.
    const watcherLoadMs: number[] = [];
    for (let run = 0; run < 3; run++) {
      const t0 = performance.now();
      let watcher: RouteWatcher | null = null;
      await withDeadline(
        'in-process RouteWatcher load',
        new Promise<void>((done) => {
          watcher = new RouteWatcher({
            store,
            ownSubnet: { prefix: parseIPv4('10.255.255.0'), prefixLen: 24 },
            onRoutes: (routes) => {
              if (routes.length >= job.peers) done();
            },
          });
          watcher.start();
        }),
        30_000,
      );
      watcherLoadMs.push(performance.now() - t0);
      (watcher as RouteWatcher | null)?.stop();
    }
    say(`in-process RouteWatcher loads: ${watcherLoadMs.map((v) => v.toFixed(0)).join(', ')} ms`);

    // (a) the agent.
    const t0 = performance.now();
    agent = new TimedAgent(agentArgv);
    const exited = new Promise<never>((_, reject) =>
      agent!.child.once('exit', (code) => reject(new Error(`the agent exited (${String(code)})`))),
    );
    const forwarding = await withDeadline(
      'agent forwarding',
      Promise.race([agent.next((l) => l['msg'] === 'forwarding'), exited]),
      30_000,
    );
    const agentSpawnToForwardingMs = forwarding.at - t0;
    const agentRoutesAtForwarding = forwarding.line['routeCount'] as number;
    const timeOf = (msg: string): number => Date.parse(String(agent!.lines.find((l) => l['msg'] === msg)?.['time']));
    const agentStartingToRoutesMs = timeOf('routes') - timeOf('starting');
    const agentWatchToRoutesMs = timeOf('routes') - timeOf('subnet file written');
    say(
      `agent forwarding with ${agentRoutesAtForwarding} routes ${agentSpawnToForwardingMs.toFixed(0)} ms after spawn`,
    );

    // (c) idle.
    await sleep(3000);
    const idle = readMemoryMB(agent.child.pid!);
    say(`idle agent: VmRSS ${idle.rss.toFixed(1)} MB, VmHWM ${idle.hwm.toFixed(1)} MB`);

    // (b) new leases, one at a time; the agent and an in-process watcher both watch.
    let watcherSeen: { wanted: string; resolve: (at: number) => void } | null = null;
    const watcher = new RouteWatcher({
      store,
      ownSubnet: { prefix: parseIPv4('10.255.255.0'), prefixLen: 24 },
      onRoutes: (routes: Route[]) => {
        const at = performance.now();
        if (
          watcherSeen !== null &&
          routes.some((r) => `${formatIPv4(r.prefix)}/${r.prefixLen}` === watcherSeen!.wanted)
        ) {
          const w = watcherSeen;
          watcherSeen = null;
          w.resolve(at);
        }
      },
    });
    await new Promise<void>((done) => {
      const ready = setInterval(() => {
        if (watcher.currentRoutes().length >= job.peers) {
          clearInterval(ready);
          done();
        }
      }, 20);
      watcher.start();
    });
    const toAgent: number[] = [];
    const toWatcher: number[] = [];
    const putAck: number[] = [];
    for (let i = 0; i < job.puts; i++) {
      const subnet = newLeaseSubnet(i);
      const cidr = `${formatIPv4(subnet.prefix)}/24`;
      const publicIp = parseIPv4(`198.18.0.${(i % 250) + 1}`);
      const route = `${cidr}=${formatIPv4(publicIp)}`;
      const agentSaw = agent.next((l) => l['msg'] === 'routes' && (l['added'] as string[]).includes(route));
      const watcherSaw = new Promise<number>((r) => {
        watcherSeen = { wanted: cidr, resolve: r };
      });
      const issued = performance.now();
      await store.put(subnetKey(DEFAULT_ETCD_PREFIX, subnet), formatLeaseAttrs(publicIp), LEASE_TTL_SECONDS);
      putAck.push(performance.now() - issued);
      const [a, w] = await withDeadline(`route ${route}`, Promise.all([agentSaw, watcherSaw]), 10_000);
      toAgent.push(a.at - issued);
      toWatcher.push(w - issued);
      await sleep(20);
    }
    watcher.stop();
    const afterPuts = readMemoryMB(agent.child.pid!);
    await stopAgent(agent);
    agent = null;
    const vxlan = await runVxlanSection(job, store, say);
    const result: Omit<ControlPlaneResult, 'etcdVersion' | 'totalMs'> = {
      date: new Date().toISOString(),
      node: process.version,
      peers: job.peers,
      network: BENCH_NETWORK,
      seedMs,
      agentSpawnToForwardingMs,
      agentStartingToRoutesMs,
      agentRoutesAtForwarding,
      agentWatchToRoutesMs,
      watcherLoadMs,
      newLeaseToAgentRouteMs: percentiles(toAgent),
      newLeaseToWatcherRouteMs: percentiles(toWatcher),
      putAckMs: percentiles(putAck),
      agentNoPeersRssMB,
      agentIdleRssMB: idle.rss,
      agentIdleHwmMB: idle.hwm,
      agentRssAfterPutsMB: afterPuts.rss,
      vxlan,
    };
    say(JSON.stringify(result));
  } finally {
    if (agent !== null) await stopAgent(agent);
    await store.close();
  }
}

// ---- (d) the vxlan backend -------------------------------------------------------------------------

const VXLAN_PREFIX = '/vxlan-bench/network';

/** Peer i's VtepMAC: locally administered, unique per peer. */
function peerMac(i: number): string {
  return `0a:58:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
}

/** `ip -o monitor route`, timestamping the first time each destination is added. */
class RouteMonitor {
  private readonly child: ChildProcess;
  readonly seenAt = new Map<string, number>();
  private waiters: { dst: string; resolve: (at: number) => void }[] = [];

  constructor() {
    this.child = spawn('ip', ['-o', 'monitor', 'route'], { stdio: ['ignore', 'pipe', 'ignore'] });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      if (line.startsWith('Deleted')) return;
      const at = performance.now();
      const dst = line.split(' ')[0]!;
      if (!this.seenAt.has(dst)) this.seenAt.set(dst, at);
      for (const w of [...this.waiters]) {
        if (w.dst === dst) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(at);
        }
      }
    });
  }

  next(dst: string): Promise<number> {
    return new Promise((resolveAt) => this.waiters.push({ dst, resolve: resolveAt }));
  }

  close(): void {
    this.child.kill('SIGTERM');
  }
}

async function timeRun(cmd: string, args: readonly string[], input = ''): Promise<number> {
  const t0 = performance.now();
  await new Promise<void>((done, fail) => {
    const c = spawn(cmd, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    c.once('exit', (code) => (code === 0 ? done() : fail(new Error(`${cmd} ${args.join(' ')}: ${err.trim()}`))));
    c.stdin!.on('error', () => undefined); // a command that reads no input may exit first
    c.stdin!.end(input);
  });
  return performance.now() - t0;
}

/** What iproute2 costs here, on a scratch vxlan device: batches of `peers` entries, and single runs. */
async function measureIproute2(
  peers: number,
): Promise<Pick<VxlanControlPlane, 'batchNeighMs' | 'batchFdbMs' | 'batchRouteMs' | 'singleIpMs'>> {
  const dev = 'benchvx9';
  await timeRun('ip', [
    'link',
    'add',
    dev,
    'type',
    'vxlan',
    'id',
    '9',
    'local',
    AGENT_ADDR,
    'dev',
    'eth0',
    'dstport',
    '0',
    'nolearning',
  ]);
  await timeRun('ip', ['link', 'set', dev, 'up']);
  try {
    const ids = Array.from({ length: peers }, (_, i) => i);
    const vtep = (i: number): string => formatIPv4(peerSubnet(i).prefix);
    const batchNeighMs = await timeRun(
      'ip',
      ['-batch', '-'],
      ids.map((i) => `neigh replace ${vtep(i)} lladdr ${peerMac(i)} dev ${dev} nud permanent`).join('\n') + '\n',
    );
    const batchFdbMs = await timeRun(
      'bridge',
      ['-batch', '-'],
      ids
        .map((i) => `fdb replace ${peerMac(i)} dev ${dev} dst ${formatIPv4(peerPublicIp(i))} self permanent`)
        .join('\n') + '\n',
    );
    const batchRouteMs = await timeRun(
      'ip',
      ['-batch', '-'],
      ids.map((i) => `route replace ${vtep(i)}/24 via ${vtep(i)} dev ${dev} onlink`).join('\n') + '\n',
    );
    const single: number[] = [];
    for (let i = 0; i < 30; i++)
      single.push(
        await timeRun('ip', [
          'neigh',
          'replace',
          '10.250.0.1',
          'lladdr',
          '0a:58:00:00:ff:01',
          'dev',
          dev,
          'nud',
          'permanent',
        ]),
      );
    return { batchNeighMs, batchFdbMs, batchRouteMs, singleIpMs: percentiles(single) };
  } finally {
    await timeRun('ip', ['link', 'del', dev]);
  }
}

async function runVxlanSection(
  job: WorkerJob,
  store: EtcdKvStore,
  say: (text: string) => void,
): Promise<VxlanControlPlane> {
  const raw = await measureIproute2(job.peers);
  say(
    `iproute2: batches of ${job.peers}: neigh ${raw.batchNeighMs.toFixed(0)} ms, fdb ${raw.batchFdbMs.toFixed(0)} ms, route ${raw.batchRouteMs.toFixed(0)} ms; one ip run p50 ${raw.singleIpMs.p50.toFixed(1)} ms`,
  );
  await store.put(
    configKey(VXLAN_PREFIX),
    `{"Network":"${BENCH_NETWORK}","SubnetLen":24,"Backend":{"Type":"vxlan"}}`,
    0,
  );
  let next = 0;
  await Promise.all(
    Array.from({ length: SEED_CONCURRENCY }, async () => {
      for (let i = next++; i < job.peers; i = next++) {
        const value = formatLeaseAttrs(peerPublicIp(i), {
          backendType: 'vxlan',
          backendData: { VNI: 1, VtepMAC: peerMac(i) },
        });
        await store.put(subnetKey(VXLAN_PREFIX, peerSubnet(i)), value, LEASE_TTL_SECONDS);
      }
    }),
  );
  const monitor = new RouteMonitor();
  await sleep(200); // the monitor subscribes before the agent starts
  const lastDst = `${formatIPv4(peerSubnet(job.peers - 1).prefix)}/24`;
  const allSeen = (): boolean => {
    for (let i = 0; i < job.peers; i++) if (!monitor.seenAt.has(`${formatIPv4(peerSubnet(i).prefix)}/24`)) return false;
    return true;
  };
  const t0 = performance.now();
  const agent = new TimedAgent([
    process.execPath,
    job.agentEntry,
    ...etcdAgentFlags(join(job.tempDir, 'subnet-vxlan.env'), job.endpoint),
    '--etcd-prefix',
    VXLAN_PREFIX,
  ]);
  try {
    await withDeadline(
      'vxlan agent forwarding',
      agent.next((l) => l['msg'] === 'forwarding'),
      30_000,
    );
    await withDeadline(
      'vxlan peers programmed',
      (async () => {
        while (!allSeen()) await sleep(5);
      })(),
      30_000,
    );
    let last = 0;
    for (const at of monitor.seenAt.values()) last = Math.max(last, at);
    const spawnToProgrammedMs = last - t0;
    const timeOf = (msg: string): number => Date.parse(String(agent.lines.find((l) => l['msg'] === msg)?.['time']));
    const startingToForwardingMs = timeOf('forwarding') - timeOf('starting');
    say(
      `vxlan: ${job.peers} peers programmed ${spawnToProgrammedMs.toFixed(0)} ms after spawn (last route ${lastDst})`,
    );
    await sleep(3000);
    const idle = readMemoryMB(agent.child.pid!);
    say(`vxlan: idle agent VmRSS ${idle.rss.toFixed(1)} MB, VmHWM ${idle.hwm.toFixed(1)} MB`);
    const toKernel: number[] = [];
    for (let i = 0; i < job.puts; i++) {
      const subnet = newLeaseSubnet(i);
      const dst = `${formatIPv4(subnet.prefix)}/24`;
      const seen = monitor.next(dst);
      const issued = performance.now();
      const value = formatLeaseAttrs(parseIPv4(`198.18.0.${(i % 250) + 1}`), {
        backendType: 'vxlan',
        backendData: { VNI: 1, VtepMAC: peerMac(5000 + i) },
      });
      await store.put(subnetKey(VXLAN_PREFIX, subnet), value, LEASE_TTL_SECONDS);
      toKernel.push((await withDeadline(`vxlan route ${dst}`, seen, 10_000)) - issued);
      await sleep(20);
    }
    return {
      peers: job.peers,
      spawnToProgrammedMs,
      startingToForwardingMs,
      newLeaseToKernelRouteMs: percentiles(toKernel),
      idleRssMB: idle.rss,
      idleHwmMB: idle.hwm,
      ...raw,
    };
  } finally {
    monitor.close();
    await stopAgent(agent);
  }
}

async function stopAgent(agent: TimedAgent): Promise<void> {
  if (agent.child.exitCode !== null || agent.child.signalCode !== null) return;
  const exited = new Promise((r) => agent.child.once('exit', r));
  agent.child.kill('SIGTERM');
  await Promise.race([exited, sleep(3000)]);
  if (agent.child.exitCode === null && agent.child.signalCode === null) agent.child.kill('SIGKILL');
}

if (process.argv[2] === '--worker' && process.argv[1] === fileURLToPath(import.meta.url)) {
  runWorker(JSON.parse(process.argv[3] ?? '{}') as WorkerJob).then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  // Run on its own: node dist/bench/control-plane.js
  runControlPlaneBench().then(
    (r) => {
      process.stdout.write(`\n## Control plane (issue 3), real etcd ${r.etcdVersion}\n\n${controlPlaneTable(r)}\n`);
      const path = saveControlPlaneResult(
        r,
        resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'results'),
      );
      process.stderr.write(`wrote ${path}\n`);
    },
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
