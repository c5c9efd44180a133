/**
 * A flannel-ts host whose routes the test changes at run time (test/integration/fast-path.test.ts):
 * the real Datapath with --datapath kernel, run inside a lab host namespace, speaking the agent's
 * JSON-lines contract (src/lab/agent.ts) so that AgentProcess drives it.
 *
 *   node fastpath-routes-scenario.js IFACE NETWORK SUBNET PEER_CIDR=PEER_IP
 *
 * Prints "forwarding" with the routes in force; SIGUSR2 withdraws the peer's route (its lease is
 * gone), SIGHUP puts it back, each answered by a "routes" line; SIGWINCH moves the lease to the
 * subnet's first half (SUBNET with a prefix one longer: the fast path is loaded again for it),
 * answered by a "subnet" line; SIGUSR1 prints the counters;
 * SIGTERM prints them once more, closes the datapath and exits 0.
 */
import { Datapath, describeRoutes } from '../../src/backend/udp-datapath.js';
import { findExternalInterface } from '../../src/link/ip.js';
import { parseCidr, parseIPv4 } from '../../src/routing-table/ipv4.js';
import type { Route } from '../../src/routing-table/snapshot.js';

function say(msg: string, fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ msg, ...fields })}\n`);
}

function main(): void {
  const [iface, network, subnet, peer] = process.argv.slice(2);
  if (peer === undefined) {
    // `node --test dist/test/` on Node 20 runs every .js under a test/ directory, helpers too.
    if (process.env['NODE_TEST_CONTEXT'] !== undefined) return;
    throw new Error('usage: fastpath-routes-scenario.js IFACE NETWORK SUBNET PEER_CIDR=PEER_IP');
  }
  const [cidr, ip] = peer.split('=') as [string, string];
  const route: Route = { ...parseCidr(cidr), publicIp: parseIPv4(ip) };
  const ext = findExternalInterface([iface!], null);
  const datapath = Datapath.open({
    ext,
    network: parseCidr(network!),
    subnet: parseCidr(subnet!),
    port: 8285,
    batch: 64,
    offloads: { tun: true, udp: true },
    tunIoUring: true,
    datapath: 'kernel',
  });
  const setRoutes = (routes: Route[]): void => {
    datapath.setRoutes(routes);
    say('routes', { routes: describeRoutes(routes), datapath: datapath.datapath });
  };
  datapath.setRoutes([route]);
  process.on('SIGUSR1', () => say('counters', { counters: datapath.countersObject() }));
  process.on('SIGUSR2', () => setRoutes([]));
  process.on('SIGHUP', () => setRoutes([route]));
  process.on('SIGWINCH', () => {
    const now = datapath.subnet;
    datapath.changeSubnet({ prefix: now.prefix, prefixLen: now.prefixLen + 1 }, parseCidr(network!));
    say('subnet', { ...datapath.describeDatapath(), subnet: `${now.prefixLen + 1}` });
  });
  process.on('SIGTERM', () => {
    datapath.stop();
    say('counters', { counters: datapath.countersObject() });
    datapath.close();
    process.exit(0);
  });
  say('forwarding', { ...datapath.describe(ext.address, parseCidr(network!)), routes: describeRoutes([route]) });
}

main();
