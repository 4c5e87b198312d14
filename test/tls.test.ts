/**
 * TLS, piece by piece: what uWebSockets.js does with a CA file (it refuses a client certificate the
 * CA did not issue, but admits a client that presents none), the certificate proof that makes links
 * require one anyway, connect()'s and `dabba serve`'s TLS settings, a host serving TLS (wss://
 * clients, https:// HTTP) against etcd over https with client certificates, `dabba status` with the
 * etcd flags, and etcd's own users. The three-host chain over TLS is hosts-tls.test.ts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DabbaError, ErrorCode, isDabbaError } from '../native-free-core/errors.js';
import { startEtcdCluster, type EtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { connect } from '../src/client/index.js';
import { startHost, type DabbaHost } from '../src/host/host.js';
import { checkCertificateNames, resolveHostTls } from '../src/host/host-tls.js';
import { parseServeConfig, ServeConfigError } from '../src/host/serve-config.js';
import { EtcdConfigurationStore } from '../src/master/etcd-store.js';
import { certificateTranscript, checkCertificateProof, proveCertificate } from '../src/transport/certificate-proof.js';
import { decodeResponse, encodeResponse } from '../src/transport/peer-link-handshake.js';
import { connectPeerLink, listenPeerLinks, type PeerLink } from '../src/transport/peer-link.js';
import { tlsCredentials } from '../src/transport/tls.js';
import { createUwsApp, loadUws } from '../src/transport/uws.js';
import { clientTls, createTestCa, etcdTls, hostTlsFiles, requestUrl, type TestCa } from './helpers/test-ca.js';

const CLIENT_SECRET = Buffer.from('tls-test-client-secret-0123456789');
const PEER_SECRET = Buffer.from('tls-test-peer-secret-0123456789');
const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
const servers = new LocalServers('tls-test');
let ca: TestCa;
/** A CA nobody here trusts, with its own host and client certificates. */
let otherCa: TestCa;
let etcd: EtcdCluster | null = null;
const hosts: DabbaHost[] = [];

before(async () => {
  ca = await createTestCa();
  otherCa = await createTestCa([], 'other');
});

after(async () => {
  try {
    await Promise.all(hosts.map((host) => host.close()));
  } finally {
    await servers.stop(1000);
    ca?.remove();
    otherCa?.remove();
  }
});

function isCoded(code: ErrorCode, type: typeof TypeError | typeof RangeError | typeof DabbaError): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof type, `expected a ${type.name}, got ${String(error)}`);
    assert.equal((error as { code?: unknown }).code, code, String(error));
    return true;
  };
}

test('uWS SSLApp with a CA file refuses a client certificate from another CA, but admits a client that presents none', async () => {
  // This is why links carry a certificate proof (src/transport/certificate-proof.ts): if a uWS
  // upgrade starts to require client certificates, this test fails and the proof may go.
  const load = loadUws();
  assert.ok(load.native, 'TLS needs the native addon');
  assert.throws(() => createUwsApp({ ...load, native: false }, hostTlsFiles(ca)), isCoded(ErrorCode.invalidArgument, DabbaError), 'the JavaScript fallback has no SSLApp');
  const app = createUwsApp(load, hostTlsFiles(ca));
  app.get('/hello', (response) => void response.end('hello'));
  const listenSocket = await new Promise<unknown>((resolve) => app.listen('127.0.0.1', 0, resolve));
  assert.notEqual(listenSocket, false);
  const url = `https://127.0.0.1:${load.uws.us_socket_local_port(listenSocket as never)}/hello`;
  try {
    const withCertificate = await requestUrl(url, { tls: clientTls(ca) });
    assert.equal(withCertificate.body.toString(), 'hello');
    const withoutCertificate = await requestUrl(url, { tls: clientTls(ca, false) });
    assert.equal(withoutCertificate.status, 200, 'uWS admits a TLS client without a certificate');
    const foreign = { ca: ca.read(ca.caFile), cert: otherCa.read(otherCa.clientCertFile), key: otherCa.read(otherCa.clientKeyFile) };
    await assert.rejects(requestUrl(url, { tls: foreign }), (error: Error & { code?: string }) => /ALERT|CERT/.test(error.code ?? ''));
    await assert.rejects(requestUrl(url, { tls: clientTls(otherCa) }), (error: Error & { code?: string }) => /UNABLE_TO_VERIFY|CERT/.test(error.code ?? ''));
  } finally {
    load.uws.us_listen_socket_close(listenSocket as never);
  }
});

