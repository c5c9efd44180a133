// The agent in static mode: flannel0 and the UDP socket set up as flanneld's udp backend does,
// routes from the command line, forwarding until SIGINT/SIGTERM. What it made goes with it:
// flannel0 is not persistent, so closing its fd removes the device, its address and route.
import { C, countersToObject, newCounters } from '../datapath/counters.js';
import { DatapathEngine } from '../datapath/engine.js';
import { Forwarder } from '../datapath/forwarder.js';
import { NativeTun, NativeUdp, createRing } from '../datapath/native-io.js';
import { PacketSlab, slotSizeFor } from '../datapath/slab.js';
import { ENCAP_OVERHEAD } from '../encap/ipv4.js';
import { configureTunLink, findExternalInterface } from '../link/ip.js';
import { describeErrno, shim } from '../native/shim.js';
import type { Logger } from '../observability/log.js';
import { formatCidr, formatIPv4 } from '../routing-table/ipv4.js';
import { RoutingSnapshot } from '../routing-table/snapshot.js';
import type { StaticFlags } from './flags.js';

/** Socket buffers sized for bursts of a few thousand full-size packets (kernel default ~200 KiB). */
const SOCKET_BUFFER_BYTES = 4 << 20;

export async function runStaticAgent(flags: StaticFlags, log: Logger): Promise<number> {
  const ext = findExternalInterface(flags.ifaces, flags.publicIp);
  const publicIp = flags.publicIp ?? ext.address;
  const mtu = ext.mtu - ENCAP_OVERHEAD;
  const tunAddress = flags.subnet.prefix;

  const tunFd = shim.openTun('flannel%d');
  if (tunFd < 0) throw new Error(`cannot create the TUN device: ${describeErrno(tunFd)}`);
  const tunName = shim.tunName(tunFd);
  let udpFd = -1;
  try {
    configureTunLink({ name: tunName, address: tunAddress, mtu, networkPrefix: flags.network.prefix, networkLen: flags.network.prefixLen });
    udpFd = shim.udpOpen(ext.address, flags.port, SOCKET_BUFFER_BYTES, SOCKET_BUFFER_BYTES);
    if (udpFd < 0) throw new Error(`cannot bind UDP ${formatIPv4(ext.address)}:${flags.port}: ${describeErrno(udpFd)}`);

    const slab = new PacketSlab({ slotSize: slotSizeFor(mtu), batch: flags.batch });
    const ring = createRing(slab);
    const counters = newCounters();
    const forwarder = new Forwarder(slab, new NativeTun(ring, tunFd), new NativeUdp(ring, udpFd), {
      tunAddress, subnetPrefix: flags.subnet.prefix, subnetLen: flags.subnet.prefixLen, port: flags.port, mtu,
    }, counters);
    forwarder.setRoutes(RoutingSnapshot.build(flags.peers));
    const engine = new DatapathEngine(forwarder, tunFd, udpFd, flags.batch);
    engine.start();
    log.info('forwarding', {
      tun: tunName, tunAddress: `${formatIPv4(tunAddress)}/32`, mtu, iface: ext.name,
      bind: `${formatIPv4(ext.address)}:${flags.port}`, publicIp: formatIPv4(publicIp),
      network: formatCidr(flags.network.prefix, flags.network.prefixLen),
      subnet: formatCidr(flags.subnet.prefix, flags.subnet.prefixLen),
      routes: flags.peers.map((p) => `${formatCidr(p.prefix, p.prefixLen)}=${formatIPv4(p.publicIp)}`),
    });

    const reportCounters = () => log.info('counters', { counters: countersToObject(counters) });
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        log.info('stopping', { signal });
        process.off('SIGUSR1', reportCounters);
        resolve();
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGUSR1', reportCounters);
    });
    engine.stop();
    // Drain what the last wake-up left, so the counters below are final.
    while (forwarder.udpToTun() > 0 || forwarder.tunToUdp() > 0);
    reportCounters();
    const writeErrno = shim.lastErrno(ring);
    if (counters[C.dropTxSendError] + counters[C.dropRxWriteError] > 0 && writeErrno !== 0) {
      log.warn('some packets could not be sent or written', { lastError: describeErrno(writeErrno) });
    }
    return 0;
  } finally {
    if (udpFd >= 0) shim.closeFd(udpFd);
    shim.closeFd(tunFd);
  }
}
