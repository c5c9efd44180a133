// etcd v2 nodes (the JSON of /v2/keys) as the KvStore's keys, and the key/prefix arithmetic that
// maps the KvStore's string prefixes onto v2's directories.
//
// Revisions: v2 has one index per store, bumped by every change (expiries included). A node's
// modifiedIndex is the KvStore's modRevision; a reply's X-Etcd-Index (the store's index when etcd
// answered) is a listing's revision; a watch from revision r is a long poll with waitIndex=r, which
// returns the first change with modifiedIndex >= r. So "watch from listing.revision + 1" means the
// same thing as on v3.

import type { KeyValue } from '../subnet/kv.js';

export interface V2Node {
  readonly key?: string;
  readonly value?: string;
  readonly dir?: boolean;
  readonly nodes?: readonly V2Node[];
  readonly modifiedIndex?: number;
  readonly createdIndex?: number;
  /** Seconds left, for a key with a TTL. */
  readonly ttl?: number;
  /** RFC 3339 expiry time, for a key with a TTL. */
  readonly expiration?: string;
}

export interface V2Response {
  readonly action?: string;
  readonly node?: V2Node;
  readonly prevNode?: V2Node;
}

/** v2 actions that remove a node (an "expire" is a TTL running out). */
export const REMOVING_ACTIONS: ReadonlySet<string> = new Set(['delete', 'expire', 'compareAndDelete']);

/**
 * A key as etcd v2 stores it: one leading slash, no repeated or trailing slashes (etcd cleans the
 * path of every request, so "/coreos.com//network/" is "/coreos.com/network").
 */
export function cleanKey(key: string): string {
  const parts = key.split('/').filter((s) => s !== '');
  return `/${parts.join('/')}`;
}

/** A prefix cleaned like a key, keeping a trailing slash if it had one ("/a//b/" -> "/a/b/"). */
export function cleanPrefix(prefix: string): string {
  const clean = cleanKey(prefix);
  return prefix.endsWith('/') && clean !== '/' ? `${clean}/` : clean;
}

/**
 * The directory to list or watch for a string prefix: everything up to its last slash.
 * "/coreos.com/network/subnets/" -> "/coreos.com/network/subnets";
 * "/coreos.com/network/subnets/10.244.7.0-24" -> "/coreos.com/network/subnets" (the dual-stack key
 * "10.244.7.0-24&fd00::-64" starts with it too, so the key's own node would not be enough).
 */
export function directoryOf(prefix: string): string {
  const clean = cleanPrefix(prefix);
  return clean.slice(0, clean.lastIndexOf('/'));
}

/**
 * ms since the epoch when the node expires; null for a node without a TTL. From `ttl` (seconds
 * left, measured by etcd) rather than `expiration` (etcd's clock), so that a skewed clock on either
 * side does not move our renewal.
 */
export function expiryOf(node: V2Node, now: number = Date.now()): number | null {
  if (typeof node.ttl === 'number') return now + node.ttl * 1000;
  if (typeof node.expiration === 'string') {
    const at = Date.parse(node.expiration);
    if (Number.isFinite(at)) return at;
  }
  return null;
}

export function toKeyValue(node: V2Node, now?: number): KeyValue {
  return {
    key: node.key ?? '',
    value: node.value ?? '',
    modRevision: node.modifiedIndex ?? 0,
    expiresAt: expiryOf(node, now),
  };
}

/** Every key (not directory) at or below node, depth first. */
export function leavesOf(node: V2Node): V2Node[] {
  if (node.dir !== true) return [node];
  return (node.nodes ?? []).flatMap(leavesOf);
}

/** True if `ancestor` is `key` or one of its parent directories. */
export function isAncestorOrSelf(ancestor: string, key: string): boolean {
  if (ancestor === '/' || ancestor === key) return true;
  return key.startsWith(`${ancestor}/`);
}
