/**
 * USO reads from flannel0: a pod that sends with UDP GSO (UDP_SEGMENT, as QUIC stacks and
 * wireguard-go do) hands flannel0 one super-packet per sendmsg; host 1 (defaults: TUN_F_USO4|USO6
 * where the kernel takes them) cuts each into its datagrams, one inner packet per datagram on the
 * wire. Host 2 runs with --no-offload --io-uring=false, as a flanneld peer: it takes plain
 * datagrams only, so every byte arriving in its pod shows that the cut datagrams are exactly what
 * the kernel would have sent (headers, lengths, checksums: a bad UDP checksum is dropped by the
 * pod's kernel and counted in InCsumErrors).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Lab, removeStaleLabNamespaces, requireTools, type AgentCounters } from '../../src/lab/index.js';
import { burstReceiver, checksumErrors } from '../helpers/pod-udp.js';

// A .py file is not compiled into dist: read it from the source tree (dist/test/integration -> test/helpers).
const UDP_GSO_SEND = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
  'test',
  'helpers',
  'udp-gso-send.py',
);

function counter(c: AgentCounters, name: string): number {
  const v = c[name];
  assert.ok(typeof v === 'number', `agent counters lack "${name}": ${JSON.stringify(c)}`);
  return v;
}

describe('USO: UDP GSO super-packets read from flannel0', { timeout: 120_000 }, () => {
  let lab: Lab;

  before(async () => {
    removeStaleLabNamespaces();
    await requireTools(['ping', 'python3']);
    lab = await Lab.create({
      hosts: 2,
      mode: 'flannel-ts',
      agentArgs: (n) => (n === 2 ? ['--no-offload', '--io-uring=false'] : []),
    });
  });

  after(async () => {
    await lab?.destroy();
  });

  test('the offloading host negotiated USO (log line "forwarding"), the plain one did not', () => {
    const forwarding = (n: number) => lab.agent(n).lines.find((l) => l['msg'] === 'forwarding')!;
    assert.equal(forwarding(1)['tunUso'], true, JSON.stringify(forwarding(1)));
    assert.equal(forwarding(1)['tunTso'], true);
    assert.equal(forwarding(2)['tunUso'], false);
    assert.equal(forwarding(2)['tunTso'], false);
  });

  test("a pod's UDP GSO sends arrive at a plain peer as separate datagrams, byte for byte", async () => {
    // 3,000 datagrams of 1,200 bytes (the last of each sendto 1,000), 40 per sendto: 75 super-packets.
    const COUNT = 3000,
      SIZE = 1200,
      PER = 40,
      SHORTER = 200,
      PORT = 7778;
    const before1 = await lab.agentCounters(1);
    const received = await burstReceiver(lab, 2, PORT, COUNT, 15_000);
    await lab.execChecked(
      lab.podNs(1),
      [
        'python3',
        UDP_GSO_SEND,
        lab.podAddr(2),
        String(PORT),
        String(COUNT),
        String(SIZE),
        String(PER),
        String(SHORTER),
      ],
      60_000,
    );
    const result = await received.result;
    // UDP may lose a few under load (socket buffers on a busy 2-core machine); what arrives must be exact.
    assert.ok(result.received >= 0.8 * COUNT, `received ${result.received} of ${COUNT}`);
    assert.equal(result.intact, result.received, 'every datagram byte for byte (the short last ones too)');
    assert.ok(result.inOrder, 'in the order sent');
    assert.equal(await checksumErrors(lab, 2, 'Udp'), 0, 'no datagram with a bad UDP checksum reached the pod');

    const c1 = await lab.agentCounters(1);
    const d = (name: string): number => counter(c1, name) - counter(before1, name);
    // The pod's kernel may still cut a few sends itself (e.g. while flannel0's queue is full), so
    // most, not all, arrive as super-packets; each super-packet is PER datagrams.
    assert.ok(d('tunUsoPackets') >= COUNT / PER / 2, `USO super-packets read: ${d('tunUsoPackets')}`);
    assert.equal(d('tunUsoSegments'), PER * d('tunUsoPackets'), 'each cut into its datagrams');
    assert.ok(d('udpSentPackets') >= COUNT, `every datagram sent on the wire: ${d('udpSentPackets')}`);
    for (const name of ['dropTxBadOffload', 'dropTxOversize', 'dropTxMalformed', 'dropTxSendError'])
      assert.equal(d(name), 0, name);
  });
});
