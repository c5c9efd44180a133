// The agent in flanneld mode: network config, own lease and peer leases from the registry (etcd v3
// or the embedded file registry), and the backend that Backend.Type names (src/backend/), in
// flanneld's order:
//
//   0. the host lock (src/agent/host-lock.ts): one agent per host (network namespace); a second
//      one is refused, naming the first, before it touches the registry, a device or a route;
//   1. the external interface and PublicIP (--iface/--iface-regex/--public-ip);
//   2. `<prefix>/config`, waited for (missing, invalid or unreachable: a message, retried every
//      second, as flanneld does), never a crash;
//   3. the backend prepared (vxlan: its device, its MAC taken back from our lease in the registry);
//   4. the lease, carrying the backend's attributes (the subnet file's previous subnet is preferred);
//   5. the backend started on the subnet (udp: flannel0 and the UDP socket);
//   6. the subnet file, written atomically;
//   7. peer leases from the RouteWatcher into the backend, lease renewal and re-acquisition;
//   8. "forwarding" once the first peer listing is in force (programmed into the kernel by vxlan and
//      host-gw); systemd readiness.
//
// While the registry is unreachable the backend keeps what it has; the stores reconnect by
// themselves. The agent is an object: run() until stop(), several in one process if need be. It
// installs no process-wide handler (signals are the command line's, src/cli/main.ts). On stop the
// lease stays in the registry (a restart reuses it); udp closes flannel0, vxlan and host-gw leave
// their device and routes (as flanneld does); the subnet file stays.
import { newCounters } from '../datapath/counters.js';
import { Iproute2Kernel } from '../kernel/iproute2.js';
import type { Kernel } from '../kernel/kernel.js';
import { findExternalInterface, type ExternalInterface } from '../link/ip.js';
import type { Logger } from '../observability/log.js';
import { formatCidr, formatIPv4 } from '../routing-table/ipv4.js';
import type { Route } from '../routing-table/snapshot.js';
import { NetworkConfigError, type NetworkConfig } from '../subnet/config.js';
import { FileKvStore } from '../subnet/file-kv.js';
import type { KvStore } from '../subnet/kv.js';
import { configKey } from '../subnet/lease.js';
import { LeaseManager, type Lease } from '../subnet/lease-manager.js';
import { NetworkConfigMissingError, fetchNetworkConfig } from '../subnet/network-config-source.js';
import { RouteWatcher, type PeerLease } from '../subnet/route-watcher.js';
import { RefusalCounters } from '../subnet/refusals.js';
import { ConfigWatcher } from '../subnet/config-watcher.js';
import { recoverFromRegistryResets, type ResetRecovery } from './registry-reset.js';
import { readPreviousSubnet, writeSubnetEnv } from '../subnet/subnet-env.js';
import type { RegistryFlags } from '../cli/flags.js';
import type { Backend } from '../backend/backend.js';
import { createBackend } from '../backend/registry.js';
import { describeRoutes } from '../backend/udp-datapath.js';
import { openEtcdStore } from './etcd-api.js';
import { setUpIpMasq, startHealthServer, type AgentStatus, type Closable, type IpMasqRules } from './hooks.js';
import { notifySystemdReady } from './systemd.js';
import { HOST_LOCK_NAME, takeHostLock } from './host-lock.js';

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

/** What a test or a bench may put in place of the real edges. */
export interface RegistryAgentDeps {
  /** Default: openStore(flags). The agent closes it when it stops. */
  readonly store?: KvStore;
  /** Default: iproute2 on the host. */
  readonly kernel?: Kernel;
  /** Default: found from the flags as flanneld does. */
  readonly ext?: ExternalInterface;
  /**
   * The host lock's name (src/agent/host-lock.ts), taken before anything else; null: no lock.
   * Default: HOST_LOCK_NAME, the one every agent on the host (network namespace) takes. Several
   * agents in one process (tests, each with its own fake kernel) give each its own name, or null.
   */
  readonly hostLock?: string | null;
}

