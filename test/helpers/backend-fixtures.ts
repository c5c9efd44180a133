// Shared set-up for the backend unit tests: a capturing logger, a BackendContext on a FakeKernel,
// and peer leases as the RouteWatcher hands them in.
import type { BackendContext, PeerLease } from '../../src/backend/backend.js';
import { createLogger, type Logger } from '../../src/observability/log.js';
import { parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';
import { FakeKernel } from './fake-kernel.js';

export interface CapturedLog {
  readonly log: Logger;
  readonly lines: Record<string, unknown>[];
  /** The lines of that level whose msg matches. */
  find(level: string, msg: RegExp): Record<string, unknown>[];
}

export function captureLog(): CapturedLog {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger('debug', (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
  return {
    log,
    lines,
    find: (level, msg) => lines.filter((l) => l['level'] === level && msg.test(String(l['msg']))),
  };
}

export function backendContext(
  kernel: FakeKernel,
  log: Logger,
  host = { name: 'eth0', address: '192.0.2.1', mtu: 1500 },
): BackendContext {
  if (!kernel.links.has(host.name)) kernel.addPlainLink(host.name, host.mtu);
  kernel.connected = [parseCidr('192.0.2.0/24')];
  return {
    ext: { name: host.name, address: parseIPv4(host.address), mtu: host.mtu },
    publicIp: parseIPv4(host.address),
    network: parseCidr('10.244.0.0/16'),
    kernel,
    log,
    udp: { batch: 64, offloads: { tun: false, udp: false }, tunIoUring: false, workers: 1, datapath: 'userspace' },
  };
}

let revision = 1;

/** A peer lease: vxlan with the MAC given, host-gw, or any BackendType/BackendData. */
export function peer(n: number, publicIp: string, backendType: string | null, backendData: unknown = null): PeerLease {
  return {
    key: `/coreos.com/network/subnets/10.244.${n}.0-24`,
    subnet: parseCidr(`10.244.${n}.0/24`),
    publicIp: parseIPv4(publicIp),
    backendType,
    backendData,
    modRevision: revision++,
  };
}

export const vxlanPeer = (n: number, publicIp: string, mac: string): PeerLease =>
  peer(n, publicIp, 'vxlan', { VNI: 1, VtepMAC: mac });
