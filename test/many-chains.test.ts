/**
 * Many chains in one process: the keyspace split over `chains` chains placed on `nodes` worker
 * threads. Every API works through the router, roles are balanced over the nodes, and a node that
 * crashes or joins under load loses no acknowledged write: each chain is repaired or moved, the
 * recorded history is linearizable, and every chain's replicas end identical.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createChain, type Chain, type ChainLayout } from '../src/index.js';
import { mulberry32 } from './helpers/prng.js';
import { checkLinearizable, type HistoryEntry } from './sim/linearizability.js';

/** Every node's count of chains it is head of, tail of, and holds, over the members (no joiners). */
function roleCounts(layout: ChainLayout[]): Map<number, { head: number; tail: number; replicas: number }> {
  const counts = new Map<number, { head: number; tail: number; replicas: number }>();
  const of = (node: number) => counts.get(node) ?? counts.set(node, { head: 0, tail: 0, replicas: 0 }).get(node)!;
  for (const { members } of layout) {
    const settled = members.filter((member) => member.role !== 'joining');
    settled.forEach((member, index) => {
      const count = of(member.node);
      count.replicas++;
      if (index === 0) count.head++;
      if (index === settled.length - 1) count.tail++;
    });
  }
  return counts;
}

/** Each count within one of every other (for `field`). */
function assertBalanced(layout: ChainLayout[], field: 'head' | 'tail' | 'replicas', slack = 1): void {
  const values = [...roleCounts(layout).values()].map((count) => count[field]);
  assert.ok(Math.max(...values) - Math.min(...values) <= slack, `${field} counts are not balanced: ${JSON.stringify([...roleCounts(layout)])}`);
}

/** Every chain's replicas hold the same state, and applied exactly the writes acknowledged to it. */
async function assertConverged(chain: Chain, acknowledged: ReadonlyMap<number, number>): Promise<void> {
  await chain.whenIdle();
  const digests = await chain.digests();
  for (const { chain: id, members } of chain.layout()) {
    const ofChain = digests.filter((digest) => digest.chain === id);
    assert.equal(ofChain.length, members.filter((member) => member.role !== 'joining').length);
    for (const digest of ofChain) {
      assert.equal(digest.digest, ofChain[0]!.digest, `chain ${id}: replicas differ: ${JSON.stringify(ofChain)}`);
      assert.equal(digest.appliedSeq, acknowledged.get(id) ?? 0, `chain ${id}: node ${digest.id} applied ${digest.appliedSeq} writes`);
    }
  }
}

interface Workload {
  history: HistoryEntry[];
  /** Acknowledged writes per chain. */
  acknowledged: Map<number, number>;
}

/** Logical clients, one operation outstanding each, over 64 keys spread over the chains; `at(count)` may act mid-run. */
async function runWorkload(chain: Chain, options: { clients: number; operationsPerClient: number; at?: (count: number) => void; until?: Promise<unknown> }): Promise<Workload> {
  const history: HistoryEntry[] = [];
  const acknowledged = new Map<number, number>();
  let operations = 0;
  let untilSettled = options.until === undefined;
  options.until?.finally(() => (untilSettled = true)).catch(() => {});
  const client = async (clientId: number): Promise<void> => {
    for (let index = 0; index < options.operationsPerClient || !untilSettled; index++) {
      const key = `k${(clientId * 13 + index) % 64}`;
      const isWrite = (index + clientId) % 3 !== 0;
      const entry: HistoryEntry = isWrite
        ? { client: clientId, operation: { kind: 'put', key, value: `c${clientId}-${index}` }, invokedAt: performance.now(), respondedAt: Infinity }
        : { client: clientId, operation: { kind: 'get', key }, invokedAt: performance.now(), respondedAt: Infinity };
      history.push(entry);
      if (entry.operation.kind === 'put') {
        await chain.put(key, entry.operation.value);
        const id = chain.chainOf(key);
        acknowledged.set(id, (acknowledged.get(id) ?? 0) + 1);
      } else {
        entry.result = (await chain.get(key))?.toString();
      }
      entry.respondedAt = performance.now();
      options.at?.(++operations);
    }
  };
  await Promise.all(Array.from({ length: options.clients }, (_, index) => client(index + 1)));
  return { history, acknowledged };
}

