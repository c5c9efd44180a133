// The Forwarder's hot path allocates nothing: a million packets, both directions, a realistic
// mix of forwards and drops (test/helpers/fake-io.ts mixedTraffic), through replaying fakes that
// allocate nothing either, and not one garbage collection may happen meanwhile.
//
// Method: warm up (JIT tiers settle), force a full GC so no collection is pending, observe 'gc'
// performance entries during the run, then let the observer deliver. A control run that does
// allocate proves the observer sees collections.
import assert from 'node:assert/strict';
import { PerformanceObserver } from 'node:perf_hooks';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { C, newCounters } from '../../src/datapath/counters.js';
import { Forwarder } from '../../src/datapath/forwarder.js';
import { PacketSlab, slotSizeFor } from '../../src/datapath/slab.js';
import { RoutingSnapshot } from '../../src/routing-table/snapshot.js';
import { MIX_HOST, ReplayTun, ReplayUdp, mixRoutes, mixedTraffic } from '../helpers/fake-io.js';

const BATCH = 64;
const PACKETS = 1_000_000;
const ROUNDS = Math.ceil(PACKETS / (2 * BATCH)); // one batch each way per round
const WARMUP_ROUNDS = 20_000;

/** A full-GC function without --expose-gc on the command line (node:test spawns this file itself). */
function fullGc(): () => void {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (existing) return existing;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

interface GcWatch {
  stop(): Promise<string[]>;
}

function watchGc(): GcWatch {
  const seen: string[] = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      seen.push(
        `${e.name} kind=${(e as unknown as { detail?: { kind?: number } }).detail?.kind} ${e.duration.toFixed(2)} ms`,
      );
  });
  observer.observe({ entryTypes: ['gc'] });
  return {
    async stop() {
      // Entries are delivered asynchronously; give the loop a few turns.
      await new Promise((resolve) => setTimeout(resolve, 50));
      observer.disconnect();
      return seen;
    },
  };
}

test('a million packets through the Forwarder cause zero garbage collections', async (t) => {
  const slab = new PacketSlab({ slotSize: slotSizeFor(MIX_HOST.mtu), batch: BATCH });
  const traffic = mixedTraffic(BATCH);
  const tun = new ReplayTun(slab, traffic.tunPackets);
  const udp = new ReplayUdp(slab, traffic.udpDatagrams);
  const counters = newCounters();
  // The ICMP rate limit runs (its clock read and its table updated) but never holds an error back:
  // the replay repeats one batch at full speed, and its count of ICMP errors is exact.
  const unlimited = { intervalMs: 1e-9, burst: 1e9, globalPerSecond: 1e15, globalBurst: 1e9 };
  const fwd = new Forwarder(slab, tun, udp, { ...MIX_HOST, icmpRateLimit: unlimited }, counters);
  fwd.setRoutes(RoutingSnapshot.build(mixRoutes()));

  const run = (rounds: number): void => {
    for (let r = 0; r < rounds; r++) {
      fwd.tunToUdp();
      fwd.udpToTun();
    }
  };

  run(WARMUP_ROUNDS);
  const before = counters.slice();
  fullGc()();
  await new Promise((resolve) => setImmediate(resolve));

  const watch = watchGc();
  const start = process.hrtime.bigint();
  run(ROUNDS);
  const elapsedNs = Number(process.hrtime.bigint() - start);
  const collections = await watch.stop();

  const moved = (i: number): number => counters[i]! - before[i]!;
  const { perBatch } = traffic;
  const packets = moved(C.tunReadPackets) + moved(C.udpRecvPackets);
  assert.equal(packets, ROUNDS * 2 * BATCH);
  assert.equal(moved(C.udpSentPackets), ROUNDS * perBatch.sent, 'forwarded to peers');
  assert.equal(moved(C.tunWritePackets), ROUNDS * perBatch.written, 'written to flannel0');
  assert.equal(moved(C.icmpUnreachableSent) + moved(C.icmpTimeExceededSent), ROUNDS * perBatch.icmps, 'ICMP errors');
  assert.equal(
    moved(C.dropTxMalformed) + moved(C.dropTxNoRoute) + moved(C.dropTxTtl),
    ROUNDS * perBatch.txDrops,
    'flannel0 -> UDP drops',
  );
  assert.equal(
    moved(C.dropRxUnknownSender) +
      moved(C.dropRxSpoofedSource) +
      moved(C.dropRxNotForUs) +
      moved(C.dropRxTtl) +
      moved(C.dropRxOversize),
    ROUNDS * perBatch.rxDrops,
    'UDP -> flannel0 drops',
  );
  assert.ok(
    perBatch.sent > 0 && perBatch.txDrops > 0 && perBatch.rxDrops > 0 && perBatch.icmps > 0,
    'the mix has every kind',
  );

  const nsPerPacket = elapsedNs / packets;
  t.diagnostic(
    `${packets} packets in ${(elapsedNs / 1e6).toFixed(1)} ms: ` +
      `${nsPerPacket.toFixed(1)} ns/packet (both directions, fake I/O)`,
  );
  assert.deepEqual(collections, [], `garbage collections during the run:\n${collections.join('\n')}`);
});

test('control: the same observer does see collections when a loop allocates', async () => {
  const watch = watchGc();
  // A short-lived array per turn that escapes into a ring, so the JIT cannot elide it.
  const ring: number[][] = new Array(1024);
  for (let i = 0; i < 2_000_000; i++) ring[i & 1023] = [i, i + 1];
  const collections = await watch.stop();
  assert.equal(ring[(2_000_000 - 1) & 1023]![0], 2_000_000 - 1);
  assert.ok(collections.length > 0, 'no GC seen: the observer is blind, the zero-GC test proves nothing');
});
