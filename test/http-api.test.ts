/**
 * The HTTP API and `dabba status` of a host, against a real etcd: hosts run in this process here
 * (the separate-process, separate-namespace tests are in hosts.test.ts). Also the settings of
 * `dabba serve` from flags, environment and a config file.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectTcp } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ErrorCode } from '../native-free-core/errors.js';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { connect } from '../src/client/index.js';
import { DabbaHost, startHost, type HostLogEntry } from '../src/host/host.js';
import { parseServeConfig, ServeConfigError } from '../src/host/serve-config.js';
import { formatClusterStatus, readClusterStatus } from '../src/host/status-command.js';
import { fillLeaving, mountTmpfs } from './helpers/tmpfs.js';

const SECRET = Buffer.from('http-api-test-secret-0123456789');
const PEER_SECRET = Buffer.from('http-api-test-peer-secret-0123456789');
const servers = new LocalServers('http-api-test');
let etcd: string[];
const hosts: DabbaHost[] = [];

before(async () => {
  etcd = (await startEtcdCluster(servers, 1)).clientUrls;
});

after(async () => {
  try {
    await Promise.all(hosts.map((host) => host.close()));
  } finally {
    await servers.stop(1000);
  }
});

async function host(hostId: string, prefix: string, master: boolean, httpToken?: Buffer): Promise<DabbaHost> {
  const started = await startHost({
    hostId,
    port: 0,
    etcd,
    etcdPrefix: prefix,
    peerSecret: PEER_SECRET,
    clientSecret: SECRET,
    master,
    log: () => undefined,
    chain: { valueBytesMax: 4096 },
    ...(httpToken === undefined ? {} : { httpToken }),
  });
  hosts.push(started);
  return started;
}

function httpUrl(target: DabbaHost): string {
  return target.url.replace('ws://', 'http://');
}

async function json(response: Response): Promise<{ code: string; message: string }> {
  assert.equal(response.headers.get('content-type'), 'application/json');
  return (await response.json()) as { code: string; message: string };
}

test('a host with no chain configured answers 503 with a code, at once', async () => {
  const lonely = await host('lonely', '/http-test-unconfigured/', false);
  const response = await fetch(`${httpUrl(lonely)}/kv/a`, { method: 'PUT', body: 'x' });
  assert.equal(response.status, 503);
  assert.equal((await json(response)).code, ErrorCode.unavailable);
});

test('PUT, GET, DELETE, errors with codes, /status and dabba status', async () => {
  const solo = await host('solo', '/http-test/', true);
  const base = httpUrl(solo);
  // The master starts the chain with this host as its only replica.
  if (solo.roleIn() !== 'solo') {
    await new Promise<void>((resolve) => solo.on('configured', (_configuration: unknown, role: string) => role === 'solo' && resolve()));
  }
  let response = await fetch(`${base}/kv/user%3A1`, { method: 'PUT', body: 'Asha' });
  assert.equal(response.status, 204);
  response = await fetch(`${base}/kv/user%3A1`);
  assert.equal(response.status, 200);
  assert.equal(await response.text(), 'Asha');
  assert.ok(Number(response.headers.get('x-dabba-version')) >= 1);
  response = await fetch(`${base}/kv/user%3A1`, { method: 'DELETE' });
  assert.equal(response.status, 204);
  response = await fetch(`${base}/kv/user%3A1`);
  assert.equal(response.status, 404);
  assert.equal((await json(response)).code, ErrorCode.notFound);

  response = await fetch(`${base}/kv/${'k'.repeat(2000)}`, { method: 'PUT', body: 'x' });
  assert.equal(response.status, 400);
  assert.equal((await json(response)).code, ErrorCode.keyTooLarge);
  response = await fetch(`${base}/kv/%zz`);
  assert.equal(response.status, 400);
  assert.equal((await json(response)).code, ErrorCode.invalidArgument);
  response = await fetch(`${base}/kv/`);
  assert.equal(response.status, 400);
  assert.equal((await json(response)).code, ErrorCode.keyEmpty);
  response = await fetch(`${base}/kv/big`, { method: 'PUT', body: Buffer.alloc(5000) });
  assert.equal(response.status, 413);
  assert.equal((await json(response)).code, ErrorCode.valueTooLarge);
  response = await fetch(`${base}/kv/a`, { method: 'POST', body: 'x' });
  assert.equal(response.status, 405);
  response = await fetch(`${base}/nowhere`);
  assert.equal(response.status, 404);
  // The host still serves after every refusal.
  response = await fetch(`${base}/kv/after`, { method: 'PUT', body: 'still here' });
  assert.equal(response.status, 204);

  // Conditional writes: If-None-Match: * (put if absent), If-Match: <version> (put or delete if at it).
  response = await fetch(`${base}/kv/cas`, { method: 'PUT', body: 'one', headers: { 'if-none-match': '*' } });
  assert.equal(response.status, 204);
  response = await fetch(`${base}/kv/cas`, { method: 'PUT', body: 'again', headers: { 'if-none-match': '*' } });
  assert.equal(response.status, 412);
  const present = (await response.json()) as { code: string; currentVersion: number };
  assert.equal(present.code, ErrorCode.conditionFailed);
  const version = Number((await fetch(`${base}/kv/cas`)).headers.get('x-dabba-version'));
  assert.equal(present.currentVersion, version);
  response = await fetch(`${base}/kv/cas`, { method: 'PUT', body: 'two', headers: { 'if-match': String(version) } });
  assert.equal(response.status, 204);
  response = await fetch(`${base}/kv/cas`, { method: 'PUT', body: 'stale', headers: { 'if-match': `"${version}"` } });
  assert.equal(response.status, 412);
  response = await fetch(`${base}/kv/cas`);
  assert.equal(await response.text(), 'two');
  const second = Number(response.headers.get('x-dabba-version'));
  response = await fetch(`${base}/kv/cas`, { method: 'DELETE', headers: { 'if-match': String(version) } });
  assert.equal(response.status, 412);
  response = await fetch(`${base}/kv/cas`, { method: 'DELETE', headers: { 'if-match': String(second) } });
  assert.equal(response.status, 204);
  const badConditions: Array<Record<string, string>> = [{ 'if-match': 'abc' }, { 'if-match': '0' }, { 'if-none-match': 'x' }, { 'if-match': '3', 'if-none-match': '*' }];
  for (const headers of badConditions) {
    response = await fetch(`${base}/kv/cas`, { method: 'PUT', body: 'v', headers });
    assert.equal(response.status, 400, JSON.stringify(headers));
    assert.equal((await json(response)).code, ErrorCode.invalidArgument);
  }

  response = await fetch(`${base}/status`);
  assert.equal(response.status, 200);
  const status = (await response.json()) as { replicas: Array<{ chain: number; role: string }>; chains: Array<{ epoch: number; members: Array<{ role: string; hostId: string }> }> };
  assert.deepEqual(status.replicas.map((replica) => [replica.chain, replica.role]), [[0, 'solo']]);
  assert.deepEqual(status.chains[0]!.members.map((member) => [member.hostId, member.role]), [['solo', 'solo']]);

  const cluster = await readClusterStatus(etcd, '/http-test/');
  assert.equal(cluster.chains[0]!.members.length, 1);
  assert.equal(cluster.chains[0]!.members[0]!.hostId, 'solo');
  const text = formatClusterStatus(cluster);
  assert.match(text, /1 chain of 3 replicas, 1 live hosts/);
  assert.match(text, /0\s+\d+\s+\d+\s+solo\s+solo\s/);
});

test('a durable host whose disk fills answers HTTP writes 507 DABBA_ERR_DISK_FULL and still serves reads; space freed, writes go on', async (t) => {
  const disk = mountTmpfs(32 * 1024 * 1024);
  const logs: HostLogEntry[] = [];
  const heard = (event: string): Promise<void> =>
    new Promise((resolve) => {
      if (logs.some((entry) => entry.event === event)) return resolve();
      const onLog = (entry: HostLogEntry): void => {
        if (entry.event !== event) return;
        durable.off('log', onLog);
        resolve();
      };
      durable.on('log', onLog);
    });
  const durable = await startHost({
    hostId: 'durable',
    port: 0,
    etcd,
    etcdPrefix: '/http-test-disk/',
    peerSecret: PEER_SECRET,
    clientSecret: SECRET,
    master: true,
    log: (entry) => logs.push(entry),
    chain: { valueBytesMax: 4096, dataDir: join(disk.path, 'data'), durability: 'fsync', diskReserveBytes: 8 * 1024 * 1024 },
  });
  t.after(async () => {
    await durable.close();
    disk.unmount();
  });
  if (durable.roleIn() !== 'solo') {
    await new Promise<void>((resolve) => durable.on('configured', (_configuration: unknown, role: string) => role === 'solo' && resolve()));
  }
  const base = httpUrl(durable);
  assert.equal((await fetch(`${base}/kv/before`, { method: 'PUT', body: 'written' })).status, 204);
  const client = await connect({ hosts: [durable.url], secret: SECRET });
  t.after(() => client.close());
  await client.put('remote', 'written');
  const full = heard('disk-full');
  const clientHeard = once(client, 'disk');
  const filler = fillLeaving(disk.path, 4 * 1024 * 1024);
  await full;
  assert.deepEqual((await clientHeard)[0], { chain: 0, full: true });
  await assert.rejects(client.put('remote', 'refused'), { code: ErrorCode.diskFull, message: /disk is full/ });
  assert.equal((await client.get('remote'))?.toString(), 'written', 'a connect() client reads on');
  const status = (await (await fetch(`${base}/status`)).json()) as { replicas: Array<{ stats: { diskFull: boolean; diskFreeBytes: number } }> };
  assert.equal(status.replicas[0]!.stats.diskFull, true);
  assert.ok(status.replicas[0]!.stats.diskFreeBytes < 8 * 1024 * 1024);
  for (const method of ['PUT', 'DELETE']) {
    const response = await fetch(`${base}/kv/before`, { method, ...(method === 'PUT' ? { body: 'refused' } : {}) });
    assert.equal(response.status, 507, method);
    const body = await json(response);
    assert.equal(body.code, ErrorCode.diskFull);
    assert.match(body.message, /disk of replica \d+ is full/);
  }
  const read = await fetch(`${base}/kv/before`);
  assert.equal(read.status, 200);
  assert.equal(await read.text(), 'written', 'reads go on, and the refused writes changed nothing');
  const room = heard('disk-ok');
  const clientRoom = once(client, 'disk');
  rmSync(filler);
  await room;
  assert.deepEqual((await clientRoom)[0], { chain: 0, full: false });
  await client.put('remote', 'room again');
  const response = await fetch(`${base}/kv/after`, { method: 'PUT', body: 'room again' });
  assert.equal(response.status, 204);
});

test('with a token, every HTTP request needs Authorization: Bearer <token>', async () => {
  const token = Buffer.from('an-http-token-of-some-length');
  const guarded = await host('guarded', '/http-test-unconfigured-guarded/', false, token);
  const base = httpUrl(guarded);
  for (const headers of [{}, { authorization: 'Bearer wrong-token-wrong-token' }, { authorization: token.toString() }] as Array<Record<string, string>>) {
    const response = await fetch(`${base}/status`, { headers });
    assert.equal(response.status, 401);
    assert.equal((await json(response)).code, ErrorCode.unauthenticated);
  }
  const refusedPut = await fetch(`${base}/kv/a`, { method: 'PUT', body: 'x' });
  assert.equal(refusedPut.status, 401);
  const status = await fetch(`${base}/status`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(status.status, 200);
  // Past the token, the request is served as usual (this host has no chain yet: 503).
  const put = await fetch(`${base}/kv/a`, { method: 'PUT', body: 'x', headers: { authorization: `Bearer ${token}` } });
  assert.equal(put.status, 503);
});

/** Sends raw bytes to a host's HTTP port; resolves with everything it answered before closing. */
async function rawRequest(target: DabbaHost, text: string): Promise<{ answer: string; closed: boolean }> {
  const socket = connectTcp(target.port, '127.0.0.1');
  let answer = '';
  socket.setEncoding('utf8').on('data', (chunk: string) => (answer += chunk));
  socket.write(text);
  const closed = await Promise.race([once(socket, 'close').then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2000))]);
  socket.destroy();
  return { answer, closed };
}

