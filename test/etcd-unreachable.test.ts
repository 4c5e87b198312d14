/**
 * A host whose etcd is out of reach (frozen with SIGSTOP: its sockets stay open, nothing answers).
 *
 * The tail's read lease, on its own: a tail that cannot reach etcd stops answering reads before its
 * etcd lease can have expired (so before a master could install another tail), and without waiting
 * for the etcd client to report the lease lost, which happens only about two TTLs later. The host
 * keeps running and its clients reach it.
 *
 * And `dabba serve` still stops on SIGTERM: the steps of a clean close that need etcd (resigning,
 * revoking the lease) give up after a deadline.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { startEtcdCluster, type EtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { connect, type RemoteClient } from '../src/client/remote-client.js';
import { startHost, type DabbaHost, type HostLogEntry } from '../src/host/host.js';
import { SERVE_NODE_FLAGS } from '../src/host/node-flags.js';

const SECRET = Buffer.from('read-lease-test-secret-0123456789');
const PEER_SECRET = Buffer.from('read-lease-test-peer-secret-0123456789');
const LEASE_TTL_SECONDS = 2;
/** How often the test looks at the host's lease state: the lease ends by the clock, not by an event. */
const POLL_MS = 20;

const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
const servers = new LocalServers('etcd-unreachable-test');
let etcd: EtcdCluster;
let frozen = false;

before(async () => {
  etcd = await startEtcdCluster(servers, 1);
});

after(async () => {
  if (frozen) process.kill(etcd.members[0]!.server.pid, 'SIGCONT');
  await servers.stop(1000);
});

test('a tail cut off from etcd stops answering reads within its lease TTL, before the lease is reported lost', async (t) => {
  const log: HostLogEntry[] = [];
  const host: DabbaHost = await startHost({
    hostId: 'lease-holder',
    port: 0,
    etcd: etcd.clientUrls,
    etcdPrefix: '/read-lease-test/',
    peerSecret: PEER_SECRET,
    clientSecret: SECRET,
    master: true,
    leaseTtlSeconds: LEASE_TTL_SECONDS,
    log: (entry) => log.push(entry),
  });
  let client: RemoteClient | null = null;
  try {
    if (host.roleIn() !== 'solo') await once(host, 'configured');
    assert.equal(host.roleIn(), 'solo');
    // close() gives pending requests no grace: the last read is meant to stay unanswered.
    client = await connect({ hosts: [host.url], secret: SECRET, chain: { closeTimeoutMs: 0 } });
    await client.put('k', 'v1');
    assert.equal((await client.get('k'))?.toString(), 'v1');
    assert.equal(host.servingReads(), true, 'a tail with a live lease serves reads');

    const frozenAt = performance.now();
    process.kill(etcd.members[0]!.server.pid, 'SIGSTOP');
    frozen = true;
    while (host.servingReads()) await delay(POLL_MS);
    const stoppedAfterMs = performance.now() - frozenAt;
    t.diagnostic(`reads stopped ${Math.round(stoppedAfterMs)} ms after etcd froze (TTL ${LEASE_TTL_SECONDS} s)`);
    // The last keepalive etcd acknowledged was sent before the freeze, so the lease etcd holds runs
    // out at most one TTL after it: reads must have stopped by then.
    assert.ok(stoppedAfterMs <= LEASE_TTL_SECONDS * 1000, `reads stopped ${Math.round(stoppedAfterMs)} ms after the freeze, beyond the TTL`);
    assert.equal(log.filter((entry) => entry.event === 'lease-lost').length, 0, 'the read lease acted on its own, before the lease-lost report');

    // A read sent now is refused by the host (the client then waits for a tail that serves): it must
    // still be unanswered when the etcd client finally reports the lease lost.
    let answered = false;
    const read = client.get('k').then(
      () => (answered = true),
      () => undefined,
    );
    const leaseLost = new Promise<void>((resolve) => host.on('log', (entry: HostLogEntry) => entry.event === 'lease-lost' && resolve()));
    await leaseLost;
    t.diagnostic(`lease-lost reported ${Math.round(performance.now() - frozenAt)} ms after the freeze`);
    assert.equal(answered, false, 'no read was answered by a tail whose lease may have lapsed');
    await client.close();
    client = null;
    await read;
  } finally {
    if (frozen) {
      process.kill(etcd.members[0]!.server.pid, 'SIGCONT');
      frozen = false;
    }
    const closing = performance.now();
    await client?.close();
    await host.close();
    t.diagnostic(`closed in ${Math.round(performance.now() - closing)} ms`);
  }
});

test('dabba serve exits on SIGTERM, cleanly and in bounded time, while etcd does not answer', { timeout: 60_000 }, async (t) => {
  const child = spawn(process.execPath, [...SERVE_NODE_FLAGS, '--import', 'tsx', CLI, 'serve', '--id', 'leaver', '--listen', '127.0.0.1:0', '--etcd', etcd.clientUrls.join(','), '--etcd-prefix', '/etcd-unreachable-serve/'], {
    env: { ...process.env, DABBA_PEER_SECRET: PEER_SECRET.toString('base64'), DABBA_CLIENT_SECRET: SECRET.toString('base64') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  try {
    // Serving, and a member of the chain (its replica started), before etcd goes quiet.
    await new Promise<void>((resolve, reject) => {
      child.stderr!.on('data', () => stderr.includes('"event":"replica-started"') && resolve());
      void exited.then(([code, signal]) => reject(new Error(`serve exited early (${code ?? signal}):\n${stderr}`)));
    });
    assert.doesNotMatch(stderr, /"event":"node-flags"/, 'started with the flags it needs: no warning');
    process.kill(etcd.members[0]!.server.pid, 'SIGSTOP');
    frozen = true;
    const signalledAt = performance.now();
    process.kill(child.pid!, 'SIGTERM');
    const [code, signal] = await exited;
    const tookMs = performance.now() - signalledAt;
    t.diagnostic(`exited ${code ?? signal} ${Math.round(tookMs)} ms after SIGTERM`);
    assert.equal(code, 0, `a clean exit, not ${code ?? signal}:\n${stderr.slice(-2000)}`);
    assert.ok(tookMs < 10_000, `stopping took ${Math.round(tookMs)} ms`);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (frozen) {
      process.kill(etcd.members[0]!.server.pid, 'SIGCONT');
      frozen = false;
    }
  }
});

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
