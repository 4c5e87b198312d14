/**
 * EtcdConfigurationStore against a real 3-member etcd cluster on loopback, started here (as root,
 * `etcd-server` is installed with apt if missing; otherwise the failure names the command). Each
 * test uses its own key prefix; the last one SIGKILLs the etcd leader, so it stays last.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import type { Configuration } from '../native-free-core/master/chain-master.js';
import { ErrorCode, isDabbaError } from '../native-free-core/errors.js';
import { isHealthy, isLeader, startEtcdCluster, type EtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers, waitUntilReady } from '../src/bench/peers/servers.js';
import { EtcdConfigurationStore, type HostChange } from '../src/master/etcd-store.js';
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

function configuration(epoch: number, members: number[], joining: number | null = null): Configuration {
  return { epoch, members, joining };
}

test('initialize once, then of two concurrent compareAndSets from the same epoch exactly one wins', async () => {
  const first = openStore('cas');
  const second = openStore('cas');
  assert.equal(await first.load(), null);
  assert.equal(await first.initialize(configuration(1, [1, 2, 3])), true);
  assert.equal(await second.initialize(configuration(1, [7])), false, 'a configuration already exists');

  const dropTail = configuration(2, [1, 2]);
  const dropHead = configuration(2, [2, 3]);
  const [firstWon, secondWon] = await Promise.all([first.compareAndSet(1, dropTail), second.compareAndSet(1, dropHead)]);
  assert.equal(Number(firstWon) + Number(secondWon), 1, `exactly one winner (first ${firstWon}, second ${secondWon})`);
  const winner = firstWon ? dropTail : dropHead;
  assert.deepEqual(await first.load(), winner);
  assert.deepEqual(await second.load(), winner);

  assert.equal(await second.compareAndSet(1, configuration(2, [3])), false, 'epoch 1 is gone');
  await assert.rejects(first.compareAndSet(2, configuration(4, [1])), (error) => isDabbaError(error, ErrorCode.outOfRange));
  await assert.rejects(first.compareAndSet(2, configuration(3, [1, 1])), (error) => isDabbaError(error, ErrorCode.invalidArgument));
});

test('watch delivers the current configuration, then every change in order', async () => {
  const master = openStore('watch');
  const observer = openStore('watch');
  await master.initialize(configuration(1, [1, 2, 3]));
  const seen = new Inbox<Configuration>(EVENT_TIMEOUT_MS);
  const stop = await observer.watch(seen.push);
  let members = [1, 2, 3];
  for (let epoch = 2; epoch <= 8; epoch++) {
    members = epoch % 2 === 0 ? members.slice(1) : [...members, 10 + epoch];
    assert.equal(await master.compareAndSet(epoch - 1, configuration(epoch, members)), true);
  }
  await seen.until((configuration) => configuration.epoch === 8, 'epoch 8');
  assert.deepEqual(seen.items.map((configuration) => configuration.epoch), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(seen.items.at(-1), await master.load());
  await stop();
});

test('a malformed stored configuration is reported with the key, by load and by watch', async () => {
  const store = openStore('malformed');
  await raw!.put('/dabba-test/malformed/configuration').value('{"epoch":3,"members":"1,2"}');
  await assert.rejects(store.load(), (error) => {
    assert.ok(isDabbaError(error, ErrorCode.malformedFrame));
    assert.match(error.message, /\/dabba-test\/malformed\/configuration .*members must be an array/);
    return true;
  });
  await raw!.put('/dabba-test/malformed/configuration').value(JSON.stringify(configuration(3, [1, 2])));
  const errors = new Inbox<Error>(EVENT_TIMEOUT_MS);
  const seen = new Inbox<Configuration>(EVENT_TIMEOUT_MS);
  const stop = await store.watch(seen.push, errors.push);
  await raw!.put('/dabba-test/malformed/configuration').value('{"epoch":4,"members":[1,1],"joining":null}');
  const error = await errors.until(() => true, 'a watch error');
  assert.match(error.message, /duplicate member/);
  assert.deepEqual(seen.items, [configuration(3, [1, 2])]);
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

test('compareAndSet and watch keep working after the etcd leader is killed with SIGKILL', async () => {
  const store = openStore('failover');
  assert.equal(await store.initialize(configuration(1, [1, 2, 3])), true);
  const seen = new Inbox<Configuration>(EVENT_TIMEOUT_MS);
  const stop = await openStore('failover').watch(seen.push);

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

  assert.equal(await store.compareAndSet(1, configuration(2, [2, 3])), true);
  assert.deepEqual(await store.load(), configuration(2, [2, 3]));
  await seen.until((configuration) => configuration.epoch === 2, 'epoch 2 through the watch');
  assert.deepEqual(seen.items.map((configuration) => configuration.epoch), [1, 2]);
  console.log(`# killed leader ${leader.name} (pid ${leader.server.pid}); new leader after ${reelectedMs} ms`);
  await stop();
});

function rejectAfter(ms: number, what: string): Promise<never> {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms).unref());
}
