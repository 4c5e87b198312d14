/**
 * The multi-host configuration master (EtcdMaster) and the store calls it and the hosts use,
 * against a real 3-member etcd cluster on loopback started here (see test/etcd-store.test.ts).
 * Hosts are played by the test: a registerHost with a HostInfo, then putStatus with whatever the
 * scenario needs. Every wait is on an event (a decision, an election, a watch, a log line) with a
 * bounded timeout; nothing sleeps to synchronise. Each test uses its own key prefix.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import type { Configuration } from '../native-free-core/master/chain-master.js';
import type { Decision } from '../native-free-core/master/cluster-decisions.js';
import { ErrorCode, isDabbaError } from '../native-free-core/errors.js';
import { startEtcdCluster, type EtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { EtcdMaster, type EtcdMasterOptions } from '../src/master/etcd-master.js';
import {
  EtcdConfigurationStore,
  type HandoffRequest,
  type HostRegistration,
  type HostStatus,
  type HostTable,
} from '../src/master/etcd-store.js';
import { Inbox } from './helpers/inbox.js';

/** Bounds every wait on an event, so a regression fails instead of hanging. */
const EVENT_TIMEOUT_MS = 10_000;
const HOST_TTL_SECONDS = 2;

const servers = new LocalServers('etcd-master-test');
let cluster: EtcdCluster;
let raw: Etcd3 | undefined;
const stores: EtcdConfigurationStore[] = [];
const masters: EtcdMaster[] = [];

before(async () => {
  cluster = await startEtcdCluster(servers);
  raw = new Etcd3({ hosts: cluster.clientUrls });
});

after(async () => {
  try {
    await Promise.all(masters.map((master) => master.close()));
    await Promise.all(stores.map((store) => store.close()));
    raw?.close();
  } finally {
    // Stops exactly the members started above (by PID) and removes their data dirs.
    await servers.stop(1000);
  }
});

function openStore(prefix: string): EtcdConfigurationStore {
  const store = new EtcdConfigurationStore({ hosts: cluster.clientUrls, prefix: `/dabba-test/${prefix}/` });
  stores.push(store);
  return store;
}

interface ObservedMaster {
  master: EtcdMaster;
  decisions: Inbox<Decision>;
  elections: Inbox<number>;
  depositions: Inbox<string>;
  logs: Inbox<string>;
}

function startMaster(store: EtcdConfigurationStore, candidateId: string, options: Partial<EtcdMasterOptions> = {}): ObservedMaster {
  const logs = new Inbox<string>(EVENT_TIMEOUT_MS);
  const master = new EtcdMaster({ store, candidateId, log: logs.push, ...options });
  masters.push(master);
  const observed = { master, decisions: new Inbox<Decision>(EVENT_TIMEOUT_MS), elections: new Inbox<number>(EVENT_TIMEOUT_MS), depositions: new Inbox<string>(EVENT_TIMEOUT_MS), logs };
  master.on('decision', observed.decisions.push);
  master.on('elected', () => observed.elections.push(observed.elections.items.length + 1));
  master.on('deposed', observed.depositions.push);
  master.start();
  return observed;
}

function status(replicaId: number, fields: Partial<HostStatus> = {}): HostStatus {
  return { replicaId, epoch: 1, role: 'solo', appliedSeq: 0, committedSeq: 0, joinCaughtUp: false, handoffReadyEpoch: 0, writesPerSecond: 0, predecessorDown: 0, candidate: false, ...fields };
}

async function registerReplicaHost(store: EtcdConfigurationStore, hostId: string): Promise<{ registration: HostRegistration; replicaId: number }> {
  const replicaId = await store.allocateId('replica');
  const registration = await store.registerHost(hostId, HOST_TTL_SECONDS, { replicaId, url: `ws://127.0.0.1:${7400 + replicaId}` });
  return { registration, replicaId };
}

function isInitialize(members: number[]): (decision: Decision) => boolean {
  return (decision) => decision.kind === 'initialize' && JSON.stringify(decision.configuration.members) === JSON.stringify(members);
}

function isChange(kind: 'joining' | 'joined' | 'removed', replicaId: number): (decision: Decision) => boolean {
  return (decision) => decision.kind === 'reconfigure' && decision.event.kind === kind && decision.event.replicaId === replicaId;
}

function configurationOf(decision: Decision): Configuration {
  assert.equal(decision.kind, 'reconfigure');
  return (decision as Extract<Decision, { kind: 'reconfigure' }>).event.configuration;
}

