// Loader and typed interface of the C shim (native/shim.c; ABI in native/README.md).
// Batch calls return a count or -errno and never throw on I/O errors.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeShimLoadError } from '../errors.js';

/** Opaque handle binding the slab and its per-slot metadata arrays in C. */
export type RingHandle = { readonly __brand: 'RingHandle' };
/**
 * The per-slot typed arrays a ring binds, by name (native/README.md "The ring"; a PacketSlab,
 * src/datapath/slab.ts, is one and documents each).
 */
export interface RingLayout {
  readonly slotOffsets: Uint32Array;
  readonly slotCaps: Uint32Array;
  readonly lens: Int32Array;
  readonly addrs: Uint32Array;
  readonly ports: Uint16Array;
  readonly offs: Uint16Array;
  readonly vnetHdrs: Uint8Array;
  readonly extOffs: Uint32Array;
  readonly extLens: Uint16Array;
  readonly segSizes: Uint16Array;
  /** Per slot: arrival time (µs, CLOCK_MONOTONIC), set by every read and receive. */
  readonly stamps: Float64Array;
  /** [0]: when the last batch call returned (µs, CLOCK_MONOTONIC). */
  readonly ioClock: Float64Array;
}
/** Opaque uv_poll_t watcher. */
export type PollHandle = { readonly __brand: 'PollHandle' };

export interface Shim {
  /** Binds the slab and its per-slot arrays, found by name on layout (a PacketSlab is one). */
  createRing(slab: Uint8Array, layout: RingLayout): RingHandle;
  /**
   * fd or -errno; name may contain %d ("flannel%d"). The fd is non-blocking. vnetHdr: IFF_VNET_HDR,
   * so that coalesced super-packets can be written (the shim adds and strips the header itself).
   */
  openTun(name: string, vnetHdr: boolean): number;
  /**
   * TUNSETOFFLOAD on a vnetHdr fd (TUN_F_CSUM 1 | TUN_F_TSO4 2 ...): 0 or -errno. Reads may then
   * be GSO super-packets or carry partial checksums (the read's virtio header is in vnetHdrs).
   */
  tunSetOffload(fd: number, flags: number): number;
  /** Tells the ring that its TUN fd was opened with vnetHdr. */
  ringSetTunVnet(ring: RingHandle, on: boolean): void;
  tunName(fd: number): string;
  /**
   * TUN reads and writes of this ring through an io_uring instance of `entries` SQEs (1..1024):
   * one io_uring_enter per batch instead of one syscall per packet. 0, or -errno (ENOSYS, EPERM
   * when io_uring is missing or disabled) with plain syscalls still in force.
   */
  ringEnableUring(ring: RingHandle, entries: number): number;
  /** Closes the ring's io_uring now; its TUN I/O uses plain syscalls from then on. */
  ringDisableUring(ring: RingHandle): void;
  /** The SQ entries of the ring's io_uring; 0 when TUN I/O uses plain syscalls. */
  ringUring(ring: RingHandle): number;
  /** Reads packets into slots first.. until EAGAIN or max: count or -errno. */
  tunRead(ring: RingHandle, fd: number, first: number, max: number): number;
  /**
   * Writes the listed slots; returns packets written; failed slots get lens[slot] = -errno. With
   * groups (vnetHdr only): groups[i] = k >= 2 writes list[i..i+k) as one super-packet (see native/README.md).
   */
  tunWrite(ring: RingHandle, fd: number, list: Uint16Array, count: number, groups: Uint16Array | null): number;
  /** fd or -errno: a non-blocking UDP socket bound to addr:port (addr uint32 host order). */
  udpOpen(addr: number, port: number, rcvbuf: number, sndbuf: number): number;
  udpLocalPort(fd: number): number;
  /** One recvmmsg into slots first..: count (0 on EAGAIN) or -errno. lens may exceed the slot's cap (truncated). */
  udpRecv(ring: RingHandle, fd: number, first: number, max: number): number;
  /**
   * sendmmsg of the listed slots (each its bytes, then extLens[slot] bytes at extOffs[slot]) to
   * addrs/ports[slot]; returns sent; failed slots get
   * lens[slot] = -errno. With GSO on, runs of equal-size datagrams to one peer go as one message.
   */
  udpSend(ring: RingHandle, fd: number, list: Uint16Array, count: number): number;
  /** UDP_GRO on the socket; udpRecv then sets segSizes of coalesced runs. 0 or -errno. */
  udpEnableGro(ring: RingHandle, fd: number): number;
  /** 0 if the socket accepts UDP_SEGMENT, else -errno. */
  udpProbeGso(fd: number): number;
  /** Turns UDP GSO on for udpSend (max segments per message, capped at 64; 0 = off). */
  ringSetGso(ring: RingHandle, maxSegments: number): number;
  /** The GSO setting in force: 0 once the kernel refused a GSO message. */
  ringGso(ring: RingHandle): number;
  lastErrno(ring: RingHandle): number;
  closeFd(fd: number): number;
  strerror(errno: number): string;
  pollStart(fd: number, writable: boolean, callback: (status: number, events: number) => void): PollHandle;
  pollStop(handle: PollHandle): void;
  /**
   * Sets up waiting in io_uring for this ring, on the calling thread (the only one that may then
   * call waitNext): flannel0's reads go into slot tunSlot, the socket's into udpSlot.. (up to
   * udpMax datagrams per read); wakeFd (an eventfdOpen fd) is the doorbell; spinUs: how long each
   * wait busy-polls before it sleeps, while a packet came in the last 2 ms (0: never); polls
   * (tests): WAIT_POLLS, multishot by default. 0, or -errno (no io_uring, or too old a kernel).
   */
  waitOpen(
    ring: RingHandle,
    tunFd: number,
    udpFd: number,
    wakeFd: number,
    tunSlot: number,
    udpSlot: number,
    udpMax: number,
    spinUs: number,
    polls?: number,
  ): number;
  /**
   * Reads each fd of `want` (WAIT.tun | WAIT.udp) that a poll (kept armed in io_uring) found
   * readable, one packet from flannel0 and up to udpMax datagrams from the socket, and returns
   * what came (WAIT.* bits; with WAIT.udp, the datagrams read are `ev >>> WAIT.udpCountShift`),
   * waiting at most timeoutMs when nothing was ready. What was read is in the slots (lens, stamps,
   * and for a datagram addrs, ports, segSizes) as tunRead/udpRecv leave it. An fd not wanted is
   * not read. 0: the time ran out (or a signal came, or a poll fired for nothing). -errno if the
   * io_uring failed.
   */
  waitNext(ring: RingHandle, timeoutMs: number, want: number): number;
  /** Closes the wait's io_uring (its polls end with it). Idempotent. */
  waitClose(ring: RingHandle): void;
  /**
   * What the ring's busy-polling after traffic did so far: [spins that caught a packet, spins that
   * ran out and slept, spins stopped (or not started) because other tasks wanted the CPU, waits
   * that did not poll because the spins before had caught nothing]; null if the ring does not
   * busy-poll.
   */
  spinCounts(ring: RingHandle): [number, number, number, number] | null;
  /**
   * Busy-polling of up to spinUs (capped at 10 ms; 0: off) for spinPoll. It yields the CPU between
   * polls and does not run while more tasks want to run than there are CPUs. 0 or -errno.
   */
  ringSetSpin(ring: RingHandle, spinUs: number): number;
  /**
   * Right after forwarding (after: SPIN_AFTER.tx or .rx, the way forwarded last; spins that catch
   * nothing pause each way apart): busy-polls (ringSetSpin) until fdA (bit 1) or fdB (bit 2; -1:
   * none) is readable (the bits), or the spin runs out, meets contention or is paused (0). 0 at
   * once without busy-polling. -errno if poll failed.
   */
  spinPoll(ring: RingHandle, fdA: number, fdB: number, after: number): number;
  /**
   * Asks the scheduler for a time slice of sliceUs for the calling thread (sched_setattr's
   * sched_runtime; EEVDF, Linux 6.12+): shorter than a CPU-bound task's, its wake-ups preempt that
   * task at once. 0 = the default. 0 or -errno.
   */
  threadSetSlice(sliceUs: number): number;
  /** A non-blocking AF_UNIX datagram socket pair (a stand-in for flannel0 when warming up), or -errno. */
  datagramPair(): [number, number] | number;
  /** A non-blocking eventfd (a lane's doorbell), or -errno. Close it with closeFd. */
  eventfdOpen(): number;
  /** Rings the doorbell: wakes the waitNext waiting on it. 0 or -errno. */
  eventfdSignal(fd: number): number;
}

