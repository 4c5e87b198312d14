/**
 * Batches damaged on the wire between hosts: three `dabba serve` processes (network namespaces as
 * root, loopback otherwise) with a real etcd, whose host links flip a byte in every 25th write batch
 * they send (the DABBA_TEST_DAMAGE_BATCH_EVERY hook; the sender's own copy stays intact). Under load
 * from a remote client, every damaged batch must be refused by the replica that receives it
 * (DABBA_ERR_CORRUPT in the hosts' refusal counts) and sent again at its Hello, within the epoch (no
 * reconfiguration); at the end every acknowledged write is readable, the history is linearizable,
 * and the replicas are identical and applied exactly the writes acknowledged.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';
import { HostCluster } from './helpers/host-cluster.js';
import { burst, checkOutcome, progress, startLoad, stopLoad } from './helpers/hosts-scenario.js';

const SECRET = 'hosts-damage-test-secret-0123456789';
const servers = new LocalServers('hosts-damage-test');
let lab: NetnsLab;
let cluster: HostCluster;

before(async () => {
  lab = await createNetnsLab('dabdamage', 3);
  const etcdAddress = await lab.addServerAddress();
  const etcd = await startEtcdCluster(servers, 1, etcdAddress);
  cluster = await HostCluster.create(lab, etcd.clientUrls, `/dabba-hosts-damage-${process.pid}/`, SECRET, {
    env: { DABBA_TEST_DAMAGE_BATCH_EVERY: '25' },
  });
});

after(async () => {
  try {
    await cluster?.close();
  } finally {
    await lab?.close();
    await servers.stop(1000);
  }
});

test('batches damaged between hosts are refused and sent again, within the epoch, and nothing damaged is applied', { timeout: 120_000 }, async (t) => {
  for (let index = 0; index < 3; index++) await cluster.start(index);
  await cluster.waitForFullChain();
  const epoch = cluster.current!.epoch;
  const client = await cluster.connect();
  const load = startLoad([client], 6);
  try {
    // Bursts of pipelined writes fill batches, so the damage lands in large ones too.
    for (let round = 1; round <= 3; round++) {
      burst(client, load, `damage-${round}`);
      await progress(load, 500);
    }
  } finally {
    await stopLoad(load, [client], cluster);
  }
  const refused = await Promise.all(
    cluster.hosts.map(async (host) => {
      const status = JSON.parse((await cluster.request(host.index, '/status')).body.toString()) as { refusals: Record<string, number> };
      return status.refusals['DABBA_ERR_CORRUPT'] ?? 0;
    }),
  );
  const damaged = refused.reduce((sum, count) => sum + count, 0);
  t.diagnostic(`damaged batches refused, by host: ${refused.join(', ')}`);
  assert.ok(damaged > 0, 'some batches were damaged on the way, and refused');
  assert.equal(cluster.current!.epoch, epoch, 'resent within the epoch: no reconfiguration');
  await checkOutcome(cluster, [client], load);
  await client.close();
});
