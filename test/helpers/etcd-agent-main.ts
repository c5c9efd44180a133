// Child process run inside the test's network namespace (`ip netns exec NS node this.js`): it
// hosts EtcdKvStore instances and serves them to the test over stdin/stdout, one JSON object per
// line. Requests: {id, op, ...}; replies: {id, ok} or {id, error}; watch callbacks are pushed as
// {watch, kind: 'events'|'compacted'|'error', ...}. See etcd-agent.ts for the parent side.
//
// op 'idle' closes nothing: it only stops reading stdin, so the process exits by itself exactly
// when the stores left nothing behind (sockets, timers) — the test's check for clean close().

import { createInterface } from 'node:readline';

import { EtcdKvStore } from '../../src/etcd/kv-store.js';
import type { EtcdClientOptions } from '../../src/etcd/options.js';
import { EtcdV2KvStore } from '../../src/etcdv2/kv-store.js';
import type { KvStore, Watch } from '../../src/subnet/kv.js';

interface Request {
  id: number;
  op: string;
  store?: string;
  options?: EtcdClientOptions;
  /** Which etcd API the store speaks (default v3). */
  api?: 'v2' | 'v3';
  key?: string;
  value?: string;
  ttl?: number;
  prefix?: string;
  fromRevision?: number;
  watch?: string;
  expiries?: false;
  count?: number;
}

const stores = new Map<string, KvStore>();
/** Process warnings seen so far (e.g. MaxListenersExceededWarning), as "name: message". */
const warnings: string[] = [];
process.on('warning', (w) => warnings.push(`${w.name}: ${w.message}`));
const watches = new Map<string, Watch>();

function send(message: object): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function storeOf(request: Request): KvStore {
  const store = stores.get(request.store ?? '');
  if (store === undefined) throw new Error(`no store ${request.store}`);
  return store;
}

async function serve(request: Request): Promise<unknown> {
  switch (request.op) {
    case 'open':
      stores.set(
        request.store!,
        request.api === 'v2' ? new EtcdV2KvStore(request.options!) : new EtcdKvStore(request.options!),
      );
      return null;
    case 'get':
      return storeOf(request).get(request.key!);
    case 'list':
      return request.expiries === false
        ? storeOf(request).list(request.prefix!, { expiries: false })
        : storeOf(request).list(request.prefix!);
    case 'burst': {
      // count puts (TTL'd when ttl > 0), then count gets, each batch all at once.
      const store = storeOf(request);
      const keys = Array.from({ length: request.count! }, (_, i) => `${request.prefix!}${i}`);
      await Promise.all(keys.map((key) => store.put(key, request.value!, request.ttl ?? 0)));
      const got = await Promise.all(keys.map((key) => store.get(key)));
      return got.filter((kv) => kv?.value === request.value).length;
    }
    case 'warnings':
      return warnings;
    case 'put':
      await storeOf(request).put(request.key!, request.value!, request.ttl ?? 0);
      return null;
    case 'createIfAbsent':
      return storeOf(request).createIfAbsent(request.key!, request.value!, request.ttl ?? 0);
    case 'delete':
      return storeOf(request).delete(request.key!);
    case 'watch': {
      const name = request.watch!;
      const watch = storeOf(request).watchPrefix(request.prefix!, request.fromRevision!, {
        onEvents: (events, revision) => send({ watch: name, kind: 'events', events, revision }),
        onCompacted: () => send({ watch: name, kind: 'compacted' }),
        onError: (err) => send({ watch: name, kind: 'error', message: err.message }),
      });
      watches.set(name, watch);
      return null;
    }
    case 'unwatch':
      watches.get(request.watch!)?.close();
      return null;
    case 'close':
      await storeOf(request).close();
      stores.delete(request.store!);
      return null;
    case 'idle':
      lines.close();
      process.stdin.destroy();
      return null;
    default:
      throw new Error(`unknown op ${request.op}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const request = JSON.parse(line) as Request;
  serve(request).then(
    (ok) => send({ id: request.id, ok: ok ?? null }),
    (err: Error) => send({ id: request.id, error: err.message, name: err.name }),
  );
});
