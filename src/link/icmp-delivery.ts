// What the host needs so that the ICMP errors the forwarder writes into flannel0 reach the pods.
//
// The forwarder answers a packet it cannot forward (no route: net unreachable; TTL run out: time
// exceeded) as a router would, from its own address on that link: flannel0's address. The packet
// enters the host's stack on flannel0 with a source address that is the host's own, which Linux
// drops as a martian source unless accept_local is set on the receiving device. flannel's proxy
// writes the same packet and never sets it, so its errors never arrive.
//
// accept_local is set on flannel0 only (Linux ORs conf.all and the device's value). It lets in,
// on flannel0 alone, packets whose source is a local address: the only ones are our own ICMP
// errors, because the forwarder writes into flannel0 only datagrams whose inner source lies in
// the sending peer's lease, and a lease overlapping our own subnet is refused
// (src/subnet/lease-validation.ts). Reverse-path filtering (rp_filter 1 or 2) passes them: the
// route back to flannel0's address is local to flannel0.
import { writeFileSync } from 'node:fs';
import { LinkCommandError } from '../errors.js';

export function acceptLocalPath(device: string): string {
  return `/proc/sys/net/ipv4/conf/${device}/accept_local`;
}

/** Sets net.ipv4.conf.<device>.accept_local=1; throws one line if the host refuses. */
export function enableIcmpErrorDelivery(device: string): void {
  try {
    writeFileSync(acceptLocalPath(device), '1\n');
  } catch (err) {
    throw new LinkCommandError(
      `cannot set net.ipv4.conf.${device}.accept_local=1, which ICMP errors from flannel-ts need to reach pods: ` +
        (err as Error).message,
      ['sysctl', '-w', `net.ipv4.conf.${device}.accept_local=1`],
      { cause: err },
    );
  }
}
