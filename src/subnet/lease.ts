// flannel's registry layout: key paths, subnet keys (`10.244.7.0-24`) and lease attribute values
// (`{"PublicIP":"192.0.2.7","PublicIPv6":null}`). See docs/flannel-compat.md, "Leases and the registry".

import { isIPv6 } from 'node:net';
import { formatIPv4, parseIPv4 } from '../routing-table/ipv4.js';
import type { Ipv4Net } from './config.js';
import { lookupFoldedKey } from './config.js';
import { FlannelTsError } from '../errors.js';

export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';

/** Joins like Go's path.Join for our use: one slash between parts, no trailing slash. */
function joinKey(prefix: string, rest: string): string {
  const base = prefix.replace(/\/+$/, '');
  return `${base}/${rest}`;
}

/** `<prefix>/config` */
export function configKey(prefix: string): string {
  return joinKey(prefix, 'config');
}

/** `<prefix>/subnets/`: list and watch this (with the trailing slash, so `subnets2/` is not matched). */
export function subnetsPrefix(prefix: string): string {
  return joinKey(prefix, 'subnets/');
}

/** `<prefix>/subnets/10.244.7.0-24` */
export function subnetKey(prefix: string, subnet: Ipv4Net): string {
  return subnetsPrefix(prefix) + formatSubnetKey(subnet);
}

/** flannel's MakeSubnetKey for an IPv4-only lease: "10.244.7.0-24". */
export function formatSubnetKey(subnet: Ipv4Net): string {
  return `${formatIPv4(subnet.prefix)}-${subnet.prefixLen}`;
}

export interface ParsedSubnetKey {
  readonly subnet: Ipv4Net;
  /** The `&<ipv6>-<len>` part of a dual-stack key as written, or null. flannel-ts ignores it. */
  readonly ipv6: string | null;
}

// flannel's subnetRegex, quirks included: not anchored at the start, and two of the dots unescaped.
const SUBNET_KEY = /(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/;

/**
 * flannel's ParseSubnetKey: returns null for keys flannel skips ("Ignoring bad subnet node"). The
 * IPv4 part must be a valid dotted quad and its length fit 5 bits (0..31, as Go's ParseUint(s,10,5));
 * an IPv6 part must be a valid address with a length that fits 7 bits (0..127).
 * The host bits are not cleared (flannel does not either).
 */
export function parseSubnetKey(key: string): ParsedSubnetKey | null {
  const m = SUBNET_KEY.exec(key);
  if (m === null) return null;
  let prefix: number;
  try {
    prefix = parseIPv4(m[1]!);
  } catch {
    return null;
  }
  const prefixLen = parseDecimal(m[2]!);
  if (prefixLen === null || prefixLen > 31) return null;
  let ipv6: string | null = null;
  if (m[3] !== undefined) {
    const len6 = parseDecimal(m[4]!);
    if (!isIPv6(m[3]) || len6 === null || len6 > 127) return null;
    ipv6 = `${m[3]}-${len6}`;
  }
  return { subnet: { prefix, prefixLen }, ipv6 };
}

/** Digits only (leading zeros allowed, as strconv.ParseUint); null if absurdly long. */
function parseDecimal(s: string): number | null {
  if (s.length > 10) return null;
  return Number(s);
}

export interface LeaseAttrs {
  /** uint32 host order. */
  readonly publicIp: number;
  /** `BackendType` when a string is present (vxlan hosts write "vxlan"); the udp backend ignores it. */
  readonly backendType: string | null;
  /**
   * `BackendData` as parsed JSON (vxlan: `{"VNI":1,"VtepMAC":"…"}`), null when absent or null. Each
   * backend reads its own; this module does not judge it.
   */
  readonly backendData: unknown;
}

/** What a backend writes into its lease beside PublicIP: flanneld's BackendType and BackendData. */
export interface BackendLeaseAttrs {
  /** null: no BackendType (flannel's udp backend writes none). */
  readonly backendType: string | null;
  /** Serialised into BackendData as Go's json.Marshal would (compact, fields in the given order). */
  readonly backendData?: Record<string, unknown>;
}

/** An unreadable lease value. */
export class LeaseValueError extends FlannelTsError {
  override name = 'LeaseValueError';
  override readonly code = 'FLANNEL_TS_ERR_INVALID_LEASE_VALUE';
}

/**
 * The value flannel v0.15+ writes, byte for byte: Go's json.Marshal of LeaseAttrs. PublicIPv6 is a
 * pointer without omitempty (null); BackendType and BackendData are omitempty, so the udp backend's
 * value is `{"PublicIP":"x","PublicIPv6":null}` and vxlan's adds
 * `"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"…"}`.
 */
export function formatLeaseAttrs(publicIp: number, backend?: BackendLeaseAttrs): string {
  let value = `{"PublicIP":"${formatIPv4(publicIp)}","PublicIPv6":null`;
  if (backend?.backendType) value += `,"BackendType":${JSON.stringify(backend.backendType)}`;
  if (backend?.backendData !== undefined) value += `,"BackendData":${JSON.stringify(backend.backendData)}`;
  return value + '}';
}

/**
 * Reads a lease value written by any flannel version or backend: `{"PublicIP":"x"}` (v0.5-v0.14),
 * `{"PublicIP":"x","PublicIPv6":null}` (v0.15+), vxlan's BackendType/BackendData. Names match
 * case-insensitively, unknown fields are ignored. A missing, null or non-IPv4 PublicIP is an error
 * (flannel would read a missing one as 0.0.0.0, which no route can use).
 */
export function parseLeaseAttrs(value: string): LeaseAttrs {
  let doc: unknown;
  try {
    doc = JSON.parse(value);
  } catch (err) {
    throw new LeaseValueError(`lease value is not JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new LeaseValueError('lease value is not a JSON object');
  }
  const ipRaw = lookupFoldedKey(doc as Record<string, unknown>, 'PublicIP');
  if (ipRaw === undefined || ipRaw === null) {
    throw new LeaseValueError('lease value has no PublicIP');
  }
  if (typeof ipRaw !== 'string') {
    throw new LeaseValueError(`lease PublicIP is not a string: ${JSON.stringify(ipRaw)}`);
  }
  let publicIp: number;
  try {
    publicIp = parseIPv4(ipRaw);
  } catch {
    throw new LeaseValueError(`lease PublicIP is not an IPv4 address: ${JSON.stringify(ipRaw)}`);
  }
  const bt = lookupFoldedKey(doc as Record<string, unknown>, 'BackendType');
  const data = lookupFoldedKey(doc as Record<string, unknown>, 'BackendData');
  return { publicIp, backendType: typeof bt === 'string' ? bt : null, backendData: data ?? null };
}
