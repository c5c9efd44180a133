// The base of every error flannel-ts throws on purpose. As in undici, each class sets `name` (its class name) and a
// stable `code` (`FLANNEL_TS_ERR_<SOMETHING>`) that callers and tests compare instead of messages, which may be
// reworded. Every code is listed in docs/errors.md. The classes live beside the code that throws them; this module
// only holds the base and the errors of the datapath's set-up, which the agent, the link and the shim share.
//
// Bare `Error`s remain only for broken invariants (a bug, never an operator's input).

export class FlannelTsError extends Error {
  override name = 'FlannelTsError';
  readonly code: string = 'FLANNEL_TS_ERR';
}

/** A system call of the datapath's set-up failed (creating flannel0, binding the socket). */
export abstract class SetupSyscallError extends FlannelTsError {
  constructor(
    message: string,
    /** The errno (positive), e.g. 98 for EADDRINUSE. */
    readonly errno: number,
  ) {
    super(message);
  }
}

/** flannel0 could not be created (`/dev/net/tun` missing, no CAP_NET_ADMIN, ...). */
export class TunOpenError extends SetupSyscallError {
  override name = 'TunOpenError';
  override readonly code = 'FLANNEL_TS_ERR_TUN_OPEN';
}

/** The UDP socket could not be bound to the external address and port (in use, address not local, ...). */
export class UdpBindError extends SetupSyscallError {
  override name = 'UdpBindError';
  override readonly code = 'FLANNEL_TS_ERR_UDP_BIND';
}

/** The native shim (build/Release/flannel_shim.node) could not be loaded: not built, or built for another Node. */
export class NativeShimLoadError extends FlannelTsError {
  override name = 'NativeShimLoadError';
  override readonly code = 'FLANNEL_TS_ERR_NATIVE_SHIM_LOAD';
}

/** `ip` (iproute2) failed while the agent configured a link, an address or a route. */
export class LinkCommandError extends FlannelTsError {
  override name = 'LinkCommandError';
  override readonly code = 'FLANNEL_TS_ERR_LINK_COMMAND';
  constructor(
    message: string,
    /** The arguments given to `ip`. */
    readonly args: readonly string[],
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** No interface matches --iface, --iface-regex or --public-ip, or there is no default route to pick one from. */
export class ExternalInterfaceError extends FlannelTsError {
  override name = 'ExternalInterfaceError';
  override readonly code = 'FLANNEL_TS_ERR_NO_EXTERNAL_INTERFACE';
}

/** A call on the datapath after it was closed. */
export class DatapathClosedError extends FlannelTsError {
  override name = 'DatapathClosedError';
  override readonly code = 'FLANNEL_TS_ERR_DATAPATH_CLOSED';
}

/** A datapath worker thread (--workers 2) failed, or did not answer a command in time. */
export class DatapathWorkerError extends FlannelTsError {
  override name = 'DatapathWorkerError';
  override readonly code = 'FLANNEL_TS_ERR_DATAPATH_WORKER';
}