test('a request with ambiguous framing is answered 400 and its connection closed: no second request hides in its body', async () => {
  const lonely = await host('framing', '/http-test-framing/', false);
  for (const headers of ['Content-Length: 3\r\nContent-Length: 5', 'Content-Length: 3\r\nContent-Length: 3']) {
    const { answer, closed } = await rawRequest(lonely, `PUT /kv/a HTTP/1.1\r\nHost: x\r\n${headers}\r\n\r\nabcde`);
    assert.match(answer, /^HTTP\/1\.1 400 /, `${headers}: ${answer}`);
    assert.match(answer, /DABBA_ERR_MALFORMED_REQUEST/);
    assert.equal(closed, true, `${headers}: the connection stays open`);
    assert.equal(answer.match(/HTTP\/1\.1/g)?.length, 1, 'the rest of the body was read as a request');
  }
  const status = (await (await fetch(`${httpUrl(lonely)}/status`)).json()) as { refusals: Record<string, number> };
  assert.equal(typeof status.refusals, 'object');
});

test('a host refuses to serve HTTP beyond loopback without a token, unless told it is insecure on purpose', async () => {
  const options = { hostId: 'exposed', port: 0, listenHost: '0.0.0.0', etcd, peerSecret: PEER_SECRET, clientSecret: SECRET, log: () => undefined };
  assert.throws(() => new DabbaHost(options), (error: Error & { code?: string }) => error.code === ErrorCode.invalidArgument && /no token/.test(error.message));
  assert.doesNotThrow(() => new DabbaHost({ ...options, httpToken: Buffer.from('a-token-of-16-bytes-or-more') }));
  assert.doesNotThrow(() => new DabbaHost({ ...options, httpInsecure: true }));
  assert.doesNotThrow(() => new DabbaHost({ ...options, listenHost: '127.0.0.1' }));
});

