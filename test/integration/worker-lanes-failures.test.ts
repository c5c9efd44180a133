// --workers 2 when a datapath worker fails: a lane that cannot start makes WorkerLanes'
// constructor throw at once (not after its 10 s reply timeout), naming the worker and the reason,
// with no thread left behind; a lane that fails later makes the waiting command and every later
// one throw at once, its error reaches the main thread, and close() still says the fds are safe to
// close; a worker thread that ends or is terminated while a shim poll watcher still polls leaves
// the process alive (it used to abort: "uv_loop_close() while having open handles", exit 134).
// And the healthy path closes cleanly and lets the process exit promptly. Each case runs
// test/helpers/worker-lanes-scenario.ts in a namespace of its own and checks its exit and JSON.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { scenarioNamespace } from '../helpers/scenario-netns.js';

const scenario = scenarioNamespace('worker-lanes-scenario.js', 'fwlanes');

/** Well below WorkerLanes' 10 s reply timeout: a failure must be seen, not waited out. */
const PROMPT_MS = 3000;
/** From closing the fds to the process's exit, when nothing is left running. */
const EXIT_MS = 2000;

interface Outcome<T> {
  /** The scenario's JSON line. */
  readonly out: T & { uncaught: string[]; fdsClosedAt: number };
  /** ms from the scenario closing its fds to this process seeing it exit. */
  readonly exitAfterFdsMs: number;
}

