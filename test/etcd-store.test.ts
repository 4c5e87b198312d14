/**
 * EtcdConfigurationStore against a real 3-member etcd cluster on loopback, started here (as root,
 * `etcd-server` is installed with apt if missing; otherwise the failure names the command). Each
 * test uses its own key prefix; the last one SIGKILLs the etcd leader, so it stays last.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import type { ChainChange, ChainEntry } from '../native-free-core/master/table-round.js';
import { ErrorCode, isDabbaError } from '../native-free-core/errors.js';
import { isHealthy, isLeader, startEtcdCluster, type EtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers, waitUntilReady } from '../src/bench/peers/servers.js';
import { EtcdConfigurationStore, type HostChange, type StoredTable } from '../src/master/etcd-store.js';
import { Inbox } from './helpers/inbox.js';

/** Bounds every wait on an event, so a regression fails instead of hanging. */
const EVENT_TIMEOUT_MS = 10_000;

const servers = new LocalServers('etcd-store-test');
let cluster: EtcdCluster;
let raw: Etcd3 | undefined;
const stores: EtcdConfigurationStore[] = [];

before(async () => {
  cluster = await startEtcdCluster(servers);
  raw = new Etcd3({ hosts: cluster.clientUrls });
});

after(async () => {
  try {
    await Promise.all(stores.map((store) => store.close()));
    raw?.close();
  } finally {
    // Stops exactly the members started above (by PID) and removes their data dirs.
    await servers.stop(1000);
  }
});

function openStore(prefix: string, hosts = cluster.clientUrls): EtcdConfigurationStore {
  const store = new EtcdConfigurationStore({ hosts, prefix: `/dabba-test/${prefix}/` });
  stores.push(store);
  return store;
}

/** A chain entry with every participant on host `host`. */
function entry(epoch: number, members: number[], joining: number | null = null, host = 'h1'): ChainEntry {
  const homes = new Map([...members, ...(joining === null ? [] : [joining])].map((id) => [id, { host, incarnation: 'i1' }]));
  return { configuration: { epoch, members, joining }, homes };
}

function configure(chain: number, previousEpoch: number | null, next: ChainEntry): ChainChange {
  return { kind: 'configure', chain, previousEpoch, entry: next, what: 'test' };
}

/** The epochs and members of a table's chains, comparable with deepEqual. */
function shapeOf(table: StoredTable): Array<[number, readonly number[]] | null> {
  return table.entries.map((chainEntry) => (chainEntry === null ? null : [chainEntry.configuration.epoch, chainEntry.configuration.members]));
}

test('settings: the first host fixes them; a later host with others is refused, one with none takes them', async () => {
  const first = openStore('settings');
  const later = openStore('settings');
  assert.equal(await first.settings(), null);
  assert.deepEqual(await first.adoptSettings({ chains: 12 }), { chains: 12, replicas: 3 });
  assert.deepEqual(await later.adoptSettings({}), { chains: 12, replicas: 3 });
  assert.deepEqual(await later.adoptSettings({ chains: 12, replicas: 3 }), { chains: 12, replicas: 3 });
  await assert.rejects(later.adoptSettings({ chains: 64 }), (error) => {
    assert.ok(isDabbaError(error, ErrorCode.invalidArgument));
    assert.match(error.message, /has --chains 12 --replicas 3, fixed when it was first started; this host was started with --chains 64/);
    return true;
  });
});

test('a round is one transaction: of two rounds from the same epochs exactly one lands, with its replica ids', async () => {
  const first = openStore('round');
  const second = openStore('round');
  assert.deepEqual(shapeOf(await first.loadTable(2)), [null, null]);
  assert.equal(await first.commitRound([configure(0, null, entry(1, [1, 2])), configure(1, null, entry(1, [3, 4]))], { from: 1, to: 5 }), true);
  assert.equal(await second.commitRound([configure(0, null, entry(1, [9]))], { from: 1, to: 10 }), false, 'chain 0 is configured already');
  const table = await second.loadTable(2);
  assert.deepEqual(shapeOf(table), [[1, [1, 2]], [1, [3, 4]]]);
  assert.equal(table.nextReplicaId, 5);

  // Both from epoch 1 of chain 1 (and one of them also moves chain 0): exactly one lands, whole.
  const [firstWon, secondWon] = await Promise.all([
    first.commitRound([configure(0, 1, entry(2, [2])), configure(1, 1, entry(2, [4], 5))], { from: 5, to: 6 }),
    second.commitRound([configure(1, 1, entry(2, [3]))], { from: 5, to: 5 }),
  ]);
  assert.equal(Number(firstWon) + Number(secondWon), 1, `exactly one winner (first ${firstWon}, second ${secondWon})`);
  const after = await first.loadTable(2);
  assert.deepEqual(shapeOf(after), firstWon ? [[2, [2]], [2, [4]]] : [[1, [1, 2]], [2, [3]]]);
  assert.equal(after.nextReplicaId, firstWon ? 6 : 5);
  assert.equal(after.entries[1]!.homes.get(firstWon ? 5 : 3)?.host, 'h1', 'the homes are stored with the entry');

  await assert.rejects(first.commitRound([configure(0, 2, entry(3, [1, 1]))], { from: 6, to: 6 }), (error) => isDabbaError(error, ErrorCode.invalidArgument));
  // A handoff request compares nothing (a stale one is harmless) and is read back per chain.
  assert.equal(await first.commitRound([{ kind: 'request-handoff', chain: 1, request: { epoch: 2, joiner: 5 } }], { from: 6, to: 6 }), true);
  assert.deepEqual((await first.loadTable(2)).handoffs, [null, { epoch: 2, joiner: 5 }]);
});

