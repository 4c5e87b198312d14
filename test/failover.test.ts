/**
 * Real fault tests: replica worker threads are terminated abruptly (crashReplica aborts the worker,
 * as a crash would) under a concurrent put/get load. Afterwards every acknowledged write must be
 * readable, the recorded history linearizable, the replicas identical, and no write applied twice.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { createChain, type Chain, type ReconfigurationEvent } from '../src/index.js';
import { checkLinearizable, type HistoryEntry } from './sim/linearizability.js';

interface Workload {
  history: HistoryEntry[];
  acknowledgedWrites: number;
}

/**
 * Logical clients, each with one operation outstanding at a time, over a small key space; plus a
 * burst of pipelined writes (each its own logical client) issued right before every crash, so a
 * crash always finds thousands of writes in rings and in-flight lists.
 */
async function runWorkload(
  chain: Chain,
  options: {
    clients: number;
    operationsPerClient: number;
    onOperation: (count: number, burst: () => void) => void;
    /** Clients go on past operationsPerClient until this settles. */
    until?: Promise<unknown>;
  },
): Promise<Workload> {
  const history: HistoryEntry[] = [];
  let operations = 0;
  let acknowledgedWrites = 0;
  const bursts: Array<Promise<void>> = [];
  let burstClient = 1000;
  const burst = (): void => {
    for (let index = 0; index < 2000; index++) {
      const key = `b${index % 64}`;
      const entry: HistoryEntry = { client: burstClient++, operation: { kind: 'put', key, value: `burst-${burstClient}` }, invokedAt: performance.now(), respondedAt: Infinity };
      history.push(entry);
      bursts.push(
        chain.put(key, `burst-${burstClient}`).then(() => {
          entry.respondedAt = performance.now();
          acknowledgedWrites++;
        }),
      );
    }
  };
  let untilSettled = options.until === undefined;
  options.until?.finally(() => (untilSettled = true)).catch(() => {});
  const client = async (clientId: number): Promise<void> => {
    for (let index = 0; index < options.operationsPerClient || !untilSettled; index++) {
      const key = `k${(clientId * 7 + index) % 8}`;
      const isWrite = (index + clientId) % 3 !== 0;
      const entry: HistoryEntry = isWrite
        ? { client: clientId, operation: { kind: 'put', key, value: `c${clientId}-${index}` }, invokedAt: performance.now(), respondedAt: Infinity }
        : { client: clientId, operation: { kind: 'get', key }, invokedAt: performance.now(), respondedAt: Infinity };
      history.push(entry);
      if (entry.operation.kind === 'put') {
        await chain.put(key, entry.operation.value);
        acknowledgedWrites++;
      } else {
        entry.result = (await chain.get(key))?.toString();
      }
      entry.respondedAt = performance.now();
      options.onOperation(++operations, burst);
    }
  };
  await Promise.all(Array.from({ length: options.clients }, (_, index) => client(index + 1)));
  await Promise.all(bursts);
  return { history, acknowledgedWrites };
}

async function assertConverged(chain: Chain, acknowledgedWrites: number): Promise<void> {
  await chain.whenIdle();
  const digests = await chain.digests();
  assert.ok(digests.length >= 1);
  for (const digest of digests) {
    assert.equal(digest.digest, digests[0]!.digest, `replicas differ: ${JSON.stringify(digests)}`);
    // Exactly-once: every write was applied once, so each replica applied exactly the acknowledged ones.
    assert.equal(digest.appliedSeq, acknowledgedWrites, `replica ${digest.id} applied ${digest.appliedSeq} writes, ${acknowledgedWrites} were acknowledged`);
  }
}

