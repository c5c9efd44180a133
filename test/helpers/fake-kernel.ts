// An in-memory Kernel for unit tests: links, addresses, routes, neighbours and fdb entries as the
// kernel keeps them, with the kernel's refusals that the backends rely on (an onlink route needs
// its device, a gateway route needs a directly connected gateway, deleting a link takes its
// entries with it) and iproute2's "already gone is done" for deletes. Every applied op is recorded.
import type {
  Kernel,
  KernelOp,
  KernelRoute,
  LinkInfo,
  LinkWatch,
  OpResults,
  VxlanLinkSpec,
} from '../../src/kernel/kernel.js';
import { sameRoute } from '../../src/kernel/kernel.js';
import { formatCidr, formatIPv4, maskOf } from '../../src/routing-table/ipv4.js';
import type { Ipv4Net } from '../../src/subnet/config.js';

interface FakeLink {
  info: LinkInfo;
  addresses: Ipv4Net[];
}

export class FakeKernel implements Kernel {
  readonly links = new Map<string, FakeLink>();
  /** "dev ip" -> mac */
  readonly neighbours = new Map<string, string>();
  /** "dev mac dst" entries */
  readonly fdb = new Set<string>();
  routesNow: KernelRoute[] = [];
  /** Every op applied, in order, as ip(8)-like text. */
  readonly log: string[] = [];
  /** Networks reached without a gateway (as connected routes on the external interface). */
  connected: Ipv4Net[] = [];
  /** Ops that fail, by their text (see describeOp). */
  readonly failing = new Set<string>();
  batches = 0;
  private nextIndex = 10;
  private readonly deleteWatchers = new Map<string, Set<() => void>>();

  addPlainLink(name: string, mtu = 1500): void {
    this.links.set(name, {
      info: { name, index: this.nextIndex++, mtu, mac: null, up: true, kind: null, vxlan: null },
      addresses: [],
    });
  }

  link(name: string): Promise<LinkInfo | null> {
    return Promise.resolve(this.links.get(name)?.info ?? null);
  }

  addVxlan(s: VxlanLinkSpec): Promise<void> {
    if (this.links.has(s.name)) return Promise.reject(new Error('RTNETLINK answers: File exists'));
    this.log.push(`link add ${s.name} vxlan id ${s.vni} local ${formatIPv4(s.local)} dev ${s.dev} port ${s.port}`);
    this.links.set(s.name, {
      info: {
        name: s.name,
        index: this.nextIndex++,
        mtu: s.mtu,
        mac: s.mac,
        up: false,
        kind: 'vxlan',
        vxlan: {
          vni: s.vni,
          local: s.local,
          dev: s.dev,
          port: s.port === 0 ? 8472 : s.port,
          learning: s.learning,
          gbp: s.gbp,
        },
      },
      addresses: [],
    });
    return Promise.resolve();
  }

  /** Deletes a link as `ip link del` would, entries and all, and tells the watchers. */
  deleteLink(name: string): Promise<void> {
    if (!this.links.delete(name)) return Promise.reject(new Error('Cannot find device'));
    this.log.push(`link del ${name}`);
    for (const k of [...this.neighbours.keys()]) if (k.startsWith(`${name} `)) this.neighbours.delete(k);
    for (const k of [...this.fdb]) if (k.startsWith(`${name} `)) this.fdb.delete(k);
    this.routesNow = this.routesNow.filter((r) => r.dev !== name);
    for (const cb of this.deleteWatchers.get(name) ?? []) queueMicrotask(cb);
    return Promise.resolve();
  }

  setLinkUp(name: string): Promise<void> {
    const l = this.links.get(name);
    if (!l) return Promise.reject(new Error('Cannot find device'));
    l.info = { ...l.info, up: true };
    return Promise.resolve();
  }

  addresses(dev: string): Promise<Ipv4Net[]> {
    const l = this.links.get(dev);
    return l ? Promise.resolve([...l.addresses]) : Promise.reject(new Error('Cannot find device'));
  }

  addAddress(dev: string, a: Ipv4Net): Promise<void> {
    const l = this.links.get(dev);
    if (!l) return Promise.reject(new Error('Cannot find device'));
    if (!l.addresses.some((x) => x.prefix === a.prefix)) l.addresses.push(a);
    return Promise.resolve();
  }

