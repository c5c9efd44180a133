/**
 * Runs inside a namespace for test/integration/shim-udp.test.ts (`ip netns exec NS node this.js`):
 * drives the real shim's udpSend/udpRecv on two loopback sockets, with UDP GSO on or off, and
 * prints what the receiver got as JSON. A plain socket is the receiver, as a flanneld peer is.
 */
import { PacketSlab } from '../../src/datapath/slab.js';
import { createRing } from '../../src/datapath/native-io.js';
import { shim } from '../../src/native/shim.js';

const LOOPBACK = 0x7f000001;

function main(gso: boolean): void {
  const slab = new PacketSlab({ slotSize: 2048, batch: 64 });
  const ring = createRing(slab);
  const tx = shim.udpOpen(LOOPBACK, 0, 1 << 20, 1 << 20);
  const rxA = shim.udpOpen(LOOPBACK, 0, 1 << 20, 1 << 20);
  const rxB = shim.udpOpen(LOOPBACK, 0, 1 << 20, 1 << 20);
  if (tx < 0 || rxA < 0 || rxB < 0) throw new Error('udpOpen failed');
  const probe = shim.udpProbeGso(tx);
  const gsoInForce = gso && probe === 0 ? shim.ringSetGso(ring, 64) : 0;
  const portA = shim.udpLocalPort(rxA), portB = shim.udpLocalPort(rxB);
  // A run that GSO groups (10 x 1000 bytes, then a shorter 300 closing it), a datagram to
  // another peer, then another run to the first peer: every datagram numbered in its bytes.
  const plan: { port: number; len: number }[] = [
    ...Array.from({ length: 10 }, () => ({ port: portA, len: 1000 })),
    { port: portA, len: 300 },
    { port: portB, len: 1000 },
    ...Array.from({ length: 5 }, () => ({ port: portA, len: 1000 })),
    { port: portA, len: 1200 },
  ];
  const list = new Uint16Array(plan.length);
  plan.forEach((d, i) => {
    const off = slab.offsetOf(i);
    for (let j = 0; j < d.len; j++) slab.bytes[off + j] = (i * 7 + j) & 0xff;
    slab.lens[i] = d.len;
    slab.addrs[i] = LOOPBACK;
    slab.ports[i] = d.port;
    list[i] = i;
  });
  const sent = shim.udpSend(ring, tx, list, plan.length);
  const received: { port: number; len: number; index: number; intact: boolean }[] = [];
  for (const [fd, port] of [[rxA, portA], [rxB, portB]] as const) {
    const n = shim.udpRecv(ring, fd, slab.rxFirst, slab.batch);
    for (let k = 0; k < n; k++) {
      const slot = slab.rxFirst + k, off = slab.offsetOf(slot), len = slab.lens[slot]!;
      // Which planned datagram is this? Its first byte is (index * 7) & 0xff.
      const index = plan.findIndex((d, i) => d.port === port && d.len === len && ((i * 7) & 0xff) === slab.bytes[off] && !received.some((r) => r.index === i));
      let intact = index >= 0;
      for (let j = 0; intact && j < len; j++) intact = slab.bytes[off + j] === ((index * 7 + j) & 0xff);
      received.push({ port, len, index, intact });
    }
  }
  process.stdout.write(JSON.stringify({ probe, gsoInForce, sent, planned: plan.length, received, gsoAfter: shim.ringGso(ring) }) + '\n');
}

main(process.argv[2] === 'gso');