describe('crash one replica under load', () => {
  for (const role of ['head', 'middle', 'tail'] as const) {
    test(`the ${role} is terminated: the chain reconfigures and keeps every acknowledged write`, { timeout: 60_000 }, async () => {
      const chain = createChain({ replicas: 3 });
      const events: ReconfigurationEvent[] = [];
      chain.on('reconfigured', (event: ReconfigurationEvent) => events.push(event));
      try {
        const victim = chain.members().find((member) => member.role === role)!.id;
        const workload = await runWorkload(chain, {
          clients: 4,
          operationsPerClient: 250,
          onOperation: (count, burst) => {
            if (count === 300) {
              burst();
              chain.crashReplica(victim);
            }
          },
        });
        assert.equal(events.length, 1, 'one reconfiguration');
        assert.equal(events[0]!.removed, victim);
        assert.ok(!chain.members().some((member) => member.id === victim));
        assert.equal(chain.members().length, 2);
        const check = checkLinearizable(workload.history);
        assert.ok(check.linearizable, `history not linearizable: ${check.key} ${check.explanation}`);
        await assertConverged(chain, workload.acknowledgedWrites);
      } finally {
        await chain.close();
      }
    });
  }

  test('repeated crashes: a chain of 5 loses its tail, its head and a middle one after another', { timeout: 60_000 }, async () => {
    const chain = createChain({ replicas: 5 });
    try {
      const crashAt = new Map<number, 'tail' | 'head' | 'middle'>([
        [200, 'tail'],
        [500, 'head'],
        [800, 'middle'],
      ]);
      const workload = await runWorkload(chain, {
        clients: 4,
        operationsPerClient: 300,
        onOperation: (count, burst) => {
          const role = crashAt.get(count);
          if (role === undefined) return;
          burst();
          chain.crashReplica(chain.members().find((member) => member.role === role)!.id);
        },
      });
      assert.equal(chain.members().length, 2);
      assert.equal(chain.stats().reconfigurations, 3);
      const check = checkLinearizable(workload.history);
      assert.ok(check.linearizable, `history not linearizable: ${check.key} ${check.explanation}`);
      await assertConverged(chain, workload.acknowledgedWrites);
    } finally {
      await chain.close();
    }
  });

  test('a hung middle (no heartbeats, thread blocked) is detected and removed; the chain keeps serving', { timeout: 60_000 }, async () => {
    const chain = createChain({ replicas: 3, suspectAfterMs: 300 });
    const events: ReconfigurationEvent[] = [];
    chain.on('reconfigured', (event: ReconfigurationEvent) => events.push(event));
    try {
      const middle = chain.members().find((member) => member.role === 'middle')!.id;
      let frozenAt = 0;
      const workload = await runWorkload(chain, {
        clients: 4,
        operationsPerClient: 200,
        onOperation: (count, burst) => {
          if (count !== 200) return;
          burst();
          frozenAt = performance.now();
          chain.freezeReplica(middle);
        },
      });
      assert.equal(events.length, 1);
      assert.equal(events[0]!.removed, middle);
      assert.equal((events[0]!.cause as { code?: string }).code, 'DABBA_ERR_TIMEOUT', 'removed for missing heartbeats');
      assert.ok(performance.now() - frozenAt >= 300, 'not before the suspicion timeout');
      const check = checkLinearizable(workload.history);
      assert.ok(check.linearizable, `history not linearizable: ${check.key} ${check.explanation}`);
      await assertConverged(chain, workload.acknowledgedWrites);
    } finally {
      await chain.close();
    }
  });

  test('crashing the last replica reports pending writes as DABBA_ERR_OUTCOME_UNKNOWN, never success', async () => {
    const chain = createChain({ replicas: 1 });
    try {
      await chain.put('before', 'ok');
      const pending = Array.from({ length: 2000 }, (_, index) => chain.put(`k${index}`, 'v'));
      const outcomes = Promise.allSettled(pending);
      chain.crashReplica(chain.members()[0]!.id);
      const settled = await outcomes;
      const errors = settled.filter((result) => result.status === 'rejected').map((result) => (result as PromiseRejectedResult).reason);
      assert.ok(errors.length > 0, 'the crash came before the writes were acknowledged');
      // Writes the replica was sent have an unknown outcome, each naming itself; any it was never
      // sent simply failed. Nothing is reported as success or plain failure that might be neither.
      const unknown = errors.filter((error) => error.code === 'DABBA_ERR_OUTCOME_UNKNOWN');
      assert.ok(unknown.length > 0, 'the writes reached the replica before it crashed');
      for (const error of errors) assert.ok(['DABBA_ERR_OUTCOME_UNKNOWN', 'DABBA_ERR_REPLICA_FAILED'].includes(error.code), error.code);
      for (const error of unknown) assert.equal(error.write.clientId, 1);
      assert.deepEqual(
        unknown.map((error) => error.write.clientSeq),
        unknown.map((_, index) => unknown[0].write.clientSeq + index),
        'one error per write, in order',
      );
      // No replica is left to ask: outcome() says so; a write acknowledged before is still known.
      await assert.rejects(chain.outcome(unknown[0].write), { code: 'DABBA_ERR_OUTCOME_UNKNOWN' });
      assert.equal(await chain.outcome({ clientId: 1, clientSeq: 1 }), 'committed');
      await assert.rejects(chain.put('after', 'x'), { code: 'DABBA_ERR_REPLICA_FAILED' });
    } finally {
      await chain.close();
    }
  });
});

