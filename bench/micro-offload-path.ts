/**
 * Micro-benchmarks of the Forwarder's TypeScript cost on the offload paths that carry bulk TCP
 * (picked up by bench/run.ts through `offloadPathBenchTasks`). No kernel I/O: replaying fakes hand
 * the Forwarder what flannel0 and the socket hand it under an iperf3 TCP run, so the figures are
 * the per-packet userspace work that the network bench's CPU per gigabit includes:
 *  - flannel0 -> UDP: reads of 64 KiB TSO super-packets (4 per read, as the agents see ~3 under
 *    TCP), each cut into MTU-sized segments with their own headers and full TCP checksums;
 *  - UDP -> flannel0: receives of UDP GRO runs of 44 full-sized segments of one TCP flow, each
 *    checked, split through view slots and coalesced back into one super-packet for flannel0.
 * Each task reports ns per SEGMENT (one datagram on the wire); the "replay alone" tasks measure
 * what the fakes themselves cost, to subtract.
 *
 * Standalone: `node dist/bench/micro-offload-path.js` runs a short bench and prints the figures.
 */
import type { Bench } from 'tinybench';
import { isMain, runStandalone } from './standalone.js';
import { C, newCounters } from '../src/datapath/counters.js';
import { Forwarder, type ForwarderConfig } from '../src/datapath/forwarder.js';
import type { TunDevice, UdpSocket } from '../src/datapath/io.js';
import { PacketSlab, SUPER_SLOT_SIZE, slotSizeFor } from '../src/datapath/slab.js';
import { VNET_HDR_SLOT } from '../src/encap/tcp-coalesce.js';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 } from '../src/encap/wire.js';
import { RoutingSnapshot } from '../src/routing-table/snapshot.js';
import { mulberry32, randomBytes } from '../test/helpers/prng.js';
import { buildTcpPacket, partialChecksum } from '../test/helpers/tcp-segments.js';

const MTU = 1472;
/** TCP header with the timestamps option, as Linux sends: 20 + 12 bytes. */
const TCP_HDR = 32;
const MSS = MTU - 20 - TCP_HDR;
/** Super-packets per flannel0 read. */
const READ_SUPER_PACKETS = 4;
/** Datagrams in one UDP GRO run (a 64 KiB skb of 1472-byte datagrams holds 44). */
const RUN_SEGMENTS = 44;
const CALLS_PER_SAMPLE = 64;
/** Bytes of each packet the Forwarder may change (IP header, then TCP up to its checksum). */
const MUTABLE_PREFIX = 20 + 18;

const LOCAL = 0x0af40102; // 10.244.1.2, a pod on this host (10.244.1.0/24)
const REMOTE = 0x0af40203; // 10.244.2.3, a pod behind the peer
const PEER_PUBLIC_IP = 0xc0000202; // 192.0.2.2

const CONFIG: ForwarderConfig = {
  tunAddress: 0x0af40100,
  subnetPrefix: 0x0af40100,
  subnetLen: 24,
  port: 8285,
  mtu: MTU,
  tunGro: true,
};
const ROUTES = [{ prefix: 0x0af40200, prefixLen: 24, publicIp: PEER_PUBLIC_IP }];

/** Results are folded in here so the JIT cannot drop the work as dead code. */
let sink = 0;

const TIMESTAMPS = new Uint8Array([1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0]);

function offloadSlab(): PacketSlab {
  return new PacketSlab({
    slotSize: slotSizeFor(MTU),
    batch: READ_SUPER_PACKETS,
    readSlotSize: SUPER_SLOT_SIZE,
    receiveSlotSize: SUPER_SLOT_SIZE,
  });
}

/** Copies the first `count` bytes of template[from..] to bytes[to..] without allocating. */
function restore(bytes: Uint8Array, to: number, template: Uint8Array, from: number, count: number): void {
  for (let i = 0; i < count; i++) bytes[to + i] = template[from + i];
}

/** flannel0 handing out the same TSO super-packets (CHECKSUM_PARTIAL, GSO_TCPV4) on every read. */
class SuperPacketTun implements TunDevice {
  constructor(
    private readonly slab: PacketSlab,
    private readonly template: Uint8Array,
  ) {
    for (let i = 0; i < READ_SUPER_PACKETS; i++) {
      const slot = slab.txFirst + i;
      slab.bytes.set(template, slab.slotOffsets[slot]);
      const v = slot * VNET_HDR_SLOT;
      const hdr = 20 + TCP_HDR;
      slab.vnetHdrs.set(
        [VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, hdr, 0, MSS & 0xff, MSS >> 8, 20, 0, 16, 0],
        v,
      );
    }
  }

  read(first: number, max: number): number {
    const n = Math.min(max, READ_SUPER_PACKETS),
      slab = this.slab;
    for (let i = 0; i < n; i++) {
      restore(slab.bytes, slab.slotOffsets[first + i], this.template, 0, MUTABLE_PREFIX);
      slab.lens[first + i] = this.template.length;
    }
    return n;
  }

  write(_list: Uint16Array, count: number): number {
    return count;
  }
}

/** A socket receiving the same UDP GRO run (RUN_SEGMENTS datagrams from the peer) on every recv. */
class GroRunUdp implements UdpSocket {
  segmentsSent = 0;

  constructor(
    private readonly slab: PacketSlab,
    private readonly run: Uint8Array,
  ) {
    slab.bytes.set(run, slab.slotOffsets[slab.rxFirst]);
  }

