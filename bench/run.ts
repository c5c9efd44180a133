/**
 * `npm run bench`: micro-benchmarks (tinybench) and the throughput comparison in one run.
 *
 *   node --expose-gc dist/bench/run.js [--micro-only | --throughput-only | --control-plane | --uso]
 *                                      [--latency] [--modes=flannel-ts,vxlan,host-gw] [--seconds=5] [--rounds=3]
 *                                      [--pings=400]
 *
 * Micro-benchmarks: every `bench/micro-*.ts` module beside this file is loaded, and each of its
 * exports whose name ends in `BenchTasks` is called as `(bench: Bench) => void` to add tinybench
 * tasks (e.g. `routingBenchTasks` from micro-routing.ts, `datapathBenchTasks` from
 * micro-datapath.ts). New micro files are picked up without editing this one.
 *
 * Throughput (bench/throughput.ts): every forwarder's lab is built and kept up, then --rounds
 * interleaved rounds (1..10, default 3) measure each forwarder in turn; the table shows medians
 * and per-round ratios to VXLAN. ~12 s per forwarder and round with the default 5 s iperf3 runs (7 forwarders, 3
 * rounds: ~4 min).
 *
 * Control plane (bench/control-plane.ts, issue 3): 1,000 peer leases in a real etcd in a namespace
 * of its own -> routes, a new lease's time to be routable, the idle agent's RSS; ~15 s. Part of the
 * default run; `--control-plane` runs only it.
 *
 * Latency (bench/latency.ts, issue 14): a lone packet's round trip at 2,000 and 200 pings/s, quiet
 * and with a CPU-bound process on every core, through flannel-ts (io_uring wait, and the event-loop
 * datapath), socat, proxy-shape (a C stand-in of flanneld's udp proxy, bench/proxy-shape.c), kernel
 * VXLAN and host-gw, plus 1-byte TCP transactions/s; ~3 min at --rounds=3. Part of the default run;
 * `--latency` runs only it (needs socat, cc, python3, taskset).
 *
 * USO (bench/uso.ts): a pod sending with UDP GSO, the sending agent with USO on flannel0 vs
 * without TUN offloads; ~1 min. Part of the default run; `--uso` runs only it (needs python3).
 *
 * Output: Markdown tables on stdout; the throughput figures also as JSON in
 * bench/results/latest.json, the control-plane figures in bench/results/control-plane.json.
 * Progress goes to stderr.
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Bench } from 'tinybench';
import {
  BENCH_FORWARDERS,
  type BenchForwarder,
  FLANNELD_REFERENCE,
  runThroughput,
  throughputTable,
  type ThroughputRun,
} from './throughput.js';
import { controlPlaneTable, runControlPlaneBench, saveControlPlaneResult } from './control-plane.js';
import { runUsoBench, usoTable } from './uso.js';
import { LATENCY_FORWARDERS, latencyTables, runLatency } from './latency.js';

type BenchTasksFn = (bench: Bench) => void;

interface MicroRow {
  module: string;
  task: string;
  nsPerOp: number;
  rmePercent: number;
  samples: number;
  error?: string;
}

const here = dirname(fileURLToPath(import.meta.url));
const repoDir = resolve(here, '..', '..');

async function loadMicroModules(): Promise<{ module: string; fns: { name: string; fn: BenchTasksFn }[] }[]> {
  const files = readdirSync(here)
    .filter((f) => /^micro-.*\.js$/.test(f))
    .sort();
  const modules = [];
  for (const file of files) {
    const mod = (await import(pathToFileURL(join(here, file)).href)) as Record<string, unknown>;
    const fns = Object.entries(mod)
      .filter(([name, value]) => name.endsWith('BenchTasks') && typeof value === 'function')
      .map(([name, value]) => ({ name, fn: value as BenchTasksFn }));
    modules.push({ module: file.replace(/\.js$/, '.ts'), fns });
  }
  return modules;
}

async function runMicro(): Promise<MicroRow[]> {
  const modules = await loadMicroModules();
  if (modules.length === 0) {
    process.stderr.write('no bench/micro-*.ts modules found\n');
    return [];
  }
  const rows: MicroRow[] = [];
  for (const { module, fns } of modules) {
    if (fns.length === 0) {
      process.stderr.write(`${module}: no export named *BenchTasks, skipped\n`);
      continue;
    }
    const bench = new Bench({ time: 500, warmupTime: 100 });
    for (const { fn } of fns) fn(bench);
    process.stderr.write(`micro: ${module} (${bench.tasks.length} tasks)\n`);
    (globalThis as { gc?: () => void }).gc?.();
    await bench.run();
    for (const task of bench.tasks) {
      const result = task.result;
      if (result.state === 'completed' || result.state === 'aborted-with-statistics') {
        rows.push({
          module,
          task: task.name,
          nsPerOp: result.latency.mean * 1e6,
          rmePercent: result.latency.rme,
          samples: result.latency.samplesCount,
        });
      } else {
        const error = result.state === 'errored' ? result.error.message : result.state;
        rows.push({ module, task: task.name, nsPerOp: Number.NaN, rmePercent: Number.NaN, samples: 0, error });
      }
    }
  }
  return rows;
}

function microTable(rows: readonly MicroRow[]): string {
  const lines = ['| module | task | ns/op | ± % | samples |', '|---|---|---|---|---|'];
  for (const r of rows) {
    if (r.error !== undefined) {
      lines.push(`| ${r.module} | ${r.task} | error: ${r.error} | | |`);
      continue;
    }
    const ns = r.nsPerOp >= 100 ? Math.round(r.nsPerOp).toLocaleString('en-US') : r.nsPerOp.toFixed(1);
    lines.push(`| ${r.module} | ${r.task} | ${ns} | ${r.rmePercent.toFixed(1)} | ${r.samples} |`);
  }
  return lines.join('\n');
}

function parseModes(value: string | undefined): BenchForwarder[] {
  if (value === undefined) return [...BENCH_FORWARDERS];
  const modes = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  for (const m of modes) {
    if (!(BENCH_FORWARDERS as readonly string[]).includes(m))
      throw new Error(`unknown mode ${m}; known: ${BENCH_FORWARDERS.join(', ')}`);
  }
  return modes as BenchForwarder[];
}

/** --rounds: a whole number from 1 to 10. */
function parseRounds(value: string): number {
  const rounds = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isInteger(rounds) || rounds < 1 || rounds > 10) {
    throw new Error(`--rounds must be a whole number from 1 to 10, not "${value}"`);
  }
  return rounds;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'micro-only': { type: 'boolean', default: false },
      'throughput-only': { type: 'boolean', default: false },
      'control-plane': { type: 'boolean', default: false },
      uso: { type: 'boolean', default: false },
      latency: { type: 'boolean', default: false },
      pings: { type: 'string', default: '400' },
      modes: { type: 'string' },
      seconds: { type: 'string', default: '5' },
      rounds: { type: 'string', default: '3' },
    },
  });
  const only = (['micro-only', 'throughput-only', 'control-plane', 'uso', 'latency'] as const).filter((f) => values[f]);
  if (only.length > 1) throw new Error(`--${only.join(' and --')} exclude each other`);
  const runAll = only.length === 0;
  const seconds = Number(values.seconds);
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 10) throw new Error('--seconds must be in (0, 10]');
  const rounds = parseRounds(values.rounds);
  const modes = parseModes(values.modes);

  let micro: MicroRow[] | undefined;
  let throughput: ThroughputRun | undefined;

  if (runAll || values['micro-only']) {
    micro = await runMicro();
    process.stdout.write(`\n## Micro-benchmarks\n\n${micro.length > 0 ? microTable(micro) : '(none found)'}\n`);
  }
  if (runAll || values['throughput-only']) {
    const started = Date.now();
    throughput = await runThroughput({ modes, seconds, rounds });
    const wallSeconds = (Date.now() - started) / 1000;
    process.stdout.write(
      `\n## Throughput, pod to pod, two hosts in network ` +
        `namespaces (${rounds} interleaved round${rounds === 1 ? '' : 's'}, ` +
        `${seconds} s per iperf3 run)\n\n` +
        `${throughputTable(throughput.results)}\n\n` +
        `Every figure is the median over ${rounds} interleaved ` +
        `round${rounds === 1 ? '' : 's'}: all labs stay up, each round\n` +
        'measures every forwarder in turn (ping, TCP, UDP64), starting one forwarder later each round. Each\n' +
        '"vs VXLAN" is the median of the per-round ratios to kernel VXLAN measured in the same round, so drift\n' +
        'between rounds cancels; "TCP vs VXLAN, range" is the lowest and highest per-round TCP ratio. The italic\n' +
        `row is flanneld's, copied from ${FLANNELD_REFERENCE.source} (measured on the same kind of machine earlier,\n` +
        `not in this run). Throughput part: ${wallSeconds.toFixed(0)} s wall time.\n`,
    );
    const resultsDir = join(repoDir, 'bench', 'results');
    mkdirSync(resultsDir, { recursive: true });
    const out = {
      date: new Date().toISOString(),
      node: process.version,
      seconds,
      rounds,
      wallSeconds,
      /** Per forwarder: medians in the top-level fields, every round's sample in `rounds`. */
      throughput: throughput.results,
      idleCheck: throughput.idle ?? null,
      reference: FLANNELD_REFERENCE,
      micro: micro ?? null,
    };
    writeFileSync(join(resultsDir, 'latest.json'), `${JSON.stringify(out, null, 2)}\n`);
    process.stderr.write(`wrote ${join(resultsDir, 'latest.json')}\n`);
    if (throughput.results.some((r) => !r.ok)) process.exitCode = 1;
  }
  if (runAll || values['control-plane']) {
    process.stderr.write('control plane: 1,000 peer leases in a real etcd\n');
    try {
      const r = await runControlPlaneBench();
      process.stdout.write(
        `\n## Control plane: a 1,000-node ` +
          `cluster's leases in real etcd (${r.etcdVersion})\n\n${controlPlaneTable(r)}\n`,
      );
      process.stderr.write(`wrote ${saveControlPlaneResult(r, join(repoDir, 'bench', 'results'))}\n`);
    } catch (e) {
      process.stdout.write(`\n## Control plane\n\nfailed: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    }
  }
  if (runAll || values.latency) {
    const pings = Number(values.pings);
    if (!Number.isInteger(pings) || pings < 20 || pings > 10_000) throw new Error('--pings must be in 20..10000');
    await latencySection(rounds, pings);
  }
  if (runAll || values.uso) {
    process.stderr.write('uso: a pod sending with UDP GSO\n');
    try {
      const r = await runUsoBench(repoDir, seconds, rounds);
      process.stdout.write(
        `\n## USO: a pod sending with UDP GSO (${rounds} interleaved ` +
          `round${rounds === 1 ? '' : 's'}, ${seconds} s each, medians)\n\n${usoTable(r)}\n`,
      );
    } catch (e) {
      process.stdout.write(`\n## USO\n\nfailed: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    }
  }
}

/** Round trip of a lone packet, quiet and busy, beside socat, proxy-shape, VXLAN and host-gw (bench/latency.ts). */
async function latencySection(rounds: number, pings: number): Promise<void> {
  process.stderr.write('latency: round trips quiet and busy, and TCP request-response\n');
  try {
    const started = Date.now();
    const r = await runLatency({
      forwarders: LATENCY_FORWARDERS,
      rounds,
      pings,
      rrSeconds: 3,
      log: (line) => process.stderr.write(`${line}\n`),
    });
    process.stdout.write(
      `\n## Latency: a lone packet's round trip, pod to pod (${rounds} interleaved rounds, ${pings} pings at 2,000/s and ${Math.round(pings / 2)} at 200/s per round, medians; "2,000/s" is \`ping -i 0.0005\`, which sends each ping when the last reply came)\n\n` +
        `${latencyTables(r)}\n\nLatency part: ${((Date.now() - started) / 1000).toFixed(0)} s wall time.\n`,
    );
    const resultsDir = join(repoDir, 'bench', 'results');
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(
      join(resultsDir, 'latency.json'),
      `${JSON.stringify({ date: new Date().toISOString(), ...r }, null, 2)}\n`,
    );
  } catch (e) {
    process.stdout.write(`\n## Latency\n\nfailed: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
