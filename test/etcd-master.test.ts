/**
 * The multi-host configuration master (EtcdMaster) and the store calls it and the hosts use,
 * against a real 3-member etcd cluster on loopback started here (see test/etcd-store.test.ts).
 * Hosts are played by the test: a registerHost with a HostInfo (an incarnation, a zone, a URL),
 * then putStatus with the replicas the master placed on them and whatever progress the scenario
 * needs. Every wait is on an event (a decision, an election, a watch, a log line) with a
 * bounded timeout; nothing sleeps to synchronise. Each test uses its own key prefix.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import type { Configuration } from '../native-free-core/master/chain-master.js';
import { ErrorCode, isDabbaError } from '../native-free-core/errors.js';
import { startEtcdCluster, type EtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { EtcdMaster, type EtcdMasterOptions, type MasterDecision } from '../src/master/etcd-master.js';
import { EtcdConfigurationStore, type HostRegistration, type HostStatus, type HostTable, type ReplicaStatus } from '../src/master/etcd-store.js';
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
  decisions: Inbox<MasterDecision>;
  elections: Inbox<number>;
  depositions: Inbox<string>;
  logs: Inbox<string>;
}

function startMaster(store: EtcdConfigurationStore, candidateId: string, options: Partial<EtcdMasterOptions> = {}): ObservedMaster {
  const logs = new Inbox<string>(EVENT_TIMEOUT_MS);
  const master = new EtcdMaster({ store, candidateId, settings: { chains: 1, replicas: 3 }, log: logs.push, ...options });
  masters.push(master);
  const observed = { master, decisions: new Inbox<MasterDecision>(EVENT_TIMEOUT_MS), elections: new Inbox<number>(EVENT_TIMEOUT_MS), depositions: new Inbox<string>(EVENT_TIMEOUT_MS), logs };
  master.on('decision', observed.decisions.push);
  master.on('elected', () => observed.elections.push(observed.elections.items.length + 1));
  master.on('deposed', observed.depositions.push);
  master.start();
  return observed;
}

interface PlayedHost {
  hostId: string;
  incarnation: string;
  registration: HostRegistration;
  /** Reports these replicas' progress (chain 0 unless given). */
  report(replicas: Array<Partial<ReplicaStatus> & { replicaId: number }>, failed?: number[]): Promise<void>;
}

let incarnations = 0;

async function registerHost(store: EtcdConfigurationStore, hostId: string, zone = 'z1'): Promise<PlayedHost> {
  const incarnation = `inc${++incarnations}`;
  const registration = await store.registerHost(hostId, HOST_TTL_SECONDS, { incarnation, zone, url: `ws://127.0.0.1:${7400 + incarnations}` });
  const report: PlayedHost['report'] = (replicas, failed = []) =>
    registration.putStatus(hostStatus(incarnation, replicas, failed));
  return { hostId, incarnation, registration, report };
}

function hostStatus(incarnation: string, replicas: Array<Partial<ReplicaStatus> & { replicaId: number }>, failed: number[] = []): HostStatus {
  return {
    incarnation,
    candidate: false,
    writesPerSecond: 0,
    commitP99Ms: 0,
    failed,
    replicas: replicas.map((replica) => ({ chain: 0, epoch: 1, role: 'solo', appliedSeq: 0, committedSeq: 0, joinCaughtUp: false, handoffReadyEpoch: 0, predecessorDown: 0, diskFull: false, ...replica })),
  };
}

type Configure = Extract<MasterDecision, { kind: 'configure' }>;

/** A configure decision of `chain` whose joiner (or, with `member`, newest member) is on `host`. */
function isJoin(host: string, chain = 0): (decision: MasterDecision) => boolean {
  return (decision) => decision.kind === 'configure' && decision.chain === chain && decision.entry.configuration.joining !== null && decision.entry.homes.get(decision.entry.configuration.joining)?.host === host;
}

function isConfigure(predicate: (configuration: Configuration) => boolean, chain = 0): (decision: MasterDecision) => boolean {
  return (decision) => decision.kind === 'configure' && decision.chain === chain && predicate(decision.entry.configuration);
}

function configurationOf(decision: MasterDecision): Configuration {
  assert.equal(decision.kind, 'configure');
  return (decision as Configure).entry.configuration;
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
  const ids = await Promise.all(Array.from({ length: 16 }, (_, index) => (index % 2 === 0 ? first : second).allocateId('client')));
  assert.deepEqual([...ids].sort((a, b) => a - b), Array.from({ length: 16 }, (_, index) => index + 1));
  assert.equal(await first.allocateId('replica'), 1, 'the replica counter is its own');
  await raw!.put('/dabba-test/ids/counters/client').value(String(0xffffffff));
  await assert.rejects(first.allocateId('client'), (error) => isDabbaError(error, ErrorCode.outOfRange));
  await raw!.put('/dabba-test/ids/counters/client').value('seven');
  await assert.rejects(first.allocateId('client'), (error) => isDabbaError(error, ErrorCode.malformedFrame));
});

