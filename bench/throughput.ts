/**
 * Throughput side by side: for each forwarder (flannel-ts, kernel VXLAN, host-gw) build a fresh
 * two-host lab, measure pod-to-pod ping RTT, iperf3 TCP and iperf3 UDP with 64-byte payloads,
 * and tear it down. Ratios are against kernel VXLAN measured in the same run, because absolute
 * figures move from run to run; flanneld's own figures from the design doc are shown as a
 * reference row, never as a measurement of this run.
 */
import { readFileSync } from 'node:fs';
import { Lab, removeStaleLabNamespaces, type AgentCounters, type LabMode } from '../src/lab/index.js';

/**
 * What the bench compares: the lab's modes, and flannel-ts one step at a time: batching only,
 * + TUN offloads (TSO reads, GRO writes), + UDP GSO/GRO, + io_uring for flannel0 (the default),
 * + a worker thread per direction (--workers 2).
 */
export const BENCH_FORWARDERS = [
  'flannel-ts', 'flannel-ts-workers', 'flannel-ts-no-uring', 'flannel-ts-tun-offloads', 'flannel-ts-no-offload', 'vxlan', 'host-gw',
] as const;
export type BenchForwarder = (typeof BENCH_FORWARDERS)[number];

const FLANNEL_TS_STEPS: Partial<Record<BenchForwarder, string[]>> = {
  'flannel-ts-workers': ['--workers', '2'],
  'flannel-ts-no-uring': ['--io-uring=false'],
  'flannel-ts-tun-offloads': ['--offloads=tun', '--io-uring=false'],
  'flannel-ts-no-offload': ['--no-offload', '--io-uring=false'],
};

function labSetup(forwarder: BenchForwarder): { mode: LabMode; agentArgs: string[] } {
  const step = FLANNEL_TS_STEPS[forwarder];
  return step ? { mode: 'flannel-ts', agentArgs: step } : { mode: forwarder as LabMode, agentArgs: [] };
}

export interface ThroughputOptions {
  modes: readonly BenchForwarder[];
  /** iperf3 duration per test (s). */
  seconds: number;
  pingCount: number;
  pingIntervalSec: number;
  log: (line: string) => void;
}

export const DEFAULT_THROUGHPUT_OPTIONS: ThroughputOptions = {
  modes: BENCH_FORWARDERS,
  seconds: 5,
  pingCount: 200,
  pingIntervalSec: 0.005,
  log: (line) => process.stderr.write(`${line}\n`),
};

export interface ModeResult {
  mode: BenchForwarder;
  podMtu: number;
  ok: boolean;
  error?: string;
  tcpGbitPerSec?: number;
  tcpRetransmits?: number;
  /** Whole-machine CPU seconds (user+system+irq+softirq, all cores) per gigabit during the TCP run. */
  tcpCpuSecondsPerGbit?: number;
  /** How busy the whole machine was during the TCP run (100 = every core all the time). */
  tcpMachineBusyPercent?: number;
  /** flannel-ts only: the two agents' own CPU seconds (user+system, from /proc/PID/stat) per gigabit. */
  tcpAgentCpuSecondsPerGbit?: number;
  udp64DeliveredPps?: number;
  udp64SentPps?: number;
  udp64LostPercent?: number;
  pingAvgRttUs?: number;
  pingLoss?: number;
  /** flannel-ts only: the sending agent's (host 1) and receiving agent's (host 2) counters. */
  agentCounters?: { host1?: AgentCounters; host2?: AgentCounters };
  /**
   * flannel-ts only: where the kernel dropped packets around the agent, per host, after all tests:
   * flannel0's tx queue (the agent did not read TUN fast enough) and UDP receive-buffer overflows
   * (it did not drain its socket fast enough).
   */
  kernelDrops?: { host1?: KernelDrops; host2?: KernelDrops };
}

/**
 * CPU seconds the whole machine spent so far, all cores, from /proc/stat: busy (user, nice,
 * system, irq and softirq: softirq is where kernel VXLAN and routing do their work, so
 * per-process times would miss it) and in all (busy + idle + iowait). USER_HZ is 100 on Linux.
 */
function machineCpuSeconds(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('cpu '))!;
  const [user, nice, system, idle, iowait, irq, softirq] = line.trim().split(/\s+/).slice(1).map(Number);
  const busy = (user! + nice! + system! + irq! + softirq!) / 100;
  return { busy, total: busy + (idle! + iowait!) / 100 };
}