test('watchTable delivers the table now, then every change in order', async () => {
  const master = openStore('watch');
  const observer = openStore('watch');
  await master.commitRound([configure(0, null, entry(1, [1, 2, 3]))], { from: 1, to: 4 });
  const seen = new Inbox<number>(EVENT_TIMEOUT_MS);
  const stop = await observer.watchTable(1, (table) => seen.push(table.entries[0]?.configuration.epoch ?? 0));
  let members = [1, 2, 3];
  for (let epoch = 2; epoch <= 8; epoch++) {
    members = epoch % 2 === 0 ? members.slice(1) : [...members, 10 + epoch];
    assert.equal(await master.commitRound([configure(0, epoch - 1, entry(epoch, members))], { from: 4, to: 4 }), true);
  }
  await seen.until((epoch) => epoch === 8, 'epoch 8');
  assert.deepEqual(seen.items, [1, 2, 3, 4, 5, 6, 7, 8]);
  await stop();
});

test('a malformed stored entry is reported with the key, by loadTable and by watchTable', async () => {
  const store = openStore('malformed');
  await raw!.put('/dabba-test/malformed/chains/0/configuration').value('{"epoch":3,"members":"1,2"}');
  await assert.rejects(store.loadTable(1), (error) => {
    assert.ok(isDabbaError(error, ErrorCode.malformedFrame));
    assert.match(error.message, /\/dabba-test\/malformed\/chains\/0\/configuration .*members must be an array/);
    return true;
  });
  await raw!.put('/dabba-test/malformed/chains/0/configuration').value('{"epoch":3,"members":[1,2],"joining":null,"homes":{"1":{"host":"h1","incarnation":"i1"}}}');
  await assert.rejects(store.loadTable(1), /homes must name exactly the members and the joiner/);
  await raw!.put('/dabba-test/malformed/chains/0/configuration').value('{"epoch":3,"members":[1,2],"joining":null,"homes":{"1":{"host":"h1","incarnation":"i1"},"2":{"host":"h2","incarnation":"i1"}}}');
  const errors = new Inbox<Error>(EVENT_TIMEOUT_MS);
  const seen = new Inbox<number>(EVENT_TIMEOUT_MS);
  const stop = await store.watchTable(1, (table) => seen.push(table.entries[0]!.configuration.epoch), errors.push);
  await raw!.put('/dabba-test/malformed/chains/0/configuration').value('{"epoch":4,"members":[1,1],"joining":null,"homes":{}}');
  const error = await errors.until(() => true, 'a watch error');
  assert.match(error.message, /duplicate member/);
  await raw!.put('/dabba-test/malformed/chains/5/configuration').value('{}');
  const outside = await errors.until((candidate) => /chains\/5/.test(candidate.message), 'an error for a chain beyond the table');
  assert.match(outside.message, /is not a key of this cluster's 1 chains/);
  assert.deepEqual(seen.items, [3]);
  await stop();
});

test('a host disappears when its lease is revoked, or after the TTL once its keepalive stops', async () => {
  const master = openStore('hosts');
  const hostProcess = openStore('hosts');
  const changes = new Inbox<HostChange>(EVENT_TIMEOUT_MS);
  const stop = await master.watchHosts(changes.push);
  const leaving = await hostProcess.registerHost('host-a', 2);
  const crashing = await hostProcess.registerHost('host-b', 2);
  await changes.until((change) => change.kind === 'registered' && change.hostId === 'host-b', 'host-b registered');
  assert.deepEqual(await master.liveHosts(), ['host-a', 'host-b']);

  await leaving.revoke();
  await changes.until((change) => change.kind === 'gone' && change.hostId === 'host-a', 'host-a gone');
  assert.deepEqual(await master.liveHosts(), ['host-b']);

  const stoppedAt = Date.now();
  crashing.stopKeepalive();
  await changes.until((change) => change.kind === 'gone' && change.hostId === 'host-b', 'host-b gone');
  const elapsedMs = Date.now() - stoppedAt;
  // Renewed every TTL/3, so the key lives between about 2/3 of the TTL and the TTL after the last renewal.
  assert.ok(elapsedMs > 1000 && elapsedMs < 4000, `host-b went after ${elapsedMs} ms with a 2 s TTL`);
  assert.deepEqual(await master.liveHosts(), []);
  assert.deepEqual(changes.items, [
    { kind: 'registered', hostId: 'host-a' },
    { kind: 'registered', hostId: 'host-b' },
    { kind: 'gone', hostId: 'host-a' },
    { kind: 'gone', hostId: 'host-b' },
  ]);
  assert.equal(leaving.lost.aborted || crashing.lost.aborted, false, 'leaving on purpose is not a loss');
  await stop();
});

test('one master at a time: the next candidate leads when the leader resigns; a revoked lease signals lost', async () => {
  const electionKeys = '/dabba-test/election/election/master/';
  const alice = openStore('election');
  const bob = openStore('election');
  const aliceLeads = await alice.campaign('alice', { ttlSeconds: 2 });
  let bobElected = false;
  const bobLeads = bob.campaign('bob', { ttlSeconds: 2 }).then((leadership) => ((bobElected = true), leadership));
  // Bounded polling until bob's candidacy is in etcd, so the hand-over below is really tested.
  await waitUntilReady('bob to be a candidate', async () => (await raw!.getAll().prefix(electionKeys).count()) === 2, []);
  assert.equal(await raw!.namespace('/dabba-test/election/').election('master').leader(), 'alice');
  assert.equal(bobElected, false);

  await aliceLeads.resign();
  const bobLeadership = await bobLeads;
  assert.equal(await raw!.namespace('/dabba-test/election/').election('master').leader(), 'bob');
  assert.equal(aliceLeads.lost.aborted, false, 'resigning is not a loss');

  // Someone else revokes bob's lease (as etcd does when it expires): bob must learn it lost.
  const [bobKey] = await raw!.getAll().prefix(electionKeys).keys();
  const leaseId = bobKey!.slice(electionKeys.length);
  await raw!.leaseClient.leaseRevoke({ ID: leaseId });
  await Promise.race([once(bobLeadership.lost, 'abort'), rejectAfter(EVENT_TIMEOUT_MS, 'bob to notice the loss')]);
  assert.equal(await raw!.namespace('/dabba-test/election/').election('master').leader(), undefined);
});

test('rounds and watches keep working after the etcd leader is killed with SIGKILL', async () => {
  const store = openStore('failover');
  assert.equal(await store.commitRound([configure(0, null, entry(1, [1, 2, 3]))], { from: 1, to: 4 }), true);
  const seen = new Inbox<number>(EVENT_TIMEOUT_MS);
  const stop = await openStore('failover').watchTable(1, (table) => seen.push(table.entries[0]!.configuration.epoch));

  const leaders = await Promise.all(cluster.members.map((member) => isLeader(member.clientUrl)));
  const leader = cluster.members[leaders.indexOf(true)];
  assert.ok(leader !== undefined, `one member leads (${leaders})`);
  process.kill(leader.server.pid, 'SIGKILL');
  await leader.server.exited;
  const survivors = cluster.members.filter((member) => member !== leader);
  const killedAt = Date.now();
  await waitUntilReady(
    'the surviving etcd members to elect a new leader',
    async () => (await Promise.all(survivors.map((member) => isHealthy(member.clientUrl)))).every(Boolean),
    survivors.map((member) => member.server),
  );
  const reelectedMs = Date.now() - killedAt;

  assert.equal(await store.commitRound([configure(0, 1, entry(2, [2, 3]))], { from: 4, to: 4 }), true);
  assert.deepEqual(shapeOf(await store.loadTable(1)), [[2, [2, 3]]]);
  await seen.until((epoch) => epoch === 2, 'epoch 2 through the watch');
  assert.deepEqual(seen.items, [1, 2]);
  console.log(`# killed leader ${leader.name} (pid ${leader.server.pid}); new leader after ${reelectedMs} ms`);
  await stop();
});

function rejectAfter(ms: number, what: string): Promise<never> {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms).unref());
}
