// The fast path's counter slots (src/fastpath/counters.ts) against the C enum that indexes the
// per-CPU counters map (native/bpf/flannel_udp.bpf.c): same order, same meaning, and every name
// that is also a datapath counter is added to it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { C } from '../../src/datapath/counters.js';
import { FASTPATH_SLOTS, SLOT_TO_DATAPATH } from '../../src/fastpath/counters.js';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** C enum name -> counter name. */
const C_NAMES: Record<string, string> = {
  CNT_UDP_SENT_PACKETS: 'udpSentPackets',
  CNT_UDP_SENT_BYTES: 'udpSentBytes',
  CNT_DROP_TX_TTL: 'dropTxTtl',
  CNT_TX_PASSED_UP: 'kernelTxPassedUp',
  CNT_UDP_RECV_PACKETS: 'udpRecvPackets',
  CNT_UDP_RECV_BYTES: 'udpRecvBytes',
  CNT_TUN_WRITE_PACKETS: 'tunWritePackets',
  CNT_TUN_WRITE_BYTES: 'tunWriteBytes',
  CNT_DROP_RX_UNKNOWN_SENDER: 'dropRxUnknownSender',
  CNT_DROP_RX_SPOOFED_SOURCE: 'dropRxSpoofedSource',
  CNT_DROP_RX_NOT_FOR_US: 'dropRxNotForUs',
  CNT_DROP_RX_TTL: 'dropRxTtl',
  CNT_DROP_RX_OVERSIZE: 'dropRxOversize',
  CNT_RX_PASSED_UP: 'kernelRxPassedUp',
  CNT_TX_REDIRECT_FAILED: 'kernelTxFailed',
  CNT_RX_REDIRECT_FAILED: 'kernelRxFailed',
};

test('the slots follow enum counter of the BPF source, in order', () => {
  const source = readFileSync(path.join(repoDir, 'native', 'bpf', 'flannel_udp.bpf.c'), 'utf8');
  const body = /enum counter \{([^}]*)\}/.exec(source)?.[1];
  assert.ok(body, 'enum counter in the BPF source');
  const names = body
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '' && s !== 'CNT_COUNT');
  assert.deepEqual(
    names.map((n) => C_NAMES[n] ?? `unmapped ${n}`),
    [...FASTPATH_SLOTS],
  );
});

test('shared names add to the datapath counter of that name; the kernel-only ones stay apart', () => {
  FASTPATH_SLOTS.forEach((name, i) => {
    if (name.startsWith('kernel')) assert.equal(SLOT_TO_DATAPATH[i], -1, name);
    else assert.equal(SLOT_TO_DATAPATH[i], C[name as keyof typeof C], name);
  });
});
