// --datapath (src/cli/flags.ts), the fallback rule of startDatapath and how metrics show the
// datapath in force (src/observability/metrics.ts). The kernel side runs in
// test/integration/fast-path.test.ts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { newCounters } from '../../src/datapath/counters.js';
import { FastPathRefusedError, startDatapath } from '../../src/fastpath/fast-path.js';
import { FlagError, parseFlags } from '../../src/cli/flags.js';
import { renderMetrics } from '../../src/observability/metrics.js';

const STATIC = ['--network', '10.244.0.0/16', '--subnet', '10.244.1.0/24'];

function datapathOf(argv: string[], env: NodeJS.ProcessEnv = {}): string {
  const parsed = parseFlags(argv, env);
  assert.ok(parsed.kind === 'static' || parsed.kind === 'registry');
  return parsed.flags.datapath;
}

describe('--datapath', () => {
  test('auto by default in both modes; kernel, userspace; FLANNELD_DATAPATH in flanneld mode', () => {
    assert.equal(datapathOf(STATIC), 'auto');
    assert.equal(datapathOf([]), 'auto');
    assert.equal(datapathOf([...STATIC, '--datapath', 'kernel']), 'kernel');
    assert.equal(datapathOf([...STATIC, '-datapath=userspace']), 'userspace');
    assert.equal(datapathOf(['--datapath=kernel']), 'kernel');
    assert.equal(datapathOf([], { FLANNELD_DATAPATH: 'userspace' }), 'userspace');
  });

  test('anything else is a one-line flag error', () => {
    assert.throws(
      () => parseFlags([...STATIC, '--datapath', 'ebpf']),
      (e: unknown) => {
        assert.ok(e instanceof FlagError);
        assert.equal(e.message, '--datapath: "ebpf" is not one of auto, kernel, userspace');
        return true;
      },
    );
  });
});

describe('startDatapath', () => {
  // Interfaces that do not exist in this namespace: the fast path is refused before any BPF call.
  const options = {
    tunName: 'no-such-tun0',
    extName: 'no-such-eth0',
    address: 0xc0000201,
    subnet: { prefix: 0x0af40100, prefixLen: 24 },
    mtu: 1472,
    port: 8285,
  };

  test('userspace never tries', () => {
    assert.deepEqual(startDatapath('userspace', options), {
      datapath: 'userspace',
      fastPath: null,
      reason: 'chosen (--datapath userspace)',
    });
  });

  test('auto falls back with the reason; kernel throws it', () => {
    const start = startDatapath('auto', options);
    assert.equal(start.datapath, 'userspace');
    assert.equal(start.fastPath, null);
    assert.match(start.reason ?? '', /no ifindex for no-such-tun0|no BPF object|no fast-path loader/);
    assert.throws(
      () => startDatapath('kernel', options),
      (e: unknown) => e instanceof FastPathRefusedError && e.code === 'FLANNEL_TS_ERR_FASTPATH_REFUSED',
    );
  });
});

test('metrics: datapath_info says which datapath forwards, fastpath_* carry the fast path own counters', () => {
  const base = { counters: newCounters(), routes: () => [], lease: () => null };
  const kernel = renderMetrics({
    ...base,
    datapath: () => ({ datapath: 'kernel', attach: 'tcx' }),
    fastPathCounters: () => ({ kernelTxPassedUp: 3, kernelRxPassedUp: 4, kernelTxFailed: 0, kernelRxFailed: 1 }),
  });
  assert.match(kernel, /^flannel_ts_datapath_info\{datapath="kernel",attach="tcx",reason=""\} 1$/m);
  assert.match(kernel, /^flannel_ts_fastpath_passed_up_total\{direction="tx"\} 3$/m);
  assert.match(kernel, /^flannel_ts_fastpath_passed_up_total\{direction="rx"\} 4$/m);
  assert.match(kernel, /^flannel_ts_fastpath_failed_total\{direction="rx"\} 1$/m);
  const fellBack = renderMetrics({
    ...base,
    datapath: () => ({ datapath: 'userspace', datapathReason: 'no BPF object' }),
    fastPathCounters: () => null,
  });
  assert.match(fellBack, /^flannel_ts_datapath_info\{datapath="userspace",attach="",reason="no BPF object"\} 1$/m);
  assert.doesNotMatch(fellBack, /fastpath_passed_up_total\{/);
});
