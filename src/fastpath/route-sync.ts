// The order in which the kernel's maps follow a new route list. Pure: plans the operations; the
// fast path applies them one by one.
//
// Contract: between any two operations, the routes map sends only to PublicIPs that are in the
// peers map (whose datagrams are accepted), and a route whose lease is gone is deleted before
// anything else happens. So: routes that go away first, then new peers, then new and re-pointed
// routes (one atomic update each: no gap in which the subnet is unrouted), then the peers nobody
// routes to any more.
import type { Route } from '../routing-table/snapshot.js';

export type MapOp =
  | { readonly op: 'routeDelete'; readonly prefix: number; readonly prefixLen: number }
  | { readonly op: 'routeSet'; readonly prefix: number; readonly prefixLen: number; readonly publicIp: number }
  | { readonly op: 'peerDelete'; readonly publicIp: number }
  | { readonly op: 'peerSet'; readonly publicIp: number };

/** What the kernel's maps hold: route key (prefix * 64 + len) -> PublicIP, and the peers. */
export interface InstalledRoutes {
  readonly routes: ReadonlyMap<number, number>;
  readonly peers: ReadonlySet<number>;
}

export const NOTHING_INSTALLED: InstalledRoutes = { routes: new Map(), peers: new Set() };

/** Routes with host bits and duplicates already resolved (a RoutingSnapshot's routes). */
export function planRouteSync(installed: InstalledRoutes, next: readonly Route[]): MapOp[] {
  const nextRoutes = new Map<number, Route>();
  for (const r of next) nextRoutes.set(routeKey(r.prefix, r.prefixLen), r);
  const nextPeers = new Set(next.map((r) => r.publicIp));
  const ops: MapOp[] = [];
  for (const key of installed.routes.keys()) {
    if (!nextRoutes.has(key)) ops.push({ op: 'routeDelete', prefix: Math.floor(key / 64), prefixLen: key % 64 });
  }
  for (const p of nextPeers) if (!installed.peers.has(p)) ops.push({ op: 'peerSet', publicIp: p });
  for (const [key, r] of nextRoutes) {
    if (installed.routes.get(key) !== r.publicIp) ops.push({ op: 'routeSet', ...pick(r) });
  }
  for (const p of installed.peers) if (!nextPeers.has(p)) ops.push({ op: 'peerDelete', publicIp: p });
  return ops;
}

/** The maps' content after ops. */
export function applyPlan(installed: InstalledRoutes, ops: readonly MapOp[]): InstalledRoutes {
  const routes = new Map(installed.routes);
  const peers = new Set(installed.peers);
  for (const o of ops) {
    if (o.op === 'routeDelete') routes.delete(routeKey(o.prefix, o.prefixLen));
    else if (o.op === 'routeSet') routes.set(routeKey(o.prefix, o.prefixLen), o.publicIp);
    else if (o.op === 'peerDelete') peers.delete(o.publicIp);
    else peers.add(o.publicIp);
  }
  return { routes, peers };
}

function routeKey(prefix: number, prefixLen: number): number {
  return prefix * 64 + prefixLen;
}

function pick(r: Route): { prefix: number; prefixLen: number; publicIp: number } {
  return { prefix: r.prefix, prefixLen: r.prefixLen, publicIp: r.publicIp };
}
