/**
 * Micro-benchmarks of the TCP offload work (picked up by bench/run.ts through `segmentBenchTasks`):
 * cutting a 64 KiB GSO_TCPV4 super-packet into segments and completing CHECKSUM_PARTIAL checksums
 * (reads from flannel0), and planning the coalescing of a received batch (writes into flannel0).
 * Every task times a block of calls itself and reports, through tinybench's `overriddenDuration`,
 * the mean per SEGMENT or per PACKET as its name says.
 *
 * Standalone: `node dist/bench/micro-segment.js` runs a short bench and prints the figures.
 */
import type { Bench } from 'tinybench';
import { isMain, runStandalone } from './standalone.js';
import { onesComplementSum } from '../src/encap/checksum.js';
import { checksumMemory } from '../src/encap/checksum-simd.js';
import { MAX_GROUP_PACKETS, VNET_HDR_SLOT, planCoalescing } from '../src/encap/tcp-coalesce.js';
import { SEGMENT_HEADER_CELL, completeChecksum, segmentTcpSuperPacket } from '../src/encap/tcp-segment.js';
import { mulberry32, randomBytes } from '../test/helpers/prng.js';
import { buildTcpPacket, partialChecksum } from '../test/helpers/tcp-segments.js';

const GSO_SIZE = 1420;
const SUPER_PACKETS_PER_SAMPLE = 64;
const CHECKSUMS_PER_SAMPLE = 4096;
const PLANS_PER_SAMPLE = 64;
/** A received batch: consecutive full segments of one flow, as UDP GRO delivers them. */
const BATCH_PACKETS = 64;
/** Slot stride of the planner's batch: 8-aligned slots, as the slab's. */
const BATCH_SLOT = 2048;
/** The TCP payload of the checksum tasks: an MSS-sized segment of a 1500-byte MTU. */
const PAYLOAD = 1460;

/** Results are folded in here so the JIT cannot drop the work as dead code. */
let sink = 0;

/** A TCP packet (timestamps option) whose check field holds the pseudo-header sum (CHECKSUM_PARTIAL). */
function partialTcpPacket(rand: () => number, payloadLen: number): Uint8Array {
  const tcpOptions = new Uint8Array([1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0]);
  const p = buildTcpPacket({
    src: 0x0af40102,
    dst: 0x0af40203,
    ttl: 63,
    id: 1234,
    df: true,
    sport: 40000,
    dport: 5201,
    seq: rand() >>> 0,
    ack: rand() >>> 0,
    flags: 0x18,
    window: 502,
    tcpOptions,
    payload: randomBytes(rand, payloadLen),
  });
  const partial = partialChecksum(0x0af40102, 0x0af40203, 6, p.length - 20);
  p[36] = partial >> 8;
  p[37] = partial & 0xff;
  return p;
}

/** Adds the segmentation and checksum tasks to a bench. */
export function segmentBenchTasks(bench: Bench): void {
  const rand = mulberry32(0x7505);
  // A slab-like buffer: the 65535-byte super-packet at an 8-aligned offset (as a slot), then the
  // header cells.
  const sp = partialTcpPacket(rand, 65535 - 52);
  const cells = Math.ceil((sp.length - 52) / GSO_SIZE);
  const spOff = 64;
  const cellBase = spOff + 65536;
  // The slab is a WebAssembly memory (checksumMemory) where SIMD is available: the first variant
  // measures that; the others a plain buffer (the fallback's word and byte paths).
  const simdBytes = checksumMemory(cellBase + cells * SEGMENT_HEADER_CELL);
  const bytes = new Uint8Array(cellBase + cells * SEGMENT_HEADER_CELL);
  const words = new Uint32Array(bytes.buffer);
  simdBytes.set(sp, spOff);
  bytes.set(sp, spOff);
  const slotOffsets = Uint32Array.from({ length: cells }, (_, i) => cellBase + i * SEGMENT_HEADER_CELL);
  const lens = new Int32Array(cells),
    extOffs = new Uint32Array(cells),
    extLens = new Uint16Array(cells);

  const segmentVariants = [
    ['wasm SIMD memory', simdBytes, new Uint32Array(simdBytes.buffer)],
    ['32-bit words', bytes, words],
    ['byte path', bytes, null],
  ] as const;
  for (const [label, b, w] of segmentVariants) {
    bench.add(
      `segment: 64 KiB super-packet, gso_size ${GSO_SIZE}, timestamps, ${cells} segments, ${label} (ns/segment)`,
      () => {
        let segments = 0;
        const start = bench.now();
        for (let r = 0; r < SUPER_PACKETS_PER_SAMPLE; r++) {
          segments += segmentTcpSuperPacket(
            b,
            w,
            spOff,
            sp.length,
            GSO_SIZE,
            65535,
            0,
            slotOffsets,
            0,
            cells,
            lens,
            extOffs,
            extLens,
          );
        }
        const elapsed = bench.now() - start;
        sink += segments;
        return { overriddenDuration: elapsed / segments, overriddenIterationCost: elapsed };
      },
    );
  }

  // Checksum completion of one MSS-sized segment: 20 + 12 TCP header bytes + 1460 payload summed.
  const packet = partialTcpPacket(rand, PAYLOAD);
  const pBytes = new Uint8Array(4096);
  const pWords = new Uint32Array(pBytes.buffer);
  const simdPBytes = checksumMemory(4096);
  const simdPWords = new Uint32Array(simdPBytes.buffer);
  const pOff = 8;
  pBytes.set(packet, pOff);
  simdPBytes.set(packet, pOff);
  const partialHi = packet[36],
    partialLo = packet[37];
  const summed = packet.length - 20;
  const checksumVariants = [
    ['wasm SIMD memory', simdPBytes, simdPWords],
    ['32-bit words', pBytes, pWords],
    ['byte path', pBytes, null],
  ] as const;
  for (const [label, pBytes, w] of checksumVariants) {
    bench.add(
      `checksum: complete a partial TCP checksum, ${PAYLOAD}-byte ` +
        `payload (${summed} bytes summed), ${label} (ns/packet)`,
      () => {
        let ok = 0;
        const start = bench.now();
        for (let r = 0; r < CHECKSUMS_PER_SAMPLE; r++) {
          pBytes[pOff + 36] = partialHi;
          pBytes[pOff + 37] = partialLo;
          if (completeChecksum(pBytes, w, pOff, packet.length, 20, 16)) ok++;
        }
        const elapsed = bench.now() - start;
        sink += ok + pBytes[pOff + 36];
        return { overriddenDuration: elapsed / CHECKSUMS_PER_SAMPLE, overriddenIterationCost: elapsed };
      },
    );
  }

  planBenchTasks(bench, rand);

  for (const [label, b, w] of [
    ['wasm SIMD memory', simdPBytes, simdPWords],
    ['32-bit words', pBytes, pWords],
  ] as const) {
    bench.add(`checksum: onesComplementSum of ${PAYLOAD} bytes at an odd offset, ${label} (ns/sum)`, () => {
      let acc = 0;
      const start = bench.now();
      for (let r = 0; r < CHECKSUMS_PER_SAMPLE; r++) acc += onesComplementSum(b, w, pOff + 1 + (r & 2), PAYLOAD, r);
      const elapsed = bench.now() - start;
      sink += acc;
      return { overriddenDuration: elapsed / CHECKSUMS_PER_SAMPLE, overriddenIterationCost: elapsed };
    });
  }
}

