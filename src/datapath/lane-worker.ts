// Entry of a datapath worker thread: one Lane for one direction (worker-lanes.ts starts two).
// Commands arrive as messages and are acknowledged through the shared status array, so that the
// main thread can wait for them synchronously (Atomics.wait): a route update is in force when
// setRoutes returns, as with a lane on the main thread.
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { RoutingSnapshot } from '../routing-table/snapshot.js';
import { Lane } from './lane.js';
import { ACK_FAILED, S, publishStatus, type LaneCommand, type LaneWorkerInit } from './worker-protocol.js';

/** How often the lane's status (offloads in force, last errno) is published between commands. */
const STATUS_INTERVAL_MS = 1000;

const init = workerData as LaneWorkerInit;
const status = new Int32Array(init.status);
const replies: MessagePort = init.replies;

function acknowledge(seq: number): void {
  Atomics.store(status, S.ack, seq);
  Atomics.notify(status, S.ack);
}

let lane: Lane;
try {
  lane = new Lane(init.setup, init.tunFd, init.udpFd, init.config, new Float64Array(init.counters), init.direction);
  lane.start();
} catch (err) {
  replies.postMessage({ error: (err as Error).message });
  Atomics.store(status, S.ack, ACK_FAILED);
  Atomics.notify(status, S.ack);
  throw err;
}
publishStatus(status, lane.status());
acknowledge(0);

const timer = setInterval(() => publishStatus(status, lane.status()), STATUS_INTERVAL_MS);
timer.unref();

parentPort!.on('message', (command: LaneCommand) => {
  switch (command.type) {
    case 'routes':
      lane.setRoutes(RoutingSnapshot.build(command.routes));
      break;
    case 'config':
      lane.setConfig(command.config);
      break;
    case 'stop':
      lane.stop(command.drainBatches);
      break;
    case 'close':
      lane.close();
      clearInterval(timer);
      publishStatus(status, lane.status());
      acknowledge(command.seq);
      parentPort!.close(); // nothing left to keep the thread: it ends
      replies.close();
      return;
  }
  publishStatus(status, lane.status());
  acknowledge(command.seq);
});
