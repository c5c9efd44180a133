// The agent in flanneld mode (udp backend): network config, own lease and peer routes from the
// registry (etcd v3 or the embedded file registry), in flanneld's order:
//
//   1. the external interface and PublicIP (--iface/--iface-regex/--public-ip);
//   2. `<prefix>/config`, waited for (missing, invalid or unreachable: a message, retried every
//      second, as flanneld does), never a crash;
//   3. the lease (the subnet file's previous subnet is preferred, as flannel does);
//   4. flannel0 from the lease, UDP bound to the interface address and Backend.Port;
//   5. the subnet file, written atomically;
//   6. routes from the RouteWatcher into the Forwarder, lease renewal and re-acquisition;
//   7. "forwarding" once the first route listing is in; systemd readiness.
//
// While the registry is unreachable the datapath keeps forwarding with the last routes; the
// stores reconnect by themselves. SIGINT/SIGTERM: stop, leave the lease in the registry (a restart
// reuses it), close flannel0 (its address and route go with it), keep the subnet file.
import { findExternalInterface } from '../link/ip.js';
import type { Logger } from '../observability/log.js';
import { formatCidr, formatIPv4 } from '../routing-table/ipv4.js';
import type { Route } from '../routing-table/snapshot.js';
import { NetworkConfigError, type NetworkConfig } from '../subnet/config.js';
import { FileKvStore } from '../subnet/file-kv.js';
import type { KvStore } from '../subnet/kv.js';
import { configKey } from '../subnet/lease.js';
import { LeaseManager, type Lease } from '../subnet/lease-manager.js';
import { NetworkConfigMissingError, fetchNetworkConfig } from '../subnet/network-config-source.js';
import { RouteWatcher } from '../subnet/route-watcher.js';
import { RefusalCounters } from '../subnet/refusals.js';
import { ConfigWatcher } from '../subnet/config-watcher.js';
import { recoverFromRegistryResets, type ResetRecovery } from './registry-reset.js';
import { readPreviousSubnet, writeSubnetEnv } from '../subnet/subnet-env.js';
import type { RegistryFlags } from '../cli/flags.js';
import { Datapath, describeRoutes, waitForStopSignal } from './datapath.js';
import { openEtcdStore } from './etcd-api.js';
import { setUpIpMasq, startHealthServer, type AgentStatus, type Closable, type IpMasqRules } from './hooks.js';
import { notifySystemdReady } from './systemd.js';

/**
 * Info-level log lines carry the full route list ("10.244.1.0/24=192.0.2.1" each) only up to this
 * many routes. With 1,000 peers the list is ~35 kB of JSON, rebuilt and written on every lease
 * change: beyond this it goes to the debug level, and info lines carry the count and the change.
 */
export const ROUTE_LIST_LOG_LIMIT = 64;

/** flanneld retries a missing or invalid config (and a failed lease acquisition) every second. */
const RETRY_MS = 1000;
/** A retried failure with an unchanged message is logged again after this long. */
const REPEAT_LOG_MS = 30_000;

export function openStore(flags: RegistryFlags, log: Logger): KvStore {
  const s = flags.store;
  if (s.kind === 'file') return new FileKvStore({ path: s.path });
  return openEtcdStore(s, flags.prefix, log);
}

/** Logs a retried failure when its message changes, and again every REPEAT_LOG_MS. */
class RetryLog {
  private last = '';
  private lastAt = 0;
  constructor(private readonly log: Logger) {}
  report(level: 'warn' | 'error', msg: string, fields: Record<string, unknown>): void {
    const id = msg + JSON.stringify(fields);
    const now = Date.now();
    if (id === this.last && now - this.lastAt < REPEAT_LOG_MS) return;
    this.last = id;
    this.lastAt = now;
    this.log[level](msg, { ...fields, retryInMs: RETRY_MS });
  }
}

