// Test fixture: a private network namespace (unique name per run) holding real etcd servers on
// its loopback, plus helpers to drive them (etcdctl, restart, TLS material). Everything it
// creates — etcd processes, the namespace, the temp dir — is removed by destroy(), and also by
// exit/signal handlers if the test process dies first.
//
// Why a namespace: test traffic must never touch the host's network; etcd and the client under
// test (see etcd-agent.ts) both run inside it via `ip netns exec`.

import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireToolsFor } from '../../src/lab/exec.js';

/** Fails (never skips) with the missing tool and the Debian package that provides it. */
export function requireTools(): void {
  requireToolsFor('the etcd integration tests', ['ip', 'etcd', 'etcdctl', 'openssl']);
}

export interface TlsFiles {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

export interface EtcdSpec {
  /** Member name; also names the data dir. */
  readonly name: string;
  readonly clientPort: number;
  readonly peerPort: number;
  /** Serve clients over https with these files and require client certificates. */
  readonly tls?: TlsFiles;
  /** --auth-token-ttl (seconds). */
  readonly authTokenTtl?: number;
  /** --enable-v2: also serve etcd's v2 keys API (/v2/keys). */
  readonly enableV2?: boolean;
}

const NAME_PREFIX = 'fts-etcd-';

/**
 * Removes what an earlier run killed with SIGKILL left behind: namespaces named after a test
 * process that no longer exists, their processes, and their temp dirs.
 */
function sweepOrphans(): void {
  let names: string[];
  try {
    names = readdirSync('/run/netns').filter((n) => n.startsWith(NAME_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(name.slice(NAME_PREFIX.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || isAlive(pid)) continue;
    try {
      const pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).split(/\s+/).filter(Boolean);
      for (const inside of pids) {
        try {
          process.kill(Number(inside), 'SIGKILL');
        } catch {
          // gone already
        }
      }
      execFileSync('ip', ['netns', 'del', name], { stdio: 'pipe' });
    } catch {
      // best effort
    }
    for (const entry of readdirSync(tmpdir()).filter((e) => e.startsWith(`${name}-`))) {
      rmSync(join(tmpdir(), entry), { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class EtcdInstance {
  private process: ChildProcess | null = null;
  /** "user:password" for etcdctl once auth is enabled on this member. */
  user: string | undefined;
  readonly dataDir: string;
  readonly logFile: string;

  constructor(
    private readonly env: EtcdNetns,
    readonly spec: EtcdSpec,
  ) {
    this.dataDir = join(env.dir, `${spec.name}.etcd`);
    this.logFile = join(env.dir, `${spec.name}.log`);
  }

  get clientUrl(): string {
    return `${this.spec.tls === undefined ? 'http' : 'https'}://127.0.0.1:${this.spec.clientPort}`;
  }

  get pid(): number | undefined {
    return this.process?.pid;
  }

  /** Starts etcd (same data dir on every start) and waits until it serves requests. */
  async start(): Promise<void> {
    if (this.process !== null) throw new Error(`etcd ${this.spec.name} already running`);
    const { name, peerPort, tls, authTokenTtl } = this.spec;
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    const args = [
      'netns',
      'exec',
      this.env.name,
      'etcd',
      '--name',
      name,
      '--data-dir',
      this.dataDir,
      '--listen-client-urls',
      this.clientUrl,
      '--advertise-client-urls',
      this.clientUrl,
      '--listen-peer-urls',
      peerUrl,
      '--initial-advertise-peer-urls',
      peerUrl,
      '--initial-cluster',
      `${name}=${peerUrl}`,
      '--log-level',
      'warn',
    ];
    if (tls !== undefined) {
      args.push(
        '--cert-file',
        tls.serverCert,
        '--key-file',
        tls.serverKey,
        '--client-cert-auth',
        '--trusted-ca-file',
        tls.ca,
      );
    }
    if (authTokenTtl !== undefined) args.push('--auth-token-ttl', String(authTokenTtl));
    if (this.spec.enableV2 === true) args.push('--enable-v2');
    const log = openSync(this.logFile, 'a');
    // `ip netns exec` execs etcd in place, so the child's pid is etcd's.
    const child = spawn('ip', args, { stdio: ['ignore', log, log] });
    closeSync(log);
    this.process = child;
    this.env.track(child);
    child.once('exit', () => {
      if (this.process === child) this.process = null;
    });
    const deadline = Date.now() + 20_000;
    let lastError = '';
    while (Date.now() < deadline) {
      if (this.process !== child) {
        throw new Error(`etcd ${name} exited during startup; log:\n${this.logTail()}`);
      }
      try {
        await this.ctl(['endpoint', 'health'], 3_000);
        return;
      } catch (err) {
        lastError = (err as Error).message;
      }
      await sleep(100);
    }
    throw new Error(`etcd ${name} not healthy within 20 s: ${lastError}\nlog:\n${this.logTail()}`);
  }

  /** Stops etcd (SIGKILL by default: a crash) and waits for the process to be gone. */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.process;
    if (child === null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    await exited;
  }

  /** Runs etcdctl against this member (with its TLS client files) inside the namespace. */
  /** Runs etcdctl with ETCDCTL_API=2 (the v2 keys API: set, get, ls, rm, mk, -o extended). */
  ctl2(args: readonly string[], timeoutMs = 10_000): Promise<string> {
    const tlsArgs =
      this.spec.tls === undefined
        ? []
        : [
            '--ca-file',
            this.spec.tls.ca,
            '--cert-file',
            this.spec.tls.clientCert,
            '--key-file',
            this.spec.tls.clientKey,
          ];
    return this.env.exec(
      'env',
      ['ETCDCTL_API=2', 'etcdctl', '--endpoints', this.clientUrl, ...tlsArgs, ...args],
      timeoutMs,
    );
  }

  ctl(args: readonly string[], timeoutMs = 10_000): Promise<string> {
    const tlsArgs =
      this.spec.tls === undefined
        ? []
        : ['--cacert', this.spec.tls.ca, '--cert', this.spec.tls.clientCert, '--key', this.spec.tls.clientKey];
    const userArgs = this.user === undefined ? [] : ['--user', this.user];
    return this.env.exec('etcdctl', ['--endpoints', this.clientUrl, ...tlsArgs, ...userArgs, ...args], timeoutMs);
  }

  logTail(): string {
    try {
      return readFileSync(this.logFile, 'utf8').split('\n').slice(-30).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

export class EtcdNetns {
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;
  private readonly exitHandler = (): void => this.destroySync();
  private readonly signalHandler = (signal: NodeJS.Signals): void => {
    this.destroySync(false);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };

  private constructor(
    readonly name: string,
    readonly dir: string,
  ) {
    // `on`, not `once`: a second signal arriving during cleanup must not find the default
    // action (immediate death) restored.
    process.on('exit', this.exitHandler);
    process.on('SIGINT', this.signalHandler);
    process.on('SIGTERM', this.signalHandler);
  }

  /** Creates the namespace (loopback up) and a temp dir; both unique to this run. */
  static create(): EtcdNetns {
    sweepOrphans();
    const name = `${NAME_PREFIX}${process.pid}-${randomBytes(3).toString('hex')}`;
    const dir = mkdtempSync(join(tmpdir(), `${name}-`));
    const env = new EtcdNetns(name, dir);
    try {
      execFileSync('ip', ['netns', 'add', name], { stdio: 'pipe' });
      execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up'], { stdio: 'pipe' });
    } catch (err) {
      env.destroySync();
      throw new Error(`cannot create network namespace ${name}: ${(err as Error).message}`, { cause: err });
    }
    return env;
  }

  etcd(spec: EtcdSpec): EtcdInstance {
    return new EtcdInstance(this, spec);
  }

  /** Keeps a child so that destroy() kills it. */
  track(child: ChildProcess): void {
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
  }

  /** Spawns a command inside the namespace. */
  spawn(command: string, args: readonly string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, command, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.track(child);
    return child;
  }

  /** Runs a command inside the namespace; resolves with stdout, rejects with stderr. */
  exec(command: string, args: readonly string[], timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile('ip', ['netns', 'exec', this.name, command, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${command} ${args.join(' ')}: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      });
    });
  }

  /** A CA, an etcd server certificate (IP 127.0.0.1) and a client certificate, made with openssl. */
  makeTlsFiles(): TlsFiles {
    const dir = join(this.dir, 'pki');
    execFileSync('mkdir', ['-p', dir]);
    const file = (n: string): string => join(dir, n);
    const openssl = (args: string[]): void => {
      execFileSync('openssl', args, { stdio: 'pipe' });
    };
    const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    openssl([
      'req',
      '-x509',
      ...ecKey,
      '-keyout',
      file('ca.key'),
      '-out',
      file('ca.crt'),
      '-days',
      '2',
      '-subj',
      '/CN=flannel-ts test CA',
    ]);
    const issue = (role: string, extensions: string): void => {
      writeFileSync(file(`${role}.ext`), extensions);
      openssl([
        'req',
        ...ecKey,
        '-keyout',
        file(`${role}.key`),
        '-out',
        file(`${role}.csr`),
        '-subj',
        `/CN=flannel-ts test ${role}`,
      ]);
      openssl([
        'x509',
        '-req',
        '-in',
        file(`${role}.csr`),
        '-CA',
        file('ca.crt'),
        '-CAkey',
        file('ca.key'),
        '-CAcreateserial',
        '-out',
        file(`${role}.crt`),
        '-days',
        '2',
        '-extfile',
        file(`${role}.ext`),
      ]);
    };
    issue('server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
    issue('client', 'extendedKeyUsage=clientAuth\n');
    return {
      ca: file('ca.crt'),
      serverCert: file('server.crt'),
      serverKey: file('server.key'),
      clientCert: file('client.crt'),
      clientKey: file('client.key'),
    };
  }

  /** Kills every child, deletes the namespace and the temp dir. Idempotent. */
  async destroy(): Promise<void> {
    const pending = [...this.children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    );
    await Promise.all(pending);
    this.destroySync();
  }

  /** removeSignalHandlers false: called from a signal handler, about to exit; stay deaf to more signals. */
  private destroySync(removeSignalHandlers = true): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const child of this.children) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    try {
      execFileSync('ip', ['netns', 'del', this.name], { stdio: 'pipe' });
    } catch {
      // never created, or already deleted
    }
    try {
      // etcd may still be writing while the SIGKILL lands: retry ENOTEMPTY and friends.
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
    } catch (err) {
      process.stderr.write(`warning: could not remove ${this.dir}: ${(err as Error).message}\n`);
    }
    process.removeListener('exit', this.exitHandler);
    if (removeSignalHandlers) {
      process.removeListener('SIGINT', this.signalHandler);
      process.removeListener('SIGTERM', this.signalHandler);
    }
  }
}