test('the host table: info and status by host, malformed values reported, gone with the lease', async () => {
  const observer = openStore('table');
  const hostProcess = openStore('table');
  const tables = new Inbox<HostTable>(EVENT_TIMEOUT_MS);
  const errors = new Inbox<Error>(EVENT_TIMEOUT_MS);
  const stop = await observer.watchHostTable(tables.push, errors.push);
  assert.equal(tables.items.length, 1, 'the current table at once');
  assert.equal(tables.items[0]!.size, 0);

  const info = { incarnation: 'abc_DEF-1', zone: 'rack-1', url: 'ws://10.77.1.10:7400' };
  const host = await hostProcess.registerHost('host-b', HOST_TTL_SECONDS, info);
  assert.deepEqual(host.info, info);
  assert.ok(host.leaseValidUntil() > performance.now(), 'a fresh lease is valid for a while');
  await tables.until((table) => table.get('host-b')?.info?.url === info.url, 'host-b with its info');
  const reported = hostStatus(info.incarnation, [{ chain: 3, replicaId: 4, epoch: 3, role: 'tail', appliedSeq: 12, committedSeq: 11 }], [2]);
  await host.putStatus(reported);
  const withStatus = await tables.until((table) => table.get('host-b')?.status !== null && table.has('host-b'), 'host-b with its status');
  assert.deepEqual(withStatus.get('host-b'), { info, status: reported });

  // A status without its host key stays out of the table; a malformed host value is reported and shows as null.
  await raw!.put('/dabba-test/table/status/host-x').value(JSON.stringify(hostStatus('x', [])));
  await raw!.put('/dabba-test/table/hosts/host-m').value('{"incarnation":"i","zone":"a b","url":"ws://h:1"}');
  const error = await errors.until(() => true, 'the malformed host info');
  assert.ok(isDabbaError(error, ErrorCode.malformedFrame));
  assert.match(error.message, /\/dabba-test\/table\/hosts\/host-m .*zone/);
  const withMalformed = await tables.until((table) => table.has('host-m'), 'host-m in the table');
  assert.deepEqual(withMalformed.get('host-m'), { info: null, status: null });
  assert.equal(withMalformed.has('host-x'), false);

  await assert.rejects(hostProcess.registerHost('host-c', HOST_TTL_SECONDS, { incarnation: 'i', zone: 'z', url: 'ftp://h' }), (rejected) => isDabbaError(rejected, ErrorCode.invalidArgument));
  const badReplica = { ...reported, replicas: [{ ...reported.replicas[0]!, joinCaughtUp: 'yes' as unknown as boolean }] };
  await assert.rejects(host.putStatus(badReplica), (rejected) => isDabbaError(rejected, ErrorCode.invalidArgument));

  // Revoking the lease takes both of host-b's keys, in one table change.
  const changesBefore = tables.items.length;
  const gone = tables.next((table) => !table.has('host-b'), 'host-b gone');
  await host.revoke();
  assert.equal(host.leaseValidUntil(), 0);
  await gone;
  assert.equal(tables.items.length, changesBefore + 1, 'one change for both keys');
  assert.deepEqual(await observer.liveHosts(), ['host-m']);
  await stop();
});

test('fenced rounds: a deposed leader cannot write, even at the right epochs', async () => {
  const aliceStore = openStore('fence');
  const bobStore = openStore('fence');
  const entry = (epoch: number, members: number[]) => ({ configuration: { epoch, members, joining: null }, homes: new Map(members.map((id) => [id, { host: 'h', incarnation: 'i' }])) });
  const alice = await aliceStore.campaign('alice', { ttlSeconds: 2 });
  assert.equal(await aliceStore.commitRound([{ kind: 'configure', chain: 0, previousEpoch: null, entry: entry(1, [1, 2]), what: 'placed' }], { from: 1, to: 3 }, alice), true);
  const bobLeads = bobStore.campaign('bob', { ttlSeconds: 2 });

  // Alice's lease is revoked behind her back (as when it expires while she is cut off from etcd).
  await raw!.leaseClient.leaseRevoke({ ID: await leaderLeaseId('fence') });
  const bob = await bobLeads;
  assert.equal(await aliceStore.commitRound([{ kind: 'configure', chain: 0, previousEpoch: 1, entry: entry(2, [1]), what: 'removed' }], { from: 3, to: 3 }, alice), false, 'alice is fenced out');
  assert.equal(await aliceStore.commitRound([{ kind: 'request-handoff', chain: 0, request: { epoch: 1, joiner: 2 } }], { from: 3, to: 3 }, alice), false);
  const stored = await aliceStore.loadTable(1);
  assert.deepEqual(stored.entries[0]!.configuration, { epoch: 1, members: [1, 2], joining: null }, 'nothing written');
  assert.deepEqual(stored.handoffs, [null]);
  assert.equal(await bobStore.commitRound([{ kind: 'configure', chain: 0, previousEpoch: 1, entry: entry(2, [2]), what: 'removed' }], { from: 3, to: 3 }, bob), true, 'the new leader writes');
  await assert.rejects(openStore('elsewhere').commitRound([{ kind: 'configure', chain: 0, previousEpoch: 2, entry: entry(3, [2]), what: 'x' }], { from: 3, to: 3 }, bob), (error) =>
    isDabbaError(error, ErrorCode.invalidArgument),
  );
  await bob.resign();
});

