// The kernel-programming interface shared by the backends: links, addresses, routes, neighbours and
// bridge fdb entries, as small typed operations. `Iproute2Kernel` (iproute2.ts) programs the host;
// tests use an in-memory fake (test/helpers/fake-kernel.ts). Addresses are uint32 host order, as
// everywhere in flannel-ts; MACs are lower-case "aa:bb:cc:dd:ee:ff".
import type { Ipv4Net } from '../subnet/config.js';

export interface VxlanLinkSpec {
  readonly name: string;
  readonly vni: number;
  /** The VTEP's source address (the PublicIP's interface address). */
  readonly local: number;
  /** The external interface the encapsulated packets leave by. */
  readonly dev: string;
  /** UDP destination port; 0 = the kernel's default (8472). */
  readonly port: number;
  readonly learning: boolean;
  readonly gbp: boolean;
  readonly mtu: number;
  readonly mac: string;
}

export interface VxlanInfo {
  readonly vni: number;
  readonly local: number | null;
  readonly dev: string | null;
  /** As the kernel reports it (8472 when created with 0). */
  readonly port: number;
  readonly learning: boolean;
  readonly gbp: boolean;
}

export interface LinkInfo {
  readonly name: string;
  readonly index: number;
  readonly mtu: number;
  readonly mac: string | null;
  readonly up: boolean;
  /** `vxlan`, `veth`, ... ; null for a plain device. */
  readonly kind: string | null;
  readonly vxlan: VxlanInfo | null;
}

/** An IPv4 unicast route in the main table. */
export interface KernelRoute {
  readonly dst: Ipv4Net;
  /** The gateway; null for a device route. */
  readonly via: number | null;
  /** null: the kernel picks the device that reaches `via` (flanneld's DirectRouting route). */
  readonly dev: string | null;
  /** RTNH_F_ONLINK: the gateway is taken as on-link whatever the device's addresses say. */
  readonly onlink?: boolean;
}

/** One change, applied in a batch (see Kernel.apply). */
export type KernelOp =
  /** A permanent ARP entry (flanneld's AddARP: the peer's VTEP address -> its VtepMAC). */
  | { readonly op: 'neigh-replace'; readonly dev: string; readonly ip: number; readonly mac: string }
  | { readonly op: 'neigh-del'; readonly dev: string; readonly ip: number }
  /** A permanent bridge fdb entry of a vxlan device (flanneld's AddFDB: VtepMAC -> PublicIP). */
  | { readonly op: 'fdb-replace'; readonly dev: string; readonly mac: string; readonly dst: number }
  | { readonly op: 'fdb-del'; readonly dev: string; readonly mac: string; readonly dst: number }
  | { readonly op: 'route-replace'; readonly route: KernelRoute }
  | { readonly op: 'route-del'; readonly route: KernelRoute };

/** A batch's outcome: null for each op that succeeded, else its one-line error. */
export type OpResults = (string | null)[];

export interface LinkWatch {
  close(): void;
}

export interface Kernel {
  link(name: string): Promise<LinkInfo | null>;
  /** Creates a vxlan device (down). Throws if it exists. */
  addVxlan(spec: VxlanLinkSpec): Promise<void>;
  deleteLink(name: string): Promise<void>;
  setLinkUp(name: string): Promise<void>;
  /** The device's IPv4 addresses with their prefix lengths. */
  addresses(dev: string): Promise<Ipv4Net[]>;
  addAddress(dev: string, address: Ipv4Net): Promise<void>;
  deleteAddress(dev: string, address: Ipv4Net): Promise<void>;
  /**
   * Applies the ops in order, as one batch where possible. A failed op does not stop the others;
   * every op gets its result. Never throws for an op's failure.
   */
  apply(ops: readonly KernelOp[]): Promise<OpResults>;
  /** The IPv4 unicast routes of the main table that have a destination prefix. */
  routes(): Promise<KernelRoute[]>;
  /** True when the kernel reaches ip without a gateway (flanneld's ip.DirectRouting). */
  directlyConnected(ip: number): Promise<boolean>;
  /** Calls onDeleted whenever a link of that name is deleted. */
  watchLinkDeleted(name: string, onDeleted: () => void): LinkWatch;
}

/** Same destination, gateway and device (flannel's routeEqual, with the device by name). */
export function sameRoute(a: KernelRoute, b: KernelRoute): boolean {
  return a.dst.prefix === b.dst.prefix && a.dst.prefixLen === b.dst.prefixLen && a.via === b.via && a.dev === b.dev;
}
