/**
 * Conditional writes through the public API of createChain(): put with ifVersion or ifAbsent,
 * delete with ifVersion; a failed condition rejects with DABBA_ERR_CONDITION_FAILED and the key's
 * version; compare-and-set counters and put-if-absent races decide exactly as a single register
 * would, with reads at any replica, and through the crash of the head, a middle and the tail.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { createChain, isDabbaError, type Chain } from '../src/index.js';

const chains: Chain[] = [];
function track(chain: Chain): Chain {
  chains.push(chain);
  return chain;
}
after(async () => {
  await Promise.all(chains.map((chain) => chain.close()));
});

async function failure(promise: Promise<unknown>): Promise<{ code: string; currentVersion?: number }> {
  try {
    await promise;
  } catch (error) {
    return error as { code: string; currentVersion?: number };
  }
  assert.fail('expected a rejection');
}

/** Increments `key` by read-modify-write with ifVersion until it succeeds; returns 'applied', or 'unknown' (the outcome could not be known). */
async function increment(chain: Chain, key: string): Promise<'applied' | 'unknown'> {
  for (;;) {
    const current = await chain.getVersioned(key);
    try {
      await chain.put(key, String(Number(current!.value.toString()) + 1), { ifVersion: current!.version });
      return 'applied';
    } catch (error) {
      if (isDabbaError(error, 'DABBA_ERR_OUTCOME_UNKNOWN')) return 'unknown';
      if (!isDabbaError(error, 'DABBA_ERR_CONDITION_FAILED')) throw error;
    }
  }
}

describe('conditional writes', () => {
  test('ifVersion, ifAbsent and delete ifVersion: applied when the condition holds, DABBA_ERR_CONDITION_FAILED with the key’s version when not', async () => {
    const chain = track(createChain({ replicas: 3 }));
    await chain.put('a', '1');
    const first = (await chain.getVersioned('a'))!;
    await chain.put('a', '2', { ifVersion: first.version });
    const second = (await chain.getVersioned('a'))!;
    assert.equal(second.value.toString(), '2');
    const stale = await failure(chain.put('a', 'lost', { ifVersion: first.version }));
    assert.deepEqual({ code: stale.code, currentVersion: stale.currentVersion }, { code: 'DABBA_ERR_CONDITION_FAILED', currentVersion: second.version });
    const present = await failure(chain.put('a', 'lost', { ifAbsent: true }));
    assert.equal(present.currentVersion, second.version);
    assert.equal((await chain.get('a'))?.toString(), '2', 'failed conditions change nothing');

    await chain.put('fresh', 'x', { ifAbsent: true });
    assert.equal((await chain.get('fresh'))?.toString(), 'x');
    const absent = await failure(chain.put('never', 'x', { ifVersion: 5 }));
    assert.deepEqual({ code: absent.code, currentVersion: absent.currentVersion }, { code: 'DABBA_ERR_CONDITION_FAILED', currentVersion: 0 });
    assert.equal((await failure(chain.delete('a', { ifVersion: first.version }))).currentVersion, second.version);
    await chain.delete('a', { ifVersion: second.version });
    assert.equal(await chain.get('a'), undefined);
    await chain.put('a', 'back', { ifAbsent: true });

    // Bad conditions are refused at the call, before anything is sent.
    for (const conditions of [{ ifVersion: 0 }, { ifVersion: 1.5 }, { ifVersion: -3 }, { ifVersion: '7' }, { ifAbsent: 'yes' }, { ifVersion: 3, ifAbsent: true }, null]) {
      await assert.rejects(chain.put('a', 'v', conditions as never), { name: 'TypeError', code: 'DABBA_ERR_INVALID_ARGUMENT' }, JSON.stringify(conditions));
    }
    await assert.rejects(chain.delete('a', { ifAbsent: true }), { code: 'DABBA_ERR_INVALID_ARGUMENT', message: /ifVersion, not ifAbsent/ });
    const digests = await chain.digests();
    assert.ok(digests.every((digest) => digest.digest === digests[0]!.digest), 'every replica decided alike');
  });

  test('16 clients increment one counter with ifVersion retry loops: its value is the number of increments that succeeded', async () => {
    const chain = track(createChain({ replicas: 3 }));
    await chain.put('counter', '0');
    const outcomes = await Promise.all(Array.from({ length: 16 }, async () => {
      const mine: string[] = [];
      for (let round = 0; round < 40; round++) mine.push(await increment(chain, 'counter'));
      return mine;
    }));
    assert.equal(outcomes.flat().filter((outcome) => outcome === 'unknown').length, 0, 'nothing failed: every outcome is known');
    assert.equal((await chain.get('counter'))?.toString(), '640');
    assert.ok(chain.stats().replicas.slice(0, 2).some((replica) => replica.readsServed > 0), 'the reads went to every replica');
  });

  test('put-if-absent races: of 12 concurrent writers of each key exactly one wins, and its value is the one kept', async () => {
    const chain = track(createChain({ replicas: 3 }));
    const winners = await Promise.all(Array.from({ length: 50 }, async (_, key) => {
      const attempts = await Promise.allSettled(Array.from({ length: 12 }, (_, writer) => chain.put(`k${key}`, `w${writer}`, { ifAbsent: true })));
      const won = attempts.flatMap((attempt, writer) => (attempt.status === 'fulfilled' ? [writer] : []));
      for (const attempt of attempts) if (attempt.status === 'rejected') assert.equal((attempt.reason as { code: string }).code, 'DABBA_ERR_CONDITION_FAILED');
      assert.equal(won.length, 1, `key k${key}: writers ${won.join(', ')} all won`);
      assert.equal((await chain.get(`k${key}`))?.toString(), `w${won[0]}`);
      return won[0];
    }));
    assert.equal(winners.length, 50);
  });

  for (const role of ['head', 'middle', 'tail'] as const) {
    test(`the ${role} crashes while 8 clients increment a counter: the value is the increments that succeeded, plus at most those whose outcome is unknown`, { timeout: 60_000 }, async () => {
      const chain = track(createChain({ replicas: 3 }));
      await chain.put('counter', '0');
      const victim = chain.members().find((member) => member.role === role)!.id;
      let done = 0;
      const outcomes = await Promise.all(Array.from({ length: 8 }, async () => {
        const mine: string[] = [];
        for (let round = 0; round < 60; round++) {
          mine.push(await increment(chain, 'counter'));
          if (++done === 150) chain.crashReplica(victim);
        }
        return mine;
      }));
      const applied = outcomes.flat().filter((outcome) => outcome === 'applied').length;
      const unknown = outcomes.flat().length - applied;
      const value = Number((await chain.get('counter'))?.toString());
      assert.ok(value >= applied && value <= applied + unknown, `counter ${value}: ${applied} increments applied, ${unknown} unknown`);
      assert.ok(!chain.members().some((member) => member.id === victim));
      await chain.whenIdle();
      const digests = await chain.digests();
      assert.ok(digests.every((digest) => digest.digest === digests[0]!.digest));
    });
  }
});
