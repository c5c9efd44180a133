// Time and logging seams for the control plane, so lease renewal (hours) and watch backoff can be
// tested without sleeping, and log output can be captured.

export type TimerHandle = object;

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Calls fn once after ms milliseconds. */
  setTimer(fn: () => void, ms: number): TimerHandle;
  clearTimer(handle: TimerHandle): void;
}

/** The real clock. Timers are unref'd: a pending renewal must not keep the process alive by itself. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, Math.max(0, Math.min(ms, 0x7fffffff)));
    t.unref();
    return t;
  },
  clearTimer(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};

interface ManualTimer {
  due: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/**
 * A clock that moves only when told to. `advance` fires due timers in order (ties in creation order),
 * and lets pending promise chains and I/O callbacks settle after each one, so async work triggered
 * by a timer completes before the next timer fires.
 */
export class ManualClock implements Clock {
  private current: number;
  private seq = 0;
  private timers: ManualTimer[] = [];

  constructor(startMs = 1_700_000_000_000) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  setTimer(fn: () => void, ms: number): TimerHandle {
    const t: ManualTimer = { due: this.current + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.timers.push(t);
    return t;
  }

  clearTimer(handle: TimerHandle): void {
    (handle as ManualTimer).cancelled = true;
    this.timers = this.timers.filter((t) => t !== handle);
  }

  /** Number of timers still pending. */
  get pendingTimers(): number {
    return this.timers.length;
  }

  /** Moves time forward by ms, firing every timer that falls due on the way. */
  async advance(ms: number): Promise<void> {
    const target = this.current + ms;
    await settle();
    for (;;) {
      const next = this.nextDue();
      if (next === undefined || next.due > target) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.current = Math.max(this.current, next.due);
      next.fn();
      await settle();
    }
    this.current = target;
    await settle();
  }

  private nextDue(): ManualTimer | undefined {
    let best: ManualTimer | undefined;
    for (const t of this.timers) {
      if (best === undefined || t.due < best.due || (t.due === best.due && t.seq < best.seq)) best = t;
    }
    return best;
  }
}

/** Lets queued microtasks and immediate callbacks run (a few rounds, for chains of awaits). */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

/** Collects messages; for tests. */
export class MemoryLogger implements Logger {
  readonly lines: string[] = [];
  info(message: string): void {
    this.lines.push(`I ${message}`);
  }
  warn(message: string): void {
    this.lines.push(`W ${message}`);
  }
  error(message: string): void {
    this.lines.push(`E ${message}`);
  }
}
