/**
 * Runs inside a namespace for test/integration/shim-udp.test.ts (`ip netns exec NS node this.js`):
 * drives the real shim's udpSend/udpRecv on two loopback sockets, with UDP GSO on or off, and
 * prints what the receiver got as JSON. A plain socket is the receiver, as a flanneld peer is;
 * in "gso-gro" mode the receiver has UDP GRO on and splits coalesced runs itself; in "gso-mtu"
 * the route's MTU is below the datagrams, so every GSO message is refused and sent one by one. Some datagrams
 * are sent in two parts (a header cell, then a payload elsewhere in the slab), as TSO segments are.
 */
import { execFileSync } from 'node:child_process';
import { PacketSlab, SUPER_SLOT_SIZE } from '../../src/datapath/slab.js';
import { createRing } from '../../src/datapath/native-io.js';
import { shim } from '../../src/native/shim.js';

const LOOPBACK = 0x7f000001;

/** Datagrams 0..TWO_PART-1 are sent as a 52-byte header cell plus the rest from a tx slot. */
const TWO_PART = 10;
const HEADER = 52;

function main(mode: string): void {
  const gso = mode !== 'plain',
    gro = mode === 'gso-gro';
  // "gso-mtu": the route to the receivers has an MTU (600, locked) below every datagram: the
  // kernel refuses each GSO message (EMSGSIZE), and the shim sends its datagrams one by one.
  const lowMtu = mode === 'gso-mtu';
  const localRoute = (mtu: string[]) =>
    execFileSync('ip', ['route', 'replace', 'local', '127.0.0.1', 'dev', 'lo', 'table', 'local', ...mtu]);
  if (lowMtu) localRoute(['mtu', 'lock', '600']);
  try {
    run(gso, gro);
  } finally {
    if (lowMtu) localRoute([]);
  }
}

function run(gso: boolean, gro: boolean): void {
  const slab = new PacketSlab({ slotSize: 2048, batch: 64, receiveSlotSize: gro ? SUPER_SLOT_SIZE : 2048 });
  const ring = createRing(slab);
  const tx = shim.udpOpen(LOOPBACK, 0, 1 << 20, 1 << 20);
  const rxA = shim.udpOpen(LOOPBACK, 0, 1 << 20, 1 << 20);
  const rxB = shim.udpOpen(LOOPBACK, 0, 1 << 20, 1 << 20);
  if (tx < 0 || rxA < 0 || rxB < 0) throw new Error('udpOpen failed');
  const probe = shim.udpProbeGso(tx);
  const gsoInForce = gso && probe === 0 ? shim.ringSetGso(ring, 64) : 0;
  const groEnabled = gro ? [shim.udpEnableGro(ring, rxA), shim.udpEnableGro(ring, rxB)] : [];
  const portA = shim.udpLocalPort(rxA),
    portB = shim.udpLocalPort(rxB);
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
    let slot = i;
    if (i < TWO_PART) {
      // The header in a cell of its own; the payload stays where it is, sent as the ext part.
      slot = slab.cellFirst + i;
      slab.bytes.copyWithin(slab.offsetOf(slot), off, off + HEADER);
      slab.bytes.fill(0xee, off, off + HEADER); // the tx slot's header bytes must not be sent
      slab.lens[slot] = HEADER;
      slab.extOffs[slot] = off + HEADER;
      slab.extLens[slot] = d.len - HEADER;
    } else {
      slab.lens[slot] = d.len;
    }
    slab.addrs[slot] = LOOPBACK;
    slab.ports[slot] = d.port;
    list[i] = slot;
  });
  const sent = shim.udpSend(ring, tx, list, plan.length);
  const received: { port: number; len: number; index: number; intact: boolean }[] = [];
  let runs = 0;
  for (const [fd, port] of [
    [rxA, portA],
    [rxB, portB],
  ] as const) {
    const n = shim.udpRecv(ring, fd, slab.rxFirst, slab.batch);
    // Each receive, split into its datagrams if it is a coalesced run.
    const datagrams: [off: number, len: number][] = [];
    for (let k = 0; k < n; k++) {
      const slot = slab.rxFirst + k,
        seg = slab.segSizes[slot]!,
        total = slab.lens[slot]!;
      if (seg > 0) runs++;
      for (let at = 0; at < total; at += seg || total)
        datagrams.push([slab.offsetOf(slot) + at, Math.min(seg || total, total - at)]);
    }
    for (const [off, len] of datagrams) {
      // Which planned datagram is this? Its first byte is (index * 7) & 0xff.
      const index = plan.findIndex(
        (d, i) =>
          d.port === port &&
          d.len === len &&
          ((i * 7) & 0xff) === slab.bytes[off] &&
          !received.some((r) => r.index === i),
      );
      let intact = index >= 0;
      for (let j = 0; intact && j < len; j++) intact = slab.bytes[off + j] === ((index * 7 + j) & 0xff);
      received.push({ port, len, index, intact });
    }
  }
  process.stdout.write(
    JSON.stringify({
      probe,
      gsoInForce,
      sent,
      planned: plan.length,
      received,
      gsoAfter: shim.ringGso(ring),
      groEnabled,
      runs,
    }) + '\n',
  );
}

main(process.argv[2] ?? 'plain');
