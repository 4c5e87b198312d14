/**
 * The engine end to end: real replica worker threads, real rings, the public API.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { createChain, type Chain } from '../src/index.js';

const chains: Chain[] = [];
function track(chain: Chain): Chain {
  chains.push(chain);
  return chain;
}
after(async () => {
  await Promise.all(chains.map((chain) => chain.close()));
});

async function assertIdenticalReplicas(chain: Chain, expectedApplied: number): Promise<void> {
  await chain.whenIdle();
  const digests = await chain.digests();
  assert.equal(digests.length, chain.replicas);
  for (const digest of digests) {
    assert.equal(digest.appliedSeq, expectedApplied, `replica ${digest.id} applied ${digest.appliedSeq}`);
    assert.equal(digest.digest, digests[0]!.digest, `replica ${digest.id} differs: ${JSON.stringify(digests)}`);
  }
}

describe('chain lengths 1 to 5', () => {
  for (const replicas of [1, 2, 3, 4, 5]) {
    test(`${replicas} replica(s): concurrent puts, then gets return the last acknowledged value; replicas identical`, async () => {
      const chain = track(createChain({ replicas, batch: { maxWrites: 256 } }));
      const keys = 300;
      const rounds = 40;
      // Two concurrent writers interleave writes to the same keys; each round's writes are awaited.
      const lastAcknowledged = new Map<string, string>();
      for (let round = 0; round < rounds; round++) {
        const writes: Array<Promise<void>> = [];
        const issued: Array<[string, string]> = [];
        for (let index = 0; index < keys; index++) {
          const key = `key-${(index * 7 + round) % keys}`;
          const value = `r${round}-w${index}-${'x'.repeat(index % 50)}`;
          writes.push(chain.put(key, value));
          issued.push([key, value]);
        }
        await Promise.all(writes);
        // Acknowledged in order: the last write to a key in the round is its value now.
        for (const [key, value] of issued) lastAcknowledged.set(key, value);
        if (round % 10 === 9) {
          const sample = [...lastAcknowledged.entries()].slice(0, 50);
          const values = await Promise.all(sample.map(([key]) => chain.get(key)));
          sample.forEach(([key, value], index) => assert.equal(values[index]?.toString(), value, `get(${key}) after round ${round}`));
        }
      }
      const everything = [...lastAcknowledged.entries()];
      const values = await Promise.all(everything.map(([key]) => chain.get(key)));
      everything.forEach(([key, value], index) => assert.equal(values[index]?.toString(), value, `final get(${key})`));
      await assertIdenticalReplicas(chain, keys * rounds);
      const stats = chain.stats();
      assert.equal(stats.writesAcknowledged, keys * rounds);
      assert.equal(stats.writesPending, 0);
      assert.ok(stats.batchesSent < keys * rounds, 'writes were coalesced into batches');
      await chain.close();
    });
  }
});

describe('API behaviour', () => {
  test('bytes and strings, delete, putMany, versions', async () => {
    const chain = track(createChain({ replicas: 3 }));
    await chain.put(new Uint8Array([0, 1, 2, 255]), new Uint8Array([9, 8, 7]));
    assert.deepEqual([...(await chain.get(new Uint8Array([0, 1, 2, 255])))!], [9, 8, 7]);
    await chain.put('नमस्ते', 'डब्बा');
    assert.equal((await chain.get('नमस्ते'))!.toString(), 'डब्बा', 'UTF-8 keys and values round-trip');
    await chain.put('empty-value', '');
    assert.equal((await chain.get('empty-value'))!.length, 0, 'an empty value is a value, not a missing key');
    await chain.putMany([
      ['a', '1'],
      ['b', '2'],
      ['a', '3'],
    ]);
    assert.equal((await chain.get('a'))!.toString(), '3');
    const first = await chain.getVersioned('a');
    await chain.put('a', '4');
    const second = await chain.getVersioned('a');
    assert.ok(second!.version > first!.version, 'a newer write has a higher version');
    await chain.delete('a');
    assert.equal(await chain.get('a'), undefined);
    assert.equal(await chain.get('never-written'), undefined);
    await chain.close();
  });

  test('a get sees every write acknowledged before it was issued', async () => {
    const chain = track(createChain({ replicas: 3, batch: { maxWrites: 64 } }));
    for (let round = 0; round < 200; round++) {
      await chain.put('counter', String(round));
      const value = await chain.get('counter');
      assert.equal(value?.toString(), String(round));
    }
    await chain.close();
  });

  test('backpressure with a tiny ring: every write completes, nothing is lost', async () => {
    const chain = track(
      createChain({
        replicas: 3,
        ringBytes: 16 * 1024,
        batch: { maxWrites: 32, maxBytes: 4096 },
        valueBytesMax: 1000,
        keyBytesMax: 64,
        inflightBytesMax: 8192,
        pendingWritesMax: 50_000,
      }),
    );
    const total = 20_000;
    let maximumWaiting = 0;
    const writes: Array<Promise<void>> = [];
    for (let index = 0; index < total; index++) {
      writes.push(chain.put(`k${index % 997}`, `value-${index}`));
      if (index % 1000 === 0) maximumWaiting = Math.max(maximumWaiting, chain.stats().batchesWaiting);
    }
    maximumWaiting = Math.max(maximumWaiting, chain.stats().batchesWaiting);
    await Promise.all(writes);
    assert.ok(maximumWaiting > 1, `batches waited for ring space on the client (max ${maximumWaiting})`);
    const stalls = chain.stats().replicas.reduce((sum, replica) => sum + replica.backpressureStalls, 0);
    assert.ok(stalls > 0, 'replicas stalled on full rings or full in-flight lists');
    let lastWriteTo996 = -1;
    for (let index = 0; index < total; index++) if (index % 997 === 996) lastWriteTo996 = index;
    assert.equal((await chain.get('k996'))!.toString(), `value-${lastWriteTo996}`);
    await assertIdenticalReplicas(chain, total);
    await chain.close();
  });

  test('more pending writes than pendingWritesMax are refused with DABBA_ERR_OVERLOADED, not queued', async () => {
    const chain = track(createChain({ replicas: 2, pendingWritesMax: 100 }));
    const results = await Promise.allSettled(Array.from({ length: 150 }, (_, index) => chain.put(`k${index}`, 'v')));
    const fulfilled = results.filter((result) => result.status === 'fulfilled').length;
    const overloaded = results.filter((result) => result.status === 'rejected' && (result.reason as { code?: string }).code === 'DABBA_ERR_OVERLOADED').length;
    assert.ok(fulfilled >= 100, `${fulfilled} writes accepted`);
    assert.equal(fulfilled + overloaded, 150);
    assert.ok(overloaded > 0);
    await assertIdenticalReplicas(chain, fulfilled);
    await chain.close();
  });
});

describe('putMany: one promise for many writes', () => {
  test('resolves once all are acknowledged, across many batches, in order', async () => {
    const chain = track(createChain({ replicas: 3, batch: { maxWrites: 64 } }));
    const entries = Array.from({ length: 5000 }, (_, index) => [`many-${index % 100}`, `v${index}`] as const);
    await chain.putMany(entries);
    assert.equal(chain.stats().writesAcknowledged, 5000, 'resolved only once every write was acknowledged');
    for (let key = 0; key < 100; key++) assert.equal((await chain.get(`many-${key}`))!.toString(), `v${4900 + key}`, 'the last write of each key wins');
    await chain.putMany([]);
    await chain.close();
  });

  test('a refused entry rejects the call with its error; the entries around it are still written', async () => {
    const chain = track(createChain({ replicas: 2, valueBytesMax: 16 }));
    await assert.rejects(chain.putMany([['before', '1'], ['too-big', 'x'.repeat(17)], ['', 'no key'], ['after', '2']]), { code: 'DABBA_ERR_VALUE_TOO_LARGE' });
    // The call rejects at once, as Promise.all would: the other two may still be in flight. A later
    // write's ack covers them (one client's writes commit in order).
    await chain.put('fence', '1');
    assert.equal((await chain.get('before'))!.toString(), '1');
    assert.equal((await chain.get('after'))!.toString(), '2');
    assert.equal(await chain.get('too-big'), undefined);
    await chain.close();
    await assert.rejects(chain.putMany([['k', 'v']]), { code: 'DABBA_ERR_CLOSED' });
  });

  test('writes that fail after they were staged reject the call, never resolve it', async () => {
    const chain = track(createChain({ replicas: 3, closeTimeoutMs: 0 }));
    const many = chain.putMany(Array.from({ length: 20_000 }, (_, index) => [`k${index}`, 'v'] as const));
    const settled = Promise.allSettled([many]);
    await chain.close();
    const [result] = await settled;
    // Closed with no grace: unless the chain was fast enough to acknowledge all 20,000 first, the
    // writes it had not acknowledged fail, and so does the call.
    if (result!.status === 'fulfilled') assert.equal(chain.stats().writesAcknowledged, 20_000);
    else assert.match((result!.reason as { code: string }).code, /^DABBA_ERR_(CLOSED|OUTCOME_UNKNOWN)$/);
  });
});

describe('bad input gets a clear coded error', () => {
  test('keys, values and types', async () => {
    const chain = track(createChain({ replicas: 1, keyBytesMax: 8, valueBytesMax: 16 }));
    const code = async (promise: Promise<unknown>): Promise<string> => {
      try {
        await promise;
        return 'resolved';
      } catch (error) {
        return (error as { code: string }).code;
      }
    };
    assert.equal(await code(chain.put('', 'v')), 'DABBA_ERR_KEY_EMPTY');
    assert.equal(await code(chain.put(new Uint8Array(0), 'v')), 'DABBA_ERR_KEY_EMPTY');
    assert.equal(await code(chain.put('123456789', 'v')), 'DABBA_ERR_KEY_TOO_LARGE');
    assert.equal(await code(chain.put('ééééé', 'v')), 'DABBA_ERR_KEY_TOO_LARGE', 'limits count UTF-8 bytes, not characters');
    assert.equal(await code(chain.put('k', 'x'.repeat(17))), 'DABBA_ERR_VALUE_TOO_LARGE');
    assert.equal(await code(chain.put('k', new Uint8Array(17))), 'DABBA_ERR_VALUE_TOO_LARGE');
    assert.equal(await code(chain.put(42 as never, 'v')), 'DABBA_ERR_INVALID_ARGUMENT');
    assert.equal(await code(chain.put('k', null as never)), 'DABBA_ERR_INVALID_ARGUMENT');
    assert.equal(await code(chain.put('k', { length: 3 } as never)), 'DABBA_ERR_INVALID_ARGUMENT');
    assert.equal(await code(chain.get('')), 'DABBA_ERR_KEY_EMPTY');
    assert.equal(await code(chain.get('123456789')), 'DABBA_ERR_KEY_TOO_LARGE');
    assert.equal(await code(chain.get(7 as never)), 'DABBA_ERR_INVALID_ARGUMENT');
    assert.equal(await code(chain.delete('')), 'DABBA_ERR_KEY_EMPTY');
    // Rejected writes consumed nothing: the chain applied only the valid ones.
    await chain.put('ok', 'value');
    assert.equal((await chain.get('ok'))!.toString(), 'value');
    assert.equal(chain.stats().writesAcknowledged, 1);
    await chain.close();
    assert.equal(await code(chain.put('k', 'v')), 'DABBA_ERR_CLOSED');
    assert.equal(await code(chain.get('k')), 'DABBA_ERR_CLOSED');
    assert.equal(await code(chain.delete('k')), 'DABBA_ERR_CLOSED');
    await chain.close(); // idempotent
  });

  test('options are validated with TypeError/RangeError and codes', () => {
    assert.throws(() => createChain({ replicas: 0 }), { name: 'RangeError', code: 'DABBA_ERR_OUT_OF_RANGE' });
    assert.throws(() => createChain({ replicas: 2.5 }), { name: 'TypeError', code: 'DABBA_ERR_INVALID_ARGUMENT' });
    assert.throws(() => createChain({ ringBytes: 100_000 }), { name: 'RangeError', message: /power of two/ });
    assert.throws(() => createChain({ batch: { maxWrites: '8' as never } }), { name: 'TypeError' });
    assert.throws(() => createChain({ ringBytes: 4096, batch: { maxBytes: 64 * 1024 } }), { name: 'RangeError', message: /half a ring/ });
    assert.throws(() => createChain({ keyBytesMax: 70_000 }), { name: 'RangeError' });
  });

  test('close() settles every pending promise', async () => {
    const chain = track(createChain({ replicas: 3, closeTimeoutMs: 0 }));
    const writes = Array.from({ length: 5000 }, (_, index) => chain.put(`k${index}`, 'v'));
    const reads = Array.from({ length: 100 }, (_, index) => chain.get(`k${index}`));
    const allSettled = Promise.allSettled([...writes, ...reads]);
    await chain.close();
    const settled = await allSettled;
    for (const result of settled) {
      if (result.status === 'rejected') assert.equal((result.reason as { code: string }).code, 'DABBA_ERR_CLOSED');
    }
    assert.equal(settled.length, 5100, 'every promise settled (fulfilled, or rejected with DABBA_ERR_CLOSED)');
    // The tail stopped and its last acks were drained, so each write's outcome is known, and
    // outcome() agrees with how its promise settled (writes are client seqs 1..5000 in order).
    const outcomes = await Promise.all(writes.map((_, index) => chain.outcome({ clientId: 1, clientSeq: index + 1 })));
    outcomes.forEach((outcome, index) => {
      assert.equal(outcome, settled[index]!.status === 'fulfilled' ? 'committed' : 'not-committed', `write ${index + 1}`);
    });
  });
});

describe('outcome(): asking the chain whether a write is committed', () => {
  test('an acknowledged write is committed; an in-flight one resolves when it commits; bad ids are refused', async () => {
    const chain = track(createChain({ replicas: 2 }));
    await chain.put('a', '1');
    assert.equal(await chain.outcome({ clientId: 1, clientSeq: 1 }), 'committed');
    const inFlight = chain.put('b', '2');
    const asked = chain.outcome({ clientId: 1, clientSeq: 2 });
    await inFlight;
    assert.equal(await asked, 'committed');
    await assert.rejects(chain.outcome({ clientId: 1, clientSeq: 3 }), { code: 'DABBA_ERR_OUT_OF_RANGE' });
    await assert.rejects(chain.outcome({ clientId: 7, clientSeq: 1 }), { code: 'DABBA_ERR_INVALID_ARGUMENT' });
    await assert.rejects(chain.outcome(null as never), { code: 'DABBA_ERR_INVALID_ARGUMENT' });
    await chain.close();
  });
});

describe("reads: 'any' replica (CRAQ, the default) or the 'tail'", () => {
  test("with reads 'any' every replica answers reads, each read sees every write acknowledged before it, and some waited for the commit point", async () => {
    const chain = track(createChain({ replicas: 3 }));
    // Sequential: each get follows the put it must see, whichever replica answers it.
    for (let index = 0; index < 300; index++) {
      await chain.put(`k${index % 10}`, `v${index}`);
      assert.equal((await chain.get(`k${index % 10}`))?.toString(), `v${index}`);
    }
    // Concurrent: reads of keys with writes in flight.
    const writes: Array<Promise<void>> = [];
    const reads: Array<Promise<unknown>> = [];
    for (let index = 0; index < 20_000; index++) {
      writes.push(chain.put(`hot${index % 16}`, `w${index}`));
      if (index % 4 === 0) reads.push(chain.get(`hot${index % 16}`));
    }
    await Promise.all([...writes, ...reads]);
    const replicas = chain.stats().replicas;
    for (const replica of replicas) assert.ok(replica.readsServed > 1000, `the ${replica.role} answered only ${replica.readsServed} reads`);
    assert.equal(replicas.at(-1)!.dirtyReads, 0, 'at the tail every key is clean');
    assert.ok(replicas.some((replica) => replica.dirtyReads > 0), 'under load some reads at the head or middle waited for the commit point');
    await chain.close();
  });

  test("with reads 'tail' only the tail answers reads; the option is checked", async () => {
    assert.throws(() => createChain({ reads: 'some' as never }), { name: 'TypeError', code: 'DABBA_ERR_INVALID_ARGUMENT', message: /reads must be one of any, tail/ });
    const chain = track(createChain({ replicas: 3, reads: 'tail' }));
    await chain.put('a', '1');
    await Promise.all(Array.from({ length: 500 }, () => chain.get('a')));
    const replicas = chain.stats().replicas;
    assert.equal(replicas.at(-1)!.readsServed, 500);
    assert.equal(replicas[0]!.readsServed + replicas[1]!.readsServed, 0);
    await chain.close();
  });
});
