// Keeps the kernel in step with a wanted set of entries (one per peer), for the kernel backends.
// Callers hand in the complete wanted set; a pass removes what is installed but no longer wanted (or
// changed), then adds what is missing, each step batched across all entries (three iproute2 runs for
// 1,000 vxlan peers, not 3,000). One pass runs at a time; what arrives meanwhile is taken by the
// next pass, so a burst of lease events costs one pass, not one per event.
//
// An entry's add is a list of phases: vxlan's are neighbour and fdb entry, then the route (flanneld:
// "the kernel would ARP for the gateway if it were not set first"). An entry goes on to its next
// phase only if the previous succeeded; a failed entry is cleaned up (its removal ops, which treat
// "already gone" as done), logged once, and retried after retryMs. The sync removes only what it
// installed.
import type { Kernel, KernelOp, OpResults } from '../kernel/kernel.js';
import type { Clock, TimerHandle } from '../subnet/clock.js';
import { systemClock } from '../subnet/clock.js';
import type { Logger } from '../observability/log.js';
import { OnceLog } from './backend.js';

export interface EntryProgram {
  /** Ops per phase, in order (see the header). */
  readonly add: readonly (readonly KernelOp[])[];
  /** Ops removing everything add makes; every one is tried. */
  readonly remove: readonly KernelOp[];
}

export interface KernelSyncOptions<E> {
  readonly kernel: Kernel;
  readonly log: Logger;
  readonly program: (entry: E) => EntryProgram;
  /** Equal entries need no reprogramming. */
  readonly same: (a: E, b: E) => boolean;
  /** For log lines: "10.244.2.0/24 via 192.0.2.2". */
  readonly describe: (entry: E) => string;
  /** The warning for an entry that could not be programmed. */
  readonly failureMessage?: string;
  /** A failed entry is tried again after this long (ms). Default 1,000. */
  readonly retryMs?: number;
  readonly clock?: Clock;
}

/**
 * One step's ops: they do not depend on each other, so the fdb entries (bridge) and the rest (ip)
 * go in two batches at once; one tool's run costs several ms, and a new lease waits for each step.
 */
async function applyStep(kernel: Kernel, ops: readonly { readonly op: KernelOp }[]): Promise<OpResults> {
  const fdb: number[] = [];
  const rest: number[] = [];
  ops.forEach((x, i) => (x.op.op.startsWith('fdb') ? fdb : rest).push(i));
  if (fdb.length === 0 || rest.length === 0) return kernel.apply(ops.map((x) => x.op));
  const [a, b] = await Promise.all([
    kernel.apply(rest.map((i) => ops[i]!.op)),
    kernel.apply(fdb.map((i) => ops[i]!.op)),
  ]);
  const results: OpResults = new Array<string | null>(ops.length).fill(null);
  rest.forEach((i, k) => (results[i] = a[k] ?? null));
  fdb.forEach((i, k) => (results[i] = b[k] ?? null));
  return results;
}

export class KernelSync<E> {
  private wanted = new Map<string, E>();
  private readonly installed = new Map<string, E>();
  private running: Promise<void> | null = null;
  private dirty = false;
  private closed = false;
  private retryTimer: TimerHandle | null = null;
  private readonly failures: OnceLog;
  private readonly clock: Clock;
  /** Passes run, for tests and the bench. */
  passes = 0;

  constructor(private readonly o: KernelSyncOptions<E>) {
    this.failures = new OnceLog(o.log);
    this.clock = o.clock ?? systemClock;
  }

  /** The complete wanted set, by id (e.g. the peer's subnet). */
  want(entries: Map<string, E>): void {
    this.wanted = entries;
    this.schedule();
  }

  /** The entries believed installed. */
  get installedEntries(): ReadonlyMap<string, E> {
    return this.installed;
  }

  /** Forgets that these entries are installed (someone removed them), so the next pass puts them back. */
  forget(ids: Iterable<string>): void {
    let any = false;
    for (const id of ids) any = this.installed.delete(id) || any;
    if (any) this.schedule();
  }

  /** Forgets every installed entry (the device was rebuilt empty) and programs all again. */
  reinstallAll(): void {
    this.installed.clear();
    this.schedule();
  }

  /** Resolves when no pass is running or pending. */
  async settled(): Promise<void> {
    while (this.running !== null) await this.running;
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer !== null) this.clock.clearTimer(this.retryTimer);
    this.retryTimer = null;
  }

  private schedule(): void {
    if (this.closed) return;
    this.dirty = true;
    if (this.running !== null) return;
    this.running = (async () => {
      try {
        while (this.dirty && !this.closed) {
          this.dirty = false;
          await this.pass();
        }
      } finally {
        this.running = null;
      }
    })();
  }

  private async pass(): Promise<void> {
    this.passes++;
    const { kernel, program } = this.o;
    // --- removals: gone or changed -------------------------------------------------------
    const removing: [string, E][] = [];
    for (const [id, have] of this.installed) {
      const want = this.wanted.get(id);
      if (want === undefined || !this.o.same(have, want)) removing.push([id, have]);
    }
    if (removing.length > 0) {
      const programs = removing.map(([, e]) => program(e).remove);
      const depth = Math.max(...programs.map((p) => p.length));
      // Step by step across entries, in the entries' order (vxlan: all neighbours, then all fdb
      // entries, then all routes, as flanneld removes them), one batch per step.
      for (let k = 0; k < depth; k++) {
        const results = await applyStep(
          kernel,
          programs.filter((p) => p[k] !== undefined).map((p) => ({ op: p[k]! })),
        );
        for (const r of results) if (r !== null) this.o.log.warn('could not remove an entry', { error: r });
      }
      for (const [id] of removing) this.installed.delete(id);
    }
    // --- additions -------------------------------------------------------------------------
    let pending: [string, E, EntryProgram][] = [];
    for (const [id, want] of this.wanted) {
      if (!this.installed.has(id)) pending.push([id, want, program(want)]);
    }
    const failed: [string, E, string][] = [];
    for (let phase = 0; pending.length > 0; phase++) {
      const stepping = pending.filter(([, , p]) => phase < p.add.length);
      for (const [id, e, p] of pending) if (phase >= p.add.length) this.installed.set(id, e);
      if (stepping.length === 0) break;
      const ops: { op: KernelOp; owner: number }[] = [];
      stepping.forEach(([, , p], owner) => {
        for (const op of p.add[phase]!) ops.push({ op, owner });
      });
      const results = await applyStep(kernel, ops);
      const bad = new Map<number, string>();
      ops.forEach((x, k) => {
        const r = results[k];
        if (r !== null && r !== undefined) bad.set(x.owner, r);
      });
      pending = [];
      stepping.forEach((item, i) => {
        const err = bad.get(i);
        if (err === undefined) pending.push(item);
        else failed.push([item[0], item[1], err]);
      });
    }
    if (failed.length > 0) {
      // Undo the phases that went in, so nothing half-programmed stays.
      await applyStep(
        kernel,
        failed.flatMap(([, e]) => program(e).remove.map((op) => ({ op }))),
      );
      for (const [id, e, err] of failed) {
        this.failures.warn(id, this.o.failureMessage ?? 'could not program a peer; retrying', {
          peer: this.o.describe(e),
          error: err,
        });
      }
      if (this.retryTimer === null && !this.closed) {
        this.retryTimer = this.clock.setTimer(() => {
          this.retryTimer = null;
          this.schedule();
        }, this.o.retryMs ?? 1000);
      }
    }
    for (const id of this.installed.keys()) this.failures.clear(id);
  }
}