test('a TLS link needs a certificate from the CA; a plain ws:// dial, a wrong CA and a foreign certificate fail with codes', async () => {
  const server = await listenPeerLinks({
    port: 0,
    secret: PEER_SECRET,
    nodeId: 'tls-server',
    maxRecordBytes: 4096,
    validate: () => null,
    tlsFiles: hostTlsFiles(ca),
    onLink: (link) => ({ onRecord: (bytes) => void link.trySend(bytes) }),
  });
  const url = `wss://127.0.0.1:${server.port}/peer`;
  const dial = (tls: ReturnType<typeof tlsCredentials> | null, target = url, onRecord: (bytes: Uint8Array) => void = () => undefined): Promise<PeerLink> =>
    connectPeerLink({ url: target, secret: PEER_SECRET, nodeId: 'tls-client', maxRecordBytes: 4096, validate: () => null, tls, onRecord });
  try {
    let echoed: (bytes: Uint8Array) => void = () => undefined;
    const echo = new Promise<Uint8Array>((resolve) => (echoed = (bytes) => resolve(Uint8Array.from(bytes))));
    const link = await dial(tlsCredentials(clientTls(ca)), url, (bytes) => echoed(bytes));
    assert.ok(link.trySend(Buffer.from('over tls')));
    assert.equal(Buffer.from(await echo).toString(), 'over tls');
    link.close();

    const unauthenticated = (error: unknown): boolean => isDabbaError(error, ErrorCode.unauthenticated);
    // No certificate: TLS admits it (see above), the handshake's certificate proof does not.
    await assert.rejects(dial(tlsCredentials(clientTls(ca, false))), unauthenticated);
    // A certificate the CA did not issue: refused by TLS itself.
    await assert.rejects(dial(tlsCredentials({ ca: ca.read(ca.caFile), cert: otherCa.read(otherCa.clientCertFile), key: otherCa.read(otherCa.clientKeyFile) })), unauthenticated);
    // Trusting another CA: the host's certificate does not verify.
    await assert.rejects(dial(tlsCredentials(clientTls(otherCa))), unauthenticated);
    // Plain WebSocket to the TLS port: the connection is dropped, a coded error, nothing crashes.
    await assert.rejects(dial(null, url.replace('wss:', 'ws:')), (error: unknown) => isDabbaError(error, ErrorCode.linkClosed));
    await assert.rejects(dial(tlsCredentials(clientTls(ca)), url.replace('wss:', 'ws:')), isCoded(ErrorCode.invalidArgument, DabbaError));
    // And the server still serves.
    (await dial(tlsCredentials(clientTls(ca)))).close();
  } finally {
    server.close();
  }
});

