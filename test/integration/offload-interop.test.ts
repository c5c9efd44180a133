/**
 * Offloads on one side only: host 1 runs with --no-offload --io-uring=false (plain datagrams,
 * plain TUN reads and writes, as a flanneld peer behaves), host 2 with its defaults (io_uring for
 * flannel0, TSO super-packets read from flannel0 and cut into segments, UDP GSO on send, UDP GRO
 * on receive, GRO-coalesced writes into flannel0). Real TCP both ways must arrive intact: a
 * coalesced super-packet with a wrong header or checksum would be dropped by the pod's kernel
 * (TcpInCsumErrors) and stall the flow.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Lab, removeStaleLabNamespaces, requireTools, type AgentCounters } from '../../src/lab/index.js';
import { burstReceiver, burstSenderArgv, checksumErrors } from '../helpers/pod-udp.js';

function counter(c: AgentCounters, name: string): number {
  const v = c[name];
  assert.ok(typeof v === 'number', `agent counters lack "${name}": ${JSON.stringify(c)}`);
  return v;
}

describe('offloads on one side only', { timeout: 120_000 }, () => {
  let lab: Lab;

  before(async () => {
    removeStaleLabNamespaces();
    await requireTools(['iperf3', 'ping']);
    lab = await Lab.create({
      hosts: 2,
      mode: 'flannel-ts',
      agentArgs: (n) => [...(n === 1 ? ['--no-offload', '--io-uring=false'] : []), '--datapath', 'userspace'],
    });
  });

  after(async () => {
    await lab?.destroy();
  });

  test('the agents negotiated what was asked (log line "forwarding")', () => {
    const forwarding = (n: number) => lab.agent(n).lines.find((l) => l['msg'] === 'forwarding')!;
    assert.equal(forwarding(1)['udpGso'], 0);
    assert.equal(forwarding(1)['tunGro'], false);
    assert.equal(forwarding(1)['tunTso'], false);
    assert.equal(forwarding(1)['udpGro'], false);
    assert.ok(Number(forwarding(2)['udpGso']) > 1, JSON.stringify(forwarding(2)));
    assert.equal(forwarding(2)['tunGro'], true);
    assert.equal(forwarding(2)['tunTso'], true);
    assert.equal(forwarding(2)['udpGro'], true);
    assert.equal(forwarding(1)['tunIoUring'], 0);
    assert.ok(Number(forwarding(2)['tunIoUring']) > 0, 'io_uring for flannel0 on this kernel');
  });

  test('TCP both ways arrives intact; host 2 coalesces what it writes into flannel0', async () => {
    const ping = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 3, intervalSec: 0.1 });
    assert.equal(ping.received, 3);
    const toOffloading = await lab.iperf3Tcp(1, 2, 2);
    const fromOffloading = await lab.iperf3Tcp(2, 1, 2);
    assert.ok(toOffloading.receivedBitsPerSecond > 50e6, `TCP 1->2 ${toOffloading.receivedBitsPerSecond} bit/s`);
    assert.ok(fromOffloading.receivedBitsPerSecond > 50e6, `TCP 2->1 ${fromOffloading.receivedBitsPerSecond} bit/s`);
    assert.equal(await checksumErrors(lab, 1, 'Tcp'), 0);
    assert.equal(await checksumErrors(lab, 2, 'Tcp'), 0);
    const c1 = await lab.agentCounters(1),
      c2 = await lab.agentCounters(2);
    assert.ok(counter(c2, 'tunGroWrites') > 0, 'host 2 wrote coalesced super-packets');
    assert.ok(counter(c2, 'tunGroPackets') > 2 * counter(c2, 'tunGroWrites'), 'super-packets carry several segments');
    assert.equal(counter(c1, 'tunGroWrites'), 0, 'host 1 (--no-offload) wrote plain packets only');
    // Host 2's pod sends through flannel0 with TSO: super-packets cut into MTU-sized segments.
    assert.ok(counter(c2, 'tunTsoPackets') > 0, 'host 2 read TSO super-packets');
    assert.ok(
      counter(c2, 'tunTsoSegments') > 2 * counter(c2, 'tunTsoPackets'),
      'a super-packet becomes several datagrams',
    );
    assert.equal(counter(c1, 'tunTsoPackets'), 0, 'host 1 (--no-offload) read plain packets only');
    for (const c of [c1, c2]) {
      for (const name of [
        'dropRxMalformed',
        'dropRxOversize',
        'dropRxWriteError',
        'dropTxSendError',
        'dropTxMalformed',
        'dropTxBadOffload',
      ]) {
        assert.equal(counter(c, name), 0, name);
      }
    }
    // What one side sent, the other received as separate datagrams (GSO does not change the wire);
    // 0.1% slack for a socket-buffer overflow under load, which the kernel, not we, would count.
    assert.ok(counter(c2, 'udpRecvPackets') >= 0.999 * counter(c1, 'udpSentPackets'), JSON.stringify({ c1, c2 }));
    assert.ok(counter(c1, 'udpRecvPackets') >= 0.999 * counter(c2, 'udpSentPackets'), JSON.stringify({ c1, c2 }));
  });

  test('UDP runs through the offloading host arrive byte for byte (coalesced into flannel0 as UDP GSO)', async () => {
    const COUNT = 3000,
      SIZE = 1000,
      PORT = 7777;
    const before = counter(await lab.agentCounters(2), 'tunGroPackets');
    const received = await burstReceiver(lab, 2, PORT, COUNT, 10_000);
    await lab.execChecked(lab.podNs(1), burstSenderArgv(lab.podAddr(2), PORT, COUNT, SIZE), 30_000);
    const result = await received.result;
    // UDP may lose a few under load (socket buffers on a busy 2-core machine); what arrives must be exact.
    assert.ok(result.received >= 0.8 * COUNT, `received ${result.received} of ${COUNT}`);
    assert.equal(result.intact, result.received, 'every datagram byte for byte');
    assert.ok(result.inOrder, 'in the order sent');
    const grouped = counter(await lab.agentCounters(2), 'tunGroPackets') - before;
    assert.ok(grouped > COUNT / 4, `host 2 wrote UDP runs as super-packets (${grouped} packets grouped)`);
    assert.equal(await checksumErrors(lab, 2, 'Udp'), 0);
  });
});
