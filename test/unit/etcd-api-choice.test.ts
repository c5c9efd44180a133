// The etcd API choice (src/agent/etcd-api.ts) over in-memory stores standing in for etcd's v3 and v2
// APIs: where the config is decides, v3 first; nothing is half-used; every choice is logged.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { EtcdApiChooser, EtcdApiNotChosenError, isApiAbsent } from '../../src/agent/etcd-api.js';
import { EtcdResponseError, EtcdUnavailableError } from '../../src/etcd/errors.js';
import { EtcdV2ResponseError } from '../../src/etcdv2/errors.js';
import type { Logger } from '../../src/observability/log.js';
import { MemoryKvStore } from '../../src/subnet/memory-kv.js';

const PREFIX = '/coreos.com/network';
const CONFIG_KEY = `${PREFIX}/config`;
const CONFIG = '{"Network":"172.20.0.0/16","Backend":{"Type":"udp"}}';

interface Line {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}

function recorder(): { log: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const at =
    (level: string) =>
    (msg: string, fields: Record<string, unknown> = {}): void => {
      lines.push({ level, msg, fields });
    };
  return { log: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, lines };
}

/** A store whose every get() throws err (an etcd that cannot answer, or does not serve the API). */
class FailingStore extends MemoryKvStore {
  constructor(private readonly err: Error) {
    super();
  }
  override get(): never {
    throw this.err;
  }
}

const NO_V3 = new EtcdResponseError('http://127.0.0.1:2379', '/v3/kv/range', null, 404, 'Not Found 404 page not found');
const NO_V2 = new EtcdV2ResponseError('http://127.0.0.1:2379', '/v2/keys/x', 404, null, 'Not Found', 0);

