/**
 * Runs inside a namespace for test/integration/tun-uring.test.ts (`ip netns exec NS node this.js
 * MODE`): drives the real shim's tunRead/tunWrite on a TUN device, once through plain syscalls
 * and once through io_uring (ringEnableUring), and prints what each path read and delivered as
 * JSON. Modes:
 *  - "check": numbered UDP datagrams of varied sizes routed into the TUN are read by both paths
 *    (with and without IFF_VNET_HDR); numbered packets written by both paths reach a socket;
 *    EAGAIN (empty queue), EBADF and an invalid slot give the same answers on both paths.
 *  - "fallback": the io_uring fails under the ring; it falls back to syscalls for good.
 *  - "race": a worker thread keeps sending into the TUN while the io_uring path reads, so that
 *    packets arrive between the SQEs of a batch: what was read must still be in order.
 *  - "bench": ns per tunRead / tunWrite call (64 packets, and an empty queue) on both paths.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readlinkSync } from 'node:fs';
import { Worker, isMainThread, workerData } from 'node:worker_threads';
import { createRing } from '../../src/datapath/native-io.js';
import { PacketSlab } from '../../src/datapath/slab.js';
import { shim, type RingHandle } from '../../src/native/shim.js';

const TUN_ADDR = 0x0a5a0001; // 10.90.0.1/24 on the TUN
const PEER = 0x0a5a0002; // 10.90.0.2: routed into the TUN
const PEER_PORT = 9999;
const BATCH = 64;
const EAGAIN = 11,
  EBADF = 9,
  EINVAL = 22;

interface Tun {
  fd: number;
  name: string;
}

function openTun(vnet: boolean): Tun {
  // No IPv6: its router solicitations and MLD reports would be read among the numbered packets.
  execFileSync('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  const fd = shim.openTun('fturing%d', vnet);
  if (fd < 0) throw new Error(`openTun: ${fd}`);
  const name = shim.tunName(fd);
  execFileSync('ip', ['link', 'set', name, 'up', 'txqueuelen', '10000']);
  execFileSync('ip', ['addr', 'add', '10.90.0.1/24', 'dev', name]);
  return { fd, name };
}

function newRing(uring: boolean, vnet: boolean): { slab: PacketSlab; ring: RingHandle } {
  const slab = new PacketSlab({ slotSize: 2048, batch: BATCH });
  const ring = createRing(slab);
  if (vnet) shim.ringSetTunVnet(ring, true);
  if (uring) {
    const rc = shim.ringEnableUring(ring, BATCH);
    if (rc !== 0) throw new Error(`ringEnableUring: ${rc}`);
  }
  return { slab, ring };
}

/** Sends datagrams seq first..first+count-1 to PEER (so into the TUN), payload length by seq. */
function sendNumbered(udpFd: number, slab: PacketSlab, ring: RingHandle, first: number, count: number): number {
  const list = new Uint16Array(BATCH);
  let sent = 0;
  for (let done = 0; done < count;) {
    const k = Math.min(BATCH, count - done);
    for (let j = 0; j < k; j++) {
      const seq = first + done + j,
        slot = slab.txFirst + j,
        off = slab.offsetOf(slot);
      const len = payloadLen(seq);
      new DataView(slab.bytes.buffer, slab.bytes.byteOffset + off).setUint32(0, seq);
      for (let b = 4; b < len; b++) slab.bytes[off + b] = (seq + b) & 0xff;
      slab.lens[slot] = len;
      slab.addrs[slot] = PEER;
      slab.ports[slot] = PEER_PORT;
      slab.extLens[slot] = 0;
      list[j] = slot;
    }
    sent += shim.udpSend(ring, udpFd, list, k);
    done += k;
  }
  return sent;
}

function payloadLen(seq: number): number {
  return 4 + ((seq * 37) % 1300);
}

