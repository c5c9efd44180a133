// Errors raised by the etcd client. Every message names the etcd endpoint(s) involved so that an
// operator can tell a misconfigured flag from a sick cluster.

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
export const GRPC_UNAUTHENTICATED = 16;

export function grpcCodeName(code: number): string {
  return GRPC_CODE_NAMES[code] ?? `code ${code}`;
}

/** etcd answered, with an error (a gRPC status carried by the JSON gateway, or a bare HTTP error). */
export class EtcdResponseError extends Error {
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
    this.name = 'EtcdResponseError';
  }
}

/** No endpoint could be reached (or every one failed before the request was processed). */
export class EtcdUnavailableError extends Error {
  constructor(
    readonly path: string,
    /** One entry per endpoint tried: "http://host:port: reason". */
    readonly attempts: readonly string[],
  ) {
    super(`etcd ${path}: no etcd endpoint available; tried ${attempts.join('; ')}`);
    this.name = 'EtcdUnavailableError';
  }
}

/** A call made after close(). */
export class EtcdClosedError extends Error {
  constructor() {
    super('etcd client is closed');
    this.name = 'EtcdClosedError';
  }
}
