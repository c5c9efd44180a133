/**
 * A lab of 2 or 3 hosts in network namespaces, each with one pod, on a bridged veth underlay.
 *
 *   ${p}u   underlay switch: bridge br0 (192.0.2.254/24, a non-peer address usable as a stranger)
 *   ${p}hN  host N: eth0 192.0.2.N/24 (MTU 1500) into br0; veth0 10.244.N.1/24 towards its pod
 *   ${p}pN  pod N: eth0 10.244.N.2/24, default route via 10.244.N.1
 *
 * The overlay between hosts is one of the modes in modes.ts: flannel-ts (our agent), vxlan (kernel
 * VXLAN as flannel's vxlan backend configures it), host-gw (plain routes), or one of the userspace
 * references socat and proxy-shape (2 hosts).
 *
 * Always destroy a lab in a finally block; a process-wide exit/signal handler (cleanup.ts) also
 * removes its namespaces if the process dies first, and removeStaleLabNamespaces() removes what a
 * killed run left behind.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentProcess, type AgentCounters } from './agent.js';
import { registerLive, unregisterLive, type SyncCleanup } from './cleanup.js';
import { inNamespace, requireTools, run, runChecked, spawnIn, terminate, type ExecResult } from './exec.js';
import {
  parseIperfTcp,
  parseIperfUdp,
  parsePing,
  type PingResult,
  type TcpThroughput,
  type UdpThroughput,
} from './measure.js';
import { setUpMode, podMtuFor, type LabMode } from './modes.js';
import { deleteNamespacesSync, forgetOwner, labTempDir, newPrefix, recordOwner } from './namespaces.js';

export type { LabMode } from './modes.js';

export interface LabOptions {
  hosts?: 2 | 3;
  mode: LabMode;
  /** Extra agent flags (flannel-ts mode), the same for every host or chosen per host (1-based). */
  agentArgs?: readonly string[] | ((host: number) => readonly string[]);
  /**
   * flannel-ts mode: pass the static config flags (--network/--subnet/--public-ip/--iface/--peer).
   * Set false when agentArgs supplies the whole configuration (e.g. etcd). Default true.
   */
  agentStaticConfig?: boolean;
  /** flannel-ts mode: the hosts that run an agent (default all); the others are left to the caller. */
  agentHosts?: readonly number[];
  /** The pods' MTU; default the mode's (flannel-ts: udp's 1472; set 1450 for its vxlan backend). */
  podMtu?: number;
  /** Repository root holding dist/src/cli/main.js; defaults to the one this file was built in. */
  repoDir?: string;
  /** Wait for each agent's "forwarding" line this long (ms). Default 20 s. */
  agentReadyTimeoutMs?: number;
  /** Log the setup steps to stderr. */
  verbose?: boolean;
  /**
   * Runs after the namespaces are built and before the overlay is set up (flannel-ts mode: before
   * the agents start), e.g. to start etcd in the underlay namespace and write the network config.
   */
  beforeAgents?: (lab: Lab) => Promise<void>;
}

export const NETWORK = '10.244.0.0/16';
/** Underlay address of the switch's bridge: not a peer, useful as a stranger's source. */
export const UNDERLAY_SWITCH_ADDR = '192.0.2.254';
export const FLANNEL_UDP_PORT = 8285;

