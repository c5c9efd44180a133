/**
 * IPv4 addresses as uint32 numbers in host order: a.b.c.d <-> ((a << 24) | (b << 16) | (c << 8) | d) >>> 0.
 *
 * These helpers are for the control plane and for tests (they validate and may allocate); the datapath
 * works on the numbers directly.
 *
 * Functions that take an address accept either the uint32 form or the same 32 bits as a signed int32
 * (what `x | 0`, `DataView.getInt32` or `b0 << 24 | ...` produce); functions that return an address
 * always return the uint32 form.
 */

import { FlannelTsError } from '../errors.js';

/** A string that is not a strict dotted-quad IPv4 address, or not a CIDR "a.b.c.d/len". */
export class AddressError extends FlannelTsError {
  override name = 'AddressError';
  override readonly code = 'FLANNEL_TS_ERR_INVALID_ADDRESS';
}

const UINT32_SPAN = 0x1_0000_0000;

// Strict dotted quad: exactly four decimal octets, no sign, no whitespace, no leading zeros ("0" itself
// is fine). Leading zeros are rejected, like Go's net.ParseIP since Go 1.17, because some parsers read
// them as octal ("010" = 8) and an ambiguous address must not be guessed.
const OCTET = '(0|[1-9][0-9]{0,2})';
const DOTTED_QUAD = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);
const PREFIX_LENGTH = /^(0|[1-9][0-9]?)$/;

/** Parses a strict dotted-quad IPv4 address ("10.244.1.0") into a uint32. Throws an Error on anything else. */
export function parseIPv4(s: string): number {
  if (typeof s !== 'string') {
    throw new TypeError(`invalid IPv4 address: expected a string, got ${typeof s}`);
  }
  const m = DOTTED_QUAD.exec(s);
  if (m === null) {
    throw new AddressError(`invalid IPv4 address ${JSON.stringify(s)}: expected a dotted quad like 10.244.1.0`);
  }
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const octet = Number(m[i]);
    if (octet > 255) {
      throw new AddressError(`invalid IPv4 address ${JSON.stringify(s)}: octet ${octet} is greater than 255`);
    }
    n = n * 256 + octet;
  }
  return n;
}

/** Formats a uint32 (or int32 bit pattern) as a dotted quad. Throws if n is not a 32-bit integer. */
export function formatIPv4(n: number): string {
  const u = toUint32(n, 'address');
  return `${u >>> 24}.${(u >>> 16) & 255}.${(u >>> 8) & 255}.${u & 255}`;
}

/**
 * Netmask for a prefix length as a uint32: maskOf(0) = 0, maskOf(24) = 0xFFFFFF00, maskOf(32) = 0xFFFFFFFF.
 * (Written without `x << 32`, which JavaScript reduces to `x << 0`.)
 */
export function maskOf(len: number): number {
  checkPrefixLength(len);
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/**
 * Parses "a.b.c.d/len" and returns the network: host bits are cleared, like the IPNet Go's
 * net.ParseCIDR returns ("10.244.1.7/16" -> 10.244.0.0/16). Throws an Error on bad input.
 */
export function parseCidr(s: string): { prefix: number; prefixLen: number } {
  if (typeof s !== 'string') {
    throw new TypeError(`invalid CIDR: expected a string, got ${typeof s}`);
  }
  const slash = s.indexOf('/');
  if (slash < 0) {
    throw new AddressError(`invalid CIDR ${JSON.stringify(s)}: missing "/prefix-length"`);
  }
  const lenText = s.slice(slash + 1);
  if (!PREFIX_LENGTH.test(lenText) || Number(lenText) > 32) {
    throw new AddressError(`invalid CIDR ${JSON.stringify(s)}: prefix length must be an integer 0..32`);
  }
  let addr: number;
  try {
    addr = parseIPv4(s.slice(0, slash));
  } catch (err) {
    throw new AddressError(`invalid CIDR ${JSON.stringify(s)}: ${(err as Error).message}`, { cause: err });
  }
  const prefixLen = Number(lenText);
  return { prefix: (addr & maskOf(prefixLen)) >>> 0, prefixLen };
}

/** Formats a prefix as "a.b.c.d/len". The address is printed as given (host bits are not cleared). */
export function formatCidr(prefix: number, len: number): string {
  checkPrefixLength(len);
  return `${formatIPv4(prefix)}/${len}`;
}

/** True when addr lies inside prefix/len (host bits of prefix are ignored). */
export function contains(prefix: number, len: number, addr: number): boolean {
  return ((prefix ^ addr) & maskOf(len)) === 0;
}

/** True when prefix has no bits set beyond the first len bits. */
export function hasZeroHostBits(prefix: number, len: number): boolean {
  return (prefix & ~maskOf(len)) === 0;
}

function checkPrefixLength(len: number): void {
  if (!Number.isInteger(len) || len < 0 || len > 32) {
    throw new RangeError(`invalid prefix length ${String(len)}: must be an integer 0..32`);
  }
}

function toUint32(n: number, what: string): number {
  if (!Number.isInteger(n) || n < -0x8000_0000 || n >= UINT32_SPAN) {
    throw new RangeError(`invalid IPv4 ${what} ${String(n)}: must be a 32-bit integer`);
  }
  return n >>> 0;
}
