// Test-side references for TCP GRO planning (src/encap/tcp-coalesce.ts), written independently
// and for clarity, not speed: a packet builder, a parser into plain objects, the join rules one
// by one, a greedy reference planner, and a reference segmenter that cuts a GSO_TCPV4
// super-packet the way the kernel's TCP segmentation does.

export const TCP_FIN = 0x01,
  TCP_SYN = 0x02,
  TCP_RST = 0x04,
  TCP_PSH = 0x08;
export const TCP_ACK = 0x10,
  TCP_URG = 0x20,
  TCP_ECE = 0x40,
  TCP_CWR = 0x80;

/** One's-complement 16-bit sum of b[off, off+len) added to initial, folded, NOT inverted. */
export function onesSum(b: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < len; i += 2) sum += b[off + i] * 256 + b[off + i + 1];
  if (len % 2 === 1) sum += b[off + len - 1] * 256;
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/** The 12-byte TCP pseudo-header as bytes: src, dst, zero, protocol 6, TCP length. */
export function pseudoHeader(src: number, dst: number, tcpLength: number): Uint8Array {
  const p = new Uint8Array(12);
  const v = new DataView(p.buffer);
  v.setUint32(0, src);
  v.setUint32(4, dst);
  p[9] = 6;
  v.setUint16(10, tcpLength);
  return p;
}

export interface TcpPacketSpec {
  src: number;
  dst: number;
  tos?: number;
  ttl?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  reservedBit?: boolean;
  fragOffset?: number;
  /** IP options, a multiple of 4 bytes. */
  ipOptions?: Uint8Array;
  /** Protocol number (6 unless testing others: then the bytes after the IP header are the payload). */
  protocol?: number;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  urgent?: number;
  /** Low nibble of TCP byte 12 (reserved bits, AE). */
  tcpReserved?: number;
  /** TCP options, a multiple of 4 bytes. */
  tcpOptions?: Uint8Array;
  payload: Uint8Array;
  /** Store a wrong IP header checksum. */
  badIpChecksum?: boolean;
}

/** An IPv4 packet with valid IP and TCP checksums (unless asked for a bad IP one). */
export function buildTcpPacket(s: TcpPacketSpec): Uint8Array {
  const ipOpts = s.ipOptions ?? new Uint8Array(0);
  const tcpOpts = s.tcpOptions ?? new Uint8Array(0);
  const protocol = s.protocol ?? 6;
  const ihl = 20 + ipOpts.length;
  const thl = protocol === 6 ? 20 + tcpOpts.length : 0;
  const total = ihl + thl + s.payload.length;
  const p = new Uint8Array(total);
  const v = new DataView(p.buffer);
  p[0] = 0x40 | (ihl / 4);
  p[1] = s.tos ?? 0;
  v.setUint16(2, total);
  v.setUint16(4, s.id ?? 0);
  v.setUint16(6, (s.reservedBit ? 0x8000 : 0) | (s.df ? 0x4000 : 0) | (s.mf ? 0x2000 : 0) | (s.fragOffset ?? 0));
  p[8] = s.ttl ?? 64;
  p[9] = protocol;
  v.setUint32(12, s.src);
  v.setUint32(16, s.dst);
  p.set(ipOpts, 20);
  if (protocol === 6) {
    const t = ihl;
    v.setUint16(t, s.sport);
    v.setUint16(t + 2, s.dport);
    v.setUint32(t + 4, s.seq >>> 0);
    v.setUint32(t + 8, s.ack >>> 0);
    p[t + 12] = ((thl / 4) << 4) | (s.tcpReserved ?? 0);
    p[t + 13] = s.flags;
    v.setUint16(t + 14, s.window);
    v.setUint16(t + 18, s.urgent ?? 0);
    p.set(tcpOpts, t + 20);
  }
  p.set(s.payload, ihl + thl);
  if (protocol === 6) {
    const tcpLen = total - ihl;
    const check = ~onesSum(p, ihl, tcpLen, onesSum(pseudoHeader(s.src, s.dst, tcpLen), 0, 12)) & 0xffff;
    v.setUint16(ihl + 16, check);
  }
  const ipCheck = ~onesSum(p, 0, ihl) & 0xffff;
  v.setUint16(10, s.badIpChecksum ? ipCheck ^ 0x0101 : ipCheck);
  return p;
}

