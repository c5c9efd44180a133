// Host link configuration through iproute2's `ip` (JSON output): the external interface and
// flannel0's address, MTU and route. Control plane only; runs at start-up.
import { execFileSync } from 'node:child_process';
import { ExternalInterfaceError, LinkCommandError } from '../errors.js';
import { formatCidr, formatIPv4, parseIPv4 } from '../routing-table/ipv4.js';
import { enableIcmpErrorDelivery } from './icmp-delivery.js';

export interface ExternalInterface {
  readonly name: string;
  /** The interface's first global IPv4 address: the UDP socket binds to it. */
  readonly address: number;
  readonly mtu: number;
}

interface IpAddrJson {
  ifname: string;
  mtu: number;
  addr_info?: { family: string; local: string; scope?: string }[];
}

function ip(args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new LinkCommandError(`ip ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`, args, { cause: err });
  }
}

function listInterfaces(): IpAddrJson[] {
  return JSON.parse(ip(['-j', 'addr', 'show'])) as IpAddrJson[];
}

function firstIPv4(link: IpAddrJson): number | null {
  const a = link.addr_info?.find((x) => x.family === 'inet' && (x.scope ?? 'global') !== 'host');
  return a ? parseIPv4(a.local) : null;
}

/**
 * Chooses the external interface as flanneld does: each --iface (a name or an address) in
 * order, first match wins; else each --iface-regex in order, matched against every interface's
 * IPv4 addresses first, then against interface names; else, with only --public-ip, the interface
 * that owns that address; else the interface of the default route.
 */
export function findExternalInterface(
  ifaces: readonly string[],
  publicIp: number | null,
  ifaceRegexes: readonly RegExp[] = [],
): ExternalInterface {
  const links = listInterfaces();
  const pick = (link: IpAddrJson | undefined, address?: number): ExternalInterface | null => {
    if (!link) return null;
    const addr = address ?? firstIPv4(link);
    return addr === null ? null : { name: link.ifname, address: addr, mtu: link.mtu };
  };
  const owning = (addr: number) =>
    links.find((l) => l.addr_info?.some((a) => a.family === 'inet' && parseIPv4(a.local) === addr));
  if (ifaces.length > 0) {
    for (const spec of ifaces) {
      const asAddress = /^\d+\.\d+\.\d+\.\d+$/.test(spec) ? parseIPv4(spec) : null;
      const found =
        asAddress !== null ? pick(owning(asAddress), asAddress) : pick(links.find((l) => l.ifname === spec));
      if (found) return found;
    }
    throw new ExternalInterfaceError(
      `none of the interfaces given with --iface (${ifaces.join(', ')}) exists with an IPv4 address`,
    );
  }
  if (ifaceRegexes.length > 0) {
    for (const re of ifaceRegexes) {
      for (const link of links) {
        const a = link.addr_info?.find((x) => x.family === 'inet' && re.test(x.local));
        if (a) return { name: link.ifname, address: parseIPv4(a.local), mtu: link.mtu };
      }
      const found = pick(links.find((l) => re.test(l.ifname)));
      if (found) return found;
    }
    throw new ExternalInterfaceError(
      `no interface matches --iface-regex (${ifaceRegexes.map((r) => r.source).join(', ')}) with an IPv4 address`,
    );
  }
  if (publicIp !== null) {
    const found = pick(owning(publicIp), publicIp);
    if (!found)
      throw new ExternalInterfaceError(
        `no interface owns --public-ip ${formatIPv4(publicIp)}; name the external interface with --iface`,
      );
    return found;
  }
  const routes = JSON.parse(ip(['-j', '-4', 'route', 'show', 'default'])) as { dev?: string }[];
  const dev = routes.find((r) => r.dev)?.dev;
  const found = pick(links.find((l) => l.ifname === dev));
  if (!found)
    throw new ExternalInterfaceError(
      'no default route with an IPv4 interface: name the external interface with --iface',
    );
  return found;
}

export interface TunLinkConfig {
  readonly name: string;
  /** The lease subnet's own (network) address, set as a /32 as flanneld does. */
  readonly address: number;
  readonly mtu: number;
  /** The whole flannel network, routed via flannel0. */
  readonly networkPrefix: number;
  readonly networkLen: number;
}

export function configureTunLink(cfg: TunLinkConfig): void {
  ip(['addr', 'replace', `${formatIPv4(cfg.address)}/32`, 'dev', cfg.name]);
  ip(['link', 'set', 'dev', cfg.name, 'mtu', String(cfg.mtu), 'up']);
  // Before the route sends traffic in: the ICMP errors about it must reach the pods.
  enableIcmpErrorDelivery(cfg.name);
  ip(['route', 'replace', formatCidr(cfg.networkPrefix, cfg.networkLen), 'dev', cfg.name]);
}

/** Removes an address set by configureTunLink (after the lease moved to another subnet). */
export function removeTunAddress(name: string, address: number): void {
  ip(['addr', 'del', `${formatIPv4(address)}/32`, 'dev', name]);
}
