// Entry of a datapath worker thread: one Lane (worker-lanes.ts starts one per direction, or one
// for both that waits in io_uring). Commands arrive as messages and are acknowledged through the
// shared status array, so that the main thread can wait for them synchronously (Atomics.wait): a
// route update is in force when setRoutes returns, as with a lane on the main thread. A lane that
// fails (at start or later) stops polling and closes its ring first, then says why and marks the
// status failed: the main thread never waits out a dead worker, and may close the fds once it
// sees the mark.
//
// A lane waiting in io_uring never returns to this thread's event loop: it blocks in the shim,
// and the main thread rings its doorbell (an eventfd) after each command, which this thread then
// takes with receiveMessageOnPort. The wait is bounded (WAIT_TIMEOUT_MS) so the status is
// published, and a terminated thread ends, within that time even with no traffic.

// perf_hooks' object, not the global `performance`: that is a lazy getter, called on every use
// (once per wait here).
import { performance } from 'node:perf_hooks';
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { shim, WAIT } from '../native/shim.js';
import { RoutingSnapshot } from '../routing-table/snapshot.js';
import { Lane } from './lane.js';
import { warmUp } from './warm-up.js';
import { ACK_FAILED, S, publishStatus, type LaneCommand, type LaneWorkerInit } from './worker-protocol.js';

/** How often the lane's status (offloads in force, last errno) is published between commands. */
const STATUS_INTERVAL_MS = 1000;
/** The longest a waiting lane blocks with nothing to do. */
const WAIT_TIMEOUT_MS = 250;

/**
 * The short scheduler slice (init.sliceUs) makes the lane's wake-ups preempt CPU-bound work, but
 * under bulk traffic it also makes the lane switch out every 100 µs (measured: TCP through the
 * agent at 0.42 of VXLAN instead of 0.57). So the lane keeps it only while it forwards lone
 * packets: BULK_AFTER waits in a row that found traffic already queued put the default slice
 * back; LONE_AFTER waits in a row that had to sleep take the short one again.
 */
const BULK_AFTER = 4;
const LONE_AFTER = 16;

/** Switches the thread's slice between short (lone packets) and the default (bulk traffic). */
class SlicePolicy {
  private short = false;
  private streak = 0;

  constructor(private readonly sliceUs: number) {
    if (sliceUs > 0) this.short = shim.threadSetSlice(sliceUs) === 0;
  }

  /** After each wait that brought packets: queued = it found traffic already queued (WAIT.*AtOnce). */
  observe(queued: boolean): void {
    if (this.sliceUs === 0) return;
    if (queued === this.short) this.streak++;
    else this.streak = 0;
    if (this.short && this.streak >= BULK_AFTER) this.set(false);
    else if (!this.short && this.streak >= LONE_AFTER) this.set(true);
  }

  private set(short: boolean): void {
    if (shim.threadSetSlice(short ? this.sliceUs : 0) === 0) this.short = short;
    this.streak = 0;
  }
}

const init = workerData as LaneWorkerInit;
const status = new Int32Array(init.status);
const replies: MessagePort = init.replies;
let lane: Lane | null = null;

function acknowledge(seq: number): void {
  Atomics.store(status, S.ack, seq);
  Atomics.notify(status, S.ack);
}

/** The lane is done for: release what touches the fds, then tell the main thread why. */
function fail(err: unknown): void {
  if (Atomics.load(status, S.ack) === ACK_FAILED) return;
  try {
    lane?.close();
  } finally {
    replies.postMessage({ error: err instanceof Error ? err.message : String(err) });
    Atomics.store(status, S.ack, ACK_FAILED);
    Atomics.notify(status, S.ack);
  }
}

// Runs before the error ends the thread (and reaches the main thread as the Worker's 'error').
process.on('uncaughtExceptionMonitor', fail);

try {
  warmUp(init.setup, init.config);
  lane = new Lane(init.setup, init.tunFd, init.udpFd, init.config, init.counters, init.direction, init.latency);
  // Waiting in io_uring where asked and possible; else (no io_uring here) the event loop.
  if (init.wakeFd < 0 || lane.startWaiting(init.wakeFd, init.spinUs) < 0) lane.start(init.spinUs);
} catch (err) {
  fail(err);
  throw err;
}
const running = lane;
/** Publishes the lane's status, and its busy-polling counts into the shared counters. */
const publish = (): void => {
  running.syncSpinCounts();
  publishStatus(status, running.status());
};
publish();
acknowledge(0);

/** Carries out one command; false once the lane is closed (the thread is to end). */
function handle(command: LaneCommand): boolean {
  switch (command.type) {
    case 'routes':
      running.setRoutes(RoutingSnapshot.build(command.routes), command.peerCounters);
      break;
    case 'config':
      running.setConfig(command.config);
      break;
    case 'stop':
      running.stop(command.drainBatches);
      break;
    case 'close':
      running.close();
      publish();
      acknowledge(command.seq);
      parentPort!.close(); // nothing left to keep the thread: it ends
      replies.close();
      return false;
  }
  publish();
  acknowledge(command.seq);
  return true;
}

if (running.waiting) {
  // Best effort: a kernel without per-task slices (before 6.12) forwards as before.
  const slice = new SlicePolicy(init.sliceUs);
  let published = performance.now();
  for (let open = true; open;) {
    const ev = running.waitOnce(WAIT_TIMEOUT_MS);
    if (ev & (WAIT.tun | WAIT.udp)) slice.observe((ev & (WAIT.tunAtOnce | WAIT.udpAtOnce)) !== 0);
    if (ev & WAIT.wake) {
      for (let m = receiveMessageOnPort(parentPort!); open && m; m = receiveMessageOnPort(parentPort!))
        open = handle(m.message as LaneCommand);
    }
    if (open && performance.now() - published >= STATUS_INTERVAL_MS) {
      publish();
      published = performance.now();
    }
  }
} else {
  if (init.sliceUs > 0) shim.threadSetSlice(init.sliceUs);
  const timer = setInterval(publish, STATUS_INTERVAL_MS);
  timer.unref();
  parentPort!.on('message', (command: LaneCommand) => {
    if (!handle(command)) clearInterval(timer);
  });
}