test('a certificate proof: from the CA, unexpired, for client authentication, signing this handshake', () => {
  const credentials = tlsCredentials(clientTls(ca));
  const authorities = credentials.authorities;
  const transcript = certificateTranscript(randomBytes(32), randomBytes(32), 'client:7');
  const proof = proveCertificate(credentials.certificate!, credentials.privateKey!, transcript);
  const now = Date.now();
  assert.equal(checkCertificateProof(authorities, proof, transcript, now), null);
  const host = tlsCredentials({ ca: ca.read(ca.caFile), cert: ca.read(ca.hostCertFile), key: ca.read(ca.hostKeyFile) });
  assert.equal(checkCertificateProof(authorities, proveCertificate(host.certificate!, host.privateKey!, transcript), transcript, now), null, 'host certificates allow clientAuth');
  assert.match(checkCertificateProof(authorities, null, transcript, now)!, /no client certificate/);
  assert.match(checkCertificateProof(authorities, proof, certificateTranscript(randomBytes(32), randomBytes(32), 'client:7'), now)!, /did not sign/);
  assert.match(checkCertificateProof(authorities, { ...proof, signature: randomBytes(70) }, transcript, now)!, /did not sign/);
  assert.match(checkCertificateProof(authorities, { ...proof, certificate: randomBytes(300) }, transcript, now)!, /does not parse/);
  const foreign = tlsCredentials(clientTls(otherCa));
  assert.match(checkCertificateProof(authorities, proveCertificate(foreign.certificate!, foreign.privateKey!, transcript), transcript, now)!, /not issued by this host's CA/);
  const validTo = Date.parse(new X509Certificate(proof.certificate).validTo);
  assert.match(checkCertificateProof(authorities, proof, transcript, validTo + 1000)!, /not valid now/);
  assert.match(checkCertificateProof(authorities, proof, transcript, now - 86_400_000)!, /not valid now/);

  // In the handshake: a response with a proof decodes to the same fields, one without keeps its old layout.
  const mac = randomBytes(32);
  const nonce = randomBytes(32);
  const decoded = decodeResponse(encodeResponse(mac, nonce, null, 'client:7', proof));
  assert.ok(typeof decoded !== 'string', String(decoded));
  assert.deepEqual([decoded.mac, decoded.clientNonce, decoded.certificate?.certificate, decoded.certificate?.signature, decoded.nodeId], [mac, nonce, proof.certificate, proof.signature, 'client:7']);
  const plain = encodeResponse(mac, nonce, null, 'client:7');
  assert.equal(plain.subarray(0, 5).toString('latin1'), 'DBL2R');
  assert.equal((decodeResponse(plain) as { certificate: unknown }).certificate, null);
  const certified = encodeResponse(mac, nonce, null, 'client:7', proof);
  assert.equal(typeof decodeResponse(certified.subarray(0, 5 + 32 + 32 + 1 + 10)), 'string', 'a cut certificate is refused');
  const oversized = Buffer.from(certified);
  oversized.writeUInt16BE(60_000, 5 + 32 + 32 + 1);
  assert.match(decodeResponse(oversized) as string, /certificate of 60000 bytes/);
});

test('connect() checks its tls option at the boundary with coded TypeErrors', async () => {
  const base = { hosts: ['wss://127.0.0.1:1'], secret: CLIENT_SECRET, connectTimeoutMs: 100 };
  const invalid = isCoded(ErrorCode.invalidArgument, TypeError);
  const caPem = ca.read(ca.caFile);
  await assert.rejects(connect({ ...base, tls: 'ca.pem' as never }), invalid);
  await assert.rejects(connect({ ...base, tls: {} as never }), invalid);
  await assert.rejects(connect({ ...base, tls: { ca: caPem, cert: ca.read(ca.clientCertFile) } }), invalid);
  await assert.rejects(connect({ ...base, tls: { ca: 'not a certificate' } }), invalid);
  await assert.rejects(connect({ ...base, tls: { ca: ca.read(ca.clientCertFile) } }), invalid, 'a client certificate is no CA');
  await assert.rejects(connect({ ...base, tls: { ca: caPem, cert: ca.read(ca.clientCertFile), key: ca.read(ca.hostKeyFile) } }), invalid, 'a key of another certificate');
  await assert.rejects(connect({ ...base, tls: { ca: 42 as never } }), invalid);
  await assert.rejects(connect(base), invalid, 'a wss:// host without tls');
  await assert.rejects(connect({ ...base, hosts: ['ws://127.0.0.1:1'], tls: clientTls(ca) }), invalid, 'tls with a ws:// host');
  // PEM strings work as well as Buffers.
  const strings = { ca: caPem.toString(), cert: ca.read(ca.clientCertFile).toString(), key: ca.read(ca.clientKeyFile).toString() };
  await assert.rejects(connect({ ...base, tls: strings }), (error: unknown) => isDabbaError(error, ErrorCode.timeout), 'valid: it tried to connect');
});

test('dabba serve TLS and etcd settings: flags, environment and config file; clear errors', async () => {
  const env = { DABBA_PEER_SECRET: PEER_SECRET.toString(), DABBA_CLIENT_SECRET: CLIENT_SECRET.toString(), DABBA_ETCD: 'http://a:1' };
  const tlsFlags = ['--tls-cert', ca.hostCertFile, '--tls-key', ca.hostKeyFile, '--tls-ca', ca.caFile];
  assert.deepEqual(parseServeConfig(['--id', 'x', ...tlsFlags], env).tls, hostTlsFiles(ca));
  assert.deepEqual(parseServeConfig(['--id', 'x'], { ...env, DABBA_TLS_CERT: ca.hostCertFile, DABBA_TLS_KEY: ca.hostKeyFile, DABBA_TLS_CA: ca.caFile }).tls, hostTlsFiles(ca));
  const config = join(mkdtempSync(join(tmpdir(), 'dabba-tls-config-')), 'serve.json');
  writeFileSync(config, JSON.stringify({ tlsCert: ca.hostCertFile, tlsKey: ca.hostKeyFile, tlsCa: ca.caFile, advertise: 'wss://127.0.0.1:7400', etcd: 'https://a:1', etcdCa: ca.caFile, etcdCert: ca.clientCertFile, etcdKey: ca.clientKeyFile, etcdUser: 'dabba' }));
  const fromFile = parseServeConfig(['--id', 'x', '--config', config], { ...env, DABBA_ETCD: undefined, DABBA_ETCD_PASSWORD: 'pw' });
  assert.deepEqual(fromFile.tls, hostTlsFiles(ca));
  assert.equal(fromFile.advertiseUrl, 'wss://127.0.0.1:7400');
  assert.deepEqual(fromFile.etcdTls, { ca: ca.read(ca.caFile), cert: ca.read(ca.clientCertFile), key: ca.read(ca.clientKeyFile) });
  assert.deepEqual(fromFile.etcdAuth, { username: 'dabba', password: 'pw' });
  assert.equal(parseServeConfig(['--id', 'x'], env).tls, undefined, 'TLS is off unless asked for');

  const refused = (args: string[], pattern: RegExp, extraEnv: Record<string, string> = {}): void => {
    assert.throws(() => parseServeConfig(['--id', 'x', ...args], { ...env, ...extraEnv }), (error: unknown) => error instanceof ServeConfigError && pattern.test(error.message), `${args.join(' ')}: ${pattern}`);
  };
  refused(['--tls-cert', ca.hostCertFile, '--tls-ca', ca.caFile], /missing --tls-key/);
  refused(['--tls-key', ca.hostKeyFile, '--tls-ca', ca.caFile], /missing --tls-cert/);
  refused(['--tls-cert', ca.hostCertFile, '--tls-key', ca.hostKeyFile], /missing --tls-ca/);
  refused(['--tls-cert', '/nonexistent/host.pem', '--tls-key', ca.hostKeyFile, '--tls-ca', ca.caFile], /cannot read the TLS certificate file \/nonexistent\/host.pem: ENOENT/);
  refused(['--tls-cert', ca.hostCertFile, '--tls-key', ca.clientKeyFile, '--tls-ca', ca.caFile], /is not the private key of/);
  refused(['--tls-cert', ca.hostCertFile, '--tls-key', ca.hostKeyFile, '--tls-ca', ca.hostCertFile], /not a CA/);
  refused(['--advertise', 'wss://10.0.0.1:7400'], /wss:\/\/, but no TLS/);
  refused([...tlsFlags, '--advertise', 'ws://10.0.0.1:7400'], /must be wss:\/\//);
  refused(['--etcd', 'http://a:1,https://b:2'], /must all be http:\/\/ or all https:\/\//);
  refused(['--etcd', 'http://a:1', '--etcd-ca', ca.caFile], /are for https:\/\//);
  refused(['--etcd', 'https://a:1', '--etcd-ca', ca.caFile, '--etcd-cert', ca.clientCertFile], /go together/);
  refused(['--etcd', 'https://a:1', '--etcd-cert', ca.clientCertFile, '--etcd-key', ca.clientKeyFile], /needs --etcd-ca/);
  refused(['--etcd', 'https://a:1', '--etcd-ca', '/nonexistent/ca.pem'], /cannot read the etcd CA file/);
  refused(['--etcd-user', 'dabba'], /DABBA_ETCD_PASSWORD/);
  refused([], /no etcd user/, { DABBA_ETCD_PASSWORD: 'pw' });

  // What the host checks itself: its certificate must serve and dial (both usages) and name its address.
  assert.throws(() => resolveHostTls({ caFile: ca.caFile, certFile: ca.clientCertFile, keyFile: ca.clientKeyFile }, undefined), /must allow serverAuth/);
  const hostTls = resolveHostTls(hostTlsFiles(ca), undefined)!;
  checkCertificateNames(hostTls, 'wss://127.0.0.1:7400');
  checkCertificateNames(hostTls, 'wss://localhost:7400');
  assert.throws(() => checkCertificateNames(hostTls, 'wss://10.9.8.7:7400'), (error: unknown) => isDabbaError(error, ErrorCode.invalidArgument) && /does not name 10.9.8.7/.test(error.message));

  // A settings error is one line and exit code 2, as any other.
  const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', CLI, 'serve', '--id', 'x', '--tls-cert', ca.hostCertFile, '--tls-ca', ca.caFile], { env: { ...process.env, ...env }, timeout: 30_000 }, (error, _stdout, stderr) => {
      resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? null), stderr });
    });
  });
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /^dabba: TLS needs a certificate, its key and a CA together/);
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
});