test('dabba status against an etcd that is not there fails with one clear line, no stack', async () => {
  const { execFile } = await import('node:child_process');
  const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'status', '--etcd', 'http://127.0.0.1:1'], { timeout: 30_000 }, (error, _stdout, stderr) => {
      resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? null), stderr });
    });
  });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /^dabba: cannot use etcd at the endpoints given/);
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
});

test('a host started with other --chains or --replicas than its cluster is refused with one line, exit 2; one without them takes the cluster\'s', async () => {
  const first = await startHost({ hostId: 'settled', port: 0, etcd, etcdPrefix: '/http-settings/', peerSecret: PEER_SECRET, clientSecret: SECRET, chains: 4, replicas: 2, log: () => undefined });
  hosts.push(first);
  const { execFile } = await import('node:child_process');
  const serve = (flags: string[]): Promise<{ code: number | null; stderr: string }> =>
    new Promise((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--id', 'late', '--listen', '127.0.0.1:0', '--etcd', etcd.join(','), '--etcd-prefix', '/http-settings/', ...flags], {
        timeout: 30_000,
        env: { ...process.env, DABBA_PEER_SECRET: PEER_SECRET.toString(), DABBA_CLIENT_SECRET: SECRET.toString() },
      }, (error, _stdout, stderr) => resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? null), stderr }));
    });
  const refused = await serve(['--chains', '8']);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /^dabba: this cluster \(etcd key \/http-settings\/settings\) has --chains 4 --replicas 2, fixed when it was first started; this host was started with --chains 8/);
  assert.equal(refused.stderr.trim().split('\n').length, 1, refused.stderr);
  const later = await startHost({ hostId: 'later', port: 0, etcd, etcdPrefix: '/http-settings/', peerSecret: PEER_SECRET, clientSecret: SECRET, log: () => undefined });
  hosts.push(later);
  assert.deepEqual(later.status().settings, { chains: 4, replicas: 2 });
});

