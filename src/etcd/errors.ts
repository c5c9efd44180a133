// Errors raised by the etcd client. Every message names the etcd endpoint(s) involved so that an
// operator can tell a misconfigured flag from a sick cluster.
import { FlannelTsError } from '../errors.js';

const GRPC_CODE_NAMES: readonly string[] = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
];

export const GRPC_UNAVAILABLE = 14;

export function grpcCodeName(code: number): string {
  return GRPC_CODE_NAMES[code] ?? `code ${code}`;
}

/** etcd answered, with an error (a gRPC status carried by the JSON gateway, or a bare HTTP error). */
export class EtcdResponseError extends FlannelTsError {
  override name = 'EtcdResponseError';
  override readonly code = 'FLANNEL_TS_ERR_ETCD_RESPONSE';
  constructor(
    readonly endpoint: string,
    readonly path: string,
    /** The gRPC status code, or null when the reply was not a gateway error object. */
    readonly grpcCode: number | null,
    readonly httpStatus: number,
    /** etcd's own message, e.g. "etcdserver: invalid auth token". */
    readonly etcdMessage: string,
  ) {
    super(
      grpcCode === null
        ? `etcd ${path} at ${endpoint}: HTTP ${httpStatus}: ${etcdMessage}`
        : `etcd ${path} at ${endpoint}: ${etcdMessage} (${grpcCodeName(grpcCode)}, HTTP ${httpStatus})`,
    );
  }
}

/** No endpoint could be reached (or every one failed before the request was processed). */
export class EtcdUnavailableError extends FlannelTsError {
  override name = 'EtcdUnavailableError';
  override readonly code = 'FLANNEL_TS_ERR_ETCD_UNAVAILABLE';
  constructor(
    readonly path: string,
    /** One entry per endpoint tried: "http://host:port: reason". */
    readonly attempts: readonly string[],
  ) {
    super(`etcd ${path}: no etcd endpoint available; tried ${attempts.join('; ')}`);
  }
}

/** A call made after close(). */
export class EtcdClosedError extends FlannelTsError {
  override name = 'EtcdClosedError';
  override readonly code = 'FLANNEL_TS_ERR_ETCD_CLOSED';
  constructor() {
    super('etcd client is closed');
  }
}

/** A request was sent, then the exchange broke off: etcd may or may not have applied it. */
export class EtcdOutcomeUnknownError extends FlannelTsError {
  override name = 'EtcdOutcomeUnknownError';
  override readonly code = 'FLANNEL_TS_ERR_ETCD_OUTCOME_UNKNOWN';
}

/** etcd's reply is not what its JSON gateway sends: not JSON, a stream out of frame, a field missing. */
export class EtcdProtocolError extends FlannelTsError {
  override name = 'EtcdProtocolError';
  override readonly code = 'FLANNEL_TS_ERR_ETCD_PROTOCOL';
}

/** A watch ended by etcd (an error message on the stream, or a cancel other than compaction). */
export class EtcdWatchError extends FlannelTsError {
  override name = 'EtcdWatchError';
  override readonly code = 'FLANNEL_TS_ERR_ETCD_WATCH';
}

/** Invalid client options: an endpoint that is not an http(s) URL, unreadable or mismatched TLS files, ... */
export class EtcdOptionsError extends FlannelTsError {
  override name = 'EtcdOptionsError';
  override readonly code = 'FLANNEL_TS_ERR_ETCD_OPTIONS';
}
