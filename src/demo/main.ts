/**
 * `npm run demo`: two hosts in network namespaces, a pod on each, connected by flannel-ts agents
 * in flanneld mode with the backend asked for (udp by default, vxlan or host-gw). The agents get
 * the network config, their subnet leases and each other's routes from a registry: real etcd (in
 * the lab's underlay namespace, config written with `etcdctl put` as a user would) when it is
 * installed, the embedded file registry (--kv-file) otherwise. Shows the leases, subnet.env, the
 * host's network config, pings pod to pod both ways, runs a 3-second iperf3, prints the agents'
 * counters, and removes everything again (on success, failure and Ctrl-C).
 *
 *   node dist/src/demo/main.js [--registry etcd|file|auto] [--backend udp|vxlan|host-gw] [--help]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Lab, removeStaleLabNamespaces, type AgentCounters } from '../lab/index.js';
import { underlayEtcd, type NamespacedEtcd } from '../lab/etcd.js';
import { run } from '../lab/exec.js';
import { FileKvStore } from '../subnet/file-kv.js';
import { DEFAULT_ETCD_PREFIX, configKey, subnetsPrefix } from '../subnet/lease.js';
import { REGISTRY_ENV, RegistryChoiceError, chooseRegistry, type DemoRegistry } from './registry-choice.js';

const BACKENDS = ['udp', 'vxlan', 'host-gw'] as const;
type DemoBackend = (typeof BACKENDS)[number];
const networkConfig = (backend: DemoBackend): string => `{"Network":"10.244.0.0/16","Backend":{"Type":"${backend}"}}`;
/** The pods' MTU: FLANNEL_MTU of each backend on the lab's 1500-byte underlay. */
const POD_MTU: Record<DemoBackend, number> = { udp: 1472, vxlan: 1450, 'host-gw': 1500 };
const IPERF_SECONDS = 3;

const HELP = `Usage: npm run demo [-- --registry etcd|file|auto] [-- --backend udp|vxlan|host-gw]

Two hosts and two pods in network namespaces, connected by flannel-ts in flanneld mode: leases,
subnet.env, ip addr/route, ping both ways, a ${IPERF_SECONDS}-second iperf3, and the datapath's counters
(udp) or what the agent programmed into the kernel (vxlan, host-gw).
Needs root, iproute2, iputils-ping, iperf3; etcd-server and etcd-client for the etcd registry.

  --backend udp     flannel0 and flannel-ts's userspace datapath (default)
  --backend vxlan   kernel VXLAN (flannel.1), its neighbour, fdb entry and route per peer
  --backend host-gw kernel routes via each host's PublicIP, no encapsulation

  --registry etcd   real etcd in the lab's underlay namespace (192.0.2.254:2379); the config is
                    written with etcdctl put
  --registry file   the embedded file registry: the agents share one --kv-file
  --registry auto   etcd if the etcd and etcdctl binaries are installed, else file (default)

${REGISTRY_ENV}=etcd|file|auto does the same when --registry is not given.
Everything the demo creates is removed at the end, also on failure or Ctrl-C.
`;

const out = (text = ''): void => {
  process.stdout.write(`${text}\n`);
};

function heading(text: string): void {
  out();
  out(`== ${text}`);
}

function indent(text: string): string {
  return text
    .trimEnd()
    .split('\n')
    .map((l) => `   ${l}`)
    .join('\n');
}

const COUNTER_GROUPS: { title: string; names: string[] }[] = [
  { title: 'flannel0 -> UDP', names: ['tunReadPackets', 'udpSentPackets', 'udpSentBytes'] },
  { title: 'UDP -> flannel0', names: ['udpRecvPackets', 'tunWritePackets', 'tunWriteBytes'] },
];

function countersTable(c1: AgentCounters, c2: AgentCounters): string {
  const rows: [string, string, string][] = [['counter', 'host 1', 'host 2']];
  for (const group of COUNTER_GROUPS) {
    for (const name of group.names) rows.push([name, String(c1[name] ?? '-'), String(c2[name] ?? '-')]);
  }
  const drops = (c: AgentCounters): string =>
    String(
      Object.entries(c)
        .filter(([k]) => k.startsWith('drop'))
        .reduce((s, [, v]) => s + v, 0),
    );
  rows.push(['drops (all reasons)', drops(c1), drops(c2)]);
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) => `${r[0].padEnd(widths[0]!)}  ${r[1].padStart(widths[1]!)}  ${r[2].padStart(widths[2]!)}`)
    .join('\n');
}

async function missingTools(tools: readonly string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const tool of tools) {
    if ((await run(['sh', '-c', 'command -v "$0"', tool])).code !== 0) missing.push(tool);
  }
  return missing;
}

