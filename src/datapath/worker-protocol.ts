// What crosses between the main thread and a datapath worker (lane-worker.ts): the start-up
// data, commands (routes, config, stop, close; never packets), and a shared Int32Array of status
// through which each command is acknowledged and the lane's status is published.
import type { MessagePort } from 'node:worker_threads';
import type { Route } from '../routing-table/snapshot.js';
import type { Directions } from './engine.js';
import type { ForwarderConfig } from './forwarder.js';
import type { LaneSetup, LaneStatus } from './lane.js';

export interface LaneWorkerInit {
  readonly direction: Directions;
  /** The lane's doorbell (an eventfd) when it is to wait in io_uring; -1: the event loop. */
  readonly wakeFd: number;
  /** The scheduler time slice the thread asks for (shim.threadSetSlice), µs; 0 = the default. */
  readonly sliceUs: number;
  /** The lane busy-polls this long for the answer before it sleeps, after traffic (µs; 0: never). */
  readonly spinUs: number;
  readonly setup: LaneSetup;
  readonly tunFd: number;
  readonly udpFd: number;
  readonly config: ForwarderConfig;
  /** This lane's counters, over a SharedArrayBuffer that the main thread reads. */
  readonly counters: Float64Array;
  /** This lane's latency histograms (latency.ts), over a SharedArrayBuffer too. */
  readonly latency: Float64Array;
  /** SharedArrayBuffer of STATUS_FIELDS Int32 (S.*). */
  readonly status: SharedArrayBuffer;
  /** Where a lane that could not start says why. */
  readonly replies: MessagePort;
}

/** Each command carries a sequence number; the worker stores it in status[S.ack] when done. */
export type LaneCommand =
  | {
      readonly seq: number;
      readonly type: 'routes';
      readonly routes: readonly Route[];
      /** Per-peer counts laid out by routes, shared by both lanes (each writes its direction's fields). */
      readonly peerCounters: Float64Array;
    }
  | { readonly seq: number; readonly type: 'config'; readonly config: ForwarderConfig }
  | { readonly seq: number; readonly type: 'stop'; readonly drainBatches: number }
  | { readonly seq: number; readonly type: 'close' };

/** Fields of the status array. */
export const S = { ack: 0, udpGso: 1, udpGro: 2, tunGro: 3, tunIoUring: 4, lastErrno: 5, waiting: 6 } as const;
export const STATUS_FIELDS = 7;
/** status[S.ack] before the lane has started, and after it failed to. */
export const ACK_NONE = -1;
export const ACK_FAILED = -2;

export function publishStatus(status: Int32Array, s: LaneStatus): void {
  Atomics.store(status, S.udpGso, s.udpGso);
  Atomics.store(status, S.udpGro, s.udpGro ? 1 : 0);
  Atomics.store(status, S.tunGro, s.tunGro ? 1 : 0);
  Atomics.store(status, S.tunIoUring, s.tunIoUring);
  Atomics.store(status, S.lastErrno, s.lastErrno);
  Atomics.store(status, S.waiting, s.waiting === true ? 1 : 0);
}

export function readStatus(status: Int32Array): LaneStatus {
  return {
    udpGso: Atomics.load(status, S.udpGso),
    udpGro: Atomics.load(status, S.udpGro) === 1,
    tunGro: Atomics.load(status, S.tunGro) === 1,
    tunIoUring: Atomics.load(status, S.tunIoUring),
    lastErrno: Atomics.load(status, S.lastErrno),
    waiting: Atomics.load(status, S.waiting) === 1,
  };
}
