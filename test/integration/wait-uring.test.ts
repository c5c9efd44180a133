// The datapath's wait in io_uring (shim waitOpen/waitNext/waitClose, a Lane that waits, a waiting
// worker lane): a wait that times out with nothing, a wait that returns a datagram or a flannel0
// packet already read, the doorbell, an fd not wanted left unread, one-shot polls (older kernels),
// a lane closed while it waits. Runs in a namespace of its own (test/helpers/wait-scenario.ts).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WAIT } from '../../src/native/shim.js';
import { scenarioNamespace } from '../helpers/scenario-netns.js';

const scenario = scenarioNamespace('wait-scenario.js', 'ftwait');

interface Timed {
  ev: number;
  ms: number;
}

interface Outcome {
  open: number;
  openAgain: number;
  idle: Timed;
  udp: {
    ev: number;
    text: string;
    from: number;
    fromPort: number;
    senderPort: number;
    stampNotAfterReturn: boolean;
    stampAgeUs: number;
  };
  tun: { ev: number; len: number; version: number; payload: string; vnetZero: boolean };
  queued: {
    pair: number;
    pairTexts: string[];
    alone: number;
    full: number;
    afterFull: number;
    lastText: string;
    tunFirst: number;
    tunSecond: number;
  };
  doorbell: Timed;
  tunOnly: number;
  tunOnlyAfter: number;
  leftInSocket: number;
  oneShot: { opened: number; evs: number[] };
  refused: { opened: number; first: Timed };
  tunGone: { waits: number; errors: number };
  beforeClose: number;
  afterClose: number;
  nextAfterClose: number;
  spin: {
    got: number;
    idle: Timed;
    afterIdle: number[];
    tries: { first: number; caught: Timed; counts: number[] }[];
    contended: Timed;
    afterContention: number[];
    paused: { ranOut: number; atPause: number[]; afterPausedWaits: number[]; probed: number[]; otherWay: number[] };
    loadCheck: { reads: number; counts: number[] };
  };
  spinPoll: { noSpin: number; quiet: Timed; quietCounts: number[]; ready: number; readyCounts: number[] };
  warmUpVnet: number;
  warmUpPlain: number;
  workerLanes: {
    routesMs: number;
    waiting: boolean;
    received: number;
    written: number;
    closed: boolean;
    closeMs: number;
    spins: number[];
  };
}