export async function runRegistryAgent(flags: RegistryFlags, log: Logger): Promise<number> {
  let datapath: Datapath | null = null;
  const reportCounters = () => {
    if (datapath !== null)
      log.info('counters', { counters: datapath.countersObject(), latencyUs: datapath.latencyObject() });
  };
  const stopSignal = waitForStopSignal(reportCounters);
  let stopped: string | null = null;
  /** Ends the sleep in progress early, if any: one listener for the whole run, nothing per sleep. */
  let wakeSleeper: (() => void) | null = null;
  void stopSignal.promise.then((s) => {
    stopped = s;
    wakeSleeper?.();
  });
  /**
   * Sleeps ms; true if a stop signal came first. The timer is not unref'd: while the agent waits
   * for the config or a lease, it is what keeps the process alive.
   */
  const sleepOrStop = (ms: number): Promise<boolean> => {
    if (stopped !== null) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        wakeSleeper = null;
        resolve(false);
      }, ms);
      wakeSleeper = () => {
        clearTimeout(timer);
        wakeSleeper = null;
        resolve(true);
      };
    });
  };

  const ext = findExternalInterface(flags.ifaces, flags.publicIp, flags.ifaceRegexes);
  const publicIp = flags.publicIp ?? ext.address;
  const store = openStore(flags, log);
  const registry = flags.store.kind === 'file' ? `file ${flags.store.path}` : `etcd ${flags.store.endpoints}`;
  log.info('starting', {
    registry,
    prefix: flags.prefix,
    iface: ext.name,
    ifaceAddress: formatIPv4(ext.address),
    publicIp: formatIPv4(publicIp),
  });

  let leases: LeaseManager | null = null;
  let routeWatcher: RouteWatcher | null = null;
  let configWatcher: ConfigWatcher | null = null;
  let resetRecovery: ResetRecovery | null = null;
  let health: Closable | null = null;
  let ipMasq: IpMasqRules | null = null;
  try {
    // --- 2. network config -----------------------------------------------------------------
    const config = await waitForConfig(store, flags.prefix, log, sleepOrStop);
    if (config === null) return stopSummary(log, stopped);
    if (config.enableIPv6)
      log.warn('EnableIPv6 is set in the network config; flannel-ts carries IPv4 only and leases no IPv6 subnet');
    log.info('network config', {
      network: formatCidr(config.network.prefix, config.network.prefixLen),
      subnetLen: config.subnetLen,
      subnetMin: formatIPv4(config.subnetMin),
      subnetMax: formatIPv4(config.subnetMax),
      backend: config.backend,
    });

    // --- 3. lease ----------------------------------------------------------------------------
    const previousSubnet = await readPreviousSubnet(flags.subnetFile);
    leases = new LeaseManager({
      store,
      prefix: flags.prefix,
      config,
      publicIp,
      previousSubnet,
      renewMarginMinutes: flags.renewMarginMinutes,
      logger: log,
    });
    const lease = await acquireLease(leases, log, sleepOrStop);
    if (lease === null) return stopSummary(log, stopped);
    log.info('lease acquired', describeLease(lease));

    // --- 4./5. flannel0, UDP, subnet file ---------------------------------------------------------
    const dp = Datapath.open({
      ext,
      network: config.network,
      subnet: lease.subnet,
      port: config.backend.port,
      batch: flags.batch,
      offloads: flags.offloads,
      tunIoUring: flags.ioUring,
      workers: flags.workers,
      datapath: flags.datapath,
      datapathWait: flags.datapathWait,
      datapathSliceUs: flags.datapathSliceUs,
      datapathSpinUs: flags.datapathSpinUs,
    });
    datapath = dp;
    // Writes run one after another, so that the file always ends with the latest subnet.
    let subnetEnvWrites: Promise<void> = Promise.resolve();
    const subnetEnv = (subnet: Lease['subnet']): Promise<void> => {
      const write = subnetEnvWrites.then(() =>
        writeSubnetEnv(flags.subnetFile, { network: config.network, subnet, mtu: dp.mtu, ipMasq: flags.ipMasq }),
      );
      subnetEnvWrites = write.catch(() => undefined);
      return write;
    };
    try {
      await subnetEnv(lease.subnet);
      log.info('subnet file written', { path: flags.subnetFile });
    } catch (err) {
      // As flanneld: a failed write is a warning, not a reason to stop forwarding.
      log.warn('could not write the subnet file', { path: flags.subnetFile, error: (err as Error).message });
    }
    if (flags.ipMasq || flags.iptablesForwardRules) {
      ipMasq = await setUpIpMasq(
        {
          network: config.network,
          subnet: lease.subnet,
          ipMasq: flags.ipMasq,
          forwardRules: flags.iptablesForwardRules,
        },
        log,
      );
    }

    // --- 6. routes and lease upkeep ------------------------------------------------------------------
    let resolveFirstRoutes = (): void => {};
    const firstRoutes = new Promise<void>((resolve) => {
      resolveFirstRoutes = resolve;
    });
    const routeLog = new RouteChangeLog(log, flags.logLevel === 'debug');
    const refusals = new RefusalCounters();
    const watcher = new RouteWatcher({
      store,
      prefix: flags.prefix,
      ownSubnet: lease.subnet,
      network: config.network,
      ownPublicIp: publicIp,
      refusals,
      logger: log,
      onRoutes: (routes: Route[]) => {
        try {
          dp.setRoutes(routes);
          routeLog.changed(routes);
        } catch (err) {
          log.error('could not apply the new routes; keeping the previous ones', { error: (err as Error).message });
        }
        resolveFirstRoutes();
      },
    });
    routeWatcher = watcher;
    watcher.start();
    leases.start({
      onReacquired: (next, previous) => {
        log.warn('lease lost and re-acquired', {
          ...describeLease(next),
          previousSubnet: formatCidr(previous.subnet.prefix, previous.subnet.prefixLen),
        });
        if (next.subnet.prefix === previous.subnet.prefix && next.subnet.prefixLen === previous.subnet.prefixLen)
          return;
        watcher.setOwnSubnet(next.subnet); // first: our new subnet must never be routed to a peer
        try {
          dp.changeSubnet(next.subnet, config.network);
          log.info('flannel0 moved to the new subnet', dp.describe(publicIp, config.network));
        } catch (err) {
          log.error('could not move flannel0 to the new subnet', { error: (err as Error).message });
        }
        subnetEnv(next.subnet).then(
          () => log.info('subnet file written', { path: flags.subnetFile }),
          (err: Error) => log.error('could not write the subnet file', { path: flags.subnetFile, error: err.message }),
        );
        ipMasq
          ?.update(next.subnet)
          .catch((err: Error) => log.error('could not update the masquerade rules', { error: err.message }));
      },
      onError: (err) => log.warn('lease upkeep failed; retrying', { error: err.message }),
    });
    configWatcher = new ConfigWatcher({ store, prefix: flags.prefix, inUse: config, logger: log, refusals });
    configWatcher.start();
    resetRecovery = recoverFromRegistryResets(store, () => leases?.lease ?? null, log);

    // --- 7. ready --------------------------------------------------------------------------------------
    if (await Promise.race([firstRoutes.then(() => false), stopSignal.promise.then(() => true)])) {
      return await shutdown();
    }
    let ready = true;
    log.info('forwarding', {
      ...dp.describe(publicIp, config.network),
      ...routeListFields(dp.routes),
      subnetFile: flags.subnetFile,
      registry,
    });
    // Once forwarding, an unexpected error is logged; it must not take the datapath down.
    process.on('unhandledRejection', (reason) =>
      log.error('unexpected error (the agent keeps running)', { error: String(reason) }),
    );
    await notifySystemdReady(log);
    if (flags.healthzPort !== 0) {
      const status: AgentStatus = {
        get counters() {
          return dp.counters;
        }, // live: both directions added up with --workers 2
        get latency() {
          return dp.latency;
        },
        routes: () => dp.routes,
        lease: () => leases?.lease ?? null,
        offloads: () => {
          const o = dp.offloadsInForce();
          return {
            tun_tso: o.tunTso,
            tun_uso: o.tunUso,
            tun_gro: o.tunGro,
            udp_gso: o.udpGso > 0,
            udp_gro: o.udpGro,
            tun_io_uring: o.tunIoUring > 0,
          };
        },
        datapathThreads: () => dp.workers,
        datapath: () => dp.describeDatapath(),
        fastPathCounters: () => dp.fastPathCounters(),
        peerTraffic: () => dp.peerTraffic(),
        refusals: () => refusals.entries(),
        ready: () => ready && resetRecovery?.recovering !== true,
      };
      try {
        health = await startHealthServer(flags.healthzIp, flags.healthzPort, status, log);
      } catch (err) {
        log.error('could not start the health server', { error: (err as Error).message });
      }
    }
    await stopSignal.promise;
    ready = false;
    return await shutdown();
  } finally {
    stopSignal.dispose();
    resetRecovery?.stop();
    configWatcher?.stop();
    leases?.stop();
    routeWatcher?.stop();
    datapath?.close();
    await store.close().catch(() => undefined);
  }

  async function shutdown(): Promise<number> {
    log.info('stopping', { signal: stopped, lease: 'kept in the registry' });
    leases?.stop();
    routeWatcher?.stop();
    if (datapath !== null) {
      datapath.stop();
      reportCounters();
      const writeError = datapath.lastWriteError();
      if (writeError !== null) log.warn('some packets could not be sent or written', { lastError: writeError });
    }
    await health?.close().catch((err: Error) => log.warn('closing the health server', { error: err.message }));
    await ipMasq?.teardown().catch((err: Error) => log.warn('removing the masquerade rules', { error: err.message }));
    return 0;
  }
}

