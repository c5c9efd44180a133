// The vxlan backend, as flanneld's pkg/backend/vxlan (kernel VXLAN, no daemon on the datapath):
//
// - device flannel.<VNI>: VXLAN id VNI, local = the external interface's address, on that
//   interface, UDP port Backend.Port (0: the kernel's 8472), learning off unless Backend.Learning,
//   GBP if asked, MTU = (Backend.MTU or the interface's MTU) - 50; address = the subnet's network
//   address as a /32 (other addresses of the flannel network on it are removed), link up. An
//   existing compatible device is kept as it is (MAC included), an incompatible one recreated;
// - the MAC: the existing device's, else the VtepMAC of this host's lease still in the registry,
//   else a random locally administered one. flanneld on etcd keeps it only through the device that
//   survives its restart; flannel-ts also takes it back from the lease, so a host whose device was
//   lost (reboot) keeps the MAC its peers have programmed;
// - the lease: "BackendType":"vxlan","BackendData":{"VNI":<VNI>,"VtepMAC":"<MAC>"};
// - per peer lease of type vxlan, as flanneld: a permanent neighbour (the peer subnet's network
//   address -> its VtepMAC) and an fdb entry (VtepMAC -> PublicIP), then the route (peer subnet via
//   its network address, onlink, on the device). flanneld adds the fdb entry after the neighbour;
//   flannel-ts adds both at once (they do not depend on each other), the route still last; with
//   DirectRouting, a peer whose PublicIP the kernel reaches without a gateway gets a plain route
//   via its PublicIP instead;
//   everything is removed when the lease goes or changes (flanneld leaves a changed lease's old fdb
//   entry behind);
// - a peer lease of another type is ignored with a warning, one with unreadable BackendData too;
// - the device deleted under the agent is rebuilt (same MAC), and every entry with it.
import type { Kernel, KernelRoute, LinkInfo, LinkWatch } from '../kernel/kernel.js';
import type { Logger } from '../observability/log.js';
import { formatCidr, formatIPv4, maskOf } from '../routing-table/ipv4.js';
import type { Route } from '../routing-table/snapshot.js';
import { lookupFoldedKey, type Ipv4Net, type VxlanBackendConfig } from '../subnet/config.js';
import type { BackendLeaseAttrs, LeaseAttrs } from '../subnet/lease.js';
import { OnceLog, type Backend, type BackendContext, type PeerLease } from './backend.js';
import { KernelSync, type EntryProgram } from './kernel-sync.js';
import { parseMac, randomMac } from './mac.js';

/** flannel's encapOverhead: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const VXLAN_OVERHEAD = 50;
/** The port the kernel uses when the device is created with port 0. */
export const KERNEL_VXLAN_PORT = 8472;
const REBUILD_BACKOFF_MAX_MS = 30_000;

interface VxlanPeer {
  readonly subnet: Ipv4Net;
  readonly publicIp: number;
  readonly mac: string;
  /** DirectRouting: a plain route via PublicIP, no VXLAN. */
  readonly direct: boolean;
}

/** The VtepMAC of a vxlan lease's BackendData; null when missing or unreadable. */
export function vtepMacOf(backendData: unknown): string | null {
  if (typeof backendData !== 'object' || backendData === null || Array.isArray(backendData)) return null;
  const raw = lookupFoldedKey(backendData as Record<string, unknown>, 'VtepMAC');
  return typeof raw === 'string' ? parseMac(raw) : null;
}

export class VxlanBackend implements Backend {
  readonly type = 'vxlan';
  readonly datapath = null;
  readonly device: string;
  private readonly kernel: Kernel;
  private readonly log: Logger;
  private readonly warnings: OnceLog;
  private readonly sync: KernelSync<VxlanPeer>;
  private macNow = '';
  private mtuNow = 0;
  private subnet: Ipv4Net | null = null;
  private watch: LinkWatch | null = null;
  private rebuilding: Promise<void> | null = null;
  private closed = false;
  /** DirectRouting: whether each PublicIP is reached without a gateway (flanneld asks per event). */
  private readonly directCache = new Map<number, boolean>();
  /** Bumped per setPeers, so that a slow DirectRouting lookup cannot hand in a stale set. */
  private generation = 0;

  constructor(
    private readonly config: VxlanBackendConfig,
    private readonly ctx: BackendContext,
  ) {
    this.device = `flannel.${config.vni}`;
    this.kernel = ctx.kernel;
    this.log = ctx.log;
    this.warnings = new OnceLog(ctx.log);
    this.sync = new KernelSync<VxlanPeer>({
      kernel: ctx.kernel,
      log: ctx.log,
      program: (p) => this.program(p),
      same: (a, b) => a.publicIp === b.publicIp && a.mac === b.mac && a.direct === b.direct,
      describe: (p) =>
        `${formatCidr(p.subnet.prefix, p.subnet.prefixLen)} PublicIP ${formatIPv4(p.publicIp)} VtepMAC ${p.mac}`,
    });
  }

  /** The device's MAC: the VtepMAC this host announces. */
  get mac(): string {
    return this.macNow;
  }