test('dabba serve settings: flags over environment over the config file; clear errors', () => {
  const directory = mkdtempSync(join(tmpdir(), 'dabba-serve-config-'));
  const config = join(directory, 'cluster.json');
  const peerSecretFile = join(directory, 'peer-secret');
  const clientSecretFile = join(directory, 'client-secret');
  writeFileSync(peerSecretFile, 'a-peer-secret-from-a-file-0123456789\n');
  writeFileSync(clientSecretFile, 'a-client-secret-from-a-file-0123456789\n');
  writeFileSync(config, JSON.stringify({ hostId: 'from-file', listen: '0.0.0.0:7500', etcd: ['http://10.0.0.1:2379'], peerSecretFile, clientSecretFile, leaseTtlSeconds: 3 }));
  const fromFile = parseServeConfig(['--config', config], {});
  assert.equal(fromFile.hostId, 'from-file');
  assert.equal(fromFile.listenHost, '0.0.0.0');
  assert.equal(fromFile.port, 7500);
  assert.deepEqual(fromFile.etcd, ['http://10.0.0.1:2379']);
  assert.equal(fromFile.peerSecret.toString(), 'a-peer-secret-from-a-file-0123456789');
  assert.equal(fromFile.clientSecret.toString(), 'a-client-secret-from-a-file-0123456789');
  assert.equal(fromFile.leaseTtlSeconds, 3);
  const fromEnv = parseServeConfig(['--config', config], { DABBA_HOST_ID: 'from-env', DABBA_ETCD: 'http://a:1,http://b:2' });
  assert.equal(fromEnv.hostId, 'from-env');
  assert.deepEqual(fromEnv.etcd, ['http://a:1', 'http://b:2']);
  const fromFlags = parseServeConfig(['--config', config, '--id', 'from-flag', '--no-master'], { DABBA_HOST_ID: 'from-env' });
  assert.equal(fromFlags.hostId, 'from-flag');
  assert.equal(fromFlags.master, false);
  const env = { DABBA_PEER_SECRET: 'sixteen-bytes-at-least', DABBA_CLIENT_SECRET: 'another-sixteen-bytes', DABBA_ETCD: 'http://a:1' };
  assert.throws(() => parseServeConfig([], env), ServeConfigError, 'a host id is required');
  assert.throws(() => parseServeConfig(['--id', 'x'], { DABBA_ETCD: 'http://a:1', DABBA_CLIENT_SECRET: 'another-sixteen-bytes' }), /peer secret is required/);
  assert.throws(() => parseServeConfig(['--id', 'x'], { DABBA_ETCD: 'http://a:1', DABBA_PEER_SECRET: 'sixteen-bytes-at-least' }), /client secret is required/);
  assert.throws(() => parseServeConfig(['--id', 'x'], { ...env, DABBA_PEER_SECRET: 'short' }), /at least 16 bytes/);
  assert.throws(() => parseServeConfig(['--id', 'x'], { ...env, DABBA_CLIENT_SECRET: env.DABBA_PEER_SECRET }), /must differ/);
  assert.throws(() => parseServeConfig(['--id', 'x'], { DABBA_ETCD: 'http://a:1', DABBA_SECRET: 'one-secret-for-everyone' }), /replaced by two/);
  assert.equal(parseServeConfig(['--id', 'x'], env).httpInsecure, false);
  assert.equal(parseServeConfig(['--id', 'x', '--http-insecure'], env).httpInsecure, true);
  assert.equal(parseServeConfig(['--id', 'x'], { ...env, DABBA_HTTP_INSECURE: '1' }).httpInsecure, true);
  assert.throws(() => parseServeConfig(['--id', 'x', '--listen', 'nonsense'], env), /host:port/);
  assert.throws(() => parseServeConfig(['--id', 'x', '--etcd', 'ftp://a'], env), /http\(s\):\/\/host:port/);
  assert.throws(() => parseServeConfig(['--id', 'x', '--lease-ttl', '0'], env), /1-60 seconds/);
  assert.equal(parseServeConfig(['--id', 'x'], { ...env, DABBA_HTTP_TOKEN: 'a-token-of-16-bytes-or-more' }).httpToken?.toString(), 'a-token-of-16-bytes-or-more');
  assert.throws(() => parseServeConfig(['--id', 'x'], { ...env, DABBA_HTTP_TOKEN: 'short' }), /HTTP token must be at least 16 bytes/);
  assert.equal(parseServeConfig(['--id', 'x'], env).chain, undefined, 'reads at any replica unless told');
  assert.deepEqual(parseServeConfig(['--id', 'x', '--reads', 'tail'], env).chain, { reads: 'tail' });
  assert.deepEqual(parseServeConfig(['--id', 'x'], { ...env, DABBA_READS: 'any' }).chain, { reads: 'any' });
  assert.throws(() => parseServeConfig(['--id', 'x', '--reads', 'middle'], env), /--reads must be any or tail, got "middle"/);
});
