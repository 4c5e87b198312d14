/**
 * A chain across three `dabba serve` processes, each a separate host in its own network namespace
 * (as root, as in CI; loopback ports otherwise), configured through a real 3-member etcd cluster.
 * Under concurrent load from remote clients: the head, a middle and the tail host are SIGKILLed and
 * restarted (each comes back as a new replica and joins), a host is cut off the network and healed,
 * an unauthenticated peer and a client sending garbage are refused. Then: the history is
 * linearizable, every acknowledged write is readable, the replicas are identical, and no write was
 * applied twice (the tail's sequence equals the writes acknowledged). The steps shared with the
 * run over TLS (hosts-tls.test.ts) are in helpers/hosts-scenario.ts.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { isDabbaError, ErrorCode } from '../native-free-core/errors.js';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { connectPeerLink, frameEnvelopeValidator, LinkCloseCode } from '../src/transport/peer-link.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';
import { closeHostTest, HostCluster } from './helpers/host-cluster.js';
import { burst, checkOutcome, killAndRejoin, progress, startLoad, stopLoad } from './helpers/hosts-scenario.js';

const SECRET = 'hosts-test-secret-0123456789abcdef';
const servers = new LocalServers('hosts-test');
let lab: NetnsLab;
let cluster: HostCluster;
/** Where etcd listens: not the gateway, so a host can lose etcd and still talk to the clients. */
let etcdAddress: string;

before(async () => {
  lab = await createNetnsLab('dabhosts', 3);
  etcdAddress = await lab.addServerAddress();
  const etcd = await startEtcdCluster(servers, 3, etcdAddress);
  cluster = await HostCluster.create(lab, etcd.clientUrls, `/dabba-hosts-test-${process.pid}/`, SECRET);
});

after(() => closeHostTest(cluster, lab, servers));

