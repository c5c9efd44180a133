// flannel's network config (`<prefix>/config`): parsing and validation with flannel's defaults, checks
// and error wording (pkg/subnet/config.go ParseConfig + CheckNetworkConfig, v0.28.9), restricted to
// IPv4, and the Backend object of the three backends flannel-ts runs: udp, vxlan (pkg/backend/vxlan
// parseVXLANConfig) and host-gw. See docs/flannel-compat.md, "Network config", and docs/backends.md.
//
// Like Go's encoding/json: key names match case-insensitively, unknown keys are ignored, the last of
// duplicate keys wins, and `null` leaves a plain field (number, bool) at its default.

import { formatIPv4, maskOf, parseCidr, parseIPv4 } from '../routing-table/ipv4.js';
import { FlannelTsError } from '../errors.js';

export const DEFAULT_UDP_PORT = 8285;
/** flannel's vxlan defaultVNI. */
export const DEFAULT_VXLAN_VNI = 1;
/** The backend types flannel-ts runs (flannel's registry names). */
export const BACKEND_TYPES = ['udp', 'vxlan', 'host-gw'] as const;
export type BackendType = (typeof BACKEND_TYPES)[number];

export interface UdpBackendConfig {
  readonly type: 'udp';
  readonly port: number;
}

/** flannel's VXLANConfig: the fields, defaults and meanings of pkg/backend/vxlan. */
export interface VxlanBackendConfig {
  readonly type: 'vxlan';
  /** `VNI`, default 1; the device is flannel.<VNI>. */
  readonly vni: number;
  /** `Port`, default 0: the kernel's default (8472, Linux's historical VXLAN port). */
  readonly port: number;
  /** `MTU`: the external MTU the device's MTU is derived from (minus 50); null = the interface's. */
  readonly mtu: number | null;
  readonly gbp: boolean;
  readonly learning: boolean;
  readonly directRouting: boolean;
}

export interface HostGwBackendConfig {
  readonly type: 'host-gw';
}

export type BackendConfig = UdpBackendConfig | VxlanBackendConfig | HostGwBackendConfig;

export interface Ipv4Net {
  /** Network address, uint32 host order, host bits clear. */
  readonly prefix: number;
  readonly prefixLen: number;
}

export interface NetworkConfig {
  /** `Network`, host bits cleared ("10.1.5.0/16" -> 10.1.0.0/16). */
  readonly network: Ipv4Net;
  /** `SubnetLen`, defaulted as flannel does. */
  readonly subnetLen: number;
  /** `SubnetMin` (uint32), defaulted to Network + one subnet. */
  readonly subnetMin: number;
  /** `SubnetMax` (uint32), defaulted to the last subnet of Network. */
  readonly subnetMax: number;
  readonly backend: BackendConfig;
  /**
   * `EnableIPv6` as written. flannel-ts is IPv4 only: the IPv6 fields are not validated and no IPv6
   * subnet is leased; the caller may warn when this is true.
   */
  readonly enableIPv6: boolean;
}

/** An invalid network config; `field` names the offending key when there is one. */
export class NetworkConfigError extends FlannelTsError {
  override name = 'NetworkConfigError';
  override readonly code = 'FLANNEL_TS_ERR_INVALID_NETWORK_CONFIG';
  readonly field: string | null;
  constructor(message: string, field: string | null) {
    super(message);
    this.field = field;
  }
}

type JsonObject = Record<string, unknown>;

/**
 * Looks a field up the way Go's encoding/json fills a struct field: every key equal to `name` ignoring
 * case sets it, in document order, so the last one wins. Returns undefined when no key matches.
 */
