// The per-packet IPv4 rules of src/encap/ipv4.ts, checked against independent references and
// the test vectors measured on flannel's C proxy (docs/flannel-compat.md, "TTL and the checksum", "ICMP net
// unreachable").
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  decrementTtl,
  destinationOf,
  internetChecksum,
  isWellFormedIPv4,
  sourceOf,
  writeNetUnreachable,
} from '../../src/encap/ipv4.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';
import { buildIpv4, buildIpv4Udp, buildIpv6Like, internetChecksum as referenceChecksum } from '../helpers/packets.js';
import { mulberry32 as prng } from '../helpers/prng.js';

const hex = (b: Uint8Array): string =>
  Buffer.from(b)
    .toString('hex')
    .replace(/(..)(?!$)/g, '$1 ');

describe('isWellFormedIPv4', () => {
  const good = buildIpv4Udp({ src: '10.244.1.2', dst: '10.244.2.2', srcPort: 1, dstPort: 2, data: Buffer.alloc(12) });

  test('accepts a plain packet, also at an offset inside a larger buffer', () => {
    assert.equal(isWellFormedIPv4(good, 0, good.length), true);
    const big = new Uint8Array(100 + good.length);
    big.set(good, 100);
    assert.equal(isWellFormedIPv4(big, 100, good.length), true);
  });

  test('refuses short, wrong version, bad IHL and wrong total length', () => {
    assert.equal(isWellFormedIPv4(good, 0, 19), false, 'shorter than a header');
    assert.equal(isWellFormedIPv4(good, 0, 0), false, 'empty');
    const v6 = buildIpv6Like();
    assert.equal(isWellFormedIPv4(v6, 0, v6.length), false, 'IPv6');
    for (const vihl of [0x55, 0x05, 0x44, 0x40, 0x4f]) {
      const p = Buffer.from(good);
      p[0] = vihl;
      assert.equal(isWellFormedIPv4(p, 0, p.length), false, `version/IHL byte 0x${vihl.toString(16)}`);
    }
    const longer = Buffer.concat([good, Buffer.alloc(4)]);
    assert.equal(isWellFormedIPv4(longer, 0, longer.length), false, 'bytes beyond total length');
    assert.equal(isWellFormedIPv4(good, 0, good.length - 1), false, 'fewer bytes than total length');
  });

  test('an IHL that fits is fine, one beyond the bytes is not', () => {
    // IHL 6: 24-byte header with one NOP option word, and total length 24.
    const p = Buffer.alloc(24);
    p[0] = 0x46;
    p.writeUInt16BE(24, 2);
    assert.equal(isWellFormedIPv4(p, 0, 24), true);
    p[0] = 0x47; // 28-byte header in 24 bytes
    assert.equal(isWellFormedIPv4(p, 0, 24), false);
  });
});

describe('addresses', () => {
  test('sourceOf / destinationOf read uint32 host order, also above 2^31', () => {
    const p = buildIpv4({ src: '10.244.1.2', dst: '250.1.2.3' });
    assert.equal(sourceOf(p, 0), parseIPv4('10.244.1.2'));
    assert.equal(destinationOf(p, 0), parseIPv4('250.1.2.3'));
    assert.ok(destinationOf(p, 0) > 0);
  });
});

