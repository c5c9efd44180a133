// The host-gw backend, as flanneld's pkg/backend/hostgw (plain kernel routing, no encapsulation):
//
// - no device: the lease carries "BackendType":"host-gw", FLANNEL_MTU is the external MTU;
// - the PublicIP must be the external interface's own address (flanneld refuses NAT: peers must
//   reach this host at the address it announces);
// - per peer lease of type host-gw, a route to its subnet via its PublicIP on the external
//   interface; the kernel refuses a gateway that is not on a directly connected network, which is
//   logged once per peer (host-gw needs every host on one L2 segment) and retried every 10 s;
// - every 10 s (flanneld's routeCheck) the routes are looked up, and any that someone deleted is put
//   back; a route is removed when its lease goes or changes;
// - a peer lease of another type is ignored with a warning.
import type { KernelRoute } from '../kernel/kernel.js';
import { sameRoute } from '../kernel/kernel.js';
import { formatCidr, formatIPv4 } from '../routing-table/ipv4.js';
import type { Route } from '../routing-table/snapshot.js';
import type { Ipv4Net } from '../subnet/config.js';
import type { BackendLeaseAttrs } from '../subnet/lease.js';
import { OnceLog, type Backend, type BackendContext, type PeerLease } from './backend.js';
import { KernelSync } from './kernel-sync.js';

/** flanneld's routeCheckRetries seconds between checks of the installed routes. */
export const ROUTE_CHECK_MS = 10_000;

interface HostGwPeer {
  readonly subnet: Ipv4Net;
  readonly publicIp: number;
}

export class HostGwBackend implements Backend {
  readonly type = 'host-gw';
  readonly datapath = null;
  private readonly warnings: OnceLog;
  private readonly sync: KernelSync<HostGwPeer>;
  private subnet: Ipv4Net | null = null;
  private checkTimer: NodeJS.Timeout | null = null;
  private checking: Promise<void> | null = null;
  private closed = false;

  constructor(
    private readonly ctx: BackendContext,
    private readonly routeCheckMs = ROUTE_CHECK_MS,
  ) {
    this.warnings = new OnceLog(ctx.log);
    this.sync = new KernelSync<HostGwPeer>({
      kernel: ctx.kernel,
      log: ctx.log,
      program: (p) => {
        const route = this.routeOf(p);
        return { add: [[{ op: 'route-replace', route }]], remove: [{ op: 'route-del', route }] };
      },
      same: (a, b) => a.publicIp === b.publicIp,
      describe: (p) => `${formatCidr(p.subnet.prefix, p.subnet.prefixLen)} via ${formatIPv4(p.publicIp)}`,
      failureMessage: 'cannot add the route to a peer (host-gw needs every host on a directly connected network)',
      retryMs: routeCheckMs,
    });
  }

  get mtu(): number {
    return this.ctx.ext.mtu;
  }

  /** The peers whose routes are believed programmed, by subnet. */
  get programmed(): ReadonlyMap<string, HostGwPeer> {
    return this.sync.installedEntries;
  }

  prepare(): Promise<BackendLeaseAttrs> {
    if (this.ctx.publicIp !== this.ctx.ext.address) {
      return Promise.reject(
        new Error(
          "your PublicIP differs from interface IP, meaning that probably you're on a NAT, " +
            'which is not supported by host-gw backend',
        ),
      );
    }
    return Promise.resolve({ backendType: 'host-gw' });
  }

  start(subnet: Ipv4Net): Promise<void> {
    this.subnet = subnet;
    this.armCheck();
    return Promise.resolve();
  }

  setPeers(peers: readonly PeerLease[]): Route[] {
    const wanted = new Map<string, HostGwPeer>();
    const keys = new Set<string>();
    for (const peer of peers) {
      keys.add(peer.key);
      if (peer.backendType !== 'host-gw') {
        this.warnings.warn(peer.key, 'Ignoring non-host-gw subnet', {
          subnet: formatCidr(peer.subnet.prefix, peer.subnet.prefixLen),
          type: peer.backendType ?? '',
        });
        continue;
      }
      this.warnings.clear(peer.key);
      wanted.set(formatCidr(peer.subnet.prefix, peer.subnet.prefixLen), {
        subnet: peer.subnet,
        publicIp: peer.publicIp,
      });
    }
    this.warnings.retain(keys);
    this.sync.want(wanted);
    return [...wanted.values()].map((p) => ({
      prefix: p.subnet.prefix,
      prefixLen: p.subnet.prefixLen,
      publicIp: p.publicIp,
    }));
  }

  changeSubnet(subnet: Ipv4Net): Promise<void> {
    this.subnet = subnet;
    return Promise.resolve();
  }

  async settled(): Promise<void> {
    await this.checking;
    await this.sync.settled();
  }

  describe(): Record<string, unknown> {
    return {
      backend: 'host-gw',
      mtu: this.mtu,
      iface: this.ctx.ext.name,
      publicIp: formatIPv4(this.ctx.publicIp),
      network: formatCidr(this.ctx.network.prefix, this.ctx.network.prefixLen),
      ...(this.subnet !== null ? { subnet: formatCidr(this.subnet.prefix, this.subnet.prefixLen) } : {}),
    };
  }

  /** Stops checking; the routes stay (as flanneld leaves them). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.checkTimer !== null) clearTimeout(this.checkTimer);
    this.checkTimer = null;
    this.sync.close();
    await this.checking;
    await this.sync.settled();
  }

  /** Looks the installed routes up in the kernel, and puts back any that is missing. */
  async checkRoutes(): Promise<void> {
    const installed = [...this.sync.installedEntries];
    if (installed.length === 0) return;
    const present = await this.ctx.kernel.routes();
    const missing: string[] = [];
    for (const [id, peer] of installed) {
      const route = this.routeOf(peer);
      if (!present.some((r) => sameRoute(r, route))) missing.push(id);
    }
    for (const id of missing) this.ctx.log.info('Route recovered', { route: id });
    this.sync.forget(missing);
  }

  private routeOf(p: HostGwPeer): KernelRoute {
    return { dst: p.subnet, via: p.publicIp, dev: this.ctx.ext.name };
  }

  private armCheck(): void {
    if (this.closed) return;
    this.checkTimer = setTimeout(() => {
      this.checking = this.checkRoutes()
        .catch((err: Error) =>
          this.ctx.log.error('Error fetching route list. Will automatically retry', { error: err.message }),
        )
        .finally(() => {
          this.checking = null;
          this.armCheck();
        });
    }, this.routeCheckMs);
    this.checkTimer.unref();
  }
}
