// Counts of input the agent refused (a peer lease, a network config change), by what was refused
// and why, for /metrics (flannel_ts_refusals_total). Control plane only.

/** What was refused: a peer lease from the registry, or a network config change. */
export type RefusedInput = 'lease' | 'config';

export interface RefusalCount {
  readonly input: RefusedInput;
  /** A stable snake_case reason, e.g. "outside_network". */
  readonly reason: string;
  readonly count: number;
}

export class RefusalCounters {
  private readonly counts = new Map<string, RefusalCount>();

  add(input: RefusedInput, reason: string): void {
    const id = `${input}/${reason}`;
    const seen = this.counts.get(id);
    this.counts.set(id, { input, reason, count: (seen?.count ?? 0) + 1 });
  }

  /** Every (input, reason) refused at least once, in the order first seen. */
  entries(): RefusalCount[] {
    return [...this.counts.values()];
  }

  total(input?: RefusedInput): number {
    let n = 0;
    for (const c of this.counts.values()) if (input === undefined || c.input === input) n += c.count;
    return n;
  }
}
