// TUN reads and writes through io_uring (ringEnableUring) give what plain readv/writev give:
// the same packets, intact, in the order queued, in the same slots; the same counts per call
// (a batch ends at EAGAIN, an empty queue reads 0); the same -errno for a bad fd and the same
// per-slot -EINVAL for an invalid slot. With packets arriving while a batch is in the kernel,
// what io_uring read is still in order. Runs in a namespace of its own.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { scenarioNamespace } from '../helpers/scenario-netns.js';

const scenario = scenarioNamespace('tun-uring-scenario.js', 'fturing');

function run(mode: 'check' | 'race' | 'fallback'): Record<string, unknown> {
  return scenario.run<Record<string, unknown>>([mode]);
}

interface PathOutcome {
  uringInForce: number;
  emptyFirst: number;
  sent: number;
  big: { seqs: number[]; counts: number[]; vnetZero: boolean };
  small: { seqs: number[]; counts: number[]; vnetZero: boolean };
  badFd: number;
  written: number[];
  badSlotLen: number;
  otherLens: number;
  delivered: number[];
  writeBadFd: number;
  writeBadFdLen: number;
  lastErrno: number;
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

describe('shim tunRead/tunWrite through io_uring', () => {
  before(() => scenario.create());
  after(() => scenario.remove());

  it('reads and writes the same packets as the syscall path, in order, with the same errors', () => {
    const r = run('check');
    for (const vnet of ['vnet', 'plain']) {
      const sys = r[`${vnet}-syscall`] as PathOutcome,
        ur = r[`${vnet}-uring`] as PathOutcome;
      assert.equal(sys.uringInForce, 0);
      assert.equal(ur.uringInForce, 64, 'io_uring is available on this kernel');
      for (const [name, o] of [
        ['syscall', sys],
        ['uring', ur],
      ] as const) {
        const what = `${vnet} ${name}`;
        assert.equal(o.emptyFirst, 0, `${what}: an empty queue reads 0 (EAGAIN)`);
        assert.equal(o.sent, 300);
        assert.deepEqual(o.big.seqs, range(0, 300), `${what}: every packet intact, in order`);
        assert.deepEqual(o.big.counts, [64, 64, 64, 64, 44, 0], `${what}: full batches, then the rest, then 0`);
        assert.deepEqual(o.small.seqs, range(300, 310));
        assert.deepEqual(o.small.counts, [10, 0], `${what}: a batch ends at EAGAIN`);
        assert.ok(o.big.vnetZero && o.small.vnetZero, `${what}: plain packets carry an all-zero virtio header`);
        assert.equal(o.badFd, -r['ebadf']!, `${what}: a bad fd is -EBADF`);
        assert.deepEqual(o.written, [63, 36], `${what}: every valid packet written`);
        assert.equal(o.badSlotLen, -r['einval']!, `${what}: the invalid slot gets -EINVAL`);
        assert.equal(o.otherLens, 0, `${what}: no other slot is marked failed`);
        assert.deepEqual(
          o.delivered,
          range(0, 100).filter((s) => s !== 5),
          `${what}: written packets delivered in order`,
        );
        assert.equal(o.writeBadFd, 0);
        assert.equal(o.writeBadFdLen, -r['ebadf']!, `${what}: a failed write marks its slot -EBADF`);
        assert.equal(o.lastErrno, r['ebadf']);
      }
    }
  });

  it('when the io_uring fails, that write is lost and counted, and the ring falls back to syscalls for good', () => {
    // MALLOC_PERTURB_ fills freed memory: a use of the dropped io_uring's state would crash.
    process.env['MALLOC_PERTURB_'] = '165';
    let r: {
      uringFds: number;
      before: number;
      after: number;
      first: { written: number; lens: number[] };
      second: { written: number; lens: number[] };
      delivered: number[];
      read: number[];
      disabled: { inForce: number; closedFds: number };
    };
    try {
      r = run('fallback') as typeof r;
    } finally {
      delete process.env['MALLOC_PERTURB_'];
    }
    assert.equal(r.uringFds, 1, "found the ring's io_uring fd");
    assert.equal(r.before, 64);
    assert.equal(r.after, 0, 'the ring dropped its io_uring');
    assert.equal(r.first.written, 0);
    assert.ok(
      r.first.lens.every((l) => l < 0),
      `the failed write marks its packets: ${JSON.stringify(r.first.lens)}`,
    );
    assert.equal(r.second.written, 10, 'later writes go through syscalls');
    assert.deepEqual(r.delivered, range(10, 20));
    assert.deepEqual(r.read, range(100, 105), 'reads too');
    assert.deepEqual(r.disabled, { inForce: 0, closedFds: 1 }, 'ringDisableUring closes the io_uring at once');
  });

  it('keeps the order of packets that arrive while a batch is in the kernel', () => {
    const r = run('race') as {
      reads: number;
      packets: number;
      partial: number;
      outOfOrder: number;
      broken: number;
      uringInForce: number;
    };
    assert.equal(r.uringInForce, 64);
    assert.ok(r.packets > 10_000, `packets read under a concurrent sender: ${r.packets}`);
    assert.ok(r.partial > 0, 'some batches ended early (EAGAIN between packets)');
    assert.equal(r.broken, 0, 'every packet intact');
    assert.equal(r.outOfOrder, 0, 'packets in the order sent');
  });
});
