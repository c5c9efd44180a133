// The udp backend: flannel0 and the batched userspace datapath (udp-datapath.ts). Like flannel's udp
// backend it writes no BackendType, and routes every peer lease to its PublicIP whatever the lease's
// BackendType (flannel's udp network never looks at it).
import type { Route } from '../routing-table/snapshot.js';
import type { Ipv4Net, UdpBackendConfig } from '../subnet/config.js';
import type { BackendLeaseAttrs } from '../subnet/lease.js';
import type { Backend, BackendContext, PeerLease } from './backend.js';
import { Datapath } from './udp-datapath.js';

export class UdpBackend implements Backend {
  readonly type = 'udp';
  private dp: Datapath | null = null;

  constructor(
    private readonly config: UdpBackendConfig,
    private readonly ctx: BackendContext,
  ) {}

  get datapath(): Datapath | null {
    return this.dp;
  }

  get mtu(): number {
    return this.started().mtu;
  }

  prepare(): Promise<BackendLeaseAttrs> {
    return Promise.resolve({ backendType: null });
  }

  start(subnet: Ipv4Net): Promise<void> {
    this.dp = Datapath.open({
      ext: this.ctx.ext,
      network: this.ctx.network,
      subnet,
      port: this.config.port,
      ...this.ctx.udp,
    });
    return Promise.resolve();
  }

  setPeers(peers: readonly PeerLease[]): Route[] {
    const routes = peers.map((p) => ({ prefix: p.subnet.prefix, prefixLen: p.subnet.prefixLen, publicIp: p.publicIp }));
    this.started().setRoutes(routes);
    return routes;
  }

  changeSubnet(subnet: Ipv4Net): Promise<void> {
    this.started().changeSubnet(subnet, this.ctx.network);
    return Promise.resolve();
  }

  settled(): Promise<void> {
    return Promise.resolve(); // setRoutes is in force when it returns
  }

  describe(): Record<string, unknown> {
    return { backend: 'udp', ...this.started().describe(this.ctx.publicIp, this.ctx.network) };
  }

  /** Closes flannel0 and the socket (stop the datapath first to read final counters). */
  close(): Promise<void> {
    this.dp?.close();
    return Promise.resolve();
  }

  private started(): Datapath {
    if (this.dp === null) throw new Error('the udp backend is not started');
    return this.dp;
  }
}
