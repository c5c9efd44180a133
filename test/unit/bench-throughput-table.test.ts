import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  median,
  roundOrder,
  summarizeRounds,
  throughputTable,
  type BenchForwarder,
  type ModeResult,
  type RoundSample,
} from '../../bench/throughput.js';

/** A round's sample with round-number-derived defaults; `over` sets what the test looks at. */
function sample(round: number, over: Partial<RoundSample> = {}): RoundSample {
  return {
    round,
    position: 0,
    tcpGbitPerSec: 10,
    tcpRetransmits: 0,
    tcpCpuSecondsPerGbit: 0.1,
    tcpMachineBusyPercent: 90,
    udp64DeliveredPps: 60_000,
    udp64SentPps: 100_000,
    udp64LostPercent: 40,
    pingAvgRttUs: 100,
    pingLoss: 0,
    ...over,
  };
}

function result(mode: BenchForwarder, rounds: RoundSample[], over: Partial<ModeResult> = {}): ModeResult {
  return { mode, podMtu: mode === 'vxlan' ? 1450 : 1472, ok: true, rounds, ...over };
}

function near(actual: number | undefined, expected: number): void {
  assert.ok(actual !== undefined && Math.abs(actual - expected) < 1e-9, `${String(actual)} is not ${expected}`);
}

function byMode(results: readonly ModeResult[], mode: BenchForwarder): ModeResult {
  const r = results.find((x) => x.mode === mode);
  assert.ok(r, `no result for ${mode}`);
  return r;
}

describe('median', () => {
  test('odd count: the middle value, whatever the input order', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([15.5, 11.4, 13.9]), 13.9);
  });
  test('even count: the mean of the middle two', () => {
    assert.equal(median([4, 1, 3, 2]), 2.5);
  });
  test('non-finite values are ignored; none left gives NaN', () => {
    assert.equal(median([Number.NaN, 5, Number.POSITIVE_INFINITY, 7]), 6);
    assert.ok(Number.isNaN(median([])));
    assert.ok(Number.isNaN(median([Number.NaN])));
  });
});

describe('roundOrder', () => {
  test('each round starts one forwarder later, wrapping around', () => {
    const modes = ['a', 'b', 'c'];
    assert.deepEqual(roundOrder(modes, 1), ['a', 'b', 'c']);
    assert.deepEqual(roundOrder(modes, 2), ['b', 'c', 'a']);
    assert.deepEqual(roundOrder(modes, 3), ['c', 'a', 'b']);
    assert.deepEqual(roundOrder(modes, 4), ['a', 'b', 'c']);
  });
  test('no forwarder is first in every round', () => {
    const modes = ['vxlan', 'flannel-ts'];
    const firsts = new Set([1, 2, 3].map((round) => roundOrder(modes, round)[0]));
    assert.equal(firsts.size, 2);
    assert.deepEqual(roundOrder([], 2), []);
  });
});

