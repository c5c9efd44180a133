// Shared by the vxlan and host-gw namespace tests: a three-host lab on real etcd where hosts 1 and 2
// run flannel-ts in flanneld mode with the given backend, and host 3 is left to the test, which sets
// it up by hand exactly as flanneld would (its device, its lease, its entries for the others).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, agentEntry, removeStaleLabNamespaces, requireTools, type AgentProcess } from '../../src/lab/index.js';
import { etcdAgentFlags, underlayEtcd, type NamespacedEtcd } from '../../src/lab/etcd.js';

export const PREFIX = '/coreos.com/network';

export interface KernelBackendLab {
  readonly lab: Lab;
  readonly etcd: NamespacedEtcd;
  subnetFile(n: number): string;
  /** (Re)starts flannel-ts on host n and waits until it forwards. */
  startAgent(n: number): Promise<AgentProcess>;
}

export async function createKernelBackendLab(config: string, podMtu: number): Promise<KernelBackendLab> {
  removeStaleLabNamespaces();
  await requireTools(['ping', 'etcd', 'etcdctl', 'bridge']);
  let etcd: NamespacedEtcd | null = null;
  let tempDir = '';
  const subnetFile = (n: number): string => join(tempDir, `subnet-h${n}.env`);
  const agentArgs = (n: number): string[] => etcdAgentFlags(subnetFile(n));
  const lab = await Lab.create({
    hosts: 3,
    mode: 'flannel-ts',
    agentStaticConfig: false,
    agentHosts: [1, 2],
    agentArgs,
    podMtu,
    beforeAgents: async (l) => {
      tempDir = l.tempDir;
      etcd = underlayEtcd(l, join(tempDir, 'etcd-data'));
      await etcd.start();
      await etcd.ctl('put', `${PREFIX}/config`, config);
      // flannel's previous-subnet rule gives host N the subnet its lab pod lives in.
      for (const n of [1, 2]) writeFileSync(subnetFile(n), `FLANNEL_SUBNET=10.244.${n}.1/24\n`);
    },
  });
  return {
    lab,
    etcd: etcd!,
    subnetFile,
    startAgent: (n) => lab.startAgent(n, [process.execPath, agentEntry(lab.repoDir), ...agentArgs(n)], 20_000),
  };
}

/** Polls check() every 50 ms; the error carries describe() (e.g. the agents' output). */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 15_000,
  describe?: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${describe ? `\n${describe()}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** ip -json output of argv in ns, parsed. */
export async function ipJson<T>(lab: Lab, ns: string, argv: readonly string[]): Promise<T[]> {
  const r = await lab.execChecked(ns, argv);
  return r.stdout.trim() === '' ? [] : (JSON.parse(r.stdout) as T[]);
}

/** "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink" per route to the flannel network, sorted. */
export async function overlayRoutes(lab: Lab, n: number): Promise<string[]> {
  const routes = await ipJson<{ dst: string; gateway?: string; dev: string; flags?: string[] }>(lab, lab.hostNs(n), [
    'ip',
    '-j',
    '-4',
    'route',
    'show',
  ]);
  return routes
    .filter((r) => r.dst.startsWith('10.244.') && r.dev !== 'veth0')
    .map(
      (r) =>
        `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''} dev ${r.dev}${r.flags?.includes('onlink') ? ' onlink' : ''}`,
    )
    .sort();
}