/** The lease id of the candidate that leads `prefix`'s election (the oldest key), from etcd itself. */
async function leaderLeaseId(prefix: string): Promise<string> {
  const electionKeys = `/dabba-test/${prefix}/election/master/`;
  const [key] = await raw!.getAll().prefix(electionKeys).sort('Create', 'Ascend').limit(1).keys();
  assert.ok(key !== undefined, `a candidate under ${electionKeys}`);
  return key.slice(electionKeys.length);
}

test('ids come from etcd counters: distinct under concurrency, 1 first, bounded by uint32', async () => {
  const first = openStore('ids');
  const second = openStore('ids');
  const ids = await Promise.all(Array.from({ length: 16 }, (_, index) => (index % 2 === 0 ? first : second).allocateId('replica')));
  assert.deepEqual([...ids].sort((a, b) => a - b), Array.from({ length: 16 }, (_, index) => index + 1));
  assert.equal(await first.allocateId('client'), 1);
  await raw!.put('/dabba-test/ids/counters/client').value(String(0xffffffff));
  await assert.rejects(first.allocateId('client'), (error) => isDabbaError(error, ErrorCode.outOfRange));
  await raw!.put('/dabba-test/ids/counters/client').value('seven');
  await assert.rejects(first.allocateId('client'), (error) => isDabbaError(error, ErrorCode.malformedFrame));
  assert.equal(await second.allocateId('replica'), 17, 'the replica counter is its own');
});

test('the host table: info and status by host, malformed values reported, gone with the lease; handoff requests', async () => {
  const observer = openStore('table');
  const hostProcess = openStore('table');
  const tables = new Inbox<HostTable>(EVENT_TIMEOUT_MS);
  const errors = new Inbox<Error>(EVENT_TIMEOUT_MS);
  const stop = await observer.watchHostTable(tables.push, errors.push);
  assert.equal(tables.items.length, 1, 'the current table at once');
  assert.equal(tables.items[0]!.size, 0);

  const info = { replicaId: 4, url: 'ws://10.77.1.10:7400' };
  const host = await hostProcess.registerHost('host-b', HOST_TTL_SECONDS, info);
  assert.deepEqual(host.info, info);
  assert.ok(host.leaseValidUntil() > performance.now(), 'a fresh lease is valid for a while');
  await tables.until((table) => table.get('host-b')?.info?.url === info.url, 'host-b with its info');
  await host.putStatus(status(4, { epoch: 3, role: 'tail', appliedSeq: 12, committedSeq: 11 }));
  const withStatus = await tables.until((table) => table.get('host-b')?.status !== null && table.has('host-b'), 'host-b with its status');
  assert.deepEqual(withStatus.get('host-b'), { info, status: status(4, { epoch: 3, role: 'tail', appliedSeq: 12, committedSeq: 11 }) });

  // A status without its host key stays out of the table; a malformed host value is reported and shows as null.
  await raw!.put('/dabba-test/table/status/host-x').value(JSON.stringify(status(9)));
  await raw!.put('/dabba-test/table/hosts/host-m').value('{"replicaId":0,"url":"ws://h:1"}');
  const error = await errors.until(() => true, 'the malformed host info');
  assert.ok(isDabbaError(error, ErrorCode.malformedFrame));
  assert.match(error.message, /\/dabba-test\/table\/hosts\/host-m .*replicaId/);
  const withMalformed = await tables.until((table) => table.has('host-m'), 'host-m in the table');
  assert.deepEqual(withMalformed.get('host-m'), { info: null, status: null });
  assert.equal(withMalformed.has('host-x'), false);

  await assert.rejects(hostProcess.registerHost('host-c', HOST_TTL_SECONDS, { replicaId: 5, url: 'ftp://h' }), (rejected) => isDabbaError(rejected, ErrorCode.invalidArgument));
  await assert.rejects(host.putStatus({ ...status(4), joinCaughtUp: 'yes' as unknown as boolean }), (rejected) => isDabbaError(rejected, ErrorCode.invalidArgument));

  // Revoking the lease takes both of host-b's keys, in one table change.
  const changesBefore = tables.items.length;
  const gone = tables.next((table) => !table.has('host-b'), 'host-b gone');
  await host.revoke();
  assert.equal(host.leaseValidUntil(), 0);
  await gone;
  assert.equal(tables.items.length, changesBefore + 1, 'one change for both keys');
  assert.deepEqual(await observer.liveHosts(), ['host-m']);
  await stop();

  // Handoff requests: the current one first, then every later one; malformed ones reported.
  await observer.requestHandoff(3, 7);
  const handoffs = new Inbox<HandoffRequest>(EVENT_TIMEOUT_MS);
  const handoffErrors = new Inbox<Error>(EVENT_TIMEOUT_MS);
  const stopHandoffs = await hostProcess.watchHandoff(handoffs.push, handoffErrors.push);
  await observer.requestHandoff(4, 7);
  await raw!.put('/dabba-test/table/handoff').value('{"epoch":5}');
  await handoffErrors.until((reported) => isDabbaError(reported, ErrorCode.malformedFrame), 'the malformed handoff request');
  await observer.requestHandoff(6, 8);
  await handoffs.until((request) => request.epoch === 6, 'the handoff request of epoch 6');
  assert.deepEqual(handoffs.items, [{ epoch: 3, joiner: 7 }, { epoch: 4, joiner: 7 }, { epoch: 6, joiner: 8 }]);
  await stopHandoffs();
});