/** Runs the scenario in the namespace; asserts it exited by itself with code 0 within timeoutMs. */
function run<T>(mode: string, timeoutMs = 12_000): Outcome<T> {
  const r = scenario.spawn([mode], timeoutMs);
  const endedAt = Date.now();
  const what =
    `${mode}: status ${r.status}, signal ${r.signal}, ` +
    `error ${r.error?.message}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
  assert.equal(r.error, undefined, `the scenario ran and exited within ${timeoutMs} ms: ${what}`);
  assert.equal(r.signal, null, `not killed by a signal: ${what}`);
  assert.equal(r.status, 0, `exit code 0 (134 would be an abort): ${what}`);
  const line = r.stdout.trim().split('\n').at(-1) ?? '';
  const out = JSON.parse(line) as Outcome<T>['out'];
  return { out, exitAfterFdsMs: endedAt - out.fdsClosedAt };
}

const FAILED = /^the (tx|rx) datapath worker failed: /;
const INVALID_ROUTE = 'invalid route #0: prefixLen 99 is not an integer 0..32';

describe('--workers 2: failing datapath workers', { timeout: 60_000 }, () => {
  before(() => scenario.create());
  after(() => scenario.remove());

  it('a lane that cannot start: the constructor throws at once, naming the worker and why, and ends both workers', () => {
    interface Timed {
      error: string | null;
      ms: number;
    }
    const { out, exitAfterFdsMs } = run<{ both: Timed; txOnly: Timed; closed: number[] }>('start-fail');
    assert.match(out.both.error ?? '(no error)', FAILED);
    assert.match(out.both.error!, /failed: bad batch size 0$/);
    assert.ok(out.both.ms < PROMPT_MS, `threw after ${out.both.ms} ms, not the reply timeout`);
    // Only tx failed (its fd cannot be polled): rx was running, and must have been ended too, or
    // the process would not exit.
    assert.match(out.txOnly.error ?? '(no error)', /^the tx datapath worker failed: operation not permitted$/);
    assert.ok(out.txOnly.ms < PROMPT_MS, `threw after ${out.txOnly.ms} ms, not the reply timeout`);
    assert.deepEqual(out.uncaught, [], "the failed workers' errors are not rethrown once WorkerLanes has ended them");
    assert.deepEqual(out.closed, [0, 0], 'the fds closed');
    assert.ok(exitAfterFdsMs < EXIT_MS, `the process exited by itself ${exitAfterFdsMs} ms after closing the fds`);
  });

  it('a lane that fails later: that command and the next throw at once, its error reaches the main thread, close() is true', () => {
    interface Timed {
      error: string | null;
      ms: number;
    }
    const { out, exitAfterFdsMs } = run<{
      uringsRunning: number;
      uringsAfterFailure: number;
      uringsAfterClose: number;
      routes: Timed;
      stop: Timed;
      close: Timed & { value: unknown };
      closed: number[] | null;
    }>('dies-later');
    assert.equal(out.uringsRunning, 2, 'each lane runs an io_uring');
    assert.match(out.routes.error ?? '(no error)', FAILED);
    assert.ok(out.routes.error!.endsWith(`failed: ${INVALID_ROUTE}`), `the worker's reason: ${out.routes.error}`);
    assert.ok(out.routes.ms < PROMPT_MS, `setRoutes threw after ${out.routes.ms} ms, not the reply timeout`);
    assert.equal(out.stop.error, out.routes.error, 'a later command throws the same failure');
    assert.ok(out.stop.ms < 200, `at once: ${out.stop.ms} ms`);
    // The failure is reported only after the lane closed itself (rx may still be on its way down).
    assert.ok(out.uringsAfterFailure <= 1, `the failed tx lane closed its io_uring: ${out.uringsAfterFailure} open`);
    assert.ok(out.uncaught.length >= 1, "the Worker's 'error' reached the main thread (WorkerLanes rethrows it)");
    for (const message of out.uncaught) assert.equal(message, INVALID_ROUTE);
    assert.equal(out.close.error, null);
    assert.equal(out.close.value, true, 'both workers failed, so the fds are safe to close');
    assert.ok(out.close.ms < PROMPT_MS, `close() took ${out.close.ms} ms`);
    assert.equal(out.uringsAfterClose, 0, 'both failed lanes closed their io_uring');
    assert.deepEqual(out.closed, [0, 0]);
    assert.ok(exitAfterFdsMs < EXIT_MS, `the process exited ${exitAfterFdsMs} ms after closing the fds`);
  });

  it('a worker terminated, or ending by itself, while shim poll watchers poll: the process lives on', () => {
    interface Ended {
      polling: boolean;
      exitCode: number;
      errors: string[];
    }
    const { out, exitAfterFdsMs } = run<{ terminated: Ended; exited: Ended; mainPoll: boolean; closed: number[] }>(
      'terminate-polling',
    );
    assert.deepEqual(
      out.terminated,
      { polling: true, exitCode: 1, errors: [] },
      'terminate() ends the polling worker (exit code 1)',
    );
    assert.deepEqual(
      out.exited,
      { polling: true, exitCode: 0, errors: [] },
      'process.exit(0) in the polling worker ends just that thread',
    );
    assert.equal(out.mainPoll, true, "the main thread's own watcher still works");
    assert.deepEqual(out.closed, [0, 0]);
    assert.deepEqual(out.uncaught, []);
    assert.ok(exitAfterFdsMs < EXIT_MS, `the process exited ${exitAfterFdsMs} ms after closing the fds`);
  });

  it('healthy lanes: routes, config, stop, then close() is true and the process exits promptly', () => {
    const { out, exitAfterFdsMs } = run<{
      status: { tunIoUring: number; udpGro: boolean };
      uringsRunning: number;
      uringsAfterClose: number;
      countersLength: number;
      routes: string | null;
      config: string | null;
      stop: string | null;
      close: { value: unknown; error: string | null; ms: number };
      closeAgain: unknown;
      afterClose: string | null;
      closed: number[] | null;
    }>('happy');
    assert.equal(out.status.tunIoUring, 64, 'both lanes run their io_uring');
    assert.equal(out.uringsRunning, 2);
    assert.ok(out.countersLength > 0);
    assert.deepEqual([out.routes, out.config, out.stop], [null, null, null], 'every command acknowledged');
    assert.deepEqual(out.close, { value: true, error: null, ms: out.close.ms });
    assert.ok(out.close.ms < PROMPT_MS, `close() took ${out.close.ms} ms`);
    assert.equal(out.uringsAfterClose, 0, 'when close() returns, both lanes have closed their io_uring');
    assert.equal(out.closeAgain, true, 'close() is idempotent');
    assert.equal(out.afterClose, 'the datapath workers have ended');
    assert.deepEqual(out.closed, [0, 0]);
    assert.deepEqual(out.uncaught, []);
    assert.ok(exitAfterFdsMs < EXIT_MS, `the process exited ${exitAfterFdsMs} ms after closing the fds`);
  });
});
