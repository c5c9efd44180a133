// Drives a Forwarder from fd readiness (libuv's poll, level-triggered, on this thread). Each
// wake-up moves a few batches of one direction and returns to the event loop, so the two
// directions and the control plane take turns. A lane in a worker thread drives one direction.
import { shim, type PollHandle } from '../native/shim.js';
import type { Forwarder } from './forwarder.js';

/** Which way an engine forwards: tx = flannel0 -> UDP, rx = UDP -> flannel0. */
export type Directions = 'both' | 'tx' | 'rx';

/** Batches per wake-up: bounds how long one direction holds the thread. */
const BATCHES_PER_WAKE = 8;

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

  start(): void {
    if (this.tunWatch || this.udpWatch) return;
    const fwd = this.forwarder,
      batch = this.batch;
    if (this.directions !== 'rx') {
      this.tunWatch = shim.pollStart(this.tunFd, false, () => {
        for (let k = 0; k < BATCHES_PER_WAKE; k++) if (fwd.tunToUdp() < batch) break;
      });
    }
    if (this.directions !== 'tx') {
      this.udpWatch = shim.pollStart(this.udpFd, false, () => {
        for (let k = 0; k < BATCHES_PER_WAKE; k++) if (fwd.udpToTun() < batch) break;
      });
    }
  }

  stop(): void {
    if (this.tunWatch) shim.pollStop(this.tunWatch);
    if (this.udpWatch) shim.pollStop(this.udpWatch);
    this.tunWatch = this.udpWatch = null;
  }
}