  get mtu(): number {
    return this.mtuNow;
  }

  /** The peers whose entries are believed programmed, by subnet. */
  get programmed(): ReadonlyMap<string, VxlanPeer> {
    return this.sync.installedEntries;
  }

  async prepare(ownLease: LeaseAttrs | null): Promise<BackendLeaseAttrs> {
    const c = this.config;
    this.log.info('VXLAN config', {
      VNI: c.vni,
      Port: c.port,
      GBP: c.gbp,
      Learning: c.learning,
      DirectRouting: c.directRouting,
    });
    const fromLease = ownLease?.backendType === 'vxlan' ? vtepMacOf(ownLease.backendData) : null;
    await this.ensureDevice(fromLease);
    return { backendType: 'vxlan', backendData: { VNI: c.vni, VtepMAC: this.macNow } };
  }

  async start(subnet: Ipv4Net): Promise<void> {
    await this.configure(subnet);
    this.subnet = subnet;
    this.watch = this.kernel.watchLinkDeleted(this.device, () => this.onDeviceDeleted());
  }

  setPeers(peers: readonly PeerLease[]): Route[] {
    const accepted: { peer: PeerLease; mac: string }[] = [];
    const keys = new Set<string>();
    for (const peer of peers) {
      keys.add(peer.key);
      if (peer.backendType !== 'vxlan') {
        this.warnings.warn(peer.key, 'ignoring non-vxlan subnet', {
          subnet: formatCidr(peer.subnet.prefix, peer.subnet.prefixLen),
          type: peer.backendType ?? '',
        });
        continue;
      }
      const mac = vtepMacOf(peer.backendData);
      if (mac === null) {
        this.warnings.warn(peer.key, 'error decoding subnet lease JSON: no valid VtepMAC in BackendData; ignoring', {
          key: peer.key,
          backendData: peer.backendData,
        });
        continue;
      }
      this.warnings.clear(peer.key);
      accepted.push({ peer, mac });
    }
    this.warnings.retain(keys);
    const gen = ++this.generation;
    const unknown = this.config.directRouting
      ? [...new Set(accepted.map((a) => a.peer.publicIp))].filter((ip) => !this.directCache.has(ip))
      : [];
    const wantNow = (): void => {
      if (gen !== this.generation || this.closed) return;
      const wanted = new Map<string, VxlanPeer>();
      for (const { peer, mac } of accepted) {
        const direct = this.config.directRouting && this.directCache.get(peer.publicIp) === true;
        wanted.set(formatCidr(peer.subnet.prefix, peer.subnet.prefixLen), {
          subnet: peer.subnet,
          publicIp: peer.publicIp,
          mac,
          direct,
        });
      }
      this.sync.want(wanted);
    };
    if (unknown.length === 0) wantNow();
    else {
      void Promise.all(
        unknown.map((ip) =>
          this.kernel.directlyConnected(ip).then(
            (direct) => this.directCache.set(ip, direct),
            (err: Error) => {
              this.log.error(`couldn't look up the route to ${formatIPv4(ip)}: ${err.message}`);
              this.directCache.set(ip, false);
            },
          ),
        ),
      ).then(wantNow);
    }
    return accepted.map(({ peer }) => ({
      prefix: peer.subnet.prefix,
      prefixLen: peer.subnet.prefixLen,
      publicIp: peer.publicIp,
    }));
  }

  async changeSubnet(subnet: Ipv4Net): Promise<void> {
    await this.configure(subnet);
    this.subnet = subnet;
  }

  async settled(): Promise<void> {
    // A DirectRouting lookup may still be on its way to the sync: give it a turn first.
    await new Promise((r) => setImmediate(r));
    while (this.rebuilding !== null) await this.rebuilding;
    await this.sync.settled();
  }

  describe(): Record<string, unknown> {
    return {
      backend: 'vxlan',
      device: this.device,
      vni: this.config.vni,
      vtepMac: this.macNow,
      mtu: this.mtuNow,
      port: this.config.port === 0 ? KERNEL_VXLAN_PORT : this.config.port,
      directRouting: this.config.directRouting,
      iface: this.ctx.ext.name,
      publicIp: formatIPv4(this.ctx.publicIp),
      network: formatCidr(this.ctx.network.prefix, this.ctx.network.prefixLen),
      ...(this.subnet !== null ? { subnet: formatCidr(this.subnet.prefix, this.subnet.prefixLen) } : {}),
    };
  }

  /** Stops watching; the device and its entries stay (see the header of backend.ts). */
  async close(): Promise<void> {
    this.closed = true;
    this.watch?.close();
    this.watch = null;
    this.sync.close();
    await this.sync.settled();
    await this.rebuilding?.catch(() => undefined);
  }

  // --- the device ----------------------------------------------------------------------

