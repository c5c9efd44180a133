// A private network namespace for a shim scenario script (test/helpers/*-scenario.ts): the test
// creates it before its cases and removes it after them (and at process exit, even on failure);
// each run executes the compiled scenario inside it and parses the JSON it prints.
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface ScenarioNamespace {
  readonly ns: string;
  /** Creates the namespace with loopback up (call from before()). */
  create(): void;
  /** Removes it; safe to call twice (call from after()). */
  remove(): void;
  /** Runs the scenario with these arguments inside the namespace; its stdout parsed as JSON. */
  run<T>(args: readonly string[], timeoutMs?: number): T;
  /** Runs it without judging the outcome: for tests that check its exit code, signal or timing. */
  spawn(args: readonly string[], timeoutMs?: number): SpawnSyncReturns<string>;
}

/** scenario: the file name in test/helpers, e.g. 'shim-udp-scenario.js'; prefix: the namespace name's start. */
export function scenarioNamespace(scenario: string, prefix: string): ScenarioNamespace {
  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), scenario);
  const ns = `${prefix}${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
  const remove = (): void => {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  };
  return {
    ns,
    create() {
      process.on('exit', remove);
      execFileSync('ip', ['netns', 'add', ns]);
      execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    },
    remove,
    run<T>(args: readonly string[], timeoutMs = 60_000): T {
      const out = execFileSync('ip', ['netns', 'exec', ns, process.execPath, file, ...args], {
        encoding: 'utf8',
        timeout: timeoutMs,
      });
      return JSON.parse(out) as T;
    },
    spawn(args: readonly string[], timeoutMs = 60_000): SpawnSyncReturns<string> {
      return spawnSync('ip', ['netns', 'exec', ns, process.execPath, file, ...args], {
        encoding: 'utf8',
        timeout: timeoutMs,
      });
    },
  };
}