export interface ParsedPacket {
  len: number;
  ihl: number;
  tos: number;
  totalLength: number;
  id: number;
  reservedBit: boolean;
  df: boolean;
  mf: boolean;
  fragOffset: number;
  ttl: number;
  protocol: number;
  ipChecksumOk: boolean;
  src: number;
  dst: number;
  /** The TCP checksum verifies (false for a non-TCP or truncated packet). */
  tcpChecksumOk: boolean;
  /** TCP fields, when protocol 6 and the header fits. */
  tcp: null | {
    sport: number;
    dport: number;
    seq: number;
    ack: number;
    headerLength: number;
    byte12: number;
    flags: number;
    window: number;
    check: number;
    urgent: number;
    options: number[];
    payloadLength: number;
  };
}

export function parsePacket(p: Uint8Array, len = p.length): ParsedPacket {
  const v = new DataView(p.buffer, p.byteOffset, len);
  const ihl = (p[0] & 15) * 4;
  const fragWord = v.getUint16(6);
  const parsed: ParsedPacket = {
    len,
    ihl,
    tos: p[1],
    totalLength: v.getUint16(2),
    id: v.getUint16(4),
    reservedBit: (fragWord & 0x8000) !== 0,
    df: (fragWord & 0x4000) !== 0,
    mf: (fragWord & 0x2000) !== 0,
    fragOffset: fragWord & 0x1fff,
    ttl: p[8],
    protocol: p[9],
    ipChecksumOk: onesSum(p, 0, ihl) === 0xffff,
    src: v.getUint32(12),
    dst: v.getUint32(16),
    tcp: null,
    tcpChecksumOk: false,
  };
  if (parsed.protocol === 6 && len >= ihl + 20) {
    const headerLength = (p[ihl + 12] >> 4) * 4;
    if (headerLength >= 20 && ihl + headerLength <= len) {
      parsed.tcp = {
        sport: v.getUint16(ihl),
        dport: v.getUint16(ihl + 2),
        seq: v.getUint32(ihl + 4),
        ack: v.getUint32(ihl + 8),
        headerLength,
        byte12: p[ihl + 12],
        flags: p[ihl + 13],
        window: v.getUint16(ihl + 14),
        check: v.getUint16(ihl + 16),
        urgent: v.getUint16(ihl + 18),
        options: Array.from(p.subarray(ihl + 20, ihl + headerLength)),
        payloadLength: len - ihl - headerLength,
      };
      const tcpLen = len - ihl;
      parsed.tcpChecksumOk =
        onesSum(p, ihl, tcpLen, onesSum(pseudoHeader(parsed.src, parsed.dst, tcpLen), 0, 12)) === 0xffff;
    }
  }
  return parsed;
}

/** Full IP header checksum check of a packet. */
export function ipChecksumValid(p: Uint8Array): boolean {
  return onesSum(p, 0, (p[0] & 15) * 4) === 0xffff;
}

/** Full TCP checksum check over pseudo-header, header and payload (computed from scratch). */
export function tcpChecksumValid(p: Uint8Array): boolean {
  const pp = parsePacket(p);
  const tcpLen = p.length - pp.ihl;
  return onesSum(p, pp.ihl, tcpLen, onesSum(pseudoHeader(pp.src, pp.dst, tcpLen), 0, 12)) === 0xffff;
}

function flagsAckMaybePsh(flags: number): boolean {
  return flags === TCP_ACK || flags === (TCP_ACK | TCP_PSH);
}

/** IPv4 header rules of any group member: no options, not a fragment, a valid header checksum. */
function ipv4Violations(p: ParsedPacket): string[] {
  const r: string[] = [];
  if (p.ihl !== 20) r.push('ip-options');
  if (p.mf || p.fragOffset !== 0) r.push('fragment');
  if (!p.ipChecksumOk) r.push('ip-checksum');
  return r;
}

