// Builds the Node-API shim with node-gyp against the headers of the running Node.
// The header directory is passed explicitly (--nodedir): npm's `nodedir` setting is deprecated
// and a fresh machine must not need a download of headers.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const nodedir = path.dirname(path.dirname(process.execPath));
const gyp = require.resolve('node-gyp/bin/node-gyp.js');
const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`], { stdio: 'inherit' });
process.exit(r.status ?? 1);
