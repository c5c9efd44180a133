/**
 * Throughput side by side: every forwarder (flannel-ts variants, kernel VXLAN, host-gw) gets a
 * two-host lab, all built first and kept up; then R interleaved rounds each measure every
 * forwarder in turn (pod-to-pod ping RTT, iperf3 TCP, iperf3 UDP with 64-byte payloads), the
 * starting forwarder rotating per round. The table shows medians over rounds, and ratios to
 * kernel VXLAN taken per round (VXLAN of the same round, minutes apart at most) before the
 * median, because absolute figures drift ±15% from run to run on this machine. flanneld's own
 * figures (docs/benchmarks.md, "Reference rows") are shown as a reference row, never as a measurement of this run.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  Lab,
  podMtuFor,
  removeStaleLabNamespaces,
  type AgentCounters,
  type LabMode,
  type LabOptions,
} from '../src/lab/index.js';
import { FileKvStore } from '../src/subnet/file-kv.js';

/**
 * What the bench compares: the lab's modes, and flannel-ts one step at a time: batching only,
 * + TUN offloads (TSO reads, GRO writes), + UDP GSO/GRO, + io_uring for flannel0 (the default),
 * + a worker thread per direction (--workers 2); and flannel-ts in flanneld mode with its kernel
 * backends (vxlan, host-gw), beside the same kernel datapaths set up by hand: their ratios to
 * those rows should be 1.0 (a lower one means a device set up wrong: MTU, offloads, learning).
 */
export const BENCH_FORWARDERS = [
  'flannel-ts',
  'flannel-ts-event-loop',
  'flannel-ts-workers',
  'flannel-ts-no-uring',
  'flannel-ts-tun-offloads',
  'flannel-ts-no-offload',
  'flannel-ts-kernel',
  'flannel-ts-kernel-wire',
  'vxlan',
  'flannel-ts-vxlan',
  'host-gw',
  'flannel-ts-host-gw',
] as const;
export type BenchForwarder = (typeof BENCH_FORWARDERS)[number];

const FLANNEL_TS_STEPS: Partial<Record<BenchForwarder, string[]>> = {
  'flannel-ts-event-loop': ['--datapath-wait=event-loop'],
  'flannel-ts-workers': ['--workers', '2'],
  'flannel-ts-no-uring': ['--io-uring=false'],
  'flannel-ts-tun-offloads': ['--offloads=tun', '--io-uring=false'],
  'flannel-ts-no-offload': ['--no-offload', '--io-uring=false'],
};

/** flannel-ts in flanneld mode (the embedded file registry) with a kernel backend. */
const FLANNEL_TS_BACKENDS: Partial<Record<BenchForwarder, { type: 'vxlan' | 'host-gw'; podMtu: number }>> = {
  'flannel-ts-vxlan': { type: 'vxlan', podMtu: 1450 },
  'flannel-ts-host-gw': { type: 'host-gw', podMtu: 1500 },
};

/** The userspace rows measure the TypeScript datapath alone (the agent's default is --datapath auto). */
const USERSPACE = ['--datapath', 'userspace'];

/**
 * The kernel fast path (docs/fast-path.md): with the veths' offloads as they are (super-packets
 * cross the underlay whole, as between kernel VXLAN hosts in this lab), and on a wire-like underlay
 * (the hosts' and switch ports' checksum and segmentation offloads off: every datagram is cut and
 * checksummed in software, as a NIC without UDP-tunnel offloads needs).
 */
const FAST_PATH: Partial<Record<BenchForwarder, { wireLike: boolean }>> = {
  'flannel-ts-kernel': { wireLike: false },
  'flannel-ts-kernel-wire': { wireLike: true },
};

interface LabSetup {
  mode: LabMode;
  agentArgs: string[];
  beforeAgents?: (lab: Lab) => Promise<void>;
}

function labSetup(forwarder: BenchForwarder): LabSetup {
  if (FLANNEL_TS_BACKENDS[forwarder]) return { mode: 'flannel-ts', agentArgs: [] };
  const fast = FAST_PATH[forwarder];
  if (fast) {
    return {
      mode: 'flannel-ts',
      agentArgs: ['--datapath', 'kernel'],
      ...(fast.wireLike ? { beforeAgents: wireLikeUnderlay } : {}),
    };
  }
  if (forwarder === 'flannel-ts') return { mode: 'flannel-ts', agentArgs: USERSPACE };
  const step = FLANNEL_TS_STEPS[forwarder];
  return step
    ? { mode: 'flannel-ts', agentArgs: [...step, ...USERSPACE] }
    : { mode: forwarder as LabMode, agentArgs: [] };
}

