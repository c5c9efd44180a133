// The udp backend's set-up binds its UDP socket before it creates flannel0 or touches a route, so
// that a port already taken (a second agent on the host) fails with nothing touched. Observed
// through a fake shim that records the calls: no device, no route, no real socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Datapath, type DatapathOptions } from '../../src/backend/udp-datapath.js';
import { shim, type Shim } from '../../src/native/shim.js';
import { parseIPv4 } from '../../src/routing-table/ipv4.js';

const EADDRINUSE = 98;
const EPERM = 1;

const OPTIONS: DatapathOptions = {
  ext: { name: 'eth0', address: parseIPv4('192.0.2.1'), mtu: 1500 },
  network: { prefix: parseIPv4('10.244.0.0'), prefixLen: 16 },
  subnet: { prefix: parseIPv4('10.244.1.0'), prefixLen: 24 },
  port: 8285,
  batch: 64,
  offloads: { tun: true, udp: true },
  tunIoUring: false,
};

/**
 * The real shim's strerror; udpOpen and openTun answer as given; every call recorded by name. openTun
 * always fails in these tests, so that a set-up in the wrong order could never reach iproute2.
 */
function fakeShim(answers: { udpOpen: number; openTun: number }, calls: string[]): Shim {
  return new Proxy({} as Shim, {
    get(_t, prop) {
      const name = String(prop);
      if (name === 'strerror') return shim.strerror.bind(shim);
      return (...args: unknown[]) => {
        calls.push(name === 'closeFd' ? `closeFd ${String(args[0])}` : name);
        if (name === 'udpOpen') return answers.udpOpen;
        if (name === 'openTun') return answers.openTun;
        return 0;
      };
    },
  });
}

test('a UDP port already in use fails before any TUN device is created', () => {
  const calls: string[] = [];
  assert.throws(
    () => Datapath.open(OPTIONS, fakeShim({ udpOpen: -EADDRINUSE, openTun: -EPERM }, calls)),
    (err: Error) => {
      assert.equal(err.name, 'UdpBindError');
      assert.match(err.message, /^cannot bind UDP 192\.0\.2\.1:8285: .*\(errno 98\)$/);
      return true;
    },
  );
  assert.deepEqual(calls, ['udpOpen'], 'nothing but the bind was tried');
});

test('the socket is bound first; a TUN device that cannot be created closes it again', () => {
  const calls: string[] = [];
  assert.throws(
    () => Datapath.open(OPTIONS, fakeShim({ udpOpen: 42, openTun: -EPERM }, calls)),
    /^TunOpenError|cannot create the TUN device/,
  );
  // With the tun offload asked for, flannel0 is tried with IFF_VNET_HDR, then without.
  assert.deepEqual(calls, ['udpOpen', 'openTun', 'openTun', 'closeFd 42']);
});
