/**
 * The ways the lab connects its hosts' pod subnets, for the same topology:
 *
 * - flannel-ts: our agent in each host namespace (flannel's udp backend: flannel0 TUN, UDP 8285).
 * - vxlan: kernel VXLAN set up exactly as flannel's vxlan backend does it (flannel.1, VNI 1,
 *   port 8472, nolearning; per peer an onlink route via the peer's VTEP address, a permanent
 *   neighbour entry and a bridge fdb entry).
 * - host-gw: a plain route per peer subnet via the peer's underlay address.
 * - socat: a userspace reference with flannel's wire format: in each host, socat copies between a
 *   TUN device (flannel0, the subnet's network address /16, MTU 1472) and a UDP socket on port
 *   8285 connected to the peer, one IP packet per datagram (2 hosts only).
 * - proxy-shape: a measurement reference with the shape of flanneld's udp proxy (one thread, poll()
 *   on flannel0 and a UDP socket on port 8285, one packet per system call, TTL decremented on the
 *   way out): bench/proxy-shape.c, compiled with `cc -O2` into the lab's temporary directory and
 *   run in each host namespace, one static peer (2 hosts only). Not flanneld's code.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runChecked } from './exec.js';
import type { Lab, LabOptions } from './lab.js';

export type LabMode = 'flannel-ts' | 'vxlan' | 'host-gw' | 'socat' | 'proxy-shape';

export const LAB_MODES: readonly LabMode[] = ['flannel-ts', 'vxlan', 'host-gw', 'socat', 'proxy-shape'];

/** Pod MTU per mode: the overlay's inner MTU on a 1500-byte underlay. */
export function podMtuFor(mode: LabMode): number {
  switch (mode) {
    case 'flannel-ts':
    case 'socat':
    case 'proxy-shape':
      return 1472; // 1500 - IPv4 20 - UDP 8
    case 'vxlan':
      return 1450; // 1500 - IPv4 20 - UDP 8 - VXLAN 8 - Ethernet 14
    case 'host-gw':
      return 1500;
  }
}

export async function setUpMode(lab: Lab, options: LabOptions): Promise<void> {
  switch (lab.mode) {
    case 'host-gw':
      return setUpHostGw(lab);
    case 'vxlan':
      return setUpVxlan(lab);
    case 'flannel-ts':
      return setUpFlannelTs(lab, options);
    case 'socat':
      return setUpSocat(lab);
    case 'proxy-shape':
      return setUpProxyShape(lab);
  }
}

async function setUpSocat(lab: Lab): Promise<void> {
  if (lab.hostCount !== 2) throw new Error('the socat lab connects 2 hosts');
  for (const n of lab.hostNumbers()) {
    const m = 3 - n;
    const h = lab.hostNs(n);
    lab.spawn(h, [
      'socat',
      '-b',
      '65536',
      `TUN:10.244.${n}.0/16,tun-type=tun,iff-no-pi,iff-up,tun-name=flannel0`,
      `UDP:${lab.hostAddr(m)}:8285,bind=${lab.hostAddr(n)}:8285`,
    ]);
    const deadline = Date.now() + 5000;
    while ((await lab.exec(h, ['ip', 'link', 'show', 'flannel0'])).code !== 0) {
      if (Date.now() > deadline) throw new Error(`socat did not create flannel0 in ${h}`);
      await sleep(20);
    }
    await lab.execChecked(h, ['ip', 'link', 'set', 'flannel0', 'mtu', '1472']);
  }
}

async function setUpProxyShape(lab: Lab): Promise<void> {
  if (lab.hostCount !== 2) throw new Error('the proxy-shape lab connects 2 hosts');
  // The C source is in a repository checkout's bench/, not in the npm package.
  const source = join(lab.repoDir, 'bench', 'proxy-shape.c');
  if (!existsSync(source)) throw new Error(`the proxy-shape lab needs ${source}, which is missing`);
  // Compiled per lab into its temporary directory, which destroy() removes with the binary.
  const binary = join(lab.tempDir, 'proxy-shape');
  await runChecked(['cc', '-O2', '-Wall', '-o', binary, source]);
  for (const n of lab.hostNumbers()) {
    const h = lab.hostNs(n);
    await waitForReady(lab.spawn(h, [binary, lab.hostAddr(n), lab.hostAddr(3 - n)]), `proxy-shape in ${h}`, 5000);
    await lab.execChecked(h, ['ip', 'addr', 'add', `10.244.${n}.0/16`, 'dev', 'flannel0']);
    await lab.execChecked(h, ['ip', 'link', 'set', 'flannel0', 'mtu', '1472', 'up']);
  }
}