function assertLinearizable(history: HistoryEntry[]): void {
  const check = checkLinearizable(history);
  assert.ok(check.linearizable, `history not linearizable: ${check.key} ${check.explanation}`);
}

describe('many chains in one process', () => {
  for (const nodes of [3, 5]) {
    test(`chains: 16 on ${nodes} nodes with 3 replicas: every call, balanced roles, one thread per node`, { timeout: 60_000 }, async () => {
      const chain = createChain({ replicas: 3, chains: 16, nodes });
      try {
        const layout = chain.layout();
        assert.equal(layout.length, 16);
        for (const { chain: id, epoch, members } of layout) {
          assert.equal(epoch, 1);
          assert.deepEqual(members.map((member) => member.role), ['head', 'middle', 'tail'], `chain ${id}`);
          assert.equal(new Set(members.map((member) => member.node)).size, 3, `chain ${id} on distinct nodes`);
        }
        assert.deepEqual([...roleCounts(layout).keys()].sort(), Array.from({ length: nodes }, (_, index) => index + 1));
        for (const field of ['head', 'tail', 'replicas'] as const) assertBalanced(layout, field);

        // Keys spread over the chains, by a stable hash.
        const keys = Array.from({ length: 400 }, (_, index) => `key-${index}`);
        const perChain = new Map<number, number>();
        for (const key of keys) perChain.set(chain.chainOf(key), (perChain.get(chain.chainOf(key)) ?? 0) + 1);
        assert.equal(perChain.size, 16, 'every chain gets keys');
        assert.equal(chain.chainOf('key-7'), chain.chainOf(new TextEncoder().encode('key-7')), 'a string routes as its UTF-8 bytes');

        await Promise.all(keys.map((key) => chain.put(key, `v-${key}`)));
        assert.equal((await chain.get('key-3'))?.toString(), 'v-key-3');
        const versioned = await chain.getVersioned('key-5');
        assert.equal(versioned?.value.toString(), 'v-key-5');
        assert.ok(versioned!.version >= 1);
        await chain.delete('key-3');
        assert.equal(await chain.get('key-3'), undefined);
        // putMany spans chains: each chain's part goes to its chain, and the promise settles when all have.
        await chain.putMany(keys.slice(0, 100).map((key) => [key, `w-${key}`] as const));
        for (const key of keys.slice(0, 100)) assert.equal((await chain.get(key))?.toString(), `w-${key}`);
        await assert.rejects(chain.putMany([['ok', 'v'], [42 as unknown as string, 'v']]), { code: 'DABBA_ERR_INVALID_ARGUMENT' });
        await chain.whenIdle();
        // outcome() finds the write's chain by its client id.
        const outcome = await chain.outcome({ clientId: chain.chainOf('key-9') + 1, clientSeq: 1 });
        assert.equal(outcome, 'committed');

        const stats = chain.stats();
        assert.equal(stats.chains, 16);
        assert.equal(stats.nodes, nodes);
        assert.equal(stats.writesAcknowledged, 400 + 1 + 100 + 1);
        // Chain 0's replicas are on three distinct threads (nodes), however many chains share them.
        const threads = new Set<number>();
        for (const { id, threadId } of stats.replicas) {
          assert.ok(threadId > 0, `node ${id} published its thread id`);
          threads.add(threadId);
        }
        assert.equal(threads.size, 3);

        const acknowledged = new Map<number, number>();
        for (const key of [...keys, 'key-3', ...keys.slice(0, 100), 'ok']) acknowledged.set(chain.chainOf(key), (acknowledged.get(chain.chainOf(key)) ?? 0) + 1);
        await assertConverged(chain, acknowledged);
      } finally {
        await chain.close();
      }
    });
  }

  test('a node crashes under load: every chain it was in is repaired on the others, nothing acknowledged is lost', { timeout: 120_000 }, async () => {
    const chain = createChain({ replicas: 3, chains: 16, nodes: 4 });
    try {
      const victim = 2;
      const inChains = chain.layout().filter(({ members }) => members.some((member) => member.node === victim)).length;
      assert.ok(inChains >= 10, `node ${victim} holds ${inChains} chains`);
      let crashed = false;
      const repaired = new Promise<void>((resolve) => {
        const check = (): void => {
          const layout = chain.layout();
          const whole = layout.every(({ members }) => members.length === 3 && members.every((member) => member.role !== 'joining' && member.node !== victim));
          if (crashed && whole) resolve();
          else setTimeout(check, 20);
        };
        check();
      });
      const workload = await runWorkload(chain, {
        clients: 6,
        operationsPerClient: 300,
        until: repaired,
        at: (count) => {
          if (count !== 400) return;
          chain.crashReplica(victim);
          crashed = true;
        },
      });
      await repaired;
      const layout = chain.layout();
      assert.equal(chain.stats().nodes, 3);
      for (const field of ['replicas'] as const) assertBalanced(layout, field);
      assertLinearizable(workload.history);
      await assertConverged(chain, workload.acknowledged);
    } finally {
      await chain.close();
    }
  });

  test('a node joins under load: chains move to it, one join and one removal each, and the layout rebalances', { timeout: 120_000 }, async () => {
    const chain = createChain({ replicas: 3, chains: 12, nodes: 3 });
    try {
      let added: Promise<number> | null = null;
      let joined: number | null = null;
      const done = new Promise<void>((resolve, reject) => {
        const wait = (): void => {
          if (added === null) {
            setTimeout(wait, 10);
            return;
          }
          added.then((id) => {
            joined = id;
            resolve();
          }, reject);
        };
        wait();
      });
      const workload = await runWorkload(chain, {
        clients: 6,
        operationsPerClient: 300,
        until: done,
        at: (count) => {
          if (count === 300) added = chain.addReplica();
        },
      });
      await done;
      assert.equal(joined, 4);
      const layout = chain.layout();
      const counts = roleCounts(layout);
      assert.ok((counts.get(4)?.replicas ?? 0) >= 8, `node 4 holds ${counts.get(4)?.replicas} chains`);
      for (const { chain: id, members } of layout) assert.equal(members.length, 3, `chain ${id} keeps 3 replicas`);
      assertBalanced(layout, 'replicas');
      // Roles too: the chains whose head or tail belongs on node 4 were rotated.
      assertBalanced(layout, 'head');
      assertBalanced(layout, 'tail');
      assert.equal(chain.stats().nodes, 4);
      assertLinearizable(workload.history);
      await assertConverged(chain, workload.acknowledged);
    } finally {
      await chain.close();
    }
  });

  test('a node hangs: every chain removes it after suspectAfterMs and is repaired; removeReplica and replaceReplica move chains off a node', { timeout: 120_000 }, async () => {
    const chain = createChain({ replicas: 3, chains: 8, nodes: 5, suspectAfterMs: 300 });
    try {
      const keys = Array.from({ length: 200 }, (_, index) => `key-${index}`);
      await Promise.all(keys.map((key) => chain.put(key, 'v1')));
      const onNode = (node: number): number => chain.layout().filter(({ members }) => members.some((member) => member.node === node)).length;
      assert.ok(onNode(3) > 0);
      chain.freezeReplica(3);
      const writes = Promise.all(keys.map((key) => chain.put(key, 'v2')));
      await writes;
      await until(() => onNode(3) === 0 && chain.layout().every(({ members }) => members.length === 3 && members.every((member) => member.role !== 'joining')));
      assert.equal(chain.stats().nodes, 4);

      // An operator takes node 1 out: its chains are repaired on the three others first.
      await chain.removeReplica(1);
      assert.equal(onNode(1), 0);
      for (const { members } of chain.layout()) assert.equal(members.length, 3);
      // And replaces node 2 with a new one (6): a join of the new node, then node 2 leaves.
      const added = await chain.replaceReplica(2);
      assert.equal(added, 6);
      assert.equal(onNode(2), 0);
      assert.ok(onNode(6) > 0);
      for (const key of keys) assert.equal((await chain.get(key))?.toString(), 'v2');
      const acknowledged = new Map<number, number>();
      for (const key of [...keys, ...keys]) acknowledged.set(chain.chainOf(key), (acknowledged.get(chain.chainOf(key)) ?? 0) + 1);
      await assertConverged(chain, acknowledged);
    } finally {
      await chain.close();
    }
  });

  for (const seed of [1, 2, 8]) {
    test(`chaos, seed ${seed}: nodes crash, hang, leave and join under load; every chain ends whole, nothing acknowledged is lost`, { timeout: 180_000 }, async () => {
      const random = mulberry32(seed);
      const chain = createChain({ replicas: 3, chains: 16, nodes: 4, suspectAfterMs: 300 });
      const events: string[] = [];
      try {
        const liveNodes = (): number[] => [...new Set(chain.layout().flatMap(({ members }) => members.map((member) => member.node)))];
        const script = (async () => {
          for (let step = 0; step < 6; step++) {
            await new Promise((resolve) => setTimeout(resolve, 150 + random() * 250));
            const nodes = liveNodes();
            const victim = nodes[Math.floor(random() * nodes.length)]!;
            const roll = random();
            // Keep at least three nodes, so every chain can be whole again.
            if (nodes.length > 3 && roll < 0.3) {
              events.push(`crash ${victim}`);
              chain.crashReplica(victim);
            } else if (nodes.length > 3 && roll < 0.45) {
              events.push(`freeze ${victim}`);
              chain.freezeReplica(victim);
            } else if (nodes.length > 3 && roll < 0.6) {
              events.push(`remove ${victim}`);
              // A node that hangs unnoticed yet can still be asked to leave; it then fails instead.
              await chain.removeReplica(victim).catch((error: unknown) => events.push(`remove failed: ${(error as Error).message}`));
            } else {
              events.push('add');
              await chain.addReplica().catch((error: unknown) => events.push(`add failed: ${(error as Error).message}`));
            }
          }
          // Settled: every chain whole, replicas balanced, and nothing moving for a second.
          let last = '';
          let sameSince = performance.now();
          await until(() => {
            const layout = chain.layout();
            const now = JSON.stringify(layout);
            if (now !== last) [last, sameSince] = [now, performance.now()];
            if (!layout.every(({ members }) => members.length === 3 && members.every((member) => member.role !== 'joining'))) return false;
            const held = [...roleCounts(layout).values()].map((count) => count.replicas);
            return Math.max(...held) - Math.min(...held) <= 1 && performance.now() - sameSince > 1000;
          }, 60_000);
        })();
        const workload = await runWorkload(chain, { clients: 6, operationsPerClient: 200, until: script });
        await script;
        assertLinearizable(workload.history);
        await assertConverged(chain, workload.acknowledged);
      } catch (error) {
        throw new Error(`seed ${seed}, events ${events.join(', ')}: ${(error as Error).message}`, { cause: error });
      } finally {
        await chain.close();
      }
    });
  }

  test('a chain whose last replica fails is unavailable; the other chains go on', { timeout: 60_000 }, async () => {
    const chain = createChain({ replicas: 1, chains: 6, nodes: 2 });
    const failures: Error[] = [];
    chain.on('replicaFailed', (error: Error) => failures.push(error));
    try {
      const keys = Array.from({ length: 60 }, (_, index) => `key-${index}`);
      await Promise.all(keys.map((key) => chain.put(key, 'v')));
      const onNode1 = new Set(chain.layout().filter(({ members }) => members[0]!.node === 1).map(({ chain: id }) => id));
      assert.ok(onNode1.size > 0 && onNode1.size < 6);
      chain.crashReplica(1);
      await until(() => failures.length === onNode1.size);
      for (const key of keys) {
        if (onNode1.has(chain.chainOf(key))) await assert.rejects(chain.put(key, 'w'), { code: 'DABBA_ERR_REPLICA_FAILED' });
        else await chain.put(key, 'w');
      }
      // Removing the node that holds a chain's only replica is refused, with nowhere to move it.
      await assert.rejects(chain.removeReplica(2), { code: 'DABBA_ERR_OUT_OF_RANGE' });
    } finally {
      await chain.close();
    }
  });
});

/** Resolves once `condition` holds, looking every 10 ms (state that changes on the engine's own schedule). */
async function until(condition: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    assert.ok(performance.now() < deadline, 'condition not reached in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
