#!/usr/bin/env node
// The `mk-docker-opts.sh` bin: flannel's script of that name, for unit files that call it (e.g.
// `ExecStartPost=/usr/bin/mk-docker-opts.sh -k DOCKER_NETWORK_OPTIONS -d /run/flannel/docker`):
// only the path changes. See mk-docker-opts.ts.
import { runMkDockerOpts } from './mk-docker-opts.js';

process.exitCode = await runMkDockerOpts(
  process.argv.slice(2),
  process.env,
  process.argv[1] ?? 'mk-docker-opts.sh',
  (t) => process.stderr.write(t),
);
