// Runs the datapath's code before the first real packet, on the thread that will forward (V8
// compiles per thread): a throwaway Lane, built as the real one, forwards small batches both ways
// between stand-ins, so that the first pings through the agent run on compiled, optimized code
// instead of paying for lazy compilation and the interpreter (measured: the first 5 pings averaged
// 1.9 ms without it). The stand-ins: flannel0 is one end of an AF_UNIX datagram socket pair (a
// read takes one datagram, as from a TUN; with IFF_VNET_HDR each carries a zero virtio header), the
// UDP socket and the peer are sockets on 127.0.0.1. The same classes run as in the real lane, so
// the code V8 made is the code it will use. Best effort: without loopback (or on any failure) the
// agent starts cold.
import { shim, WAIT, type RingHandle } from '../native/shim.js';
import { RoutingSnapshot } from '../routing-table/snapshot.js';
import { C, newCounters } from './counters.js';
import type { ForwarderConfig } from './forwarder.js';
import { Lane, type LaneSetup } from './lane.js';
import { newLatency } from './latency.js';
import { createRing } from './native-io.js';
import { PacketSlab } from './slab.js';

/** Rounds of a few packets each way: enough for V8 to optimize the hot functions (interrupt budget 1 KiB). */
const WARM_UP_ROUNDS = 300;
const LOOPBACK = 0x7f000001;
const PACKET_LEN = 48;

/**
 * Forwards WARM_UP_ROUNDS small batches each way through a throwaway lane. Returns the packets it
 * forwarded (sent as datagrams plus written to the stand-in flannel0); 0 if it could not run.
 */
export function warmUp(setup: LaneSetup, config: ForwarderConfig): number {
  const fds: number[] = [];
  let lane: Lane | null = null;
  try {
    const pair = shim.datagramPair();
    if (typeof pair === 'number') return 0;
    fds.push(...pair);
    const laneUdp = shim.udpOpen(LOOPBACK, 0, 0, 0);
    if (laneUdp < 0) return 0;
    fds.push(laneUdp);
    const peerUdp = shim.udpOpen(LOOPBACK, 0, 0, 0);
    if (peerUdp < 0) return 0;
    fds.push(peerUdp);
    const wake = shim.eventfdOpen();
    if (wake < 0) return 0;
    fds.push(wake);

    const own = config.subnetPrefix >>> 0;
    const peer = (own & 0xff000000) === 0xc6000000 ? 0x0a000000 : 0xc6120000; // 198.18.0.0/24, or 10.0.0.0/24
    const counters = newCounters();
    lane = new Lane(
      setup,
      pair[0],
      laneUdp,
      { ...config, port: shim.udpLocalPort(peerUdp), tunGro: false },
      counters,
      'both',
      newLatency(),
    );
    lane.setRoutes(RoutingSnapshot.build([{ prefix: peer, prefixLen: 24, publicIp: LOOPBACK }]));

    // The outside world: writes what flannel0 would hand out, sends what the peer would.
    const feed = new PacketSlab({ slotSize: 2048, batch: 8 });
    const ring = createRing(feed);
    if (setup.tunVnet) shim.ringSetTunVnet(ring, true);
    const list = Uint16Array.of(0, 1, 2, 3);
    const lanePort = shim.udpLocalPort(laneUdp);
    const waiting = lane.startWaiting(wake) === 0;
    for (let round = 0; round < WARM_UP_ROUNDS; round++) {
      const k = 1 + (round % 4);
      for (let i = 0; i < k; i++) writePacket(feed, i, own + 2, peer + 2, round);
      shim.tunWrite(ring, pair[1], list, k, null);
      for (let i = 0; i < k; i++) {
        writePacket(feed, i, peer + 2, own + 2, round);
        feed.addrs[i] = LOOPBACK;
        feed.ports[i] = lanePort;
      }
      shim.udpSend(ring, peerUdp, list, k);
      // Both ways the lane forwards: through the wait in io_uring every other round, else by draining.
      if (waiting && round % 2 === 0) {
        for (let waits = 0; waits < 4 && (lane.waitOnce(0) & (WAIT.tun | WAIT.udp)) !== 0; waits++);
      } else {
        lane.stop(2);
        if (waiting) lane.startWaiting(wake);
      }
      drain(ring, feed, pair[1], peerUdp);
    }
    return counters[C.udpSentPackets] + counters[C.tunWritePackets];
  } catch {
    return 0;
  } finally {
    lane?.close();
    for (const fd of fds) shim.closeFd(fd);
  }
}

/** A UDP packet src -> dst (PACKET_LEN bytes, a valid header checksum) in slot of the feeder. */
function writePacket(slab: PacketSlab, slot: number, src: number, dst: number, id: number): void {
  const b = slab.bytes,
    o = slab.slotOffsets[slot];
  b.fill(0, o, o + PACKET_LEN);
  b[o] = 0x45;
  b[o + 3] = PACKET_LEN;
  b[o + 4] = (id >> 8) & 0xff;
  b[o + 5] = id & 0xff;
  b[o + 8] = 64;
  b[o + 9] = 17;
  for (let i = 0; i < 4; i++) {
    b[o + 12 + i] = (src >>> (24 - 8 * i)) & 0xff;
    b[o + 16 + i] = (dst >>> (24 - 8 * i)) & 0xff;
  }
  b[o + 21] = 53; // UDP ports and length
  b[o + 23] = 53;
  b[o + 25] = PACKET_LEN - 20;
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += (b[o + i] << 8) | b[o + i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const csum = ~sum & 0xffff;
  b[o + 10] = csum >> 8;
  b[o + 11] = csum & 0xff;
  slab.lens[slot] = PACKET_LEN;
}

/** Takes what the lane forwarded off the stand-ins, so their buffers never fill. */
function drain(ring: RingHandle, slab: PacketSlab, tunEnd: number, peerUdp: number): void {
  while (shim.tunRead(ring, tunEnd, 0, slab.batch) === slab.batch);
  while (shim.udpRecv(ring, peerUdp, 0, slab.batch) === slab.batch);
}
