/**
 * Batches damaged on the wire between hosts: three `dabba serve` processes (network namespaces as
 * root, loopback otherwise) with a real etcd, whose host links flip a byte in every 5th write batch
 * they send, 8 at most per host (the DABBA_TEST_DAMAGE_BATCH_EVERY and DABBA_TEST_DAMAGE_BATCHES
 * hooks; the sender's own copy stays intact). Under load from a remote client, every damaged batch
 * must be refused by the replica that receives it (DABBA_ERR_CORRUPT in the hosts' refusal counts)
 * and sent again at its Hello, within the epoch (no reconfiguration). Then the head's host is killed
 * and restarted: it joins behind the tail, whose host now damages what it sends the joiner; a
 * joiner that gets a damaged batch is given up and another placed, until one gets through. At the
 * end every acknowledged write is readable, the history is linearizable, and the replicas are
 * identical and applied exactly the writes acknowledged.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';
import { closeHostTest, HostCluster } from './helpers/host-cluster.js';
import { burst, checkOutcome, killAndRejoin, progress, startLoad, stopLoad } from './helpers/hosts-scenario.js';

const SECRET = 'hosts-damage-test-secret-0123456789';
const servers = new LocalServers('hosts-damage-test');
let lab: NetnsLab;
let cluster: HostCluster;

before(async () => {
  lab = await createNetnsLab('dabdamage', 3);
  const etcdAddress = await lab.addServerAddress();
  const etcd = await startEtcdCluster(servers, 1, etcdAddress);
  cluster = await HostCluster.create(lab, etcd.clientUrls, `/dabba-hosts-damage-${process.pid}/`, SECRET, {
    env: { DABBA_TEST_DAMAGE_BATCH_EVERY: '5', DABBA_TEST_DAMAGE_BATCHES: '8' },
  });
});

after(() => closeHostTest(cluster, lab, servers));

test('batches damaged between hosts are refused and sent again, within the epoch; a joiner that gets one is replaced; nothing damaged is applied', { timeout: 180_000 }, async (t) => {
  for (let index = 0; index < 3; index++) await cluster.start(index);
  await cluster.waitForFullChain();
  const epoch = cluster.current!.epoch;
  const client = await cluster.connect();
  const load = startLoad([client], 6);
  let damaged = 0;
  try {
    // Bursts of pipelined writes fill batches, so the damage lands in large ones too.
    for (let round = 1; round <= 3; round++) {
      burst(client, load, `damage-${round}`);
      await progress(load, 500);
    }
    damaged = (await refusedByHost()).reduce((sum, count) => sum + count, 0);
    assert.ok(damaged > 0, 'some batches were damaged on the way, and refused');
    assert.equal(cluster.current!.epoch, epoch, 'resent within the epoch: no reconfiguration');
    // The tail's host has sent no batch yet (a tail has no successor): what it sends a joiner is.
    await killAndRejoin(t, cluster, load, client, 'head');
  } finally {
    await stopLoad(load, [client], cluster);
  }
  const joinersGivenUp = cluster.hosts.map((host) => host.log.join('').split('"event":"join-batch-damaged"').length - 1).reduce((sum, count) => sum + count, 0);
  t.diagnostic(`damaged batches refused before the restart: ${damaged}; by host at the end: ${(await refusedByHost()).join(', ')}; joiners given up for a damaged batch: ${joinersGivenUp}`);
  await checkOutcome(cluster, [client], load);
  await client.close();
});

/** DABBA_ERR_CORRUPT refusals each host counted so far, by host. */
async function refusedByHost(): Promise<number[]> {
  return Promise.all(
    cluster.hosts.map(async (host) => {
      const status = JSON.parse((await cluster.request(host.index, '/status')).body.toString()) as { refusals: Record<string, number> };
      return status.refusals['DABBA_ERR_CORRUPT'] ?? 0;
    }),
  );
}