test('a host serving TLS, on etcd over https with client certificates: wss:// clients, https:// HTTP, dabba status', async () => {
  etcd = await startEtcdCluster(servers, 1, '127.0.0.1', etcdTls(ca));
  assert.ok(etcd.clientUrls[0]!.startsWith('https://'));
  const etcdAccess = { ca: ca.read(ca.caFile), cert: ca.read(ca.clientCertFile), key: ca.read(ca.clientKeyFile) };
  const host = await startHost({
    hostId: 'tls-solo',
    port: 0,
    etcd: etcd.clientUrls,
    etcdPrefix: '/tls-test/',
    etcdTls: etcdAccess,
    tls: hostTlsFiles(ca),
    peerSecret: PEER_SECRET,
    clientSecret: CLIENT_SECRET,
    log: () => undefined,
  });
  hosts.push(host);
  assert.match(host.url, /^wss:\/\/127\.0\.0\.1:\d+$/, 'the advertised URL says wss://');
  await new Promise<void>((resolve) => (host.roleIn() === 'solo' ? resolve() : host.once('configured', () => resolve())));

  const client = await connect({ hosts: [host.url], secret: CLIENT_SECRET, tls: clientTls(ca) });
  await client.put('greeting', 'namaste over tls');
  assert.equal((await client.get('greeting'))?.toString(), 'namaste over tls');
  await client.close();
  await assert.rejects(connect({ hosts: [host.url], secret: CLIENT_SECRET, tls: clientTls(ca, false), connectTimeoutMs: 5000 }), (error: unknown) => isDabbaError(error, ErrorCode.unauthenticated), 'a client without a certificate');

  const https = host.url.replace('wss:', 'https:');
  const put = await requestUrl(`${https}/kv/city`, { method: 'PUT', body: 'Mumbai', tls: clientTls(ca) });
  assert.equal(put.status, 204, put.body.toString());
  const get = await requestUrl(`${https}/kv/city`, { tls: clientTls(ca) });
  assert.deepEqual([get.status, get.body.toString()], [200, 'Mumbai']);
  await assert.rejects(requestUrl(`${host.url.replace('wss:', 'http:')}/kv/city`), 'plain HTTP to the TLS port');

  // dabba status with the etcd flags; without the client certificate etcd refuses it.
  const status = (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', CLI, 'status', '--etcd', etcd!.clientUrls.join(','), '--etcd-prefix', '/tls-test/', ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
        resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? null), stdout, stderr });
      });
    });
  const shown = await status(['--etcd-ca', ca.caFile, '--etcd-cert', ca.clientCertFile, '--etcd-key', ca.clientKeyFile, '--json']);
  assert.equal(shown.code, 0, shown.stderr);
  const report = JSON.parse(shown.stdout) as { chains: Array<{ members: Array<{ role: string; url: string; healthy: boolean }> }> };
  assert.deepEqual(report.chains[0]!.members.map((member) => [member.role, member.url, member.healthy]), [['solo', host.url, true]]);

  const withoutCertificate = new EtcdConfigurationStore({ hosts: etcd.clientUrls, prefix: '/tls-test/', tls: { ca: ca.read(ca.caFile) } });
  try {
    await assert.rejects(withTimeout(withoutCertificate.settings(), 10_000), 'etcd requires a client certificate');
  } finally {
    await withTimeout(withoutCertificate.close(), 2000).catch(() => undefined);
  }
});