/** waitNext's bits. */
export const WAIT = Object.freeze({
  /** A packet from flannel0 is in the wait's tun slot. */
  tun: 1,
  /** A datagram is in the wait's udp slot. */
  udp: 2,
  /** The doorbell rang. */
  wake: 4,
  /**
   * The flannel0 packet was read from a device still readable since before this wait: more may
   * be queued (read on at once). Not for a packet whose coming made it readable meanwhile.
   */
  tunAtOnce: 8,
  /** The same for the socket, or its read took more than one datagram (traffic was queued). */
  udpAtOnce: 16,
  /** With WAIT.udp, `ev >>> udpCountShift` is how many datagrams are in udpSlot.. */
  udpCountShift: 8,
});

/**
 * waitOpen's polls, for tests of older kernels: multishot (as this kernel allows); one-shot, armed
 * again after each completion (kernels before 5.13); multishot asked with a flag the kernel
 * refuses, as kernels before 5.13 refuse multishot (the wait goes on with one-shot polls).
 */
export const WAIT_POLLS = Object.freeze({ multishot: 0, oneShot: 1, refused: 2 });

/** spinPoll's `after`: the way the caller forwarded last (the shim's SPIN_AFTER_*). */
export const SPIN_AFTER = Object.freeze({ tx: 0, rx: 1 });

function load(): Shim {
  const require = createRequire(import.meta.url);
  // dist/src/native/shim.js -> <repo>/build/Release/flannel_shim.node
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const file = path.join(root, 'build', 'Release', 'flannel_shim.node');
  try {
    return require(file) as Shim;
  } catch (err) {
    throw new NativeShimLoadError(
      `flannel-ts: cannot load the native shim ${file} ` +
        `(run "npm ci" or "node scripts/build-native.mjs"): ${(err as Error).message}`,
      { cause: err },
    );
  }
}

export const shim: Shim = load();

/** "-errno" -> "ENOENT-like message (errno N)" for logs and thrown control-plane errors. */
export function describeErrno(code: number): string {
  return `${shim.strerror(code)} (errno ${Math.abs(code)})`;
}
