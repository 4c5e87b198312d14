/**
 * The hosts test over TLS: three `dabba serve` processes (each in its own network namespace as
 * root, loopback ports otherwise) serving wss:// links and https:// HTTP with certificates from a
 * throwaway CA, on a 3-member etcd cluster over https that requires client certificates. The same
 * core steps as hosts.test.ts (helpers/hosts-scenario.ts): under a load of remote clients, the
 * head, a middle and the tail host are SIGKILLed and restarted; HTTP requests go through https://;
 * a client without a certificate, one trusting another CA, and a plain ws:// dial are refused with
 * codes while the chain keeps serving. Then: every acknowledged write reads back, the history is
 * linearizable, the replicas' digests agree, and no write was applied twice.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ErrorCode, isDabbaError } from '../native-free-core/errors.js';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { connect } from '../src/client/index.js';
import { connectPeerLink, frameEnvelopeValidator } from '../src/transport/peer-link.js';
import { closeHostTest, HostCluster } from './helpers/host-cluster.js';
import { checkOutcome, killAndRejoin, progress, startLoad, stopLoad } from './helpers/hosts-scenario.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';
import { clientTls, createTestCa, etcdTls, type TestCa } from './helpers/test-ca.js';

const SECRET = 'hosts-tls-test-secret-0123456789abcdef';
const servers = new LocalServers('hosts-tls-test');
let lab: NetnsLab;
let ca: TestCa;
let otherCa: TestCa;
let cluster: HostCluster;

before(async () => {
  lab = await createNetnsLab('dabtls', 3);
  const etcdAddress = await lab.addServerAddress();
  // One host certificate names every address: the hosts', etcd's, and the gateway's, which etcd
  // members dial each other from (etcd checks a peer certificate's IP entries against the caller).
  ca = await createTestCa([...lab.hosts.map((host) => host.address), etcdAddress, lab.gatewayAddress]);
  otherCa = await createTestCa([], 'other');
  const etcd = await startEtcdCluster(servers, 3, etcdAddress, etcdTls(ca));
  cluster = await HostCluster.create(lab, etcd.clientUrls, `/dabba-hosts-tls-test-${process.pid}/`, SECRET, { tls: ca });
});

after(async () => {
  try {
    await closeHostTest(cluster, lab, servers);
  } finally {
    ca?.remove();
    otherCa?.remove();
  }
});

test('three hosts over TLS survive kill -9 of head, middle and tail; clients without the right certificate are refused', { timeout: 120_000 }, async (t) => {
  await Promise.all(cluster.hosts.map((host) => cluster.start(host.index)));
  await cluster.waitForFullChain();
  for (const host of cluster.hosts) assert.match(host.url, /^wss:\/\//);
  const clients = [await cluster.connect(), await cluster.connect([cluster.hosts[2]!.url])];
  const load = startLoad(clients, 6);
  try {
    await progress(load, 300);
    for (const role of ['head', 'middle', 'tail'] as const) await killAndRejoin(t, cluster, load, clients[0]!, role);

    // HTTP over TLS, through any host: a write through one, read back through another.
    const put = await cluster.request(0, '/kv/over-https', { method: 'PUT', body: 'sealed in transit' });
    assert.equal(put.status, 204, put.body.toString());
    load.acknowledgedWrites++;
    const get = await cluster.request(2, '/kv/over-https');
    assert.deepEqual([get.status, get.body.toString()], [200, 'sealed in transit']);

    // Refusals, with the chain serving all along.
    const hosts = cluster.hosts.map((host) => host.url);
    const unauthenticated = (error: unknown): boolean => isDabbaError(error, ErrorCode.unauthenticated);
    await assert.rejects(connect({ hosts, secret: SECRET, tls: clientTls(ca, false) }), unauthenticated, 'a client without a certificate');
    await assert.rejects(connect({ hosts, secret: SECRET, tls: clientTls(otherCa) }), unauthenticated, 'a client trusting another CA');
    const plain = connectPeerLink({ url: `${hosts[0]!.replace('wss:', 'ws:')}/client`, secret: Buffer.from(SECRET), nodeId: 'client', maxRecordBytes: 1024, validate: frameEnvelopeValidator(), onRecord: () => undefined });
    await assert.rejects(plain, (error: unknown) => isDabbaError(error, ErrorCode.linkClosed), 'a plain ws:// dial to a TLS host');
    await progress(load, 200);
    t.diagnostic('a client without a certificate, one trusting another CA, and a plain ws:// dial were refused; the load went on');
  } finally {
    await stopLoad(load, clients, cluster);
  }
  await checkOutcome(cluster, clients, load);
  for (const client of clients) await client.close();
});