/** One read result: the seq of each packet read (from its UDP payload), or -1 if its bytes are not intact. */
function decodeRead(slab: PacketSlab, n: number, vnet: boolean): { seqs: number[]; vnetZero: boolean } {
  const seqs: number[] = [];
  let vnetZero = true;
  for (let k = 0; k < n; k++) {
    const slot = slab.txFirst + k,
      off = slab.offsetOf(slot),
      len = slab.lens[slot]!;
    const ihl = (slab.bytes[off]! & 0x0f) * 4;
    const p = off + ihl + 8;
    const seq = new DataView(slab.bytes.buffer, slab.bytes.byteOffset + p).getUint32(0);
    let intact = len === ihl + 8 + payloadLen(seq);
    for (let b = 4; intact && b < len - ihl - 8; b++) intact = slab.bytes[p + b] === ((seq + b) & 0xff);
    seqs.push(intact ? seq : -1);
    if (vnet) for (let b = 0; b < 10; b++) if (slab.vnetHdrs[slot * 12 + b] !== 0) vnetZero = false;
  }
  return { seqs, vnetZero };
}

/** Reads everything queued with the given ring: the seqs in order and each call's count. */
function readAll(
  tun: Tun,
  slab: PacketSlab,
  ring: RingHandle,
  vnet: boolean,
): { seqs: number[]; counts: number[]; vnetZero: boolean } {
  const seqs: number[] = [],
    counts: number[] = [];
  let vnetZero = true;
  for (;;) {
    const n = shim.tunRead(ring, tun.fd, slab.txFirst, BATCH);
    counts.push(n);
    if (n <= 0) break;
    const d = decodeRead(slab, n, vnet);
    seqs.push(...d.seqs);
    vnetZero &&= d.vnetZero;
  }
  return { seqs, counts, vnetZero };
}

