/**
 * The network-namespace lab used by multi-host tests: two hosts, each its own namespace with its
 * own address; a TCP echo server in host 0 reached from host 1 and from the root namespace; cut and
 * heal of host 0; kill -9 by the pid lab.spawn() returned; and a 3-member etcd on the lab's gateway
 * reached from inside a namespace. As root (CI, this machine) everything runs; otherwise the lab is
 * the loopback fallback and the partition steps check that cut()/heal() refuse, and say they were
 * skipped.
 */
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { isHealthy, isLeader, startEtcdCluster, type EtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';

const execFileAsync = promisify(execFile);

/** A connection attempt gives up after this long; a cut host must fail within it. */
const CONNECT_TIMEOUT_MS = 1500;
/** Bounds every wait on a child process, so a regression fails instead of hanging. */
const CHILD_DEADLINE_MS = 10_000;

/** Listens on argv[1] (port 0), echoes every byte back, prints {port, pid} once listening. */
const ECHO_SERVER = `
const net = require('node:net');
const server = net.createServer((socket) => socket.pipe(socket));
server.listen(0, process.argv[1], () => {
  console.log(JSON.stringify({ port: server.address().port, pid: process.pid }));
});`;

/**
 * Connects to argv[1]:argv[2], sends 'ping' and prints {ok: true} once it is echoed, or
 * {ok: false, error} on a connection error or after argv[3] ms; always with elapsedMs.
 */
const ECHO_CLIENT = `
const net = require('node:net');
const [host, port, timeoutMs] = process.argv.slice(1);
const started = Date.now();
const report = (result) => {
  console.log(JSON.stringify({ ...result, elapsedMs: Date.now() - started }));
  process.exit(0);
};
setTimeout(() => report({ ok: false, error: 'timeout' }), Number(timeoutMs));
const socket = net.connect({ host, port: Number(port) });
socket.on('error', (error) => report({ ok: false, error: error.code }));
socket.on('connect', () => socket.write('ping'));
let echoed = '';
socket.on('data', (chunk) => {
  echoed += chunk;
  if (echoed === 'ping') report({ ok: true });
});`;

/** Listens on 127.0.0.1 and connects to itself: proves the namespace's own loopback is up. */
const LOOPBACK_SELF_CHECK = `
const net = require('node:net');
const server = net.createServer((socket) => socket.end('pong'));
server.listen(0, '127.0.0.1', () => {
  const socket = net.connect(server.address().port, '127.0.0.1');
  let answer = '';
  socket.on('data', (chunk) => (answer += chunk));
  socket.on('end', () => { console.log(JSON.stringify({ answer })); process.exit(0); });
  socket.on('error', (error) => { console.log(JSON.stringify({ error: error.code })); process.exit(0); });
});`;

/** GETs argv[1] + '/health' with fetch and prints {status, body} or {error}. */
const HEALTH_GET = `
fetch(process.argv[1] + '/health', { signal: AbortSignal.timeout(3000) })
  .then(async (response) => console.log(JSON.stringify({ status: response.status, body: await response.json() })))
  .catch((error) => console.log(JSON.stringify({ error: String(error.cause ?? error) })));`;

const servers = new LocalServers('netns-lab-test');
let lab: NetnsLab;
let cluster: EtcdCluster | undefined;

before(async () => {
  lab = await createNetnsLab('nslabtest', 2);
});

after(async () => {
  try {
    await servers.stop(1000);
  } finally {
    await lab?.close();
  }
});

/** Collects a child's stdout; resolves with its first line once printed, bounded by CHILD_DEADLINE_MS. */
function firstLine(child: ChildProcess, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    const deadline = setTimeout(() => fail(new Error(`timed out waiting for ${what}`)), CHILD_DEADLINE_MS);
    const fail = (error: Error): void => {
      clearTimeout(deadline);
      reject(new Error(`${error.message}\nstdout: ${stdout}\nstderr: ${stderr}`));
    };
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const newline = stdout.indexOf('\n');
      if (newline < 0) return;
      clearTimeout(deadline);
      resolve(stdout.slice(0, newline));
    });
    child.once('error', fail);
    child.once('exit', (code, signal) => {
      if (!stdout.includes('\n')) fail(new Error(`${what} exited (code ${code}, signal ${signal}) before printing a line`));
    });
  });
}