/** Every host's eth0 and its switch port without checksum and segmentation offloads (needs ethtool). */
async function wireLikeUnderlay(lab: Lab): Promise<void> {
  const off = ['rx', 'off', 'tx', 'off', 'sg', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off'];
  for (const n of lab.hostNumbers()) {
    await lab.execChecked(lab.hostNs(n), ['ethtool', '-K', 'eth0', ...off]);
    await lab.execChecked(lab.underlayNs, ['ethtool', '-K', `h${n}`, ...off]);
  }
}

/** The lab options of a forwarder: for a kernel backend, the registry file written before the agents. */
function labOptions(forwarder: BenchForwarder): LabOptions {
  const setup = labSetup(forwarder);
  const backend = FLANNEL_TS_BACKENDS[forwarder];
  if (backend === undefined) {
    return {
      hosts: 2,
      mode: setup.mode,
      agentArgs: setup.agentArgs,
      ...(setup.beforeAgents ? { beforeAgents: setup.beforeAgents } : {}),
    };
  }
  let dir = '';
  return {
    hosts: 2,
    mode: 'flannel-ts',
    podMtu: backend.podMtu,
    agentStaticConfig: false,
    agentArgs: (n) => [
      '--kv-file',
      join(dir, 'registry.json'),
      '--iface',
      'eth0',
      '--subnet-file',
      join(dir, `subnet-${n}.env`),
    ],
    beforeAgents: async (lab) => {
      dir = lab.tempDir;
      const store = new FileKvStore({ path: join(dir, 'registry.json') });
      await store.put(
        '/coreos.com/network/config',
        `{"Network":"10.244.0.0/16","Backend":{"Type":"${backend.type}"}}`,
        0,
      );
      await store.close();
      // flannel's previous-subnet rule gives host N the subnet its lab pod lives in.
      for (const n of lab.hostNumbers())
        writeFileSync(join(dir, `subnet-${n}.env`), `FLANNEL_SUBNET=10.244.${n}.1/24\n`);
    },
  };
}

export interface ThroughputOptions {
  modes: readonly BenchForwarder[];
  /** iperf3 duration per test (s). */
  seconds: number;
  /** How many interleaved rounds measure every forwarder (1..10). */
  rounds: number;
  pingCount: number;
  pingIntervalSec: number;
  log: (line: string) => void;
}

export const DEFAULT_THROUGHPUT_OPTIONS: ThroughputOptions = {
  modes: BENCH_FORWARDERS,
  seconds: 5,
  rounds: 3,
  pingCount: 200,
  pingIntervalSec: 0.005,
  log: (line) => process.stderr.write(`${line}\n`),
};

/** One round's measurement of one forwarder: ping, then iperf3 TCP, then iperf3 UDP 64-byte. */
export interface RoundSample {
  /** 1-based round number; samples of different forwarders with the same round are compared. */
  round: number;
  /** Position of this forwarder within its round (0 = measured first). */
  position: number;
  tcpGbitPerSec: number;
  tcpRetransmits: number;
  /** Whole-machine CPU seconds (user+system+irq+softirq, all cores) per gigabit during the TCP run. */
  tcpCpuSecondsPerGbit: number;
  /** How busy the whole machine was during the TCP run (100 = every core all the time). */
  tcpMachineBusyPercent: number;
  /** flannel-ts only: the two agents' own CPU seconds (user+system, from /proc/PID/stat) per gigabit. */
  tcpAgentCpuSecondsPerGbit?: number;
  udp64DeliveredPps: number;
  udp64SentPps: number;
  udp64LostPercent: number;
  pingAvgRttUs: number;
  pingLoss: number;
}

/**
 * Ratios to kernel VXLAN: for each round the forwarder's figure over VXLAN's figure of the same
 * round, then the median over the rounds where both were measured (drift between rounds cancels).
 */
export interface VsVxlan {
  /** How many rounds had both samples. */
  rounds: number;
  tcpGbitPerSec: number;
  /** Lowest and highest per-round TCP ratio. */
  tcpGbitPerSecMin: number;
  tcpGbitPerSecMax: number;
  tcpCpuSecondsPerGbit: number;
  udp64DeliveredPps: number;
  pingAvgRttUs: number;
}

/**
 * One forwarder over the whole run. The per-metric fields (tcpGbitPerSec, ...) are medians over
 * `rounds`; the raw samples are in `rounds`.
 */
export interface ModeResult {
  mode: BenchForwarder;
  podMtu: number;
  /** False if the lab failed to build, or any round, or the final counter read, failed. */
  ok: boolean;
  error?: string;
  /** Every round's sample, in round order (fewer than asked if the forwarder failed). */
  rounds: RoundSample[];
  /** Medians of the per-round ratios to VXLAN; absent if no round has both samples. */
  vsVxlan?: VsVxlan;
  tcpGbitPerSec?: number;
  tcpRetransmits?: number;
  tcpCpuSecondsPerGbit?: number;
  tcpMachineBusyPercent?: number;
  tcpAgentCpuSecondsPerGbit?: number;
  udp64DeliveredPps?: number;
  udp64SentPps?: number;
  udp64LostPercent?: number;
  pingAvgRttUs?: number;
  pingLoss?: number;
  /**
   * flannel-ts only, read once after the last round: the sending agent's (host 1) and receiving
   * agent's (host 2) counters, cumulative over warm-up and all rounds.
   */
  agentCounters?: { host1?: AgentCounters; host2?: AgentCounters };
  /**
   * flannel-ts only, read once after the last round: where the kernel dropped packets around the
   * agent, per host: flannel0's tx queue (the agent did not read TUN fast enough) and UDP
   * receive-buffer overflows (it did not drain its socket fast enough).
   */
  kernelDrops?: { host1?: KernelDrops; host2?: KernelDrops };
}

/** What the whole machine and the agents did while every lab was up and nothing was measured. */
export interface IdleCheck {
  seconds: number;
  labsUp: number;
  machineBusyPercent: number;
  /** All agents together, CPU seconds per second (1 = one core). */
  agentsCpuPerSecond: number;
}

export interface ThroughputRun {
  results: ModeResult[];
  idle?: IdleCheck;
}

/**
 * CPU seconds the whole machine spent so far, all cores, from /proc/stat: busy (user, nice,
 * system, irq and softirq: softirq is where kernel VXLAN and routing do their work, so
 * per-process times would miss it) and in all (busy + idle + iowait). USER_HZ is 100 on Linux.
 */
function machineCpuSeconds(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('cpu '))!;
  const [user, nice, system, idle, iowait, irq, softirq] = line.trim().split(/\s+/).slice(1).map(Number);
  const busy = (user! + nice! + system! + irq! + softirq!) / 100;
  return { busy, total: busy + (idle! + iowait!) / 100 };
}

