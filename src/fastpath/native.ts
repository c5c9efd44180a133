// Loader and typed interface of the optional fast-path addon (native/fastpath/loader.c) and the
// path of the BPF object it loads. Both are built at install time when clang and libbpf-dev are
// there (scripts/build-native.mjs); when either is missing, findFastPathBuild says why and the
// agent runs the userspace datapath.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Opaque handle to loaded programs and maps (freed by close, or when garbage-collected). */
export type FastPathHandle = { readonly __brand: 'FastPathHandle' };

/** The programs' config; addresses and the port uint32 host order (the loader converts). */
export interface FastPathConfig {
  /** The underlay address the UDP socket binds to: outer source, and where datagrams arrive. */
  readonly publicIp: number;
  readonly subnet: number;
  readonly subnetMask: number;
  readonly tunIfindex: number;
  readonly extIfindex: number;
  /** flannel0's MTU. */
  readonly mtu: number;
  readonly port: number;
}

export interface FastPathAddon {
  /** Opens and loads the object, writes the config. Throws one line (libbpf's or the verifier's last). */
  load(objectPath: string, config: FastPathConfig): FastPathHandle;
  /** Attaches egress on flannel0 and ingress on the underlay: 'tcx' links, else clsact ('tc'). Throws. */
  attach(handle: FastPathHandle, allowTcx: boolean): 'tcx' | 'tc';
  routeSet(handle: FastPathHandle, prefix: number, prefixLen: number, publicIp: number): number;
  routeDelete(handle: FastPathHandle, prefix: number, prefixLen: number): number;
  peerSet(handle: FastPathHandle, publicIp: number): number;
  peerDelete(handle: FastPathHandle, publicIp: number): number;
  /** Fills out[i] with counter slot i summed over the CPUs; returns the slots filled. */
  counters(handle: FastPathHandle, out: Float64Array): number;
  /** Detaches both programs and frees programs and maps. Idempotent. */
  close(handle: FastPathHandle): void;
  /** The interface's index, or -errno. */
  ifindex(name: string): number;
}

/** Environment knob: another BPF object to load instead of the built one (tests use it to have loading refused). */
export const BPF_OBJECT_ENV = 'FLANNEL_TS_BPF_OBJECT';

export type FastPathBuild =
  | { readonly ok: true; readonly addon: FastPathAddon; readonly objectPath: string }
  | { readonly ok: false; readonly reason: string };

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
let cached: FastPathBuild | undefined;

/** The addon and the object, or why they are not there. Loaded once. */
export function findFastPathBuild(env: NodeJS.ProcessEnv = process.env): FastPathBuild {
  const objectPath = env[BPF_OBJECT_ENV] || path.join(root, 'build', 'bpf', 'flannel_udp.bpf.o');
  if (!existsSync(objectPath))
    return { ok: false, reason: `no BPF object at ${objectPath} (clang missing at install?)` };
  if (cached === undefined) {
    const file = path.join(root, 'build', 'fastpath', 'flannel_fastpath.node');
    try {
      cached = { ok: true, addon: createRequire(import.meta.url)(file) as FastPathAddon, objectPath };
    } catch (err) {
      cached = {
        ok: false,
        reason: `no fast-path loader (libbpf-dev missing at install?): ${(err as Error).message.split('\n')[0]}`,
      };
    }
  }
  return cached.ok ? { ...cached, objectPath } : cached;
}
