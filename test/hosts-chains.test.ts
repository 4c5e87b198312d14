/**
 * Many chains across `dabba serve` processes, each host in its own network namespace (as root, as
 * in CI; loopback ports otherwise), with a real 3-member etcd: 12 chains of 3 replicas on 4 hosts
 * in two zones. Under load from remote clients (keys spread over every chain), one host is
 * SIGKILLed and restarted, then a fifth host is started. Each time the table must settle again:
 * every chain back to 3 live members, heads and tails spread within one of even over the hosts.
 * Then the history is linearizable, and per chain the replicas are identical and applied exactly
 * the writes acknowledged to that chain. Last, the three hosts of one chain are killed at once: that
 * chain is unavailable (a coded error, never a hang) and the others go on.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ErrorCode, isDabbaError, type RemoteClient } from '../src/client/index.js';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { checkLinearizable, type HistoryEntry } from './sim/linearizability.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';
import { closeHostTest, HostCluster } from './helpers/host-cluster.js';

const SECRET = 'hosts-chains-test-secret-0123456789';
const CHAINS = 12;
const REPLICAS = 3;
const KEYS = Array.from({ length: 48 }, (_, index) => `key-${index}`);
const servers = new LocalServers('hosts-chains-test');
let lab: NetnsLab;
let cluster: HostCluster;

before(async () => {
  lab = await createNetnsLab('dabchain', 5);
  const etcdAddress = await lab.addServerAddress();
  const etcd = await startEtcdCluster(servers, 3, etcdAddress);
  cluster = await HostCluster.create(lab, etcd.clientUrls, `/dabba-hosts-chains-${process.pid}/`, SECRET, {
    chains: CHAINS,
    replicas: REPLICAS,
    zones: ['zone-a', 'zone-a', 'zone-b', 'zone-b', 'zone-a'],
  });
});

after(() => closeHostTest(cluster, lab, servers));

interface Load {
  history: HistoryEntry[];
  /** Writes acknowledged, by chain. */
  acknowledged: Map<number, number>;
  operations: number;
  /** Resolved as operations complete (see progress()). */
  waiters: Array<{ target: number; resolve: () => void }>;
  stop(): Promise<void>;
}

/** Logical clients, one operation outstanding each, over keys that land on every chain. */
function startLoad(clients: RemoteClient[], logicalClients: number): Load {
  const load: Load = { history: [], acknowledged: new Map(), operations: 0, waiters: [], stop: async () => undefined };
  let running = true;
  const loop = async (clientId: number): Promise<void> => {
    const client = clients[clientId % clients.length]!;
    for (let index = 0; running; index++) {
      const key = KEYS[(clientId * 13 + index * 7) % KEYS.length]!;
      const entry: HistoryEntry =
        index % 3 !== 0
          ? { client: clientId, operation: { kind: 'put', key, value: `c${clientId}-${index}` }, invokedAt: performance.now(), respondedAt: Infinity }
          : { client: clientId, operation: { kind: 'get', key }, invokedAt: performance.now(), respondedAt: Infinity };
      load.history.push(entry);
      if (entry.operation.kind === 'put') {
        await client.put(key, entry.operation.value);
        const chain = client.chainOf(key);
        load.acknowledged.set(chain, (load.acknowledged.get(chain) ?? 0) + 1);
      } else {
        entry.result = (await client.get(key))?.toString();
      }
      entry.respondedAt = performance.now();
      load.operations++;
      if (load.waiters.length > 0 && load.waiters[0]!.target <= load.operations) load.waiters.shift()!.resolve();
    }
  };
  const loops = Array.from({ length: logicalClients }, (_, index) => loop(index + 1));
  load.stop = async () => {
    running = false;
    await Promise.all(loops);
  };
  return load;
}

/** Resolves once the load has made `count` more operations: progress, not time. */
function progress(load: Load, count: number): Promise<void> {
  return new Promise((resolve) => load.waiters.push({ target: load.operations + count, resolve }));
}

