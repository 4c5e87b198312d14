/**
 * The steps that test a chain of `dabba serve` processes (a HostCluster), shared by the plain run
 * (hosts.test.ts) and the TLS run (hosts-tls.test.ts), so both check the same things the same way:
 * a load of remote clients whose history is recorded (puts, gets and compare-and-sets), pipelined
 * bursts, a host of each role killed and brought back, and at the end: every acknowledged write
 * reads back, the history is linearizable, no two compare-and-sets on one version both applied, the
 * replicas are identical and no write was applied twice.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import type { RemoteClient } from '../../src/client/index.js';
import { checkLinearizable, type HistoryEntry } from '../sim/linearizability.js';
import type { HostCluster } from './host-cluster.js';

export interface Load {
  history: HistoryEntry[];
  /** Every write acknowledged, by the load or by a step (an HTTP PUT, say): the chain must have applied exactly these. */
  acknowledgedWrites: number;
  /** Conditional writes whose outcome is unknown (a tail that knew it failed first): each may or may not hold a seq. */
  unknownWrites: number;
  /** `key@version` of every applied compare-and-set: a version is consumed once. */
  compareAndSets: Set<string>;
  operations: number;
  /** Resolved as operations complete (see progress()). */
  waiters: Array<{ target: number; resolve: () => void }>;
  /** Pipelined bursts under way (see burst()); stop() waits for them too. */
  bursts: Array<Promise<void>>;
  stop(): Promise<void>;
}

/** Keys the load writes: k0-k7 by the logical clients, b0-b63 by bursts. */
const LOAD_KEYS = [...Array.from({ length: 8 }, (_, index) => `k${index}`), ...Array.from({ length: 64 }, (_, index) => `b${index}`)];

