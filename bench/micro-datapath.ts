/**
 * Micro-benchmarks of the datapath's TypeScript per-packet cost (picked up by bench/run.ts through
 * `datapathBenchTasks`). No kernel I/O: the Forwarder runs over the replaying fakes of
 * test/helpers/fake-io.ts with a realistic 64-packet batch (mostly forwarded, some drops and ICMP
 * errors: `mixedTraffic`). Every task times a block of calls itself and reports the mean per
 * PACKET through tinybench's `overriddenDuration`, so the runner's "ns/op" column is ns/packet.
 *
 * The batch tasks include the replaying fake's own work (restoring each slot's header and lens,
 * counting sends/writes); the "fake I/O alone" task measures that part so it can be subtracted.
 *
 * Standalone: `node dist/bench/micro-datapath.js` runs a short bench and prints ns/packet.
 */
import type { Bench } from 'tinybench';
import { isMain, runStandalone } from './standalone.js';
import { newCounters } from '../src/datapath/counters.js';
import { Forwarder } from '../src/datapath/forwarder.js';
import { PacketSlab, slotSizeFor } from '../src/datapath/slab.js';
import { decrementTtl } from '../src/encap/ipv4.js';
import { RoutingSnapshot } from '../src/routing-table/snapshot.js';
import { MIX_HOST, ReplayTun, ReplayUdp, mixRoutes, mixedTraffic } from '../test/helpers/fake-io.js';

const BATCH = 64;
const BATCHES_PER_SAMPLE = 256;
const HEADERS = 1024; // power of two: the loop index is masked
const TTL_PATCHES_PER_SAMPLE = 16 * HEADERS;

/** Results are folded in here so the JIT cannot drop the work as dead code. */
let sink = 0;

function replayForwarder() {
  const slab = new PacketSlab({ slotSize: slotSizeFor(MIX_HOST.mtu), batch: BATCH });
  const traffic = mixedTraffic(BATCH);
  const tun = new ReplayTun(slab, traffic.tunPackets);
  const udp = new ReplayUdp(slab, traffic.udpDatagrams);
  const fwd = new Forwarder(slab, tun, udp, MIX_HOST, newCounters());
  fwd.setRoutes(RoutingSnapshot.build(mixRoutes()));
  return { slab, tun, udp, fwd };
}

/** Adds a task that times `BATCHES_PER_SAMPLE` calls of `step` (each moving BATCH packets). */
function addBatchTask(bench: Bench, name: string, step: () => number): void {
  bench.add(name, () => {
    let moved = 0;
    const start = bench.now();
    for (let i = 0; i < BATCHES_PER_SAMPLE; i++) moved += step();
    const elapsed = bench.now() - start;
    sink += moved;
    return { overriddenDuration: elapsed / moved, overriddenIterationCost: elapsed };
  });
}

/** Adds the datapath tasks to a bench. All report ns per packet. */
export function datapathBenchTasks(bench: Bench): void {
  // TTL patch: 1024 option-less headers side by side; the TTL is reset before each patch so the
  // packet never expires (the checksum drifts, which costs nothing and changes nothing).
  const headers = new Uint8Array(HEADERS * 20);
  for (let i = 0; i < HEADERS; i++) {
    headers[i * 20] = 0x45;
    headers[i * 20 + 10] = (i * 2654435761) >>> 24;
    headers[i * 20 + 11] = i & 0xff;
  }
  bench.add('datapath: TTL patch, RFC 1624 (ns/packet)', () => {
    let ok = 0;
    const start = bench.now();
    for (let i = 0; i < TTL_PATCHES_PER_SAMPLE; i++) {
      const off = (i & (HEADERS - 1)) * 20;
      headers[off + 8] = 64;
      if (decrementTtl(headers, off)) ok++;
    }
    const elapsed = bench.now() - start;
    sink += ok;
    return { overriddenDuration: elapsed / TTL_PATCHES_PER_SAMPLE, overriddenIterationCost: elapsed };
  });

  const tx = replayForwarder();
  addBatchTask(bench, `datapath: classify a batch flannel0->UDP, ${BATCH} packets, replay I/O (ns/packet)`, () =>
    tx.fwd.tunToUdp(),
  );

  const rx = replayForwarder();
  addBatchTask(bench, `datapath: classify a batch UDP->flannel0, ${BATCH} packets, replay I/O (ns/packet)`, () =>
    rx.fwd.udpToTun(),
  );

  // The replaying fakes alone, as the forwarder drives them for one batch each way (the
  // forwarder's cost is the batch figures minus this one, roughly).
  const io = replayForwarder();
  const list = new Uint16Array(BATCH);
  for (let i = 0; i < BATCH; i++) list[i] = io.slab.rxFirst + i;
  addBatchTask(bench, `datapath: replay fake I/O alone, read+recv+write a ${BATCH}-packet batch (ns/packet)`, () => {
    const n = io.tun.read(io.slab.txFirst, BATCH) + io.udp.recv(io.slab.rxFirst, BATCH);
    io.tun.write(list, BATCH);
    return n;
  });
}

if (isMain(import.meta.url)) {
  runStandalone(datapathBenchTasks).catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  });
}

// Reading the sink keeps every measured result observable, so no work is optimized away.
if (sink === -1) process.stdout.write('\n');
