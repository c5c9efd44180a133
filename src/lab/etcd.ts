/**
 * A real etcd server (Debian's etcd-server) inside a network namespace, for the demo, the
 * integration tests and the control-plane benchmark:
 *
 * - `underlayEtcd(lab)`: etcd in a lab's underlay namespace on 192.0.2.254:2379, reachable from
 *   every host namespace over the bridged underlay, as a cluster's etcd would be;
 * - `EtcdNamespace`: a namespace of its own with only loopback (and whatever the caller adds), for
 *   a benchmark that needs no hosts; removed by `destroy()`, or by the lab's exit handlers if the
 *   process dies first.
 *
 * `etcdctl` is run exactly as a user runs it (v3 API, etcdctl 3.4+), from inside the namespace.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { registerLive, unregisterLive, type SyncCleanup } from './cleanup.js';
import { inNamespace, run, runChecked, spawnIn, terminate, waitForExit, type ExecResult } from './exec.js';
import type { Lab } from './lab.js';
import { UNDERLAY_SWITCH_ADDR } from './lab.js';
import { deleteNamespacesSync, forgetOwner, labTempDir, newPrefix, recordOwner } from './namespaces.js';

/** What an etcd server needs from its surroundings: running commands inside a namespace. */
export interface NamespaceRunner {
  /** A long-running process inside ns, stdout/stderr piped; killed when the runner is torn down. */
  spawn(ns: string, argv: readonly string[]): ChildProcess;
  exec(ns: string, argv: readonly string[], timeoutMs?: number): Promise<ExecResult>;
  execChecked(ns: string, argv: readonly string[], timeoutMs?: number): Promise<ExecResult>;
}

export interface EtcdServerOptions {
  readonly namespace: string;
  /** The address clients use, e.g. http://192.0.2.254:2379; etcd listens on exactly this. */
  readonly clientUrl: string;
  /** Kept across restart(): a restarted etcd has the same data. */
  readonly dataDir: string;
  /** How long start() waits for `etcdctl endpoint health`. Default 20 s. */
  readonly startTimeoutMs?: number;
  /** --enable-v2: also serve etcd's v2 keys API, as flanneld v0.17 and older use it. */
  readonly enableV2?: boolean;
}

/** The endpoint of `underlayEtcd(lab)`. */
export const UNDERLAY_ETCD_ENDPOINT = `http://${UNDERLAY_SWITCH_ADDR}:2379`;

/**
 * The flanneld-mode flags of a lab host's agent on etcd: the endpoint (the underlay's by default),
 * the host's underlay interface, and the host's own subnet file.
 */
export function etcdAgentFlags(subnetFile: string, endpoint: string = UNDERLAY_ETCD_ENDPOINT): string[] {
  return ['--etcd-endpoints', endpoint, '--iface', 'eth0', '--subnet-file', subnetFile];
}

/** One etcd member in a namespace; start() again after kill() restarts it on the same data. */
export class NamespacedEtcd {
  private child: ChildProcess | null = null;
  private readonly outputTail: string[] = [];

  constructor(
    private readonly runner: NamespaceRunner,
    readonly options: EtcdServerOptions,
  ) {}

  get endpoint(): string {
    return this.options.clientUrl;
  }

  get namespace(): string {
    return this.options.namespace;
  }

  /** The server's pid (ip netns exec execs etcd itself), or -1 when it is not running. */
  get pid(): number {
    return this.child?.pid ?? -1;
  }

