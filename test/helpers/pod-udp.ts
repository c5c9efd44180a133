/**
 * UDP checks from inside a lab's pods, shared by the offload namespace tests: the kernel's
 * checksum-error counters, and a receiver (udp-burst.js receive) that checks every datagram.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Lab } from '../../src/lab/index.js';

const UDP_BURST = path.join(path.dirname(fileURLToPath(import.meta.url)), 'udp-burst.js');

/** The pod kernel's InCsumErrors for protocol 'Tcp' or 'Udp' (/proc/net/snmp): segments or datagrams dropped for a bad
 * checksum. */
export async function checksumErrors(lab: Lab, pod: number, protocol: 'Tcp' | 'Udp'): Promise<number> {
  const snmp = await lab.execChecked(lab.podNs(pod), ['cat', '/proc/net/snmp']);
  const rows = snmp.stdout.split('\n').filter((l) => l.startsWith(`${protocol}: `));
  const names = rows[0]!.split(/\s+/),
    values = rows[1]!.split(/\s+/);
  return Number(values[names.indexOf('InCsumErrors')]);
}

/** What the receiver saw: datagrams, those that were byte for byte the pattern their number gives, and whether in
 * order. */
export interface BurstResult {
  received: number;
  intact: number;
  inOrder: boolean;
}

/** Runs `node udp-burst.js send ADDR PORT COUNT SIZE` in a pod (the sender for burstReceiver). */
export function burstSenderArgv(addr: string, port: number, count: number, size: number): string[] {
  return [process.execPath, UDP_BURST, 'send', addr, String(port), String(count), String(size)];
}

/**
 * Starts a receiver in the pod for `count` numbered datagrams on `port`; resolves once it listens,
 * with `result`, the promise of what it saw (after `count` datagrams, or `timeoutMs` without them).
 * (Wrapped in an object: an async function's returned promise would be adopted, not handed back.)
 */
export async function burstReceiver(
  lab: Lab,
  pod: number,
  port: number,
  count: number,
  timeoutMs: number,
): Promise<{ result: Promise<BurstResult> }> {
  const receiver = lab.spawn(lab.podNs(pod), [
    process.execPath,
    UDP_BURST,
    'receive',
    String(port),
    String(count),
    String(timeoutMs),
  ]);
  let out = '';
  const ready = new Promise<void>((resolve) => {
    receiver.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
  });
  const exited = new Promise<void>((resolve) => receiver.once('exit', () => resolve()));
  await ready;
  return { result: exited.then(() => JSON.parse(out.split('\n').find((l) => l.startsWith('{'))!) as BurstResult) };
}
