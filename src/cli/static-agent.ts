// The agent in static mode: flannel0 and the UDP socket set up as flanneld's udp backend does,
// routes from the command line, forwarding until SIGINT/SIGTERM. What it made goes with it:
// flannel0 is not persistent, so closing its fd removes the device, its address and route.
import { Datapath, describeRoutes } from '../backend/udp-datapath.js';
import { waitForStopSignal } from './signals.js';
import { findExternalInterface } from '../link/ip.js';
import type { Logger } from '../observability/log.js';
import { FlagError, type StaticFlags } from './flags.js';
import { staticHostProblem } from './static-checks.js';
import { takeHostLock } from '../agent/host-lock.js';

export async function runStaticAgent(flags: StaticFlags, log: Logger): Promise<number> {
  // Before anything on the host is touched: one agent per host (network namespace).
  const hostLock = await takeHostLock('static');
  try {
    return await runLocked(flags, log);
  } finally {
    await hostLock.release();
  }
}

async function runLocked(flags: StaticFlags, log: Logger): Promise<number> {
  const ext = findExternalInterface(flags.ifaces, flags.publicIp);
  const publicIp = flags.publicIp ?? ext.address;
  const refused = staticHostProblem(flags, ext, publicIp);
  if (refused !== null) throw new FlagError(refused);
  const datapath = Datapath.open({
    ext,
    network: flags.network,
    subnet: flags.subnet,
    port: flags.port,
    batch: flags.batch,
    offloads: flags.offloads,
    tunIoUring: flags.ioUring,
    workers: flags.workers,
    datapath: flags.datapath,
    datapathWait: flags.datapathWait,
    datapathSliceUs: flags.datapathSliceUs,
    datapathSpinUs: flags.datapathSpinUs,
  });
  try {
    datapath.setRoutes(flags.peers);
    // The handlers go in before "forwarding" is logged: whoever reads that line may send SIGUSR1
    // at once, and without a listener Node answers SIGUSR1 by starting its inspector.
    const reportCounters = () =>
      log.info('counters', { counters: datapath.countersObject(), latencyUs: datapath.latencyObject() });
    const stopSignal = waitForStopSignal(reportCounters);
    log.info('forwarding', { ...datapath.describe(publicIp, flags.network), routes: describeRoutes(flags.peers) });

    const signal = await stopSignal.promise;
    log.info('stopping', { signal });
    datapath.stop();
    reportCounters();
    const writeError = datapath.lastWriteError();
    if (writeError !== null) log.warn('some packets could not be sent or written', { lastError: writeError });
    return 0;
  } finally {
    datapath.close();
  }
}