/** IPv4 header fields a member must share with its leader L (lengths, id and checksum aside). */
function sameIpv4Violations(L: ParsedPacket, p: ParsedPacket): string[] {
  const r: string[] = [];
  if (p.src !== L.src || p.dst !== L.dst) r.push('addresses');
  if (p.tos !== L.tos) r.push('tos');
  if (p.ttl !== L.ttl) r.push('ttl');
  if (p.df !== L.df || p.reservedBit !== L.reservedBit) r.push('ip-flags');
  return r;
}

/** The reasons a packet could not start a group (empty: it can lead). */
export function leadViolations(p: ParsedPacket): string[] {
  const r: string[] = [];
  if (p.tcp === null) return ['not-tcp'];
  r.push(...ipv4Violations(p));
  if (!p.tcpChecksumOk) r.push('tcp-checksum');
  if (!flagsAckMaybePsh(p.tcp.flags)) r.push('flags');
  if (p.tcp.payloadLength <= 0) r.push('empty-payload');
  return r;
}

/**
 * The join rules, one by one: every rule that forbids packet p from joining the group (its
 * packets so far, leader first). Empty: p may join. The planner's contract plus its stricter
 * extras (IP checksum, IP flags byte, TCP byte 12, urgent pointer, IP id without DF).
 */
export function joinViolations(group: readonly ParsedPacket[], p: ParsedPacket, maxBytes: number): string[] {
  const L = group[0],
    P = group[group.length - 1];
  const lt = L.tcp!,
    pt = P.tcp!;
  if (p.tcp === null) return ['not-tcp'];
  const t = p.tcp;
  const r: string[] = [];
  r.push(...ipv4Violations(p));
  if (!p.tcpChecksumOk) r.push('tcp-checksum');
  r.push(...sameIpv4Violations(L, p));
  if (!p.df && p.id !== ((L.id + group.length) & 0xffff)) r.push('ip-id');
  if (t.sport !== lt.sport || t.dport !== lt.dport) r.push('ports');
  if (t.ack !== lt.ack) r.push('ack');
  if (t.window !== lt.window) r.push('window');
  if (t.byte12 !== lt.byte12) r.push('doff');
  if (t.options.length !== lt.options.length || t.options.some((x, i) => x !== lt.options[i])) r.push('options');
  if (t.urgent !== lt.urgent) r.push('urgent-pointer');
  if (!flagsAckMaybePsh(t.flags)) r.push('flags');
  if ((pt.flags & TCP_PSH) !== 0) r.push('prev-psh');
  if (t.seq !== (pt.seq + pt.payloadLength) >>> 0) r.push('seq');
  if (t.payloadLength <= 0) r.push('empty-payload');
  if (t.payloadLength > lt.payloadLength) r.push('longer-than-leader');
  if (group.some((m) => m.tcp!.payloadLength !== lt.payloadLength)) r.push('after-short');
  const total = L.ihl + lt.headerLength + group.reduce((s, m) => s + m.tcp!.payloadLength, 0) + t.payloadLength;
  if (total > maxBytes) r.push('max-bytes');
  if (group.length >= 64) r.push('max-packets');
  return r;
}

/** One kind of group: why a packet could not lead one, and why it could not join one (empty: it can). */
export interface GroupRules<P> {
  lead(p: P): string[];
  join(group: readonly P[], p: P, maxBytes: number): string[];
}

export const TCP_GROUP_RULES: GroupRules<ParsedPacket> = { lead: leadViolations, join: joinViolations };

/**
 * The greedy plan, groupLens for packets in write order: a packet joins the open group if that
 * group's rules allow it; otherwise the group closes and the packet leads a new group under the
 * first of ruleSets that lets it lead (or stays single). onRefusal, when given, sees the reasons
 * of every refused join (for coverage counts).
 */