describe('kills with joins in between', () => {
  test('head, middle and tail die in turn, each replaced by a join; a joiner and a tail die mid-join', { timeout: 120_000 }, async () => {
    const chain = createChain({ replicas: 3 });
    try {
      // The script runs beside the workload and waits for it by operation count (an event, not a sleep).
      let reached: { at: number; resolve: () => void } | null = null;
      let burst: () => void = () => {};
      const operationsReached = (at: number): Promise<void> => new Promise((resolve) => (reached = { at, resolve }));
      let crashes = 0;
      let joins = 0;
      const crash = (role: string): number => {
        const id = chain.members().find((member) => member.role === role)!.id;
        chain.crashReplica(id);
        crashes++;

        return id;
      };
      const script = (async () => {
        let at = 150;
        for (const role of ['head', 'middle', 'tail'] as const) {
          await operationsReached(at);
          burst();
          const removed = once(chain, 'reconfigured');
          const victim = crash(role);
          assert.equal(((await removed)[0] as ReconfigurationEvent).removed, victim);
          await chain.addReplica();
          joins++;
          at += 250;
        }
        // A joiner dies while it copies: the join fails, the chain goes on as it was.
        await operationsReached(at);
        const failedJoin = chain.addReplica();
        crash('joining');
        await assert.rejects(failedJoin, { code: 'DABBA_ERR_REPLICA_FAILED' });
        // The tail a replica joins behind dies mid-join: the join is abandoned, the chain shrinks.
        await operationsReached(at + 200);
        const abandoned = chain.addReplica();
        crash('tail');
        await assert.rejects(abandoned, { code: 'DABBA_ERR_REPLICA_FAILED' });
        await chain.addReplica();
        joins++;
      })();
      const workload = await runWorkload(chain, {
        clients: 4,
        operationsPerClient: 100,
        until: script,
        onOperation: (count, burstNow) => {
          burst = burstNow;
          if (reached !== null && count >= reached.at) {
            const { resolve } = reached;
            reached = null;
            resolve();
          }
        },
      });
      await script;
      assert.equal(crashes, 5);
      assert.equal(joins, 4);
      assert.equal(chain.members().length, 3, 'back to three after every loss');
      const check = checkLinearizable(workload.history);
      assert.ok(check.linearizable, `history not linearizable: ${check.key} ${check.explanation}`);
      await assertConverged(chain, workload.acknowledgedWrites);
    } finally {
      await chain.close();
    }
  });
});

describe('membership changes online, under load', () => {
  test('addReplica: a new replica copies a snapshot, catches up and becomes the tail', { timeout: 60_000 }, async () => {
    const chain = createChain({ replicas: 2 });
    try {
      let joined: Promise<number> | undefined;
      const workload = await runWorkload(chain, {
        clients: 4,
        operationsPerClient: 250,
        onOperation: (count, burst) => {
          if (count !== 250) return;
          burst();
          joined = chain.addReplica();
          assert.equal(chain.members().at(-1)!.role, 'joining');
        },
      });
      const id = await joined!;
      const members = chain.members();
      assert.equal(members.length, 3);
      assert.deepEqual(members.at(-1), { ...members.at(-1)!, id, role: 'tail' });
      const check = checkLinearizable(workload.history);
      assert.ok(check.linearizable, `history not linearizable: ${check.key} ${check.explanation}`);
      await assertConverged(chain, workload.acknowledgedWrites);
    } finally {
      await chain.close();
    }
  });

  test('replaceReplica(middle) and removeReplica(tail): the chain changes shape and keeps every write', { timeout: 60_000 }, async () => {
    const chain = createChain({ replicas: 3 });
    try {
      const middle = chain.members().find((member) => member.role === 'middle')!.id;
      const changes: Array<Promise<unknown>> = [];
      const workload = await runWorkload(chain, {
        clients: 4,
        operationsPerClient: 300,
        onOperation: (count, burst) => {
          if (count !== 200) return;
          burst();
          // Replace the middle, then (the join done) remove the tail, all while the clients run.
          changes.push(
            chain.replaceReplica(middle).then(() => chain.removeReplica(chain.members().find((member) => member.role === 'tail')!.id)),
          );
        },
      });
      await Promise.all(changes);
      assert.ok(!chain.members().some((member) => member.id === middle), 'the replaced middle is gone');
      assert.equal(chain.members().length, 2);
      assert.equal(chain.stats().reconfigurations, 4, 'join begun, joined, middle removed, tail removed');
      const check = checkLinearizable(workload.history);
      assert.ok(check.linearizable, `history not linearizable: ${check.key} ${check.explanation}`);
      await assertConverged(chain, workload.acknowledgedWrites);
    } finally {
      await chain.close();
    }
  });
});
