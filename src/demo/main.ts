/**
 * `npm run demo`: two hosts in network namespaces, a pod on each, connected by flannel-ts
 * (flannel's udp backend). Shows the host's network config, pings pod to pod, runs a short
 * iperf3, prints the agents' counters, and removes everything again (also on Ctrl-C).
 */
import { Lab, removeStaleLabNamespaces, type AgentCounters } from '../lab/index.js';

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
    String(Object.entries(c).filter(([k]) => k.startsWith('drop')).reduce((s, [, v]) => s + v, 0));
  rows.push(['drops (all reasons)', drops(c1), drops(c2)]);
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => `${r[0].padEnd(widths[0]!)}  ${r[1].padStart(widths[1]!)}  ${r[2].padStart(widths[2]!)}`).join('\n');
}

async function main(): Promise<void> {
  removeStaleLabNamespaces();
  heading('Building the lab: 2 hosts on a bridged underlay (192.0.2.0/24), one pod each, flannel-ts agents');
  const lab = await Lab.create({ hosts: 2, mode: 'flannel-ts' });
  try {
    out(`   namespaces: ${lab.underlayNs} (switch), ${lab.hostNs(1)} ${lab.hostNs(2)} (hosts), ${lab.podNs(1)} ${lab.podNs(2)} (pods)`);
    for (const n of lab.hostNumbers()) {
      const forwarding = lab.agent(n).lines.find((l) => l['msg'] === 'forwarding');
      out(`   agent on host ${n} (pid ${lab.agent(n).pid}) is forwarding: ${JSON.stringify(forwarding)}`);
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

    heading('iperf3 TCP, pod 1 -> pod 2, 3 seconds');
    const tcp = await lab.iperf3Tcp(1, 2, 3);
    out(`   ${(tcp.receivedBitsPerSecond / 1e9).toFixed(2)} Gbit/s received, ${tcp.retransmits} retransmits`);

    heading('Agent counters (SIGUSR1)');
    out(indent(countersTable(await lab.agentCounters(1), await lab.agentCounters(2))));

    const ok = there.received === there.transmitted && back.received === back.transmitted && tcp.receivedBitsPerSecond > 0;
    heading(ok ? 'Demo OK: the overlay carries traffic both ways.' : 'Demo FAILED: see the figures above.');
    if (!ok) process.exitCode = 1;
  } finally {
    heading('Cleaning up (stopping the agents, deleting the namespaces)');
    await lab.destroy();
    out('   done');
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
