/**
 * Classic pcap (libpcap's original file format, not pcapng): a reader for either byte order with
 * microsecond or nanosecond timestamps, a writer (little-endian, microseconds), and decoding of the
 * IPv4/UDP headers around a captured datagram.
 *
 * File layout: a 24-byte global header (magic, version 2.4, thiszone, sigfigs, snaplen, link type),
 * then records of a 16-byte header (ts_sec, ts_usec or ts_nsec, incl_len, orig_len) and incl_len
 * bytes of packet data.
 */

export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_RAW = 101;

const GLOBAL_HEADER_LEN = 24;
const RECORD_HEADER_LEN = 16;
const MAGIC_MICROS = 0xa1b2c3d4;
const MAGIC_NANOS = 0xa1b23c4d;
const DEFAULT_SNAPLEN = 262_144;

export interface PcapPacket {
  tsSec: number;
  /** Microseconds within the second (nanosecond files are rounded down). */
  tsUsec: number;
  /** Nanoseconds within the second: exact for nanosecond files, tsUsec * 1000 otherwise. */
  tsNsec: number;
  /** The captured bytes (a copy, not a view into the file). */
  data: Buffer;
  /** The packet's length on the wire; larger than data.length when the capture cut it (snaplen). */
  origLen: number;
}

export interface PcapFile {
  linkType: number;
  nanosecond: boolean;
  littleEndian: boolean;
  snaplen: number;
  packets: PcapPacket[];
}

export class PcapFormatError extends Error {
  override name = 'PcapFormatError';
}

/** Parses a classic pcap file. Throws PcapFormatError on a bad magic or a truncated header/record. */
export function readPcap(buf: Buffer): PcapFile {
  if (buf.length < GLOBAL_HEADER_LEN) {
    throw new PcapFormatError(
      `pcap truncated: ${buf.length} bytes, the global header alone needs ${GLOBAL_HEADER_LEN}`,
    );
  }
  const magicLE = buf.readUInt32LE(0);
  const magicBE = buf.readUInt32BE(0);
  let littleEndian: boolean;
  let nanosecond: boolean;
  if (magicLE === MAGIC_MICROS || magicLE === MAGIC_NANOS) {
    littleEndian = true;
    nanosecond = magicLE === MAGIC_NANOS;
  } else if (magicBE === MAGIC_MICROS || magicBE === MAGIC_NANOS) {
    littleEndian = false;
    nanosecond = magicBE === MAGIC_NANOS;
  } else {
    throw new PcapFormatError(`not a classic pcap file: magic 0x${magicBE.toString(16).padStart(8, '0')}`);
  }
  const u16 = (off: number): number => (littleEndian ? buf.readUInt16LE(off) : buf.readUInt16BE(off));
  const u32 = (off: number): number => (littleEndian ? buf.readUInt32LE(off) : buf.readUInt32BE(off));
  const major = u16(4);
  if (major !== 2) throw new PcapFormatError(`unsupported pcap version ${major}.${u16(6)}`);
  const snaplen = u32(16);
  // The upper bits of the link-type word carry FCS information (pcap spec); the type is the low 16.
  const linkType = u32(20) & 0xffff;

  const packets: PcapPacket[] = [];
  let off = GLOBAL_HEADER_LEN;
  while (off < buf.length) {
    const index = packets.length;
    if (off + RECORD_HEADER_LEN > buf.length) {
      throw new PcapFormatError(
        `pcap truncated: record #${index} header at byte ${off} ` +
          `needs ${RECORD_HEADER_LEN} bytes, ${buf.length - off} left`,
      );
    }
    const tsSec = u32(off);
    const frac = u32(off + 4);
    const inclLen = u32(off + 8);
    const origLen = u32(off + 12);
    const dataOff = off + RECORD_HEADER_LEN;
    if (dataOff + inclLen > buf.length) {
      throw new PcapFormatError(
        `pcap truncated: record #${index} at byte ${off} declares ` +
          `${inclLen} bytes of data, ${buf.length - dataOff} left`,
      );
    }
    packets.push({
      tsSec,
      tsUsec: nanosecond ? Math.floor(frac / 1000) : frac,
      tsNsec: nanosecond ? frac : frac * 1000,
      data: Buffer.from(buf.subarray(dataOff, dataOff + inclLen)),
      origLen,
    });
    off = dataOff + inclLen;
  }
  return { linkType, nanosecond, littleEndian, snaplen, packets };
}

