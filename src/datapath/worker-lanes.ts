// Forwarding on two worker threads, one per direction (--workers 2): flannel0 -> UDP in one,
// UDP -> flannel0 in the other, each a Lane with its own slab, ring and io_uring over the same
// two fds. Only routes and config cross threads, never packets; counters are one shared array
// in which each direction writes its own. Every call waits (Atomics.wait, bounded) until both
// workers have acknowledged it, so a route update is in force when setRoutes returns and no
// worker polls an fd once close returns.
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import type { RoutingSnapshot } from '../routing-table/snapshot.js';
import type { ForwarderConfig } from './forwarder.js';
import type { LaneSetup, LaneStatus, Lanes } from './lane.js';
import {
  ACK_FAILED, ACK_NONE, S, STATUS_FIELDS, readStatus, type LaneCommand, type LaneWorkerInit,
} from './worker-protocol.js';

/** A worker's start-up (a new thread, its modules, slab and ring) and any command, at most. */
const REPLY_TIMEOUT_MS = 10_000;

interface LaneThread {
  readonly worker: Worker;
  readonly status: Int32Array;
  readonly replies: MessagePort;
  readonly direction: string;
}

export class WorkerLanes implements Lanes {
  private readonly threads: LaneThread[] = [];
  private seq = 0;
  private closed = false;

  /**
   * Starts both workers and waits until each runs its lane. counters must be backed by a
   * SharedArrayBuffer. Throws if a worker cannot start (both are then ended).
   */
  constructor(setup: LaneSetup, tunFd: number, udpFd: number, config: ForwarderConfig, counters: Float64Array) {
    if (!(counters.buffer instanceof SharedArrayBuffer)) throw new TypeError('worker lanes need shared counters');
    try {
      for (const direction of ['tx', 'rx'] as const) {
        const status = new Int32Array(new SharedArrayBuffer(STATUS_FIELDS * 4));
        status[S.ack] = ACK_NONE;
        const { port1, port2 } = new MessageChannel();
        const init: LaneWorkerInit = { direction, setup, tunFd, udpFd, config, counters: counters.buffer, status: status.buffer as SharedArrayBuffer, replies: port2 };
        const worker = new Worker(new URL('./lane-worker.js', import.meta.url), { workerData: init, transferList: [port2] });
        // A lane that throws while forwarding is a bug, fatal as it would be on the main thread.
        worker.on('error', (err) => { if (!this.closed) throw err; });
        this.threads.push({ worker, status, replies: port1, direction });
      }
      for (const t of this.threads) this.waitFor(t, 0, 'start');
    } catch (err) {
      this.close();
      throw err;
    }
  }

  setRoutes(routes: RoutingSnapshot): void {
    this.command({ type: 'routes', routes: routes.routes });
  }

  setConfig(config: ForwarderConfig): void {
    this.command({ type: 'config', config });
  }

  stop(drainBatches: number): void {
    this.command({ type: 'stop', drainBatches });
  }

  /** Ends both workers: once this returns, neither polls an fd nor has an io_uring. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const seq = ++this.seq;
    for (const t of this.threads) {
      if (Atomics.load(t.status, S.ack) >= 0) t.worker.postMessage({ seq, type: 'close' } satisfies LaneCommand);
    }
    for (const t of this.threads) {
      if (Atomics.load(t.status, S.ack) >= 0) {
        try {
          this.waitFor(t, seq, 'close');
        } catch {
          // A worker that does not answer is terminated below all the same.
        }
      }
      t.replies.close();
      void t.worker.terminate();
    }
  }

  /** The two lanes' status together: GSO from the sending lane, GRO from the receiving one. */
  status(): LaneStatus {
    const [tx, rx] = this.threads.map((t) => readStatus(t.status));
    return {
      udpGso: tx!.udpGso,
      udpGro: rx!.udpGro,
      tunGro: rx!.tunGro,
      tunIoUring: Math.min(tx!.tunIoUring, rx!.tunIoUring),
      lastErrno: rx!.lastErrno !== 0 ? rx!.lastErrno : tx!.lastErrno,
    };
  }

  private command(body: DistributiveOmit<LaneCommand, 'seq'>): void {
    if (this.closed) throw new Error('the datapath workers have ended');
    const seq = ++this.seq;
    for (const t of this.threads) t.worker.postMessage({ ...body, seq });
    for (const t of this.threads) this.waitFor(t, seq, body.type);
  }

  /** Blocks until thread t has acknowledged seq; throws on failure or after REPLY_TIMEOUT_MS. */
  private waitFor(t: LaneThread, seq: number, what: string): void {
    const deadline = Date.now() + REPLY_TIMEOUT_MS;
    for (;;) {
      const ack = Atomics.load(t.status, S.ack);
      if (ack >= seq) return;
      if (ack === ACK_FAILED) {
        const reply = receiveMessageOnPort(t.replies)?.message as { error?: string } | undefined;
        throw new Error(`the ${t.direction} datapath worker could not start: ${reply?.error ?? 'unknown error'}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the ${t.direction} datapath worker did not answer "${what}" within ${REPLY_TIMEOUT_MS} ms`);
      Atomics.wait(t.status, S.ack, ack, left);
    }
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
