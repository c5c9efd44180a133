// Entry of a datapath worker thread: one Lane for one direction (worker-lanes.ts starts two).
// Commands arrive as messages and are acknowledged through the shared status array, so that the
// main thread can wait for them synchronously (Atomics.wait): a route update is in force when
// setRoutes returns, as with a lane on the main thread. A lane that fails (at start or later)
// stops polling and closes its ring first, then says why and marks the status failed: the main
// thread never waits out a dead worker, and may close the fds once it sees the mark.
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { RoutingSnapshot } from '../routing-table/snapshot.js';
import { Lane } from './lane.js';
import { ACK_FAILED, S, publishStatus, type LaneCommand, type LaneWorkerInit } from './worker-protocol.js';

/** How often the lane's status (offloads in force, last errno) is published between commands. */
const STATUS_INTERVAL_MS = 1000;

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
  lane = new Lane(init.setup, init.tunFd, init.udpFd, init.config, init.counters, init.direction, init.latency);
  lane.start();
} catch (err) {
  fail(err);
  throw err;
}
const running = lane;
publishStatus(status, running.status());
acknowledge(0);

const timer = setInterval(() => publishStatus(status, running.status()), STATUS_INTERVAL_MS);
timer.unref();

parentPort!.on('message', (command: LaneCommand) => {
  switch (command.type) {
    case 'routes':
      running.setRoutes(RoutingSnapshot.build(command.routes));
      break;
    case 'config':
      running.setConfig(command.config);
      break;
    case 'stop':
      running.stop(command.drainBatches);
      break;
    case 'close':
      running.close();
      clearInterval(timer);
      publishStatus(status, running.status());
      acknowledge(command.seq);
      parentPort!.close(); // nothing left to keep the thread: it ends
      replies.close();
      return;
  }
  publishStatus(status, running.status());
  acknowledge(command.seq);
});
