// Encoding between the KvStore's strings/numbers and etcd's JSON gateway: keys and values are
// base64 of their UTF-8 bytes; int64 fields travel as decimal strings; zero-valued fields are
// omitted by the gateway (proto3 JSON), so every read defaults them.
import { EtcdProtocolError } from './errors.js';

export function encodeBytes(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64');
}

export function decodeBytes(base64: string | undefined): string {
  return base64 === undefined ? '' : Buffer.from(base64, 'base64').toString('utf8');
}

/** Reads an int64 field that is a revision or a count (safe as a JS number below 2^53). */
export function int64Number(field: string | number | undefined): number {
  if (field === undefined) return 0;
  const n = Number(field);
  if (!Number.isSafeInteger(n)) throw new EtcdProtocolError(`etcd: int64 field out of range: ${String(field)}`);
  return n;
}

/**
 * Reads a lease id. Lease ids use the full int64 range, so they stay decimal strings;
 * "0" means "no lease".
 */
export function leaseIdOf(field: string | number | undefined): string {
  return field === undefined ? '0' : String(field);
}

/**
 * The [key, range_end) pair, base64-encoded, that covers every key starting with prefix:
 * range_end is the prefix with its last byte incremented (trailing 0xff bytes dropped first).
 * An empty prefix, or one made only of 0xff bytes, has no upper bound: range_end "\0" means
 * "every key >= key" to etcd.
 */
export function prefixRange(prefix: string): { key: string; rangeEnd: string } {
  const bytes = Buffer.from(prefix, 'utf8');
  const key = bytes.length === 0 ? Buffer.from([0]) : bytes;
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0xff) end--;
  let rangeEnd: Buffer;
  if (end === 0) {
    rangeEnd = Buffer.from([0]);
  } else {
    rangeEnd = Buffer.from(bytes.subarray(0, end));
    rangeEnd[end - 1] = rangeEnd[end - 1]! + 1;
  }
  return { key: key.toString('base64'), rangeEnd: rangeEnd.toString('base64') };
}

/** mvccpb.KeyValue as the gateway renders it. */
export interface WireKeyValue {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
  lease?: string;
}

export interface WireHeader {
  revision?: string;
  /** uint64 as a decimal string. */
  cluster_id?: string;
  member_id?: string;
}