/** Runs a `node -e` script inside host `hostIndex` and returns the JSON object it prints. */
async function runInHost(hostIndex: number, script: string, args: string[]): Promise<Record<string, unknown>> {
  const child = lab.spawn(hostIndex, process.execPath, ['-e', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit');
  const line = await firstLine(child, `a script in host ${hostIndex}`);
  await exited;
  return JSON.parse(line) as Record<string, unknown>;
}

/** The same echo exchange as ECHO_CLIENT, from this (root namespace) process. */
function echoFromRoot(host: string, port: number): Promise<{ ok: boolean; error?: string; elapsedMs: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const report = (result: { ok: boolean; error?: string }): void => {
      clearTimeout(deadline);
      socket.destroy();
      resolve({ ...result, elapsedMs: Date.now() - started });
    };
    const deadline = setTimeout(() => report({ ok: false, error: 'timeout' }), CONNECT_TIMEOUT_MS);
    let echoed = '';
    socket.on('error', (error: NodeJS.ErrnoException) => report({ ok: false, error: error.code ?? String(error) }));
    socket.on('connect', () => socket.write('ping'));
    socket.on('data', (chunk) => {
      echoed += chunk.toString();
      if (echoed === 'ping') report({ ok: true });
    });
  });
}

let echoServer: ChildProcess;
let echoPort: number;

test('every host has its own namespace and address on the lab subnet; the gateway is on it too', async () => {
  assert.equal(lab.hosts.length, 2);
  if (!lab.isolated) {
    for (const host of lab.hosts) assert.deepEqual([host.address, host.namespace], ['127.0.0.1', null]);
    assert.equal(lab.gatewayAddress, '127.0.0.1');
    return;
  }
  const [first, second] = lab.hosts;
  assert.ok(first !== undefined && second !== undefined);
  assert.deepEqual([first.index, second.index], [0, 1]);
  assert.notEqual(first.address, second.address);
  const subnet = lab.gatewayAddress.replace(/\.1$/, '.');
  assert.match(lab.gatewayAddress, /^10\.77\.\d+\.1$/);
  assert.equal(first.address, `${subnet}10`);
  assert.equal(second.address, `${subnet}11`);
  const { stdout } = await execFileAsync('ip', ['netns', 'list']);
  for (const host of lab.hosts) assert.ok(host.namespace !== null && stdout.includes(host.namespace), `${host.namespace} in: ${stdout}`);
});

test("lab.spawn(): an echo server in host 0 runs with child.pid as its own pid; host 1 and the root namespace reach it", async () => {
  const host = lab.hosts[0]!;
  echoServer = lab.spawn(0, process.execPath, ['-e', ECHO_SERVER, host.address], { stdio: ['ignore', 'pipe', 'pipe'] });
  const ready = JSON.parse(await firstLine(echoServer, 'the echo server to listen')) as { port: number; pid: number };
  echoPort = ready.port;
  // `ip netns exec` execs in place: the pid spawn() returned is node's own.
  assert.equal(ready.pid, echoServer.pid);
  assert.equal(readlinkSync(`/proc/${echoServer.pid}/exe`), readlinkSync('/proc/self/exe'));

  assert.deepEqual(pick(await runInHost(1, ECHO_CLIENT, [host.address, String(echoPort), String(CONNECT_TIMEOUT_MS)])), { ok: true });
  assert.equal((await echoFromRoot(host.address, echoPort)).ok, true);
});

test('inside a namespace, lo is up and is the namespace\'s own', async () => {
  assert.deepEqual(await runInHost(1, LOOPBACK_SELF_CHECK, []), { answer: 'pong' });
  if (!lab.isolated) return;
  // Host 0's server listens on host 0's address only; host 1's loopback is another network.
  const viaLoopback = await runInHost(1, ECHO_CLIENT, ['127.0.0.1', String(echoPort), String(CONNECT_TIMEOUT_MS)]);
  assert.deepEqual(pick(viaLoopback), { ok: false, error: 'ECONNREFUSED' });
});

