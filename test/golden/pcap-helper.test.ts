// The classic-pcap reader/writer and the frame decoder the golden tests rely on.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';
import { buildIpv4Udp } from '../helpers/packets.js';
import { GOLDEN_DIR } from '../helpers/golden-dir.js';
import {
  LINKTYPE_ETHERNET,
  LINKTYPE_RAW,
  PcapFormatError,
  compareTimestamps,
  readPcap,
  stripEthernetIpv4Udp,
  stripIpv4Udp,
  writePcap,
} from '../helpers/pcap.js';

const samples = [
  {
    tsSec: 1_795_367_346,
    tsUsec: 395_419,
    data: Buffer.from([0x45, 0, 0, 20, 1, 2, 3, 4, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]),
  },
  { tsSec: 1_795_367_347, tsUsec: 0, data: Buffer.alloc(0) },
  { tsSec: 0, tsUsec: 999_999, data: Buffer.from('a longer packet body, 33 bytes..!') },
];

/** A big-endian file written by hand, field by field, independent of writePcap. */
function bigEndianPcap(magic: number, records: { sec: number; frac: number; data: Buffer }[]): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(24);
  head.writeUInt32BE(magic, 0);
  head.writeUInt16BE(2, 4);
  head.writeUInt16BE(4, 6);
  head.writeUInt32BE(65535, 16);
  head.writeUInt32BE(LINKTYPE_RAW, 20);
  parts.push(head);
  for (const r of records) {
    const h = Buffer.alloc(16);
    h.writeUInt32BE(r.sec, 0);
    h.writeUInt32BE(r.frac, 4);
    h.writeUInt32BE(r.data.length, 8);
    h.writeUInt32BE(r.data.length + 100, 12); // orig_len larger: a snaplen cut
    parts.push(h, r.data);
  }
  return Buffer.concat(parts);
}

describe('pcap reader and writer', () => {
  test('round trip: what writePcap writes, readPcap reads back', () => {
    const file = writePcap(LINKTYPE_ETHERNET, samples);
    assert.equal(file.readUInt32LE(0), 0xa1b2c3d4, 'little-endian microsecond magic');
    const back = readPcap(file);
    assert.equal(back.linkType, LINKTYPE_ETHERNET);
    assert.equal(back.littleEndian, true);
    assert.equal(back.nanosecond, false);
    assert.deepEqual(
      back.packets.map((p) => ({ tsSec: p.tsSec, tsUsec: p.tsUsec, data: p.data })),
      samples,
    );
    for (const p of back.packets) {
      assert.equal(p.origLen, p.data.length);
      assert.equal(p.tsNsec, p.tsUsec * 1000);
    }
  });

  test('big-endian microsecond file', () => {
    const data = Buffer.from([1, 2, 3, 4, 5]);
    const pcap = readPcap(bigEndianPcap(0xa1b2c3d4, [{ sec: 7, frac: 123_456, data }]));
    assert.equal(pcap.littleEndian, false);
    assert.equal(pcap.linkType, LINKTYPE_RAW);
    assert.equal(pcap.snaplen, 65535);
    assert.deepEqual(pcap.packets, [{ tsSec: 7, tsUsec: 123_456, tsNsec: 123_456_000, data, origLen: 105 }]);
  });

  test('nanosecond magic, both byte orders', () => {
    const data = Buffer.from([9, 8, 7]);
    const be = readPcap(bigEndianPcap(0xa1b23c4d, [{ sec: 3, frac: 123_456_789, data }]));
    assert.equal(be.nanosecond, true);
    assert.deepEqual(be.packets[0], { tsSec: 3, tsUsec: 123_456, tsNsec: 123_456_789, data, origLen: 103 });

    const le = writePcap(LINKTYPE_RAW, [{ tsSec: 3, tsUsec: 5, data }]);
    le.writeUInt32LE(0xa1b23c4d, 0);
    le.writeUInt32LE(123_456_789, 24 + 4);
    const p = readPcap(le);
    assert.equal(p.littleEndian, true);
    assert.equal(p.nanosecond, true);
    assert.equal(p.packets[0]!.tsNsec, 123_456_789);
    assert.equal(p.packets[0]!.tsUsec, 123_456);
  });

  test('a truncated file is a clear error naming where', () => {
    const file = writePcap(LINKTYPE_RAW, samples);
    assert.throws(
      () => readPcap(file.subarray(0, 10)),
      (e: unknown) => e instanceof PcapFormatError && /global header/.test(e.message),
    );
    // Cut inside the first record's data (24 header + 16 record header + 5 of 20 bytes).
    assert.throws(
      () => readPcap(file.subarray(0, 24 + 16 + 5)),
      (e: unknown) => e instanceof PcapFormatError && /record #0 .*declares 20 bytes of data, 5 left/.test(e.message),
    );
    // Cut inside the second record's header.
    assert.throws(
      () => readPcap(file.subarray(0, 24 + 16 + 20 + 7)),
      (e: unknown) => e instanceof PcapFormatError && /record #1 header/.test(e.message),
    );
    // A file that ends exactly after a record is fine.
    assert.equal(readPcap(file.subarray(0, 24 + 16 + 20)).packets.length, 1);
  });

  test('not a pcap file: pcapng and garbage are refused', () => {
    const pcapng = Buffer.alloc(28);
    pcapng.writeUInt32LE(0x0a0d0d0a, 0);
    assert.throws(
      () => readPcap(pcapng),
      (e: unknown) => e instanceof PcapFormatError && /magic 0x0a0d0d0a/.test(e.message),
    );
    assert.throws(() => readPcap(Buffer.alloc(24)), PcapFormatError);
  });

  test('timestamps order across seconds and fractions', () => {
    const [a, b, c] = readPcap(writePcap(LINKTYPE_RAW, samples)).packets;
    assert.ok(compareTimestamps(a!, b!) < 0);
    assert.ok(compareTimestamps(c!, a!) < 0);
    assert.equal(compareTimestamps(a!, a!), 0);
  });

  test("flannel's captures read, and rewrite to identical bytes", () => {
    const raw = readFileSync(join(GOLDEN_DIR, 'h1-tun-read.pcap'));
    const pcap = readPcap(raw);
    assert.equal(pcap.linkType, LINKTYPE_RAW);
    assert.equal(pcap.packets.length, 13);
    assert.deepEqual(writePcap(pcap.linkType, pcap.packets, pcap.snaplen), raw);
    const frames = readPcap(readFileSync(join(GOLDEN_DIR, 'h1-udp-sent.pcap')));
    assert.equal(frames.linkType, LINKTYPE_ETHERNET);
    const first = stripEthernetIpv4Udp(frames.packets[0]!.data);
    assert.equal(first.srcIp, parseIPv4('192.0.2.1'));
    assert.equal(first.dstIp, parseIPv4('192.0.2.2'));
    assert.equal(first.dstPort, 8285);
    assert.equal(first.payload.length, 84);
  });
});

