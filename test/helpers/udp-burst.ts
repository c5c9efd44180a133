/**
 * Runs inside a pod namespace (test/integration/offload-interop.test.ts):
 *   node udp-burst.js receive PORT COUNT TIMEOUT_MS  -> prints {"received":n,"intact":n,"inOrder":bool}
 *   node udp-burst.js send ADDR PORT COUNT SIZE      -> sends COUNT numbered datagrams of SIZE bytes
 * The sender writes them back to back, so that the agents see runs of equal-size datagrams of
 * one flow (what UDP GSO/GRO and the coalescing into flannel0 act on); the receiver checks every
 * byte: a datagram is intact when it is SIZE bytes of the pattern its number gives.
 */
import { createSocket } from 'node:dgram';

function pattern(seq: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt32BE(seq, 0);
  for (let i = 4; i < size; i++) b[i] = (seq * 31 + i * 7) & 0xff;
  return b;
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'receive') {
  const [port, count, timeoutMs] = args.map(Number) as [number, number, number];
  const socket = createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  let received = 0,
    intact = 0,
    last = -1,
    inOrder = true;
  const finish = (): void => {
    socket.close();
    process.stdout.write(JSON.stringify({ received, intact, inOrder }) + '\n');
  };
  const timer = setTimeout(finish, timeoutMs);
  socket.on('message', (msg) => {
    received++;
    const seq = msg.length >= 4 ? msg.readUInt32BE(0) : -1;
    if (seq >= 0 && msg.equals(pattern(seq, msg.length))) intact++;
    if (seq <= last) inOrder = false;
    last = seq;
    if (received === count) {
      clearTimeout(timer);
      finish();
    }
  });
  socket.bind(port, () => process.stdout.write('ready\n'));
} else if (mode === 'send') {
  const [addr, portText, countText, sizeText] = args as [string, string, string, string];
  const port = Number(portText),
    count = Number(countText),
    size = Number(sizeText);
  const socket = createSocket('udp4');
  let seq = 0;
  // Bursts of 32, then a pause: runs for the agents, and time for the receiving process (which
  // shares the 2 cores with the agents) to drain its socket.
  const burst = (): void => {
    for (let k = 0; k < 32 && seq < count; k++, seq++) socket.send(pattern(seq, size), port, addr);
    if (seq < count) setTimeout(burst, 5);
    else setTimeout(() => socket.close(), 200);
  };
  burst();
}
