// The agent's optional parts behind small signatures: the health/metrics server
// (src/observability/http.ts) and flannel's iptables rules (src/link/iptables-rules.ts).
import { startHealthServer as startHttpServer } from '../observability/http.js';
import { startFlannelIptables } from '../link/iptables-rules.js';
import type { Logger } from '../observability/log.js';
import type { DatapathInfo, FastPathCounters } from '../observability/metrics.js';
import type { PeerTraffic } from '../observability/metrics.js';
import type { Route } from '../routing-table/snapshot.js';
import type { Lease } from '../subnet/lease-manager.js';
import type { Ipv4Prefix } from '../backend/udp-datapath.js';

/** What the health and metrics endpoints read; every getter is cheap and never throws. */
export interface AgentStatus {
  /** The datapath counters, indexed by C.* (names: COUNTER_NAMES in src/datapath/counters.ts). */
  readonly counters: Float64Array;
  /** The routes in force (peer subnets and PublicIPs). */
  routes(): readonly Route[];
  /** The own lease (subnet, PublicIP, expiresAt), or null before one is held. */
  lease(): Lease | null;
  /** True once flannel0 forwards with the first route listing loaded. */
  ready(): boolean;
  /** Each offload and whether it is in force. */
  offloads?(): Readonly<Record<string, boolean>>;
  /** Threads forwarding packets (--workers). */
  datapathThreads?(): number;
  /** Which datapath forwards (--datapath), and why the fast path is not in force. */
  datapath?(): DatapathInfo;
  /** The fast path's own counters, null when it does not run. */
  fastPathCounters?(): FastPathCounters | null;
  /** Packets, bytes and drops to and from each peer route in force. */
  peerTraffic?(): Iterable<PeerTraffic>;
  /** The datapath's latency histograms (src/datapath/latency.ts). */
  readonly latency?: Float64Array;
  /** Input refused (peer leases, config changes), by input and reason. */
  refusals?(): Iterable<{ readonly input: string; readonly reason: string; readonly count: number }>;
}

export interface Closable {
  close(): Promise<void>;
}

/** Starts /healthz, /readyz and /metrics on ip:port; a bind failure throws one line. */
export async function startHealthServer(
  ip: string,
  port: number,
  status: AgentStatus,
  log: Logger,
): Promise<Closable | null> {
  const server = await startHttpServer({
    host: ip,
    port,
    source: status,
    isReady: () => status.ready(),
    onError: (e) => log.warn('metrics', { error: e.message }),
  });
  log.info('health server listening', { host: server.host, port: server.port });
  return server;
}

/** flannel's masquerade (and FORWARD accept) rules for one lease. */
export interface IpMasqRules {
  /** The lease moved to another subnet: replace the rules that name the old one. */
  update(subnet: Ipv4Prefix): Promise<void>;
  /** Removes every rule this agent added (on SIGTERM). */
  teardown(): Promise<void>;
}

export interface IpMasqOptions {
  readonly network: Ipv4Prefix;
  readonly subnet: Ipv4Prefix;
  /** --ip-masq: the MASQUERADE rules. */
  readonly ipMasq: boolean;
  /** --iptables-forward-rules: FORWARD accept rules for the network. */
  readonly forwardRules: boolean;
}

/** Installs flannel's rules (re-checked every 5 s, like flanneld's --iptables-resync). */
export async function setUpIpMasq(options: IpMasqOptions, log: Logger): Promise<IpMasqRules | null> {
  return startFlannelIptables({
    network: options.network,
    subnet: options.subnet,
    ipMasq: options.ipMasq,
    forwardRules: options.forwardRules,
    onResyncError: (e) => log.warn('iptables resync', { error: e.message }),
  });
}
