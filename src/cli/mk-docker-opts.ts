// `flannel-ts mk-docker-opts` and the `mk-docker-opts.sh` bin: flannel's dist/mk-docker-opts.sh
// (v0.17.0) without a shell. Same flags (parsed as sh's getopts "f:d:icmk:?h" does: bundled
// flags, attached or separate arguments, stop at the first non-option), same output file text
// (see dockerOpts), same messages and exit codes:
//   unknown flag        "Illegal option -x" + usage on stderr, exit 1
//   flag without value  "No arg for -f option" + usage, exit 1
//   -h, -?              usage, exit 1
//   bad FLANNEL_IPMASQ  "Invalid value of FLANNEL_IPMASQ: X", exit 1, output file untouched
//   output not writable "<name>: cannot create <file>: <reason>", exit 2 (the shell's status)
// A missing subnet file is not an error (the script skips it): the output then holds what the
// environment gives, at least `DOCKER_OPTS=""`. The output is written in one go, not line by line.

import { readFile, stat, writeFile } from 'node:fs/promises';

import { DEFAULT_SUBNET_FILE, dockerOpts, parseEnvText, type DockerOptsOptions } from '../subnet/subnet-env.js';

export const DEFAULT_DOCKER_ENV_FILE = '/run/docker_opts.env';

export interface MkDockerOptsArgs extends DockerOptsOptions {
  /** -f: the subnet file to read. */
  readonly flannelEnv: string;
  /** -d: the file to write. */
  readonly dockerEnv: string;
}

/** The script's usage text, with `name` where the script prints $0. */
export function mkDockerOptsUsage(name: string): string {
  return `${name} [-f FLANNEL-ENV-FILE] [-d DOCKER-ENV-FILE] [-i] [-c] [-m] [-k COMBINED-KEY]

Generate Docker daemon options based on flannel env file
OPTIONS:
\t-f\tPath to flannel env file. Defaults to ${DEFAULT_SUBNET_FILE}
\t-d\tPath to Docker env file to write to. Defaults to ${DEFAULT_DOCKER_ENV_FILE}
\t-i\tOutput each Docker option as individual var. e.g. DOCKER_OPT_MTU=1500
\t-c\tOutput combined Docker options into DOCKER_OPTS var
\t-k\tSet the combined options key to this value (default DOCKER_OPTS=)
\t-m\tDo not output --ip-masq (useful for older Docker version)

`;
}

/** The script shows its usage and exits 1; `reason` is getopts' line before it, if any. */
export class MkDockerOptsUsageError extends Error {
  readonly code = 'FLANNEL_TS_ERR_MK_DOCKER_OPTS_USAGE';
  constructor(readonly reason: string | null) {
    super(reason ?? 'usage requested');
    this.name = 'MkDockerOptsUsageError';
  }
}

const WITH_ARGUMENT = new Set(['f', 'd', 'k']);
const WITHOUT_ARGUMENT = new Set(['i', 'c', 'm']);

/** getopts "f:d:icmk:?h" over argv; throws MkDockerOptsUsageError where the script prints its usage. */
export function parseMkDockerOptsArgs(argv: readonly string[]): MkDockerOptsArgs {
  const args = {
    flannelEnv: DEFAULT_SUBNET_FILE,
    dockerEnv: DEFAULT_DOCKER_ENV_FILE,
    key: 'DOCKER_OPTS',
    individual: false,
    combined: false,
    omitIpMasq: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') break;
    if (!arg.startsWith('-') || arg === '-') break; // getopts stops at the first operand
    for (let j = 1; j < arg.length; j++) {
      const flag = arg[j]!;
      if (WITH_ARGUMENT.has(flag)) {
        let value = arg.slice(j + 1);
        if (value === '') {
          if (i + 1 >= argv.length) throw new MkDockerOptsUsageError(`No arg for -${flag} option`);
          value = argv[++i]!;
        }
        if (flag === 'f') args.flannelEnv = value;
        else if (flag === 'd') args.dockerEnv = value;
        else args.key = value;
        break;
      }
      if (WITHOUT_ARGUMENT.has(flag)) {
        if (flag === 'i') args.individual = true;
        else if (flag === 'c') args.combined = true;
        else args.omitIpMasq = true;
      } else if (flag === 'h' || flag === '?') {
        throw new MkDockerOptsUsageError(null);
      } else {
        throw new MkDockerOptsUsageError(`Illegal option -${flag}`);
      }
    }
  }
  return args;
}

/**
 * Runs mk-docker-opts: `name` stands for the script's $0 in messages. Returns the exit status;
 * messages go to `stderr`.
 */
export async function runMkDockerOpts(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  name: string,
  stderr: (text: string) => void,
): Promise<number> {
  let args: MkDockerOptsArgs;
  try {
    args = parseMkDockerOptsArgs(argv);
  } catch (err) {
    if (!(err instanceof MkDockerOptsUsageError)) throw err;
    stderr(`${err.reason === null ? '' : `${err.reason}\n`}${mkDockerOptsUsage(name)}`);
    return 1;
  }
  const vars = new Map<string, string>();
  for (const [k, v] of Object.entries(env)) if (v !== undefined) vars.set(k, v);
  // `[ -f FILE ] && . FILE`: only a regular file is read; its assignments override the environment.
  const isFile = await stat(args.flannelEnv).then(
    (s) => s.isFile(),
    () => false,
  );
  if (isFile) {
    let text: string;
    try {
      text = await readFile(args.flannelEnv, 'utf8');
    } catch (err) {
      stderr(`${name}: cannot open ${args.flannelEnv}: ${reasonOf(err)}\n`);
      return 2;
    }
    for (const [k, v] of parseEnvText(text)) vars.set(k, v);
  }
  let text: string;
  try {
    text = dockerOpts(vars, args);
  } catch (err) {
    stderr(`${(err as Error).message}\n`);
    return 1;
  }
  try {
    await writeFile(args.dockerEnv, text);
  } catch (err) {
    stderr(`${name}: cannot create ${args.dockerEnv}: ${reasonOf(err)}\n`);
    return 2;
  }
  return 0;
}

/** The shell's wording for the common file errors. */
function reasonOf(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'Directory nonexistent';
  if (code === 'EACCES') return 'Permission denied';
  if (code === 'EISDIR') return 'Is a directory';
  return (err as Error).message;
}
