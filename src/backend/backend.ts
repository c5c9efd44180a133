// The backend interface, as flannel's pkg/backend: Backend.Type in the network config picks one;
// it owns its device, the attributes it writes into its lease (BackendType, BackendData) and its
// reaction to the peers' leases. The agent (src/agent/registry-agent.ts) knows only this interface.
//
// The life of a backend, in flanneld's order:
//   prepare(ownLease)  before the lease: vxlan creates its device here (its MAC taken back from the
//                      host's own lease); returns what the lease carries beside PublicIP;
//   start(subnet)      with the lease: the device gets the subnet's address;
//   setPeers(peers)    after every change of the peer leases: the complete list, own lease excluded;
//   changeSubnet(s)    the lease was lost and another subnet acquired;
//   close()            stops; kernel backends leave their device and entries (as flanneld does, so
//                      traffic keeps flowing across a restart), udp closes flannel0.
import type { ExternalInterface } from '../link/ip.js';
import type { Kernel } from '../kernel/kernel.js';
import type { Logger } from '../observability/log.js';
import type { Route } from '../routing-table/snapshot.js';
import type { BackendConfig, BackendType, Ipv4Net } from '../subnet/config.js';
import type { BackendLeaseAttrs, LeaseAttrs } from '../subnet/lease.js';
import type { PeerLease } from '../subnet/route-watcher.js';
import type { DatapathChoice } from '../fastpath/fast-path.js';
import type { DatapathWait } from '../cli/flags.js';
import type { Datapath, Offloads } from './udp-datapath.js';

export type { PeerLease };

/**
 * The udp datapath's tuning flags (--batch, --offloads, --io-uring, --workers, --datapath,
 * --datapath-wait, --datapath-slice-us, --datapath-spin-us).
 */
export interface UdpDatapathTuning {
  readonly batch: number;
  readonly offloads: Offloads;
  readonly tunIoUring: boolean;
  readonly workers: 1 | 2;
  readonly datapath: DatapathChoice;
  readonly datapathWait?: DatapathWait;
  readonly datapathSliceUs?: number;
  readonly datapathSpinUs?: number;
}

export interface BackendContext {
  readonly ext: ExternalInterface;
  readonly publicIp: number;
  /** The whole flannel network. */
  readonly network: Ipv4Net;
  readonly kernel: Kernel;
  readonly log: Logger;
  readonly udp: UdpDatapathTuning;
}

export interface Backend {
  readonly type: BackendType;
  /** FLANNEL_MTU: the MTU pods must use (valid after start()). */
  readonly mtu: number;
  /** The udp backend's datapath (counters, offloads), null for the kernel backends. */
  readonly datapath: Datapath | null;
  /** Before the lease; ownLease is this host's lease as the registry still holds it, if any. */
  prepare(ownLease: LeaseAttrs | null): Promise<BackendLeaseAttrs>;
  start(subnet: Ipv4Net): Promise<void>;
  /**
   * The complete peer list. Returns the routes wanted now (peer subnet -> PublicIP, the peers this
   * backend accepted), for logs and health; a kernel backend programs them in the background.
   */
  setPeers(peers: readonly PeerLease[]): Route[];
  changeSubnet(subnet: Ipv4Net): Promise<void>;
  /** Resolves once everything handed in so far has been tried on the kernel. */
  settled(): Promise<void>;
  /** The fields of the agent's "forwarding" log line. */
  describe(): Record<string, unknown>;
  close(): Promise<void>;
}

export type BackendFactory = (config: BackendConfig, ctx: BackendContext) => Backend;

/** Logs a warning once per key and message, so a lease re-read on every change does not flood. */
export class OnceLog {
  private readonly seen = new Map<string, string>();
  constructor(private readonly log: Logger) {}
  warn(key: string, msg: string, fields: Record<string, unknown>): void {
    const id = msg + JSON.stringify(fields);
    if (this.seen.get(key) === id) return;
    this.seen.set(key, id);
    this.log.warn(msg, fields);
  }
  /** The key's state is fine again: a later problem is logged anew. */
  clear(key: string): void {
    this.seen.delete(key);
  }
  /** Forgets keys no longer present. */
  retain(keys: ReadonlySet<string>): void {
    for (const k of this.seen.keys()) if (!keys.has(k)) this.seen.delete(k);
  }
}
