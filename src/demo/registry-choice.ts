import { FlannelTsError } from '../errors.js';
/**
 * Which registry the demo runs the agents on, and why: real etcd when the `etcd` and `etcdctl`
 * binaries are installed, the embedded file registry (--kv-file) otherwise. The user can force one
 * with `--registry etcd|file` or FLANNEL_TS_DEMO_REGISTRY=etcd|file (the flag wins).
 */

export type DemoRegistry = 'etcd' | 'file';

export const REGISTRY_ENV = 'FLANNEL_TS_DEMO_REGISTRY';

export interface RegistryChoice {
  readonly registry: DemoRegistry;
  /** One sentence for the demo's output. */
  readonly reason: string;
}

export class RegistryChoiceError extends FlannelTsError {
  override name = 'RegistryChoiceError';
  override readonly code = 'FLANNEL_TS_ERR_DEMO_REGISTRY';
}

function parseRegistry(value: string, source: string): DemoRegistry | 'auto' {
  const v = value.trim().toLowerCase();
  if (v === 'etcd' || v === 'file' || v === 'auto') return v;
  throw new RegistryChoiceError(`${source} must be etcd, file or auto, not "${value}"`);
}

/**
 * @param requested the --registry flag's value, if given
 * @param env the process environment (REGISTRY_ENV is read when the flag is absent)
 * @param missingEtcdTools etcd's tools that are not installed (empty: etcd is usable)
 */
export function chooseRegistry(
  requested: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  missingEtcdTools: readonly string[],
): RegistryChoice {
  const fromEnv = env[REGISTRY_ENV];
  const wanted =
    requested !== undefined
      ? { value: parseRegistry(requested, '--registry'), source: '--registry' }
      : fromEnv !== undefined && fromEnv !== ''
        ? { value: parseRegistry(fromEnv, REGISTRY_ENV), source: `${REGISTRY_ENV}=${fromEnv}` }
        : { value: 'auto' as const, source: '' };
  const installed = missingEtcdTools.length === 0;
  const missing = `${missingEtcdTools.join(' and ')} ${missingEtcdTools.length > 1 ? 'are' : 'is'} not installed`;
  if (wanted.value === 'file') {
    return { registry: 'file', reason: `the embedded file registry was requested (${wanted.source})` };
  }
  if (wanted.value === 'etcd') {
    if (!installed) {
      throw new RegistryChoiceError(
        `etcd was requested (${wanted.source}) but ${missing} (Debian: apt-get install etcd-server etcd-client)`,
      );
    }
    return { registry: 'etcd', reason: `etcd was requested (${wanted.source})` };
  }
  return installed
    ? {
        registry: 'etcd',
        reason:
          'the etcd and etcdctl binaries are installed ' +
          `(set ${REGISTRY_ENV}=file to use the embedded file registry instead)`,
      }
    : {
        registry: 'file',
        reason: `${missing}, so the agents share the embedded file registry (--kv-file) instead`,
      };
}
