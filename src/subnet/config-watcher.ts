// Watches `<prefix>/config` while the agent runs. flanneld reads the network config once, at start,
// and never notices a change; so does flannel-ts (changing Network or SubnetLen under running hosts
// would re-address every pod), but it says so: a change is refused with one log line, naming what
// changed and that the agents must be restarted to apply it, and counted (refusals_total{input=
// "config"}). Also reported: a config deleted or made invalid. A re-put of an equal config is
// silent. Each distinct value is reported once, however often it is written.

import { formatCidr, formatIPv4 } from '../routing-table/ipv4.js';
import type { Clock, Logger, TimerHandle } from './clock.js';
import { silentLogger, systemClock } from './clock.js';
import { parseNetworkConfig, type NetworkConfig } from './config.js';
import type { KvStore, Watch, WatchEvent } from './kv.js';
import { DEFAULT_ETCD_PREFIX, configKey } from './lease.js';
import type { RefusalCounters } from './refusals.js';

const RETRY_MS = 5_000;

export interface ConfigWatcherOptions {
  readonly store: KvStore;
  readonly prefix?: string;
  /** The config the agent runs with. */
  readonly inUse: NetworkConfig;
  readonly logger?: Logger;
  readonly refusals?: RefusalCounters;
  readonly clock?: Clock;
}

/** "Network 10.244.0.0/16 -> 10.245.0.0/16, SubnetLen 24 -> 26"; empty when nothing that matters differs. */
export function describeConfigChange(from: NetworkConfig, to: NetworkConfig): string {
  const fields: [string, string, string][] = [
    [
      'Network',
      formatCidr(from.network.prefix, from.network.prefixLen),
      formatCidr(to.network.prefix, to.network.prefixLen),
    ],
    ['SubnetLen', String(from.subnetLen), String(to.subnetLen)],
    ['SubnetMin', formatIPv4(from.subnetMin), formatIPv4(to.subnetMin)],
    ['SubnetMax', formatIPv4(from.subnetMax), formatIPv4(to.subnetMax)],
    ['Backend.Type', from.backend.type, to.backend.type],
    ['EnableIPv6', String(from.enableIPv6), String(to.enableIPv6)],
  ];
  // The rest of Backend (Port, VNI, DirectRouting, ...), as parsed, under flannel's field names.
  const a = from.backend as unknown as Record<string, unknown>,
    b = to.backend as unknown as Record<string, unknown>;
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (key !== 'type') fields.push([`Backend.${BACKEND_FIELD_NAMES[key] ?? key}`, String(a[key]), String(b[key])]);
  }
  return fields
    .filter(([, a, b]) => a !== b)
    .map(([name, a, b]) => `${name} ${a} -> ${b}`)
    .join(', ');
}

/** The parsed backend fields (src/subnet/config.ts) by their names in flannel's config. */
const BACKEND_FIELD_NAMES: Readonly<Record<string, string>> = {
  port: 'Port',
  vni: 'VNI',
  mtu: 'MTU',
  gbp: 'GBP',
  learning: 'Learning',
  directRouting: 'DirectRouting',
};

export class ConfigWatcher {
  private readonly store: KvStore;
  private readonly key: string;
  private readonly inUse: NetworkConfig;
  private readonly log: Logger;
  private readonly refusals: RefusalCounters | null;
  private readonly clock: Clock;
  private watch: Watch | null = null;
  private timer: TimerHandle | null = null;
  private running = false;
  /** The registry value last reported on (null: deleted); undefined before the first look. */
  private lastValue: string | null | undefined = undefined;

  constructor(options: ConfigWatcherOptions) {
    this.store = options.store;
    this.key = configKey(options.prefix ?? DEFAULT_ETCD_PREFIX);
    this.inUse = options.inUse;
    this.log = options.logger ?? silentLogger;
    this.refusals = options.refusals ?? null;
    this.clock = options.clock ?? systemClock;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.lookAndWatch();
  }

  stop(): void {
    this.running = false;
    this.watch?.close();
    this.watch = null;
    if (this.timer !== null) this.clock.clearTimer(this.timer);
    this.timer = null;
  }

  /** Reads the key (after a start, a compaction or a reset), reports it, and watches from there. */
  private async lookAndWatch(): Promise<void> {
    let listing;
    try {
      listing = await this.store.list(this.key, { expiries: false });
    } catch {
      if (this.running) this.timer = this.clock.setTimer(() => void this.lookAndWatch(), RETRY_MS);
      return;
    }
    if (!this.running) return;
    const kv = listing.kvs.find((k) => k.key === this.key);
    this.report(kv?.value ?? null);
    this.watch = this.store.watchPrefix(this.key, listing.revision + 1, {
      onEvents: (events) => this.onEvents(events),
      onCompacted: () => {
        this.watch = null;
        if (this.running) void this.lookAndWatch();
      },
    });
  }

  private onEvents(events: readonly WatchEvent[]): void {
    let last: WatchEvent | null = null;
    for (const e of events) if ((e.type === 'put' ? e.kv.key : e.key) === this.key) last = e;
    if (last !== null) this.report(last.type === 'put' ? last.kv.value : null);
  }

  private report(value: string | null): void {
    if (value === this.lastValue) return;
    const first = this.lastValue === undefined;
    this.lastValue = value;
    if (value === null) {
      this.refuse('deleted', `The network config ${this.key} was deleted from the registry; keeping the one in use`);
      return;
    }
    let next: NetworkConfig;
    try {
      next = parseNetworkConfig(value);
    } catch (err) {
      this.refuse(
        'invalid',
        `The network config ${this.key} in the registry is now invalid (${(err as Error).message}); ` +
          'keeping the one in use',
      );
      return;
    }
    const change = describeConfigChange(this.inUse, next);
    if (change === '') {
      if (!first) this.log.info(`The network config ${this.key} was rewritten with no change that matters`);
      return;
    }
    this.refuse(
      'changed_while_running',
      `The network config ${this.key} changed while this agent runs (${change}); as flanneld, ` +
        'the agent keeps the config it started with: restart the agents to apply it',
    );
  }

  private refuse(reason: string, line: string): void {
    this.log.warn(line);
    this.refusals?.add('config', reason);
  }
}