export function defaultRepoDir(): string {
  // dist/src/lab/lab.js -> repository root
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

export class Lab implements SyncCleanup {
  readonly hostCount: number;
  readonly tempDir: string;
  /** Agents by host number (1-based), flannel-ts mode only. */
  readonly agents = new Map<number, AgentProcess>();
  private readonly children = new Set<ChildProcess>();
  private readonly namespaces: string[] = [];
  private destroyed = false;

  private constructor(
    readonly prefix: string,
    readonly mode: LabMode,
    hosts: number,
    readonly repoDir: string,
    private readonly verbose: boolean,
    private readonly podMtuOverride: number | undefined,
  ) {
    this.hostCount = hosts;
    this.tempDir = labTempDir(prefix);
  }

  // ---- names and addresses -------------------------------------------------------------

  get underlayNs(): string {
    return `${this.prefix}u`;
  }
  hostNs(n: number): string {
    return `${this.prefix}h${n}`;
  }
  podNs(n: number): string {
    return `${this.prefix}p${n}`;
  }
  hostAddr(n: number): string {
    return `192.0.2.${n}`;
  }
  podAddr(n: number): string {
    return `10.244.${n}.2`;
  }
  /** The host's own address in its subnet (the pod's gateway), 10.244.N.1. */
  podGateway(n: number): string {
    return `10.244.${n}.1`;
  }
  subnet(n: number): string {
    return `10.244.${n}.0/24`;
  }
  get podMtu(): number {
    return this.podMtuOverride ?? podMtuFor(this.mode);
  }
  hostNumbers(): number[] {
    return Array.from({ length: this.hostCount }, (_, i) => i + 1);
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  static async create(options: LabOptions): Promise<Lab> {
    const hosts = options.hosts ?? 2;
    if (hosts !== 2 && hosts !== 3) throw new Error(`a lab has 2 or 3 hosts, not ${String(hosts)}`);
    const tools = ['ip', 'sysctl', 'ping', 'iperf3', 'ss'];
    if (options.mode === 'vxlan') tools.push('bridge');
    if (options.mode === 'socat') tools.push('socat');
    if (options.mode === 'proxy-shape') tools.push('cc');
    await requireTools(tools);
    const lab = new Lab(
      newPrefix(),
      options.mode,
      hosts,
      options.repoDir ?? defaultRepoDir(),
      options.verbose ?? false,
      options.podMtu,
    );
    recordOwner(lab.prefix);
    registerLive(lab);
    try {
      mkdirSync(lab.tempDir, { recursive: true });
      await lab.buildTopology();
      await options.beforeAgents?.(lab);
      await setUpMode(lab, options);
      return lab;
    } catch (e) {
      await lab.destroy();
      throw e;
    }
  }

  private log(text: string): void {
    if (this.verbose) process.stderr.write(`[lab ${this.prefix}] ${text}\n`);
  }

  private async addNamespace(name: string): Promise<void> {
    await runChecked(['ip', 'netns', 'add', name]);
    this.namespaces.push(name);
    await runChecked(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
    // New namespaces inherit IPv4 conf from the root namespace: pin what the lab relies on.
    // rp_filter off (asymmetric overlay paths), IPv6 off (no router solicitations or DAD
    // noise through the overlay or its counters).
    await runChecked(
      inNamespace(name, [
        'sysctl',
        '-q',
        '-w',
        'net.ipv4.conf.all.rp_filter=0',
        'net.ipv4.conf.default.rp_filter=0',
        'net.ipv6.conf.all.disable_ipv6=1',
        'net.ipv6.conf.default.disable_ipv6=1',
      ]),
    );
  }

  private async buildTopology(): Promise<void> {
    const u = this.underlayNs;
    this.log('creating namespaces');
    await this.addNamespace(u);
    for (const n of this.hostNumbers()) {
      await this.addNamespace(this.hostNs(n));
      await this.addNamespace(this.podNs(n));
    }
    await runChecked(['ip', '-n', u, 'link', 'add', 'br0', 'type', 'bridge']);
    await runChecked(['ip', '-n', u, 'addr', 'add', `${UNDERLAY_SWITCH_ADDR}/24`, 'dev', 'br0']);
    await runChecked(['ip', '-n', u, 'link', 'set', 'br0', 'up']);
    for (const n of this.hostNumbers()) {
      const h = this.hostNs(n);
      const p = this.podNs(n);
      // Hosts forward between pod and overlay; accept_local lets the kernel accept packets whose
      // source is one of its own addresses (flannel0's ICMP net-unreachable), as flannel needs.
      await runChecked(
        inNamespace(h, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.default.accept_local=1']),
      );
      this.log(`wiring host ${n}`);
      await runChecked(['ip', '-n', u, 'link', 'add', `h${n}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h]);
      await runChecked(['ip', '-n', u, 'link', 'set', `h${n}`, 'master', 'br0', 'up']);
      await runChecked(['ip', '-n', h, 'link', 'set', 'eth0', 'mtu', '1500', 'up']);
      await runChecked(['ip', '-n', h, 'addr', 'add', `${this.hostAddr(n)}/24`, 'dev', 'eth0']);
      const mtu = String(this.podMtu);
      await runChecked(['ip', '-n', h, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p]);
      await runChecked(['ip', '-n', h, 'link', 'set', 'veth0', 'mtu', mtu, 'up']);
      await runChecked(['ip', '-n', h, 'addr', 'add', `${this.podGateway(n)}/24`, 'dev', 'veth0']);
      await runChecked(['ip', '-n', p, 'link', 'set', 'eth0', 'mtu', mtu, 'up']);
      await runChecked(['ip', '-n', p, 'addr', 'add', `${this.podAddr(n)}/24`, 'dev', 'eth0']);
      await runChecked(['ip', '-n', p, 'route', 'add', 'default', 'via', this.podGateway(n)]);
    }
  }

  /** Starts the agent for host n (flannel-ts mode) and waits until it forwards. */
  async startAgent(n: number, argv: readonly string[], readyTimeoutMs: number): Promise<AgentProcess> {
    const agent = AgentProcess.start(this.hostNs(n), argv);
    this.agents.set(n, agent);
    this.children.add(agent.child);
    this.log(`agent ${n}: ${argv.join(' ')}`);
    await agent.waitForwarding(readyTimeoutMs);
    return agent;
  }

  agent(n: number): AgentProcess {
    const agent = this.agents.get(n);
    if (!agent) throw new Error(`no agent on host ${n} (mode ${this.mode})`);
    return agent;
  }

  /** Sends SIGUSR1 to host n's agent and returns the counters it prints. */
  agentCounters(n: number): Promise<AgentCounters> {
    return this.agent(n).counters();
  }

  /** Kills the lab's processes and deletes its namespaces and files. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const agent of this.agents.values()) {
      try {
        await agent.stop(3000);
      } catch {
        // killed below anyway
      }
    }
    await Promise.all([...this.children].map((c) => terminate(c, 'SIGTERM', 1000)));
    this.cleanupNamespaces();
    unregisterLive(this);
  }

  /** Synchronous teardown for exit handlers. */
  cleanupSync(): void {
    this.destroyed = true;
    for (const child of this.children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    this.cleanupNamespaces();
  }

  private cleanupNamespaces(): void {
    deleteNamespacesSync([...this.namespaces].reverse());
    this.namespaces.length = 0;
    rmSync(this.tempDir, { recursive: true, force: true });
    forgetOwner(this.prefix);
  }

  // ---- running things ----------------------------------------------------------------------

  /** Runs argv inside namespace ns; never rejects on a non-zero exit. */
  exec(ns: string, argv: readonly string[], timeoutMs?: number): Promise<ExecResult> {
    return run(inNamespace(ns, argv), timeoutMs);
  }

  /** Like exec, but rejects on a non-zero exit. */
  execChecked(ns: string, argv: readonly string[], timeoutMs?: number): Promise<ExecResult> {
    return runChecked(inNamespace(ns, argv), timeoutMs);
  }

  /** Starts a long-running process inside ns; it is killed by destroy() if still running. */
  spawn(ns: string, argv: readonly string[]): ChildProcess {
    const child = spawnIn(ns, argv);
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  async ping(
    fromNs: string,
    toAddr: string,
    opts: {
      count?: number;
      intervalSec?: number;
      sizeBytes?: number;
      timeoutSec?: number;
      dontFragment?: boolean;
    } = {},
  ): Promise<PingResult> {
    const count = opts.count ?? 3;
    const interval = opts.intervalSec ?? 0.2;
    const argv = ['ping', '-n', '-q', '-c', String(count), '-i', String(interval), '-W', String(opts.timeoutSec ?? 2)];
    if (opts.sizeBytes !== undefined) argv.push('-s', String(opts.sizeBytes));
    if (opts.dontFragment) argv.push('-M', 'do');
    argv.push(toAddr);
    const r = await this.exec(fromNs, argv, Math.ceil((count * interval + (opts.timeoutSec ?? 2) + 10) * 1000));
    return parsePing(r.stdout + r.stderr);
  }

  /** Starts a one-off iperf3 server in pod `toPod` and waits until it listens. */
  private async startIperfServer(toPod: number, port: number): Promise<ChildProcess> {
    const ns = this.podNs(toPod);
    const server = this.spawn(ns, ['iperf3', '-s', '-1', '-J', '-B', this.podAddr(toPod), '-p', String(port)]);
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const ss = await this.exec(ns, ['ss', '-Hltn', `sport = :${port}`]);
      if (ss.stdout.includes(`:${port}`)) return server;
      if (server.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await terminate(server, 'SIGKILL');
    throw new Error(`iperf3 server in ${ns} did not start listening`);
  }

  private async iperfClient(
    fromPod: number,
    toPod: number,
    extra: readonly string[],
    seconds: number,
  ): Promise<string> {
    const port = 5201;
    const server = await this.startIperfServer(toPod, port);
    try {
      const argv = ['iperf3', '-J', '-c', this.podAddr(toPod), '-p', String(port), '-t', String(seconds), ...extra];
      const r = await this.exec(this.podNs(fromPod), argv, (seconds + 30) * 1000);
      if (r.code !== 0 && r.stdout.trim() === '') {
        throw new Error(`iperf3 client failed (exit ${r.code}): ${r.stderr}`);
      }
      return r.stdout;
    } finally {
      await terminate(server, 'SIGTERM', 2000);
    }
  }

  /** iperf3 TCP from pod to pod for `seconds`. */
  async iperf3Tcp(fromPod: number, toPod: number, seconds: number): Promise<TcpThroughput> {
    return parseIperfTcp(await this.iperfClient(fromPod, toPod, [], seconds));
  }

  /**
   * iperf3 UDP from pod to pod; bandwidth 0 = as fast as iperf3 sends. The delivered count is the
   * server's (receiver's) own.
   */
  async iperf3Udp(
    fromPod: number,
    toPod: number,
    seconds: number,
    opts: { payloadBytes?: number; bandwidth?: string } = {},
  ): Promise<UdpThroughput> {
    const payload = opts.payloadBytes ?? 64;
    const extra = ['-u', '-b', opts.bandwidth ?? '0', '-l', String(payload)];
    return parseIperfUdp(await this.iperfClient(fromPod, toPod, extra, seconds), payload);
  }
}
