// Forwarding on worker threads, each a Lane with its own slab, ring, io_urings and counters over
// the same two fds: one per direction (--workers 2: flannel0 -> UDP in one, UDP -> flannel0 in
// the other), or one for both directions that waits in io_uring (--datapath-wait=io-uring), never
// going through an event loop. Only routes and config cross threads, never packets. Every call
// waits (Atomics.wait, bounded) until every worker has acknowledged it, so a route update is in
// force when setRoutes returns, and close tells whether the workers are certainly done with the
// fds. A waiting lane is woken for each command by its doorbell (an eventfd).
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { DatapathClosedError, DatapathWorkerError } from '../errors.js';
import type { RoutingSnapshot } from '../routing-table/snapshot.js';
import { COUNTER_NAMES, newCounters } from './counters.js';
import { LATENCY_CELLS, newLatency } from './latency.js';
import type { ForwarderConfig } from './forwarder.js';
import type { Directions } from './engine.js';
import type { LaneSetup, LaneStatus, Lanes } from './lane.js';
import { newPeerCounters } from './peer-counters.js';
import { shim } from '../native/shim.js';
import {
  ACK_FAILED,
  ACK_NONE,
  S,
  STATUS_FIELDS,
  readStatus,
  type LaneCommand,
  type LaneWorkerInit,
} from './worker-protocol.js';

/** The lane thread's young generation (V8 resourceLimits), MiB. */
const LANE_YOUNG_GENERATION_MB = 2;

/** A worker's start-up (a new thread, its modules, slab and ring) and any command, at most. */
const REPLY_TIMEOUT_MS = 10_000;

/** A cache line, at least: each lane's counters sit this far from any other memory. */
const COUNTER_PADDING_BYTES = 64;

export interface WorkerLanesOptions {
  /** One worker for both directions that waits in io_uring (else one per direction, event loops). */
  readonly waiting?: boolean;
  /** The scheduler time slice each worker asks for (threadSetSlice), µs; 0 = the default. */
  readonly sliceUs?: number;
  /** The lane busy-polls this long for the answer before it sleeps, after traffic (µs; 0: never). */
  readonly spinUs?: number;
}

interface LaneThread {
  readonly worker: Worker;
  readonly direction: Directions;
  /** The lane's doorbell (waiting in io_uring), or -1. */
  readonly wakeFd: number;
  readonly status: Int32Array;
  readonly replies: MessagePort;
  readonly counters: Float64Array;
  readonly latency: Float64Array;
  /** Why the lane failed, once known. */
  failure: string | null;
}

export class WorkerLanes implements Lanes {
  private readonly threads: LaneThread[] = [];
  private readonly merged = newCounters();
  private readonly mergedLatency = newLatency();
  private seq = 0;
  private closed = false;
  /** Per-peer counts of the routes in force, one array both workers write (peer-counters.ts). */
  private peerCounts = newPeerCounters(0, true);

  /**
   * Starts the workers (waiting: one for both directions that waits in io_uring, falling back to
   * its event loop where io_uring cannot wait; else one per direction) and waits until each runs
   * its lane. Throws if one cannot start (all are then ended).
   */
  constructor(
    setup: LaneSetup,
    tunFd: number,
    udpFd: number,
    config: ForwarderConfig,
    { waiting = false, sliceUs = 0, spinUs = 0 }: WorkerLanesOptions = {},
  ) {
    try {
      for (const direction of waiting ? (['both'] as const) : (['tx', 'rx'] as const)) {
        const wakeFd = waiting ? shim.eventfdOpen() : -1;
        if (waiting && wakeFd < 0)
          throw new DatapathWorkerError(`cannot create the lane's doorbell: ${shim.strerror(wakeFd)}`);
        const status = new Int32Array(new SharedArrayBuffer(STATUS_FIELDS * 4));
        status[S.ack] = ACK_NONE;
        const counters = paddedShared(COUNTER_NAMES.length);
        const latency = paddedShared(LATENCY_CELLS);
        const { port1, port2 } = new MessageChannel();
        const init: LaneWorkerInit = {
          direction,
          wakeFd,
          sliceUs,
          spinUs,
          setup,
          tunFd,
          udpFd,
          config,
          counters,
          latency,
          status: status.buffer as SharedArrayBuffer,
          replies: port2,
        };
        let worker: Worker;
        try {
          worker = new Worker(new URL('./lane-worker.js', import.meta.url), {
            workerData: init,
            transferList: [port2],
            // A lane allocates nothing per packet: a small young generation keeps the thread's
            // memory down (V8's default semi-spaces are sized for allocating code).
            resourceLimits: { maxYoungGenerationSizeMb: LANE_YOUNG_GENERATION_MB },
          });
        } catch (err) {
          if (wakeFd >= 0) shim.closeFd(wakeFd); // no thread ever saw it
          throw err;
        }
        // A lane that throws while forwarding is a bug, fatal as it would be on the main thread
        // (the lane has closed itself first: lane-worker.ts).
        worker.on('error', (err) => {
          if (!this.closed) throw err;
        });
        this.threads.push({ worker, direction, wakeFd, status, replies: port1, counters, latency, failure: null });
      }
      for (const t of this.threads) this.waitFor(t, 0, 'start');
    } catch (err) {
      this.close();
      throw err;
    }
  }

