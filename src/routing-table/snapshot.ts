/**
 * Immutable longest-prefix-match routing snapshot for the datapath.
 *
 * The control plane builds a complete snapshot from the full route list (never patched in place) and
 * hands it to the datapath, which swaps it in between batches. A snapshot never changes after build,
 * so a batch in flight always sees one consistent table.
 *
 * Lookup structure: a multibit trie with stride 8 (four levels: one per address byte), stored as
 * 256-entry node blocks laid end to end in one Int32Array. Routes are inserted with controlled prefix
 * expansion: a /20 becomes 16 consecutive entries of a level-2 node; a shorter route that covers the
 * range of a deeper node has its route index pushed down into that node when the node is created. So
 * every entry already holds the final longest-prefix answer for its range, and a lookup is at most four
 * array reads with no backtracking.
 *
 * Entry encoding (one int32):
 *   e >= 0      leaf: index of the matching route
 *   e === -1    leaf: no route covers this range
 *   e <= -256   child node, whose 256 entries start at offset -e (the root is at offset 0, so every
 *               child offset is a non-zero multiple of 256 and can never be confused with -1)
 */

import { formatCidr, hasZeroHostBits } from './ipv4.js';

/** One route: addresses in prefix/prefixLen go to the peer at publicIp. All fields uint32 host order. */
export interface Route {
  /** Network address; its host bits (beyond prefixLen) must be zero. */
  readonly prefix: number;
  /** 0..32. */
  readonly prefixLen: number;
  /** The peer's public IPv4 address (the UDP destination for packets on this route). */
  readonly publicIp: number;
}

const NODE_SIZE = 256;
const NO_ROUTE = -1;
const INITIAL_NODE_CAPACITY = 16;

/**
 * Grows the node array while routes are inserted in ascending prefix length. Not exported: the only way
 * to get a trie is RoutingSnapshot.build, which guarantees that insertion order.
 */
class TrieBuilder {
  private table = new Int32Array(INITIAL_NODE_CAPACITY * NODE_SIZE).fill(NO_ROUTE);
  private nodeCount = 1; // the root, at offset 0

  /** Precondition: every route inserted before this one has prefixLen <= len. */
  insert(prefix: number, len: number, routeIndex: number): void {
    // The node level where this prefix ends: /0../8 -> 0, /9../16 -> 1, /17../24 -> 2, /25../32 -> 3.
    const level = len === 0 ? 0 : (len - 1) >>> 3;
    let base = 0;
    for (let depth = 0; depth < level; depth++) {
      const slot = base + ((prefix >>> (24 - 8 * depth)) & 255);
      const e = this.table[slot]!;
      if (e >= NO_ROUTE) {
        // Leaf in the way: replace it by a child that inherits its answer for the whole range.
        const child = this.allocateNode(e);
        this.table[slot] = -child;
        base = child;
      } else {
        base = -e;
      }
    }
    const start = base + ((prefix >>> (24 - 8 * level)) & 255);
    const span = 1 << (8 * (level + 1) - len);
    const table = this.table;
    for (let slot = start; slot < start + span; slot++) {
      // Shorter-first insertion means no deeper node can exist under a range we are filling yet.
      if (table[slot]! < NO_ROUTE) throw new Error('routing trie invariant broken: child under a shorter prefix');
      table[slot] = routeIndex;
    }
  }

  /** The finished node array, trimmed to size. */
  finish(): Int32Array {
    return this.table.slice(0, this.nodeCount * NODE_SIZE);
  }

  /** Appends a node whose 256 entries all hold `inherited`; returns its offset. */
  private allocateNode(inherited: number): number {
    const offset = this.nodeCount * NODE_SIZE;
    // Child entries are stored as -offset in an int32.
    if (offset > 0x7fffffff) throw new RangeError('routing trie too large');
    if (offset + NODE_SIZE > this.table.length) {
      const grown = new Int32Array(this.table.length * 2);
      grown.set(this.table);
      this.table = grown;
    }
    this.table.fill(inherited, offset, offset + NODE_SIZE);
    this.nodeCount++;
    return offset;
  }
}

export class RoutingSnapshot {
  /** A snapshot with no routes: every lookup misses. */
  static readonly EMPTY: RoutingSnapshot = RoutingSnapshot.build([]);

  /**
   * Builds a snapshot from a complete route list.
   *
   * Throws on an invalid route, naming its input index: a RangeError for non-uint32 prefix or publicIp,
   * prefixLen outside 0..32 or host bits set in prefix; a TypeError for a non-object. When the same prefix/prefixLen
   * appears more than once, the last occurrence's publicIp
   * wins; the route keeps the position of its first occurrence in `routes`.
   */
  static build(input: readonly Route[]): RoutingSnapshot {
    const routes = dedupeRoutes(input);
    const routeCount = routes.length;

    const publicIpOf = new Uint32Array(routeCount);
    for (let i = 0; i < routeCount; i++) publicIpOf[i] = routes[i]!.publicIp;

    // Shorter prefixes first: a longer prefix inserted later overwrites the entries it covers and pushes
    // the shorter one's answer down into any node it creates, which is exactly longest-prefix-match.
    const trie = new TrieBuilder();
    for (const i of indicesByPrefixLength(routes)) trie.insert(routes[i]!.prefix, routes[i]!.prefixLen, i);

    return new RoutingSnapshot(Object.freeze(routes), publicIpOf, trie.finish(), sortedUnique(publicIpOf));
  }