/** CPU seconds (user + system) a process has used so far; 0 if it is gone. */
function processCpuSeconds(pid: number | undefined): number {
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
 * flanneld's udp datapath (its C proxy) as measured for the design doc
 * (shared/design/ANCHORS.md), same lab shape and machine kind. Not measured by this run.
 */
export const FLANNELD_REFERENCE: ReferenceRow = {
  name: "flanneld udp (C proxy), from the design doc, not measured in this run",
  source: 'shared/design/ANCHORS.md',
  tcpGbitPerSec: 1.03,
  tcpVsVxlan: 0.075,
  udp64DeliveredPps: 59_000,
  udp64VsVxlan: 0.56,
  pingAvgRttUs: 110,
};
/** Kernel VXLAN's round trip in the same doc, to put flanneld's 110 µs in proportion. */
const DOC_VXLAN_RTT_US = 20;

async function measureMode(mode: BenchForwarder, opts: ThroughputOptions): Promise<ModeResult> {
  const result: ModeResult = { mode, podMtu: 0, ok: false };
  opts.log(`[${mode}] building lab`);
  let lab: Lab | undefined;
  try {
    const setup = labSetup(mode);
    lab = await Lab.create({ hosts: 2, mode: setup.mode, agentArgs: setup.agentArgs });
    result.podMtu = lab.podMtu;
    // Warm up: ARP/neighbour entries and the agents' first packets are not part of the figures.
    const warm = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 5, intervalSec: 0.01 });
    if (warm.received === 0) throw new Error(`pod 1 cannot reach pod 2 in mode ${mode}`);

    opts.log(`[${mode}] ping x${opts.pingCount}, ${opts.pingIntervalSec * 1000} ms apart`);
    const ping = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: opts.pingCount, intervalSec: opts.pingIntervalSec });
    result.pingAvgRttUs = ping.avgRttUs;
    result.pingLoss = ping.transmitted - ping.received;

    opts.log(`[${mode}] iperf3 TCP ${opts.seconds} s`);
    const agentPids = setup.mode === 'flannel-ts' ? [lab.agent(1).child.pid, lab.agent(2).child.pid] : [];
    const agentCpu = (): number => agentPids.reduce((sum: number, pid) => sum + processCpuSeconds(pid), 0);
    const machineBefore = machineCpuSeconds(), agentsBefore = agentCpu();
    const tcp = await lab.iperf3Tcp(1, 2, opts.seconds);
    const machineAfter = machineCpuSeconds(), agentsAfter = agentCpu();
    const busy = machineAfter.busy - machineBefore.busy;
    result.tcpGbitPerSec = tcp.receivedBitsPerSecond / 1e9;
    result.tcpCpuSecondsPerGbit = busy / (result.tcpGbitPerSec * opts.seconds);
    result.tcpMachineBusyPercent = (100 * busy) / (machineAfter.total - machineBefore.total);
    if (agentPids.length > 0) result.tcpAgentCpuSecondsPerGbit = (agentsAfter - agentsBefore) / (result.tcpGbitPerSec * opts.seconds);
    result.tcpRetransmits = tcp.retransmits;

    opts.log(`[${mode}] iperf3 UDP 64-byte payloads, -b 0, ${opts.seconds} s`);
    const udp = await lab.iperf3Udp(1, 2, opts.seconds, { payloadBytes: 64, bandwidth: '0' });
    result.udp64DeliveredPps = udp.deliveredPacketsPerSecond;
    result.udp64SentPps = udp.sentPacketsPerSecond;
    result.udp64LostPercent = udp.lostPercent;

    if (setup.mode === 'flannel-ts') {
      result.agentCounters = { host1: await lab.agentCounters(1), host2: await lab.agentCounters(2) };
      result.kernelDrops = { host1: await kernelDrops(lab, 1), host2: await kernelDrops(lab, 2) };
      opts.log(`[${mode}] kernel drops around the agents: ${JSON.stringify(result.kernelDrops)}`);
    }
    result.ok = true;
  } catch (e) {
    result.error = e instanceof Error ? e.message : String(e);
    opts.log(`[${mode}] FAILED: ${result.error}`);
  } finally {
    await lab?.destroy();
  }
  return result;
}