/** CPU seconds (user + system) a process has used so far; 0 if it is gone. */
export function processCpuSeconds(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

export interface KernelDrops {
  flannel0TxDropped: number;
  udpRcvbufErrors: number;
}

async function kernelDrops(lab: Lab, n: number): Promise<KernelDrops> {
  const link = await lab.execChecked(lab.hostNs(n), ['ip', '-j', '-s', 'link', 'show', 'flannel0']);
  const [info] = JSON.parse(link.stdout) as { stats64?: { tx?: { dropped?: number } } }[];
  const snmp = await lab.execChecked(lab.hostNs(n), ['cat', '/proc/net/snmp']);
  const udpLines = snmp.stdout.split('\n').filter((l) => l.startsWith('Udp: '));
  const names = udpLines[0]?.split(/\s+/) ?? [];
  const values = udpLines[1]?.split(/\s+/) ?? [];
  const index = names.indexOf('RcvbufErrors');
  return {
    flannel0TxDropped: info?.stats64?.tx?.dropped ?? Number.NaN,
    udpRcvbufErrors: index >= 0 ? Number(values[index]) : Number.NaN,
  };
}

export interface ReferenceRow {
  name: string;
  source: string;
  tcpGbitPerSec: number;
  tcpVsVxlan: number;
  udp64DeliveredPps: number;
  udp64VsVxlan: number;
  pingAvgRttUs: number;
}

/**
 * flanneld's udp datapath (its C proxy), measured earlier in the same lab shape on the same kind of machine
 * (docs/benchmarks.md, "Reference rows"). Not measured by this run.
 */
export const FLANNELD_REFERENCE: ReferenceRow = {
  name: 'flanneld udp (C proxy), reference from docs/benchmarks.md, not measured in this run',
  source: 'docs/benchmarks.md',
  tcpGbitPerSec: 1.03,
  tcpVsVxlan: 0.075,
  udp64DeliveredPps: 59_000,
  udp64VsVxlan: 0.56,
  pingAvgRttUs: 110,
};
/** Kernel VXLAN's round trip in the same reference run (docs/benchmarks.md), to put flanneld's 110 µs in proportion. */
const DOC_VXLAN_RTT_US = 20;

interface BenchLab {
  mode: BenchForwarder;
  lab: Lab;
  agentPids: number[];
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Builds a forwarder's lab and warms it up (ARP/neighbour entries, the agents' first packets). */
async function buildLab(mode: BenchForwarder, log: ThroughputOptions['log']): Promise<BenchLab> {
  log(`[${mode}] building lab`);
  const setup = labSetup(mode);
  const lab = await Lab.create(labOptions(mode));
  try {
    let warm = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 5, intervalSec: 0.01 });
    // flanneld mode: an agent may be forwarding before it has seen the other's lease.
    for (let i = 0; i < 20 && warm.received === 0 && FLANNEL_TS_BACKENDS[mode]; i++) {
      await new Promise((r) => setTimeout(r, 250));
      warm = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 5, intervalSec: 0.01 });
    }
    if (warm.received === 0) throw new Error(`pod 1 cannot reach pod 2 in mode ${mode}`);
    const agentPids = setup.mode === 'flannel-ts' ? [lab.agent(1).pid, lab.agent(2).pid] : [];
    return { mode, lab, agentPids };
  } catch (e) {
    await lab.destroy();
    throw e;
  }
}

