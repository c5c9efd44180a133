// Builds the Node-API shim with node-gyp against the headers of the running Node.
// The header directory is passed explicitly (--nodedir): npm's `nodedir` setting is deprecated
// and a fresh machine must not need a download of headers.
//
// node-gyp: the checkout's own (a devDependency, pinned) when it is installed; otherwise, as when
// the packed package is installed by a user, the one npm ships with and names in
// npm_config_node_gyp for every install script. So installing the package needs no download.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);

function findNodeGyp() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    return process.env.npm_config_node_gyp || null;
  }
}

const gyp = findNodeGyp();
if (gyp === null) {
  console.error('flannel-ts: node-gyp not found: run the install through npm, or npm install node-gyp');
  process.exit(1);
}
const nodedir = path.dirname(path.dirname(process.execPath));
const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`], { stdio: 'inherit' });
process.exit(r.status ?? 1);