describe('waiting for packets in io_uring', () => {
  let r: Outcome;
  before(() => {
    scenario.create();
    r = scenario.run<Outcome>([]);
  });
  after(() => scenario.remove());

  it('a wait with nothing to read lasts its timeout and returns nothing', () => {
    assert.equal(r.open, 0, 'io_uring waits on this kernel');
    assert.equal(r.openAgain, -16, 'a second waitOpen on the ring is EBUSY');
    assert.equal(r.idle.ev, 0);
    assert.ok(r.idle.ms >= 140 && r.idle.ms < 1000, `${r.idle.ms} ms`);
  });

  it('returns a datagram already received: bytes, sender, kernel timestamp', () => {
    assert.equal(r.udp.ev & (WAIT.udp | WAIT.tun), WAIT.udp);
    assert.equal(r.udp.text, 'hello through the socket');
    assert.equal(r.udp.from, 0x7f000001);
    assert.equal(r.udp.fromPort, r.udp.senderPort);
    assert.ok(r.udp.stampNotAfterReturn, 'arrival stamped, not after the wait returned');
    assert.ok(r.udp.stampAgeUs >= 25_000 && r.udp.stampAgeUs < 2_000_000, `stamp ${r.udp.stampAgeUs} µs old`);
  });

  it('returns a flannel0 packet already read, with its virtio header', () => {
    assert.equal(r.tun.ev & (WAIT.udp | WAIT.tun), WAIT.tun);
    assert.equal(r.tun.version, 4);
    assert.equal(r.tun.len, 28 + 'into the tun'.length);
    assert.equal(r.tun.payload, 'into the tun');
    assert.ok(r.tun.vnetZero);
  });

  it('reads what the socket holds in one read, and marks traffic that was queued', () => {
    const q = r.queued;
    const udpBits = WAIT.udp | WAIT.udpAtOnce | WAIT.tun;
    assert.equal(q.pair & udpBits, WAIT.udp | WAIT.udpAtOnce, 'two queued: marked');
    assert.equal(q.pair >>> WAIT.udpCountShift, 2);
    assert.deepEqual(q.pairTexts, ['one', 'two']);
    assert.equal(q.alone & udpBits, WAIT.udp, 'one alone: not marked');
    assert.equal(q.alone >>> WAIT.udpCountShift, 1);
    assert.equal(q.full & udpBits, WAIT.udp | WAIT.udpAtOnce);
    assert.equal(q.full >>> WAIT.udpCountShift, 8, 'a whole batch');
    assert.equal(q.afterFull & udpBits, WAIT.udp | WAIT.udpAtOnce, 'the socket stayed ready');
    assert.equal(q.afterFull >>> WAIT.udpCountShift, 1);
    assert.equal(q.lastText, 'datagram 8');
  });

  it('marks a flannel0 read from a device that stayed ready (more queued)', () => {
    const tunBits = WAIT.tun | WAIT.tunAtOnce | WAIT.udp;
    assert.equal(r.queued.tunFirst & tunBits, WAIT.tun, 'the device turned ready meanwhile');
    assert.equal(r.queued.tunSecond & tunBits, WAIT.tun | WAIT.tunAtOnce, 'the device was still ready');
  });

  it('the doorbell ends a wait', () => {
    assert.equal(r.doorbell.ev, WAIT.wake);
    assert.ok(r.doorbell.ms < 500);
  });

  it('an fd not wanted is not read: what comes stays in it', () => {
    assert.equal(r.tunOnly, 0);
    assert.equal(r.tunOnlyAfter, 0, 'the datagram was not read');
    assert.equal(r.leftInSocket, 1);
  });

  it('with one-shot polls (kernels before 5.13), armed again after each completion, the same', () => {
    const [datagram, first, second, nothing, doorbell, late] = r.oneShot.evs;
    const bits = WAIT.tun | WAIT.udp | WAIT.tunAtOnce | WAIT.udpAtOnce;
    assert.equal(r.oneShot.opened, 0);
    assert.equal(datagram! & bits, WAIT.udp);
    assert.equal(first! & bits, WAIT.tun, 'the first of two: the device turned ready');
    assert.equal(second! & bits, WAIT.tun | WAIT.tunAtOnce, 'the second: still ready');
    assert.equal(nothing, 0);
    assert.equal(doorbell, WAIT.wake);
    assert.equal(late! & bits, WAIT.udp, 'the poll was armed again');
  });

  it('multishot polls refused (kernels before 5.13): the wait goes on with one-shot polls at once', () => {
    assert.equal(r.refused.opened, 0);
    assert.equal(r.refused.first.ev & (WAIT.tun | WAIT.udp), WAIT.udp, 'the datagram ended the wait');
    assert.ok(r.refused.first.ms < 2000, `${r.refused.first.ms} ms: it did not sleep without polls`);
  });

  it('flannel0 deleted under the wait: its read error is reported, and the wait does not fail in a loop', () => {
    const g = r.tunGone;
    assert.ok(g.errors >= 1, `the read error was reported: ${JSON.stringify(g)}`);
    assert.ok(g.waits <= 40, `${g.waits} waits in 200 ms: each waited (20 ms), none failed at once in a loop`);
  });

  it('closed while polls are armed: nothing is taken afterwards, and waiting is refused', () => {
    assert.equal(r.beforeClose, 0);
    assert.equal(r.afterClose, 1, 'the datagram stayed in the socket');
    assert.equal(r.nextAfterClose, -22, 'EINVAL once closed');
  });

  it('busy-polls after traffic for spinUs, then sleeps until its timeout', () => {
    assert.equal(r.spin.got & WAIT.udp, WAIT.udp);
    assert.equal(r.spin.idle.ev, 0);
    assert.ok(r.spin.idle.ms >= 50 && r.spin.idle.ms < 1000, `${r.spin.idle.ms} ms: 3 ms polling, then the 50 ms wait`);
    const [hits, sleeps, backoffs] = r.spin.afterIdle;
    assert.equal(hits, 0);
    assert.equal(sleeps + backoffs, 1, 'one spin, which ran out (or met another task on the CPU) and slept');
  });

  it('busy-polling catches a datagram that comes while it polls, without sleeping', () => {
    const tries = r.spin.tries;
    const last = tries.at(-1)!;
    assert.equal(
      last.counts[0],
      1,
      `a spin caught the datagram within ${tries.length} tries: ${JSON.stringify(tries)}`,
    );
    assert.equal(last.caught.ev & WAIT.udp, WAIT.udp);
    assert.ok(last.caught.ms < 10, `${last.caught.ms} ms`);
    for (const t of tries) assert.equal(t.first & WAIT.udp, WAIT.udp);
    assert.equal(last.counts[1], 0, 'no spin ran out and slept: each was caught or stopped by contention');
    assert.equal(last.counts[2], tries.length - 1, 'the tries before were stopped by contention');
  });

  it('a CPU-bound task on the same CPU stops the busy-polling: the wait sleeps instead', () => {
    assert.equal(r.spin.contended.ev, 0);
    assert.deepEqual(r.spin.afterContention, [0, 0, 1, 0], 'the spin met contention and backed off');
    assert.ok(r.spin.contended.ms >= 50 && r.spin.contended.ms < 1000, `${r.spin.contended.ms} ms`);
  });

  it('spins a few ms apart read the load once: a "not contended" holds for 50 ms', () => {
    const { reads, counts } = r.spin.loadCheck;
    assert.deepEqual(counts, [0, 3, 0, 0], 'three spins ran out, none met contention');
    assert.equal(reads, 1, '/proc/loadavg read once, not once per spin');
  });

  it('after 4 spins in a row that caught nothing, waits stop polling that way, but for one probe in 16', () => {
    const p = r.spin.paused;
    assert.equal(p.ranOut, 4, `spins ran out 4 times in a row: ${JSON.stringify(p.atPause)}`);
    assert.equal(p.atPause[0], 0, 'no spin caught anything');
    assert.equal(p.atPause[3], 0, 'nothing paused before the 4th');
    const [hits, ranOut, backoffs, paused] = p.afterPausedWaits;
    assert.deepEqual([hits, ranOut, backoffs, paused], [0, 4, p.atPause[2], 15], '15 waits that did not poll');
    assert.equal(p.probed[3], 15, 'the 16th wait polled');
    assert.equal(p.probed[1]! + p.probed[2]!, 5 + p.atPause[2]!, 'it ran out (or met contention)');
    assert.equal(p.otherWay[3], 15, 'after a flannel0 packet, the wait polled');
    assert.equal(p.otherWay[1]! + p.otherWay[2]!, p.probed[1]! + p.probed[2]! + 1);
  });

  it('the event loop busy-polls (spinPoll) only where asked: polls, runs out, sees a readable fd', () => {
    const p = r.spinPoll;
    assert.equal(p.noSpin, 0, 'no busy-polling set: 0 at once');
    assert.equal(p.quiet.ev, 0);
    const [hits, sleeps, backoffs] = p.quietCounts;
    assert.equal(hits, 0);
    assert.equal(sleeps + backoffs, 1);
    // Ran out after about 3 ms, unless other tasks wanted the CPU (then it polled once).
    if (sleeps === 1) assert.ok(p.quiet.ms >= 2.5 && p.quiet.ms < 1000, `${p.quiet.ms} ms of polling`);
    assert.equal(p.ready, 2, 'the second fd (the socket) is readable');
    assert.equal(p.readyCounts[0], 1, 'one hit');
  });

  it('a Lane that waits forwards both ways (the warm-up: every packet it was given)', () => {
    assert.equal(r.warmUpVnet, 1500);
    assert.equal(r.warmUpPlain, 1500);
  });

  it('a waiting worker lane answers commands at once, forwards, counts its busy-polling, closes while waiting', () => {
    const w = r.workerLanes;
    assert.ok(w.waiting, 'the worker waits in io_uring');
    assert.ok(w.routesMs < 200, `setRoutes took ${w.routesMs} ms: the doorbell wakes the lane`);
    assert.equal(w.received, 1);
    assert.equal(w.written, 1, 'the datagram from the peer was written into flannel0');
    assert.ok(w.closed, 'the worker confirmed it stopped');
    assert.ok(w.closeMs < 200, `close took ${w.closeMs} ms`);
    const [caught, ranOut, contended, paused] = w.spins;
    assert.equal(caught, 0);
    assert.equal(ranOut! + contended!, 1, `one spin after the datagram, in the counters: ${JSON.stringify(w.spins)}`);
    assert.equal(paused, 0);
  });
});
