/**
 * Runs inside a namespace for test/integration/worker-lanes-failures.test.ts (`ip netns exec NS
 * node this.js MODE`): drives WorkerLanes (--workers 2) and the shim's poll watchers in worker
 * threads over a real TUN and UDP socket, and prints what happened as one JSON line as it exits. The process
 * is never ended explicitly: the test checks that it exits by itself, with code 0, in time. Modes:
 *  - "start-fail": a lane cannot start (slab batch 0; or only the tx lane, its fd unpollable):
 *    the constructor throws at once, naming the worker and its reason, and ends both workers.
 *  - "dies-later": both lanes fail on an invalid route list: setRoutes throws at once, so do
 *    later commands; the Worker's 'error' reaches this thread; close() still says the fds are safe.
 *  - "terminate-polling": plain workers with shim poll watchers still running are terminated, or
 *    end by process.exit(): the process lives on (this aborted before the shim's cleanup hook).
 *  - "happy": routes, config, stop, close on healthy lanes.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { ForwarderConfig } from '../../src/datapath/forwarder.js';
import type { LaneSetup } from '../../src/datapath/lane.js';
import { WorkerLanes } from '../../src/datapath/worker-lanes.js';
import { shim } from '../../src/native/shim.js';
import { RoutingSnapshot } from '../../src/routing-table/snapshot.js';

const SETUP: LaneSetup = {
  slab: { slotSize: 2048, batch: 64, readSlotSize: 65536, receiveSlotSize: 65536 },
  tunVnet: true,
  gsoSegments: 64,
  udpGro: true,
  uringEntries: 64,
};
const CONFIG: ForwarderConfig = {
  tunAddress: 0x0af40100,
  subnetPrefix: 0x0af40100,
  subnetLen: 24,
  port: 8285,
  mtu: 1472,
  tunGro: true,
};

interface Fds {
  tunFd: number;
  udpFd: number;
}

/** What a poller worker is told (terminate-polling). */
interface PollerData {
  role: 'poller';
  fds: Fds;
  end: 'terminate' | 'exit';
}

function openFds(): Fds {
  // No IPv6: its router solicitations would make the TUN readable and keep a poller's callback busy.
  execFileSync('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  const tunFd = shim.openTun('fwl%d', true);
  if (tunFd < 0) throw new Error(`openTun: ${tunFd}`);
  execFileSync('ip', ['link', 'set', shim.tunName(tunFd), 'up']);
  const udpFd = shim.udpOpen(0x7f000001, 0, 1 << 20, 1 << 20);
  if (udpFd < 0) throw new Error(`udpOpen: ${udpFd}`);
  return { tunFd, udpFd };
}

function closeFds(fds: Fds): number[] {
  return [shim.closeFd(fds.tunFd), shim.closeFd(fds.udpFd)];
}

/** Uncaught exceptions on this thread, by message (the WorkerLanes 'error' handler rethrows a worker's error). */
const uncaught: string[] = [];
process.on('uncaughtException', (err) => {
  uncaught.push(err instanceof Error ? err.message : String(err));
});

/**
 * The mode's findings, printed (with every uncaught exception) when the process exits by itself:
 * so an error that arrives late, after the mode's last step, is reported too.
 */
function report(out: Record<string, unknown>): void {
  process.once('exit', () => {
    process.stdout.write(JSON.stringify({ ...out, uncaught, exitingAt: Date.now() }) + '\n');
  });
}

/** Runs fn; its error message (null if none) and how long it took. */
function timed(fn: () => unknown): { error: string | null; ms: number; value: unknown } {
  const t0 = Date.now();
  try {
    const value = fn();
    return { error: null, ms: Date.now() - t0, value };
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err), ms: Date.now() - t0, value: undefined };
  }
}

