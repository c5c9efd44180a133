// Held: what a wait in io_uring already read, handed to the next read of that edge.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Held } from '../../src/datapath/native-io.js';

describe('packets held from a wait', () => {
  const lens = new Int32Array(8);

  it('holds nothing at first', () => {
    assert.equal(new Held().held, false);
  });

  it('hands over the count held once, then nothing is held', () => {
    const h = new Held();
    lens.fill(100);
    h.hold(3, false);
    assert.equal(h.held, true);
    assert.equal(h.take(lens, 2, 6), 3);
    assert.equal(h.drain, false, 'the wait found the socket empty: the read stops there');
    assert.equal(h.held, false);
  });

  it('tells the read to go on after them when more was queued', () => {
    const h = new Held();
    h.hold(1, true);
    assert.equal(h.take(lens, 0, 8), 1);
    assert.equal(h.drain, true);
  });

  it('hands over at most max', () => {
    const h = new Held();
    h.hold(8, true);
    assert.equal(h.take(lens, 0, 4), 4);
  });

  it("hands over the read's error (-errno in lens) instead of a count", () => {
    const h = new Held();
    lens[0] = -111;
    h.hold(1, false);
    assert.equal(h.take(lens, 0, 8), -111);
    assert.equal(h.held, false);
  });
});