describe('decrementTtl', () => {
  /** RFC 1624 eqn. 3 with the real old and new TTL/protocol words: HC' = ~(~HC + ~m + m'). */
  function rfc1624(hc: number, oldWord: number, newWord: number): number {
    let sum = (~hc & 0xffff) + (~oldWord & 0xffff) + newWord;
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    return ~sum & 0xffff;
  }

  test('equals a full checksum recomputation on 200,000 random valid headers', () => {
    const rand = prng(1624);
    const h = new Uint8Array(60);
    for (let n = 0; n < 200_000; n++) {
      const ihl = 5 + (rand() % 11);
      for (let i = 0; i < ihl * 4; i++) h[i] = rand() & 0xff;
      h[0] = 0x40 | ihl;
      h[8] = 2 + (rand() % 254); // survives the decrement
      h[10] = 0;
      h[11] = 0;
      const check = referenceChecksum(h, 0, ihl * 4);
      h[10] = check >> 8;
      h[11] = check & 0xff;
      const ttl = h[8]!;
      assert.equal(decrementTtl(h, 0), true);
      assert.equal(h[8], ttl - 1);
      const patched = (h[10]! << 8) | h[11]!;
      h[10] = 0;
      h[11] = 0;
      const full = referenceChecksum(h, 0, ihl * 4);
      if (patched !== full)
        assert.fail(
          `header ${hex(h.subarray(0, ihl * 4))}: patched 0x${patched.toString(16)}, recomputed 0x${full.toString(16)}`,
        );
    }
  });

  test('equals RFC 1624 eqn. 3 for every one of the 65,536 checksum values', () => {
    const h = new Uint8Array(20);
    for (const [ttl, proto] of [
      [64, 17],
      [2, 1],
      [255, 6],
      [128, 0],
    ] as const) {
      for (let hc = 0; hc <= 0xffff; hc++) {
        h[8] = ttl;
        h[9] = proto;
        h[10] = hc >> 8;
        h[11] = hc & 0xff;
        decrementTtl(h, 0);
        const want = rfc1624(hc, (ttl << 8) | proto, ((ttl - 1) << 8) | proto);
        const got = (h[10]! << 8) | h[11]!;
        if (got !== want)
          assert.fail(
            `ttl ${ttl} checksum 0x${hc.toString(16)}: got 0x${got.toString(16)}, want 0x${want.toString(16)}`,
          );
      }
    }
  });

  test('checksum 0xFEFF becomes 0x0000 (not the naive 0xFFFF)', () => {
    const h = new Uint8Array(20);
    h[8] = 64;
    h[10] = 0xfe;
    h[11] = 0xff;
    assert.equal(decrementTtl(h, 0), true);
    assert.deepEqual([h[8], h[10], h[11]], [63, 0x00, 0x00]);
  });

  test('the spec measurement: TTL 0x40 with checksum 0x117c gives TTL 0x3f and 0x127c', () => {
    const h = new Uint8Array(20);
    h[8] = 0x40;
    h[10] = 0x11;
    h[11] = 0x7c;
    decrementTtl(h, 0);
    assert.deepEqual([h[8], h[10], h[11]], [0x3f, 0x12, 0x7c]);
  });

  test('TTL 1 and TTL 0 are refused and leave the packet untouched', () => {
    for (const ttl of [1, 0]) {
      const p = buildIpv4({ src: '10.0.0.1', dst: '10.0.0.2', ttl });
      const before = Buffer.from(p);
      assert.equal(decrementTtl(p, 0), false, `ttl ${ttl}`);
      assert.deepEqual(p, before);
    }
  });

  test('works at an offset and touches only TTL and checksum', () => {
    const p = buildIpv4Udp({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 5, dstPort: 6, data: Buffer.from('xyz') });
    const buf = new Uint8Array(64 + p.length).fill(0xee);
    buf.set(p, 64);
    assert.equal(decrementTtl(buf, 64), true);
    for (let i = 0; i < buf.length; i++) {
      if (i === 64 + 8 || i === 64 + 10 || i === 64 + 11) continue;
      assert.equal(buf[i], i < 64 ? 0xee : p[i - 64], `byte ${i}`);
    }
    assert.equal(referenceChecksum(buf, 64, 20), 0, 'the header still sums to zero');
  });
});

describe('internetChecksum', () => {
  test('matches the reference on random even and odd lengths', () => {
    const rand = prng(1071);
    const b = new Uint8Array(200);
    for (let n = 0; n < 2000; n++) {
      for (let i = 0; i < b.length; i++) b[i] = rand() & 0xff;
      const off = rand() % 50,
        len = rand() % 150;
      assert.equal(internetChecksum(b, off, len), referenceChecksum(b, off, len));
    }
  });
});