test('cut(0) makes host 0 unreachable within the connect timeout; heal(0) restores it', async (t) => {
  const host = lab.hosts[0]!;
  if (!lab.isolated) {
    await assert.rejects(lab.cut(0), { code: 'DABBA_LAB_ERR_NOT_ISOLATED' });
    await assert.rejects(lab.heal(0), { code: 'DABBA_LAB_ERR_NOT_ISOLATED' });
    t.diagnostic('partitions need root: this lab is the loopback fallback, cut()/heal() refused as they must (checked above)');
    return;
  }
  await lab.cut(0);
  const [fromHost, fromRoot] = await Promise.all([
    runInHost(1, ECHO_CLIENT, [host.address, String(echoPort), String(CONNECT_TIMEOUT_MS)]),
    echoFromRoot(host.address, echoPort),
  ]);
  for (const attempt of [fromHost, fromRoot]) {
    assert.equal(attempt.ok, false, JSON.stringify(attempt));
    // Either the SYN went nowhere (timeout) or the neighbour lookup failed first (EHOSTUNREACH).
    assert.ok(['timeout', 'EHOSTUNREACH'].includes(String(attempt.error)), JSON.stringify(attempt));
    assert.ok(Number(attempt.elapsedMs) < CONNECT_TIMEOUT_MS + 500, JSON.stringify(attempt));
  }

  await lab.heal(0);
  assert.deepEqual(pick(await runInHost(1, ECHO_CLIENT, [host.address, String(echoPort), String(CONNECT_TIMEOUT_MS)])), { ok: true });
  assert.equal((await echoFromRoot(host.address, echoPort)).ok, true);
  // Host 0 reaches out again as well: its default route came back with the link.
  assert.deepEqual(await runInHost(0, LOOPBACK_SELF_CHECK, []), { answer: 'pong' });
});

test('kill -9 of child.pid kills the server itself', async () => {
  const pid = echoServer.pid!;
  const exited = once(echoServer, 'exit');
  process.kill(pid, 'SIGKILL');
  const [code, signal] = (await exited) as [number | null, NodeJS.Signals | null];
  assert.deepEqual([code, signal], [null, 'SIGKILL']);
  assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
  if (lab.isolated) {
    const attempt = await runInHost(1, ECHO_CLIENT, [lab.hosts[0]!.address, String(echoPort), String(CONNECT_TIMEOUT_MS)]);
    assert.deepEqual(pick(attempt), { ok: false, error: 'ECONNREFUSED' });
  }
});

test('a 3-member etcd on the gateway address is healthy, and a process in a namespace reaches it', async () => {
  cluster = await startEtcdCluster(servers, 3, lab.gatewayAddress);
  for (const url of cluster.clientUrls) assert.ok(url.startsWith(`http://${lab.gatewayAddress}:`), url);
  assert.deepEqual(await Promise.all(cluster.clientUrls.map(isHealthy)), [true, true, true]);
  assert.equal((await Promise.all(cluster.clientUrls.map(isLeader))).filter(Boolean).length, 1);
  for (const url of cluster.clientUrls) {
    const answer = (await runInHost(1, HEALTH_GET, [url])) as { status?: number; body?: { health?: string } };
    assert.deepEqual([answer.status, answer.body?.health], [200, 'true'], JSON.stringify(answer));
  }
});

test('close() kills what spawn() left running, deletes namespaces, veths and bridge, and is idempotent', async () => {
  await servers.stop(1000);
  const leftover = lab.spawn(1, process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  const leftoverExited = once(leftover, 'exit');
  const namespaces = lab.hosts.map((host) => host.namespace);
  const gateway = lab.gatewayAddress;
  await lab.close();
  await lab.close();
  assert.deepEqual((await leftoverExited).slice(1), ['SIGKILL']);
  if (!lab.isolated) return;
  const { stdout: netns } = await execFileAsync('ip', ['netns', 'list']);
  for (const namespace of namespaces) assert.ok(namespace !== null && !netns.includes(namespace), netns);
  const { stdout: addresses } = await execFileAsync('ip', ['-o', 'addr', 'show']);
  assert.ok(!addresses.includes(`inet ${gateway}/`), addresses);
});

/** The fields of a client report that do not depend on timing. */
function pick(result: Record<string, unknown>): Record<string, unknown> {
  const { elapsedMs: _elapsedMs, ...rest } = result;
  return rest;
}