/** Serialises packets as a little-endian, microsecond classic pcap file (incl_len = orig_len). */
export function writePcap(
  linkType: number,
  packets: readonly { tsSec: number; tsUsec: number; data: Uint8Array }[],
  snaplen = DEFAULT_SNAPLEN,
): Buffer {
  let total = GLOBAL_HEADER_LEN;
  for (const p of packets) total += RECORD_HEADER_LEN + p.data.length;
  const out = Buffer.alloc(total);
  out.writeUInt32LE(MAGIC_MICROS, 0);
  out.writeUInt16LE(2, 4);
  out.writeUInt16LE(4, 6);
  out.writeInt32LE(0, 8); // thiszone
  out.writeUInt32LE(0, 12); // sigfigs
  out.writeUInt32LE(snaplen, 16);
  out.writeUInt32LE(linkType, 20);
  let off = GLOBAL_HEADER_LEN;
  for (const p of packets) {
    if (!Number.isInteger(p.tsUsec) || p.tsUsec < 0 || p.tsUsec >= 1_000_000) {
      throw new RangeError(`tsUsec ${p.tsUsec} is not a microsecond count within a second`);
    }
    out.writeUInt32LE(p.tsSec, off);
    out.writeUInt32LE(p.tsUsec, off + 4);
    out.writeUInt32LE(p.data.length, off + 8);
    out.writeUInt32LE(p.data.length, off + 12);
    out.set(p.data, off + RECORD_HEADER_LEN);
    off += RECORD_HEADER_LEN + p.data.length;
  }
  return out;
}

/** Orders two captured packets by timestamp (negative when a is earlier). */
export function compareTimestamps(a: PcapPacket, b: PcapPacket): number {
  return a.tsSec !== b.tsSec ? a.tsSec - b.tsSec : a.tsNsec - b.tsNsec;
}

export interface UdpDatagram {
  /** Outer addresses, uint32 host order (as the datapath's slab addrs). */
  srcIp: number;
  dstIp: number;
  srcPort: number;
  dstPort: number;
  /** The UDP payload (a copy). */
  payload: Buffer;
}

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_VLAN = 0x8100;

/** Decodes an Ethernet (optionally 802.1Q-tagged) frame carrying IPv4/UDP. Throws on anything else. */
export function stripEthernetIpv4Udp(frame: Uint8Array): UdpDatagram {
  const b = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  if (b.length < 14) throw new Error(`Ethernet frame of ${b.length} bytes is shorter than its header`);
  let off = 12;
  let etherType = b.readUInt16BE(off);
  if (etherType === ETHERTYPE_VLAN) {
    if (b.length < 18) throw new Error('802.1Q frame truncated in its tag');
    off += 4;
    etherType = b.readUInt16BE(off);
  }
  if (etherType !== ETHERTYPE_IPV4)
    throw new Error(`Ethernet frame carries ethertype 0x${etherType.toString(16)}, not IPv4`);
  return stripIpv4Udp(b.subarray(off + 2));
}

/**
 * Decodes an IPv4 packet carrying one whole UDP datagram. Bytes beyond the IP total length (an
 * Ethernet minimum-size pad) are ignored. Throws on a fragment, a non-UDP protocol or truncation.
 */
export function stripIpv4Udp(packet: Uint8Array): UdpDatagram {
  const b = Buffer.from(packet.buffer, packet.byteOffset, packet.byteLength);
  if (b.length < 20) throw new Error(`IPv4 packet of ${b.length} bytes is shorter than a header`);
  if (b[0]! >> 4 !== 4) throw new Error(`not IPv4: version ${b[0]! >> 4}`);
  const ihl = (b[0]! & 0x0f) * 4;
  const totalLen = b.readUInt16BE(2);
  if (ihl < 20 || totalLen < ihl + 8 || totalLen > b.length) {
    throw new Error(`bad IPv4 header: ihl ${ihl}, total length ${totalLen}, ${b.length} bytes captured`);
  }
  if ((b.readUInt16BE(6) & 0x3fff) !== 0) throw new Error('IPv4 fragment: the UDP datagram is not whole');
  if (b[9] !== 17) throw new Error(`IPv4 protocol ${b[9]} is not UDP`);
  const udpLen = b.readUInt16BE(ihl + 4);
  if (udpLen < 8 || ihl + udpLen > totalLen)
    throw new Error(`bad UDP length ${udpLen} in an IPv4 packet of ${totalLen}`);
  return {
    srcIp: b.readUInt32BE(12),
    dstIp: b.readUInt32BE(16),
    srcPort: b.readUInt16BE(ihl),
    dstPort: b.readUInt16BE(ihl + 2),
    payload: Buffer.from(b.subarray(ihl + 8, ihl + udpLen)),
  };
}
