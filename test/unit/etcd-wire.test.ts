// The etcd client's pure encoding pieces (no etcd needed): prefix ranges, the watch stream's
// JSON framing, endpoint parsing. The behaviour against a real etcd is in etcd-client.test.ts.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { decodeBytes, encodeBytes, prefixRange } from '../../src/etcd/codec.js';
import { JsonObjectSplitter } from '../../src/etcd/json-stream.js';
import { parseEndpoints } from '../../src/etcd/options.js';

function b64(bytes: number[]): string {
  return Buffer.from(bytes).toString('base64');
}

describe('etcd wire encoding', () => {
  it('prefixRange increments the last byte, dropping trailing 0xff', () => {
    assert.deepEqual(prefixRange('/coreos.com/network/subnets/'), {
      key: encodeBytes('/coreos.com/network/subnets/'),
      rangeEnd: encodeBytes('/coreos.com/network/subnets0'),
    });
    // 'é' is 0xc3 0xa9 in UTF-8.
    assert.deepEqual(prefixRange('aé'), { key: b64([0x61, 0xc3, 0xa9]), rangeEnd: b64([0x61, 0xc3, 0xaa]) });
    assert.deepEqual(prefixRange(''), { key: b64([0]), rangeEnd: b64([0]) });
    assert.equal(decodeBytes(encodeBytes('ünïcode')), 'ünïcode');
    assert.equal(decodeBytes(undefined), '');
  });

  it('JsonObjectSplitter reassembles objects split anywhere, with braces inside strings', () => {
    const messages = [
      { result: { created: true } },
      { result: { events: [{ kv: { key: 'e30=', value: '"}{\\"' } }] } },
      { error: { message: 'a } b', grpc_code: 14 } },
    ];
    const wire = Buffer.from(messages.map((m) => JSON.stringify(m)).join('\n') + '\n');
    for (const size of [1, 2, 7, wire.length]) {
      const splitter = new JsonObjectSplitter();
      const out: unknown[] = [];
      for (let i = 0; i < wire.length; i += size) out.push(...splitter.push(wire.subarray(i, i + size)));
      assert.deepEqual(out, messages, `chunk size ${size}`);
    }
    // Multi-byte UTF-8 split across chunks.
    const splitter = new JsonObjectSplitter();
    const text = Buffer.from('{"v":"é"}');
    assert.deepEqual([...splitter.push(text.subarray(0, 7)), ...splitter.push(text.subarray(7))], [{ v: 'é' }]);
    assert.throws(() => new JsonObjectSplitter().push(Buffer.from('x{}')), /unexpected character/);
  });

  it('parseEndpoints accepts flanneld-style comma-separated URLs and rejects others', () => {
    const endpoints = parseEndpoints('http://127.0.0.1:4001, https://etcd.example:2379,');
    assert.deepEqual(
      endpoints.map((e) => [e.label, e.secure]),
      [
        ['http://127.0.0.1:4001', false],
        ['https://etcd.example:2379', true],
      ],
    );
    assert.deepEqual(
      parseEndpoints(['http://[::1]:2379']).map((e) => e.label),
      ['http://[::1]:2379'],
    );
    assert.throws(() => parseEndpoints('127.0.0.1:2379'), /127\.0\.0\.1:2379/);
    assert.throws(() => parseEndpoints('unix:///run/etcd.sock'), /scheme must be http or https/);
    assert.throws(() => parseEndpoints(' , '), /no endpoints/);
  });
});

describe('HTTP exchange failure classes', () => {
  it('each names itself and carries a stable FLANNEL_TS_ERR_ code (they end up as causes in logs)', async () => {
    const { UnreachedError, StaleSocketError, BrokenExchangeError } = await import('../../src/etcd/http-exchange.js');
    const cases = [
      [new UnreachedError('connect ECONNREFUSED'), 'UnreachedError', 'FLANNEL_TS_ERR_ETCD_UNREACHED'],
      [new StaleSocketError('read ECONNRESET'), 'StaleSocketError', 'FLANNEL_TS_ERR_ETCD_STALE_SOCKET'],
      [new BrokenExchangeError('reply broken off'), 'BrokenExchangeError', 'FLANNEL_TS_ERR_ETCD_EXCHANGE_BROKEN'],
    ] as const;
    for (const [err, name, code] of cases) {
      assert.ok(err instanceof Error);
      assert.equal(err.name, name);
      assert.equal(err.code, code);
      assert.match(String(err), new RegExp(`^${name}: `));
    }
  });
});