async function measureRound(
  b: BenchLab,
  round: number,
  position: number,
  opts: ThroughputOptions,
): Promise<RoundSample> {
  const { lab, mode } = b;
  const tag = `[round ${round}/${opts.rounds}] [${mode}]`;
  opts.log(`${tag} ping x${opts.pingCount}, ${opts.pingIntervalSec * 1000} ms apart`);
  const ping = await lab.ping(lab.podNs(1), lab.podAddr(2), {
    count: opts.pingCount,
    intervalSec: opts.pingIntervalSec,
  });
  if (ping.received === 0) throw new Error(`round ${round}: pod 1 no longer reaches pod 2`);

  opts.log(`${tag} iperf3 TCP ${opts.seconds} s`);
  const agentCpu = (): number => b.agentPids.reduce((sum, pid) => sum + processCpuSeconds(pid), 0);
  const machineBefore = machineCpuSeconds(),
    agentsBefore = agentCpu();
  const tcp = await lab.iperf3Tcp(1, 2, opts.seconds);
  const machineAfter = machineCpuSeconds(),
    agentsAfter = agentCpu();
  const busy = machineAfter.busy - machineBefore.busy;
  const tcpGbitPerSec = tcp.receivedBitsPerSecond / 1e9;

  opts.log(`${tag} iperf3 UDP 64-byte payloads, -b 0, ${opts.seconds} s`);
  const udp = await lab.iperf3Udp(1, 2, opts.seconds, { payloadBytes: 64, bandwidth: '0' });

  const sample: RoundSample = {
    round,
    position,
    tcpGbitPerSec,
    tcpRetransmits: tcp.retransmits,
    tcpCpuSecondsPerGbit: busy / (tcpGbitPerSec * opts.seconds),
    tcpMachineBusyPercent: (100 * busy) / (machineAfter.total - machineBefore.total),
    udp64DeliveredPps: udp.deliveredPacketsPerSecond,
    udp64SentPps: udp.sentPacketsPerSecond,
    udp64LostPercent: udp.lostPercent,
    pingAvgRttUs: ping.avgRttUs,
    pingLoss: ping.transmitted - ping.received,
  };
  if (b.agentPids.length > 0)
    sample.tcpAgentCpuSecondsPerGbit = (agentsAfter - agentsBefore) / (tcpGbitPerSec * opts.seconds);
  opts.log(
    `${tag} TCP ${tcpGbitPerSec.toFixed(2)} Gbit/s, busy ${sample.tcpMachineBusyPercent.toFixed(0)}%, ` +
      `UDP64 ${(sample.udp64DeliveredPps / 1000).toFixed(1)}k pps, ping ${sample.pingAvgRttUs.toFixed(0)} µs`,
  );
  return sample;
}

