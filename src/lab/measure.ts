/**
 * Parsing the output of the measuring tools the lab drives: ping and iperf3 (-J).
 */

export interface PingResult {
  transmitted: number;
  received: number;
  /** Round trip times in microseconds; NaN when no reply came back. */
  minRttUs: number;
  avgRttUs: number;
  maxRttUs: number;
  raw: string;
}

/** Parses iputils ping's summary ("N packets transmitted, M received", "rtt min/avg/max/mdev"). */
export function parsePing(output: string): PingResult {
  const counts = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(output);
  if (!counts) throw new Error(`cannot parse ping output:\n${output}`);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(output);
  const us = (s: string | undefined): number => (s === undefined ? Number.NaN : Number(s) * 1000);
  return {
    transmitted: Number(counts[1]),
    received: Number(counts[2]),
    minRttUs: us(rtt?.[1]),
    avgRttUs: us(rtt?.[2]),
    maxRttUs: us(rtt?.[3]),
    raw: output,
  };
}

export interface TcpThroughput {
  seconds: number;
  /** Bits per second received by the server (iperf3's sum_received). */
  receivedBitsPerSecond: number;
  sentBitsPerSecond: number;
  retransmits: number;
}

export interface UdpThroughput {
  seconds: number;
  payloadBytes: number;
  /** Datagrams the client sent. */
  sentPackets: number;
  /** Datagrams the server received (sent - lost, as the server counted them). */
  deliveredPackets: number;
  lostPackets: number;
  lostPercent: number;
  /** deliveredPackets / seconds. */
  deliveredPacketsPerSecond: number;
  sentPacketsPerSecond: number;
  jitterMs: number;
}

type Json = Record<string, unknown>;

function obj(value: unknown, what: string): Json {
  if (value === null || typeof value !== 'object') throw new Error(`iperf3 JSON: missing ${what}`);
  return value as Json;
}

function num(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new Error(`iperf3 JSON: missing number ${what}`);
  return value;
}

function parseIperfJson(text: string): Json {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`iperf3 did not print JSON:\n${text.slice(0, 2000)}`);
  }
  const root = obj(parsed, 'root');
  if (typeof root['error'] === 'string') throw new Error(`iperf3 error: ${root['error']}`);
  return root;
}

/** Parses the client's `iperf3 -J` output of a TCP test. */
export function parseIperfTcp(text: string): TcpThroughput {
  const root = parseIperfJson(text);
  const end = obj(root['end'], 'end');
  const received = obj(end['sum_received'], 'end.sum_received');
  const sent = obj(end['sum_sent'], 'end.sum_sent');
  return {
    seconds: num(received['seconds'], 'sum_received.seconds'),
    receivedBitsPerSecond: num(received['bits_per_second'], 'sum_received.bits_per_second'),
    sentBitsPerSecond: num(sent['bits_per_second'], 'sum_sent.bits_per_second'),
    retransmits: typeof sent['retransmits'] === 'number' ? sent['retransmits'] : 0,
  };
}

/**
 * Parses the client's `iperf3 -u -J` output. The delivered figure is what the receiver got:
 * iperf3 3.x reports the server's received bytes in `end.sum_received` (its `packets` is the
 * highest sequence number seen, not a count), so delivered datagrams = received bytes / payload.
 */
export function parseIperfUdp(text: string, payloadBytes: number): UdpThroughput {
  const root = parseIperfJson(text);
  const end = obj(root['end'], 'end');
  const sent = obj(end['sum_sent'] ?? end['sum'], 'end.sum_sent');
  const received = obj(end['sum_received'], 'end.sum_received');
  const seconds = num(sent['seconds'], 'sum_sent.seconds');
  const receivedSeconds = num(received['seconds'], 'sum_received.seconds');
  const sentPackets = num(sent['packets'], 'sum_sent.packets');
  const deliveredPackets = Math.round(num(received['bytes'], 'sum_received.bytes') / payloadBytes);
  const lostPackets = Math.max(0, sentPackets - deliveredPackets);
  const jitter = typeof received['jitter_ms'] === 'number' ? received['jitter_ms'] : Number.NaN;
  return {
    seconds,
    payloadBytes,
    sentPackets,
    deliveredPackets,
    lostPackets,
    lostPercent: sentPackets > 0 ? (100 * lostPackets) / sentPackets : 0,
    deliveredPacketsPerSecond: deliveredPackets / (receivedSeconds > 0 ? receivedSeconds : seconds),
    sentPacketsPerSecond: sentPackets / seconds,
    jitterMs: jitter,
  };
}