export async function runThroughput(options: Partial<ThroughputOptions> = {}): Promise<ModeResult[]> {
  const opts = { ...DEFAULT_THROUGHPUT_OPTIONS, ...options };
  const removed = removeStaleLabNamespaces();
  if (removed.length > 0) opts.log(`removed stale lab namespaces: ${removed.join(' ')}`);
  const results: ModeResult[] = [];
  // One lab at a time: the machine has 2 cores, and the forwarders must not compete.
  for (const mode of opts.modes) results.push(await measureMode(mode, opts));
  return results;
}

const MODE_LABELS: Record<BenchForwarder, string> = {
  'flannel-ts': 'flannel-ts (this build: batching + TUN offloads + UDP GSO/GRO + io_uring)',
  'flannel-ts-workers': 'flannel-ts --workers 2 (the default + a worker thread per direction)',
  'flannel-ts-no-uring': 'flannel-ts --io-uring=false (batching + TUN offloads + UDP GSO/GRO)',
  'flannel-ts-tun-offloads': 'flannel-ts --offloads=tun --io-uring=false (batching + TSO reads, GRO writes)',
  'flannel-ts-no-offload': 'flannel-ts --no-offload --io-uring=false (batching only)',
  vxlan: 'kernel VXLAN (flannel vxlan backend)',
  'host-gw': 'host-gw (kernel routing, no encapsulation)',
};

function fmt(value: number | undefined, digits: number): string {
  return value === undefined || !Number.isFinite(value) ? 'n/a' : value.toFixed(digits);
}

function ratio(value: number | undefined, base: number | undefined): string {
  if (value === undefined || base === undefined || !Number.isFinite(value) || !(base > 0)) return 'n/a';
  return value / base >= 0.1 ? (value / base).toFixed(2) : (value / base).toFixed(3);
}

function kpps(pps: number | undefined): string {
  return pps === undefined || !Number.isFinite(pps) ? 'n/a' : `${(pps / 1000).toFixed(1)}k`;
}

/** Markdown table of the run, ratios against the VXLAN row of the same run. */
export function throughputTable(results: readonly ModeResult[]): string {
  const vxlan = results.find((r) => r.mode === 'vxlan' && r.ok);
  const lines = [
    '| forwarder | pod MTU | TCP Gbit/s | vs VXLAN | CPU s/Gbit (TCP) | vs VXLAN | of which agents | machine busy % | UDP64 delivered pps | vs VXLAN | UDP64 loss % | ping RTT µs | vs VXLAN |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    if (!r.ok) {
      lines.push(`| ${MODE_LABELS[r.mode]} | ${r.podMtu || 'n/a'} | failed: ${(r.error ?? '').split('\n')[0]} | | | | | | | | | | |`);
      continue;
    }
    lines.push(
      `| ${MODE_LABELS[r.mode]} | ${r.podMtu} | ${fmt(r.tcpGbitPerSec, 2)} | ${ratio(r.tcpGbitPerSec, vxlan?.tcpGbitPerSec)} | ` +
        `${fmt(r.tcpCpuSecondsPerGbit, 2)} | ${ratio(r.tcpCpuSecondsPerGbit, vxlan?.tcpCpuSecondsPerGbit)} | ` +
        `${r.tcpAgentCpuSecondsPerGbit === undefined ? '' : fmt(r.tcpAgentCpuSecondsPerGbit, 2)} | ${fmt(r.tcpMachineBusyPercent, 0)} | ` +
        `${kpps(r.udp64DeliveredPps)} | ${ratio(r.udp64DeliveredPps, vxlan?.udp64DeliveredPps)} | ${fmt(r.udp64LostPercent, 1)} | ` +
        `${fmt(r.pingAvgRttUs, 0)} | ${ratio(r.pingAvgRttUs, vxlan?.pingAvgRttUs)} |`,
    );
  }
  const ref = FLANNELD_REFERENCE;
  lines.push(
    `| *${ref.name}* | 1472 | *${ref.tcpGbitPerSec}* | *${ref.tcpVsVxlan}* | | | | | *${kpps(ref.udp64DeliveredPps)}* | *${ref.udp64VsVxlan}* | | ` +
      `*${ref.pingAvgRttUs}* | *${(ref.pingAvgRttUs / DOC_VXLAN_RTT_US).toFixed(1)}* |`,
  );
  return lines.join('\n');
}
