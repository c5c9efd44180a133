// Builds the Node-API shim with node-gyp against the headers of the running Node.
// The header directory is passed explicitly (--nodedir): npm's `nodedir` setting is deprecated
// and a fresh machine must not need a download of headers.
//
// Then, optionally, the kernel fast path (docs/fast-path.md): the TC programs compiled by clang
// into build/bpf/flannel_udp.bpf.o and their loader (native/fastpath, linked with libbpf) into
// build/fastpath/flannel_fastpath.node. Either failing is not an install failure: flannel-ts then
// runs the userspace datapath and says why in its "forwarding" line.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nodedir = path.dirname(path.dirname(process.execPath));
const gyp = require.resolve('node-gyp/bin/node-gyp.js');
const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`], { stdio: 'inherit', cwd: root });
if (r.status !== 0) process.exit(r.status ?? 1);

const skip = (why) => {
  process.stderr.write(`flannel-ts: kernel fast path not built (${why}); the userspace datapath will be used\n`);
};

/** The multiarch include directory (asm/types.h) clang needs for -target bpf on Debian-like systems. */
function multiarchInclude() {
  const out = spawnSync('cc', ['-print-multiarch'], { encoding: 'utf8' });
  const triple = out.status === 0 ? out.stdout.trim() : '';
  return triple ? [`-I/usr/include/${triple}`] : [];
}

function buildFastPath() {
  const bpfDir = path.join(root, 'build', 'bpf');
  const object = path.join(bpfDir, 'flannel_udp.bpf.o');
  mkdirSync(bpfDir, { recursive: true });
  const clang = spawnSync(
    'clang',
    [
      '-O2',
      '-g',
      '-Wall',
      '-target',
      'bpf',
      ...multiarchInclude(),
      '-c',
      path.join(root, 'native', 'bpf', 'flannel_udp.bpf.c'),
      '-o',
      object,
    ],
    { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' },
  );
  if (clang.error) return skip(`clang: ${clang.error.message}`);
  if (clang.status !== 0) {
    const first = (clang.stderr || '').trim().split('\n')[0];
    return skip(`clang failed${first ? `: ${first}` : ` (exit ${clang.status})`}`);
  }

  const loaderDir = path.join(root, 'native', 'fastpath');
  const loader = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`], {
    cwd: loaderDir,
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
  });
  const built = path.join(loaderDir, 'build', 'Release', 'flannel_fastpath.node');
  if (loader.status !== 0) {
    const why = (loader.stderr || '').split('\n').find((l) => /error/i.test(l)) ?? 'node-gyp failed';
    return skip(`loader: ${why.trim()} (libbpf-dev missing?)`);
  }
  const outDir = path.join(root, 'build', 'fastpath');
  mkdirSync(outDir, { recursive: true });
  copyFileSync(built, path.join(outDir, 'flannel_fastpath.node'));
  rmSync(path.join(loaderDir, 'build'), { recursive: true, force: true });
  process.stderr.write('flannel-ts: kernel fast path built (build/bpf, build/fastpath)\n');
}

buildFastPath();