/** How the agents reach the registry, and how the demo reads it back. */
interface RegistrySetup {
  readonly registry: DemoRegistry;
  agentFlags(): string[];
  /** Starts the registry and writes the network config, as a user would. */
  prepare(lab: Lab): Promise<void>;
  /** The subnet leases as stored: key -> value. */
  leases(): Promise<Map<string, string>>;
}

function etcdSetup(networkConfigText: string): RegistrySetup {
  let etcd: NamespacedEtcd | null = null;
  const need = (): NamespacedEtcd => {
    if (etcd === null) throw new Error('etcd not started');
    return etcd;
  };
  return {
    registry: 'etcd',
    agentFlags: () => ['--etcd-endpoints', need().endpoint],
    async prepare(lab) {
      etcd = underlayEtcd(lab);
      await etcd.start();
      out(`   etcd (pid ${etcd.pid}) listens on ${etcd.endpoint} in the underlay namespace ${lab.underlayNs}`);
      const argv = [
        'etcdctl',
        '--endpoints',
        etcd.endpoint,
        'put',
        configKey(DEFAULT_ETCD_PREFIX),
        `'${networkConfigText}'`,
      ];
      out(`   $ ${argv.join(' ')}`);
      out(indent(await etcd.ctl('put', configKey(DEFAULT_ETCD_PREFIX), networkConfigText)));
    },
    leases: () => need().getPrefix(subnetsPrefix(DEFAULT_ETCD_PREFIX)),
  };
}