test('the master places the chain on the first host, joins the next with a handoff, and removes members whose leases go', async () => {
  const hostStore = openStore('life');
  const { master, decisions, elections, logs } = startMaster(openStore('life'), 'master-1', { handoffLagWritesMax: 10, handoffCatchUpMsMax: 60_000 });
  await elections.until(() => true, 'the only candidate to be elected');
  assert.equal(master.isLeader, true);

  const one = await registerHost(hostStore, 'host-1');
  // Fewer hosts than replicas: placed after the bootstrap wait, on the one host up.
  const placed = configurationOf(await decisions.until(isConfigure((configuration) => configuration.epoch === 1), 'the chain placed on host-1'));
  const r1 = placed.members[0]!;
  assert.deepEqual(placed, { epoch: 1, members: [r1], joining: null });
  const two = await registerHost(hostStore, 'host-2');
  const joining = configurationOf(await decisions.until(isJoin('host-2'), 'host-2 to begin joining'));
  const r2 = joining.joining!;
  assert.deepEqual(joining, { epoch: 2, members: [r1], joining: r2 });

  // Caught up but 490 writes behind (more than 10): no handoff yet; the master says why.
  await one.report([{ replicaId: r1, epoch: 2, appliedSeq: 500 }]);
  await two.report([{ replicaId: r2, epoch: 2, role: 'joining', appliedSeq: 10, joinCaughtUp: true }]);
  await logs.until((line) => line.includes(`joiner ${r2} is catching up`), 'the master to wait for the joiner');
  assert.deepEqual((await hostStore.loadTable(1)).handoffs, [null]);
  await two.report([{ replicaId: r2, epoch: 2, role: 'joining', appliedSeq: 495, joinCaughtUp: true }]);
  await decisions.until((decision) => decision.kind === 'request-handoff', 'the handoff request');
  assert.deepEqual((await hostStore.loadTable(1)).handoffs, [{ epoch: 2, joiner: r2 }]);

  await one.report([{ replicaId: r1, epoch: 2, appliedSeq: 500, handoffReadyEpoch: 2 }]);
  const joined = configurationOf(await decisions.until(isConfigure((configuration) => configuration.members.includes(r2)), 'host-2 to become the tail'));
  assert.deepEqual(joined, { epoch: 3, members: [r1, r2], joining: null });
  assert.deepEqual((await hostStore.loadTable(1)).entries[0]!.configuration, joined);

  // A third host joins; then the tail's host crashes (its keepalive stops): the tail is removed,
  // which abandons the join (the joiner copied from it), and host-3 joins again as a new replica.
  const three = await registerHost(hostStore, 'host-3');
  const r3 = configurationOf(await decisions.until(isJoin('host-3'), 'host-3 to begin joining')).joining!;
  two.registration.stopKeepalive();
  const removed = await decisions.until(isConfigure((configuration) => configuration.epoch > 3 && !configuration.members.includes(r2)), 'host-2 to be removed once its lease expires');
  assert.deepEqual(configurationOf(removed), { epoch: 5, members: [r1], joining: null });
  assert.match((removed as Configure).what, new RegExp(`removed ${r2} \\(failed\\)`));
  const rejoining = configurationOf(await decisions.until((decision) => isJoin('host-3')(decision) && configurationOf(decision).epoch > 5, 'host-3 to join again'));
  assert.equal(rejoining.epoch, 6);
  assert.notEqual(rejoining.joining, r3, 'a new replica id for the new join');

  // The last member's host leaves: the chain is unavailable, and the master does not pretend otherwise.
  await one.registration.revoke();
  await logs.until((line) => line.includes('unavailable: chains 0'), 'the master to report the chain unavailable');
  assert.deepEqual((await hostStore.loadTable(1)).entries[0]!.configuration, rejoining);
  assert.deepEqual(
    decisions.items.map((decision) => (decision.kind === 'configure' ? decision.entry.configuration.epoch : decision.kind)),
    [1, 2, 'request-handoff', 3, 4, 5, 6],
    'one decision per change, in order',
  );
  await master.close();
  assert.equal(master.isLeader, false);
  await three.registration.revoke();
});

