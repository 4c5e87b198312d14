/**
 * Durable hosts (issue 13): three `dabba serve --data-dir DIR --durability fsync` processes
 * (network namespaces as root, loopback otherwise) with a real etcd, under load from a remote
 * client whose history is recorded.
 *
 * - The tail's host killed with SIGKILL and restarted with its directory before its lease ends
 *   comes back in its incarnation, with the same replica id: it restarts from its log and is sent only the writes it missed (its
 *   writes applied after the restart are a small part of its state), and no reconfiguration is
 *   needed if it is back before its lease ends.
 * - The head's host killed and restarted: the chain went on without it at once (its successor
 *   found its port closed), so its host gets a new replica, a joiner, which starts from the log
 *   the old one left and is sent only what that lacks, from the tail's log: no copy of the store.
 * - All three killed at once and restarted: every acknowledged write is there, the history stays
 *   linearizable, the replicas are identical and applied exactly the writes acknowledged.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';
import { closeHostTest, HostCluster } from './helpers/host-cluster.js';
import { burst, checkOutcome, progress, startLoad, stopLoad } from './helpers/hosts-scenario.js';

const SECRET = 'hosts-durability-test-secret-0123456789';
const servers = new LocalServers('hosts-durability-test');
const dataRoot = mkdtempSync(join(tmpdir(), 'dabba-hosts-durability-'));
let lab: NetnsLab;
let cluster: HostCluster;

before(async () => {
  lab = await createNetnsLab('dabdurable', 3);
  const etcdAddress = await lab.addServerAddress();
  const etcd = await startEtcdCluster(servers, 1, etcdAddress);
  cluster = await HostCluster.create(lab, etcd.clientUrls, `/dabba-hosts-durability-${process.pid}/`, SECRET, {
    // A lease long enough for a restart to come back in it (the whole-cluster case needs none).
    args: (index) => ['--data-dir', join(dataRoot, `h${index + 1}`), '--durability', 'fsync', '--lease-ttl', '15'],
  });
});

after(async () => {
  await closeHostTest(cluster, lab, servers);
  rmSync(dataRoot, { recursive: true, force: true });
});

interface ReplicaLine {
  chain: number;
  replicaId: number;
  stats: { appliedSeq: number; writesApplied: number; recoveredSeq: number; logSyncs: number } | null;
}

async function replicaOn(index: number): Promise<ReplicaLine> {
  const status = JSON.parse((await cluster.request(index, '/status')).body.toString()) as { replicas: ReplicaLine[] };
  return status.replicas.find((replica) => replica.chain === 0)!;
}

test('durable hosts: one restarted catches up by delta as the same replica, or as a joiner from its old log once the chain went on without it; all three killed at once lose no acknowledged write', { timeout: 240_000 }, async (t) => {
  await Promise.all([0, 1, 2].map((index) => cluster.start(index)));
  await cluster.waitForFullChain();
  const client = await cluster.connect();
  // State to catch up against: 20,000 keys of 100 B.
  const value = 'v'.repeat(100);
  for (let start = 0; start < 20_000; start += 2_000) await client.putMany(Array.from({ length: 2_000 }, (_, index) => [`pre${start + index}`, value] as [string, string]));
  const load = startLoad([client], 6);
  load.acknowledgedWrites += 20_000; // the state above: the chain must have applied those too
  try {
    await progress(load, 300);
    assert.ok((await replicaOn(0)).stats!.logSyncs > 0, 'the replicas fsync their logs');

    // One host: the tail (a head or a middle is evicted as soon as its successor finds its port
    // closed, and comes back as a new replica with a full copy; a tail is removed only when its
    // lease ends, so a tail back before that is still a member).
    const tail = cluster.hostWithRole('tail');
    const replica = cluster.replicaOf(tail);
    const epoch = cluster.current!.epoch;
    // Down while its process restarts: the head and the middle go on applying writes, which wait for it.
    await cluster.kill(tail);
    await cluster.start(tail);
    await progress(load, 300);
    assert.equal(cluster.replicaOf(tail), replica, 'the restarted host runs the same replica');
    const restarted = await replicaOn(tail);
    assert.equal(restarted.replicaId, replica);
    assert.ok(restarted.stats!.recoveredSeq >= 20_000, `it recovered its log (through seq ${restarted.stats!.recoveredSeq})`);
    assert.ok(restarted.stats!.writesApplied * 20 < restarted.stats!.appliedSeq, `sent only what it missed: ${restarted.stats!.writesApplied} writes of ${restarted.stats!.appliedSeq}`);
    t.diagnostic(`tail restarted: recovered through seq ${restarted.stats!.recoveredSeq}, then applied ${restarted.stats!.writesApplied} writes to reach ${restarted.stats!.appliedSeq}; epoch ${epoch} -> ${cluster.current!.epoch}`);

    // The head: removed at once, so its host comes back to a chain that went on without it.
    const head = cluster.hostWithRole('head');
    const oldHead = cluster.replicaOf(head)!;
    await cluster.kill(head);
    await cluster.waitFor('the chain to go on without the old head', (configuration) => configuration !== null && !configuration.members.includes(oldHead));
    await cluster.start(head);
    await cluster.waitForFullChain();
    await progress(load, 300);
    const joined = await replicaOn(head);
    assert.notEqual(joined.replicaId, oldHead, 'a new replica: the old one was removed');
    assert.ok(joined.stats!.recoveredSeq >= 20_000, `it started from the old head's log (through seq ${joined.stats!.recoveredSeq})`);
    // What it missed while its host restarted under load, and what came after: a part of the state, not a copy of it.
    assert.ok(joined.stats!.writesApplied * 4 < joined.stats!.appliedSeq, `sent only what that log lacked: ${joined.stats!.writesApplied} writes of ${joined.stats!.appliedSeq}`);
    t.diagnostic(`head restarted after its removal: joiner ${joined.replicaId} started from the log of ${oldHead} through seq ${joined.stats!.recoveredSeq}, then applied ${joined.stats!.writesApplied} writes to reach ${joined.stats!.appliedSeq}`);

    // All three at once, in the middle of a burst of pipelined writes.
    burst(client, load, 'before-the-kill');
    await progress(load, 100);
    const replicas = [0, 1, 2].map((index) => cluster.replicaOf(index));
    await Promise.all([0, 1, 2].map((index) => cluster.kill(index)));
    await Promise.all([0, 1, 2].map((index) => cluster.start(index)));
    await cluster.waitForFullChain();
    await progress(load, 300);
    const after = [0, 1, 2].map((index) => cluster.replicaOf(index));
    t.diagnostic(`replicas before the kill ${replicas.join(',')}, after the restart ${after.join(',')}; epoch ${cluster.current!.epoch}`);
  } finally {
    await stopLoad(load, [client], cluster);
  }
  // Every host holds a replica again before their digests are compared.
  await cluster.waitForFullChain();
  await checkOutcome(cluster, [client], load);
  for (let index = 0; index < 20_000; index += 997) assert.equal((await client.get(`pre${index}`))?.toString(), value, `pre${index} survived`);
  await client.close();
});
