// Ethernet addresses as flannel handles them: lower-case "aa:bb:cc:dd:ee:ff" in leases and on the
// command line of ip(8).
import { randomBytes } from 'node:crypto';

/** A random unicast, locally administered address (flannel's mac.NewHardwareAddr). */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return formatMac(b);
}

function formatMac(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

/**
 * Go's net.ParseMAC for a 6-byte address: "aa:bb:cc:dd:ee:ff", "aa-bb-cc-dd-ee-ff" or
 * "aabb.ccdd.eeff"; normalised to lower case with colons. null if not one of those.
 */
export function parseMac(text: string): string | null {
  let hex: string | null = null;
  if (/^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$/i.test(text)) hex = text.replace(/[:-]/g, '');
  else if (/^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$/i.test(text)) hex = text.replace(/\./g, '');
  if (hex === null) return null;
  return formatMac(Buffer.from(hex, 'hex'));
}