describe('writeNetUnreachable', () => {
  const TUN = parseIPv4('10.1.1.0');

  function build(offender: Uint8Array, fill = 0xaa): { len: number; out: Uint8Array } {
    const out = new Uint8Array(200).fill(fill);
    const len = writeNetUnreachable(offender, 0, offender.length, out, 32, TUN);
    return { len, out: out.subarray(32) };
  }

  test("the spec's measured test vector: UDP 10.1.1.5 -> 10.9.9.9 from flannel0 10.1.1.0", () => {
    const offender = buildIpv4Udp({
      src: '10.1.1.5',
      dst: '10.9.9.9',
      srcPort: 40000,
      dstPort: 53,
      data: Buffer.from('hello dns'),
    });
    const { len, out } = build(offender);
    assert.equal(len, 56);
    assert.equal(hex(out.subarray(0, 22)), '45 00 00 38 00 00 00 00 08 01 9c bf 0a 01 01 00 0a 01 01 05 03 00');
    // ICMP: checksum over header + data, unused word zero, data = offender's header + 8 bytes.
    assert.equal(referenceChecksum(out, 20, 36), 0, 'ICMP checksum');
    assert.equal(referenceChecksum(out, 0, 20), 0, 'IP header checksum');
    assert.deepEqual([...out.subarray(24, 28)], [0, 0, 0, 0]);
    assert.deepEqual(Buffer.from(out.subarray(28, 56)), offender.subarray(0, 28));
    assert.equal(out[56], 0xaa, 'nothing written past the ICMP packet');
  });

  test('quotes the offender as read: TTL and checksum before any decrement', () => {
    const offender = buildIpv4Udp({
      src: '10.1.1.5',
      dst: '10.9.9.9',
      ttl: 1,
      srcPort: 1,
      dstPort: 2,
      data: Buffer.alloc(20),
    });
    const { out } = build(offender);
    assert.equal(out[28 + 8], 1);
    assert.deepEqual(Buffer.from(out.subarray(28 + 10, 28 + 12)), offender.subarray(10, 12));
  });

  test('none for ICMP, for a non-first fragment and for a 60-byte header', () => {
    const icmp = buildIpv4({ src: '10.1.1.5', dst: '10.9.9.9', protocol: 1, payload: Buffer.alloc(16) });
    assert.equal(build(icmp).len, 0);
    assert.equal(build(icmp).out[0], 0xaa, 'nothing written');

    const frag = buildIpv4Udp({ src: '10.1.1.5', dst: '10.9.9.9', srcPort: 1, dstPort: 2, data: Buffer.alloc(16) });
    frag.writeUInt16BE(0x2000 | 185, 6); // MF, offset 1480
    assert.equal(build(frag).len, 0, 'middle fragment');
    frag.writeUInt16BE(185, 6); // last fragment
    assert.equal(build(frag).len, 0, 'last fragment');

    const ihl15 = Buffer.alloc(60 + 8);
    ihl15[0] = 0x4f;
    ihl15.writeUInt16BE(ihl15.length, 2);
    ihl15[8] = 64;
    ihl15[9] = 17;
    assert.equal(build(ihl15).len, 0, 'IHL 15');
  });

  test('a first fragment (MF, offset 0) and a DF packet do get one', () => {
    const p = buildIpv4Udp({ src: '10.1.1.5', dst: '10.9.9.9', srcPort: 1, dstPort: 2, data: Buffer.alloc(16) });
    p.writeUInt16BE(0x2000, 6);
    assert.equal(build(p).len, 56);
    p.writeUInt16BE(0x4000, 6);
    assert.equal(build(p).len, 56);
  });

  test('header with options: quotes all of it plus 8 bytes', () => {
    const p = Buffer.alloc(24 + 16);
    p[0] = 0x46;
    p.writeUInt16BE(p.length, 2);
    p[8] = 64;
    p[9] = 6;
    p.set([10, 1, 1, 5, 10, 9, 9, 9], 12);
    p.set([1, 1, 1, 0], 20); // NOP NOP NOP EOL
    for (let i = 24; i < p.length; i++) p[i] = i;
    const { len, out } = build(p);
    assert.equal(len, 20 + 8 + 24 + 8);
    assert.equal((out[2]! << 8) | out[3]!, len);
    assert.deepEqual(Buffer.from(out.subarray(28, len)), p.subarray(0, 32));
    assert.equal(referenceChecksum(out, 20, len - 20), 0);
  });

  test('a short offender is padded with zeros, not stale bytes', () => {
    const p = buildIpv4({ src: '10.1.1.5', dst: '10.9.9.9', protocol: 17 }); // 20 bytes, no UDP header
    const { len, out } = build(p, 0x77);
    assert.equal(len, 56);
    assert.deepEqual(Buffer.from(out.subarray(28, 48)), p);
    assert.deepEqual([...out.subarray(48, 56)], [0, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(referenceChecksum(out, 20, 36), 0);
  });
});
