/**
 * USO: a pod sending with UDP GSO (UDP_SEGMENT, as QUIC stacks and wireguard-go do), through
 * flannel-ts with its defaults (flannel0 takes USO: one super-packet per sendmsg, which the agent
 * cuts into its datagrams) and with `--offloads=udp` (flannel0 without offloads: the pod's kernel
 * cuts each send into datagrams before flannel0, one read each; what a kernel without USO gives).
 * Both labs stay up; interleaved rounds, the starting one alternating. Each round the sending pod
 * floods for `seconds` (40 datagrams of 1,200 bytes per sendto) while the other pod drains; the
 * figures are the SENDING agent's: datagrams it put on the wire per second (udpSentPackets) and its
 * own CPU (user + system) per datagram. The receiving side is not the subject (a Python sink).
 * Part of `npm run bench`; `--uso` runs only this.
 */
import { join } from 'node:path';
import { Lab, removeStaleLabNamespaces } from '../src/lab/index.js';
import { median, processCpuSeconds, roundOrder } from './throughput.js';

const SIZE = 1200;
const PER_SEND = 40;
const PORT = 9299;

export interface UsoVariant {
  readonly label: string;
  readonly agentArgs: readonly string[];
}

export const USO_VARIANTS: readonly UsoVariant[] = [
  { label: 'flannel-ts (default: USO on flannel0)', agentArgs: [] },
  { label: 'flannel-ts --offloads=udp (flannel0 without offloads)', agentArgs: ['--offloads=udp'] },
];

export interface UsoSample {
  /** Datagrams the sending agent put on the wire, per second. */
  wireDatagramsPerSec: number;
  /** The sending agent's CPU (user + system) per datagram on the wire, µs. */
  agentMicrosPerDatagram: number;
  /** Super-packets (USO reads) per second; 0 without USO. */
  usoReadsPerSec: number;
  /** flannel0 reads per second (super-packets or datagrams). */
  tunReadsPerSec: number;
}

export interface UsoResult extends UsoSample {
  readonly label: string;
  readonly rounds: UsoSample[];
}

export async function runUsoBench(repoDir: string, seconds: number, rounds: number): Promise<UsoResult[]> {
  removeStaleLabNamespaces();
  const flood = join(repoDir, 'bench', 'udp-gso-flood.py');
  const labs: Lab[] = [];
  try {
    for (const v of USO_VARIANTS)
      labs.push(await Lab.create({ hosts: 2, mode: 'flannel-ts', agentArgs: v.agentArgs, repoDir }));
    const samples: UsoSample[][] = USO_VARIANTS.map(() => []);
    for (let round = 1; round <= rounds; round++) {
      for (const i of roundOrder(
        USO_VARIANTS.map((_, k) => k),
        round,
      )) {
        samples[i]!.push(await floodOnce(labs[i]!, flood, seconds));
        const s = samples[i]!.at(-1)!;
        process.stderr.write(
          `uso round ${round}: ${USO_VARIANTS[i]!.label}: ${(s.wireDatagramsPerSec / 1000).toFixed(0)}k datagrams/s, ` +
            `${s.agentMicrosPerDatagram.toFixed(2)} agent-µs each\n`,
        );
      }
    }
    return USO_VARIANTS.map((v, i) => {
      const r = samples[i]!;
      const m = (f: (s: UsoSample) => number): number => median(r.map(f));
      return {
        label: v.label,
        rounds: r,
        wireDatagramsPerSec: m((s) => s.wireDatagramsPerSec),
        agentMicrosPerDatagram: m((s) => s.agentMicrosPerDatagram),
        usoReadsPerSec: m((s) => s.usoReadsPerSec),
        tunReadsPerSec: m((s) => s.tunReadsPerSec),
      };
    });
  } finally {
    for (const lab of labs) await lab.destroy();
  }
}

async function floodOnce(lab: Lab, flood: string, seconds: number): Promise<UsoSample> {
  const sink = lab.spawn(lab.podNs(2), ['python3', flood, 'sink', String(PORT)]);
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      sink.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('ready')) resolve();
      });
      sink.once('exit', () => reject(new Error('the UDP sink ended before it was ready (is python3 installed?)')));
    });
    const pid = lab.agent(1).pid;
    const before = await lab.agentCounters(1),
      cpuBefore = processCpuSeconds(pid);
    await lab.execChecked(
      lab.podNs(1),
      ['python3', flood, 'send', lab.podAddr(2), String(PORT), String(seconds), String(SIZE), String(PER_SEND)],
      (seconds + 30) * 1000,
    );
    const after = await lab.agentCounters(1),
      cpu = processCpuSeconds(pid) - cpuBefore;
    const d = (name: string): number => (after[name] ?? 0) - (before[name] ?? 0);
    const wire = d('udpSentPackets');
    return {
      wireDatagramsPerSec: wire / seconds,
      agentMicrosPerDatagram: wire > 0 ? (cpu / wire) * 1e6 : NaN,
      usoReadsPerSec: d('tunUsoPackets') / seconds,
      tunReadsPerSec: d('tunReadPackets') / seconds,
    };
  } finally {
    sink.kill('SIGKILL');
  }
}

export function usoTable(results: readonly UsoResult[]): string {
  const base = results[results.length - 1];
  const rows = results.map(
    (r) =>
      `| ${r.label} | ${(r.wireDatagramsPerSec / 1000).toFixed(0)}k ` +
      `| ${base ? (r.wireDatagramsPerSec / base.wireDatagramsPerSec).toFixed(2) : ''} | ` +
      `${r.agentMicrosPerDatagram.toFixed(2)} | ` +
      `${(r.tunReadsPerSec / 1000).toFixed(1)}k | ${(r.usoReadsPerSec / 1000).toFixed(1)}k |`,
  );
  return [
    `| sending agent (pod sends ${PER_SEND} x ${SIZE} bytes per ` +
      `UDP_SEGMENT sendto) | datagrams on the wire/s | vs without ` +
      `offloads | agent CPU µs/datagram | flannel0 reads/s | of which USO super-packets/s |`,
    '|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}
