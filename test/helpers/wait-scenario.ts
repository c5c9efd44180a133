/**
 * Runs inside a namespace for test/integration/wait-uring.test.ts (`ip netns exec NS node this.js`):
 * drives the shim's wait in io_uring (waitOpen / waitNext / waitClose) on a real TUN device and a
 * real UDP socket, a Lane that waits (through the warm-up's stand-ins), and WorkerLanes with a
 * waiting lane over real fds; prints what happened as JSON.
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRing } from '../../src/datapath/native-io.js';
import { C, SPIN_COUNTERS } from '../../src/datapath/counters.js';
import { PacketSlab } from '../../src/datapath/slab.js';
import { warmUp } from '../../src/datapath/warm-up.js';
import { WorkerLanes } from '../../src/datapath/worker-lanes.js';
import { shim, SPIN_AFTER, WAIT, WAIT_POLLS } from '../../src/native/shim.js';
import { RoutingSnapshot } from '../../src/routing-table/snapshot.js';

const LOOPBACK = 0x7f000001;
const out: Record<string, unknown> = {};

execFileSync('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
const tunFd = shim.openTun('ftwait%d', true);
if (tunFd < 0) throw new Error(`openTun: ${tunFd}`);
const tunName = shim.tunName(tunFd);
execFileSync('ip', ['link', 'set', tunName, 'up']);
execFileSync('ip', ['addr', 'add', '10.91.0.1/24', 'dev', tunName]);
const udpFd = shim.udpOpen(LOOPBACK, 0, 1 << 20, 1 << 20);
const port = shim.udpLocalPort(udpFd);
const senderFd = shim.udpOpen(LOOPBACK, 0, 0, 0);
const intoTunFd = shim.udpOpen(0, 0, 0, 0); // its datagrams to 10.91.0.2 are routed into the TUN

const slab = new PacketSlab({ slotSize: 2048, batch: 8 });
const ring = createRing(slab);
shim.ringSetTunVnet(ring, true);
const feed = new PacketSlab({ slotSize: 2048, batch: 8 });
const feedRing = createRing(feed);
const wake = shim.eventfdOpen();
const BOTH = WAIT.tun | WAIT.udp;

/** Sends `text` from senderFd to the wait's socket, or (intoTun) to 10.91.0.2:9 through the TUN. */
function send(text: string | Buffer, intoTun = false): void {
  const bytes = typeof text === 'string' ? Buffer.from(text) : text;
  feed.bytes.set(bytes, feed.slotOffsets[0]!);
  feed.lens[0] = bytes.length;
  feed.addrs[0] = intoTun ? 0x0a5b0002 : LOOPBACK;
  feed.ports[0] = intoTun ? 9 : port;
  const sent = shim.udpSend(feedRing, intoTun ? intoTunFd : senderFd, Uint16Array.of(0), 1);
  if (sent !== 1) throw new Error(`send: ${shim.lastErrno(feedRing)}`);
}

function timed(fn: () => number): { ev: number; ms: number } {
  const t = performance.now();
  const ev = fn();
  return { ev, ms: performance.now() - t };
}

/** A wait on a ring of its own over the slab, with a doorbell of its own; close() ends both. */
function openWait(options: { spinUs?: number; polls?: number; tun?: number; tunVnet?: boolean } = {}) {
  const waitRing = createRing(slab);
  if (options.tunVnet) shim.ringSetTunVnet(waitRing, true);
  const doorbell = shim.eventfdOpen();
  const { txFirst, rxFirst, batch } = slab;
  const polls = options.polls ?? WAIT_POLLS.multishot;
  const opened = shim.waitOpen(
    waitRing,
    options.tun ?? tunFd,
    udpFd,
    doorbell,
    txFirst,
    rxFirst,
    batch,
    options.spinUs ?? 0,
    polls,
  );
  const close = (): void => {
    shim.waitClose(waitRing);
    shim.closeFd(doorbell);
  };
  return { ring: waitRing, wake: doorbell, opened, close };
}

