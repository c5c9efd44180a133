// The fast path's per-CPU counter slots (enum counter in native/bpf/flannel_udp.bpf.c, same
// order) and where each goes: a datapath counter of the same meaning (added to the TypeScript
// datapath's own, so one set of names covers both), or a name of its own.
import { C, type CounterName } from '../datapath/counters.js';

export const FASTPATH_SLOTS = [
  'udpSentPackets',
  'udpSentBytes',
  'dropTxTtl',
  'kernelTxPassedUp',
  'udpRecvPackets',
  'udpRecvBytes',
  'tunWritePackets',
  'tunWriteBytes',
  'dropRxUnknownSender',
  'dropRxSpoofedSource',
  'dropRxNotForUs',
  'dropRxTtl',
  'dropRxOversize',
  'kernelRxPassedUp',
  'kernelTxFailed',
  'kernelRxFailed',
] as const;

/**
 * Counters only the fast path has: packets it handed to the TypeScript datapath unchanged (they
 * are counted again there), and packets lost inside it after the TTL was spent (a helper failed).
 */
export type KernelOnlyCounter = 'kernelTxPassedUp' | 'kernelRxPassedUp' | 'kernelTxFailed' | 'kernelRxFailed';

/** Slot index -> datapath counter index (C.*), or -1 for a kernel-only counter. */
export const SLOT_TO_DATAPATH: Int32Array = Int32Array.from(FASTPATH_SLOTS, (name) =>
  name in C ? C[name as CounterName] : -1,
);