test('fenced writes: a deposed leader cannot compareAndSet, initialize or request a handoff, even at the right epoch', async () => {
  const aliceStore = openStore('fence');
  const bobStore = openStore('fence');
  const alice = await aliceStore.campaign('alice', { ttlSeconds: 2 });
  assert.equal(await aliceStore.initialize({ epoch: 1, members: [1, 2], joining: null }, alice), true);
  const bobLeads = bobStore.campaign('bob', { ttlSeconds: 2 });

  // Alice's lease is revoked behind her back (as when it expires while she is cut off from etcd).
  await raw!.leaseClient.leaseRevoke({ ID: await leaderLeaseId('fence') });
  const bob = await bobLeads;
  assert.equal(await aliceStore.compareAndSet(1, { epoch: 2, members: [1], joining: null }, alice), false, 'alice is fenced out');
  assert.equal(await aliceStore.requestHandoff(1, 2, alice), false);
  assert.deepEqual(await aliceStore.load(), { epoch: 1, members: [1, 2], joining: null }, 'nothing written');
  assert.equal(await bobStore.compareAndSet(1, { epoch: 2, members: [2], joining: null }, bob), true, 'the new leader writes');
  assert.equal(await bobStore.requestHandoff(2, 3, bob), true);
  await assert.rejects(openStore('elsewhere').compareAndSet(2, { epoch: 3, members: [2], joining: null }, bob), (error) =>
    isDabbaError(error, ErrorCode.invalidArgument),
  );

  // A candidate that resigned cannot initialize either.
  const carolStore = openStore('fence-initialize');
  const carol = await carolStore.campaign('carol', { ttlSeconds: 2 });
  await carol.resign();
  assert.equal(await carolStore.initialize({ epoch: 1, members: [1], joining: null }, carol), false);
  assert.equal(await carolStore.load(), null);
  await bob.resign();
});

