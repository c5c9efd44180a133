// EtcdV2KvStore's requests and its reading of replies, against a fake etcd v2 HTTP server on
// loopback: what is hard to provoke from a real etcd (a 5xx on one member, basic auth headers,
// a long poll ended without a change). The behaviour against real etcd is in etcdv2-client.test.ts.

import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { EtcdV2KvStore } from '../../src/etcdv2/kv-store.js';
import { cleanPrefix, directoryOf, expiryOf } from '../../src/etcdv2/node.js';
import { keysPath } from '../../src/etcdv2/transport.js';
import type { WatchEvent } from '../../src/subnet/kv.js';

interface Seen {
  method: string;
  url: string;
  body: string;
  authorization: string | undefined;
}

type Handler = (req: Seen, res: http.ServerResponse) => void;

/** A fake etcd member: records every request, answers with the handler of the moment. */
class FakeMember {
  readonly seen: Seen[] = [];
  handler: Handler = (_req, res) => reply(res, 500, { errorCode: 300, message: 'Raft Internal Error' });
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        body: Buffer.concat(chunks).toString(),
        authorization: req.headers.authorization,
      };
      this.seen.push(seen);
      this.handler(seen, res);
    });
  });

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function reply(res: http.ServerResponse, status: number, body: object | string, index = 7): void {
  res.writeHead(status, { 'content-type': 'application/json', 'x-etcd-index': String(index) });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

describe('etcd v2 store requests and replies (fake member)', () => {
  const a = new FakeMember();
  const b = new FakeMember();
  let urlA = '';
  let urlB = '';

  before(async () => {
    urlA = await a.start();
    urlB = await b.start();
  });

  after(async () => {
    await a.stop();
    await b.stop();
  });

  it("maps keys, forms, basic auth and flanneld's query options onto /v2/keys", async () => {
    a.seen.length = 0;
    a.handler = (req, res) => {
      if (req.method === 'GET')
        reply(res, 200, { action: 'get', node: { key: '/p/config', value: '{}', modifiedIndex: 5 } });
      else reply(res, 201, { action: 'create', node: { key: '/p/x', modifiedIndex: 8 } });
    };
    const store = new EtcdV2KvStore({ endpoints: urlA, username: 'flannel', password: 's3cret' });
    assert.deepEqual(await store.get('/p//config'), { key: '/p/config', value: '{}', modRevision: 5, expiresAt: null });
    assert.equal(await store.createIfAbsent('/p/subnets/10.1.2.0-24', '{"PublicIP":"1.2.3.4"}', 86_400), true);
    await store.put('/p/subnets/10.1.2.0-24', 'v w&x', 0);
    assert.deepEqual(
      a.seen.map((s) => [s.method, s.url, s.body]),
      [
        ['GET', '/v2/keys/p/config?quorum=true', ''],
        [
          'PUT',
          '/v2/keys/p/subnets/10.1.2.0-24?prevExist=false',
          'value=%7B%22PublicIP%22%3A%221.2.3.4%22%7D&ttl=86400',
        ],
        ['PUT', '/v2/keys/p/subnets/10.1.2.0-24', 'value=v+w%26x'],
      ],
    );
    assert.ok(a.seen.every((s) => s.authorization === `Basic ${Buffer.from('flannel:s3cret').toString('base64')}`));
    await store.close();
  });

  it('a read moves on from a member answering 5xx; a create does not (it may have been applied)', async () => {
    a.seen.length = 0;
    b.seen.length = 0;
    a.handler = (_req, res) => reply(res, 500, { errorCode: 300, message: 'Raft Internal Error', cause: 'timeout' });
    b.handler = (req, res) =>
      req.method === 'GET'
        ? reply(res, 200, { action: 'get', node: { key: '/k', value: 'from b', modifiedIndex: 3 } })
        : reply(res, 201, {});
    const store = new EtcdV2KvStore({ endpoints: `${urlA},${urlB}` });
    assert.equal((await store.get('/k'))?.value, 'from b');
    // b answered last, so it goes first now: point the failure at b and the answer at a.
    a.handler = b.handler;
    b.handler = (_req, res) => reply(res, 500, { errorCode: 300, message: 'Raft Internal Error', cause: 'timeout' });
    a.seen.length = 0;
    await assert.rejects(
      store.createIfAbsent('/k2', 'v', 60),
      /Raft Internal Error \(timeout\) \(error 300, HTTP 500\)/,
    );
    assert.equal(a.seen.length, 0, 'the create was not sent to the other member');
    await store.close();
  });

  it('list: a missing directory is empty at the error index; X-Etcd-Index is the revision; TTLs become expiries', async () => {
    a.handler = (req, res) => {
      if (req.url.startsWith('/v2/keys/none')) {
        reply(res, 404, { errorCode: 100, message: 'Key not found', cause: '/none', index: 41 }, 41);
        return;
      }
      reply(
        res,
        200,
        {
          action: 'get',
          node: {
            key: '/n/subnets',
            dir: true,
            nodes: [
              { key: '/n/subnets/10.0.2.0-24', value: 'b', modifiedIndex: 20, ttl: 100 },
              { key: '/n/subnets/10.0.1.0-24', value: 'a', modifiedIndex: 30 },
            ],
          },
        },
        42,
      );
    };
    const store = new EtcdV2KvStore({ endpoints: urlA });
    assert.deepEqual(await store.list('/none/subnets/'), { kvs: [], revision: 41 });
    const before = Date.now();
    const listing = await store.list('/n/subnets/');
    assert.equal(listing.revision, 42);
    assert.deepEqual(
      listing.kvs.map((k) => [k.key, k.modRevision, k.expiresAt === null]),
      [
        ['/n/subnets/10.0.1.0-24', 30, true],
        ['/n/subnets/10.0.2.0-24', 20, false],
      ],
    );
    assert.ok(listing.kvs[1]!.expiresAt! >= before + 100_000 && listing.kvs[1]!.expiresAt! <= Date.now() + 100_000);
    await store.close();
  });

  it('watch: waitIndex follows every change in the directory, other keys skipped; an empty poll is retried; 401 ends it', async () => {
    const polls: string[] = [];
    const changes: Record<number, object> = {
      10: { action: 'set', node: { key: '/w/subnets/10.0.1.0-24', value: 'a', modifiedIndex: 10 } },
      11: { action: 'set', node: { key: '/w/subnetsX', value: 'not ours', modifiedIndex: 12 } },
      13: { action: 'expire', node: { key: '/w/subnets/10.0.1.0-24', modifiedIndex: 15 } },
    };
    a.handler = (req, res) => {
      const waitIndex = Number(new URL(req.url, 'http://x').searchParams.get('waitIndex'));
      polls.push(`${waitIndex}`);
      const change = changes[waitIndex];
      if (change !== undefined) reply(res, 200, change);
      else if (waitIndex === 16 && polls.filter((p) => p === '16').length === 1) reply(res, 200, '');
      else reply(res, 400, { errorCode: 401, message: 'The event in requested index is outdated and cleared' });
    };
    const store = new EtcdV2KvStore({ endpoints: urlA });
    const events: WatchEvent[] = [];
    const errors: string[] = [];
    let compacted = 0;
    store.watchPrefix('/w/subnets/', 10, {
      onEvents: (e) => events.push(...e),
      onCompacted: () => compacted++,
      onError: (err) => errors.push(err.message),
    });
    const deadline = Date.now() + 5_000;
    while (compacted === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(compacted, 1);
    assert.deepEqual(polls, ['10', '11', '13', '16', '16']);
    assert.deepEqual(
      events.map((e) =>
        e.type === 'put' ? `put ${e.kv.key} ${e.kv.modRevision}` : `delete ${e.key} ${e.modRevision}`,
      ),
      ['put /w/subnets/10.0.1.0-24 10', 'delete /w/subnets/10.0.1.0-24 15'],
    );
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /from index 16: etcd ended the long poll without a change; retrying in 100 ms/);
    await store.close();
  });

  it('prefixes map onto the directory that holds them', () => {
    assert.equal(directoryOf('/coreos.com/network/subnets/'), '/coreos.com/network/subnets');
    assert.equal(directoryOf('/coreos.com/network/subnets/10.1.2.0-24'), '/coreos.com/network/subnets');
    assert.equal(directoryOf('/top'), '');
    assert.equal(cleanPrefix('//a//b/'), '/a/b/');
    assert.equal(keysPath('/a b/é', { wait: 'true' }), '/v2/keys/a%20b/%C3%A9?wait=true');
    assert.equal(keysPath(''), '/v2/keys/');
    assert.equal(expiryOf({ expiration: '2030-01-01T00:00:00Z' }), Date.parse('2030-01-01T00:00:00Z'));
    assert.equal(expiryOf({ ttl: 5 }, 1000), 6000);
  });
});