  deleteAddress(dev: string, a: Ipv4Net): Promise<void> {
    const l = this.links.get(dev);
    if (l) l.addresses = l.addresses.filter((x) => x.prefix !== a.prefix);
    return Promise.resolve();
  }

  apply(ops: readonly KernelOp[]): Promise<OpResults> {
    this.batches++;
    return Promise.resolve(ops.map((op) => this.applyOne(op)));
  }

  routes(): Promise<KernelRoute[]> {
    return Promise.resolve([...this.routesNow]);
  }

  directlyConnected(ip: number): Promise<boolean> {
    return Promise.resolve(this.isConnected(ip));
  }

  watchLinkDeleted(name: string, onDeleted: () => void): LinkWatch {
    const set = this.deleteWatchers.get(name) ?? new Set();
    set.add(onDeleted);
    this.deleteWatchers.set(name, set);
    return { close: () => set.delete(onDeleted) };
  }

  /** Watchers still registered (a closed backend leaves none). */
  get watcherCount(): number {
    let n = 0;
    for (const s of this.deleteWatchers.values()) n += s.size;
    return n;
  }

  /** The routes as "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink", sorted. */
  routeTexts(): string[] {
    return this.routesNow.map(routeText).sort();
  }

  private isConnected(ip: number): boolean {
    return this.connected.some((n) => (ip & maskOf(n.prefixLen)) >>> 0 === n.prefix);
  }

  private applyOne(op: KernelOp): string | null {
    const text = describeOp(op);
    this.log.push(text);
    if (this.failing.has(text)) return `${text}: RTNETLINK answers: Operation not permitted`;
    const needDev = (dev: string | null): string | null =>
      dev !== null && !this.links.has(dev) ? `${text}: Cannot find device "${dev}"` : null;
    switch (op.op) {
      case 'neigh-replace':
        return needDev(op.dev) ?? (this.neighbours.set(`${op.dev} ${formatIPv4(op.ip)}`, op.mac), null);
      case 'neigh-del':
        this.neighbours.delete(`${op.dev} ${formatIPv4(op.ip)}`);
        return null;
      case 'fdb-replace':
        return needDev(op.dev) ?? (this.fdb.add(`${op.dev} ${op.mac} ${formatIPv4(op.dst)}`), null);
      case 'fdb-del':
        this.fdb.delete(`${op.dev} ${op.mac} ${formatIPv4(op.dst)}`);
        return null;
      case 'route-replace': {
        const r = op.route;
        const missing = needDev(r.dev);
        if (missing) return missing;
        if (r.via !== null && !r.onlink && !this.isConnected(r.via))
          return `${text}: RTNETLINK answers: Nexthop has invalid gateway`;
        this.routesNow = this.routesNow.filter(
          (x) => !(x.dst.prefix === r.dst.prefix && x.dst.prefixLen === r.dst.prefixLen),
        );
        this.routesNow.push(r);
        return null;
      }
      case 'route-del':
        this.routesNow = this.routesNow.filter((x) => !sameRoute(x, op.route));
        return null;
    }
  }
}

export function routeText(r: KernelRoute): string {
  const via = r.via === null ? '' : ` via ${formatIPv4(r.via)}`;
  const dev = r.dev === null ? '' : ` dev ${r.dev}`;
  return `${formatCidr(r.dst.prefix, r.dst.prefixLen)}${via}${dev}${r.onlink ? ' onlink' : ''}`;
}

export function describeOp(op: KernelOp): string {
  switch (op.op) {
    case 'neigh-replace':
      return `neigh replace ${formatIPv4(op.ip)} lladdr ${op.mac} dev ${op.dev}`;
    case 'neigh-del':
      return `neigh del ${formatIPv4(op.ip)} dev ${op.dev}`;
    case 'fdb-replace':
      return `fdb replace ${op.mac} dev ${op.dev} dst ${formatIPv4(op.dst)}`;
    case 'fdb-del':
      return `fdb del ${op.mac} dev ${op.dev} dst ${formatIPv4(op.dst)}`;
    case 'route-replace':
      return `route replace ${routeText(op.route)}`;
    case 'route-del':
      return `route del ${routeText(op.route)}`;
  }
}