  private program(p: VxlanPeer): EntryProgram {
    if (p.direct) {
      const route: KernelRoute = { dst: p.subnet, via: p.publicIp, dev: null };
      return { add: [[{ op: 'route-replace', route }]], remove: [{ op: 'route-del', route }] };
    }
    const dev = this.device;
    const vtep = p.subnet.prefix;
    const route: KernelRoute = { dst: p.subnet, via: vtep, dev, onlink: true };
    return {
      // The neighbour and the fdb entry do not depend on each other (one step, two tools at once);
      // the route goes last, as flanneld insists, so that the kernel never ARPs for the gateway.
      add: [
        [
          { op: 'neigh-replace', dev, ip: vtep, mac: p.mac },
          { op: 'fdb-replace', dev, mac: p.mac, dst: p.publicIp },
        ],
        [{ op: 'route-replace', route }],
      ],
      remove: [
        { op: 'neigh-del', dev, ip: vtep },
        { op: 'fdb-del', dev, mac: p.mac, dst: p.publicIp },
        { op: 'route-del', route },
      ],
    };
  }

  /** flanneld's ensureLink: keep a compatible device, recreate an incompatible one. */
  private async ensureDevice(preferredMac: string | null): Promise<void> {
    const c = this.config;
    const existing = await this.kernel.link(this.device);
    if (existing !== null) {
      const incompat = this.incompatibility(existing);
      if (incompat === null && existing.mac !== null) {
        this.macNow = existing.mac;
        this.mtuNow = existing.mtu;
        this.log.info('VXLAN device already exists; keeping it', { device: this.device, mac: existing.mac });
        return;
      }
      this.log.warn(`${this.device} already exists with incompatible configuration: ${incompat}; recreating device`);
      await this.kernel.deleteLink(this.device);
    }
    const mac = preferredMac ?? (this.macNow !== '' ? this.macNow : randomMac());
    const mtu = (c.mtu ?? this.ctx.ext.mtu) - VXLAN_OVERHEAD;
    await this.kernel.addVxlan({
      name: this.device,
      vni: c.vni,
      local: this.ctx.ext.address,
      dev: this.ctx.ext.name,
      port: c.port,
      learning: c.learning,
      gbp: c.gbp,
      mtu,
      mac,
    });
    this.macNow = mac;
    this.mtuNow = mtu;
    this.log.info('VXLAN device created', { device: this.device, mac, mtu });
  }

  /** flanneld's vxlanLinksIncompat, with the external interface by name; null when compatible. */
  private incompatibility(link: LinkInfo): string | null {
    const v = link.vxlan;
    if (link.kind !== 'vxlan' || v === null) return `link type: vxlan vs ${link.kind ?? 'none'}`;
    const c = this.config;
    if (v.vni !== c.vni) return `vni: ${c.vni} vs ${v.vni}`;
    if (v.dev !== null && v.dev !== this.ctx.ext.name)
      return `vtep (external) interface: ${this.ctx.ext.name} vs ${v.dev}`;
    if (v.local !== null && v.local !== this.ctx.ext.address)
      return `vtep (external) IP: ${formatIPv4(this.ctx.ext.address)} vs ${formatIPv4(v.local)}`;
    const port = c.port === 0 ? KERNEL_VXLAN_PORT : c.port;
    if (v.port > 0 && v.port !== port) return `port: ${port} vs ${v.port}`;
    if (v.gbp !== c.gbp) return `gbp: ${c.gbp} vs ${v.gbp}`;
    return null;
  }

  /**
   * flanneld's Configure: the subnet's network address as a /32 (so that no broadcast route is
   * made), no other address of the flannel network on the device, link up, and the MAC checked.
   */
  private async configure(subnet: Ipv4Net): Promise<void> {
    const want = { prefix: subnet.prefix, prefixLen: 32 };
    const net = this.ctx.network;
    let has = false;
    for (const a of await this.kernel.addresses(this.device)) {
      if (a.prefix === want.prefix && a.prefixLen === 32) has = true;
      else if ((a.prefix & maskOf(net.prefixLen)) >>> 0 === net.prefix) await this.kernel.deleteAddress(this.device, a);
    }
    if (!has) await this.kernel.addAddress(this.device, want);
    await this.kernel.setLinkUp(this.device);
    const link = await this.kernel.link(this.device);
    if (link?.mac !== this.macNow) {
      throw new Error(`${this.device}'s mac address wanted: ${this.macNow}, but got: ${link?.mac ?? 'no device'}`);
    }
  }

  private onDeviceDeleted(): void {
    if (this.closed || this.rebuilding !== null) return;
    this.log.warn('vxlan device deleted; recreating it', { device: this.device, mac: this.macNow });
    this.rebuilding = this.rebuild().finally(() => {
      this.rebuilding = null;
    });
  }

  /** Recreates the device with the same MAC and address, then programs every peer again. */
  private async rebuild(): Promise<void> {
    let backoff = 1000;
    while (!this.closed) {
      try {
        await this.ensureDevice(this.macNow);
        if (this.subnet !== null) await this.configure(this.subnet);
        this.log.info('VXLAN device recreated', { device: this.device, mac: this.macNow });
        this.sync.reinstallAll();
        return;
      } catch (err) {
        this.log.error('failed to recreate the vxlan device', { error: (err as Error).message, retryInMs: backoff });
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, REBUILD_BACKOFF_MAX_MS);
      }
    }
  }
}