  recv(first: number, _max: number): number {
    const slab = this.slab,
      at = slab.slotOffsets[first];
    for (let k = 0; k < RUN_SEGMENTS; k++) restore(slab.bytes, at + k * MTU, this.run, k * MTU, MUTABLE_PREFIX);
    slab.lens[first] = this.run.length;
    slab.segSizes[first] = MTU;
    slab.addrs[first] = PEER_PUBLIC_IP;
    slab.ports[first] = CONFIG.port;
    return 1;
  }

  send(_list: Uint16Array, count: number): number {
    this.segmentsSent += count;
    return count;
  }
}

/** Null I/O for the direction a task does not drive. */
const idleTun: TunDevice = { read: () => 0, write: (_l, count) => count };
const idleUdp: UdpSocket = { recv: () => 0, send: (_l, count) => count };

function superPacket(): Uint8Array {
  const rand = mulberry32(0x0ff1);
  const payload = Math.floor((65535 - 20 - TCP_HDR) / MSS) * MSS;
  const p = buildTcpPacket({
    src: LOCAL,
    dst: REMOTE,
    ttl: 64,
    id: 4321,
    df: true,
    sport: 40000,
    dport: 5201,
    seq: 0x10000000,
    ack: 0x20000000,
    flags: 0x18,
    window: 502,
    tcpOptions: TIMESTAMPS,
    payload: randomBytes(rand, payload),
  });
  const partial = partialChecksum(LOCAL, REMOTE, 6, p.length - 20);
  p[36] = partial >> 8;
  p[37] = partial & 0xff;
  return p;
}

function groRun(): Uint8Array {
  const rand = mulberry32(0x0ff2);
  const run = new Uint8Array(RUN_SEGMENTS * MTU);
  for (let k = 0; k < RUN_SEGMENTS; k++) {
    run.set(
      buildTcpPacket({
        src: REMOTE,
        dst: LOCAL,
        ttl: 63,
        id: (7000 + k) & 0xffff,
        df: true,
        sport: 5201,
        dport: 40000,
        seq: (0x30000000 + k * MSS) >>> 0,
        ack: 0x40000000,
        flags: 0x10,
        window: 502,
        tcpOptions: TIMESTAMPS,
        payload: randomBytes(rand, MSS),
      }),
      k * MTU,
    );
  }
  return run;
}

/** The scenario does what it claims (every segment forwarded, the run coalesced whole), or the figures would mislead.
 * */
function expect(what: string, ok: boolean): void {
  if (!ok) throw new Error(`offload path bench: the ${what} scenario is not forwarded as built`);
}

/** Adds a task that times CALLS_PER_SAMPLE calls of `step`, reporting ns per segment. */
function addSegmentTask(bench: Bench, name: string, step: () => void, segmentsPerCall: number): void {
  bench.add(name, () => {
    const start = bench.now();
    for (let i = 0; i < CALLS_PER_SAMPLE; i++) step();
    const elapsed = bench.now() - start;
    return { overriddenDuration: elapsed / (CALLS_PER_SAMPLE * segmentsPerCall), overriddenIterationCost: elapsed };
  });
}

/** Adds the offload-path tasks to a bench. All report ns per segment. */
export function offloadPathBenchTasks(bench: Bench): void {
  const routes = RoutingSnapshot.build(ROUTES);
  const sp = superPacket();
  const segmentsPerSuperPacket = Math.ceil((sp.length - 20 - TCP_HDR) / MSS);

  const txSlab = offloadSlab();
  const tun = new SuperPacketTun(txSlab, sp);
  const txCounters = newCounters();
  const tx = new Forwarder(txSlab, tun, idleUdp, CONFIG, txCounters);
  tx.setRoutes(routes);
  tx.tunToUdp();
  expect(
    'flannel0->UDP',
    txCounters[C.tunTsoSegments] === READ_SUPER_PACKETS * segmentsPerSuperPacket &&
      txCounters[C.udpSentPackets] === txCounters[C.tunTsoSegments],
  );
  addSegmentTask(
    bench,
    `offload path: flannel0->UDP, ${READ_SUPER_PACKETS} TSO super-packets ` +
      `per read, ${segmentsPerSuperPacket} segments each (ns/segment)`,
    () => {
      sink += tx.tunToUdp();
    },
    READ_SUPER_PACKETS * segmentsPerSuperPacket,
  );
  addSegmentTask(
    bench,
    'offload path: flannel0->UDP replay alone (ns/segment)',
    () => {
      sink += tun.read(txSlab.txFirst, READ_SUPER_PACKETS);
    },
    READ_SUPER_PACKETS * segmentsPerSuperPacket,
  );

  const rxSlab = offloadSlab();
  const udp = new GroRunUdp(rxSlab, groRun());
  const counters = newCounters();
  const rx = new Forwarder(rxSlab, idleTun, udp, CONFIG, counters);
  rx.setRoutes(routes);
  rx.udpToTun();
  expect('UDP->flannel0', counters[C.tunGroWrites] === 1 && counters[C.tunGroPackets] === RUN_SEGMENTS);
  addSegmentTask(
    bench,
    `offload path: UDP->flannel0, UDP GRO runs of ${RUN_SEGMENTS} TCP segments, coalesced (ns/segment)`,
    () => {
      sink += rx.udpToTun();
    },
    RUN_SEGMENTS,
  );
  addSegmentTask(
    bench,
    'offload path: UDP->flannel0 replay alone (ns/segment)',
    () => {
      sink += udp.recv(rxSlab.rxFirst, 1);
    },
    RUN_SEGMENTS,
  );
}

if (isMain(import.meta.url)) {
  runStandalone(offloadPathBenchTasks).catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  });
}

// Reading the sink keeps every measured result observable, so no work is optimized away.
if (sink === -1) process.stdout.write('\n');
