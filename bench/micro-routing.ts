/**
 * Micro-benchmarks of the routing snapshot (picked up by bench/run.ts through `routingBenchTasks`).
 *
 * Lookup tasks time a block of LOOKUPS_PER_SAMPLE lookups themselves and report the mean per lookup
 * through tinybench's `overriddenDuration`, so the runner's "ns/op" column is ns per lookup rather than
 * tinybench's per-call timer overhead.
 *
 * Standalone: `node dist/bench/micro-routing.js` runs a short bench and prints ns/lookup.
 */
import type { Bench } from 'tinybench';
import { isMain, runStandalone } from './standalone.js';
import { RoutingSnapshot, type Route } from '../src/routing-table/snapshot.js';
import { mulberry32 } from '../test/helpers/prng.js';

const ADDRESS_COUNT = 1024; // power of two: the loop index is masked, not reduced modulo
const LOOKUPS_PER_SAMPLE = 16 * ADDRESS_COUNT;

/** Results are folded in here so the JIT cannot drop the lookups as dead code. */
let sink = 0;

/** count random /24 routes under base/8 (duplicates possible and harmless). */
function random24Routes(rand: () => number, base: number, count: number): Route[] {
  const routes: Route[] = [];
  for (let i = 0; i < count; i++) {
    routes.push({ prefix: (base | (rand() & 0x00ffff00)) >>> 0, prefixLen: 24, publicIp: rand() });
  }
  return routes;
}

/** Three quarters of the addresses fall inside a route (mostly hits), the rest anywhere in base|hostMask. */
function probeAddresses(rand: () => number, routes: readonly Route[], base: number, hostMask: number): Uint32Array {
  const addrs = new Uint32Array(ADDRESS_COUNT);
  for (let i = 0; i < ADDRESS_COUNT; i++) {
    addrs[i] =
      i % 4 !== 3
        ? (routes[rand() % routes.length]!.prefix | (rand() & 0xff)) >>> 0
        : (base | (rand() & hostMask)) >>> 0;
  }
  return addrs;
}

function addLookupTask(bench: Bench, name: string, snap: RoutingSnapshot, addrs: Uint32Array): void {
  bench.add(name, () => {
    let acc = 0;
    const start = bench.now();
    for (let i = 0; i < LOOKUPS_PER_SAMPLE; i++) acc += snap.lookup(addrs[i & (ADDRESS_COUNT - 1)]!);
    const elapsed = bench.now() - start;
    sink += acc;
    return { overriddenDuration: elapsed / LOOKUPS_PER_SAMPLE, overriddenIterationCost: elapsed };
  });
}

/** Adds the routing tasks to a bench. Lookup tasks report ns per lookup; the build task ns per build. */
export function routingBenchTasks(bench: Bench): void {
  const rand = mulberry32(0x0a0a0a0a);

  const large = random24Routes(rand, 0x0a000000, 10_000);
  const largeSnap = RoutingSnapshot.build(large);
  addLookupTask(
    bench,
    'routing lookup: 10,000 random /24 under 10.0.0.0/8 (ns/lookup)',
    largeSnap,
    probeAddresses(rand, large, 0x0a000000, 0x00ffffff),
  );

  const flannel: Route[] = [];
  for (let n = 0; n < 256; n++)
    flannel.push({ prefix: (0x0af40000 | (n << 8)) >>> 0, prefixLen: 24, publicIp: 0xc0000200 + n });
  addLookupTask(
    bench,
    "routing lookup: flannel's 256 /24 leases under 10.244.0.0/16 (ns/lookup)",
    RoutingSnapshot.build(flannel),
    probeAddresses(rand, flannel, 0x0af40000, 0x0000ffff),
  );

  bench.add('routing build: snapshot of 10,000 /24 routes (ns/build)', () => {
    sink += RoutingSnapshot.build(large).routeCount;
  });
}

if (isMain(import.meta.url)) {
  runStandalone(routingBenchTasks).catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  });
}

// Reading the sink keeps every measured result observable, so no work is optimized away.
if (sink === -1) process.stdout.write('\n');