export function greedyPlan<P>(
  packets: readonly P[],
  ruleSets: readonly GroupRules<P>[],
  maxBytes: number,
  onRefusal?: (reasons: string[]) => void,
): number[] {
  const groupLens: number[] = packets.map(() => 1);
  let group: P[] = [];
  let rules = ruleSets[0];
  let leaderPos = -1;
  packets.forEach((p, i) => {
    if (group.length > 0) {
      const v = rules.join(group, p, maxBytes);
      if (v.length === 0) {
        group.push(p);
        groupLens[i] = 0;
        return;
      }
      onRefusal?.(v);
      if (group.length >= 2) groupLens[leaderPos] = group.length;
      group = [];
    }
    const leading = ruleSets.find((r) => r.lead(p).length === 0);
    if (leading !== undefined) {
      group = [p];
      rules = leading;
      leaderPos = i;
    }
  });
  if (group.length >= 2) groupLens[leaderPos] = group.length;
  return groupLens;
}

/** The greedy reference plan of TCP segments: groupLens for packets in write order. */
export function referencePlan(packets: readonly ParsedPacket[], maxBytes: number): number[] {
  return greedyPlan(packets, [TCP_GROUP_RULES], maxBytes);
}

/** A little-endian struct virtio_net_hdr (10 bytes). */
export interface VnetHdr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export function parseVnetHdr(b: Uint8Array, off: number): VnetHdr {
  const v = new DataView(b.buffer, b.byteOffset + off, 10);
  return {
    flags: b[off],
    gsoType: b[off + 1],
    hdrLen: v.getUint16(2, true),
    gsoSize: v.getUint16(4, true),
    csumStart: v.getUint16(6, true),
    csumOffset: v.getUint16(8, true),
  };
}

/**
 * The IP part of GSO segmentation, shared by the TCP and UDP reference segmenters: segment i gets
 * a copy of the hdrLen header bytes and gsoSize payload bytes (the last the rest), its IP total
 * length, IP id = the super-packet's id + i and a fresh IP checksum; then l4 patches its
 * transport header (v views the segment).
 */
function cutSuperPacket(
  sp: Uint8Array,
  hdrLen: number,
  ihl: number,
  gsoSize: number,
  l4: (seg: Uint8Array, v: DataView, i: number, isLast: boolean) => void,
): Uint8Array[] {
  const spv = new DataView(sp.buffer, sp.byteOffset, sp.length);
  const payloadLen = sp.length - hdrLen;
  const out: Uint8Array[] = [];
  for (let i = 0, at = 0; at < payloadLen; i++, at += gsoSize) {
    const n = Math.min(gsoSize, payloadLen - at);
    const seg = new Uint8Array(hdrLen + n);
    seg.set(sp.subarray(0, hdrLen), 0);
    seg.set(sp.subarray(hdrLen + at, hdrLen + at + n), hdrLen);
    const v = new DataView(seg.buffer);
    v.setUint16(2, seg.length);
    v.setUint16(4, (spv.getUint16(4) + i) & 0xffff);
    v.setUint16(10, 0);
    v.setUint16(10, ~onesSum(seg, 0, ihl) & 0xffff);
    l4(seg, v, i, at + n >= payloadLen);
    out.push(seg);
  }
  return out;
}

/** A partial (pseudo-header) checksum sum re-based from length oldLen to newLen, one's complement. */
function lengthAdjusted(partial: number, oldLen: number, newLen: number): number {
  return onesSum(new Uint8Array([(~oldLen >> 8) & 0xff, ~oldLen & 0xff, newLen >> 8, newLen & 0xff]), 0, 4, partial);
}

/**
 * Cuts a GSO_TCPV4 super-packet as the kernel's TCP segmentation would: hdr_len header bytes
 * copied per segment; segment i carries gso_size payload bytes (the last the rest), seq =
 * leader seq + i * gso_size, IP total length per segment, IP id = leader id + i, PSH (and FIN)
 * only on the last segment if the super-packet had it, CWR only on the first (tcp_gso_segment
 * clears it after the first; GRO never builds a super-packet with CWR, so the planner's tests
 * never see this), the IP checksum recomputed, and the TCP
 * checksum completed the CHECKSUM_PARTIAL way: the super-packet's pseudo-header sum in the field
 * is adjusted for the segment's length, then summed over the segment's header and payload.
 */