/** routeCount, and routes (the full list) when there are at most ROUTE_LIST_LOG_LIMIT of them. */
export function routeListFields(routes: readonly Route[]): { routeCount: number; routes?: string[] } {
  return routes.length <= ROUTE_LIST_LOG_LIMIT
    ? { routeCount: routes.length, routes: describeRoutes(routes) }
    : { routeCount: routes.length };
}

/**
 * The "routes" line after every change: routeCount, added and removed (the change, as
 * "subnet=PublicIP"), and the full list as routes when it is short (see ROUTE_LIST_LOG_LIMIT);
 * a longer full list is logged at debug level only, and only built when debug is on.
 */
export class RouteChangeLog {
  private previous = new Set<string>();

  constructor(
    private readonly log: Logger,
    private readonly debug: boolean,
  ) {}

  changed(routes: readonly Route[]): void {
    const current = new Set(describeRoutes(routes));
    const added = [...current].filter((r) => !this.previous.has(r));
    const removed = [...this.previous].filter((r) => !current.has(r));
    this.previous = current;
    const full = routes.length <= ROUTE_LIST_LOG_LIMIT;
    this.log.info('routes', { routeCount: routes.length, added, removed, ...(full ? { routes: [...current] } : {}) });
    if (!full && this.debug) this.log.debug('routes (full list)', { routes: [...current] });
  }
}

