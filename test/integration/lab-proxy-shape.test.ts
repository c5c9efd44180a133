/**
 * The lab's proxy-shape mode: the latency bench's C stand-in of flanneld's udp proxy
 * (bench/proxy-shape.c, compiled by the lab with cc) forwards pod to pod both ways, decrements the
 * TTL on its way out (with a header checksum the next host's kernel accepts), and destroy() kills
 * it and removes its binary. Needs root, iproute2, ping and cc; a missing tool fails the suite.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { runChecked } from '../../src/lab/exec.js';
import { Lab, listNamespaces, removeStaleLabNamespaces } from '../../src/lab/index.js';
import { parsePing } from '../../src/lab/measure.js';

const labs: Lab[] = [];
after(async () => {
  for (const lab of labs) await lab.destroy();
});

/** Pings from pod 1 to pod 2 with the IP TTL set to `ttl`. */
async function pingWithTtl(lab: Lab, ttl: number) {
  const argv = ['ping', '-n', '-q', '-c', '3', '-i', '0.1', '-W', '1', '-t', String(ttl), lab.podAddr(2)];
  const r = await lab.exec(lab.podNs(1), argv, 15_000);
  return parsePing(r.stdout + r.stderr);
}

/** The pids of the processes running in namespace ns. */
async function namespacePids(ns: string): Promise<number[]> {
  const out = (await runChecked(['ip', 'netns', 'pids', ns])).stdout;
  return out
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map(Number);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('lab: proxy-shape mode (a C forwarder with the shape of flanneld udp proxy)', { timeout: 90_000 }, () => {
  test('pods reach each other both ways at the pod MTU; flannel0 is 10.244.N.0/16, MTU 1472', async () => {
    removeStaleLabNamespaces();
    const lab = await Lab.create({ hosts: 2, mode: 'proxy-shape' });
    labs.push(lab);
    assert.equal(lab.podMtu, 1472);
    for (const n of [1, 2]) {
      const [link] = JSON.parse(
        (await lab.execChecked(lab.hostNs(n), ['ip', '-j', 'addr', 'show', 'flannel0'])).stdout,
      ) as { mtu: number; flags: string[]; addr_info: { local: string; prefixlen: number }[] }[];
      assert.ok(link);
      assert.equal(link.mtu, 1472);
      assert.ok(link.flags.includes('UP'), `flannel0 is up in host ${n}`);
      assert.deepEqual(
        link.addr_info.map((a) => `${a.local}/${a.prefixlen}`),
        [`10.244.${n}.0/16`],
      );
    }
    for (const [from, to] of [
      [1, 2],
      [2, 1],
    ] as const) {
      const r = await lab.ping(lab.podNs(from), lab.podAddr(to), { count: 5, intervalSec: 0.05 });
      assert.equal(r.received, 5, `pod${from} -> pod${to}: ${r.raw}`);
      const full = await lab.ping(lab.podNs(from), lab.podAddr(to), {
        count: 2,
        intervalSec: 0.05,
        sizeBytes: 1472 - 28,
        dontFragment: true,
      });
      assert.equal(full.received, 2, `pod${from} -> pod${to} at the pod MTU: ${full.raw}`);
    }
  });

  test('the forwarder decrements the TTL: a packet that leaves it with TTL 1 is dropped at the next host', async () => {
    const lab = labs[0]!;
    // Pod 1 -> pod 2 crosses host 1's kernel (-1), the forwarder on host 1 (-1) and host 2's kernel
    // (-1, which needs more than 1 to forward). TTL 4 arrives with 1; TTL 3 leaves the forwarder with
    // 1 and host 2 drops it. A forwarder that did not decrement (socat) would deliver TTL 3.
    // Host 2 accepting TTL 4's packets also shows the forwarder's checksum update is right.
    const four = await pingWithTtl(lab, 4);
    assert.equal(four.received, 3, four.raw);
    const three = await pingWithTtl(lab, 3);
    assert.equal(three.transmitted, 3, three.raw);
    assert.equal(three.received, 0, three.raw);
  });

  test('destroy() kills the forwarders, removes their binary and the namespaces', async () => {
    const lab = labs[0]!;
    const binary = join(lab.tempDir, 'proxy-shape');
    assert.ok(existsSync(binary), 'the lab compiled the forwarder into its temporary directory');
    const pids = [...(await namespacePids(lab.hostNs(1))), ...(await namespacePids(lab.hostNs(2)))];
    assert.equal(pids.length, 2, 'one forwarder per host');
    await lab.destroy();
    assert.deepEqual(
      pids.filter((pid) => alive(pid)),
      [],
    );
    assert.equal(existsSync(lab.tempDir), false);
    assert.deepEqual(
      listNamespaces().filter((ns) => ns.startsWith(lab.prefix)),
      [],
    );
  });
});