/** The order of round `round` (1-based): the forwarders rotated so each round starts one later. */
export function roundOrder<T>(items: readonly T[], round: number): T[] {
  if (items.length === 0) return [];
  const shift = (round - 1) % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

/** Machine busy % and the agents' CPU while all labs are up and idle, over `seconds`. */
async function idleCheck(labs: readonly BenchLab[], seconds: number): Promise<IdleCheck> {
  const pids = labs.flatMap((b) => b.agentPids);
  const agentCpu = (): number => pids.reduce((sum, pid) => sum + processCpuSeconds(pid), 0);
  const machineBefore = machineCpuSeconds(),
    agentsBefore = agentCpu();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const machineAfter = machineCpuSeconds(),
    agentsAfter = agentCpu();
  return {
    seconds,
    labsUp: labs.length,
    machineBusyPercent: (100 * (machineAfter.busy - machineBefore.busy)) / (machineAfter.total - machineBefore.total),
    agentsCpuPerSecond: (agentsAfter - agentsBefore) / seconds,
  };
}

/**
 * Builds every forwarder's lab first and keeps them all up; then `rounds` rounds, each measuring
 * every forwarder in turn (one at a time: the machine has 2 cores, the forwarders must not
 * compete; idle labs cost ~nothing, see IdleCheck), the starting forwarder rotating each round.
 * A forwarder whose lab fails to build, or that fails in a round, is marked failed, its lab
 * destroyed at once and left out of later rounds; the others go on. All labs are destroyed at
 * the end, also on failure.
 */
export async function runThroughput(options: Partial<ThroughputOptions> = {}): Promise<ThroughputRun> {
  const opts = { ...DEFAULT_THROUGHPUT_OPTIONS, ...options };
  const removed = removeStaleLabNamespaces();
  if (removed.length > 0) opts.log(`removed stale lab namespaces: ${removed.join(' ')}`);
  const results = new Map<BenchForwarder, ModeResult>();
  for (const mode of opts.modes) results.set(mode, { mode, podMtu: 0, ok: false, rounds: [] });
  const live = new Map<BenchForwarder, BenchLab>();
  const fail = async (mode: BenchForwarder, e: unknown): Promise<void> => {
    const result = results.get(mode)!;
    result.ok = false;
    result.error = errorText(e);
    opts.log(`[${mode}] FAILED: ${result.error}`);
    const b = live.get(mode);
    live.delete(mode);
    await b?.lab.destroy();
  };
  let idle: IdleCheck | undefined;
  try {
    for (const mode of opts.modes) {
      try {
        const b = await buildLab(mode, opts.log);
        live.set(mode, b);
        results.get(mode)!.podMtu = b.lab.podMtu;
        results.get(mode)!.ok = true;
      } catch (e) {
        results.get(mode)!.podMtu = FLANNEL_TS_BACKENDS[mode]?.podMtu ?? podMtuFor(labSetup(mode).mode);
        await fail(mode, e);
      }
    }
    if (live.size > 1) {
      idle = await idleCheck([...live.values()], 3);
      opts.log(
        `idle check, ${idle.labsUp} labs up for ` +
          `${idle.seconds} s: machine busy ${idle.machineBusyPercent.toFixed(1)}%, ` +
          `all agents together ${(idle.agentsCpuPerSecond * 1000).toFixed(1)} CPU-ms/s`,
      );
    }
    for (let round = 1; round <= opts.rounds; round++) {
      const order = roundOrder(opts.modes, round);
      for (const [position, mode] of order.entries()) {
        const b = live.get(mode);
        if (!b) continue;
        try {
          results.get(mode)!.rounds.push(await measureRound(b, round, position, opts));
        } catch (e) {
          await fail(mode, e);
        }
      }
    }
    for (const b of [...live.values()]) {
      // The kernel backends have no datapath counters (the kernel forwards).
      if (b.agentPids.length === 0 || FLANNEL_TS_BACKENDS[b.mode]) continue;
      try {
        const result = results.get(b.mode)!;
        result.agentCounters = { host1: await b.lab.agentCounters(1), host2: await b.lab.agentCounters(2) };
        result.kernelDrops = { host1: await kernelDrops(b.lab, 1), host2: await kernelDrops(b.lab, 2) };
        opts.log(`[${b.mode}] kernel drops around the agents: ${JSON.stringify(result.kernelDrops)}`);
      } catch (e) {
        await fail(b.mode, e);
      }
    }
  } finally {
    for (const b of live.values()) {
      try {
        await b.lab.destroy();
      } catch (e) {
        opts.log(`[${b.mode}] destroying the lab: ${errorText(e)}`);
      }
    }
    live.clear();
  }
  return { results: summarizeRounds([...results.values()]), idle };
}

// ---- medians and ratios (pure) -------------------------------------------------------------

/** Median of the finite values; the mean of the middle two for an even count; NaN if none. */
export function median(values: readonly number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const MEDIAN_FIELDS = [
  'tcpGbitPerSec',
  'tcpRetransmits',
  'tcpCpuSecondsPerGbit',
  'tcpMachineBusyPercent',
  'tcpAgentCpuSecondsPerGbit',
  'udp64DeliveredPps',
  'udp64SentPps',
  'udp64LostPercent',
  'pingAvgRttUs',
  'pingLoss',
] as const satisfies readonly (keyof RoundSample & keyof ModeResult)[];

/** Per-round ratios of a field to the VXLAN sample of the same round (rounds with both only). */
function roundRatios(
  samples: readonly RoundSample[],
  vxlanByRound: ReadonlyMap<number, RoundSample>,
  field: keyof RoundSample,
): number[] {
  const ratios: number[] = [];
  for (const s of samples) {
    const base = vxlanByRound.get(s.round)?.[field];
    const value = s[field];
    if (typeof base === 'number' && typeof value === 'number' && base > 0 && Number.isFinite(value))
      ratios.push(value / base);
  }
  return ratios;
}

/**
 * Fills each result's per-metric fields with the median of its rounds, and `vsVxlan` with the
 * medians (and the TCP min-max) of its per-round ratios to the VXLAN sample of the same round.
 * Pure: returns new objects, the inputs' `rounds` are the only thing read.
 */
export function summarizeRounds(results: readonly ModeResult[]): ModeResult[] {
  const vxlan = results.find((r) => r.mode === 'vxlan');
  const vxlanByRound = new Map((vxlan?.rounds ?? []).map((s) => [s.round, s]));
  return results.map((r) => {
    const out: ModeResult = { ...r, rounds: [...r.rounds] };
    for (const field of MEDIAN_FIELDS) {
      const values = r.rounds.map((s) => s[field]).filter((v): v is number => v !== undefined);
      if (values.length > 0) out[field] = median(values);
      else delete out[field];
    }
    const tcp = roundRatios(r.rounds, vxlanByRound, 'tcpGbitPerSec');
    delete out.vsVxlan;
    if (tcp.length > 0) {
      out.vsVxlan = {
        rounds: tcp.length,
        tcpGbitPerSec: median(tcp),
        tcpGbitPerSecMin: Math.min(...tcp),
        tcpGbitPerSecMax: Math.max(...tcp),
        tcpCpuSecondsPerGbit: median(roundRatios(r.rounds, vxlanByRound, 'tcpCpuSecondsPerGbit')),
        udp64DeliveredPps: median(roundRatios(r.rounds, vxlanByRound, 'udp64DeliveredPps')),
        pingAvgRttUs: median(roundRatios(r.rounds, vxlanByRound, 'pingAvgRttUs')),
      };
    }
    return out;
  });
}

const MODE_LABELS: Record<BenchForwarder, string> = {
  'flannel-ts':
    'flannel-ts --datapath userspace (this build: batching + TUN offloads + UDP GSO/GRO + io_uring, a forwarding thread waiting in io_uring)',
  'flannel-ts-event-loop':
    'flannel-ts --datapath userspace --datapath-wait=event-loop (forwarding on the main thread, beside the control plane)',
  'flannel-ts-workers': 'flannel-ts --workers 2 (the default + a worker thread per direction)',
  'flannel-ts-no-uring': 'flannel-ts --io-uring=false (batching + TUN offloads + UDP GSO/GRO, in the event loop)',
  'flannel-ts-tun-offloads': 'flannel-ts --offloads=tun --io-uring=false (batching + TSO reads, GRO writes)',
  'flannel-ts-no-offload': 'flannel-ts --no-offload --io-uring=false (batching only)',
  'flannel-ts-kernel': 'flannel-ts --datapath kernel (TC-eBPF fast path, veth offloads as they are)',
  'flannel-ts-kernel-wire': 'flannel-ts --datapath kernel, wire-like underlay (veth offloads off)',
  vxlan: 'kernel VXLAN (flannel vxlan backend)',
  'flannel-ts-vxlan': 'flannel-ts, vxlan backend (kernel VXLAN programmed by flannel-ts)',
  'host-gw': 'host-gw (kernel routing, no encapsulation)',
  'flannel-ts-host-gw': 'flannel-ts, host-gw backend (kernel routes programmed by flannel-ts)',
};

function fmt(value: number | undefined, digits: number): string {
  return value === undefined || !Number.isFinite(value) ? 'n/a' : value.toFixed(digits);
}

function ratio(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return 'n/a';
  return value >= 0.1 ? value.toFixed(2) : value.toFixed(3);
}

function kpps(pps: number | undefined): string {
  return pps === undefined || !Number.isFinite(pps) ? 'n/a' : `${(pps / 1000).toFixed(1)}k`;
}

/**
 * Markdown table of the run: every figure is the median over the forwarder's rounds, every
 * "vs VXLAN" the median of its per-round ratios to VXLAN (see summarizeRounds, which must have
 * filled the results), "range" the lowest and highest per-round TCP ratio.
 */
export function throughputTable(results: readonly ModeResult[]): string {
  const lines = [
    '| forwarder | pod MTU | TCP Gbit/s | vs VXLAN | TCP vs VXLAN, ' +
      'range | CPU s/Gbit (TCP) | vs VXLAN | of which agents | machine ' +
      'busy % | UDP64 delivered pps | vs VXLAN | UDP64 loss % | ping RTT µs | vs VXLAN |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    if (!r.ok) {
      lines.push(
        `| ${MODE_LABELS[r.mode]} | ${r.podMtu || 'n/a'} | failed: ` +
          `${(r.error ?? '').split('\n')[0]} | | | | | | | | | | | |`,
      );
      continue;
    }
    const v = r.vsVxlan;
    const range = v === undefined ? 'n/a' : `${ratio(v.tcpGbitPerSecMin)}-${ratio(v.tcpGbitPerSecMax)}`;
    lines.push(
      `| ${MODE_LABELS[r.mode]} | ${r.podMtu} | ${fmt(r.tcpGbitPerSec, 2)} | ${ratio(v?.tcpGbitPerSec)} | ${range} | ` +
        `${fmt(r.tcpCpuSecondsPerGbit, 2)} | ${ratio(v?.tcpCpuSecondsPerGbit)} | ` +
        `${r.tcpAgentCpuSecondsPerGbit === undefined ? '' : fmt(r.tcpAgentCpuSecondsPerGbit, 2)} ` +
        `| ${fmt(r.tcpMachineBusyPercent, 0)} | ` +
        `${kpps(r.udp64DeliveredPps)} | ${ratio(v?.udp64DeliveredPps)} | ${fmt(r.udp64LostPercent, 1)} | ` +
        `${fmt(r.pingAvgRttUs, 0)} | ${ratio(v?.pingAvgRttUs)} |`,
    );
  }
  const ref = FLANNELD_REFERENCE;
  lines.push(
    `| *${ref.name}* | 1472 | *${ref.tcpGbitPerSec}* ` +
      `| *${ref.tcpVsVxlan}* | | | | | | *${kpps(ref.udp64DeliveredPps)}* | *${ref.udp64VsVxlan}* | | ` +
      `*${ref.pingAvgRttUs}* | *${(ref.pingAvgRttUs / DOC_VXLAN_RTT_US).toFixed(1)}* |`,
  );
  return lines.join('\n');
}