function stopSummary(log: Logger, signal: string | null): number {
  log.info('stopping', { signal, before: 'forwarding' });
  return 0;
}

function describeLease(lease: Lease): Record<string, unknown> {
  return {
    key: lease.key,
    subnet: formatCidr(lease.subnet.prefix, lease.subnet.prefixLen),
    publicIp: formatIPv4(lease.publicIp),
    expiresAt: lease.expiresAt === null ? null : new Date(lease.expiresAt).toISOString(),
  };
}

/** The network config, retried every second until valid; null if a stop signal came first. */
async function waitForConfig(
  store: KvStore,
  prefix: string,
  log: Logger,
  sleepOrStop: (ms: number) => Promise<boolean>,
): Promise<NetworkConfig | null> {
  const retry = new RetryLog(log);
  const key = configKey(prefix);
  for (;;) {
    try {
      return await fetchNetworkConfig(store, prefix);
    } catch (err) {
      const message = (err as Error).message;
      if (err instanceof NetworkConfigMissingError) {
        retry.report('warn', 'waiting for the network config', { key, error: message });
      } else if (err instanceof NetworkConfigError) {
        retry.report('error', 'invalid network config', { key, field: err.field, error: message });
      } else {
        retry.report('warn', "couldn't fetch the network config", { key, error: message });
      }
    }
    if (await sleepOrStop(RETRY_MS)) return null;
  }
}

/** The lease, retried every second until acquired; null if a stop signal came first. */
async function acquireLease(
  leases: LeaseManager,
  log: Logger,
  sleepOrStop: (ms: number) => Promise<boolean>,
): Promise<Lease | null> {
  const retry = new RetryLog(log);
  for (;;) {
    try {
      return await leases.acquire();
    } catch (err) {
      retry.report('error', 'failed to acquire a lease', { error: (err as Error).message });
    }
    if (await sleepOrStop(RETRY_MS)) return null;
  }
}
