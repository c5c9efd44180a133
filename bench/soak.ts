/**
 * `npm run soak`: the long test of the datapath under load. Two hosts and their pods in network
 * namespaces (the lab), flannel-ts agents in static mode, TCP both ways at once (two iperf3 flows,
 * pod 1 -> pod 2 and pod 2 -> pod 1) for --minutes (default 8), while each agent's resident memory
 * is sampled every 10 s from /proc/<pid>/status.
 *
 *   node dist/bench/soak.js [--minutes=8] [--datapath=userspace|auto] [--rss-growth-mb=8]
 *
 * The first minute is warm-up (V8 tiers up, the slab's pages are touched, socket buffers fill):
 * the check compares the RSS at its end with the last sample and the largest one after it. An
 * agent whose RSS grew by more than --rss-growth-mb after warm-up, a flow that stopped, an agent that
 * exited, or a datapath that counted a crash-worthy error fails the soak (exit 1). The figures
 * (throughput per minute, RSS samples, the agents' drop counters) go to stdout as Markdown.
 *
 * The default datapath is the userspace one (the TypeScript datapath is what can leak);
 * --datapath=auto soaks the kernel fast path with its slow path beside it.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Lab, removeStaleLabNamespaces, requireToolsFor } from '../src/lab/index.js';

const SAMPLE_MS = 10_000;
const WARM_UP_MS = 60_000;
/** Each iperf3 run lasts this long; runs follow each other until the soak's time is up. */
const FLOW_SECONDS = 60;

interface RssSample {
  readonly atMs: number;
  readonly kib: readonly number[];
}

function rssKib(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string', default: '8' },
      datapath: { type: 'string', default: 'userspace' },
      'rss-growth-mb': { type: 'string', default: '8' },
    },
  });
  const minutes = Number(values.minutes);
  const growthLimitKib = Number(values['rss-growth-mb']) * 1024;
  if (!(minutes >= 2 && minutes <= 120)) throw new Error(`--minutes must be 2..120, not ${values.minutes}`);
  if (values.datapath !== 'userspace' && values.datapath !== 'auto') throw new Error('--datapath: userspace or auto');
  requireToolsFor('npm run soak', ['ip', 'iperf3']);

  removeStaleLabNamespaces();
  const lab = await Lab.create({ hosts: 2, mode: 'flannel-ts', agentArgs: ['--datapath', values.datapath] });
  const hosts = [1, 2];
  const samples: RssSample[] = [];
  const flows: { minute: number; from: number; to: number; gbit: number }[] = [];
  const failures: string[] = [];
  try {
    const before = await Promise.all(hosts.map((n) => lab.agentCounters(n)));
    const started = Date.now();
    const endAt = started + minutes * 60_000;
    const sample = (): void => {
      samples.push({ atMs: Date.now() - started, kib: hosts.map((n) => rssKib(lab.agent(n).pid)) });
    };
    sample();
    const sampler = setInterval(sample, SAMPLE_MS);
    try {
      for (let minute = 1; Date.now() + FLOW_SECONDS * 1000 <= endAt + 5_000; minute++) {
        const [a, b] = await Promise.all([lab.iperf3Tcp(1, 2, FLOW_SECONDS), lab.iperf3Tcp(2, 1, FLOW_SECONDS)]);
        flows.push({ minute, from: 1, to: 2, gbit: a.receivedBitsPerSecond / 1e9 });
        flows.push({ minute, from: 2, to: 1, gbit: b.receivedBitsPerSecond / 1e9 });
        for (const f of flows.slice(-2))
          if (f.gbit < 0.05) failures.push(`minute ${minute}: flow ${f.from}->${f.to} stalled`);
        for (const n of hosts) if (!lab.agent(n).running) failures.push(`agent ${n} exited`);
        process.stderr.write(
          `soak: minute ${minute}: ${a.receivedBitsPerSecond / 1e9} / ${b.receivedBitsPerSecond / 1e9} Gbit/s\n`,
        );
      }
    } finally {
      clearInterval(sampler);
    }
    sample();
    const after = await Promise.all(hosts.map((n) => lab.agentCounters(n)));

    const out: string[] = [];
    out.push(`## Soak: ${minutes} min of TCP both ways, --datapath ${values.datapath}\n`);
    out.push('| minute | pod 1 -> pod 2 Gbit/s | pod 2 -> pod 1 Gbit/s |', '|---|---|---|');
    for (let i = 0; i < flows.length; i += 2)
      out.push(`| ${flows[i]!.minute} | ${flows[i]!.gbit.toFixed(2)} | ${flows[i + 1]!.gbit.toFixed(2)} |`);
    out.push(
      '',
      '| host | RSS at start MB | after warm-up MB | max after warm-up MB | at end MB | growth after warm-up MB |',
    );
    out.push('|---|---|---|---|---|---|');
    const warm = samples.find((s) => s.atMs >= WARM_UP_MS) ?? samples[samples.length - 1]!;
    hosts.forEach((n, i) => {
      const later = samples.filter((s) => s.atMs >= warm.atMs).map((s) => s.kib[i]!);
      const end = samples[samples.length - 1]!.kib[i]!;
      const max = Math.max(...later);
      const growth = max - warm.kib[i]!;
      const mb = (kib: number): string => (kib / 1024).toFixed(1);
      out.push(`| ${n} | ${mb(samples[0]!.kib[i]!)} | ${mb(warm.kib[i]!)} | ${mb(max)} | ${mb(end)} | ${mb(growth)} |`);
      if (growth > growthLimitKib) failures.push(`agent ${n}: RSS grew ${mb(growth)} MB after warm-up`);
    });
    out.push('', '| host | counter | during the soak |', '|---|---|---|');
    hosts.forEach((n, i) => {
      for (const [name, v] of Object.entries(after[i]!)) {
        const d = v - (before[i]![name] ?? 0);
        if (d !== 0 && (name.startsWith('drop') || name.endsWith('Errors') || name.endsWith('Failed')))
          out.push(`| ${n} | ${name} | ${d} |`);
      }
    });
    out.push('', failures.length === 0 ? 'soak: passed' : `soak: FAILED: ${failures.join('; ')}`);
    process.stdout.write(`${out.join('\n')}\n`);
    return failures.length === 0 ? 0 : 1;
  } finally {
    await lab.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`soak: ${err.message}\n`);
    process.exit(1);
  },
);
