/**
 * tcpdump captures inside a lab namespace, and decoding of flannel udp encapsulation from them.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Lab } from '../../src/lab/index.js';
import { waitForExit } from '../../src/lab/exec.js';
import { bytesToIpv4 } from './packets.js';

export interface RunningCapture {
  file: string;
  /** Stops tcpdump (flushing the file) and returns the capture's bytes. */
  stop(): Promise<Buffer>;
}

/** Starts `tcpdump -i iface -w file filter` in ns; resolves once tcpdump is listening. */
export async function startCapture(
  lab: Lab,
  ns: string,
  iface: string,
  filter: string,
  name: string,
): Promise<RunningCapture> {
  const file = join(lab.tempDir, `${name}.pcap`);
  const child = lab.spawn(ns, [
    'tcpdump',
    '-n',
    '--immediate-mode',
    '-i',
    iface,
    '-U',
    '-s',
    '2048',
    '-w',
    file,
    filter,
  ]);
  const stderr: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tcpdump did not start: ${stderr.join('\n')}`)), 5000);
    const lines = createInterface({ input: child.stderr! });
    lines.on('line', (line) => {
      stderr.push(line);
      if (line.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tcpdump exited (code ${code}): ${stderr.join('\n')}`));
    });
  });
  return {
    file,
    async stop(): Promise<Buffer> {
      // --immediate-mode hands each packet to tcpdump at once and -U writes it at once; a short
      // pause lets the last ones through before SIGINT.
      await new Promise((r) => setTimeout(r, 200));
      const exited = waitForExit(child);
      child.kill('SIGINT');
      await exited;
      return readFileSync(file);
    },
  };
}

export interface CapturedPacket {
  data: Buffer;
}

/**
 * Minimal classic-pcap reader (microsecond or nanosecond magic, either byte order): the link
 * type and each record's captured bytes. Enough for these tests; the project's full reader/writer
 * lives in test/helpers/pcap.ts.
 */
export function readPcapRecords(buf: Buffer): { linkType: number; packets: CapturedPacket[] } {
  if (buf.length < 24) throw new Error(`pcap too short (${buf.length} bytes)`);
  const magicLE = buf.readUInt32LE(0);
  let little: boolean;
  if (magicLE === 0xa1b2c3d4 || magicLE === 0xa1b23c4d) little = true;
  else if (buf.readUInt32BE(0) === 0xa1b2c3d4 || buf.readUInt32BE(0) === 0xa1b23c4d) little = false;
  else throw new Error(`not a classic pcap file (magic 0x${magicLE.toString(16)})`);
  const u32 = (off: number): number => (little ? buf.readUInt32LE(off) : buf.readUInt32BE(off));
  const linkType = u32(20) & 0x0fffffff;
  const packets: CapturedPacket[] = [];
  let off = 24;
  while (off + 16 <= buf.length) {
    const inclLen = u32(off + 8);
    if (off + 16 + inclLen > buf.length) break; // a record cut short by the stop
    packets.push({ data: buf.subarray(off + 16, off + 16 + inclLen) });
    off += 16 + inclLen;
  }
  return { linkType, packets };
}

export interface FlannelDatagram {
  outerSrc: string;
  outerDst: string;
  srcPort: number;
  dstPort: number;
  /** The UDP payload: for flannel's udp backend, exactly one inner IPv4 packet. */
  payload: Buffer;
}

const LINKTYPE_ETHERNET = 1;

/** Decodes Ethernet/IPv4/UDP records of a capture; other records are skipped. */
export function udpDatagramsOf(linkType: number, packets: readonly CapturedPacket[]): FlannelDatagram[] {
  if (linkType !== LINKTYPE_ETHERNET) throw new Error(`expected an Ethernet capture, link type ${linkType}`);
  const out: FlannelDatagram[] = [];
  for (const { data } of packets) {
    if (data.length < 14 + 20 + 8 || data.readUInt16BE(12) !== 0x0800) continue;
    const ip = 14;
    const ihl = (data[ip]! & 0x0f) * 4;
    if (data[ip]! >> 4 !== 4 || data[ip + 9] !== 17) continue;
    const totalLength = data.readUInt16BE(ip + 2);
    const udp = ip + ihl;
    const udpLength = data.readUInt16BE(udp + 4);
    out.push({
      outerSrc: bytesToIpv4(data, ip + 12),
      outerDst: bytesToIpv4(data, ip + 16),
      srcPort: data.readUInt16BE(udp),
      dstPort: data.readUInt16BE(udp + 2),
      payload: data.subarray(udp + 8, Math.min(data.length, ip + totalLength, udp + udpLength)),
    });
  }
  return out;
}