out['open'] = shim.waitOpen(ring, tunFd, udpFd, wake, slab.txFirst, slab.rxFirst, slab.batch, 0);
out['openAgain'] = shim.waitOpen(ring, tunFd, udpFd, wake, slab.txFirst, slab.rxFirst, slab.batch, 0);

// Nothing comes: the wait lasts its timeout and reports nothing.
out['idle'] = timed(() => shim.waitNext(ring, 150, BOTH));

// A datagram: the wait returns it already received, stamped with the kernel's receive time (it
// came 30 ms before the wait, so its stamp is that much older than the wait's return).
send('hello through the socket');
await sleep(30);
const udp = timed(() => shim.waitNext(ring, 2000, BOTH));
const r = slab.rxFirst;
out['udp'] = {
  ev: udp.ev,
  text: Buffer.from(slab.bytes.subarray(slab.slotOffsets[r]!, slab.slotOffsets[r]! + slab.lens[r]!)).toString(),
  from: slab.addrs[r],
  fromPort: slab.ports[r],
  senderPort: shim.udpLocalPort(senderFd),
  stampNotAfterReturn: slab.stamps[r]! > 0 && slab.stamps[r]! <= slab.ioClock[0]!,
  stampAgeUs: slab.ioClock[0]! - slab.stamps[r]!,
};

// A packet routed into the TUN: the wait returns it already read.
send('into the tun', true);
const tun = timed(() => shim.waitNext(ring, 2000, BOTH));
const t = slab.txFirst;
const packet = Buffer.from(slab.bytes.subarray(slab.slotOffsets[t]!, slab.slotOffsets[t]! + slab.lens[t]!));
out['tun'] = {
  ev: tun.ev,
  len: slab.lens[t],
  version: packet[0]! >> 4,
  payload: packet.subarray(28).toString(),
  vnetZero: slab.vnetHdrs.subarray(t * 12, t * 12 + 10).every((b) => b === 0),
};

// Traffic queued. Two datagrams come while the socket is idle: the wait takes both in one read,
// marked "more queued". One alone: not marked (the answer to a packet just written comes so). A
// batch and one more: the first read takes the batch (8) and leaves the socket ready, the next
// takes the one left, marked. Two packets into flannel0 while it is idle: the wait reads the first,
// not marked (it came while the caller was away); the next reads the second from a device still
// ready, marked (the caller drains the rest).
const udpText = (i: number): string => {
  const at = slab.slotOffsets[slab.rxFirst + i]!;
  return Buffer.from(slab.bytes.subarray(at, at + slab.lens[slab.rxFirst + i]!)).toString();
};
send('one');
send('two');
await sleep(20);
const pair = shim.waitNext(ring, 2000, BOTH);
const pairTexts = [udpText(0), udpText(1)];
send('alone');
const alone = shim.waitNext(ring, 2000, BOTH);
for (let i = 0; i < 9; i++) send(`datagram ${i}`);
await sleep(20);
const full = shim.waitNext(ring, 2000, BOTH);
const afterFull = shim.waitNext(ring, 2000, BOTH);
const lastText = udpText(0);
send('first packet', true);
send('second packet', true);
await sleep(20);
const tunFirst = shim.waitNext(ring, 2000, BOTH);
const tunSecond = shim.waitNext(ring, 2000, BOTH);
out['queued'] = { pair, pairTexts, alone, full, afterFull, lastText, tunFirst, tunSecond };

// The doorbell wakes a wait.
shim.eventfdSignal(wake);
out['doorbell'] = timed(() => shim.waitNext(ring, 2000, BOTH));

// Waiting for flannel0 only: the socket is not read, so a datagram stays in it.
out['tunOnly'] = shim.waitNext(ring, 0, WAIT.tun);
send('left in the socket');
out['tunOnlyAfter'] = shim.waitNext(ring, 50, WAIT.tun);
out['leftInSocket'] = shim.udpRecv(ring, udpFd, slab.rxFirst, 8);

