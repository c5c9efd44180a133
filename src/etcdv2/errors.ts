// Errors of etcd's v2 keys API. Unreachable endpoints and a closed client reuse the v3 client's
// EtcdUnavailableError and EtcdClosedError (src/etcd/errors.ts): they say nothing API-specific.

/** etcd v2 error codes flannel-ts acts on (etcd's v2error package). */
export const V2_KEY_NOT_FOUND = 100;
export const V2_NOT_FILE = 102;
export const V2_NODE_EXIST = 105;
export const V2_RAFT_INTERNAL = 300;
export const V2_LEADER_ELECT = 301;
export const V2_EVENT_INDEX_CLEARED = 401;

/** etcd answered a v2 request with an error: its JSON error object, or a bare HTTP error. */
export class EtcdV2ResponseError extends Error {
  readonly code = 'FLANNEL_TS_ERR_ETCD_V2_RESPONSE';

  constructor(
    readonly endpoint: string,
    readonly path: string,
    readonly httpStatus: number,
    /** etcd's errorCode (100 "Key not found", 105 "Key already exists", ...), or null for a bare HTTP error. */
    readonly errorCode: number | null,
    /** etcd's message and cause, e.g. "Key not found (/coreos.com)". */
    readonly etcdMessage: string,
    /** The etcd index the error carries (X-Etcd-Index), 0 when absent. */
    readonly index: number,
  ) {
    super(
      errorCode === null
        ? `etcd v2 ${path} at ${endpoint}: HTTP ${httpStatus}: ${etcdMessage}`
        : `etcd v2 ${path} at ${endpoint}: ${etcdMessage} (error ${errorCode}, HTTP ${httpStatus})`,
    );
    this.name = 'EtcdV2ResponseError';
  }
}

export function isV2Error(err: unknown, errorCode: number): err is EtcdV2ResponseError {
  return err instanceof EtcdV2ResponseError && err.errorCode === errorCode;
}