/**
 * GRO planning of a batch of BATCH_PACKETS full segments of one flow (gso_size payload, timestamps):
 * every header compared, every IP and TCP checksum verified, groups sealed. Planning patches the
 * leaders' headers, so each call first puts the pristine headers back (two 52-byte copies per
 * batch, included in the figure).
 */
function planBenchTasks(bench: Bench, rand: () => number): void {
  const simdBytes = checksumMemory(BATCH_PACKETS * BATCH_SLOT);
  const bytes = new Uint8Array(BATCH_PACKETS * BATCH_SLOT);
  const words = new Uint32Array(bytes.buffer);
  const slotOffsets = Uint32Array.from({ length: BATCH_PACKETS }, (_, i) => i * BATCH_SLOT);
  const lens = new Int32Array(BATCH_PACKETS);
  const tcpOptions = new Uint8Array([1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0]);
  const seq0 = rand() >>> 0,
    ack = rand() >>> 0;
  for (let i = 0; i < BATCH_PACKETS; i++) {
    const p = buildTcpPacket({
      src: 0x0af40102,
      dst: 0x0af40203,
      ttl: 63,
      id: 1234 + i,
      df: true,
      sport: 40000,
      dport: 5201,
      seq: (seq0 + i * GSO_SIZE) >>> 0,
      ack,
      flags: 0x10,
      window: 502,
      tcpOptions,
      payload: randomBytes(rand, GSO_SIZE),
    });
    bytes.set(p, slotOffsets[i]);
    simdBytes.set(p, slotOffsets[i]);
    lens[i] = p.length;
  }
  const pristine = bytes.slice();
  const offs = new Uint16Array(BATCH_PACKETS);
  const vnet = new Uint8Array(BATCH_PACKETS * VNET_HDR_SLOT);
  const list = Uint16Array.from({ length: BATCH_PACKETS }, (_, i) => i);
  const groupLens = new Uint16Array(BATCH_PACKETS);
  const hdr = 52;
  const planVariants = [
    ['wasm SIMD memory', simdBytes, new Uint32Array(simdBytes.buffer)],
    ['32-bit words', bytes, words],
    ['byte path', bytes, null],
  ] as const;
  for (const [label, b, w] of planVariants) {
    bench.add(
      `plan: GRO of ${BATCH_PACKETS} full ${GSO_SIZE}-byte segments of one ` +
        `flow (groups of <= ${MAX_GROUP_PACKETS}, 64 KiB), ${label} (ns/packet)`,
      () => {
        let groups = 0;
        const start = bench.now();
        for (let r = 0; r < PLANS_PER_SAMPLE; r++) {
          for (let i = 0; i < BATCH_PACKETS; i++) {
            if (groupLens[i] < 2) continue;
            const o = slotOffsets[i];
            for (let j = 0; j < hdr; j++) b[o + j] = pristine[o + j];
          }
          groups += planCoalescing(b, slotOffsets, lens, offs, vnet, list, BATCH_PACKETS, groupLens, 65535, w);
        }
        const elapsed = bench.now() - start;
        if (groups !== 2 * PLANS_PER_SAMPLE)
          throw new Error(`plan bench: ${groups} groups, expected ${2 * PLANS_PER_SAMPLE}`);
        sink += groups;
        return { overriddenDuration: elapsed / (PLANS_PER_SAMPLE * BATCH_PACKETS), overriddenIterationCost: elapsed };
      },
    );
  }
}

if (isMain(import.meta.url)) {
  runStandalone(segmentBenchTasks)
    .then(() => {
      if (sink === -1) process.stdout.write('\n');
    })
    .catch((e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    });
}