test('many chains: placed over the hosts up in one transaction, zones spread, a lost host repaired', async () => {
  const hostStore = openStore('many');
  const hosts = [await registerHost(hostStore, 'h1', 'a'), await registerHost(hostStore, 'h2', 'a'), await registerHost(hostStore, 'h3', 'b')];
  const { master, decisions, elections } = startMaster(openStore('many'), 'master-1', { settings: { chains: 6, replicas: 2 } });
  await elections.until(() => true, 'the only candidate to be elected');
  await decisions.until(() => decisions.items.filter((decision) => decision.kind === 'configure').length === 6, 'every chain placed');
  const placed = await hostStore.loadTable(6);
  const revisions = new Set<string>();
  for (let chain = 0; chain < 6; chain++) {
    const entry = placed.entries[chain]!;
    const zones = entry.configuration.members.map((id) => (entry.homes.get(id)!.host === 'h3' ? 'b' : 'a'));
    assert.deepEqual([...zones].sort(), ['a', 'b'], `chain ${chain} spans both zones`);
    const kv = (await raw!.get(`/dabba-test/many/chains/${chain}/configuration`).exec()).kvs[0]!;
    revisions.add(kv.mod_revision);
  }
  assert.equal(revisions.size, 1, 'one transaction placed every chain');
  assert.equal(placed.nextReplicaId, 13, 'twelve replica ids handed out');

  // h1 goes: every chain it was in is repaired by a join elsewhere (as soon as h1's replicas are removed).
  const onH1 = placed.entries.filter((entry) => [...entry!.homes.values()].some((home) => home.host === 'h1')).length;
  await hosts[0]!.registration.revoke();
  await decisions.until(
    () => decisions.items.filter((decision) => decision.kind === 'configure' && /\(failed\)/.test(decision.what)).length === onH1,
    `the ${onH1} chains h1 was in to lose it`,
  );
  await decisions.until(() => decisions.items.some((decision) => isJoin('h2')(decision) || isJoin('h3')(decision)), 'a repair join');
  await master.close();
  for (const host of hosts.slice(1)) await host.registration.revoke();
});

test('two candidates: only the leader writes; when its lease is revoked or it closes, the other takes over and keeps deciding', async () => {
  const hostStore = openStore('pair');
  const a = startMaster(openStore('pair'), 'candidate-a');
  await a.elections.until(() => true, 'candidate-a to be elected');
  const b = startMaster(openStore('pair'), 'candidate-b');

  const one = await registerHost(hostStore, 'host-1');
  const r1 = configurationOf(await a.decisions.until(isConfigure((configuration) => configuration.epoch === 1), 'candidate-a to place the chain')).members[0]!;
  assert.equal(b.master.isLeader, false);

  // Candidate-a's lease is revoked behind its back: b leads, a learns it was deposed and stands again.
  await raw!.leaseClient.leaseRevoke({ ID: await leaderLeaseId('pair') });
  await b.elections.until(() => true, 'candidate-b to be elected');
  await a.depositions.until((reason) => reason === 'lost its lease', 'candidate-a to learn it lost');
  assert.equal(a.master.isLeader, false);
  const two = await registerHost(hostStore, 'host-2');
  const r2 = configurationOf(await b.decisions.until(isJoin('host-2'), 'candidate-b to begin the join')).joining!;

  // Candidate-b closes: candidate-a (campaigning again) leads and takes the join on to its handoff.
  await b.master.close();
  await a.elections.until((count) => count === 2, 'candidate-a to be elected again');
  await one.report([{ replicaId: r1, epoch: 2, appliedSeq: 7 }]);
  await two.report([{ replicaId: r2, epoch: 2, role: 'joining', appliedSeq: 7, joinCaughtUp: true }]);
  await a.decisions.until((decision) => decision.kind === 'request-handoff', 'candidate-a to request the handoff');

  assert.deepEqual(a.decisions.items.map((decision) => decision.kind), ['configure', 'request-handoff'], 'a wrote only while leading');
  assert.deepEqual(b.decisions.items.map((decision) => decision.kind), ['configure'], 'b wrote only while leading');
  assert.deepEqual((await hostStore.loadTable(1)).entries[0]!.configuration, { epoch: 2, members: [r1], joining: r2 });
  await a.master.close();
  await one.registration.revoke();
  await two.registration.revoke();
});