test('the master bootstraps from the first host, joins the next with a handoff, and removes members whose leases go', async () => {
  const hostStore = openStore('life');
  const handoffs = new Inbox<HandoffRequest>(EVENT_TIMEOUT_MS);
  const stopHandoffs = await hostStore.watchHandoff(handoffs.push);
  const { master, decisions, elections, logs } = startMaster(openStore('life'), 'master-1', { handoffLagWritesMax: 10, handoffCatchUpMsMax: 60_000 });
  await elections.until(() => true, 'the only candidate to be elected');
  assert.equal(master.isLeader, true);

  const one = await registerReplicaHost(hostStore, 'host-1');
  await decisions.until(isInitialize([one.replicaId]), 'bootstrap with host-1');
  const two = await registerReplicaHost(hostStore, 'host-2');
  const joining = configurationOf(await decisions.until(isChange('joining', two.replicaId), 'host-2 to begin joining'));
  assert.deepEqual(joining, { epoch: 2, members: [one.replicaId], joining: two.replicaId });

  // Caught up but 490 writes behind (more than 10): no handoff yet; the master says why.
  await one.registration.putStatus(status(one.replicaId, { epoch: 2, appliedSeq: 500 }));
  await two.registration.putStatus(status(two.replicaId, { epoch: 2, role: 'joining', appliedSeq: 10, joinCaughtUp: true }));
  await logs.until((line) => line.includes(`joiner ${two.replicaId} is catching up: 490 writes behind`), 'the master to wait for the joiner');
  assert.equal(handoffs.items.length, 0);
  await two.registration.putStatus(status(two.replicaId, { epoch: 2, role: 'joining', appliedSeq: 495, joinCaughtUp: true }));
  await decisions.until((decision) => decision.kind === 'request-handoff', 'the handoff request');
  assert.deepEqual(await handoffs.until(() => true, 'the handoff request, seen by the hosts'), { epoch: 2, joiner: two.replicaId });

  await one.registration.putStatus(status(one.replicaId, { epoch: 2, appliedSeq: 500, handoffReadyEpoch: 2 }));
  const joined = configurationOf(await decisions.until(isChange('joined', two.replicaId), 'host-2 to become the tail'));
  assert.deepEqual(joined, { epoch: 3, members: [one.replicaId, two.replicaId], joining: null });
  assert.deepEqual(await hostStore.load(), joined);

  // A third host joins; then the tail's host crashes (its keepalive stops): the tail is removed,
  // which abandons the join (the joiner copied from it), and the join starts over.
  const three = await registerReplicaHost(hostStore, 'host-3');
  await decisions.until(isChange('joining', three.replicaId), 'host-3 to begin joining');
  two.registration.stopKeepalive();
  const removed = await decisions.until(isChange('removed', two.replicaId), 'host-2 to be removed once its lease expires');
  assert.deepEqual(removed, {
    kind: 'reconfigure',
    event: { kind: 'removed', replicaId: two.replicaId, reason: 'failed', configuration: { epoch: 5, members: [one.replicaId], joining: null } },
  });
  const rejoining = await decisions.until((decision) => isChange('joining', three.replicaId)(decision) && configurationOf(decision).epoch === 6, 'host-3 to join again');
  assert.deepEqual(configurationOf(rejoining), { epoch: 6, members: [one.replicaId], joining: three.replicaId });

  // The last member's host leaves: the chain is unavailable, and the master does not pretend otherwise.
  await one.registration.revoke();
  await logs.until((line) => line.includes('chain unavailable: its only replica is gone'), 'the master to report the chain unavailable');
  assert.deepEqual(await hostStore.load(), { epoch: 6, members: [one.replicaId], joining: three.replicaId });
  assert.deepEqual(
    decisions.items.map((decision) => (decision.kind === 'reconfigure' ? decision.event.configuration.epoch : decision.kind)),
    ['initialize', 2, 'request-handoff', 3, 4, 5, 6],
    'one decision per change, in order',
  );
  await master.close();
  assert.equal(master.isLeader, false);
  await stopHandoffs();
});

test('two candidates: only the leader writes; when its lease is revoked or it closes, the other takes over and keeps deciding', async () => {
  const hostStore = openStore('pair');
  const a = startMaster(openStore('pair'), 'candidate-a');
  await a.elections.until(() => true, 'candidate-a to be elected');
  const b = startMaster(openStore('pair'), 'candidate-b');

  const one = await registerReplicaHost(hostStore, 'host-1');
  await a.decisions.until(isInitialize([one.replicaId]), 'candidate-a to bootstrap');
  assert.equal(b.master.isLeader, false);

  // Candidate-a's lease is revoked behind its back: b leads, a learns it was deposed and stands again.
  await raw!.leaseClient.leaseRevoke({ ID: await leaderLeaseId('pair') });
  await b.elections.until(() => true, 'candidate-b to be elected');
  await a.depositions.until((reason) => reason === 'lost its lease', 'candidate-a to learn it lost');
  assert.equal(a.master.isLeader, false);
  const two = await registerReplicaHost(hostStore, 'host-2');
  await b.decisions.until(isChange('joining', two.replicaId), 'candidate-b to begin the join');

  // Candidate-b closes: candidate-a (campaigning again) leads and takes the join on to its handoff.
  await b.master.close();
  await a.elections.until((count) => count === 2, 'candidate-a to be elected again');
  await one.registration.putStatus(status(one.replicaId, { epoch: 2, appliedSeq: 7 }));
  await two.registration.putStatus(status(two.replicaId, { epoch: 2, role: 'joining', appliedSeq: 7, joinCaughtUp: true }));
  await a.decisions.until((decision) => decision.kind === 'request-handoff', 'candidate-a to request the handoff');

  assert.deepEqual(a.decisions.items.map((decision) => decision.kind), ['initialize', 'request-handoff'], 'a wrote only while leading');
  assert.deepEqual(b.decisions.items.map((decision) => decision.kind), ['reconfigure'], 'b wrote only while leading');
  assert.deepEqual(await hostStore.load(), { epoch: 2, members: [one.replicaId], joining: two.replicaId });
  await a.master.close();
});