/** An IPv4/UDP packet PEER:PEER_PORT -> TUN_ADDR:port with payload seq, written into slot. */
function buildPacket(slab: PacketSlab, slot: number, port: number, seq: number): void {
  const off = slab.offsetOf(slot),
    plen = payloadLen(seq),
    total = 28 + plen;
  const v = new DataView(slab.bytes.buffer, slab.bytes.byteOffset + off);
  v.setUint8(0, 0x45);
  v.setUint8(1, 0);
  v.setUint16(2, total);
  v.setUint16(4, seq & 0xffff);
  v.setUint16(6, 0x4000);
  v.setUint8(8, 64);
  v.setUint8(9, 17);
  v.setUint16(10, 0);
  v.setUint32(12, PEER);
  v.setUint32(16, TUN_ADDR);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += v.getUint16(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  v.setUint16(10, ~sum & 0xffff);
  v.setUint16(20, 40000);
  v.setUint16(22, port);
  v.setUint16(24, 8 + plen);
  v.setUint16(26, 0); // no UDP checksum
  v.setUint32(28, seq);
  for (let b = 4; b < plen; b++) slab.bytes[off + 28 + b] = (seq + b) & 0xff;
  slab.lens[slot] = total;
}

/** Writes packets seq first..first+count-1 (slot `bad`, if given, with an invalid length). */
function writeNumbered(
  tun: Tun,
  slab: PacketSlab,
  ring: RingHandle,
  port: number,
  first: number,
  count: number,
  bad = -1,
): { written: number; lens: number[] } {
  const list = new Uint16Array(count);
  for (let j = 0; j < count; j++) {
    const slot = slab.rxFirst + j;
    buildPacket(slab, slot, port, first + j);
    if (j === bad) slab.lens[slot] = -1;
    list[j] = slot;
  }
  const written = shim.tunWrite(ring, tun.fd, list, count, null);
  return { written, lens: Array.from(list, (s) => slab.lens[s]!) };
}

/** Drains the receiving socket: the seqs delivered, in order. */
function receiveAll(fd: number, slab: PacketSlab, ring: RingHandle): number[] {
  const seqs: number[] = [];
  for (let idle = 0; idle < 50;) {
    const n = shim.udpRecv(ring, fd, slab.rxFirst, BATCH);
    if (n <= 0) {
      idle++;
      execFileSync('sleep', ['0.002']);
      continue;
    }
    idle = 0;
    for (let k = 0; k < n; k++) {
      const slot = slab.rxFirst + k,
        off = slab.offsetOf(slot);
      const seq = new DataView(slab.bytes.buffer, slab.bytes.byteOffset + off).getUint32(0);
      let intact = slab.lens[slot] === payloadLen(seq);
      for (let b = 4; intact && b < slab.lens[slot]!; b++) intact = slab.bytes[off + b] === ((seq + b) & 0xff);
      seqs.push(intact ? seq : -1);
    }
  }
  return seqs;
}

function check(): void {
  const out: Record<string, unknown> = { eagain: EAGAIN, ebadf: EBADF, einval: EINVAL };
  for (const vnet of [true, false]) {
    const tun = openTun(vnet);
    const sender = newRing(false, false);
    const udpFd = shim.udpOpen(TUN_ADDR, 0, 8 << 20, 8 << 20);
    const rxFd = shim.udpOpen(TUN_ADDR, 0, 8 << 20, 8 << 20);
    const rxPort = shim.udpLocalPort(rxFd);
    for (const uring of [false, true]) {
      const key = `${vnet ? 'vnet' : 'plain'}-${uring ? 'uring' : 'syscall'}`;
      const { slab, ring } = newRing(uring, vnet);
      const emptyFirst = shim.tunRead(ring, tun.fd, slab.txFirst, BATCH);
      // 300 datagrams: four full batches and a partial one; then 10 (a batch that drains early).
      const sent = sendNumbered(udpFd, sender.slab, sender.ring, 0, 300);
      const big = readAll(tun, slab, ring, vnet);
      sendNumbered(udpFd, sender.slab, sender.ring, 300, 10);
      const small = readAll(tun, slab, ring, vnet);
      const badFd = shim.tunRead(ring, 1_000_000, slab.txFirst, BATCH);
      // Writes: 100 packets in two calls, one of them with an invalid slot (its lens = -1).
      const w1 = writeNumbered(tun, slab, ring, rxPort, 0, BATCH, 5);
      const w2 = writeNumbered(tun, slab, ring, rxPort, BATCH, 36);
      const delivered = receiveAll(rxFd, slab, ring);
      const writeBadFd = shim.tunWrite(ring, 1_000_000, new Uint16Array([slab.rxFirst]), 1, null);
      out[key] = {
        uringInForce: shim.ringUring(ring),
        emptyFirst,
        sent,
        big,
        small,
        badFd,
        written: [w1.written, w2.written],
        badSlotLen: w1.lens[5],
        otherLens: w1.lens.filter((l, j) => j !== 5 && l < 0).length,
        delivered,
        writeBadFd,
        writeBadFdLen: slab.lens[slab.rxFirst],
        lastErrno: shim.lastErrno(ring),
      };
    }
    shim.closeFd(udpFd);
    shim.closeFd(rxFd);
    shim.closeFd(tun.fd);
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

/** The worker of "race": sends numbered datagrams into the TUN as fast as it can, for ms milliseconds. */
function raceSender(ms: number): void {
  const { slab, ring } = newRing(false, false);
  const udpFd = shim.udpOpen(TUN_ADDR, 0, 8 << 20, 8 << 20);
  let seq = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) seq += sendNumbered(udpFd, slab, ring, seq, 8);
}

/**
 * "fallback": the ring's io_uring fails (its fd is closed behind its back): the write that finds
 * out marks its packets lost and the ring drops to syscalls for good; later writes and reads work.
 * Run under MALLOC_PERTURB_ so that any use of the freed io_uring state crashes.
 */
/** The process's open io_uring fds. */
function ioUringFds(): string[] {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[io_uring]';
    } catch {
      return false;
    }
  });
}

function fallback(): void {
  const tun = openTun(true);
  const { slab, ring } = newRing(true, true);
  const rxFd = shim.udpOpen(TUN_ADDR, 0, 8 << 20, 8 << 20);
  const rxPort = shim.udpLocalPort(rxFd);
  const uringFds = ioUringFds();
  const before = shim.ringUring(ring);
  for (const fd of uringFds) shim.closeFd(Number(fd));
  const first = writeNumbered(tun, slab, ring, rxPort, 0, 10);
  const after = shim.ringUring(ring);
  const second = writeNumbered(tun, slab, ring, rxPort, 10, 10);
  const delivered = receiveAll(rxFd, slab, ring);
  const sender = newRing(false, false);
  const udpFd = shim.udpOpen(TUN_ADDR, 0, 8 << 20, 8 << 20);
  sendNumbered(udpFd, sender.slab, sender.ring, 100, 5);
  const read = readAll(tun, slab, ring, true);
  // ringDisableUring closes a ring's io_uring at once (Datapath.close), not at garbage collection.
  const other = newRing(true, true);
  const openBefore = ioUringFds().length;
  shim.ringDisableUring(other.ring);
  const disabled = { inForce: shim.ringUring(other.ring), closedFds: openBefore - ioUringFds().length };
  process.stdout.write(
    JSON.stringify({ uringFds: uringFds.length, before, after, first, second, delivered, read: read.seqs, disabled }) +
      '\n',
  );
}

