// Address and prefix checks shared by every door that takes an address from outside: peer leases
// (lease-validation.ts) and the static agent's flags (src/cli/flags.ts). Control plane only.

import { formatCidr, maskOf } from '../routing-table/ipv4.js';
import type { Ipv4Net } from './config.js';

/** Blocks no peer may use as its PublicIP: nothing sent there reaches one host over the underlay. */
const NOT_UNICAST: readonly { readonly prefix: number; readonly len: number; readonly what: string }[] = [
  { prefix: 0x00000000, len: 8, what: 'an unspecified ("this network") address' },
  { prefix: 0x7f000000, len: 8, what: 'a loopback address' },
  { prefix: 0xe0000000, len: 4, what: 'a multicast address' },
  { prefix: 0xffffffff, len: 32, what: 'the broadcast address' },
  { prefix: 0xf0000000, len: 4, what: 'a reserved (class E) address' },
];

/**
 * Why ip (uint32) cannot be a peer's unicast underlay address, as "is a loopback address", or null
 * when it can. 0.0.0.0/8, 127/8, 224/4, 255.255.255.255 and 240/4 are refused.
 */
export function notUnicastReason(ip: number): string | null {
  for (const b of NOT_UNICAST) {
    if ((ip & maskOf(b.len)) >>> 0 === b.prefix) return `is ${b.what}`;
  }
  return null;
}

/** First and last address of a prefix (host bits of prefix ignored). */
export function rangeOf(net: Ipv4Net): { first: number; last: number } {
  const first = (net.prefix & maskOf(net.prefixLen)) >>> 0;
  return { first, last: (first + 2 ** (32 - net.prefixLen) - 1) >>> 0 };
}

/** True when the two prefixes share an address (one contains the other). */
export function overlaps(a: Ipv4Net, b: Ipv4Net): boolean {
  const len = Math.min(a.prefixLen, b.prefixLen);
  return ((a.prefix ^ b.prefix) & maskOf(len)) >>> 0 === 0;
}

/** True when inner lies wholly inside outer. */
export function within(inner: Ipv4Net, outer: Ipv4Net): boolean {
  return inner.prefixLen >= outer.prefixLen && overlaps(inner, outer);
}

export function cidr(net: Ipv4Net): string {
  return formatCidr((net.prefix & maskOf(net.prefixLen)) >>> 0, net.prefixLen);
}
