/**
 * End to end, flanneld mode against etcd serving https with client-certificate authentication
 * (--client-cert-auth) in the lab's underlay namespace on 192.0.2.254:2379; two hosts with
 * --etcd-cafile/--etcd-certfile/--etcd-keyfile. Also: no client certificate, and unusable TLS
 * files, each give one clear message. Needs root, iproute2, ping, etcd, etcdctl, openssl.
 */
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  AgentProcess,
  Lab,
  UNDERLAY_SWITCH_ADDR,
  agentEntry,
  removeStaleLabNamespaces,
  requireTools,
} from '../../src/lab/index.js';

const PREFIX = '/coreos.com/network';
const ENDPOINT = `https://${UNDERLAY_SWITCH_ADDR}:2379`;

interface Pki {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** A CA, a server certificate for 192.0.2.254 and a client certificate (EC P-256), with openssl. */
function makePki(dir: string): Pki {
  mkdirSync(dir, { recursive: true });
  const file = (n: string): string => join(dir, n);
  const openssl = (args: string[]): void => {
    execFileSync('openssl', args, { stdio: 'pipe' });
  };
  const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl([
    'req',
    '-x509',
    ...ecKey,
    '-keyout',
    file('ca.key'),
    '-out',
    file('ca.crt'),
    '-days',
    '2',
    '-subj',
    '/CN=flannel-ts lab CA',
  ]);
  const issue = (role: string, extensions: string): void => {
    writeFileSync(file(`${role}.ext`), extensions);
    openssl([
      'req',
      ...ecKey,
      '-keyout',
      file(`${role}.key`),
      '-out',
      file(`${role}.csr`),
      '-subj',
      `/CN=flannel-ts lab ${role}`,
    ]);
    openssl([
      'x509',
      '-req',
      '-in',
      file(`${role}.csr`),
      '-CA',
      file('ca.crt'),
      '-CAkey',
      file('ca.key'),
      '-CAcreateserial',
      '-out',
      file(`${role}.crt`),
      '-days',
      '2',
      '-extfile',
      file(`${role}.ext`),
    ]);
  };
  issue('server', `subjectAltName=IP:${UNDERLAY_SWITCH_ADDR}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  issue('client', 'extendedKeyUsage=clientAuth\n');
  return {
    ca: file('ca.crt'),
    serverCert: file('server.crt'),
    serverKey: file('server.key'),
    clientCert: file('client.crt'),
    clientKey: file('client.key'),
  };
}

describe('flanneld mode with etcd over TLS with client certificates', { timeout: 180_000 }, () => {
  let lab: Lab;
  let pki: Pki;
  let tempDir = '';
  let etcd: ChildProcess | null = null;
  const etcdOutput: string[] = [];
  const subnetFile = (n: number): string => join(tempDir, `subnet-h${n}.env`);
  const tlsArgs = (): string[] => [
    '--etcd-cafile',
    pki.ca,
    '--etcd-certfile',
    pki.clientCert,
    '--etcd-keyfile',
    pki.clientKey,
  ];
  const ctl = async (...args: string[]): Promise<string> =>
    (
      await lab.execChecked(lab.underlayNs, [
        'etcdctl',
        '--endpoints',
        ENDPOINT,
        '--cacert',
        pki.ca,
        '--cert',
        pki.clientCert,
        '--key',
        pki.clientKey,
        ...args,
      ])
    ).stdout;

  before(async () => {
    removeStaleLabNamespaces();
    await requireTools(['ping', 'etcd', 'etcdctl', 'openssl']);
    lab = await Lab.create({
      hosts: 2,
      mode: 'flannel-ts',
      agentStaticConfig: false,
      agentArgs: (n) => ['-etcd-endpoints', ENDPOINT, ...tlsArgs(), '-iface', 'eth0', '-subnet-file', subnetFile(n)],
      beforeAgents: async (l) => {
        tempDir = l.tempDir;
        pki = makePki(join(tempDir, 'pki'));
        etcd = l.spawn(l.underlayNs, [
          'etcd',
          '--name',
          'lab',
          '--data-dir',
          join(tempDir, 'etcd-data'),
          '--listen-client-urls',
          ENDPOINT,
          '--advertise-client-urls',
          ENDPOINT,
          '--listen-peer-urls',
          'http://127.0.0.1:2380',
          '--initial-advertise-peer-urls',
          'http://127.0.0.1:2380',
          '--initial-cluster',
          'lab=http://127.0.0.1:2380',
          '--log-level',
          'warn',
          '--cert-file',
          pki.serverCert,
          '--key-file',
          pki.serverKey,
          '--client-cert-auth',
          '--trusted-ca-file',
          pki.ca,
        ]);
        for (const s of [etcd.stdout, etcd.stderr]) s?.on('data', (c: Buffer) => etcdOutput.push(c.toString()));
        const deadline = Date.now() + 20_000;
        for (;;) {
          const r = await l.exec(l.underlayNs, [
            'etcdctl',
            '--endpoints',
            ENDPOINT,
            '--cacert',
            pki.ca,
            '--cert',
            pki.clientCert,
            '--key',
            pki.clientKey,
            'endpoint',
            'health',
          ]);
          if (r.code === 0) break;
          if (Date.now() > deadline || etcd.exitCode !== null)
            throw new Error(`etcd (TLS) did not come up: ${r.stderr}\n${etcdOutput.join('')}`);
          await new Promise((res) => setTimeout(res, 100));
        }
        await l.execChecked(l.underlayNs, [
          'etcdctl',
          '--endpoints',
          ENDPOINT,
          '--cacert',
          pki.ca,
          '--cert',
          pki.clientCert,
          '--key',
          pki.clientKey,
          'put',
          `${PREFIX}/config`,
          '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}',
        ]);
        for (const n of l.hostNumbers()) writeFileSync(subnetFile(n), `FLANNEL_SUBNET=10.244.${n}.1/24\n`);
      },
    });
  });

  after(async () => {
    await lab?.destroy();
  });

  test('the agents lease through TLS and the pods ping each other both ways', async () => {
    const out = await ctl('get', '--prefix', `${PREFIX}/subnets/`);
    assert.match(out, /10\.244\.1\.0-24\n\{"PublicIP":"192\.0\.2\.1","PublicIPv6":null\}/);
    assert.match(out, /10\.244\.2\.0-24\n\{"PublicIP":"192\.0\.2\.2","PublicIPv6":null\}/);
    const deadline = Date.now() + 10_000;
    const hasRoute = (n: number, m: number): boolean =>
      lab
        .agent(n)
        .lines.some(
          (l) => l['msg'] === 'routes' && (l['routes'] as string[]).includes(`10.244.${m}.0/24=192.0.2.${m}`),
        );
    while (!(hasRoute(1, 2) && hasRoute(2, 1))) {
      assert.ok(Date.now() < deadline, `routes did not arrive:\n${lab.agent(1).describeOutput()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const there = await lab.ping(lab.podNs(1), lab.podAddr(2), { count: 3, intervalSec: 0.1 });
    assert.equal(there.received, 3, there.raw);
    const back = await lab.ping(lab.podNs(2), lab.podAddr(1), { count: 3, intervalSec: 0.1 });
    assert.equal(back.received, 3, back.raw);
  });

  test('without a client certificate the agent says why it cannot fetch the config, and keeps trying', async () => {
    // Host 1's own agent goes first: a second one beside it would be refused by the host lock.
    await lab.agent(1).stop();
    const agent = AgentProcess.start(lab.hostNs(1), [
      process.execPath,
      agentEntry(lab.repoDir),
      '-etcd-endpoints',
      ENDPOINT,
      '-etcd-cafile',
      pki.ca,
      '-iface',
      'eth0',
      '-subnet-file',
      join(tempDir, 'no-cert.env'),
    ]);
    try {
      const line = await agent.waitForLine((l) => l['msg'] === "couldn't fetch the network config", 20_000);
      assert.match(String(line['error']), /192\.0\.2\.254:2379/, JSON.stringify(line));
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok(agent.running, 'still running, retrying');
      assert.ok(!agent.lines.some((l) => l['msg'] === 'forwarding'));
    } finally {
      await agent.stop(3000);
    }
    assert.equal((await agent.exited()).code, 0, 'SIGTERM while waiting: a clean exit');
  });

  test('unusable TLS files: one line naming the file, exit 1', async () => {
    const r = await lab.exec(
      lab.hostNs(1),
      [
        process.execPath,
        agentEntry(lab.repoDir),
        '-etcd-endpoints',
        ENDPOINT,
        '-etcd-cafile',
        pki.ca,
        '-etcd-certfile',
        pki.clientCert,
        '-etcd-keyfile',
        pki.ca,
        '-iface',
        'eth0',
        '-subnet-file',
        join(tempDir, 'bad.env'),
      ],
      20_000,
    );
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0]!,
      new RegExp(`key file ${pki.ca.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not a PEM private key`),
    );
  });
});