function fileSetup(networkConfigText: string): RegistrySetup {
  let path = '';
  return {
    registry: 'file',
    agentFlags: () => ['--kv-file', path],
    async prepare(lab) {
      path = join(lab.tempDir, 'registry.json');
      const store = new FileKvStore({ path });
      try {
        await store.put(configKey(DEFAULT_ETCD_PREFIX), networkConfigText, 0);
      } finally {
        await store.close();
      }
      out(`   registry file ${path} (shared by both agents), config written through FileKvStore:`);
      out(`   ${configKey(DEFAULT_ETCD_PREFIX)} = ${networkConfigText}`);
    },
    async leases() {
      const store = new FileKvStore({ path });
      try {
        const listing = await store.list(subnetsPrefix(DEFAULT_ETCD_PREFIX));
        return new Map(listing.kvs.map((kv) => [kv.key, kv.value]));
      } finally {
        await store.close();
      }
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { registry: { type: 'string' }, backend: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    out(HELP);
    return;
  }
  const backend = (values.backend ?? 'udp').toLowerCase() as DemoBackend;
  if (!BACKENDS.includes(backend))
    throw new RegistryChoiceError(`--backend must be udp, vxlan or host-gw, not "${values.backend}"`);
  const choice = chooseRegistry(values.registry, process.env, await missingTools(['etcd', 'etcdctl']));
  const config = networkConfig(backend);
  const setup = choice.registry === 'etcd' ? etcdSetup(config) : fileSetup(config);

  removeStaleLabNamespaces();
  const registryName = choice.registry === 'etcd' ? 'etcd (v3 API)' : 'embedded file registry (--kv-file)';
  heading(`Registry: ${registryName}, because ${choice.reason}`);
  out(`   backend: ${backend} (Backend.Type in the network config), pod MTU ${POD_MTU[backend]}`);
  let subnetFile = (n: number): string => `subnet-h${n}.env`;
  const started = Date.now();
  const lab = await Lab.create({
    hosts: 2,
    mode: 'flannel-ts',
    podMtu: POD_MTU[backend],
    agentStaticConfig: false,
    agentArgs: (n) => [...setup.agentFlags(), '--iface', 'eth0', '--subnet-file', subnetFile(n)],
    beforeAgents: async (l) => {
      subnetFile = (n) => join(l.tempDir, `subnet-h${n}.env`);
      await setup.prepare(l);
      // The lab's pods sit in 10.244.N.0/24: a subnet file left by a previous run asks for it
      // (flannel reuses the subnet recorded there), so host N leases the subnet its pod lives in.
      for (const n of l.hostNumbers()) writeFileSync(subnetFile(n), `FLANNEL_SUBNET=10.244.${n}.1/24\n`);
      heading('Starting one agent per host (no static config: everything comes from the registry)');
      const flags = [...setup.agentFlags(), '--iface', 'eth0', '--subnet-file', join(l.tempDir, 'subnet-hN.env')];
      out(`   host N: flannel-ts ${flags.join(' ')}`);
    },
  });
  try {
    out(
      `   namespaces: ${lab.underlayNs} (switch), ${lab.hostNs(1)} ${lab.hostNs(2)} (hosts), ` +
        `${lab.podNs(1)} ${lab.podNs(2)} (pods); up in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    for (const n of lab.hostNumbers()) {
      const agent = lab.agent(n);
      const lease = agent.lines.find((l) => l['msg'] === 'lease acquired');
      const forwarding = agent.lines.find((l) => l['msg'] === 'forwarding');
      out(
        `   host ${n} agent (pid ${agent.pid}): ` +
          `lease ${String(lease?.['subnet'])} for ${String(lease?.['publicIp'])}, ` +
          `expires ${String(lease?.['expiresAt'])}; forwarding since ${String(forwarding?.['time'])}`,
      );
    }
    // The agents start together: the one that forwarded first learns the other's lease from its watch.
    for (const n of lab.hostNumbers()) {
      const peer = n === 1 ? 2 : 1;
      const wanted = `${lab.subnet(peer)}=${lab.hostAddr(peer)}`;
      const line = await lab
        .agent(n)
        .waitForLine((l) => l['msg'] === 'routes' && (l['routes'] as string[]).includes(wanted), 10_000);
      out(`   host ${n} routes (from the registry watch): ${JSON.stringify(line['routes'])}`);
    }

    heading(`Leases in the registry (${choice.registry})`);
    for (const [key, value] of await setup.leases()) out(`   ${key} = ${value}`);

    for (const n of lab.hostNumbers()) {
      heading(`Host ${n}: ${subnetFile(n)} (what docker or CNI reads as /run/flannel/subnet.env)`);
      out(indent(readFileSync(subnetFile(n), 'utf8')));
    }

    heading(`Host 1 (${lab.hostNs(1)}): ip -br addr`);
    out(indent((await lab.execChecked(lab.hostNs(1), ['ip', '-br', 'addr'])).stdout));
    heading('Host 1: ip route');
    out(indent((await lab.execChecked(lab.hostNs(1), ['ip', 'route'])).stdout));

    heading(`Ping pod 1 (${lab.podAddr(1)}) -> pod 2 (${lab.podAddr(2)})`);
    const there = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 5, intervalSec: 0.2 });
    out(`   ${there.received}/${there.transmitted} replies, average round trip ${there.avgRttUs.toFixed(0)} µs`);
    heading(`Ping pod 2 (${lab.podAddr(2)}) -> pod 1 (${lab.podAddr(1)})`);
    const back = await lab.ping(lab.podNs(2), lab.podAddr(1), { count: 5, intervalSec: 0.2 });
    out(`   ${back.received}/${back.transmitted} replies, average round trip ${back.avgRttUs.toFixed(0)} µs`);

    heading(`iperf3 TCP, pod 1 -> pod 2, ${IPERF_SECONDS} seconds`);
    const tcp = await lab.iperf3Tcp(1, 2, IPERF_SECONDS);
    out(`   ${(tcp.receivedBitsPerSecond / 1e9).toFixed(2)} Gbit/s received, ${tcp.retransmits} retransmits`);

    if (backend === 'udp') {
      heading('Agent counters (SIGUSR1)');
      out(indent(countersTable(await lab.agentCounters(1), await lab.agentCounters(2))));
    } else if (backend === 'vxlan') {
      heading('Host 1: what the agent programmed on flannel.1 (ip -d link, ip neigh, bridge fdb)');
      const h = lab.hostNs(1);
      out(indent((await lab.execChecked(h, ['ip', '-d', 'link', 'show', 'flannel.1'])).stdout));
      out(indent((await lab.execChecked(h, ['ip', 'neigh', 'show', 'dev', 'flannel.1'])).stdout));
      out(indent((await lab.execChecked(h, ['bridge', 'fdb', 'show', 'dev', 'flannel.1'])).stdout));
    } else {
      heading('host-gw: the kernel forwards; the agent only keeps the routes above in place');
    }

    const ok =
      there.transmitted > 0 &&
      there.received === there.transmitted &&
      back.transmitted > 0 &&
      back.received === back.transmitted &&
      tcp.receivedBitsPerSecond > 0;
    heading(
      ok
        ? 'Demo OK: the overlay carries traffic both ways, leases and routes from ' +
            `${choice.registry === 'etcd' ? 'etcd' : 'the file registry'}.`
        : 'Demo FAILED: see the figures above.',
    );
    if (!ok) process.exitCode = 1;
  } finally {
    heading('Cleaning up (stopping the agents and the registry, deleting the namespaces and files)');
    await lab.destroy();
    out(`   done (${((Date.now() - started) / 1000).toFixed(1)} s in all)`);
  }
}

main().catch((e: unknown) => {
  const message =
    e instanceof RegistryChoiceError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e);
  process.stderr.write(`demo failed: ${message}\n`);
  process.exitCode = 1;
});