  /** Starts etcd and resolves once `etcdctl endpoint health` succeeds; throws with etcd's output otherwise. */
  async start(): Promise<void> {
    if (this.child !== null) throw new Error('etcd is already running');
    const { namespace, clientUrl, dataDir } = this.options;
    const child = this.runner.spawn(namespace, [
      'etcd',
      '--name',
      'lab',
      '--data-dir',
      dataDir,
      '--listen-client-urls',
      clientUrl,
      '--advertise-client-urls',
      clientUrl,
      '--listen-peer-urls',
      'http://127.0.0.1:2380',
      '--initial-advertise-peer-urls',
      'http://127.0.0.1:2380',
      '--initial-cluster',
      'lab=http://127.0.0.1:2380',
      '--log-level',
      'warn',
      ...(this.options.enableV2 === true ? ['--enable-v2'] : []),
    ]);
    // Drain its output (a full pipe would block etcd), keeping the tail for error messages.
    for (const stream of [child.stdout, child.stderr]) {
      stream?.on('data', (chunk: Buffer) => {
        this.outputTail.push(chunk.toString());
        if (this.outputTail.length > 50) this.outputTail.shift();
      });
    }
    this.child = child;
    const deadline = Date.now() + (this.options.startTimeoutMs ?? 20_000);
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        this.child = null;
        throw new Error(`etcd exited during startup:\n${this.outputTail.join('')}`);
      }
      const r = await this.runner.exec(namespace, ['etcdctl', '--endpoints', clientUrl, 'endpoint', 'health'], 5000);
      if (r.code === 0) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(
      `etcd not healthy within ${this.options.startTimeoutMs ?? 20_000} ms:\n${this.outputTail.join('')}`,
    );
  }

  /** SIGKILL: a crash. */
  async kill(): Promise<void> {
    const child = this.child;
    if (child === null) return;
    this.child = null;
    child.kill('SIGKILL');
    await waitForExit(child);
  }

  /** SIGTERM, then SIGKILL after a grace period. */
  async stop(graceMs = 3000): Promise<void> {
    const child = this.child;
    if (child === null) return;
    this.child = null;
    await terminate(child, 'SIGTERM', graceMs);
  }

  /** etcdctl as a user runs it, from inside the namespace; rejects on a non-zero exit. */
  async ctl(...args: string[]): Promise<string> {
    const r = await this.runner.execChecked(this.options.namespace, [
      'etcdctl',
      '--endpoints',
      this.options.clientUrl,
      ...args,
    ]);
    return r.stdout;
  }

  /** etcdctl with ETCDCTL_API=2 (set, get, ls, rm, -o extended), as the v2-era tutorials run it. */
  async ctl2(...args: string[]): Promise<string> {
    const r = await this.runner.execChecked(this.options.namespace, [
      'env',
      'ETCDCTL_API=2',
      'etcdctl',
      '--endpoints',
      this.options.clientUrl,
      ...args,
    ]);
    return r.stdout;
  }

  /** key -> value under a prefix (etcdctl prints key and value lines in turn). */
  async getPrefix(prefix: string): Promise<Map<string, string>> {
    const lines = (await this.ctl('get', '--prefix', prefix)).split('\n').filter((l) => l !== '');
    const out = new Map<string, string>();
    for (let i = 0; i + 1 < lines.length; i += 2) out.set(lines[i]!, lines[i + 1]!);
    return out;
  }

  /** The last lines etcd printed (warnings and errors only), for error messages. */
  describeOutput(): string {
    return this.outputTail.join('');
  }
}

/**
 * etcd in the lab's underlay namespace on UNDERLAY_ETCD_ENDPOINT, its data in the lab's temp dir
 * (removed with the lab). Not started: call start(), typically from LabOptions.beforeAgents.
 */
export function underlayEtcd(
  lab: Lab,
  dataDir: string = join(lab.tempDir, 'etcd-data'),
  options: { readonly enableV2?: boolean } = {},
): NamespacedEtcd {
  return new NamespacedEtcd(lab, { namespace: lab.underlayNs, clientUrl: UNDERLAY_ETCD_ENDPOINT, dataDir, ...options });
}

/**
 * A network namespace of its own (`<prefix>u`, the lab's naming, so removeStaleLabNamespaces()
 * cleans up after a killed run), loopback up, with a temp dir. For etcd on 127.0.0.1 and
 * processes that talk to it from inside the same namespace.
 */
export class EtcdNamespace implements NamespaceRunner, SyncCleanup {
  readonly tempDir: string;
  private readonly children = new Set<ChildProcess>();
  private created = false;
  private destroyed = false;

  private constructor(readonly prefix: string) {
    this.tempDir = labTempDir(prefix);
  }

  get name(): string {
    return `${this.prefix}u`;
  }

  static async create(): Promise<EtcdNamespace> {
    const ns = new EtcdNamespace(newPrefix());
    recordOwner(ns.prefix);
    registerLive(ns);
    try {
      mkdirSync(ns.tempDir, { recursive: true });
      await runChecked(['ip', 'netns', 'add', ns.name]);
      ns.created = true;
      await runChecked(['ip', '-n', ns.name, 'link', 'set', 'lo', 'up']);
      return ns;
    } catch (e) {
      await ns.destroy();
      throw e;
    }
  }

  /** etcd on 127.0.0.1:2379 inside this namespace (not started). */
  etcd(): NamespacedEtcd {
    return new NamespacedEtcd(this, {
      namespace: this.name,
      clientUrl: 'http://127.0.0.1:2379',
      dataDir: join(this.tempDir, 'etcd-data'),
    });
  }

  spawn(ns: string, argv: readonly string[]): ChildProcess {
    const child = spawnIn(ns, argv);
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  exec(ns: string, argv: readonly string[], timeoutMs?: number): Promise<ExecResult> {
    return run(inNamespace(ns, argv), timeoutMs);
  }

  execChecked(ns: string, argv: readonly string[], timeoutMs?: number): Promise<ExecResult> {
    return runChecked(inNamespace(ns, argv), timeoutMs);
  }

  /** Stops every process started here, deletes the namespace and the temp dir. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    await Promise.all([...this.children].map((c) => terminate(c, 'SIGTERM', 1000)));
    this.cleanupSync();
    unregisterLive(this);
  }

  cleanupSync(): void {
    this.destroyed = true;
    for (const child of this.children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    if (this.created) deleteNamespacesSync([this.name]);
    this.created = false;
    rmSync(this.tempDir, { recursive: true, force: true });
    forgetOwner(this.prefix);
  }
}
