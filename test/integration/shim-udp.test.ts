// The shim's batched UDP send with UDP GSO: a run of equal-size datagrams to one peer goes down
// the stack as one message, and a plain receiver (as a flanneld peer is) still gets the same
// separate datagrams, byte for byte, in order; so does a receiver with UDP GRO, from the runs it
// gets. Datagrams sent in two parts (header cell + payload) arrive as one. Runs in a namespace of its own.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { scenarioNamespace } from '../helpers/scenario-netns.js';

const scenario = scenarioNamespace('shim-udp-scenario.js', 'ftshim');

interface Outcome {
  probe: number;
  gsoInForce: number;
  sent: number;
  planned: number;
  gsoAfter: number;
  groEnabled: number[];
  runs: number;
  received: { port: number; len: number; index: number; intact: boolean }[];
}

function run(mode: 'gso' | 'plain' | 'gso-gro' | 'gso-mtu'): Outcome {
  return scenario.run<Outcome>([mode]);
}

describe('shim udpSend', () => {
  before(() => scenario.create());
  after(() => scenario.remove());

  for (const mode of ['gso', 'plain', 'gso-gro', 'gso-mtu'] as const) {
    it(`${mode}: every datagram arrives separately, intact and in order`, () => {
      const r = run(mode);
      if (mode === 'gso-gro') {
        assert.deepEqual(r.groEnabled, [0, 0], 'this kernel accepts UDP_GRO');
        assert.ok(r.runs >= 2, `coalesced runs received: ${r.runs}`);
      } else {
        assert.equal(r.runs, 0);
      }
      if (mode !== 'plain') {
        assert.equal(r.probe, 0, 'this kernel accepts UDP_SEGMENT');
        assert.equal(r.gsoInForce, 64);
        assert.equal(
          r.gsoAfter,
          64,
          mode === 'gso-mtu' ? 'a refused GSO message (path MTU) does not turn GSO off' : 'no GSO message was refused',
        );
      } else {
        assert.equal(r.gsoInForce, 0);
      }
      assert.equal(r.sent, r.planned);
      assert.equal(r.received.length, r.planned);
      assert.ok(
        r.received.every((d) => d.intact),
        JSON.stringify(r.received),
      );
      // Datagram 11 went to the second receiver; the first got all others, in the order sent.
      const portA = r.received[0]!.port;
      assert.deepEqual(
        r.received.filter((d) => d.port === portA).map((d) => d.index),
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17],
      );
      assert.deepEqual(
        r.received.filter((d) => d.port !== portA).map((d) => [d.index, d.len]),
        [[11, 1000]],
      );
    });
  }
});