/** Resolves when `child` prints a "ready" line; rejects if it exits first or takes longer than timeoutMs. */
function waitForReady(child: ChildProcess, what: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    const done = (error?: Error) => {
      clearTimeout(timer);
      child.stdout?.off('data', onStdout);
      child.off('exit', onExit);
      if (error) reject(error);
      else resolve();
    };
    const onStdout = (d: Buffer) => {
      stdout += d.toString();
      if (/^ready$/m.test(stdout)) done();
    };
    const onExit = (code: number | null) =>
      done(new Error(`${what} exited (${String(code)}) before it was ready: ${stderr.trim()}`));
    const timer = setTimeout(() => done(new Error(`${what} was not ready within ${timeoutMs} ms`)), timeoutMs);
    child.stdout?.on('data', onStdout);
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('exit', onExit);
  });
}

async function setUpHostGw(lab: Lab): Promise<void> {
  for (const n of lab.hostNumbers()) {
    for (const m of lab.hostNumbers()) {
      if (m === n) continue;
      await lab.execChecked(lab.hostNs(n), ['ip', 'route', 'add', lab.subnet(m), 'via', lab.hostAddr(m)]);
    }
  }
}

const VXLAN_DEVICE = 'flannel.1';

async function setUpVxlan(lab: Lab): Promise<void> {
  const macs = new Map<number, string>();
  for (const n of lab.hostNumbers()) {
    const h = lab.hostNs(n);
    await lab.execChecked(h, [
      'ip',
      'link',
      'add',
      VXLAN_DEVICE,
      'type',
      'vxlan',
      'id',
      '1',
      'dstport',
      '8472',
      'local',
      lab.hostAddr(n),
      'dev',
      'eth0',
      'nolearning',
    ]);
    await lab.execChecked(h, ['ip', 'link', 'set', VXLAN_DEVICE, 'mtu', '1450']);
    await lab.execChecked(h, ['ip', 'addr', 'add', `10.244.${n}.0/32`, 'dev', VXLAN_DEVICE]);
    await lab.execChecked(h, ['ip', 'link', 'set', VXLAN_DEVICE, 'up']);
    const shown = await lab.execChecked(h, ['ip', '-j', 'link', 'show', VXLAN_DEVICE]);
    const mac = (JSON.parse(shown.stdout) as { address?: string }[])[0]?.address;
    if (!mac) throw new Error(`no MAC address on ${VXLAN_DEVICE} in ${h}`);
    macs.set(n, mac);
  }
  for (const n of lab.hostNumbers()) {
    const h = lab.hostNs(n);
    for (const m of lab.hostNumbers()) {
      if (m === n) continue;
      const vtep = `10.244.${m}.0`;
      const mac = macs.get(m)!;
      await lab.execChecked(h, ['ip', 'route', 'add', lab.subnet(m), 'via', vtep, 'dev', VXLAN_DEVICE, 'onlink']);
      await lab.execChecked(h, [
        'ip',
        'neigh',
        'replace',
        vtep,
        'lladdr',
        mac,
        'dev',
        VXLAN_DEVICE,
        'nud',
        'permanent',
      ]);
      await lab.execChecked(h, [
        'bridge',
        'fdb',
        'replace',
        mac,
        'dev',
        VXLAN_DEVICE,
        'dst',
        lab.hostAddr(m),
        'self',
        'permanent',
      ]);
    }
  }
}

/** The agent's entry point inside a repository checkout. */
export function agentEntry(repoDir: string): string {
  return join(repoDir, 'dist', 'src', 'cli', 'main.js');
}

/** The agent's argv for host n with the static (no etcd) configuration. */
export function staticAgentArgs(lab: Lab, n: number): string[] {
  const args = [
    '--network',
    '10.244.0.0/16',
    '--subnet',
    lab.subnet(n),
    '--public-ip',
    lab.hostAddr(n),
    '--iface',
    'eth0',
  ];
  for (const m of lab.hostNumbers()) {
    if (m !== n) args.push('--peer', `${lab.subnet(m)}=${lab.hostAddr(m)}`);
  }
  return args;
}

async function setUpFlannelTs(lab: Lab, options: LabOptions): Promise<void> {
  const entry = agentEntry(lab.repoDir);
  if (!existsSync(entry)) {
    throw new Error(`flannel-ts agent not built: ${entry} is missing (run: npx tsc -p tsconfig.json)`);
  }
  const starts = (options.agentHosts ?? lab.hostNumbers()).map((n) => {
    const extra = typeof options.agentArgs === 'function' ? options.agentArgs(n) : (options.agentArgs ?? []);
    const base = options.agentStaticConfig === false ? [] : staticAgentArgs(lab, n);
    const argv = [process.execPath, entry, ...base, ...extra];
    return lab.startAgent(n, argv, options.agentReadyTimeoutMs ?? 20_000);
  });
  await Promise.all(starts);
}
