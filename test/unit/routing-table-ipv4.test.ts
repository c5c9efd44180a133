import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  contains,
  formatCidr,
  formatIPv4,
  hasZeroHostBits,
  maskOf,
  parseCidr,
  parseIPv4,
} from '../../src/routing-table/ipv4.js';
import { mulberry32 } from '../helpers/prng.js';

describe('parseIPv4 / formatIPv4', () => {
  it('parses known addresses into host-order uint32', () => {
    assert.equal(parseIPv4('0.0.0.0'), 0);
    assert.equal(parseIPv4('255.255.255.255'), 0xffffffff);
    assert.equal(parseIPv4('10.244.1.0'), 0x0af40100);
    assert.equal(parseIPv4('192.0.2.1'), 0xc0000201);
    assert.equal(parseIPv4('128.0.0.0'), 0x80000000);
    assert.equal(parseIPv4('1.2.3.4'), 0x01020304);
  });

  it('formats known addresses', () => {
    assert.equal(formatIPv4(0), '0.0.0.0');
    assert.equal(formatIPv4(0xffffffff), '255.255.255.255');
    assert.equal(formatIPv4(0x0af40100), '10.244.1.0');
    assert.equal(formatIPv4(0x80000000), '128.0.0.0');
  });

  it('formats the signed int32 bit pattern the same as the uint32', () => {
    assert.equal(formatIPv4(-1), '255.255.255.255');
    assert.equal(formatIPv4(0xc0000201 | 0), '192.0.2.1');
    assert.equal(formatIPv4(-0x80000000), '128.0.0.0');
  });

  it('round-trips random addresses both ways', () => {
    const rand = mulberry32(0x1badb002);
    for (let i = 0; i < 20_000; i++) {
      const n = rand();
      const s = formatIPv4(n);
      assert.equal(parseIPv4(s), n, `address ${n} formatted as ${s}`);
      assert.equal(formatIPv4(parseIPv4(s)), s);
    }
  });

  it('rejects anything but a strict dotted quad', () => {
    const bad = [
      '',
      '1.2.3',
      '1.2.3.4.5',
      '256.0.0.1',
      '1.2.3.256',
      '1.2.3.1000',
      '01.2.3.4',
      '1.2.3.00',
      ' 1.2.3.4',
      '1.2.3.4 ',
      '1.2.3.4\n',
      '+1.2.3.4',
      '1.2.3.-4',
      '1.2.3.4/24',
      '0x1.2.3.4',
      '1..3.4',
      '1.2.3.',
      '.1.2.3',
      'a.b.c.d',
      '1.2.3.4x',
      'x1.2.3.4',
      '\u0661.2.3.4', // Arabic-Indic digit one
      '::ffff:1.2.3.4',
    ];
    for (const s of bad) {
      assert.throws(() => parseIPv4(s), /invalid IPv4 address/, `should reject ${JSON.stringify(s)}`);
    }
  });

  it('rejects non-strings and non-32-bit numbers', () => {
    assert.throws(() => parseIPv4(0x01020304 as unknown as string), TypeError);
    assert.throws(() => parseIPv4(undefined as unknown as string), TypeError);
    for (const n of [0x1_0000_0000, -0x80000001, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => formatIPv4(n), RangeError, `should reject ${n}`);
    }
  });
});

describe('maskOf', () => {
  it('handles /0 and /32 despite JavaScript shift semantics', () => {
    assert.equal(maskOf(0), 0);
    assert.equal(maskOf(32), 0xffffffff);
  });

  it('gives the expected masks', () => {
    assert.equal(maskOf(1), 0x80000000);
    assert.equal(maskOf(8), 0xff000000);
    assert.equal(maskOf(16), 0xffff0000);
    assert.equal(maskOf(24), 0xffffff00);
    assert.equal(maskOf(31), 0xfffffffe);
  });

  it('matches an arithmetic definition for every length and is always a uint32', () => {
    for (let len = 0; len <= 32; len++) {
      const expected = 2 ** 32 - 2 ** (32 - len);
      assert.equal(maskOf(len), expected, `/${len}`);
      assert.ok(maskOf(len) >= 0);
    }
  });

  it('rejects invalid lengths', () => {
    for (const len of [-1, 33, 1.5, Number.NaN]) {
      assert.throws(() => maskOf(len), RangeError, `should reject ${len}`);
    }
  });
});

