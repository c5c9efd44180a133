// The Kernel interface through iproute2: `ip -json` to read, `ip -batch -` and `bridge -batch -` to
// write, `ip -o monitor link` to notice a deleted device. Chosen over rtnetlink in the native shim
// by measurement (docs/backends.md): one batch of 3,000 entries costs a few tens of ms, a single
// lease's three entries a few ms, and the agent keeps no netlink code of its own.
//
// A batch runs in one process per tool. iproute2 stops a batch at some failures even with -force
// (`ip neigh` exits on a netlink error), so a failed batch is replayed one command at a time: the
// common case (nothing fails) is one process, and a failure still gets its own result.
import { spawn } from 'node:child_process';
import { formatCidr, formatIPv4, parseCidr, parseIPv4 } from '../routing-table/ipv4.js';
import type { Ipv4Net } from '../subnet/config.js';
import type { Kernel, KernelOp, KernelRoute, LinkInfo, LinkWatch, OpResults, VxlanLinkSpec } from './kernel.js';

interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(cmd: string, args: readonly string[], input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.on('error', () => undefined); // a tool that exits early closes its stdin
    child.stdin.end(input ?? '');
  });
}

async function runChecked(cmd: string, args: readonly string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${oneLine(r.stderr) || `exit ${r.code}`}`);
  return r.stdout;
}

function oneLine(text: string): string {
  return text.trim().split('\n').filter(Boolean).join('; ');
}

interface IpLinkJson {
  ifindex: number;
  ifname: string;
  mtu: number;
  address?: string;
  flags?: string[];
  linkinfo?: {
    info_kind?: string;
    info_data?: { id?: number; local?: string; link?: string; port?: number; learning?: boolean; gbp?: boolean };
  };
}

interface IpRouteJson {
  dst: string;
  gateway?: string;
  dev?: string;
  flags?: string[];
  type?: string;
}

/** The ip(8) or bridge(8) batch line of an op. */
function batchLine(op: KernelOp): { tool: 'ip' | 'bridge'; line: string } {
  switch (op.op) {
    case 'neigh-replace':
      return { tool: 'ip', line: `neigh replace ${formatIPv4(op.ip)} lladdr ${op.mac} dev ${op.dev} nud permanent` };
    case 'neigh-del':
      return { tool: 'ip', line: `neigh del ${formatIPv4(op.ip)} dev ${op.dev}` };
    case 'fdb-replace':
      return { tool: 'bridge', line: `fdb replace ${op.mac} dev ${op.dev} dst ${formatIPv4(op.dst)} self permanent` };
    case 'fdb-del':
      return { tool: 'bridge', line: `fdb del ${op.mac} dev ${op.dev} dst ${formatIPv4(op.dst)} self` };
    case 'route-replace':
      return { tool: 'ip', line: `route replace ${routeSpec(op.route)}` };
    case 'route-del':
      return { tool: 'ip', line: `route del ${routeSpec(op.route)}` };
  }
}

function routeSpec(r: KernelRoute): string {
  const via = r.via === null ? '' : ` via ${formatIPv4(r.via)}`;
  const dev = r.dev === null ? '' : ` dev ${r.dev}`;
  return `${formatCidr(r.dst.prefix, r.dst.prefixLen)}${via}${dev}${r.onlink ? ' onlink' : ''}`;
}

/** iproute2's answers to deleting an entry that does not exist. */
const GONE = /No such file or directory|No such process|Cannot assign requested address/;

export class Iproute2Kernel implements Kernel {
  async link(name: string): Promise<LinkInfo | null> {
    const r = await run('ip', ['-d', '-j', 'link', 'show', 'dev', name]);
    if (r.code !== 0) {
      if (/does not exist|Cannot find device/i.test(r.stderr)) return null;
      throw new Error(`ip link show ${name}: ${oneLine(r.stderr)}`);
    }
    const l = (JSON.parse(r.stdout) as IpLinkJson[])[0];
    if (l === undefined) return null;
    const kind = l.linkinfo?.info_kind ?? null;
    const d = l.linkinfo?.info_data;
    return {
      name: l.ifname,
      index: l.ifindex,
      mtu: l.mtu,
      mac: l.address ?? null,
      up: l.flags?.includes('UP') ?? false,
      kind,
      vxlan:
        kind === 'vxlan' && d !== undefined
          ? {
              vni: d.id ?? 0,
              local: d.local !== undefined ? parseIPv4(d.local) : null,
              dev: d.link ?? null,
              port: d.port ?? 0,
              learning: d.learning ?? false,
              gbp: d.gbp ?? false,
            }
          : null,
    };
  }

  async addVxlan(s: VxlanLinkSpec): Promise<void> {
    const args = ['link', 'add', s.name, 'address', s.mac, 'mtu', String(s.mtu), 'type', 'vxlan', 'id', String(s.vni)];
    args.push('local', formatIPv4(s.local), 'dev', s.dev, 'dstport', String(s.port));
    args.push(s.learning ? 'learning' : 'nolearning');
    if (s.gbp) args.push('gbp');
    await runChecked('ip', args);
  }

  async deleteLink(name: string): Promise<void> {
    await runChecked('ip', ['link', 'del', 'dev', name]);
  }

  async setLinkUp(name: string): Promise<void> {
    await runChecked('ip', ['link', 'set', 'dev', name, 'up']);
  }

  async addresses(dev: string): Promise<Ipv4Net[]> {
    const out = await runChecked('ip', ['-j', '-4', 'addr', 'show', 'dev', dev]);
    const links = JSON.parse(out) as { addr_info?: { local: string; prefixlen: number }[] }[];
    return (links[0]?.addr_info ?? []).map((a) => ({ prefix: parseIPv4(a.local), prefixLen: a.prefixlen }));
  }

  async addAddress(dev: string, a: Ipv4Net): Promise<void> {
    await runChecked('ip', ['addr', 'replace', formatCidr(a.prefix, a.prefixLen), 'dev', dev]);
  }

  async deleteAddress(dev: string, a: Ipv4Net): Promise<void> {
    await runChecked('ip', ['addr', 'del', formatCidr(a.prefix, a.prefixLen), 'dev', dev]);
  }

  async apply(ops: readonly KernelOp[]): Promise<OpResults> {
    const results: OpResults = new Array<string | null>(ops.length).fill(null);
    // Consecutive ops of one tool go in one batch; the order of the ops is kept.
    let start = 0;
    while (start < ops.length) {
      const tool = batchLine(ops[start]!).tool;
      let end = start;
      const lines: string[] = [];
      while (end < ops.length) {
        const b = batchLine(ops[end]!);
        if (b.tool !== tool) break;
        lines.push(b.line);
        end++;
      }
      const r = await run(tool, ['-batch', '-'], lines.join('\n') + '\n');
      if (r.code !== 0) {
        // Replay one by one, so each op gets its own result (see the header).
        for (let i = 0; i < lines.length; i++) {
          const one = await run(tool, lines[i]!.split(' '));
          if (one.code === 0) continue;
          // Deleting what is already gone is done: the replay re-deletes what the batch removed.
          if (ops[start + i]!.op.endsWith('-del') && GONE.test(one.stderr)) continue;
          results[start + i] = `${tool} ${lines[i]}: ${oneLine(one.stderr) || `exit ${one.code}`}`;
        }
      }
      start = end;
    }
    return results;
  }

  async routes(): Promise<KernelRoute[]> {
    const out = await runChecked('ip', ['-j', '-4', 'route', 'show', 'table', 'main']);
    const routes: KernelRoute[] = [];
    for (const r of JSON.parse(out) as IpRouteJson[]) {
      if (r.dst === 'default' || r.dev === undefined || (r.type !== undefined && r.type !== 'unicast')) continue;
      const dst = r.dst.includes('/') ? parseCidr(r.dst) : { prefix: parseIPv4(r.dst), prefixLen: 32 };
      routes.push({
        dst,
        via: r.gateway !== undefined ? parseIPv4(r.gateway) : null,
        dev: r.dev,
        onlink: r.flags?.includes('onlink') ?? false,
      });
    }
    return routes;
  }

  async directlyConnected(ip: number): Promise<boolean> {
    const out = await runChecked('ip', ['-j', '-4', 'route', 'get', formatIPv4(ip)]);
    const got = JSON.parse(out) as { gateway?: string }[];
    return got.length === 1 && got[0]!.gateway === undefined;
  }

  watchLinkDeleted(name: string, onDeleted: () => void): LinkWatch {
    const child = spawn('ip', ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let buffered = '';
    const marker = `: ${name}:`;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      buffered += d;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.startsWith('Deleted ') && line.includes(marker)) onDeleted();
      }
    });
    child.on('error', () => undefined);
    // The monitor must not keep the process alive on its own: the agent's lifetime decides.
    child.unref();
    (child.stdout as unknown as { unref?: () => void }).unref?.();
    return {
      close: () => {
        if (child.exitCode === null) child.kill('SIGTERM');
      },
    };
  }
}