  readonly routeCount: number;
  /** Route index -> route (after de-duplication). For the control plane and metrics. */
  readonly routes: readonly Route[];
  /** Route index -> the route's publicIp. The datapath reads this after lookup(). */
  readonly publicIpOf: Uint32Array;
  private readonly nodes: Int32Array;
  /** Distinct publicIps, ascending, for isPeerAddress. */
  private readonly peers: Uint32Array;

  private constructor(routes: readonly Route[], publicIpOf: Uint32Array, nodes: Int32Array, peers: Uint32Array) {
    this.routeCount = routes.length;
    this.routes = routes;
    this.publicIpOf = publicIpOf;
    this.nodes = nodes;
    this.peers = peers;
  }

  /**
   * Longest-prefix match. Returns the route index (into `routes` / `publicIpOf`), or -1 when no route
   * covers addr. addr may be the uint32 address or the same bits as a signed int32.
   *
   * Hot path: no allocation, at most four typed-array reads.
   */
  lookup(addr: number): number {
    const nodes = this.nodes;
    let e = nodes[addr >>> 24]!;
    if (e >= NO_ROUTE) return e;
    e = nodes[((addr >>> 16) & 255) - e]!;
    if (e >= NO_ROUTE) return e;
    e = nodes[((addr >>> 8) & 255) - e]!;
    if (e >= NO_ROUTE) return e;
    return nodes[(addr & 255) - e]!;
  }

  /** True when publicIp (uint32 or int32 bits) is the publicIp of some route. Binary search; no allocation. */
  isPeerAddress(publicIp: number): boolean {
    const peers = this.peers;
    const target = publicIp >>> 0;
    let lo = 0;
    let hi = peers.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = peers[mid]!;
      if (v === target) return true;
      if (v < target) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
  }
}

/** Validates routes and merges duplicates (same prefix and length): last publicIp wins, first position kept. */
function dedupeRoutes(input: readonly Route[]): Route[] {
  const indexByKey = new Map<number, number>();
  const routes: Route[] = [];
  for (let i = 0; i < input.length; i++) {
    const r = input[i]!;
    validateRoute(r, i);
    const route: Route = Object.freeze({ prefix: r.prefix, prefixLen: r.prefixLen, publicIp: r.publicIp });
    // prefix < 2^32 and prefixLen < 64, so the key is exact (< 2^38).
    const key = r.prefix * 64 + r.prefixLen;
    const existing = indexByKey.get(key);
    if (existing === undefined) {
      indexByKey.set(key, routes.length);
      routes.push(route);
    } else {
      routes[existing] = route;
    }
  }
  return routes;
}

function validateRoute(r: Route, i: number): void {
  if (r === null || typeof r !== 'object') {
    throw new TypeError(`invalid route #${i}: expected an object`);
  }
  const { prefix, prefixLen, publicIp } = r;
  if (!isUint32(prefix)) {
    throw new RangeError(`invalid route #${i}: prefix ${String(prefix)} is not a uint32`);
  }
  if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > 32) {
    throw new RangeError(`invalid route #${i}: prefixLen ${String(prefixLen)} is not an integer 0..32`);
  }
  if (!isUint32(publicIp)) {
    throw new RangeError(`invalid route #${i}: publicIp ${String(publicIp)} is not a uint32`);
  }
  if (!hasZeroHostBits(prefix, prefixLen)) {
    throw new RangeError(`invalid route #${i}: ${formatCidr(prefix, prefixLen)} has host bits set`);
  }
}

/** Route indices ordered by ascending prefixLen (counting sort: lengths are 0..32). */
function indicesByPrefixLength(routes: readonly Route[]): Uint32Array {
  const start = new Uint32Array(34);
  for (const r of routes) start[r.prefixLen + 1]!++;
  for (let len = 1; len <= 33; len++) start[len]! += start[len - 1]!;
  const order = new Uint32Array(routes.length);
  for (let i = 0; i < routes.length; i++) order[start[routes[i]!.prefixLen]!++] = i;
  return order;
}

function isUint32(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

function sortedUnique(values: Uint32Array): Uint32Array {
  const sorted = Uint32Array.from(values).sort();
  let n = 0;
  for (let i = 0; i < sorted.length; i++) {
    if (i === 0 || sorted[i] !== sorted[n - 1]) sorted[n++] = sorted[i]!;
  }
  return sorted.slice(0, n);
}
