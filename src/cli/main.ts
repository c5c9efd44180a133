#!/usr/bin/env node
// flannel-ts entry point: flags, then the agent (static or flanneld mode). Bad flags: one line on
// stderr, exit 2. A startup failure (no interface, unreadable TLS files, ...): one line, exit 1.
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { createLogger } from '../observability/log.js';
import { RegistryAgent } from '../agent/registry-agent.js';
import type { Logger } from '../observability/log.js';
import { FlagError, USAGE, parseFlags } from './flags.js';
import type { RegistryFlags } from './flags.js';
import { runMkDockerOpts } from './mk-docker-opts.js';
import { waitForStopSignal } from './signals.js';
import { runStaticAgent } from './static-agent.js';

// The datapath's functions run once per batch. At a low packet rate (pings, DNS, a quiet cluster's
// RPCs) V8 takes thousands of batches to optimize them, and as long again after a deoptimization,
// so quiet traffic runs on baseline code: measured here, 15% more agent CPU and 14% more round
// trip per ping than with a budget of 1 KiB (two labs alternating, 4 rounds of 200 pings), and no
// change under TCP (6 alternating rounds). A smaller interrupt budget makes V8 tier hot functions
// up sooner. Set here, before any of them first runs (functions compile lazily); V8's flags are
// process-wide, so worker threads (--workers 2) get it too.
setFlagsFromString('--interrupt-budget=1024');

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

async function main(argv: readonly string[]): Promise<number> {
  if (argv[0] === 'mk-docker-opts') {
    return runMkDockerOpts(argv.slice(1), process.env, 'flannel-ts mk-docker-opts', (t) => process.stderr.write(t));
  }
  let parsed;
  try {
    parsed = parseFlags(argv, process.env);
  } catch (err) {
    if (err instanceof FlagError) {
      process.stderr.write(`flannel-ts: ${err.message} (see --help)\n`);
      return 2;
    }
    throw err;
  }
  if (parsed.kind === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (parsed.kind === 'version') {
    process.stdout.write(`flannel-ts ${version()}\n`);
    return 0;
  }
  const log = createLogger(parsed.flags.logLevel);
  try {
    return parsed.kind === 'static'
      ? await runStaticAgent(parsed.flags, log)
      : await runRegistryAgent(parsed.flags, log);
  } catch (err) {
    if (err instanceof FlagError) {
      // A flag value the host refuses (static mode: a network overlapping its routes, a peer at its own address).
      log.error('refused', { error: err.message });
      process.stderr.write(`flannel-ts: ${err.message}\n`);
      return 2;
    }
    log.error('fatal', { error: (err as Error).message });
    process.stderr.write(`flannel-ts: ${(err as Error).message}\n`);
    return 1;
  }
}

/** flanneld mode: the agent until SIGINT/SIGTERM; SIGUSR1 logs the udp datapath's counters. */
async function runRegistryAgent(flags: RegistryFlags, log: Logger): Promise<number> {
  const agent = new RegistryAgent(flags, log);
  const stopSignal = waitForStopSignal(() => agent.reportCounters());
  void stopSignal.promise.then((signal) => agent.stop(signal));
  // Once forwarding, an unexpected error is logged; it must not take the datapath down.
  const onUnhandled = (reason: unknown): void =>
    log.error('unexpected error (the agent keeps running)', { error: String(reason) });
  agent.ready.then(
    () => process.on('unhandledRejection', onUnhandled),
    () => undefined,
  );
  try {
    return await agent.run();
  } finally {
    stopSignal.dispose();
    process.off('unhandledRejection', onUnhandled);
  }
}

process.exitCode = await main(process.argv.slice(2));
