// What flanneld leaves on a host in the lab, checked the same way by every agent test: the
// subnet file's four lines, flannel0's /32 address and MTU, and the route for the network.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Lab } from '../../src/lab/index.js';

/** Host n leased 10.244.n.0/24 in 10.244.0.0/16 with flannel's MTU 1472. */
export async function assertFlannelHost(lab: Lab, n: number, subnetFile: string): Promise<void> {
  assert.equal(
    readFileSync(subnetFile, 'utf8'),
    `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.${n}.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n`,
  );
  const addr = await lab.execChecked(lab.hostNs(n), ['ip', '-j', 'addr', 'show', 'dev', 'flannel0']);
  const [link] = JSON.parse(addr.stdout) as { mtu: number; addr_info: { local: string; prefixlen: number }[] }[];
  assert.ok(link, `flannel0 exists on host ${n}`);
  assert.equal(link.mtu, 1472);
  assert.deepEqual(
    link.addr_info.map((a) => `${a.local}/${a.prefixlen}`),
    [`10.244.${n}.0/32`],
  );
  const route = await lab.execChecked(lab.hostNs(n), ['ip', 'route', 'show', '10.244.0.0/16']);
  assert.match(route.stdout, /^10\.244\.0\.0\/16 dev flannel0/m);
}