describe('parseCidr / formatCidr', () => {
  it('parses a network and clears host bits like net.ParseCIDR', () => {
    assert.deepEqual(parseCidr('10.244.0.0/16'), { prefix: 0x0af40000, prefixLen: 16 });
    assert.deepEqual(parseCidr('10.244.1.7/16'), { prefix: 0x0af40000, prefixLen: 16 });
    assert.deepEqual(parseCidr('10.244.1.7/24'), { prefix: 0x0af40100, prefixLen: 24 });
    assert.deepEqual(parseCidr('1.2.3.4/0'), { prefix: 0, prefixLen: 0 });
    assert.deepEqual(parseCidr('255.255.255.255/32'), { prefix: 0xffffffff, prefixLen: 32 });
    assert.deepEqual(parseCidr('255.255.255.255/1'), { prefix: 0x80000000, prefixLen: 1 });
  });

  it('round-trips random networks', () => {
    const rand = mulberry32(0xc1d4);
    for (let i = 0; i < 10_000; i++) {
      const len = rand() % 33;
      const prefix = (rand() & maskOf(len)) >>> 0;
      const text = formatCidr(prefix, len);
      assert.deepEqual(parseCidr(text), { prefix, prefixLen: len }, text);
    }
  });

  it('formats prefixes', () => {
    assert.equal(formatCidr(0x0af40100, 24), '10.244.1.0/24');
    assert.equal(formatCidr(0, 0), '0.0.0.0/0');
    assert.equal(formatCidr(0xffffffff, 32), '255.255.255.255/32');
    assert.throws(() => formatCidr(0, 33), RangeError);
  });

  it('rejects malformed CIDRs', () => {
    const bad = [
      '10.0.0.0',
      '10.0.0.0/',
      '/8',
      '10.0.0.0/33',
      '10.0.0.0/100',
      '10.0.0.0/08',
      '10.0.0.0/-1',
      '10.0.0.0/+8',
      '10.0.0.0/ 8',
      '10.0.0.0/8 ',
      '10.0.0.0/8/8',
      '10.0.0/8',
      '10.0.0.256/8',
      '010.0.0.0/8',
      ' 10.0.0.0/8',
    ];
    for (const s of bad) {
      assert.throws(() => parseCidr(s), /invalid CIDR/, `should reject ${JSON.stringify(s)}`);
    }
    assert.throws(() => parseCidr(null as unknown as string), TypeError);
  });
});

describe('contains / hasZeroHostBits', () => {
  it('a /0 contains every address', () => {
    for (const a of [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, -1]) assert.equal(contains(0, 0, a), true);
  });

  it('a /32 contains only its own address', () => {
    const p = parseIPv4('192.0.2.7');
    assert.equal(contains(p, 32, p), true);
    assert.equal(contains(p, 32, p + 1), false);
    assert.equal(contains(p, 32, p - 1), false);
  });

  it('checks first and last addresses and their neighbours', () => {
    const { prefix, prefixLen } = parseCidr('10.244.3.0/24');
    assert.equal(contains(prefix, prefixLen, parseIPv4('10.244.3.0')), true);
    assert.equal(contains(prefix, prefixLen, parseIPv4('10.244.3.255')), true);
    assert.equal(contains(prefix, prefixLen, parseIPv4('10.244.2.255')), false);
    assert.equal(contains(prefix, prefixLen, parseIPv4('10.244.4.0')), false);
    const top = parseCidr('128.0.0.0/1');
    assert.equal(contains(top.prefix, top.prefixLen, 0xffffffff), true);
    assert.equal(contains(top.prefix, top.prefixLen, -1), true, 'signed int32 address');
    assert.equal(contains(top.prefix, top.prefixLen, 0x7fffffff), false);
  });

  it('detects host bits', () => {
    assert.equal(hasZeroHostBits(parseIPv4('10.244.1.0'), 24), true);
    assert.equal(hasZeroHostBits(parseIPv4('10.244.1.1'), 24), false);
    assert.equal(hasZeroHostBits(parseIPv4('10.244.1.1'), 32), true);
    assert.equal(hasZeroHostBits(0, 0), true);
    assert.equal(hasZeroHostBits(1, 0), false);
    assert.equal(hasZeroHostBits(0x80000000, 1), true);
    assert.equal(hasZeroHostBits(0xc0000000, 1), false);
  });
});
