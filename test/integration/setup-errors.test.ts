/**
 * The datapath's set-up failures are typed errors with stable codes, provoked for real inside a private network
 * namespace (test/helpers/setup-errors-scenario.ts): an unknown --iface, no default route, `ip` refusing a
 * device, a bind to an address that is not local and to a port in use, a call after close. Whatever a failed
 * open created is gone again. Needs root and iproute2.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { requireToolsFor } from '../../src/lab/exec.js';
import { scenarioNamespace } from '../helpers/scenario-netns.js';

interface Outcome {
  name: string;
  code: string | undefined;
  errno: number | undefined;
  message: string;
  isFlannelTsError: boolean;
}

interface Report {
  results: Record<string, Outcome | null>;
  linksLeft: string[];
}

const EADDRINUSE = 98;
const EADDRNOTAVAIL = 99;

describe('set-up failures: typed errors with stable codes', { timeout: 60_000 }, () => {
  const ns = scenarioNamespace('setup-errors-scenario.js', 'fterr');
  let report: Report;

  before(() => {
    requireToolsFor('the set-up error scenario', ['ip']);
    ns.create();
    report = ns.run<Report>([]);
  });
  after(() => ns.remove());

  const expect = (key: string, name: string, code: string): Outcome => {
    const o = report.results[key];
    assert.ok(o, `${key}: an error was thrown`);
    assert.equal(o.isFlannelTsError, true, `${key}: a FlannelTsError`);
    assert.equal(o.name, name, `${key}: name`);
    assert.equal(o.code, code, `${key}: code`);
    assert.ok(!o.message.includes('\n'), `${key}: one line: ${o.message}`);
    return o;
  };

  test('an --iface that does not exist, and no default route: ExternalInterfaceError', () => {
    assert.match(
      expect('unknownIface', 'ExternalInterfaceError', 'FLANNEL_TS_ERR_NO_EXTERNAL_INTERFACE').message,
      /nosuch0/,
    );
    expect('noDefaultRoute', 'ExternalInterfaceError', 'FLANNEL_TS_ERR_NO_EXTERNAL_INTERFACE');
  });

  test('ip refusing a device: LinkCommandError naming the command', () => {
    assert.match(expect('linkCommand', 'LinkCommandError', 'FLANNEL_TS_ERR_LINK_COMMAND').message, /^ip addr replace /);
  });

  test('binding UDP to an address that is not local, or to a port in use: UdpBindError with the errno', () => {
    assert.equal(expect('bindNotLocal', 'UdpBindError', 'FLANNEL_TS_ERR_UDP_BIND').errno, EADDRNOTAVAIL);
    assert.equal(expect('bindInUse', 'UdpBindError', 'FLANNEL_TS_ERR_UDP_BIND').errno, EADDRINUSE);
  });

  test('a call after close: DatapathClosedError', () => {
    expect('closed', 'DatapathClosedError', 'FLANNEL_TS_ERR_DATAPATH_CLOSED');
  });

  test('the failed opens left no flannel device behind', () => {
    assert.deepEqual(
      report.linksLeft.filter((l) => l.startsWith('flannel')),
      [],
    );
  });
});