describe('etcd API choice (auto)', () => {
  it('uses v3 when the config is there, for everything afterwards, and closes v2', async () => {
    const v3 = new MemoryKvStore();
    const v2 = new MemoryKvStore();
    await v3.put(CONFIG_KEY, CONFIG, 0);
    const { log, lines } = recorder();
    const store = new EtcdApiChooser(v3, v2, PREFIX, log);
    assert.equal(store.api, null);
    assert.equal((await store.get(CONFIG_KEY))?.value, CONFIG);
    assert.equal(store.api, 'v3');
    await store.put(`${PREFIX}/subnets/172.20.5.0-24`, 'lease', 60);
    assert.notEqual(await v3.get(`${PREFIX}/subnets/172.20.5.0-24`), null);
    assert.deepEqual(
      lines.filter((l) => l.msg === 'etcd API'),
      [
        {
          level: 'info',
          msg: 'etcd API',
          fields: { api: 'v3', reason: `the network config ${CONFIG_KEY} is in etcd's v3 API` },
        },
      ],
    );
    await assert.rejects(v2.get(CONFIG_KEY), /closed/);
    await store.close();
  });

  it('uses v2 when v3 has no config and v2 has; v2 leases, v2 watches', async () => {
    const v3 = new MemoryKvStore();
    const v2 = new MemoryKvStore();
    await v2.put(CONFIG_KEY, CONFIG, 0);
    const { log, lines } = recorder();
    const store = new EtcdApiChooser(v3, v2, PREFIX, log);
    assert.equal((await store.get(CONFIG_KEY))?.value, CONFIG);
    assert.equal(store.api, 'v2');
    assert.equal(await store.createIfAbsent(`${PREFIX}/subnets/172.20.9.0-24`, 'lease', 86_400), true);
    assert.equal((await v2.list(`${PREFIX}/subnets/`)).kvs.length, 1);
    const chosen = lines.find((l) => l.msg === 'etcd API')!;
    assert.equal(chosen.fields['api'], 'v2');
    assert.match(String(chosen.fields['reason']), /no network config .* in etcd's v3 API; found in its v2 API/);
    await store.close();
  });

  it('prefers v3 when both hold a config, and warns that flanneld v0.17 hosts read the v2 one', async () => {
    const v3 = new MemoryKvStore();
    const v2 = new MemoryKvStore();
    await v3.put(CONFIG_KEY, CONFIG, 0);
    await v2.put(CONFIG_KEY, '{"Network":"10.1.0.0/16"}', 0);
    const { log, lines } = recorder();
    const store = new EtcdApiChooser(v3, v2, PREFIX, log);
    assert.equal((await store.get(CONFIG_KEY))?.value, CONFIG);
    assert.equal(store.api, 'v3');
    const warning = lines.find((l) => l.level === 'warn')!;
    assert.match(warning.msg, /also in etcd v2/);
    assert.match(String(warning.fields['hint']), /--etcd-api=v2/);
    await store.close();
  });

  it('with no config anywhere: null, logged once, nothing chosen, and no other call allowed', async () => {
    const v3 = new MemoryKvStore();
    const v2 = new MemoryKvStore();
    const { log, lines } = recorder();
    const store = new EtcdApiChooser(v3, v2, PREFIX, log);
    assert.equal(await store.get(CONFIG_KEY), null);
    assert.equal(await store.get(CONFIG_KEY), null);
    assert.equal(store.api, null);
    assert.equal(lines.filter((l) => /not chosen yet/.test(l.msg)).length, 1);
    assert.throws(() => store.list(`${PREFIX}/subnets/`), EtcdApiNotChosenError);
    assert.throws(() => store.watchPrefix(`${PREFIX}/subnets/`, 1, { onEvents() {}, onCompacted() {} }), {
      code: 'FLANNEL_TS_ERR_ETCD_API_NOT_CHOSEN',
    });
    await assert.rejects(store.get(`${PREFIX}/subnets/x`), EtcdApiNotChosenError);
    // The config appears in v2 later: the next look finds it there.
    await v2.put(CONFIG_KEY, CONFIG, 0);
    assert.equal((await store.get(CONFIG_KEY))?.value, CONFIG);
    assert.equal(store.api, 'v2');
    await store.close();
  });

  it('an etcd serving no v3 (404) falls to v2; one without --enable-v2 says so while waiting', async () => {
    const v2 = new MemoryKvStore();
    await v2.put(CONFIG_KEY, CONFIG, 0);
    const a = recorder();
    const old = new EtcdApiChooser(new FailingStore(NO_V3), v2, PREFIX, a.log);
    assert.equal((await old.get(CONFIG_KEY))?.value, CONFIG);
    assert.match(String(a.lines.find((l) => l.msg === 'etcd API')!.fields['reason']), /serves no v3 API/);

    const b = recorder();
    const v3only = new EtcdApiChooser(new MemoryKvStore(), new FailingStore(NO_V2), PREFIX, b.log);
    assert.equal(await v3only.get(CONFIG_KEY), null);
    assert.match(String(b.lines[0]!.fields['v2']), /--enable-v2/);
  });

  it('does not look in v2 while v3 cannot answer: the error goes to the caller, which retries', async () => {
    const v2 = new MemoryKvStore();
    await v2.put(CONFIG_KEY, CONFIG, 0);
    const down = new EtcdUnavailableError('/v3/kv/range', ['http://127.0.0.1:2379: ECONNREFUSED']);
    const store = new EtcdApiChooser(new FailingStore(down), v2, PREFIX, recorder().log);
    await assert.rejects(store.get(CONFIG_KEY), EtcdUnavailableError);
    assert.equal(store.api, null);
  });

  it('isApiAbsent: only a bare 404, not etcd errors such as "Key not found"', () => {
    assert.equal(isApiAbsent(NO_V3), true);
    assert.equal(isApiAbsent(NO_V2), true);
    assert.equal(isApiAbsent(new EtcdV2ResponseError('e', '/v2/keys/x', 404, 100, 'Key not found', 3)), false);
    assert.equal(isApiAbsent(new Error('x')), false);
  });
});
