// The kernel fast path of flannel's udp wire: two TC programs (native/bpf/flannel_udp.bpf.c), their
// maps fed from the same route lists as the TypeScript trie, and their per-CPU counters. The
// TypeScript datapath stays up beside it as the slow path for whatever the programs hand up.
// Control plane only: nothing here runs per packet.
import type { Route } from '../routing-table/snapshot.js';
import { FASTPATH_SLOTS, SLOT_TO_DATAPATH, type KernelOnlyCounter } from './counters.js';
import { findFastPathBuild, type FastPathAddon, type FastPathConfig, type FastPathHandle } from './native.js';
import { applyPlan, NOTHING_INSTALLED, planRouteSync, type InstalledRoutes } from './route-sync.js';

/** --datapath: the fast path where the kernel takes it (auto), always (kernel), never (userspace). */
export type DatapathChoice = 'auto' | 'kernel' | 'userspace';
export const DATAPATH_CHOICES: readonly DatapathChoice[] = ['auto', 'kernel', 'userspace'];

/** The fast path could not be loaded or attached; `message` says why, in one line. */
export class FastPathRefusedError extends Error {
  override readonly name = 'FastPathRefusedError';
  readonly code = 'FLANNEL_TS_ERR_FASTPATH_REFUSED';
}

/** A map update failed: the maps may now disagree with the trie (the caller falls back). */
export class FastPathMapError extends Error {
  override readonly name = 'FastPathMapError';
  readonly code = 'FLANNEL_TS_ERR_FASTPATH_MAP';
}

export interface FastPathOptions {
  readonly tunName: string;
  readonly extName: string;
  /** The underlay address the UDP socket binds to. */
  readonly address: number;
  readonly subnet: { readonly prefix: number; readonly prefixLen: number };
  readonly mtu: number;
  readonly port: number;
  /** Try tcx links before clsact (default: yes, unless FLANNEL_TS_FASTPATH_ATTACH=tc). */
  readonly allowTcx?: boolean;
}

/** Environment knob: "tc" attaches through clsact even where tcx links exist (tests of that path). */
export const ATTACH_ENV = 'FLANNEL_TS_FASTPATH_ATTACH';

export class KernelFastPath {
  private installed: InstalledRoutes = NOTHING_INSTALLED;
  private readonly slots = new Float64Array(FASTPATH_SLOTS.length);
  private closed = false;

  private constructor(
    private readonly addon: FastPathAddon,
    private readonly handle: FastPathHandle,
    /** How the programs are attached: 'tcx' links or clsact filters ('tc'). */
    readonly attachedBy: 'tcx' | 'tc',
  ) {}

  /** Loads and attaches the programs (with no routes yet). Throws FastPathRefusedError. */
  static open(options: FastPathOptions, env: NodeJS.ProcessEnv = process.env): KernelFastPath {
    const build = findFastPathBuild(env);
    if (!build.ok) throw new FastPathRefusedError(build.reason);
    const { addon } = build;
    const tunIfindex = addon.ifindex(options.tunName);
    const extIfindex = addon.ifindex(options.extName);
    if (tunIfindex < 0 || extIfindex < 0) {
      throw new FastPathRefusedError(`no ifindex for ${tunIfindex < 0 ? options.tunName : options.extName}`);
    }
    const len = options.subnet.prefixLen;
    const config: FastPathConfig = {
      publicIp: options.address,
      subnet: options.subnet.prefix,
      subnetMask: len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0,
      tunIfindex,
      extIfindex,
      mtu: options.mtu,
      port: options.port,
    };
    let handle: FastPathHandle;
    try {
      handle = addon.load(build.objectPath, config);
    } catch (err) {
      throw new FastPathRefusedError((err as Error).message, { cause: err });
    }
    try {
      const allowTcx = options.allowTcx ?? env[ATTACH_ENV] !== 'tc';
      return new KernelFastPath(addon, handle, addon.attach(handle, allowTcx));
    } catch (err) {
      addon.close(handle);
      throw new FastPathRefusedError((err as Error).message, { cause: err });
    }
  }

  /**
   * Makes the routes and peers maps hold exactly `routes` (a RoutingSnapshot's: validated and
   * de-duplicated), in the order of planRouteSync. Throws FastPathMapError on a refused update.
   */
  setRoutes(routes: readonly Route[]): void {
    if (this.closed) throw new Error('the fast path is closed');
    const ops = planRouteSync(this.installed, routes);
    const { addon, handle } = this;
    for (const [i, o] of ops.entries()) {
      let r: number;
      if (o.op === 'routeSet') r = addon.routeSet(handle, o.prefix, o.prefixLen, o.publicIp);
      else if (o.op === 'routeDelete') r = addon.routeDelete(handle, o.prefix, o.prefixLen);
      else if (o.op === 'peerSet') r = addon.peerSet(handle, o.publicIp);
      else r = addon.peerDelete(handle, o.publicIp);
      if (r < 0) {
        this.installed = applyPlan(this.installed, ops.slice(0, i));
        throw new FastPathMapError(`fast path: ${o.op} failed (errno ${-r})`);
      }
    }
    this.installed = applyPlan(this.installed, ops);
  }

  /** Adds the fast path's counters into `into` (indexed by C.*); returns the kernel-only ones. */
  addCounters(into: Float64Array): Record<KernelOnlyCounter, number> {
    const own = { kernelTxPassedUp: 0, kernelRxPassedUp: 0, kernelTxFailed: 0, kernelRxFailed: 0 };
    if (this.closed) return own;
    this.addon.counters(this.handle, this.slots);
    for (let i = 0; i < FASTPATH_SLOTS.length; i++) {
      const target = SLOT_TO_DATAPATH[i]!;
      if (target >= 0) into[target]! += this.slots[i]!;
      else own[FASTPATH_SLOTS[i] as KernelOnlyCounter] = this.slots[i]!;
    }
    return own;
  }

  /** Detaches the programs and frees programs and maps. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.addon.close(this.handle);
  }
}

/** What --datapath gave: the fast path (or null) and, when it is null, why. */
export interface DatapathStart {
  readonly datapath: 'kernel' | 'userspace';
  readonly fastPath: KernelFastPath | null;
  /** Why the userspace datapath runs alone (auto fell back, or --datapath userspace). */
  readonly reason?: string;
}

/**
 * Starts the fast path as --datapath asks: userspace never tries; kernel throws
 * FastPathRefusedError when the kernel (or the build) refuses; auto falls back with the reason.
 */
export function startDatapath(choice: DatapathChoice, options: FastPathOptions): DatapathStart {
  if (choice === 'userspace') return { datapath: 'userspace', fastPath: null, reason: 'chosen (--datapath userspace)' };
  try {
    return { datapath: 'kernel', fastPath: KernelFastPath.open(options) };
  } catch (err) {
    if (choice === 'kernel' || !(err instanceof FastPathRefusedError)) throw err;
    return { datapath: 'userspace', fastPath: null, reason: err.message };
  }
}
