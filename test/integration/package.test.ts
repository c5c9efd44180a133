/**
 * The packed package, installed as a user would: `npm pack` of this checkout, then `npm install` of
 * the tarball into an empty folder outside it. The install must build the native shim against the
 * running Node without the checkout's devDependencies (node-gyp comes from npm itself) and without
 * the network (--offline: the package has no dependencies to fetch), and `flannel-ts --version`,
 * `--help` and the shim must work from there. Needs the built dist/ (npm test builds it first).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';

const repo = fileURLToPath(new URL('../../..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { name: string; version: string };

/** The environment of a user's shell: none of the npm_* variables of the `npm test` running us. */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.toLowerCase().startsWith('npm_')) env[k] = v;
  return env;
}

function npm(args: string[], cwd: string): string {
  const r = spawnSync('npm', args, { cwd, env: userEnv(), encoding: 'utf8', timeout: 50_000 });
  assert.equal(r.status, 0, `npm ${args.join(' ')} failed (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

describe('the packed package installs into an empty folder and runs', { timeout: 60_000 }, () => {
  let dir = '';
  let tarball = '';
  let installed = '';

  before(() => {
    assert.ok(existsSync(join(repo, 'dist', 'src', 'cli', 'main.js')), 'dist/src is built (npm run build)');
    dir = mkdtempSync(join(tmpdir(), 'flannel-ts-pack-'));
    // dist/ is already built by `npm test`; --ignore-scripts skips prepack's second build.
    npm(['pack', '--ignore-scripts', '--pack-destination', dir], repo);
    tarball = join(dir, `${pkg.name}-${pkg.version}.tgz`);
    const app = join(dir, 'app');
    mkdirSync(app);
    npm(['install', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', tarball], app);
    installed = join(app, 'node_modules', pkg.name);
  });

  after(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  test('the tarball holds the agent, the shim sources, the install script and the docs, not tests or maps', () => {
    const files = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' }).split('\n').filter(Boolean);
    for (const f of [
      'package/dist/src/cli/main.js',
      'package/native/shim.c',
      'package/binding.gyp',
      'package/scripts/build-native.mjs',
      'package/README.md',
      'package/docs/agent.md',
    ]) {
      assert.ok(files.includes(f), `${f} is in the tarball`);
    }
    const unwanted = files.filter((f) => /^package\/(test|bench|dist\/test|dist\/bench|build)\/|\.map$/.test(f));
    assert.deepEqual(unwanted, [], 'no tests, benchmarks, prebuilt shim or source maps in the tarball');
  });

  test('the install built the shim in the installed package', () => {
    assert.ok(existsSync(join(installed, 'build', 'Release', 'flannel_shim.node')));
    assert.ok(!existsSync(join(installed, 'node_modules')), 'the package installs no dependencies');
  });

  test('flannel-ts --version and --help run from node_modules/.bin', () => {
    const bin = join(dir, 'app', 'node_modules', '.bin', 'flannel-ts');
    const version = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    assert.equal(version.status, 0, version.stderr);
    assert.equal(version.stdout, `flannel-ts ${pkg.version}\n`);
    const help = spawnSync(bin, ['--help'], { encoding: 'utf8' });
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^Usage:\n {2}flannel-ts /);
    assert.match(help.stdout, /--etcd-endpoints/);
    const bad = spawnSync(bin, ['--no-such-flag'], { encoding: 'utf8' });
    assert.equal(bad.status, 2, 'a bad flag exits 2');
  });

  test('the installed shim loads into the running Node and answers', () => {
    const shimModule = join(installed, 'dist', 'src', 'native', 'shim.js');
    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const m = await import(${JSON.stringify(shimModule)}); console.log(m.shim.strerror(2));`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(out.trim(), 'No such file or directory');
    // Built against this Node's own headers (--nodedir) for its module version: nothing downloaded.
    const gypi = readFileSync(join(installed, 'build', 'config.gypi'), 'utf8');
    assert.ok(gypi.includes(`"nodedir": ${JSON.stringify(dirname(dirname(process.execPath)))}`), 'nodedir');
    assert.ok(gypi.includes(`"node_module_version": ${process.versions.modules}`), 'node_module_version');
  });
});