  setRoutes(routes: RoutingSnapshot): void {
    const peerCounters = newPeerCounters(routes.routeCount, true);
    this.command({ type: 'routes', routes: routes.routes, peerCounters });
    this.peerCounts = peerCounters;
  }

  peerCounters(): Float64Array {
    return this.peerCounts;
  }

  setConfig(config: ForwarderConfig): void {
    this.command({ type: 'config', config });
  }

  stop(drainBatches: number): void {
    this.command({ type: 'stop', drainBatches });
  }

  /**
   * Ends both workers. True when each confirmed that it stopped polling (or failed, which stops
   * it too); a worker still starting is waited for first. Idempotent (later calls: true).
   */
  close(): boolean {
    if (this.closed) return true;
    this.closed = true;
    const seq = ++this.seq;
    let confirmed = true;
    for (const t of this.threads) {
      try {
        this.waitFor(t, 0, 'start');
        t.worker.postMessage({ seq, type: 'close' } satisfies LaneCommand);
        if (t.wakeFd >= 0) shim.eventfdSignal(t.wakeFd);
        this.waitFor(t, seq, 'close');
      } catch {
        // Failed (and so stopped) or silent: only a silent one leaves the fds unsafe to close.
        confirmed &&= Atomics.load(t.status, S.ack) === ACK_FAILED;
      }
      t.replies.close();
      void t.worker.terminate();
    }
    // The doorbells go last, and only when no lane can still wait on them.
    if (confirmed) for (const t of this.threads) if (t.wakeFd >= 0) shim.closeFd(t.wakeFd);
    return confirmed;
  }

  /** The lanes' status together: GSO from the sending lane, GRO from the receiving one. */
  status(): LaneStatus {
    const [tx, rx] = this.threads.map((t) => readStatus(t.status));
    if (rx === undefined) return tx!;
    return {
      udpGso: tx!.udpGso,
      udpGro: rx!.udpGro,
      tunGro: rx!.tunGro,
      tunIoUring: Math.min(tx!.tunIoUring, rx!.tunIoUring),
      lastErrno: rx!.lastErrno !== 0 ? rx!.lastErrno : tx!.lastErrno,
    };
  }

  /** The lanes' counters added up (each counter is written by one direction: counters.ts). */
  counters(): Float64Array {
    return sumInto(
      this.merged,
      this.threads.map((t) => t.counters),
    );
  }

  /** The lanes' histograms added up (each series is written by one direction). */
  latency(): Float64Array {
    return sumInto(
      this.mergedLatency,
      this.threads.map((t) => t.latency),
    );
  }

  private command(body: DistributiveOmit<LaneCommand, 'seq'>): void {
    if (this.closed) throw new DatapathClosedError('the datapath workers have ended');
    const seq = ++this.seq;
    for (const t of this.threads) {
      t.worker.postMessage({ ...body, seq });
      if (t.wakeFd >= 0) shim.eventfdSignal(t.wakeFd);
    }
    for (const t of this.threads) this.waitFor(t, seq, body.type);
  }

  /** Blocks until thread t has acknowledged seq; throws if it failed, or after REPLY_TIMEOUT_MS. */
  private waitFor(t: LaneThread, seq: number, what: string): void {
    const deadline = Date.now() + REPLY_TIMEOUT_MS;
    for (;;) {
      const ack = Atomics.load(t.status, S.ack);
      if (ack >= seq) return;
      if (ack === ACK_FAILED) {
        if (t.failure === null) {
          const reply = receiveMessageOnPort(t.replies)?.message as { error?: string } | undefined;
          t.failure = reply?.error ?? 'unknown error';
        }
        throw new DatapathWorkerError(`the ${t.direction} datapath worker failed: ${t.failure}`);
      }
      const left = deadline - Date.now();
      if (left <= 0)
        throw new DatapathWorkerError(
          `the ${t.direction} datapath worker did not answer "${what}" within ${REPLY_TIMEOUT_MS} ms`,
        );
      Atomics.wait(t.status, S.ack, ack, left);
    }
  }
}

/** out = the sum of the arrays, element by element. */
function sumInto(out: Float64Array, arrays: readonly Float64Array[]): Float64Array {
  out.fill(0);
  for (const a of arrays) for (let i = 0; i < out.length; i++) out[i]! += a[i]!;
  return out;
}

/** A Float64Array over shared memory, a cache line clear of anything else: the other lane's arrays above all. */
function paddedShared(length: number): Float64Array {
  const bytes = length * Float64Array.BYTES_PER_ELEMENT;
  return new Float64Array(new SharedArrayBuffer(bytes + 2 * COUNTER_PADDING_BYTES), COUNTER_PADDING_BYTES, length);
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
