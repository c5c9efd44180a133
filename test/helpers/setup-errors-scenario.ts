// Runs inside a private network namespace (test/unit/errors.test.ts creates it): the datapath's set-up failures,
// provoked for real, each printed as {name, code, errno, message}. The namespace has only loopback, so no
// default route, no interface named nosuch0 and no local address 192.0.2.99.
import { execFileSync } from 'node:child_process';
import { Datapath, type DatapathOptions } from '../../src/backend/udp-datapath.js';
import { FlannelTsError } from '../../src/errors.js';
import { configureTunLink, findExternalInterface } from '../../src/link/ip.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';

interface Outcome {
  name: string;
  code: string | undefined;
  errno: number | undefined;
  message: string;
  isFlannelTsError: boolean;
}

function outcome(fn: () => unknown): Outcome | null {
  try {
    fn();
    return null;
  } catch (err) {
    const e = err as Error & { code?: string; errno?: number };
    return {
      name: e.name,
      code: e.code,
      errno: e.errno,
      message: e.message,
      isFlannelTsError: err instanceof FlannelTsError,
    };
  }
}

const lo = { name: 'lo', address: parseIPv4('127.0.0.1'), mtu: 1500 };
const options = (address: number, port: number): DatapathOptions => ({
  ext: { ...lo, address },
  network: { prefix: parseIPv4('10.244.0.0'), prefixLen: 16 },
  subnet: { prefix: parseIPv4('10.244.1.0'), prefixLen: 24 },
  port,
  batch: 8,
  offloads: { tun: false, udp: false },
  tunIoUring: false,
});

const results: Record<string, Outcome | null> = {};
results['unknownIface'] = outcome(() => findExternalInterface(['nosuch0'], null));
results['noDefaultRoute'] = outcome(() => findExternalInterface([], null));
results['linkCommand'] = outcome(() =>
  configureTunLink({ name: 'nosuch0', address: 0x0af40100, mtu: 1472, networkPrefix: 0x0af40000, networkLen: 16 }),
);
results['bindNotLocal'] = outcome(() => Datapath.open(options(parseIPv4('192.0.2.99'), 8285)));
const first = Datapath.open(options(lo.address, 8285));
results['bindInUse'] = outcome(() => Datapath.open(options(lo.address, 8285)));
first.close();
results['closed'] = outcome(() => first.setRoutes([]));
const links = JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as { ifname: string }[];
process.stdout.write(JSON.stringify({ results, linksLeft: links.map((l) => l.ifname) }));