async function race(): Promise<void> {
  const tun = openTun(true);
  const { slab, ring } = newRing(true, true);
  const worker = new Worker(new URL(import.meta.url), { workerData: { raceMs: 1500 } });
  const exited = new Promise<void>((resolve, reject) => {
    worker.on('exit', () => resolve());
    worker.on('error', reject);
  });
  let last = -1,
    reads = 0,
    packets = 0,
    outOfOrder = 0,
    broken = 0,
    partial = 0,
    done = false;
  void exited.then(() => {
    done = true;
  });
  const end = Date.now() + 1400;
  while (!done && Date.now() < end) {
    const n = shim.tunRead(ring, tun.fd, slab.txFirst, BATCH);
    if (n < 0) throw new Error(`tunRead: ${n}`);
    reads++;
    if (n > 0 && n < BATCH) partial++;
    for (const seq of decodeRead(slab, n, true).seqs) {
      if (seq < 0) broken++;
      else if (seq <= last) outOfOrder++;
      else last = seq;
      packets++;
    }
    if (n === 0) await new Promise((r) => setImmediate(r));
  }
  await exited;
  shim.closeFd(tun.fd);
  process.stdout.write(
    JSON.stringify({ reads, packets, partial, outOfOrder, broken, uringInForce: shim.ringUring(ring) }) + '\n',
  );
}

function bench(): void {
  const out: Record<string, number> = {};
  const tun = openTun(true);
  const sender = newRing(false, false);
  const udpFd = shim.udpOpen(TUN_ADDR, 0, 8 << 20, 8 << 20);
  const sinkFd = shim.udpOpen(TUN_ADDR, 0, 64 << 20, 8 << 20);
  const sinkPort = shim.udpLocalPort(sinkFd);
  const ROUNDS = 3000;
  for (let rep = 0; rep < 2; rep++) {
    for (const uring of [false, true]) {
      const tag = uring ? 'uring' : 'syscall';
      const { slab, ring } = newRing(uring, true);
      let readNs = 0n,
        emptyNs = 0n,
        writeNs = 0n,
        got = 0,
        wrote = 0;
      const list = new Uint16Array(BATCH);
      for (let r = 0; r < ROUNDS; r++) {
        sendNumbered(udpFd, sender.slab, sender.ring, r * BATCH, BATCH);
        let t = process.hrtime.bigint();
        got += shim.tunRead(ring, tun.fd, slab.txFirst, BATCH);
        readNs += process.hrtime.bigint() - t;
        t = process.hrtime.bigint();
        shim.tunRead(ring, tun.fd, slab.txFirst, BATCH);
        emptyNs += process.hrtime.bigint() - t;
        for (let j = 0; j < BATCH; j++) {
          buildPacket(slab, slab.rxFirst + j, sinkPort, 0);
          list[j] = slab.rxFirst + j;
        }
        t = process.hrtime.bigint();
        wrote += shim.tunWrite(ring, tun.fd, list, BATCH, null);
        writeNs += process.hrtime.bigint() - t;
        if (r % 8 === 7)
          while (shim.udpRecv(ring, sinkFd, slab.rxFirst, BATCH) > 0) {
            /* drain */
          }
      }
      out[`${tag}.read64.nsPerCall`] = Number(readNs) / ROUNDS;
      out[`${tag}.readEmpty.nsPerCall`] = Number(emptyNs) / ROUNDS;
      out[`${tag}.write64.nsPerCall`] = Number(writeNs) / ROUNDS;
      out[`${tag}.readPackets`] = got;
      out[`${tag}.writtenPackets`] = wrote;
    }
  }
  process.stdout.write(JSON.stringify(out, null, 1) + '\n');
}

if (!isMainThread) {
  raceSender((workerData as { raceMs: number }).raceMs);
} else {
  const mode = process.argv[2] ?? 'check';
  if (mode === 'check') check();
  else if (mode === 'fallback') fallback();
  else if (mode === 'race') await race();
  else bench();
}
