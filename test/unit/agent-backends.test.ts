// The flanneld-mode agent as an object: several in one process on one in-memory registry, each on its
// own fake kernel, with the vxlan and host-gw backends. No process-wide handler is left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryAgent } from '../../src/agent/registry-agent.js';
import type { RegistryFlags } from '../../src/cli/flags.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';
import type { KvStore } from '../../src/subnet/kv.js';
import { MemoryKvStore } from '../helpers/memory-kv.js';
import { FakeKernel } from '../helpers/fake-kernel.js';
import { captureLog } from '../helpers/backend-fixtures.js';

const PREFIX = '/coreos.com/network';

/** The shared store as one agent sees it: closing it (the agent does at stop) leaves it open for the others. */
function view(shared: MemoryKvStore): KvStore {
  return new Proxy(shared, {
    get(target, prop, receiver) {
      if (prop === 'close') return () => Promise.resolve();
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

function flags(dir: string, n: number): RegistryFlags {
  return {
    store: { kind: 'file', path: join(dir, 'unused') },
    prefix: PREFIX,
    ifaces: [],
    ifaceRegexes: [],
    publicIp: null,
    subnetFile: join(dir, `subnet-${n}.env`),
    renewMarginMinutes: 60,
    ipMasq: false,
    healthzIp: '127.0.0.1',
    healthzPort: 0,
    iptablesForwardRules: false,
    batch: 64,
    offloads: { tun: false, udp: false },
    ioUring: false,
    workers: 1,
    datapathWait: 'event-loop',
    datapathSliceUs: 0,
    datapathSpinUs: 0,
    datapath: 'userspace',
    logLevel: 'info',
  };
}

function startAgent(shared: MemoryKvStore, dir: string, n: number, kernel = new FakeKernel()) {
  kernel.connected = [{ prefix: parseIPv4('192.0.2.0'), prefixLen: 24 }];
  if (!kernel.links.has('eth0')) kernel.addPlainLink('eth0');
  const cap = captureLog();
  const agent = new RegistryAgent(flags(dir, n), cap.log, {
    store: view(shared),
    kernel,
    ext: { name: 'eth0', address: parseIPv4(`192.0.2.${n}`), mtu: 1500 },
    hostLock: `flannel-ts-test/${process.pid}/${dir}/${n}`, // one "host" per agent, none the real one
  });
  const done = agent.run();
  return { agent, kernel, cap, done };
}

const processHandlers = (): number[] =>
  ['SIGINT', 'SIGTERM', 'SIGUSR1', 'unhandledRejection'].map((e) => process.listenerCount(e));

async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('vxlan: three agents in one process program each other; restart keeps subnet and VtepMAC', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fts-agents-'));
  const handlersBefore = processHandlers();
  try {
    const shared = new MemoryKvStore();
    await shared.put(`${PREFIX}/config`, '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', 0);
    const hosts = [1, 2, 3].map((n) => startAgent(shared, dir, n));
    await Promise.all(hosts.map((h) => h.agent.ready));
    const leases = await shared.list(`${PREFIX}/subnets/`);
    assert.equal(leases.kvs.length, 3);
    const macs = new Map<number, string>();
    for (const h of hosts) {
      const lease = h.agent.lease!;
      const kv = leases.kvs.find((k) => k.key === lease.key)!;
      const mac = h.kernel.links.get('flannel.1')!.info.mac!;
      macs.set(lease.publicIp, mac);
      // Byte for byte what flanneld writes (Go's json.Marshal of LeaseAttrs).
      assert.equal(
        kv.value,
        `{"PublicIP":"${ipOf(lease.publicIp)}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`,
      );
      const env = readFileSync(join(dir, `subnet-${ipOf(lease.publicIp).split('.')[3]}.env`), 'utf8');
      assert.match(env, /^FLANNEL_MTU=1450$/m);
    }
    for (const h of hosts) {
      await h.agent.backend!.settled();
      assert.equal(h.kernel.routeTexts().length, 2, h.kernel.routeTexts().join('\n'));
      assert.equal(h.kernel.fdb.size, 2);
      assert.equal(h.kernel.neighbours.size, 2);
    }
    // Host 3 stops and comes back on the same kernel (its device still there) and a fresh one.
    const h3 = hosts[2]!;
    const subnet3 = h3.agent.lease!.subnet;
    const mac3 = h3.kernel.links.get('flannel.1')!.info.mac!;
    h3.agent.stop('test');
    assert.equal(await h3.done, 0);
    const fresh = new FakeKernel(); // a reboot: no device, the MAC comes back from the lease
    const again = startAgent(shared, dir, 3, fresh);
    await again.agent.ready;
    assert.deepEqual(again.agent.lease!.subnet, subnet3);
    assert.equal(fresh.links.get('flannel.1')!.info.mac, mac3);
    // A deleted lease removes everything programmed for it on the others (its owner stopped first:
    // a running agent would take a lease again at once).
    const key3 = again.agent.lease!.key;
    again.agent.stop('test');
    await again.done;
    await shared.delete(key3);
    for (const h of hosts.slice(0, 2)) {
      await until('host 3 entries removed', () => h.kernel.routeTexts().length === 1 && h.kernel.fdb.size === 1);
      assert.equal(h.kernel.neighbours.size, 1);
    }
    for (const h of hosts.slice(0, 2)) h.agent.stop('test');
    await Promise.all([again.done, ...hosts.map((h) => h.done)]);
    assert.deepEqual(processHandlers(), handlersBefore, 'no process-wide handler left behind');
    for (const h of [...hosts, again]) assert.equal(h.kernel.watcherCount, 0);
    assert.equal(shared.openWatches, 0, 'every watch closed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('host-gw agents: routes via PublicIP; a vxlan lease in the network is ignored with a warning', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fts-agents-'));
  try {
    const shared = new MemoryKvStore();
    await shared.put(`${PREFIX}/config`, '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}', 0);
    await shared.put(
      `${PREFIX}/subnets/10.244.77.0-24`,
      '{"PublicIP":"192.0.2.77","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}',
      0,
    );
    const hosts = [1, 2].map((n) => startAgent(shared, dir, n));
    await Promise.all(hosts.map((h) => h.agent.ready));
    const [a, b] = hosts as [(typeof hosts)[0], (typeof hosts)[0]];
    await a.agent.backend!.settled();
    const subnetB = b.agent.lease!.subnet;
    assert.deepEqual(a.kernel.routeTexts(), [`${ipOf(subnetB.prefix)}/24 via 192.0.2.2 dev eth0`]);
    const kv = await shared.get(a.agent.lease!.key);
    assert.equal(kv!.value, '{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"host-gw"}');
    assert.equal(a.cap.find('warn', /^Ignoring non-host-gw subnet$/).length, 1);
    assert.match(readFileSync(join(dir, 'subnet-1.env'), 'utf8'), /^FLANNEL_MTU=1500$/m);
    for (const h of hosts) h.agent.stop('test');
    await Promise.all(hosts.map((h) => h.done));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('stop() before the config exists ends run() at once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fts-agents-'));
  try {
    const shared = new MemoryKvStore();
    const h = startAgent(shared, dir, 1);
    await until('waiting line', () => h.cap.find('warn', /waiting for the network config/).length === 1);
    const t0 = Date.now();
    h.agent.stop('test');
    assert.equal(await h.done, 0);
    assert.ok(Date.now() - t0 < 500);
    await assert.rejects(h.agent.ready, /stopped before forwarding/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A proxy that records the name of every method called on target. */
function recording<T extends object>(target: T, calls: string[]): T {
  return new Proxy(target, {
    get(t, prop, receiver) {
      const v = Reflect.get(t, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        calls.push(String(prop));
        return (v as (...a: unknown[]) => unknown).apply(t, args);
      };
    },
  });
}

test('a second agent on the same host lock is refused, naming the first, before it touches registry or kernel', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fts-agents-'));
  try {
    const shared = new MemoryKvStore();
    await shared.put(`${PREFIX}/config`, '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', 0);
    const lockName = `flannel-ts-test/${process.pid}/${dir}/one-host`;
    const kernel = new FakeKernel();
    kernel.connected = [{ prefix: parseIPv4('192.0.2.0'), prefixLen: 24 }];
    kernel.addPlainLink('eth0');
    const ext = { name: 'eth0', address: parseIPv4('192.0.2.1'), mtu: 1500 };
    const first = new RegistryAgent(flags(dir, 1), captureLog().log, {
      store: view(shared),
      kernel,
      ext,
      hostLock: lockName,
    });
    const firstDone = first.run();
    await first.ready;
    const routesBefore = kernel.routeTexts();
    const opsBefore = kernel.log.length;

    const calls: string[] = [];
    const cap = captureLog();
    const second = new RegistryAgent(flags(dir, 1), cap.log, {
      store: recording(view(shared), calls),
      kernel: recording(kernel, calls),
      ext,
      hostLock: lockName,
    });
    await assert.rejects(second.run(), (err: Error) => {
      assert.equal((err as { code?: string }).code, 'FLANNEL_TS_ERR_HOST_LOCKED');
      assert.match(
        err.message,
        new RegExp(
          `^another flannel-ts agent runs in this network namespace: pid ${process.pid} \\(flanneld mode, since `,
        ),
      );
      return true;
    });
    await assert.rejects(second.ready, /another flannel-ts agent/);
    assert.deepEqual(calls, [], 'the refused agent called nothing on the registry or the kernel');
    assert.equal(kernel.log.length, opsBefore);
    assert.deepEqual(kernel.routeTexts(), routesBefore);
    assert.equal(cap.lines.length, 0, 'the refused agent logged nothing (the command line prints the one line)');

    // The lock goes with the first agent's run(): a new one takes it.
    first.stop('test');
    assert.equal(await firstDone, 0);
    const third = new RegistryAgent(flags(dir, 1), captureLog().log, {
      store: view(shared),
      kernel,
      ext,
      hostLock: lockName,
    });
    const thirdDone = third.run();
    await third.ready;
    third.stop('test');
    assert.equal(await thirdDone, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function ipOf(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}
