// Parent side of etcd-agent-main.ts: drives EtcdKvStore instances living in a child process inside
// the test's network namespace, and records what their watches deliver.

import type { ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import type { EtcdClientOptions } from '../../src/etcd/options.js';
import type { KeyValue, ListedKey, Listing, WatchEvent } from '../../src/subnet/kv.js';
import type { EtcdNetns } from './etcd-netns.js';

const AGENT_MAIN = join(dirname(fileURLToPath(import.meta.url)), 'etcd-agent-main.js');

export interface WatchLog {
  readonly batches: { events: WatchEvent[]; revision: number }[];
  readonly events: WatchEvent[];
  readonly errors: string[];
  compacted: number;
}

/** An error thrown by the client inside the agent, with its message and class name. */
export class AgentCallError extends Error {
  constructor(
    message: string,
    readonly errorName: string,
  ) {
    super(message);
  }
}

export class EtcdAgent {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly watchLogs = new Map<string, WatchLog>();
  private readonly exited: Promise<number | null>;
  private stderr = '';

  constructor(private readonly child: ChildProcess) {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => this.onLine(line));
    child.stderr!.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    void this.exited.then((code) => {
      for (const { reject } of this.pending.values()) reject(new Error(`etcd agent exited (${code}): ${this.stderr}`));
      this.pending.clear();
    });
  }

  static spawn(env: EtcdNetns): EtcdAgent {
    return new EtcdAgent(env.spawn(process.execPath, [AGENT_MAIN]));
  }

  request(op: string, fields: object = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin!.write(`${JSON.stringify({ id, op, ...fields })}\n`);
    });
  }

  /** A KvStore-like handle on a store opened in the agent. */
  async open(store: string, options: EtcdClientOptions, api: 'v2' | 'v3' = 'v3'): Promise<AgentStore> {
    await this.request('open', { store, options, api });
    return new AgentStore(this, store);
  }

  watchLog(name: string): WatchLog {
    let log = this.watchLogs.get(name);
    if (log === undefined) {
      log = { batches: [], events: [], errors: [], compacted: 0 };
      this.watchLogs.set(name, log);
    }
    return log;
  }

  /** Stops feeding the agent and resolves with its exit code, or null if it is still alive after timeoutMs. */
  async idleExit(timeoutMs: number): Promise<number | null | 'still running'> {
    await this.request('idle');
    this.child.stdin!.end();
    const timeout = new Promise<'still running'>((resolve) =>
      setTimeout(() => resolve('still running'), timeoutMs).unref(),
    );
    return Promise.race([this.exited, timeout]);
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }

  private onLine(line: string): void {
    const message = JSON.parse(line) as {
      id?: number;
      ok?: unknown;
      error?: string;
      name?: string;
      watch?: string;
      kind?: string;
      events?: WatchEvent[];
      revision?: number;
      message?: string;
    };
    if (message.id !== undefined) {
      const pending = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error !== undefined) pending?.reject(new AgentCallError(message.error, message.name ?? 'Error'));
      else pending?.resolve(message.ok);
      return;
    }
    const log = this.watchLog(message.watch!);
    if (message.kind === 'events') {
      log.batches.push({ events: message.events!, revision: message.revision! });
      log.events.push(...message.events!);
    } else if (message.kind === 'compacted') {
      log.compacted++;
    } else if (message.kind === 'error') {
      log.errors.push(message.message!);
    }
  }
}

export class AgentStore {
  constructor(
    private readonly agent: EtcdAgent,
    readonly name: string,
  ) {}

  get(key: string): Promise<KeyValue | null> {
    return this.agent.request('get', { store: this.name, key }) as Promise<KeyValue | null>;
  }

  list(prefix: string): Promise<Listing> {
    return this.agent.request('list', { store: this.name, prefix }) as Promise<Listing>;
  }

  /** list(prefix, { expiries: false }). */
  listWithoutExpiries(prefix: string): Promise<Listing<ListedKey>> {
    return this.agent.request('list', { store: this.name, prefix, expiries: false }) as Promise<Listing<ListedKey>>;
  }

  /** count concurrent puts of value under prefix + i, then count concurrent gets; how many read back value. */
  burst(prefix: string, count: number, value: string, ttl = 0): Promise<number> {
    return this.agent.request('burst', { store: this.name, prefix, count, value, ttl }) as Promise<number>;
  }

  /** The process warnings the child has seen, as "name: message". */
  warnings(): Promise<string[]> {
    return this.agent.request('warnings', {}) as Promise<string[]>;
  }

  async put(key: string, value: string, ttl = 0): Promise<void> {
    await this.agent.request('put', { store: this.name, key, value, ttl });
  }

  createIfAbsent(key: string, value: string, ttl = 0): Promise<boolean> {
    return this.agent.request('createIfAbsent', { store: this.name, key, value, ttl }) as Promise<boolean>;
  }

  delete(key: string): Promise<boolean> {
    return this.agent.request('delete', { store: this.name, key }) as Promise<boolean>;
  }

  /** Starts a watch whose deliveries accumulate in the returned log. */
  async watch(watch: string, prefix: string, fromRevision: number): Promise<WatchLog> {
    const log = this.agent.watchLog(watch);
    await this.agent.request('watch', { store: this.name, watch, prefix, fromRevision });
    return log;
  }

  async unwatch(watch: string): Promise<void> {
    await this.agent.request('unwatch', { watch });
  }

  async close(): Promise<void> {
    await this.agent.request('close', { store: this.name });
  }
}

/** Polls until predicate holds; fails with description (and the last state) after timeoutMs. */
export async function waitUntil(
  description: string,
  predicate: () => boolean,
  timeoutMs = 10_000,
  state?: () => unknown,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${description}${state ? `; state: ${JSON.stringify(state())}` : ''}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