describe('summarizeRounds', () => {
  // VXLAN drifts 10 -> 15 -> 12 Gbit/s; flannel-ts follows it at 0.5, 0.5, 0.4 of the same round.
  const vxlan = result('vxlan', [
    sample(1, { tcpGbitPerSec: 10, udp64DeliveredPps: 60_000, pingAvgRttUs: 100, tcpCpuSecondsPerGbit: 0.1 }),
    sample(2, { tcpGbitPerSec: 15, udp64DeliveredPps: 50_000, pingAvgRttUs: 120, tcpCpuSecondsPerGbit: 0.2 }),
    sample(3, { tcpGbitPerSec: 12, udp64DeliveredPps: 40_000, pingAvgRttUs: 80, tcpCpuSecondsPerGbit: 0.1 }),
  ]);
  const flannel = result('flannel-ts', [
    sample(1, {
      tcpGbitPerSec: 5,
      udp64DeliveredPps: 66_000,
      pingAvgRttUs: 400,
      tcpCpuSecondsPerGbit: 0.3,
      tcpAgentCpuSecondsPerGbit: 0.2,
    }),
    sample(2, {
      tcpGbitPerSec: 7.5,
      udp64DeliveredPps: 60_000,
      pingAvgRttUs: 420,
      tcpCpuSecondsPerGbit: 0.4,
      tcpAgentCpuSecondsPerGbit: 0.3,
    }),
    sample(3, {
      tcpGbitPerSec: 4.8,
      udp64DeliveredPps: 60_000,
      pingAvgRttUs: 400,
      tcpCpuSecondsPerGbit: 0.5,
      tcpAgentCpuSecondsPerGbit: 0.25,
    }),
  ]);
  const summarized = summarizeRounds([flannel, vxlan]);

  test('per-metric figures are the medians over rounds', () => {
    const f = byMode(summarized, 'flannel-ts');
    assert.equal(f.tcpGbitPerSec, 5);
    assert.equal(f.udp64DeliveredPps, 60_000);
    assert.equal(f.pingAvgRttUs, 400);
    assert.equal(f.tcpAgentCpuSecondsPerGbit, 0.25);
    assert.equal(byMode(summarized, 'vxlan').tcpGbitPerSec, 12);
    assert.equal(byMode(summarized, 'vxlan').tcpAgentCpuSecondsPerGbit, undefined);
  });

  test('vs VXLAN is the median of same-round ratios, not the ratio of medians', () => {
    const v = byMode(summarized, 'flannel-ts').vsVxlan;
    assert.ok(v);
    assert.equal(v.rounds, 3);
    // Same-round ratios 0.5, 0.5, 0.4; the ratio of medians would be 5 / 12 = 0.417.
    near(v.tcpGbitPerSec, 0.5);
    near(v.tcpGbitPerSecMin, 0.4);
    near(v.tcpGbitPerSecMax, 0.5);
    // UDP 1.1, 1.2, 1.5 -> 1.2; ping 4, 3.5, 5 -> 4; CPU 3, 2, 5 -> 3.
    near(v.udp64DeliveredPps, 1.2);
    near(v.pingAvgRttUs, 4);
    near(v.tcpCpuSecondsPerGbit, 3);
  });

  test('VXLAN against itself is 1 in every column', () => {
    const v = byMode(summarized, 'vxlan').vsVxlan;
    assert.deepEqual(v, {
      rounds: 3,
      tcpGbitPerSec: 1,
      tcpGbitPerSecMin: 1,
      tcpGbitPerSecMax: 1,
      tcpCpuSecondsPerGbit: 1,
      udp64DeliveredPps: 1,
      pingAvgRttUs: 1,
    });
  });

  test('ratios pair samples by round number; rounds without a VXLAN sample are left out', () => {
    const partialVxlan = result('vxlan', [sample(1, { tcpGbitPerSec: 10 }), sample(3, { tcpGbitPerSec: 20 })]);
    const hostGw = result('host-gw', [
      sample(3, { tcpGbitPerSec: 30 }), // listed first on purpose: pairing is by round, not index
      sample(1, { tcpGbitPerSec: 12 }),
      sample(2, { tcpGbitPerSec: 99 }), // no VXLAN sample in round 2
    ]);
    const v = byMode(summarizeRounds([partialVxlan, hostGw]), 'host-gw').vsVxlan;
    assert.ok(v);
    assert.equal(v.rounds, 2);
    near(v.tcpGbitPerSecMin, 1.2);
    near(v.tcpGbitPerSecMax, 1.5);
    near(v.tcpGbitPerSec, 1.35);
  });

  test('without VXLAN there are no ratios; without rounds no medians', () => {
    const [alone] = summarizeRounds([result('host-gw', [sample(1)])]);
    assert.equal(alone?.vsVxlan, undefined);
    assert.equal(alone?.tcpGbitPerSec, 10);
    const [failed] = summarizeRounds([result('flannel-ts', [], { ok: false, error: 'boom' })]);
    assert.equal(failed?.tcpGbitPerSec, undefined);
    assert.equal(failed?.vsVxlan, undefined);
  });

  test('inputs are not modified and every round sample is kept', () => {
    assert.equal(flannel.tcpGbitPerSec, undefined);
    assert.equal(flannel.vsVxlan, undefined);
    assert.equal(byMode(summarized, 'flannel-ts').rounds.length, 3);
  });
});

describe('throughputTable', () => {
  const results = summarizeRounds([
    result('flannel-ts', [
      sample(1, { tcpGbitPerSec: 5, tcpAgentCpuSecondsPerGbit: 0.2 }),
      sample(2, { tcpGbitPerSec: 4, tcpAgentCpuSecondsPerGbit: 0.2 }),
    ]),
    result('vxlan', [sample(1, { tcpGbitPerSec: 10 }), sample(2, { tcpGbitPerSec: 10 })]),
    result('host-gw', [], { ok: false, error: 'lab failed\nsecond line' }),
  ]);
  const table = throughputTable(results);
  const lines = table.split('\n');

  test('has the range column next to TCP vs VXLAN, and one row per forwarder plus flanneld', () => {
    assert.match(lines[0]!, /\| TCP Gbit\/s \| vs VXLAN \| TCP vs VXLAN, range \| CPU s\/Gbit \(TCP\) \|/);
    assert.equal(lines.length, 2 + 3 + 1);
    assert.match(lines[5]!, /flanneld udp/);
  });

  test('every row has as many cells as the header', () => {
    const cells = (line: string): number => line.split('|').length;
    for (const line of lines) assert.equal(cells(line), cells(lines[0]!), line);
  });

  test('rows show medians, median ratios and the min-max range', () => {
    const flannel = lines.find((l) => l.startsWith('| flannel-ts --datapath userspace (this build'));
    assert.ok(flannel);
    // TCP median 4.5, ratios 0.5 and 0.4 -> median 0.45, range 0.40-0.50.
    assert.match(flannel, /\| 1472 \| 4\.50 \| 0\.45 \| 0\.40-0\.50 \|/);
    assert.match(flannel, /\| 0\.20 \| 90 \|/);
    const vxlan = lines.find((l) => l.startsWith('| kernel VXLAN'));
    assert.match(vxlan!, /\| 1450 \| 10\.00 \| 1\.00 \| 1\.00-1\.00 \|/);
    const hostGw = lines.find((l) => l.startsWith('| host-gw'));
    assert.match(hostGw!, /failed: lab failed \|/);
    assert.doesNotMatch(hostGw!, /second line/);
  });
});