// Closed while polls are armed: nothing is taken afterwards.
out['beforeClose'] = shim.waitNext(ring, 0, BOTH);
shim.waitClose(ring);
shim.waitClose(ring); // idempotent
send('after close');
out['afterClose'] = shim.udpRecv(ring, udpFd, slab.rxFirst, 8);
out['nextAfterClose'] = shim.waitNext(ring, 0, BOTH);

// The same with one-shot polls (kernels before 5.13 refuse multishot ones), armed again after
// each completion: a datagram, two flannel0 packets (the first unmarked, the second marked), the
// doorbell, a datagram after it.
{
  const oneShot = openWait({ polls: WAIT_POLLS.oneShot });
  const evs: number[] = [];
  send('one-shot datagram');
  evs.push(shim.waitNext(oneShot.ring, 2000, BOTH));
  send('first', true);
  send('second', true);
  await sleep(20);
  evs.push(shim.waitNext(oneShot.ring, 2000, BOTH));
  evs.push(shim.waitNext(oneShot.ring, 2000, BOTH));
  evs.push(shim.waitNext(oneShot.ring, 50, BOTH)); // nothing more
  shim.eventfdSignal(oneShot.wake);
  evs.push(shim.waitNext(oneShot.ring, 2000, BOTH));
  send('late');
  evs.push(shim.waitNext(oneShot.ring, 2000, BOTH)); // the poll was armed again
  oneShot.close();
  out['oneShot'] = { opened: oneShot.opened, evs };
}

// Multishot polls that the kernel refuses (as before 5.13): the first wait goes on with one-shot
// polls and does not sleep without them, so a datagram that comes while it waits (sent by a
// worker 50 ms in) ends it.
{
  const refused = openWait({ polls: WAIT_POLLS.refused });
  const sender = new Worker(
    `const { workerData } = require('node:worker_threads');
     const s = require('node:dgram').createSocket('udp4');
     setTimeout(() => s.send('while waiting', workerData.port, '127.0.0.1', () => s.close()), 50);`,
    { eval: true, workerData: { port } },
  );
  const first = timed(() => shim.waitNext(refused.ring, 3000, BOTH));
  await once(sender, 'exit');
  refused.close();
  out['refused'] = { opened: refused.opened, first };
}

// flannel0 deleted under a waiting lane (its fd still open): the read's error (EBADFD) is reported
// once per poll completion, not in a loop: waits for 200 ms of 20 ms each stay few.
{
  const goneFd = shim.openTun('ftgone%d', true);
  const goneName = shim.tunName(goneFd);
  execFileSync('ip', ['link', 'set', goneName, 'up']);
  const gone = openWait({ tun: goneFd, tunVnet: true });
  shim.waitNext(gone.ring, 0, WAIT.tun); // the poll is armed
  execFileSync('ip', ['link', 'del', goneName]);
  let waits = 0,
    errors = 0;
  for (const until = performance.now() + 200; performance.now() < until; waits++) {
    const ev = shim.waitNext(gone.ring, 20, WAIT.tun);
    if (ev & WAIT.tun && slab.lens[slab.txFirst]! < 0) errors++;
  }
  gone.close();
  shim.closeFd(goneFd);
  out['tunGone'] = { waits, errors };
}

