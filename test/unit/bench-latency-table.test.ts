/**
 * The latency bench's pure parts (bench/latency.ts): the per-round ratio to a reference forwarder
 * and the Markdown tables with their target lines, on made-up runs.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  LATENCY_FORWARDERS,
  latencyTables,
  medianRatio,
  type LatencyForwarder,
  type LatencyRun,
  type PingRow,
  type PingStats,
} from '../../bench/latency.js';

function stats(avgUs: number, p99Us = avgUs * 4): PingStats {
  return { minUs: avgUs / 2, avgUs, p99Us, lost: 0 };
}

function row(forwarder: LatencyForwarder, perSecond: number, over: Partial<PingRow> = {}): PingRow {
  return {
    forwarder,
    load: 'quiet',
    perSecond,
    rounds: [stats(100)],
    median: stats(100),
    avgVsSocat: 1,
    p99VsSocat: 1,
    avgVsProxyShape: 1,
    avgOverVxlanUs: 70,
    ...over,
  };
}

function run(pings: PingRow[]): LatencyRun {
  return {
    pings,
    rr: [],
    firstPingsUs: {},
    agentLatency: {},
    busyPolls: {},
    loadAverage: { quiet: [1, 1, 1], busy: [2, 2, 2] },
  };
}

describe('medianRatio', () => {
  test('takes each round against the same round of the reference, then the median', () => {
    // The machine drifts 100 -> 300 -> 200 µs; the forwarder is 0.9x, 0.5x, 2x of the same round.
    const reference = [stats(100), stats(300), stats(200)];
    const rounds = [stats(90), stats(150), stats(400)];
    assert.equal(
      medianRatio(rounds, reference, (s) => s.avgUs),
      0.9,
    );
    assert.equal(
      medianRatio(rounds, reference, (s) => s.p99Us),
      0.9,
    );
  });
  test('NaN when the reference forwarder did not run', () => {
    assert.ok(Number.isNaN(medianRatio([stats(100)], undefined, (s) => s.avgUs)));
  });
});

describe('latencyTables', () => {
  test('proxy-shape runs right after socat', () => {
    assert.equal(LATENCY_FORWARDERS.indexOf('proxy-shape'), LATENCY_FORWARDERS.indexOf('socat') + 1);
  });

  test('each rate has an "avg vs proxy-shape" column with the row\'s ratio', () => {
    const text = latencyTables(
      run([
        row('flannel-ts', 2000, { avgVsProxyShape: 0.87 }),
        row('flannel-ts', 200, { avgVsProxyShape: 1.23 }),
        row('proxy-shape', 2000),
        row('proxy-shape', 200),
      ]),
    );
    const lines = text.split('\n');
    const header = lines.find((l) => l.startsWith('| forwarder | 2,000/s'))!;
    const headerCells = header.split('|').map((c) => c.trim());
    assert.deepEqual(
      headerCells.map((c, i) => (c === 'avg vs proxy-shape' ? i : -1)).filter((i) => i >= 0),
      [5, 10],
    );
    const separator = lines[lines.indexOf(header) + 1]!;
    assert.equal(separator.split('|').length, header.split('|').length);
    const cells = lines
      .find((l) => l.startsWith('| flannel-ts |'))!
      .split('|')
      .map((c) => c.trim());
    assert.equal(cells.length, headerCells.length);
    assert.equal(cells[5], '0.87');
    assert.equal(cells[10], '1.23');
  });

  test('target lines: avg vs proxy-shape ≤ 1 and p99 vs socat ≤ 1, met or not, beside the socat line', () => {
    const text = latencyTables(
      run([
        row('flannel-ts', 2000, { avgVsSocat: 0.95, avgVsProxyShape: 0.98, p99VsSocat: 0.9 }),
        row('flannel-ts', 200, { avgVsSocat: 0.9, avgVsProxyShape: 1.02, p99VsSocat: 0.5 }),
        row('flannel-ts-userspace', 2000, { avgVsProxyShape: 0.7, p99VsSocat: 1.4 }),
        row('flannel-ts-userspace', 200, { avgVsProxyShape: Number.NaN, p99VsSocat: 0.5 }),
        row('socat', 2000, { avgVsProxyShape: 0.5 }),
        row('socat', 200, { avgVsProxyShape: 0.5 }),
      ]),
    );
    const proxyLines = text.split('\n').filter((l) => l.includes('x proxy-shape (target ≤ 1.00)'));
    assert.deepEqual(proxyLines, [
      '- quiet, 2000/s: flannel-ts avg 0.98x proxy-shape (target ≤ 1.00), p99 0.90x socat (target ≤ 1): **met**',
      '- quiet, 200/s: flannel-ts avg 1.02x proxy-shape (target ≤ 1.00), p99 0.50x socat (target ≤ 1): **not met**',
      '- quiet, 2000/s: flannel-ts-userspace avg 0.70x proxy-shape (target ≤ 1.00), p99 1.40x socat (target ≤ 1): **not met**',
      '- quiet, 200/s: flannel-ts-userspace avg n/ax proxy-shape (target ≤ 1.00), p99 0.50x socat (target ≤ 1): **not met**',
    ]);
    // The line against flanneld's measured ratio stays as it was (0.63x socat at 2,000/s quiet).
    assert.ok(
      text.includes(
        "- quiet, 2000/s: flannel-ts avg 0.95x socat (flanneld's proxy: 0.63x), p99 0.90x socat (target ≤ 1): **not met**",
      ),
    );
  });

  test('busy-polling outcomes: a row per lab whose agent polled, none for one that never did', () => {
    const r = run([row('flannel-ts-userspace', 2000), row('flannel-ts-userspace', 200)]);
    r.busyPolls = {
      'flannel-ts-userspace': { spinCaught: 861, spinRanOut: 777, spinContended: 3, spinPaused: 120 },
      'flannel-ts-userspace-no-spin': { spinCaught: 0, spinRanOut: 0, spinContended: 0, spinPaused: 0 },
    };
    const lines = latencyTables(r).split('\n');
    const at = lines.findIndex((l) => l.startsWith('### Busy-polling after traffic'));
    assert.ok(at >= 0);
    const table = lines.slice(at + 2, lines.indexOf('', at + 2));
    assert.deepEqual(table, [
      '| forwarder | caught | ran out | contended | paused |',
      '|---|---|---|---|---|',
      '| flannel-ts-userspace | 861 | 777 | 3 | 120 |',
    ]);
    assert.ok(!latencyTables(run([])).includes('### Busy-polling'), 'no table when no agent polled');
  });
});