test("etcd's own users: a store with --etcd-user and its password reads, one without is refused", async () => {
  assert.ok(etcd !== null, 'runs after the test that starts etcd over TLS');
  const urls = etcd.clientUrls.join(',');
  const etcdctl = (args: string[]): Promise<unknown> =>
    promisify(execFile)('etcdctl', ['--endpoints', urls, '--cacert', ca.caFile, '--cert', ca.clientCertFile, '--key', ca.clientKeyFile, ...args], { timeout: 10_000 });
  await etcdctl(['user', 'add', 'root', '--new-user-password', 'tls-test-root-password']);
  await etcdctl(['auth', 'enable']);
  const tls = { ca: ca.read(ca.caFile), cert: ca.read(ca.clientCertFile), key: ca.read(ca.clientKeyFile) };
  const withUser = new EtcdConfigurationStore({ hosts: etcd.clientUrls, prefix: '/tls-test/', tls, auth: { username: 'root', password: 'tls-test-root-password' } });
  const wrongPassword = new EtcdConfigurationStore({ hosts: etcd.clientUrls, prefix: '/tls-test/', tls, auth: { username: 'root', password: 'not-the-password' } });
  try {
    assert.notEqual(await withUser.settings(), null, 'the settings the TLS host wrote');
    await assert.rejects(withTimeout(wrongPassword.settings(), 10_000));
  } finally {
    await Promise.all([withUser, wrongPassword].map((store) => withTimeout(store.close(), 2000).catch(() => undefined)));
    // The host of the test above still talks to this etcd as a certificate's user, which has no
    // rights now: stop it before its lease runs out on its own.
    await Promise.all(hosts.splice(0).map((host) => host.close()));
  }
});

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
