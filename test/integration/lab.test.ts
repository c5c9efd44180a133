/**
 * The network-namespace lab itself (src/lab): the kernel VXLAN and host-gw modes that the
 * throughput benchmark compares against, three-host labs, cleanup after a crash, and the parsers
 * of ping and iperf3 output. Needs root, iproute2 and ping; a missing tool fails the suite.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Lab, listNamespaces, removeStaleLabNamespaces, requireTools } from '../../src/lab/index.js';
import { parseIperfTcp, parseIperfUdp, parsePing } from '../../src/lab/measure.js';

const labs: Lab[] = [];
async function createLab(options: Parameters<typeof Lab.create>[0]): Promise<Lab> {
  const lab = await Lab.create(options);
  labs.push(lab);
  return lab;
}
after(async () => {
  for (const lab of labs) await lab.destroy();
});

function labNamespaces(prefix: string): string[] {
  return listNamespaces().filter((ns) => ns.startsWith(prefix));
}

describe('lab: kernel VXLAN mode (flannel vxlan backend layout)', { timeout: 60_000 }, () => {
  test('flannel.1 is VNI 1, port 8472, nolearning; peers via onlink route, neighbour and fdb; pods reach each other at MTU 1450', async () => {
    removeStaleLabNamespaces();
    const lab = await createLab({ hosts: 2, mode: 'vxlan' });
    assert.equal(lab.podMtu, 1450);
    const h1 = lab.hostNs(1);
    const [link] = JSON.parse((await lab.execChecked(h1, ['ip', '-j', '-d', 'link', 'show', 'flannel.1'])).stdout) as {
      mtu: number;
      address: string;
      linkinfo: { info_kind: string; info_data: { id: number; port: number; learning: boolean; local: string } };
    }[];
    assert.ok(link);
    assert.equal(link.mtu, 1450);
    assert.equal(link.linkinfo.info_kind, 'vxlan');
    assert.equal(link.linkinfo.info_data.id, 1);
    assert.equal(link.linkinfo.info_data.port, 8472);
    assert.equal(link.linkinfo.info_data.learning, false);
    assert.equal(link.linkinfo.info_data.local, '192.0.2.1');
    const route = (await lab.execChecked(h1, ['ip', 'route', 'show', '10.244.2.0/24'])).stdout;
    assert.match(route, /10\.244\.2\.0\/24 via 10\.244\.2\.0 dev flannel\.1 onlink/);
    const [peerLink] = JSON.parse(
      (await lab.execChecked(lab.hostNs(2), ['ip', '-j', 'link', 'show', 'flannel.1'])).stdout,
    ) as { address: string }[];
    const neigh = (await lab.execChecked(h1, ['ip', 'neigh', 'show', 'dev', 'flannel.1'])).stdout;
    assert.match(neigh, new RegExp(`10\\.244\\.2\\.0 lladdr ${peerLink!.address} PERMANENT`));
    const fdb = (await lab.execChecked(h1, ['bridge', 'fdb', 'show', 'dev', 'flannel.1'])).stdout;
    assert.match(fdb, new RegExp(`${peerLink!.address} dst 192\\.0\\.2\\.2 self permanent`));

    const there = await lab.ping(lab.podNs(1), lab.podAddr(2), {
      count: 3,
      intervalSec: 0.05,
      sizeBytes: 1450 - 28,
      dontFragment: true,
    });
    assert.equal(there.received, 3, there.raw);
    const back = await lab.ping(lab.podNs(2), lab.podAddr(1), { count: 3, intervalSec: 0.05 });
    assert.equal(back.received, 3, back.raw);
    const tooBig = await lab.ping(lab.podNs(1), lab.podAddr(2), {
      count: 1,
      sizeBytes: 1450 - 27,
      dontFragment: true,
      timeoutSec: 1,
    });
    assert.equal(tooBig.received, 0, 'one byte over the pod MTU does not pass with DF');
  });
});

describe('lab: host-gw mode with three hosts', { timeout: 60_000 }, () => {
  test('every pod reaches every other pod through plain routes; destroy removes every namespace', async () => {
    const lab = await createLab({ hosts: 3, mode: 'host-gw' });
    assert.equal(lab.podMtu, 1500);
    const route = (await lab.execChecked(lab.hostNs(3), ['ip', 'route', 'show', '10.244.1.0/24'])).stdout;
    assert.match(route, /10\.244\.1\.0\/24 via 192\.0\.2\.1 dev eth0/);
    for (const [from, to] of [
      [1, 3],
      [3, 2],
      [2, 1],
    ] as const) {
      const r = await lab.ping(lab.podNs(from), lab.podAddr(to), { count: 2, intervalSec: 0.05 });
      assert.equal(r.received, 2, `pod${from} -> pod${to}: ${r.raw}`);
    }
    assert.equal(labNamespaces(lab.prefix).length, 7, 'switch + 3 hosts + 3 pods');
    await lab.destroy();
    assert.deepEqual(labNamespaces(lab.prefix), []);
    assert.equal(existsSync(lab.tempDir), false);
  });
});

describe('lab: cleanup after a crash', { timeout: 60_000 }, () => {
  test('removeStaleLabNamespaces removes the namespaces of a lab whose process was SIGKILLed, and only those', async () => {
    const live = await createLab({ hosts: 2, mode: 'host-gw' });
    const labModule = fileURLToPath(new URL('../../src/lab/index.js', import.meta.url));
    const script =
      `const { Lab } = await import(${JSON.stringify(labModule)});` +
      `const lab = await Lab.create({ hosts: 2, mode: 'host-gw' });` +
      `process.stdout.write(lab.prefix); process.kill(process.pid, 'SIGKILL');`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(child.signal, 'SIGKILL', child.stderr);
    const crashedPrefix = child.stdout.trim();
    assert.match(crashedPrefix, /^ft[0-9a-z]{5}$/);
    const leftovers = labNamespaces(crashedPrefix).sort();
    assert.equal(leftovers.length, 5, 'the killed lab left its namespaces behind');

    const removed = removeStaleLabNamespaces();
    assert.deepEqual(removed.filter((ns) => ns.startsWith(crashedPrefix)).sort(), leftovers);
    assert.deepEqual(
      removed.filter((ns) => ns.startsWith(live.prefix)),
      [],
    );
    assert.deepEqual(labNamespaces(crashedPrefix), [], 'the crashed lab is gone');
    assert.equal(labNamespaces(live.prefix).length, 5, "a live lab's namespaces are left alone");
    const r = await live.ping(live.podNs(1), live.podAddr(2), { count: 1 });
    assert.equal(r.received, 1);
  });
});

describe('lab: preconditions', () => {
  test('a missing tool is an error naming it (tests fail, never skip)', async () => {
    await requireTools(['ip', 'ping']);
    await assert.rejects(requireTools(['ip', 'no-such-tool-ftlab']), /not installed: no-such-tool-ftlab/);
  });
});

describe('lab: output parsers', () => {
  test('parsePing reads counts and round trips in microseconds', () => {
    const r = parsePing(
      'PING 10.244.2.2 (10.244.2.2) 56(84) bytes of data.\n\n--- 10.244.2.2 ping statistics ---\n' +
        '200 packets transmitted, 199 received, 0.5% packet loss, time 1021ms\n' +
        'rtt min/avg/max/mdev = 0.011/0.020/0.105/0.008 ms\n',
    );
    assert.equal(r.transmitted, 200);
    assert.equal(r.received, 199);
    assert.equal(r.minRttUs, 11);
    assert.equal(r.avgRttUs, 20);
    assert.equal(r.maxRttUs, 105);
    const none = parsePing('3 packets transmitted, 0 received, 100% packet loss, time 2040ms\n');
    assert.equal(none.received, 0);
    assert.ok(Number.isNaN(none.avgRttUs));
    assert.throws(() => parsePing('ping: connect: Network is unreachable'), /cannot parse ping output/);
  });

  test("parseIperfUdp counts delivered datagrams from the receiver's bytes, not its sequence numbers", () => {
    const json = JSON.stringify({
      end: {
        sum_sent: { seconds: 1.0001, bytes: 2960000, packets: 46250, lost_packets: 0 },
        sum_received: { seconds: 1.0, bytes: 2634688, packets: 46227, lost_packets: 5060, jitter_ms: 0.0015 },
      },
    });
    const r = parseIperfUdp(json, 64);
    assert.equal(r.sentPackets, 46250);
    assert.equal(r.deliveredPackets, 41167); // 2634688 / 64
    assert.equal(r.lostPackets, 46250 - 41167);
    assert.equal(r.deliveredPacketsPerSecond, 41167);
    assert.throws(
      () => parseIperfUdp(JSON.stringify({ error: 'unable to connect to server' }), 64),
      /unable to connect/,
    );
  });

  test("parseIperfTcp reads the receiver's rate and the retransmits", () => {
    const r = parseIperfTcp(
      JSON.stringify({
        end: {
          sum_sent: { seconds: 5, bits_per_second: 1.2e9, retransmits: 7 },
          sum_received: { seconds: 5, bits_per_second: 1.1e9 },
        },
      }),
    );
    assert.equal(r.receivedBitsPerSecond, 1.1e9);
    assert.equal(r.retransmits, 7);
    assert.throws(() => parseIperfTcp('iperf3: error'), /did not print JSON/);
  });
});