export function segmentSuperPacket(vnet: VnetHdr, sp: Uint8Array): Uint8Array[] {
  if (vnet.flags !== 1 || vnet.gsoType !== 1)
    throw new Error(`not a NEEDS_CSUM TCPV4 vnet header: ${JSON.stringify(vnet)}`);
  if (vnet.gsoSize <= 0) throw new Error('gso_size 0');
  const hdr = vnet.hdrLen;
  const ihl = vnet.csumStart;
  const spv = new DataView(sp.buffer, sp.byteOffset, sp.length);
  if (spv.getUint16(2) !== sp.length)
    throw new Error(`super-packet IP total length ${spv.getUint16(2)} != ${sp.length}`);
  const superTcpLen = sp.length - ihl;
  const partial = spv.getUint16(ihl + vnet.csumOffset);
  const lastFlags = sp[ihl + 13] & (TCP_PSH | TCP_FIN);
  return cutSuperPacket(sp, hdr, ihl, vnet.gsoSize, (seg, v, i, isLast) => {
    v.setUint32(ihl + 4, (spv.getUint32(ihl + 4) + i * vnet.gsoSize) >>> 0);
    seg[ihl + 13] = (seg[ihl + 13] & ~(TCP_PSH | TCP_FIN)) | (isLast ? lastFlags : 0);
    if (i > 0) seg[ihl + 13] &= ~TCP_CWR;
    // Length adjustment of the pseudo-header sum: - superTcpLen + segTcpLen, one's complement.
    v.setUint16(ihl + vnet.csumOffset, lengthAdjusted(partial, superTcpLen, seg.length - ihl));
    v.setUint16(ihl + vnet.csumOffset, ~onesSum(seg, ihl, seg.length - ihl) & 0xffff);
  });
}

/** Full UDP checksum check over pseudo-header (protocol 17), header and payload; a 0 field means "none". */
export function udpChecksumValid(p: Uint8Array): boolean {
  const ihl = (p[0] & 15) * 4;
  const v = new DataView(p.buffer, p.byteOffset, p.length);
  if (v.getUint16(ihl + 6) === 0) return false;
  const udpLen = p.length - ihl;
  const pseudo = pseudoHeader(v.getUint32(12), v.getUint32(16), udpLen);
  pseudo[9] = 17;
  return onesSum(p, ihl, udpLen, onesSum(pseudo, 0, 12)) === 0xffff;
}

/**
 * An IPv4 packet carrying UDP (header + payload) with a valid IP checksum and the UDP checksum
 * field as given (e.g. a pseudo-header partial sum, or 0).
 */
export function buildUdpPacket(s: {
  src: number;
  dst: number;
  sport: number;
  dport: number;
  payload: Uint8Array;
  ipOptions?: Uint8Array;
  id?: number;
  ttl?: number;
  check: number;
}): Uint8Array {
  const udp = new Uint8Array(8 + s.payload.length);
  const uv = new DataView(udp.buffer);
  uv.setUint16(0, s.sport);
  uv.setUint16(2, s.dport);
  uv.setUint16(4, udp.length);
  uv.setUint16(6, s.check);
  udp.set(s.payload, 8);
  return buildTcpPacket({
    src: s.src,
    dst: s.dst,
    protocol: 17,
    ipOptions: s.ipOptions,
    id: s.id,
    ttl: s.ttl,
    sport: 0,
    dport: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    payload: udp,
  });
}

/** The pseudo-header sum (src, dst, protocol, length) folded, NOT inverted: a CHECKSUM_PARTIAL field. */
export function partialChecksum(src: number, dst: number, protocol: number, length: number): number {
  const p = pseudoHeader(src, dst, length);
  p[9] = protocol;
  return onesSum(p, 0, 12);
}

// ---- UDP GRO planning references (UDP GSO, VIRTIO_NET_HDR_GSO_UDP_L4) ---------------------------

/** UDP fields of a parsed packet (header at ihl). */
export interface UdpInfo {
  sport: number;
  dport: number;
  /** The UDP length field. */
  length: number;
  check: number;
  /** len - ihl - 8. */
  payloadLength: number;
  /** The checksum field is non-zero and the checksum over pseudo-header, header and payload verifies. */
  checksumOk: boolean;
}