/** The process's open io_uring fds (each lane's ring has one while it runs). */
function ioUringFds(): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[io_uring]';
    } catch {
      return false;
    }
  }).length;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Both lanes fail to start (batch 0); then only tx does (flannel0's fd cannot be polled), rx runs. */
function startFail(): void {
  const fds = openFds();
  const bad: LaneSetup = { ...SETUP, slab: { ...SETUP.slab, batch: 0 } };
  const both = timed(() => new WorkerLanes(bad, fds.tunFd, fds.udpFd, CONFIG));
  // A regular file in flannel0's place: libuv refuses to poll it (EPERM), so the tx lane fails in
  // start() while the rx lane, which polls only the socket, starts and has to be ended.
  const file = openSync(fileURLToPath(import.meta.url), 'r');
  const txOnly = timed(() => new WorkerLanes(SETUP, file, fds.udpFd, CONFIG));
  closeSync(file);
  const closed = closeFds(fds);
  report({
    both: { error: both.error, ms: both.ms },
    txOnly: { error: txOnly.error, ms: txOnly.ms },
    closed,
    fdsClosedAt: Date.now(),
  });
}

async function diesLater(): Promise<void> {
  const fds = openFds();
  const lanes = new WorkerLanes(SETUP, fds.tunFd, fds.udpFd, CONFIG);
  // Shaped like a RoutingSnapshot: only .routes crosses to the workers, where build() rejects it.
  const invalid = { routes: [{ prefix: 1, prefixLen: 99, publicIp: 2 }] } as unknown as RoutingSnapshot;
  const uringsRunning = ioUringFds();
  const routes = timed(() => lanes.setRoutes(invalid));
  const uringsAfterFailure = ioUringFds(); // the failed tx lane closed its own at least
  const stop = timed(() => lanes.stop(1));
  // The workers' 'error' events arrive once this thread runs its loop again.
  for (const end = Date.now() + 3000; uncaught.length < 2 && Date.now() < end;) await sleep(10);
  const close = timed(() => lanes.close());
  const uringsAfterClose = ioUringFds();
  const closed = close.value === true ? closeFds(fds) : null; // fds left open unless close() said so
  report({
    uringsRunning,
    uringsAfterFailure,
    uringsAfterClose,
    routes: { error: routes.error, ms: routes.ms },
    stop: { error: stop.error, ms: stop.ms },
    close: { value: close.value, error: close.error, ms: close.ms },
    closed,
    fdsClosedAt: Date.now(),
  });
}

/** A plain worker polling both fds through the shim, ended from outside (terminate) or from inside (process.exit). */
async function pollerEnds(
  fds: Fds,
  end: PollerData['end'],
): Promise<{ polling: boolean; exitCode: number; errors: string[] }> {
  const data: PollerData = { role: 'poller', fds, end };
  const worker = new Worker(new URL(import.meta.url), { workerData: data });
  const errors: string[] = [];
  worker.on('error', (err) => errors.push(err.message));
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
  const polling = await Promise.race([
    new Promise<boolean>((resolve) => worker.once('message', (m) => resolve(m === 'polling'))),
    exited.then(() => false),
  ]);
  let exitCode: number;
  if (end === 'terminate') {
    exitCode = await worker.terminate();
    await exited;
  } else {
    worker.postMessage('exit');
    exitCode = await exited;
  }
  return { polling, exitCode, errors };
}

function poller(data: PollerData): void {
  shim.pollStart(data.fds.udpFd, false, () => {});
  shim.pollStart(data.fds.tunFd, false, () => {});
  parentPort!.on('message', () => {
    process.exit(0);
  }); // ends this thread with both watchers polling
  parentPort!.postMessage('polling');
}

async function terminatePolling(): Promise<void> {
  const fds = openFds();
  const terminated = await pollerEnds(fds, 'terminate');
  const exited = await pollerEnds(fds, 'exit');
  // This thread can still poll: its own watcher sees the socket writable.
  const mainPoll = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => {
      shim.pollStop(h);
      resolve(false);
    }, 2000);
    const h = shim.pollStart(fds.udpFd, true, () => {
      clearTimeout(timer);
      shim.pollStop(h);
      resolve(true);
    });
  });
  const closed = closeFds(fds);
  report({ terminated, exited, mainPoll, closed, fdsClosedAt: Date.now() });
}

function happy(): void {
  const fds = openFds();
  const lanes = new WorkerLanes(SETUP, fds.tunFd, fds.udpFd, CONFIG);
  const status = lanes.status();
  const uringsRunning = ioUringFds();
  const routes = timed(() =>
    lanes.setRoutes(RoutingSnapshot.build([{ prefix: 0x0af40200, prefixLen: 24, publicIp: 0x7f000002 }])),
  );
  const config = timed(() => lanes.setConfig({ ...CONFIG, tunAddress: 0x0af40301, subnetPrefix: 0x0af40300 }));
  const stop = timed(() => lanes.stop(4));
  const close = timed(() => lanes.close());
  const uringsAfterClose = ioUringFds();
  const closeAgain = timed(() => lanes.close());
  const afterClose = timed(() => lanes.stop(1));
  const closed = close.value === true ? closeFds(fds) : null;
  report({
    status,
    uringsRunning,
    uringsAfterClose,
    countersLength: lanes.counters().length,
    routes: routes.error,
    config: config.error,
    stop: stop.error,
    close: { value: close.value, error: close.error, ms: close.ms },
    closeAgain: closeAgain.value,
    afterClose: afterClose.error,
    closed,
    fdsClosedAt: Date.now(),
  });
}

if (!isMainThread) {
  const data = workerData as PollerData | undefined;
  if (data?.role === 'poller') poller(data);
} else {
  const mode = process.argv[2];
  if (mode === 'start-fail') startFail();
  else if (mode === 'dies-later') await diesLater();
  else if (mode === 'terminate-polling') await terminatePolling();
  else if (mode === 'happy') happy();
  else throw new Error(`unknown mode ${String(mode)}`);
}
