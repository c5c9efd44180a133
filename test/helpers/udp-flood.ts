/**
 * A tiny UDP sender run inside a lab namespace by the integration tests:
 *
 *   node dist/test/helpers/udp-flood.js <base64 of JSON FloodSpec>
 *
 * It binds to `bind` (port 0: any), sends every datagram of `datagrams` `count` times to
 * target:port, paced in small bursts so the receiver's socket buffer never overflows (the test
 * counts every datagram), then prints {"sent": N} and exits.
 */
import { createSocket } from 'node:dgram';

export interface FloodSpec {
  bind: string;
  target: string;
  port: number;
  /** Payloads as hex strings, each sent `count` times, interleaved. */
  datagrams: { hex: string; count: number }[];
  /** Datagrams per burst, and pause between bursts (ms). */
  burst?: number;
  pauseMs?: number;
}

export function encodeFloodSpec(spec: FloodSpec): string {
  return Buffer.from(JSON.stringify(spec)).toString('base64');
}

async function main(encoded: string): Promise<void> {
  const spec = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8')) as FloodSpec;
  const socket = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address: spec.bind, port: 0 }, () => resolve());
  });
  const payloads = spec.datagrams.map((d) => ({ data: Buffer.from(d.hex, 'hex'), left: d.count }));
  const burst = spec.burst ?? 50;
  const pauseMs = spec.pauseMs ?? 2;
  let sent = 0;
  let inBurst = 0;
  let remaining = payloads.reduce((n, p) => n + p.left, 0);
  while (remaining > 0) {
    for (const p of payloads) {
      if (p.left === 0) continue;
      await new Promise<void>((resolve, reject) =>
        socket.send(p.data, spec.port, spec.target, (err) => (err ? reject(err) : resolve())),
      );
      p.left--;
      remaining--;
      sent++;
      if (++inBurst >= burst) {
        inBurst = 0;
        await new Promise((r) => setTimeout(r, pauseMs));
      }
    }
  }
  socket.close();
  process.stdout.write(`${JSON.stringify({ sent })}\n`);
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/\\/g, '/'));
if (isMain) {
  const arg = process.argv[2];
  if (arg === undefined) {
    // `node --test dist/test/` on Node 20 runs every .js under a test/ directory, helpers too:
    // without a spec there is nothing to send, and that is not a failure there.
    if (process.env['NODE_TEST_CONTEXT'] !== undefined) process.exit(0);
    process.stderr.write('usage: udp-flood.js <base64 JSON spec>\n');
    process.exit(2);
  }
  main(arg).catch((e: unknown) => {
    process.stderr.write(`udp-flood: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