/** Logical clients over the remote clients, each with one operation outstanding, on a small key space. */
export function startLoad(clients: RemoteClient[], logicalClients: number): Load {
  const load: Load = { history: [], acknowledgedWrites: 0, unknownWrites: 0, compareAndSets: new Set(), operations: 0, waiters: [], bursts: [], stop: async () => undefined };
  let running = true;
  const loop = async (clientId: number): Promise<void> => {
    const client = clients[clientId % clients.length]!;
    for (let index = 0; running; index++) {
      const key = `k${(clientId * 7 + index) % 8}`;
      if ((index + clientId) % 5 === 2) {
        await compareAndSet(client, load, clientId, key, `c${clientId}-${index}`);
        load.operations++;
        if (load.waiters.length > 0 && load.waiters[0]!.target <= load.operations) load.waiters.shift()!.resolve();
        continue;
      }
      const isWrite = (index + clientId) % 3 !== 0;
      const entry: HistoryEntry = isWrite
        ? { client: clientId, operation: { kind: 'put', key, value: `c${clientId}-${index}` }, invokedAt: performance.now(), respondedAt: Infinity }
        : { client: clientId, operation: { kind: 'get', key }, invokedAt: performance.now(), respondedAt: Infinity };
      load.history.push(entry);
      if (entry.operation.kind === 'put') {
        await client.put(key, entry.operation.value);
        load.acknowledgedWrites++;
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
    await Promise.all(load.bursts);
  };
  return load;
}

/**
 * getVersioned, then a put conditional on that version (or on absence). The get joins the history;
 * the put does if it was applied (or may have been: outcome unknown), not if its condition failed
 * (no effect). Either way it took a seq, unless its outcome is unknown.
 */
async function compareAndSet(client: RemoteClient, load: Load, clientId: number, key: string, value: string): Promise<void> {
  const get: HistoryEntry = { client: clientId, operation: { kind: 'get', key }, invokedAt: performance.now(), respondedAt: Infinity };
  load.history.push(get);
  const found = await client.getVersioned(key);
  get.result = found?.value.toString();
  get.respondedAt = performance.now();
  const put: HistoryEntry = { client: clientId, operation: { kind: 'put', key, value }, invokedAt: performance.now(), respondedAt: Infinity };
  load.history.push(put);
  try {
    await client.put(key, value, found === undefined ? { ifAbsent: true } : { ifVersion: found.version });
    put.respondedAt = performance.now();
    load.acknowledgedWrites++;
    if (found !== undefined) {
      assert.ok(!load.compareAndSets.has(`${key}@${found.version}`), `two compare-and-sets of ${key} on version ${found.version} both applied`);
      load.compareAndSets.add(`${key}@${found.version}`);
    }
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'DABBA_ERR_CONDITION_FAILED') {
      load.history.splice(load.history.lastIndexOf(put), 1);
      load.acknowledgedWrites++;
    } else if (code === 'DABBA_ERR_OUTCOME_UNKNOWN') {
      load.unknownWrites++;
    } else {
      throw error;
    }
  }
}

/** Starts 2000 pipelined writes (each its own logical client), so a fault finds writes in every ring and link. */
export function burst(client: RemoteClient, load: Load, tag: string): void {
  const writes: Array<Promise<void>> = [];
  for (let index = 0; index < 2000; index++) {
    const key = `b${index % 64}`;
    const value = `${tag}-${index}`;
    const entry: HistoryEntry = { client: 1_000_000 + load.history.length, operation: { kind: 'put', key, value }, invokedAt: performance.now(), respondedAt: Infinity };
    load.history.push(entry);
    writes.push(
      client.put(key, value).then(() => {
        entry.respondedAt = performance.now();
        load.acknowledgedWrites++;
      }),
    );
  }
  load.bursts.push(Promise.all(writes).then(() => undefined));
}

/** Resolves once the load has made `count` more operations: progress, not time. */
export function progress(load: Load, count: number): Promise<void> {
  return new Promise((resolve) => load.waiters.push({ target: load.operations + count, resolve }));
}

/**
 * SIGKILLs the host whose replica has `role`, in the middle of a burst; waits until the chain
 * dropped it and the load went on; restarts it and waits until it rejoined as a new replica.
 */
export async function killAndRejoin(t: TestContext, cluster: HostCluster, load: Load, client: RemoteClient, role: 'head' | 'middle' | 'tail'): Promise<void> {
  const victim = cluster.hostWithRole(role);
  const replica = cluster.replicaOf(victim)!;
  burst(client, load, `before-${role}-kill`);
  await cluster.kill(victim);
  await cluster.waitFor(`replica ${replica} (the ${role}) to be removed`, (configuration) => configuration !== null && !configuration.members.includes(replica));
  // A dead head or middle is evicted on its successor's report (connection refused) when the
  // master is alive elsewhere; the tail never is: it serves reads until its lease runs out.
  const evicted = cluster.hosts.some((host) => host.log.join('').includes(`its successor found replica ${replica}'s process gone`));
  if (role === 'tail') assert.equal(evicted, false, 'the tail is removed only when its lease expires');
  else t.diagnostic(`the ${role} was removed ${evicted ? 'by eviction (its successor saw its port closed)' : 'when its lease expired (the master died with it)'}`);
  await progress(load, 100);
  await cluster.start(victim);
  await cluster.waitForFullChain();
  assert.notEqual(cluster.replicaOf(victim), replica, 'a restarted host joins as a new replica');
  await progress(load, 200);
  t.diagnostic(`${role} host ${cluster.hosts[victim]!.hostId} killed, removed, restarted and rejoined; epoch ${cluster.current!.epoch}`);
}

/** Stops the load and waits for every write in flight; says where things stand if that hangs. */
export async function stopLoad(load: Load, clients: RemoteClient[], cluster: HostCluster): Promise<void> {
  const watchdog = setTimeout(() => {
    process.stderr.write(`hosts test: still waiting after 60 s: clients ${JSON.stringify(clients.map((client) => client.stats()))}, configuration ${JSON.stringify(cluster.current)}\n`);
  }, 60_000);
  try {
    await load.stop();
  } finally {
    clearTimeout(watchdog);
  }
}

/**
 * After the load: every acknowledged write is readable (a final read of every key joins the
 * history, which must still be linearizable), every host's replica has the same digest, and the
 * chain applied exactly the writes acknowledged (exactly-once).
 */
export async function checkOutcome(cluster: HostCluster, clients: RemoteClient[], load: Load): Promise<void> {
  for (const client of clients) await client.whenIdle();
  for (const key of LOAD_KEYS) {
    const entry: HistoryEntry = { client: 2_000_000, operation: { kind: 'get', key }, invokedAt: performance.now(), respondedAt: Infinity };
    entry.result = (await clients[0]!.get(key))?.toString();
    entry.respondedAt = performance.now();
    assert.ok(entry.result !== undefined, `${key} was written and acknowledged, and is gone`);
    load.history.push(entry);
  }
  const check = checkLinearizable(load.history);
  assert.ok(check.linearizable, `history not linearizable: ${check.key} ${check.explanation}`);
  const digests = await Promise.all(cluster.hosts.map((host) => cluster.digest(host.index)));
  for (const digest of digests) assert.equal(digest.digest, digests[0]!.digest, `replicas differ: ${JSON.stringify(digests)}`);
  // The chain's sequence counts every write it applied (or skipped for its condition); each was
  // acknowledged once, but for conditional writes whose outcome is unknown.
  const applied = digests[0]!.appliedSeq;
  assert.ok(applied >= load.acknowledgedWrites && applied <= load.acknowledgedWrites + load.unknownWrites, `the chain applied ${applied} writes, ${load.acknowledgedWrites} were acknowledged and ${load.unknownWrites} have an unknown outcome`);
  assert.ok(load.compareAndSets.size > 0, 'compare-and-sets were applied');
}