export class RegistryAgent {
  private readonly abort = new AbortController();
  private stopReason: string | null = null;
  private backendNow: Backend | null = null;
  private leases: LeaseManager | null = null;
  private resolveReady: () => void = () => {};
  private rejectReady: (err: Error) => void = () => {};
  /** Resolves when the agent is forwarding (first peer listing in); rejects if run() ends first. */
  readonly ready: Promise<void>;

  constructor(
    private readonly flags: RegistryFlags,
    private readonly log: Logger,
    private readonly deps: RegistryAgentDeps = {},
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => undefined); // a caller that never awaits ready must not see it unhandled
  }

  /** The backend, once the network config named it. */
  get backend(): Backend | null {
    return this.backendNow;
  }

  /** The own lease, once acquired. */
  get lease(): Lease | null {
    return this.leases?.lease ?? null;
  }

  /** Ends run(): the waits in progress end at once, then the agent shuts down. Idempotent. */
  stop(reason = 'stop'): void {
    if (this.stopReason !== null) return;
    this.stopReason = reason;
    this.abort.abort();
  }

  /** Logs the udp datapath's counters (SIGUSR1); nothing for the kernel backends. */
  reportCounters(): void {
    const dp = this.backendNow?.datapath;
    if (dp) this.log.info('counters', { counters: dp.countersObject(), latencyUs: dp.latencyObject() });
  }

  /**
   * Runs until stop(); resolves with the exit code. A start-up failure is thrown (one line); so is
   * another agent holding the host lock (HostLockHeldError, naming it), before the registry, the
   * backend or any device is touched.
   */
  async run(): Promise<number> {
    try {
      const lockName = this.deps.hostLock === undefined ? HOST_LOCK_NAME : this.deps.hostLock;
      const hostLock = lockName === null ? null : await takeHostLock('flanneld', lockName);
      try {
        return await this.runInner();
      } finally {
        await hostLock?.release();
      }
    } catch (err) {
      this.rejectReady(err as Error);
      throw err;
    } finally {
      this.rejectReady(new Error('the agent stopped before forwarding'));
    }
  }

  /**
   * Sleeps ms; true if stop() came first. The timer is not unref'd: while the agent waits for the
   * config or a lease, it is what keeps the process alive.
   */
  private sleepOrStop(ms: number): Promise<boolean> {
    const signal = this.abort.signal;
    if (signal.aborted) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const onAbort = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve(false);
      }, ms);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private stopped(): Promise<void> {
    const signal = this.abort.signal;
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  }

  private async runInner(): Promise<number> {
    const { flags, log } = this;
    const sleepOrStop = (ms: number) => this.sleepOrStop(ms);
    const ext = this.deps.ext ?? findExternalInterface(flags.ifaces, flags.publicIp, flags.ifaceRegexes);
    const publicIp = flags.publicIp ?? ext.address;
    const store = this.deps.store ?? openStore(flags, log);
    const registry = flags.store.kind === 'file' ? `file ${flags.store.path}` : `etcd ${flags.store.endpoints}`;
    log.info('starting', {
      registry,
      prefix: flags.prefix,
      iface: ext.name,
      ifaceAddress: formatIPv4(ext.address),
      publicIp: formatIPv4(publicIp),
    });

    let backend: Backend | null = null;
    let routeWatcher: RouteWatcher | null = null;
    let configWatcher: ConfigWatcher | null = null;
    let resetRecovery: ResetRecovery | null = null;
    let health: Closable | null = null;
    let ipMasq: IpMasqRules | null = null;
    try {
      // --- 2. network config -----------------------------------------------------------------
      const config = await waitForConfig(store, flags.prefix, log, sleepOrStop);
      if (config === null) return stopSummary(log, this.stopReason);
      if (config.enableIPv6)
        log.warn('EnableIPv6 is set in the network config; flannel-ts carries IPv4 only and leases no IPv6 subnet');
      log.info('network config', {
        network: formatCidr(config.network.prefix, config.network.prefixLen),
        subnetLen: config.subnetLen,
        subnetMin: formatIPv4(config.subnetMin),
        subnetMax: formatIPv4(config.subnetMax),
        backend: config.backend,
      });

      // --- 3./4. backend and lease -------------------------------------------------------------
      backend = createBackend(config.backend, {
        ext,
        publicIp,
        network: config.network,
        kernel: this.deps.kernel ?? new Iproute2Kernel(),
        log,
        udp: {
          batch: flags.batch,
          offloads: flags.offloads,
          tunIoUring: flags.ioUring,
          workers: flags.workers,
          datapath: flags.datapath,
          datapathWait: flags.datapathWait,
          datapathSliceUs: flags.datapathSliceUs,
          datapathSpinUs: flags.datapathSpinUs,
        },
      });
      this.backendNow = backend;
      const previousSubnet = await readPreviousSubnet(flags.subnetFile);
      const leases = new LeaseManager({
        store,
        prefix: flags.prefix,
        config,
        publicIp,
        previousSubnet,
        renewMarginMinutes: flags.renewMarginMinutes,
        logger: log,
      });
      this.leases = leases;
      const prepared = await prepareBackend(backend, leases, log, sleepOrStop);
      if (prepared === null) return stopSummary(log, this.stopReason);
      const lease = await acquireLease(leases, log, sleepOrStop);
      if (lease === null) return stopSummary(log, this.stopReason);
      log.info('lease acquired', describeLease(lease));

      // --- 5./6. device, subnet file --------------------------------------------------------------
      await backend.start(lease.subnet);
      const be = backend;
      // Writes run one after another, so that the file always ends with the latest subnet.
      let subnetEnvWrites: Promise<void> = Promise.resolve();
      const subnetEnv = (subnet: Lease['subnet']): Promise<void> => {
        const write = subnetEnvWrites.then(() =>
          writeSubnetEnv(flags.subnetFile, { network: config.network, subnet, mtu: be.mtu, ipMasq: flags.ipMasq }),
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
      // iptables runs while the peers are listed and programmed (flanneld sets its rules up in the
      // background too); the agent is ready only once both are done.
      const ipMasqSetUp =
        flags.ipMasq || flags.iptablesForwardRules
          ? setUpIpMasq(
              {
                network: config.network,
                subnet: lease.subnet,
                ipMasq: flags.ipMasq,
                forwardRules: flags.iptablesForwardRules,
              },
              log,
            )
          : Promise.resolve(null);
      ipMasqSetUp.catch(() => undefined); // awaited below; must not be unhandled meanwhile

      // --- 7. peers and lease upkeep ------------------------------------------------------------
      let resolveFirstPeers = (): void => {};
      const firstPeers = new Promise<void>((resolve) => {
        resolveFirstPeers = resolve;
      });
      let routes: readonly Route[] = [];
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
        onPeers: (peers: PeerLease[]) => {
          try {
            const next = be.setPeers(peers);
            if (!sameRouteList(next, routes)) routeLog.changed(next);
            routes = next;
          } catch (err) {
            log.error('could not apply the new routes; keeping the previous ones', { error: (err as Error).message });
          }
          resolveFirstPeers();
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
          be.changeSubnet(next.subnet).then(
            () => log.info('moved to the new subnet', be.describe()),
            (err: Error) => log.error('could not move to the new subnet', { error: err.message }),
          );
          subnetEnv(next.subnet).then(
            () => log.info('subnet file written', { path: flags.subnetFile }),
            (err: Error) =>
              log.error('could not write the subnet file', { path: flags.subnetFile, error: err.message }),
          );
          ipMasq
            ?.update(next.subnet)
            .catch((err: Error) => log.error('could not update the masquerade rules', { error: err.message }));
        },
        onError: (err) => log.warn('lease upkeep failed; retrying', { error: err.message }),
      });
      configWatcher = new ConfigWatcher({ store, prefix: flags.prefix, inUse: config, logger: log, refusals });
      configWatcher.start();
      resetRecovery = recoverFromRegistryResets(store, () => this.leases?.lease ?? null, log);
      const recovery = resetRecovery;

      // --- 8. ready --------------------------------------------------------------------------------
      ipMasq = await ipMasqSetUp;
      // Ready once the first listing is in force: a kernel backend has tried every entry of it.
      const firstProgrammed = firstPeers.then(() => be.settled()).then(() => false);
      if (await Promise.race([firstProgrammed, this.stopped().then(() => true)])) {
        return await this.shutdown(be, health, ipMasq);
      }
      let ready = true;
      log.info('forwarding', { ...be.describe(), ...routeListFields(routes), subnetFile: flags.subnetFile, registry });
      this.resolveReady();
      await notifySystemdReady(log);
      if (flags.healthzPort !== 0) {
        health = await this.startHealth(
          be,
          () => routes,
          () => ready && !recovery.recovering,
          refusals,
        );
      }
      // A daemon runs until stopped: with a kernel backend and the file registry nothing else may
      // hold the event loop (its timers are unref'd), so this does.
      const keepAlive = setInterval(() => undefined, 0x7fffffff);
      await this.stopped();
      clearInterval(keepAlive);
      ready = false;
      return await this.shutdown(be, health, ipMasq);
    } finally {
      resetRecovery?.stop();
      configWatcher?.stop();
      this.leases?.stop();
      routeWatcher?.stop();
      await backend?.close().catch((err: Error) => log.warn('closing the backend', { error: err.message }));
      await store.close().catch(() => undefined);
    }
  }

  private async startHealth(
    be: Backend,
    routes: () => readonly Route[],
    ready: () => boolean,
    refusals: RefusalCounters,
  ): Promise<Closable | null> {
    const dp = be.datapath;
    const status: AgentStatus = {
      get counters() {
        return dp?.counters ?? NO_COUNTERS;
      }, // live: both directions added up with --workers 2
      get latency() {
        return dp?.latency; // live, as the counters
      },
      routes,
      lease: () => this.leases?.lease ?? null,
      ...(dp
        ? {
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
          }
        : {}),
      refusals: () => refusals.entries(),
      ready,
    };
    try {
      return await startHealthServer(this.flags.healthzIp, this.flags.healthzPort, status, this.log);
    } catch (err) {
      this.log.error('could not start the health server', { error: (err as Error).message });
      return null;
    }
  }

  private async shutdown(be: Backend, health: Closable | null, ipMasq: IpMasqRules | null): Promise<number> {
    const log = this.log;
    log.info('stopping', { signal: this.stopReason, lease: 'kept in the registry' });
    this.leases?.stop();
    const dp = be.datapath;
    if (dp !== null) {
      dp.stop();
      this.reportCounters();
      const writeError = dp.lastWriteError();
      if (writeError !== null) log.warn('some packets could not be sent or written', { lastError: writeError });
    }
    await health?.close().catch((err: Error) => log.warn('closing the health server', { error: err.message }));
    await ipMasq?.teardown().catch((err: Error) => log.warn('removing the masquerade rules', { error: err.message }));
    return 0;
  }
}

/** The counters of a backend without a userspace datapath: all zero. */
const NO_COUNTERS = newCounters();

function sameRouteList(a: readonly Route[], b: readonly Route[]): boolean {
  return (
    a.length === b.length &&
    a.every((r, i) => r.prefix === b[i]!.prefix && r.prefixLen === b[i]!.prefixLen && r.publicIp === b[i]!.publicIp)
  );
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

/**
 * The backend prepared with our lease as the registry holds it (vxlan takes its MAC back from it);
 * the registry is retried every second, a failure of the backend itself is thrown (fatal, as in
 * flanneld). null if stop() came first.
 */
async function prepareBackend(
  backend: Backend,
  leases: LeaseManager,
  log: Logger,
  sleepOrStop: (ms: number) => Promise<boolean>,
): Promise<true | null> {
  const retry = new RetryLog(log);
  for (;;) {
    let own;
    try {
      own = await leases.findOwnLeaseAttrs();
    } catch (err) {
      retry.report('warn', "couldn't read the subnet leases", { error: (err as Error).message });
      if (await sleepOrStop(RETRY_MS)) return null;
      continue;
    }
    leases.setBackendAttrs(await backend.prepare(own));
    return true;
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