test('12 chains on 4 hosts in two zones: a host killed and restarted, a fifth added, under load; every chain whole, balanced and consistent', { timeout: 300_000 }, async (t) => {
  for (let index = 0; index < 4; index++) await cluster.start(index);
  await cluster.waitForTable(REPLICAS, 4);
  const heldBy = (hostIndex: number): number => cluster.entries.filter((_, chain) => cluster.replicaOf(hostIndex, chain) !== null).length;
  t.diagnostic(`placed: replicas per host ${[0, 1, 2, 3].map(heldBy).join(', ')}`);

  const clients = [await cluster.connect(), await cluster.connect([cluster.hosts[3]!.url])];
  assert.equal(clients[0]!.stats().chains, CHAINS, 'the client learned the chain count');
  t.diagnostic('clients connected');
  const load = startLoad(clients, 8);
  const watchdog = setInterval(() => process.stderr.write(`hosts-chains: ${load.operations} operations; clients ${JSON.stringify(clients.map((client) => client.stats()))}\n`), 20_000);
  try {
    await progress(load, 400);
    t.diagnostic('load running');

    // kill -9 of host 2: every chain it was in is repaired on the other three.
    const victim = 1;
    const lost = cluster.entries.map((_, chain) => cluster.replicaOf(victim, chain)).filter((id) => id !== null);
    await cluster.kill(victim);
    await cluster.waitFor(`host ${victim + 1}'s ${lost.length} replicas to be removed`, () =>
      cluster.entries.every((entry) => entry !== null && lost.every((id) => !entry.configuration.members.includes(id!))),
    );
    await cluster.waitForTable(REPLICAS, 3);
    await progress(load, 300);
    t.diagnostic(`host ${victim + 1} killed: its ${lost.length} replicas replaced on the others`);

    // It restarts empty, as a new incarnation, and takes its share back (new replicas, copied).
    await cluster.start(victim);
    await cluster.waitForTable(REPLICAS, 4);
    assert.ok(heldBy(victim) >= 8, `the restarted host holds ${heldBy(victim)} replicas`);
    for (const id of lost) assert.ok(cluster.entries.every((entry) => !entry!.homes.has(id!)), `replica ${id} never comes back`);
    await progress(load, 300);

    // A fifth host: chains move to it, a join and a removal each, until roles are balanced again.
    await cluster.start(4);
    await cluster.waitForTable(REPLICAS, 5);
    assert.ok(heldBy(4) >= 7, `the fifth host holds ${heldBy(4)} replicas`);
    // One peer link per pair of hosts and direction carries every chain between them: 24 channels
    // (12 chains, two non-heads each) over at most 20 links, so some link carries several.
    let mostChainsOnALink = 0;
    for (const host of cluster.hosts) {
      const answer = await cluster.request(host.index, '/status');
      const { peerLinks } = JSON.parse(answer.body.toString('utf8')) as { peerLinks: { dialed: Array<{ hostId: string; chains: number }>; accepted: Array<{ hostId: string; chains: number }> } };
      for (const side of [peerLinks.dialed, peerLinks.accepted]) {
        const peers = side.map((link) => link.hostId);
        assert.equal(new Set(peers).size, peers.length, `${host.hostId}: one link per host and direction (${JSON.stringify(peerLinks)})`);
        assert.ok(peers.length <= 4 && !peers.includes(host.hostId), `${host.hostId}: links only to the other hosts (${JSON.stringify(peerLinks)})`);
      }
      for (const link of peerLinks.dialed) mostChainsOnALink = Math.max(mostChainsOnALink, link.chains);
    }
    assert.ok(mostChainsOnALink >= 2, `a link carries several chains (at most ${mostChainsOnALink} seen)`);
    await progress(load, 300);
    t.diagnostic(`a fifth host added: replicas per host ${[0, 1, 2, 3, 4].map(heldBy).join(', ')}`);
  } finally {
    clearInterval(watchdog);
    await load.stop();
  }

  // Every acknowledged write reads back: a final read of every key joins the history.
  for (const client of clients) await client.whenIdle();
  for (const key of KEYS) {
    const entry: HistoryEntry = { client: 1_000_000, operation: { kind: 'get', key }, invokedAt: performance.now(), respondedAt: Infinity };
    entry.result = (await clients[0]!.get(key))?.toString();
    entry.respondedAt = performance.now();
    load.history.push(entry);
  }
  const check = checkLinearizable(load.history);
  assert.ok(check.linearizable, `history not linearizable: ${check.key} ${check.explanation}`);

  // Per chain: every replica the same, and exactly the writes acknowledged to the chain applied.
  const digests = (await Promise.all(cluster.hosts.map((host) => cluster.digests(host.index)))).flat();
  for (let chain = 0; chain < CHAINS; chain++) {
    const ofChain = digests.filter((digest) => digest.chain === chain);
    assert.equal(ofChain.length, REPLICAS, `chain ${chain} has ${REPLICAS} replicas holding state`);
    for (const digest of ofChain) assert.equal(digest.digest, ofChain[0]!.digest, `chain ${chain}: replicas differ: ${JSON.stringify(ofChain)}`);
    assert.equal(ofChain[0]!.appliedSeq, load.acknowledged.get(chain) ?? 0, `chain ${chain} applied ${ofChain[0]!.appliedSeq} writes; ${load.acknowledged.get(chain) ?? 0} were acknowledged`);
  }

  // Every replica of one chain gone at once: that chain is unavailable (its data was only in
  // memory), with a coded error and never a hang, while the chains with a survivor go on.
  const doomed = [...new Set(cluster.entries[0]!.configuration.members.map((id) => cluster.hosts.findIndex((host) => host.hostId === cluster.entries[0]!.homes.get(id)!.host)))];
  const survivesOn = (chain: number): boolean => cluster.entries[chain]!.configuration.members.some((id) => !doomed.includes(cluster.hosts.findIndex((host) => host.hostId === cluster.entries[chain]!.homes.get(id)!.host)));
  const lostKey = KEYS.find((key) => clients[0]!.chainOf(key) === 0)!;
  const liveKey = KEYS.find((key) => survivesOn(clients[0]!.chainOf(key)))!;
  for (const index of doomed) await cluster.kill(index);
  const killedAt = performance.now();
  await assert.rejects(clients[0]!.put(lostKey, 'after the loss'), (error: unknown) => {
    const coded = isDabbaError(error, ErrorCode.unavailable) || (isDabbaError(error, ErrorCode.outcomeUnknown) && isDabbaError((error as Error).cause, ErrorCode.unavailable));
    assert.ok(coded, `a write to the lost chain fails with DABBA_ERR_UNAVAILABLE: ${String(error)}`);
    return true;
  });
  await assert.rejects(clients[0]!.get(lostKey), (error: unknown) => isDabbaError(error, ErrorCode.unavailable));
  t.diagnostic(`chain 0 lost with hosts ${doomed.map((index) => index + 1).join(', ')}: refused after ${Math.round(performance.now() - killedAt)} ms`);
  await clients[0]!.put(liveKey, 'after the loss');
  assert.equal((await clients[0]!.get(liveKey))?.toString(), 'after the loss', 'a chain with a survivor goes on');
  for (const client of clients) await client.close();
});