export type ParsedUdpPacket = ParsedPacket & { udp: UdpInfo | null };

/** parsePacket plus the UDP fields, when protocol 17 and the 8-byte header fits. */
export function parseUdpPacket(p: Uint8Array): ParsedUdpPacket {
  const parsed = parsePacket(p);
  let udp: UdpInfo | null = null;
  if (parsed.protocol === 17 && p.length >= parsed.ihl + 8) {
    const v = new DataView(p.buffer, p.byteOffset, p.length);
    const u = parsed.ihl;
    udp = {
      sport: v.getUint16(u),
      dport: v.getUint16(u + 2),
      length: v.getUint16(u + 4),
      check: v.getUint16(u + 6),
      payloadLength: p.length - u - 8,
      checksumOk: udpChecksumValid(p),
    };
  }
  return { ...parsed, udp };
}

/** The reasons a packet could not start a UDP group (empty: it can lead). */
export function udpLeadViolations(p: ParsedUdpPacket): string[] {
  if (p.udp === null) return ['not-udp'];
  const r: string[] = [];
  r.push(...ipv4Violations(p));
  if (p.udp.length !== p.len - p.ihl) r.push('udp-length');
  if (p.udp.check === 0) r.push('udp-checksum-none');
  else if (!p.udp.checksumOk) r.push('udp-checksum');
  if (p.udp.payloadLength <= 0) r.push('empty-payload');
  return r;
}

/**
 * The UDP join rules, one by one: every rule that forbids datagram p from joining the UDP group
 * (its datagrams so far, leader first). Empty: p may join. What UDP GSO segmentation of the
 * super-packet must give back: the leader's header fields but for lengths, id and checksums,
 * ids numbered from the leader's (DF or not), equal payload sizes but a shorter last one.
 */
export function udpJoinViolations(group: readonly ParsedUdpPacket[], p: ParsedUdpPacket, maxBytes: number): string[] {
  const L = group[0],
    lu = L.udp!;
  if (p.udp === null) return ['not-udp'];
  const u = p.udp;
  const r: string[] = [];
  r.push(...ipv4Violations(p));
  if (u.length !== p.len - p.ihl) r.push('udp-length');
  if (u.check === 0) r.push('udp-checksum-none');
  else if (!u.checksumOk) r.push('udp-checksum');
  r.push(...sameIpv4Violations(L, p));
  if (p.id !== ((L.id + group.length) & 0xffff)) r.push('ip-id');
  if (u.sport !== lu.sport || u.dport !== lu.dport) r.push('ports');
  if (u.payloadLength <= 0) r.push('empty-payload');
  if (u.payloadLength > lu.payloadLength) r.push('longer-than-leader');
  if (group.some((m) => m.udp!.payloadLength !== lu.payloadLength)) r.push('after-short');
  const total = L.ihl + 8 + group.reduce((s, m) => s + m.udp!.payloadLength, 0) + u.payloadLength;
  if (total > maxBytes) r.push('max-bytes');
  if (group.length >= 64) r.push('max-packets');
  return r;
}

export const UDP_GROUP_RULES: GroupRules<ParsedUdpPacket> = { lead: udpLeadViolations, join: udpJoinViolations };

/**
 * The greedy reference plan for a batch mixing TCP and UDP: a group is a run of TCP segments
 * (TCP_GROUP_RULES, tried first) or of UDP datagrams (UDP_GROUP_RULES).
 */
export function referenceMixedPlan(packets: readonly ParsedUdpPacket[], maxBytes: number): number[] {
  return greedyPlan<ParsedUdpPacket>(packets, [TCP_GROUP_RULES, UDP_GROUP_RULES], maxBytes);
}

/**
 * Cuts a GSO_UDP_L4 (NEEDS_CSUM) IPv4 super-packet as Linux does (inet_gso_segment +
 * __udp_gso_segment, then checksum completion): every segment gets a copy of the hdr_len header
 * bytes and gso_size payload bytes (the last the rest), its IP total length, IP id = the
 * super-packet's id + i, a fresh IP checksum, its UDP length, and the UDP checksum completed from
 * the partial (pseudo-header) sum adjusted for its length, a computed 0 sent as 0xffff. Throws on
 * a header the kernel would refuse or mis-segment (wrong fields, one segment or fewer).
 */