describe('underlay frame decoding', () => {
  const inner = Buffer.from('inner packet bytes');
  const udpPacket = buildIpv4Udp({ src: '192.0.2.1', dst: '192.0.2.2', srcPort: 8285, dstPort: 8286, data: inner });
  const ethernet = (etherTypes: number[], body: Buffer, pad = 0): Buffer => {
    const head = Buffer.alloc(12 + 2 * etherTypes.length + 2 * (etherTypes.length - 1));
    let off = 12;
    for (const [i, t] of etherTypes.entries()) {
      head.writeUInt16BE(t, off);
      off += i < etherTypes.length - 1 ? 4 : 2;
    }
    return Buffer.concat([head, body, Buffer.alloc(pad)]);
  };

  test('Ethernet + IPv4 + UDP: addresses, ports and payload', () => {
    const d = stripEthernetIpv4Udp(ethernet([0x0800], udpPacket, 10));
    assert.deepEqual(d, {
      srcIp: parseIPv4('192.0.2.1'),
      dstIp: parseIPv4('192.0.2.2'),
      srcPort: 8285,
      dstPort: 8286,
      payload: inner,
    });
  });

  test('an 802.1Q tag is skipped', () => {
    assert.deepEqual(stripEthernetIpv4Udp(ethernet([0x8100, 0x0800], udpPacket)).payload, inner);
  });

  test('non-IPv4, non-UDP, fragments and truncation are refused', () => {
    assert.throws(() => stripEthernetIpv4Udp(ethernet([0x86dd], udpPacket)), /ethertype 0x86dd/);
    assert.throws(() => stripEthernetIpv4Udp(Buffer.alloc(10)), /shorter than its header/);
    const tcp = Buffer.from(udpPacket);
    tcp[9] = 6;
    assert.throws(() => stripIpv4Udp(tcp), /protocol 6 is not UDP/);
    const frag = Buffer.from(udpPacket);
    frag[6] = 0x20; // MF
    assert.throws(() => stripIpv4Udp(frag), /fragment/);
    assert.throws(() => stripIpv4Udp(udpPacket.subarray(0, udpPacket.length - 1)), /bad IPv4 header/);
  });
});