export function lookupFoldedKey(obj: JsonObject, name: string): unknown {
  const folded = name.toLowerCase();
  let found: unknown = undefined;
  for (const [k, v] of Object.entries(obj)) {
    if (k.toLowerCase() === folded) found = v;
  }
  return found;
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses and validates the JSON text of `<prefix>/config`. Throws NetworkConfigError. */
export function parseNetworkConfig(text: string): NetworkConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new NetworkConfigError(`invalid network config JSON: ${(err as Error).message}`, null);
  }
  // Go decodes a top-level null into an untouched struct; anything else that is not an object fails.
  if (doc === null) doc = {};
  if (!isObject(doc)) {
    throw new NetworkConfigError('invalid network config: expected a JSON object', null);
  }

  const enableIPv4 = readBool(doc, 'EnableIPv4', true);
  const enableIPv6 = readBool(doc, 'EnableIPv6', false);
  const networkRaw = lookupFoldedKey(doc, 'Network');
  const network = networkRaw === undefined ? null : readNetwork(networkRaw);
  const subnetLenGiven = readUint(doc, 'SubnetLen');
  const subnetMinGiven = readIp(doc, 'SubnetMin');
  const subnetMaxGiven = readIp(doc, 'SubnetMax');
  const backend = readBackend(lookupFoldedKey(doc, 'Backend'));

  if (!enableIPv4) {
    throw new NetworkConfigError(
      'EnableIPv4=false is not supported by flannel-ts (it carries IPv4 only)',
      'EnableIPv4',
    );
  }
  // flannel's Network.Empty(): absent, or 0.0.0.0/0 (any /0 masks to it).
  if (network === null || (network.prefix === 0 && network.prefixLen === 0)) {
    throw new NetworkConfigError('please define a correct Network parameter in the flannel config', 'Network');
  }

  let subnetLen: number;
  if (subnetLenGiven > 0) {
    if (subnetLenGiven > 30) {
      throw new NetworkConfigError('SubnetLen must be less than /31', 'SubnetLen');
    }
    if (subnetLenGiven < network.prefixLen + 2) {
      throw new NetworkConfigError('network must be able to accommodate at least four subnets', 'SubnetLen');
    }
    subnetLen = subnetLenGiven;
  } else if (network.prefixLen > 28) {
    throw new NetworkConfigError('network is too small. Minimum useful network prefix is /28', 'Network');
  } else {
    subnetLen = network.prefixLen <= 22 ? 24 : network.prefixLen + 2;
  }

  const subnetSize = 2 ** (32 - subnetLen);
  const networkSize = 2 ** (32 - network.prefixLen);
  const inNetwork = (addr: number): boolean => (addr & maskOf(network.prefixLen)) >>> 0 === network.prefix;

  // 0.0.0.0 means "not set", as in flannel (it compares with ip.IP4(0)).
  let subnetMin: number;
  if (subnetMinGiven === 0) {
    subnetMin = (network.prefix + subnetSize) >>> 0;
  } else if (!inNetwork(subnetMinGiven)) {
    throw new NetworkConfigError('SubnetMin is not in the range of the Network', 'SubnetMin');
  } else {
    subnetMin = subnetMinGiven;
  }

  let subnetMax: number;
  if (subnetMaxGiven === 0) {
    subnetMax = (network.prefix + networkSize - subnetSize) >>> 0;
  } else if (!inNetwork(subnetMaxGiven)) {
    throw new NetworkConfigError('SubnetMax is not in the range of the Network', 'SubnetMax');
  } else {
    subnetMax = subnetMaxGiven;
  }

  const subnetMask = maskOf(subnetLen);
  if ((subnetMin & subnetMask) >>> 0 !== subnetMin) {
    throw new NetworkConfigError(`SubnetMin is not on a SubnetLen boundary: ${formatIPv4(subnetMin)}`, 'SubnetMin');
  }
  if ((subnetMax & subnetMask) >>> 0 !== subnetMax) {
    throw new NetworkConfigError(`SubnetMax is not on a SubnetLen boundary: ${formatIPv4(subnetMax)}`, 'SubnetMax');
  }

  return { network, subnetLen, subnetMin, subnetMax, backend, enableIPv6 };
}

function readBool(doc: JsonObject, field: string, dflt: boolean): boolean {
  const v = lookupFoldedKey(doc, field);
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') {
    throw new NetworkConfigError(`${field} must be true or false, got ${JSON.stringify(v)}`, field);
  }
  return v;
}

/** A Go `uint` field: absent or null -> 0. */
function readUint(doc: JsonObject, field: string): number {
  const v = lookupFoldedKey(doc, field);
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw new NetworkConfigError(`${field} must be a non-negative integer, got ${JSON.stringify(v)}`, field);
  }
  return v;
}

/** A flannel ip.IP4 field (a dotted-quad string); absent -> 0. Its UnmarshalJSON rejects null. */
function readIp(doc: JsonObject, field: string): number {
  const v = lookupFoldedKey(doc, field);
  if (v === undefined) return 0;
  if (typeof v !== 'string') {
    throw new NetworkConfigError(`${field}: Invalid IP address format: ${JSON.stringify(v)}`, field);
  }
  try {
    return parseIPv4(v);
  } catch {
    if (v.includes(':')) {
      throw new NetworkConfigError(`${field}: ${v} is not an IPv4 address`, field);
    }
    throw new NetworkConfigError(`${field}: Invalid IP address format: ${JSON.stringify(v)}`, field);
  }
}

function readNetwork(v: unknown): Ipv4Net {
  if (typeof v !== 'string') {
    throw new NetworkConfigError(`Network: invalid CIDR address: ${JSON.stringify(v)}`, 'Network');
  }
  if (v.includes(':')) {
    throw new NetworkConfigError(`Network: invalid IPv4 CIDR format: ${v}`, 'Network');
  }
  try {
    return parseCidr(v);
  } catch {
    throw new NetworkConfigError(`Network: invalid CIDR address: ${v}`, 'Network');
  }
}