test('three hosts survive kill -9 of head, middle and tail, a partition, and bad peers', { timeout: 240_000 }, async (t) => {
  for (let index = 0; index < 3; index++) await cluster.start(index);
  await cluster.waitForFullChain();
  const clients = [await cluster.connect(), await cluster.connect([cluster.hosts[2]!.url])];
  assert.notEqual(clients[0]!.clientId, clients[1]!.clientId, 'each client gets its own id');
  const load = startLoad(clients, 6);
  try {
    await progress(load, 300);

    for (const role of ['head', 'middle', 'tail'] as const) await killAndRejoin(t, cluster, load, clients[0]!, role);

    // A partition: the middle host's link goes down; its lease expires and it is removed; once
    // healed it notices, leaves as that replica and joins again as a new one.
    const cut = cluster.hostWithRole('middle');
    const cutReplica = cluster.replicaOf(cut)!;
    if (lab.isolated) {
      burst(clients[1]!, load, 'before-partition');
      await lab.cut(cut);
      await cluster.waitFor(`replica ${cutReplica} (cut off) to be removed`, (configuration) => configuration !== null && !configuration.members.includes(cutReplica));
      await progress(load, 200);
      await lab.heal(cut);
      await cluster.waitForFullChain();
      assert.notEqual(cluster.replicaOf(cut), cutReplica);
      t.diagnostic(`host ${cluster.hosts[cut]!.hostId} cut off, removed, healed and rejoined; epoch ${cluster.current!.epoch}`);
    } else {
      t.diagnostic('not root: no network namespaces, so the partition step did not run (hosts share loopback)');
    }

    // A tail that loses etcd and the other hosts but not its clients: its lease runs out and a new
    // tail takes over, while clients can still reach the old one. It must stop answering reads
    // before the new tail can commit anything (the read lease), or the history shows a stale read.
    if (lab.isolated) {
      const tail = cluster.hostWithRole('tail');
      const tailReplica = cluster.replicaOf(tail)!;
      const unreachable = [etcdAddress, ...lab.hosts.filter((host) => host.index !== tail).map((host) => host.address)];
      burst(clients[1]!, load, 'before-tail-isolation');
      await lab.blackhole(tail, unreachable);
      await cluster.waitFor(`replica ${tailReplica} (the isolated tail) to be removed`, (configuration) => configuration !== null && !configuration.members.includes(tailReplica));
      await progress(load, 300);
      await lab.unblackhole(tail, unreachable);
      await cluster.waitForFullChain();
      t.diagnostic(`the tail (host ${cluster.hosts[tail]!.hostId}) lost etcd and its peers but not its clients: replaced, then rejoined; epoch ${cluster.current!.epoch}`);
    } else {
      t.diagnostic('not isolated: the tail-isolation step needs namespaces and did not run');
    }

    // A network blip within an epoch: the middle's link to the head breaks (its TCP connections are
    // killed); it redials, tells the head how far it got, and the head resends what was lost. No
    // reconfiguration happens.
    if (lab.isolated) {
      const epochBeforeBlip = cluster.current!.epoch;
      const blipStarted = Date.now();
      const middle = cluster.hostWithRole('middle');
      const head = cluster.hostWithRole('head');
      const repairsBefore = cluster.hosts[middle]!.log.join('').split('"event":"link-repaired"').length;
      burst(clients[0]!, load, 'before-blip');
      await cluster.breakLinks(middle, head);
      await progress(load, 300);
      const repairsAfter = cluster.hosts[middle]!.log.join('').split('"event":"link-repaired"').length;
      // Once: a redial storm (each new link replacing the last at the head, whose close of the
      // older one looked like another break) once flapped the link until the master reconfigured.
      assert.equal(repairsAfter - repairsBefore, 1, 'the middle redialed the head once and asked it to resend');
      assert.equal(cluster.current!.epoch, epochBeforeBlip, `a blip is repaired without a reconfiguration; changes since:\n${cluster.changesSince(epochBeforeBlip)}\nthe hosts' warnings and the master's decisions since the blip:\n${cluster.notableLogSince(blipStarted)}`);
      t.diagnostic(`the middle's links to the head were killed: redialed and repaired in epoch ${epochBeforeBlip}`);
    } else {
      t.diagnostic('not isolated: killing one host\'s sockets (ss -K) needs its own namespace, so the blip step did not run');
    }

    // An unauthenticated peer is refused before any frame is read.
    const wrongSecret = connectPeerLink({
      url: `${cluster.hosts[0]!.url}/peer`,
      secret: Buffer.from('not-the-cluster-secret-at-all'),
      nodeId: 'replica:999',
      maxRecordBytes: 1024,
      validate: frameEnvelopeValidator(),
      onRecord: () => undefined,
    });
    await assert.rejects(wrongSecret, (error: unknown) => isDabbaError(error) && error.code === ErrorCode.unauthenticated);
    // A client that sends garbage is cut off with a coded close; the cluster keeps serving.
    let closedWith = 0;
    let onClosed: () => void = () => undefined;
    const closed = new Promise<void>((resolve) => (onClosed = resolve));
    const garbage = await connectPeerLink({
      url: `${cluster.hosts[cluster.hostWithRole('head')]!.url}/client`,
      secret: Buffer.from(SECRET),
      nodeId: 'client',
      maxRecordBytes: 1024 * 1024,
      validate: () => null,
      onRecord: () => undefined,
      onClose: (code) => {
        closedWith = code;
        onClosed();
      },
    });
    garbage.trySend(Buffer.from('this is not a FlatBuffers frame at all, not even close'));
    await closed;
    assert.equal(closedWith, LinkCloseCode.malformedRecord);
    await progress(load, 300);
  } finally {
    // If the end hangs, stopLoad says where things stand (this test's timeout alone would not).
    await stopLoad(load, clients, cluster);
  }
  t.diagnostic(`clients resent after a silence: ${clients.map((client) => client.stats().resends).join(', ')} times`);

  await checkOutcome(cluster, clients, load);
  // Reads at any replica (the default): every member's host answered some of the reads since it
  // last joined, and the history above, read from all of them, was linearizable.
  await Promise.all(Array.from({ length: 600 }, (_, index) => clients[index % 2]!.get(`k${index % 8}`)));
  for (const host of cluster.hosts) {
    const status = JSON.parse((await cluster.request(host.index, '/status')).body.toString()) as { replicas: Array<{ role: string | null; servingReads: boolean; stats: { readsServed: number } | null }> };
    const replica = status.replicas[0]!;
    assert.equal(replica.servingReads, true, `${host.hostId}, the ${replica.role}, answers reads`);
    assert.ok(replica.stats!.readsServed > 0, `${host.hostId}, the ${replica.role}, answered no read`);
  }
  for (const client of clients) await client.close();
});
