/**
 * Runs one micro-benchmark module on its own (`node dist/bench/micro-x.js`) and prints each task's
 * mean; `npm run bench` uses the same task functions through bench/run.ts instead.
 */
import { pathToFileURL } from 'node:url';
import { Bench } from 'tinybench';

/** True when the module at moduleUrl is the program node was started with. */
export function isMain(moduleUrl: string): boolean {
  return process.argv[1] !== undefined && moduleUrl === pathToFileURL(process.argv[1]).href;
}

export async function runStandalone(addTasks: (bench: Bench) => void): Promise<void> {
  const bench = new Bench({ time: 500, warmupTime: 100 });
  addTasks(bench);
  await bench.run();
  for (const task of bench.tasks) {
    const r = task.result;
    const text =
      r.state === 'completed' || r.state === 'aborted-with-statistics'
        ? `${(r.latency.mean * 1e6).toFixed(1)} ns ±${r.latency.rme.toFixed(1)}% (${r.latency.samplesCount} samples)`
        : r.state === 'errored'
          ? `error: ${r.error.message}`
          : r.state;
    process.stdout.write(`${task.name}: ${text}\n`);
  }
}
