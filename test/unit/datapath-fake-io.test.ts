// The test fakes of the datapath's I/O edges behave like the native shim where tests rely on it.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PacketSlab } from '../../src/datapath/slab.js';
import { EIO, ENOBUFS, FakeTun, FakeUdp, ReplayTun, ReplayUdp, mixedTraffic } from '../helpers/fake-io.js';

const slab = () => new PacketSlab({ slotSize: 128, batch: 4 });

describe('FakeTun / FakeUdp', () => {
  test('read copies queued packets into consecutive slots and sets lens', () => {
    const s = slab();
    const tun = new FakeTun(s);
    tun.push(Buffer.from([1, 2, 3]), Buffer.from([4, 5]));
    assert.equal(tun.read(1, 4), 2);
    assert.deepEqual([...s.bytes.subarray(128, 131)], [1, 2, 3]);
    assert.deepEqual([...s.bytes.subarray(256, 258)], [4, 5]);
    assert.deepEqual([s.lens[1], s.lens[2]], [3, 2]);
    assert.equal(tun.read(0, 4), 0);
  });

  test('a packet larger than a slot cannot be queued on flannel0', () => {
    assert.throws(() => new FakeTun(slab()).push(new Uint8Array(129)), RangeError);
  });

  test('recv sets sender and port; an oversize datagram is cut with lens = real size (MSG_TRUNC)', () => {
    const s = slab();
    const udp = new FakeUdp(s);
    udp.push({ data: new Uint8Array(200).fill(9), addr: 0xc0000202, port: 8285 });
    assert.equal(udp.recv(s.rxFirst, 4), 1);
    assert.equal(s.lens[s.rxFirst], 200);
    assert.equal(s.addrs[s.rxFirst], 0xc0000202);
    assert.equal(s.ports[s.rxFirst], 8285);
    assert.equal(s.bytes[s.offsetOf(s.rxFirst) + 127], 9);
    assert.equal(s.bytes[s.offsetOf(s.rxFirst) + 128], 0, 'the next slot is untouched');
  });

  test('maxPerCall limits a read; injected call errors return -errno once', () => {
    const s = slab();
    const tun = new FakeTun(s, { maxPerCall: 1 });
    tun.push(Buffer.from([1]), Buffer.from([2]));
    tun.failNextRead(EIO);
    assert.equal(tun.read(0, 4), -EIO);
    assert.equal(tun.read(0, 4), 1);
    assert.equal(tun.read(0, 4), 1);
    const udp = new FakeUdp(s);
    udp.failNextRecv(EIO);
    assert.equal(udp.recv(s.rxFirst, 4), -EIO);
    assert.equal(udp.recv(s.rxFirst, 4), 0);
  });

  test('a failed send marks its slot negative, skips it and returns fewer', () => {
    const s = slab();
    const udp = new FakeUdp(s);
    for (const slot of [0, 1, 2]) {
      s.bytes[s.offsetOf(slot)] = slot + 10;
      s.lens[slot] = 1;
      s.addrs[slot] = slot;
      s.ports[slot] = 8285;
    }
    udp.failNextSends(ENOBUFS, 1);
    assert.equal(udp.send(Uint16Array.from([2, 0, 1]), 3), 2);
    assert.equal(s.lens[2], -ENOBUFS);
    assert.deepEqual(
      udp.sent.map((d) => [d.data[0], d.addr]),
      [
        [10, 0],
        [11, 1],
      ],
    );
  });

  test('written packets are copies: later slab changes do not alter the record', () => {
    const s = slab();
    const tun = new FakeTun(s);
    s.bytes[0] = 7;
    s.lens[0] = 1;
    tun.write(Uint16Array.of(0), 1);
    s.bytes[0] = 8;
    assert.equal(tun.written[0]![0], 7);
  });
});

describe('ReplayTun / ReplayUdp', () => {
  test('each read brings back the prepared TTL and checksum after the forwarder changed them', () => {
    const s = new PacketSlab({ slotSize: 2048, batch: 64 });
    const traffic = mixedTraffic(64);
    const tun = new ReplayTun(s, traffic.tunPackets);
    const udp = new ReplayUdp(s, traffic.udpDatagrams);
    assert.equal(tun.read(s.txFirst, 64), 64);
    assert.equal(udp.recv(s.rxFirst, 64), 64);
    const first = s.offsetOf(s.txFirst);
    const prepared = Buffer.from(s.bytes.subarray(first, first + 20));
    s.bytes[first + 8] = 1;
    s.bytes[first + 10] = 0xff;
    s.lens[s.txFirst] = -5;
    tun.read(s.txFirst, 64);
    assert.deepEqual(Buffer.from(s.bytes.subarray(first, first + 20)), prepared);
    assert.equal(s.lens[s.txFirst], traffic.tunPackets[0]!.length);
    s.addrs[s.rxFirst] = 0;
    udp.recv(s.rxFirst, 64);
    assert.equal(s.addrs[s.rxFirst], traffic.udpDatagrams[0]!.addr);
    assert.equal(tun.write(Uint16Array.of(0, 1), 2), 2);
    assert.equal(tun.packetsWritten, 2);
  });
});
