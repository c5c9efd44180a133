/**
 * One flannel-ts agent process running in a host namespace, seen through its JSON-lines stdout.
 *
 * Contract with the agent (src/cli): one JSON object per stdout line; a line whose `msg` is
 * "forwarding" means the datapath is up; on SIGUSR1, and once more when it exits after SIGTERM,
 * it prints `{"msg":"counters","counters":{name: number, ...}}`.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { spawnIn, terminate, waitForExit } from './exec.js';

export type AgentCounters = Record<string, number>;

type LineWaiter = {
  match: (line: Record<string, unknown>) => boolean;
  resolve: (line: Record<string, unknown>) => void;
};

export class AgentProcess {
  /** Every JSON line the agent printed, in order. */
  readonly lines: Record<string, unknown>[] = [];
  /** Non-JSON stdout lines and all of stderr, for error messages. */
  readonly otherOutput: string[] = [];
  private waiters: LineWaiter[] = [];
  private exitedPromise: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly namespace: string,
    readonly argv: readonly string[],
    readonly child: ChildProcess,
  ) {
    this.exitedPromise = waitForExit(child);
    const stdout = createInterface({ input: child.stdout! });
    stdout.on('line', (text) => this.onLine(text));
    const stderr = createInterface({ input: child.stderr! });
    stderr.on('line', (text) => this.pushOther(`stderr: ${text}`));
  }

  static start(namespace: string, argv: readonly string[]): AgentProcess {
    return new AgentProcess(namespace, argv, spawnIn(namespace, argv));
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private pushOther(text: string): void {
    this.otherOutput.push(text);
    if (this.otherOutput.length > 200) this.otherOutput.shift();
  }

  private onLine(text: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      this.pushOther(`stdout: ${text}`);
      return;
    }
    if (parsed === null || typeof parsed !== 'object') {
      this.pushOther(`stdout: ${text}`);
      return;
    }
    const line = parsed as Record<string, unknown>;
    this.lines.push(line);
    const still: LineWaiter[] = [];
    for (const w of this.waiters) {
      if (w.match(line)) w.resolve(line);
      else still.push(w);
    }
    this.waiters = still;
  }

  /** The agent's recent output, for error messages. */
  describeOutput(): string {
    const json = this.lines.slice(-15).map((l) => JSON.stringify(l));
    return [...json, ...this.otherOutput.slice(-30)].join('\n');
  }

  /**
   * Resolves with the first line (already printed, from index `fromIndex` on, or future) that
   * matches; rejects if the agent exits first or the timeout passes.
   */
  waitForLine(
    match: (line: Record<string, unknown>) => boolean,
    timeoutMs: number,
    fromIndex = 0,
  ): Promise<Record<string, unknown>> {
    for (let i = fromIndex; i < this.lines.length; i++) {
      if (match(this.lines[i]!)) return Promise.resolve(this.lines[i]!);
    }
    return new Promise((resolve, reject) => {
      const waiter: LineWaiter = {
        match,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(
          new Error(
            `agent in ${this.namespace}: no expected line after ${timeoutMs} ms; output:\n${this.describeOutput()}`,
          ),
        );
      }, timeoutMs);
      this.waiters.push(waiter);
      void this.exitedPromise.then(({ code, signal }) => {
        if (!this.waiters.includes(waiter)) return;
        // Lines printed just before exit are already delivered: readline emits before 'exit'
        // in practice, but give it a tick.
        setImmediate(() => {
          if (!this.waiters.includes(waiter)) return;
          this.waiters = this.waiters.filter((w) => w !== waiter);
          clearTimeout(timer);
          reject(
            new Error(
              `agent in ${this.namespace} exited (code ${code}, signal ${signal}) before the expected line; ` +
                `argv: ${this.argv.join(' ')}\noutput:\n${this.describeOutput()}`,
            ),
          );
        });
      });
    });
  }

  waitForwarding(timeoutMs = 15_000): Promise<Record<string, unknown>> {
    return this.waitForLine((l) => l['msg'] === 'forwarding', timeoutMs);
  }

  /** Sends SIGUSR1 and resolves with the counters the agent prints in answer. */
  async counters(timeoutMs = 5000): Promise<AgentCounters> {
    if (!this.running) throw new Error(`agent in ${this.namespace} is not running:\n${this.describeOutput()}`);
    const from = this.lines.length;
    const line = this.waitForLine(isCountersLine, timeoutMs, from);
    this.child.kill('SIGUSR1');
    return toCounters(await line);
  }

  /** SIGTERM, wait for exit; resolves with the final counters line if the agent printed one. */
  async stop(graceMs = 5000): Promise<AgentCounters | undefined> {
    const from = this.lines.length;
    await terminate(this.child, 'SIGTERM', graceMs);
    // Let readline deliver the last lines.
    await new Promise((r) => setTimeout(r, 50));
    for (let i = this.lines.length - 1; i >= from; i--) {
      if (isCountersLine(this.lines[i]!)) return toCounters(this.lines[i]!);
    }
    return undefined;
  }

  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.exitedPromise;
  }
}

function isCountersLine(line: Record<string, unknown>): boolean {
  return line['msg'] === 'counters' && typeof line['counters'] === 'object' && line['counters'] !== null;
}

function toCounters(line: Record<string, unknown>): AgentCounters {
  const raw = line['counters'] as Record<string, unknown>;
  const out: AgentCounters = {};
  for (const [k, v] of Object.entries(raw)) {
    const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : Number.NaN;
    if (Number.isFinite(n)) out[k] = n;
  }
  return out;
}