// Busy-polling after traffic: a wait right after a packet polls for spinUs, then sleeps as usual;
// a datagram that comes while it polls is caught without sleeping; a CPU-bound task on the same CPU
// stops the polling (the yield gave that task its time slice) and the wait sleeps instead.
{
  const spinWait = openWait({ spinUs: 3000 });
  send('spin');
  const got = shim.waitNext(spinWait.ring, 2000, BOTH);
  const idle = timed(() => shim.waitNext(spinWait.ring, 50, BOTH));
  const afterIdle = shim.spinCounts(spinWait.ring);
  spinWait.close();

  // Another task may take the CPU during a yield (other tests run beside this one): the spin then
  // backs off, rightly, so a few tries are allowed, each after the back-off ran out.
  const hitWait = openWait({ spinUs: 10_000 });
  const tries: { first: number; caught: { ev: number; ms: number }; counts: number[] | null }[] = [];
  for (let attempt = 0; attempt < 6; attempt++) {
    const go = new Int32Array(new SharedArrayBuffer(4));
    const sender = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const s = require('node:dgram').createSocket('udp4');
       s.bind(0, '127.0.0.1', () => {
         parentPort.postMessage('ready');
         Atomics.wait(workerData.go, 0, 0);
         Atomics.wait(workerData.go, 0, 1, 1); // sleeps 1 ms: the wait is busy-polling by then
         s.send('caught while polling', workerData.port, '127.0.0.1', () => s.close());
       });`,
      { eval: true, workerData: { go, port } },
    );
    await once(sender, 'message');
    send('traffic');
    const first = shim.waitNext(hitWait.ring, 2000, BOTH);
    Atomics.store(go, 0, 1);
    Atomics.notify(go, 0);
    const caught = timed(() => shim.waitNext(hitWait.ring, 2000, BOTH));
    tries.push({ first, caught, counts: shim.spinCounts(hitWait.ring) });
    await once(sender, 'exit');
    if (tries.at(-1)!.counts![0] > 0) break;
    await sleep(20 << attempt); // the back-off (10 ms, doubling) runs out
  }
  hitWait.close();

  // A CPU-bound task beside this thread, both on CPU 0 (it ends by itself should this process die).
  const busyWait = openWait({ spinUs: 10_000 });
  // taskset execs timeout, which passes the SIGTERM below on to the shell (and kills it after 10 s
  // should this process die first).
  const hog = spawn('taskset', ['-c', '0', 'timeout', '10', 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' });
  execFileSync('taskset', ['-pc', '0', String(process.pid)], { stdio: 'ignore' });
  await sleep(100);
  send('traffic');
  shim.waitNext(busyWait.ring, 2000, BOTH);
  const contended = timed(() => shim.waitNext(busyWait.ring, 50, BOTH));
  const afterContention = shim.spinCounts(busyWait.ring);
  hog.kill('SIGTERM');
  await once(hog, 'exit');
  execFileSync('taskset', ['-pc', `0-${availableParallelism() - 1}`, String(process.pid)], { stdio: 'ignore' });
  busyWait.close();
  // Spins that catch nothing (each datagram alone, the next one later than a spin): after 4 in a
  // row, waits stop polling, all but one in 16 (a probe); spins after a flannel0 packet (the other
  // way) still poll. Other tasks may stop a spin or start a back-off (counted apart, not as a spin
  // that ran out): rounds go on until the counts say.
  const pauseWait = openWait({ spinUs: 1000 });
  const counts = (): number[] => shim.spinCounts(pauseWait.ring)!;
  const lonely = async (intoTun = false): Promise<void> => {
    send('alone', intoTun);
    shim.waitNext(pauseWait.ring, 2000, BOTH); // the datagram: traffic is recent
    shim.waitNext(pauseWait.ring, 3, BOTH); // nothing comes: a spin (1 ms) runs out, or none while paused
    await sleep(1);
  };
  for (let round = 0; round < 60 && counts()[1]! < 4; round++) await lonely();
  const paused = {
    ranOut: counts()[1]!,
    atPause: counts(),
    afterPausedWaits: [] as number[],
    probed: [] as number[],
    otherWay: [] as number[],
  };
  for (let wait = 1; wait <= 15; wait++) await lonely();
  paused.afterPausedWaits = counts();
  await lonely();
  paused.probed = counts();
  // The other way: a spin after a flannel0 packet (a back-off that the probe may have met first
  // runs out between tries).
  const spun = (c: number[]): number => c[1]! + c[2]!;
  for (let round = 0; round < 10 && spun(counts()) === spun(paused.probed); round++) {
    if (round > 0) await sleep(Math.min(20 << round, 1000)); // back-offs double up to 1 s
    await lonely(true);
  }
  paused.otherWay = counts();
  pauseWait.close();

  // Spins a few ms apart on a quiet machine read /proc/loadavg once: its "not contended" holds
  // for 50 ms. Counted as this thread's read syscalls (syscr, which a socket's recvmmsg is not);
  // another task taking the CPU (a back-off, which reads it again) makes the round start over.
  const syscr = (): number => Number(/syscr: (\d+)/.exec(readFileSync('/proc/thread-self/io', 'utf8'))![1]);
  const loadCheck = { reads: -1, counts: [] as number[] };
  for (let attempt = 0; attempt < 5; attempt++) {
    const loadWait = openWait({ spinUs: 300 });
    const first = syscr(),
      second = syscr();
    for (let spin = 0; spin < 3; spin++) {
      send('traffic');
      shim.waitNext(loadWait.ring, 2000, BOTH);
      shim.waitNext(loadWait.ring, 2, BOTH); // nothing comes: a spin runs out, then the wait sleeps
    }
    loadCheck.reads = syscr() - second - (second - first);
    loadCheck.counts = shim.spinCounts(loadWait.ring)!;
    loadWait.close();
    if (loadCheck.counts[2] === 0) break;
    await sleep(50);
  }

  // The event loop's busy-polling (ringSetSpin + spinPoll): nothing comes, then a datagram does.
  const pollRing = createRing(slab);
  const noSpin = shim.spinPoll(pollRing, udpFd, -1, SPIN_AFTER.rx);
  shim.ringSetSpin(pollRing, 3000);
  const quiet = timed(() => shim.spinPoll(pollRing, udpFd, -1, SPIN_AFTER.rx));
  const quietCounts = shim.spinCounts(pollRing);
  send('ready to read');
  const ready = shim.spinPoll(pollRing, tunFd, udpFd, SPIN_AFTER.tx);
  shim.udpRecv(pollRing, udpFd, slab.rxFirst, 8);
  out['spinPoll'] = { noSpin, quiet, quietCounts, ready, readyCounts: shim.spinCounts(pollRing) };

  out['spin'] = { got, idle, afterIdle, tries, contended, afterContention, paused, loadCheck };
}

// A Lane that waits, both ways, through the warm-up's stand-ins (plain and with virtio headers).
const setup = (tunVnet: boolean) => ({
  slab: { slotSize: 2048, batch: 64, readSlotSize: 65536, receiveSlotSize: 65536 },
  tunVnet,
  gsoSegments: 64,
  udpGro: true,
  uringEntries: 64,
});
const config = { tunAddress: 0x0af40100, subnetPrefix: 0x0af40100, subnetLen: 24, port: 8285, mtu: 1472 };
out['warmUpVnet'] = warmUp(setup(true), config);
out['warmUpPlain'] = warmUp(setup(false), config);

// A waiting lane in a worker over the real fds: commands answered at once (the doorbell), a
// datagram from a peer forwarded into the TUN (then a spin: nothing more comes), closed while it
// waits, its busy-polling counted in the counters it shares.
const lanes = new WorkerLanes(
  setup(true),
  tunFd,
  udpFd,
  { ...config, tunGro: true },
  { waiting: true, sliceUs: 100, spinUs: 200 },
);
const routesMs = timed(() => {
  lanes.setRoutes(RoutingSnapshot.build([{ prefix: 0x0af40200, prefixLen: 24, publicIp: LOOPBACK }]));
  return 0;
}).ms;
const inner = Buffer.alloc(40);
inner[0] = 0x45;
inner.writeUInt16BE(40, 2);
inner[8] = 64;
inner[9] = 17;
inner.writeUInt32BE(0x0af40202, 12); // 10.244.2.2, the peer's pod
inner.writeUInt32BE(0x0af40102, 16); // 10.244.1.2, ours
send(inner);
await sleep(300);
const counters = lanes.counters();
const status = lanes.status();
const closeStarted = performance.now();
out['workerLanes'] = {
  routesMs,
  waiting: status.waiting === true,
  received: counters[C.udpRecvPackets],
  written: counters[C.tunWritePackets],
  closed: lanes.close(),
  closeMs: performance.now() - closeStarted,
  spins: SPIN_COUNTERS.map((name) => lanes.counters()[C[name]]!),
};
shim.closeFd(udpFd);
shim.closeFd(tunFd);
shim.closeFd(wake);
process.stdout.write(`${JSON.stringify(out)}\n`);