function readBackend(v: unknown): BackendConfig {
  // flannel's parseBackendType: no Backend at all means udp.
  if (v === undefined) return { type: 'udp', port: DEFAULT_UDP_PORT };
  if (v !== null && !isObject(v)) {
    throw new NetworkConfigError(
      `error decoding Backend property of config: Backend must be a JSON object, got ${JSON.stringify(v)}`,
      'Backend',
    );
  }
  // Go hands `null` to the raw message and then decodes it into an empty struct: Type "".
  const be: JsonObject = v === null ? {} : v;
  const typeRaw = lookupFoldedKey(be, 'Type');
  if (typeRaw !== undefined && typeRaw !== null && typeof typeRaw !== 'string') {
    throw new NetworkConfigError(
      `error decoding Backend property of config: Backend.Type must be a string, got ${JSON.stringify(typeRaw)}`,
      'Backend.Type',
    );
  }
  // flannel's backend manager lower-cases the type before looking it up.
  const type = typeof typeRaw === 'string' ? typeRaw.toLowerCase() : '';
  if (type === '') {
    throw new NetworkConfigError(
      `unknown backend type: (Backend.Type is missing or empty; flannel-ts runs ${BACKEND_TYPES.join(', ')})`,
      'Backend.Type',
    );
  }
  switch (type) {
    case 'udp':
      return readUdpBackend(be);
    case 'vxlan':
      return readVxlanBackend(be);
    case 'host-gw':
      return { type: 'host-gw' };
    default:
      throw new NetworkConfigError(
        `backend type ${type} is not supported by flannel-ts (${BACKEND_TYPES.join(', ')})`,
        'Backend.Type',
      );
  }
}

function readUdpBackend(be: JsonObject): UdpBackendConfig {
  const portRaw = lookupFoldedKey(be, 'Port');
  let port = DEFAULT_UDP_PORT;
  if (portRaw !== undefined && portRaw !== null) {
    // Deliberate deviation: flannel never validates Port (0 binds a random port that peers cannot
    // know, out-of-range values fail at bind); flannel-ts rejects both up front.
    if (typeof portRaw !== 'number' || !Number.isInteger(portRaw) || portRaw < 1 || portRaw > 65535) {
      throw new NetworkConfigError(
        `error decoding UDP backend config: Backend.Port must be an integer 1..65535, got ${JSON.stringify(portRaw)}`,
        'Backend.Port',
      );
    }
    port = portRaw;
  }
  return { type: 'udp', port };
}

/**
 * flannel's parseVXLANConfig: VNI 1, Port 0 (the kernel's 8472), MTU = the interface's, the three
 * booleans false; `null` keeps a default (as Go's decoder). flannel leaves range errors to the kernel
 * at device creation; flannel-ts names the field up front.
 */
function readVxlanBackend(be: JsonObject): VxlanBackendConfig {
  const int = (field: string, min: number, max: number): number | null => {
    const raw = lookupFoldedKey(be, field);
    if (raw === undefined || raw === null) return null;
    if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < min || raw > max) {
      throw new NetworkConfigError(
        `error decoding VXLAN backend config: Backend.${field} must be an integer ${min}..${max}, ` +
          `got ${JSON.stringify(raw)}`,
        `Backend.${field}`,
      );
    }
    return raw;
  };
  const bool = (field: string): boolean => {
    const raw = lookupFoldedKey(be, field);
    if (raw === undefined || raw === null) return false;
    if (typeof raw !== 'boolean') {
      throw new NetworkConfigError(
        `error decoding VXLAN backend config: Backend.${field} must be true or false, got ${JSON.stringify(raw)}`,
        `Backend.${field}`,
      );
    }
    return raw;
  };
  return {
    type: 'vxlan',
    vni: int('VNI', 0, 0xffffff) ?? DEFAULT_VXLAN_VNI,
    port: int('Port', 0, 65535) ?? 0,
    // The device gets MTU - 50, and IPv4 needs at least 68.
    mtu: int('MTU', 118, 65535),
    gbp: bool('GBP'),
    learning: bool('Learning'),
    directRouting: bool('DirectRouting'),
  };
}

/** flannel's isSubnetConfigCompat: subnet inside [SubnetMin, SubnetMax] with length SubnetLen. */
export function subnetFitsConfig(config: NetworkConfig, subnet: Ipv4Net): boolean {
  return (
    subnet.prefix >= config.subnetMin && subnet.prefix <= config.subnetMax && subnet.prefixLen === config.subnetLen
  );
}