export function segmentUdpSuperPacket(vnet: VnetHdr, sp: Uint8Array): Uint8Array[] {
  if (vnet.flags !== 1 || vnet.gsoType !== 5)
    throw new Error(`not a NEEDS_CSUM UDP_L4 vnet header: ${JSON.stringify(vnet)}`);
  const ihl = (sp[0] & 15) * 4;
  if (sp[9] !== 17) throw new Error('not UDP');
  if (vnet.csumStart !== ihl || vnet.csumOffset !== 6 || vnet.hdrLen !== ihl + 8)
    throw new Error(`bad offsets: ${JSON.stringify(vnet)}`);
  if (vnet.gsoSize <= 0) throw new Error('gso_size 0');
  const spv = new DataView(sp.buffer, sp.byteOffset, sp.length);
  if (spv.getUint16(2) !== sp.length)
    throw new Error(`super-packet IP total length ${spv.getUint16(2)} != ${sp.length}`);
  const superUdpLen = sp.length - ihl;
  if (spv.getUint16(ihl + 4) !== superUdpLen)
    throw new Error(`super-packet UDP length ${spv.getUint16(ihl + 4)} != ${superUdpLen}`);
  if (superUdpLen <= 8 + vnet.gsoSize) throw new Error('one segment or fewer: the kernel refuses (EINVAL)');
  const partial = spv.getUint16(ihl + 6);
  return cutSuperPacket(sp, vnet.hdrLen, ihl, vnet.gsoSize, (seg, v) => {
    const segUdpLen = seg.length - ihl;
    v.setUint16(ihl + 4, segUdpLen);
    // csum16_add(csum16_sub(check, old length), new length), then completed over the segment.
    v.setUint16(ihl + 6, lengthAdjusted(partial, superUdpLen, segUdpLen));
    const full = ~onesSum(seg, ihl, segUdpLen) & 0xffff;
    v.setUint16(ihl + 6, full === 0 ? 0xffff : full);
  });
}

export interface UdpPacketSpec {
  src: number;
  dst: number;
  sport: number;
  dport: number;
  payload: Uint8Array;
  tos?: number;
  ttl?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  reservedBit?: boolean;
  fragOffset?: number;
  ipOptions?: Uint8Array;
  /** Store a wrong IP header checksum. */
  badIpChecksum?: boolean;
  /** Store UDP checksum 0 ("none") instead of the computed one. */
  noChecksum?: boolean;
  /** Added to the true UDP length in the length field (0 unless testing inconsistent lengths). */
  lengthDelta?: number;
}

/**
 * An IPv4 UDP datagram with valid IP and UDP checksums (a computed 0 stored as 0xffff), unless
 * asked otherwise. The UDP checksum covers the whole IP payload whatever the length field says.
 */
export function buildUdpDatagram(s: UdpPacketSpec): Uint8Array {
  const udp = new Uint8Array(8 + s.payload.length);
  const uv = new DataView(udp.buffer);
  uv.setUint16(0, s.sport);
  uv.setUint16(2, s.dport);
  uv.setUint16(4, (udp.length + (s.lengthDelta ?? 0)) & 0xffff);
  udp.set(s.payload, 8);
  const p = buildTcpPacket({
    src: s.src,
    dst: s.dst,
    protocol: 17,
    ipOptions: s.ipOptions,
    id: s.id,
    ttl: s.ttl,
    tos: s.tos,
    df: s.df,
    mf: s.mf,
    reservedBit: s.reservedBit,
    fragOffset: s.fragOffset,
    badIpChecksum: s.badIpChecksum,
    sport: 0,
    dport: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    payload: udp,
  });
  if (!s.noChecksum) {
    const ihl = (p[0] & 15) * 4;
    const c = ~onesSum(p, ihl, udp.length, partialChecksum(s.src, s.dst, 17, udp.length)) & 0xffff;
    new DataView(p.buffer).setUint16(ihl + 6, c === 0 ? 0xffff : c);
  }
  return p;
}
