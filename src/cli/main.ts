#!/usr/bin/env node
// flannel-ts entry point: flags, then the agent (static or flanneld mode). Bad flags: one line on
// stderr, exit 2. A startup failure (no interface, unreadable TLS files, ...): one line, exit 1.
import { readFileSync } from 'node:fs';
import { createLogger } from '../observability/log.js';
import { runRegistryAgent } from '../agent/registry-agent.js';
import { FlagError, USAGE, parseFlags } from './flags.js';
import { runStaticAgent } from './static-agent.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: readonly string[]): Promise<number> {
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
    return parsed.kind === 'static' ? await runStaticAgent(parsed.flags, log) : await runRegistryAgent(parsed.flags, log);
  } catch (err) {
    log.error('fatal', { error: (err as Error).message });
    process.stderr.write(`flannel-ts: ${(err as Error).message}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
