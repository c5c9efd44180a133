// Drives a Forwarder from fd readiness (libuv's poll, level-triggered, on this thread). Each
// wake-up moves a few batches of one direction, then, with busy-polling, what answers them (either
// direction, a bounded number of spins), and returns to the event loop, so the directions and the
// control plane take turns. A lane in a worker thread drives one direction.
import { shim, SPIN_AFTER, type PollHandle, type RingHandle } from '../native/shim.js';
import type { Forwarder } from './forwarder.js';

/** Which way an engine forwards: tx = flannel0 -> UDP, rx = UDP -> flannel0. */
export type Directions = 'both' | 'tx' | 'rx';

/** Batches per wake-up: bounds how long one direction holds the thread. */
const BATCHES_PER_WAKE = 8;

/** Busy-polling rounds per wake-up at most (each at most --datapath-spin-us). */
const SPINS_PER_WAKE = 8;

export class DatapathEngine {
  private tunWatch: PollHandle | null = null;
  private udpWatch: PollHandle | null = null;

  constructor(
    private readonly forwarder: Forwarder,
    private readonly tunFd: number,
    private readonly udpFd: number,
    private readonly batch: number,
    private readonly directions: Directions = 'both',
  ) {}

  /**
   * ring: the lane's ring; with busy-polling set on it (ringSetSpin), a wake-up that forwarded
   * polls on for what answers it before returning to the event loop (shim.spinPoll), at most
   * SPINS_PER_WAKE times, so the control plane on this thread waits a few spins at most.
   */
  start(ring: RingHandle | null = null): void {
    if (this.tunWatch || this.udpWatch) return;
    const fwd = this.forwarder,
      batch = this.batch;
    const tx = this.directions !== 'rx',
      rx = this.directions !== 'tx';
    const tunFd = tx ? this.tunFd : -1,
      udpFd = rx ? this.udpFd : -1;
    // A few batches of one direction (fewer once a batch comes back short): packets moved.
    const batches = (step: () => number): number => {
      let moved = 0;
      for (let k = 0; k < BATCHES_PER_WAKE; k++) {
        const n = step();
        moved += n;
        if (n < batch) break;
      }
      return moved;
    };
    const tunToUdp = (): number => fwd.tunToUdp(),
      udpToTun = (): number => fwd.udpToTun();
    const forwardTx = (): number => batches(tunToUdp);
    const forwardRx = (): number => batches(udpToTun);
    // spinPoll's bits: 1 for its first fd, 2 for its second (the first is flannel0 unless rx only).
    // after: the way forwarded last (rx when both were).
    const spinOn = (after: number): void => {
      if (ring === null) return;
      const first = tx ? tunFd : udpFd,
        second = tx ? udpFd : -1;
      for (let spins = 0; spins < SPINS_PER_WAKE; spins++) {
        const bits = shim.spinPoll(ring, first, second, after);
        if (bits <= 0) return;
        const readyTx = tx && (bits & 1) !== 0,
          readyRx = rx && (tx ? bits & 2 : bits & 1) !== 0;
        if (readyTx) forwardTx();
        if (readyRx) forwardRx();
        after = readyRx ? SPIN_AFTER.rx : SPIN_AFTER.tx;
      }
    };
    if (tx) {
      this.tunWatch = shim.pollStart(this.tunFd, false, () => {
        if (forwardTx() > 0) spinOn(SPIN_AFTER.tx);
      });
    }
    if (rx) {
      this.udpWatch = shim.pollStart(this.udpFd, false, () => {
        if (forwardRx() > 0) spinOn(SPIN_AFTER.rx);
      });
    }
  }

  stop(): void {
    if (this.tunWatch) shim.pollStop(this.tunWatch);
    if (this.udpWatch) shim.pollStop(this.udpWatch);
    this.tunWatch = this.udpWatch = null;
  }
}
