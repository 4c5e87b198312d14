/**
 * Watches through the public API of createChain(): every committed change under a prefix arrives
 * exactly once, in version order, across the crash of the head, a middle and the tail; a watch
 * resumes from a version; one too slow for the replicas' history gets DABBA_ERR_WATCH_LAGGED.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { createChain, isDabbaError, type Chain, type Watch, type WatchChange } from '../src/index.js';

const chains: Chain[] = [];
function track(chain: Chain): Chain {
  chains.push(chain);
  return chain;
}
after(async () => {
  await Promise.all(chains.map((chain) => chain.close()));
});

/** Takes changes until `done` says so; fails past `timeoutMs`. */
async function collect(watch: Watch, done: (changes: WatchChange[]) => boolean, timeoutMs = 20_000): Promise<WatchChange[]> {
  const changes: WatchChange[] = [];
  const timer = setTimeout(() => watch.close(), timeoutMs);
  for await (const change of watch) {
    changes.push(change);
    if (done(changes)) break;
  }
  clearTimeout(timer);
  assert.ok(done(changes), `the watch ended after ${changes.length} changes`);
  return changes;
}

/** Until a watch from now knows where now is (its first poll was answered): writes after it are its. */
async function started(watch: Watch): Promise<void> {
  while ((watch.position()[0] ?? 0) === 0) await new Promise((resolve) => setTimeout(resolve, 1));
}

function describeChange(change: WatchChange): string {
  return change.op === 'put' ? `${change.key}=${change.value}` : `-${change.key}`;
}

describe('watches', () => {
  test('puts and deletes under the prefix, in order, each once; other keys are not', async () => {
    const chain = track(createChain({ replicas: 3 }));
    await chain.put('other', 'x');
    const watch = chain.watch('user:');
    const seen = collect(watch, (changes) => changes.length === 4);
    await started(watch);
    await chain.put('user:1', 'Asha');
    await chain.put('group:1', 'ops');
    await chain.put('user:2', 'Ravi');
    await chain.delete('user:1');
    await chain.put('user:2', 'Ravi K');
    const changes = await seen;
    assert.deepEqual(changes.map(describeChange), ['user:1=Asha', 'user:2=Ravi', '-user:1', 'user:2=Ravi K']);
    const versions = changes.map((change) => change.version);
    assert.deepEqual(versions, [...versions].sort((a, b) => a - b));
    assert.equal(versions.at(-1), (await chain.getVersioned('user:2'))!.version, 'a change carries its write’s version');
  });

  test('watches of one prefix from now share their stream: the same change objects; one closed, the other goes on', async () => {
    const chain = track(createChain({ replicas: 2 }));
    const first = chain.watch('s:');
    const second = chain.watch('s:');
    const firstDone = collect(first, (changes) => changes.length === 2);
    const secondDone = collect(second, (changes) => changes.length === 3);
    await started(first);
    await started(second);
    await chain.put('s:1', 'a');
    await chain.put('s:2', 'b');
    const firstChanges = await firstDone;
    await chain.put('s:3', 'c');
    const secondChanges = await secondDone;
    assert.deepEqual(secondChanges.map(describeChange), ['s:1=a', 's:2=b', 's:3=c']);
    assert.equal(secondChanges[0], firstChanges[0], 'one change object for both');
  });

  test('fromVersion replays what the history holds; exact watches one key', async () => {
    const chain = track(createChain({ replicas: 2 }));
    for (let index = 0; index < 10; index++) await chain.put(`k${index % 2 === 0 ? 'ey' : 'eyring'}`, `${index}`);
    const all = await collect(chain.watch('key', { fromVersion: 1 }), (changes) => changes.length === 10);
    assert.deepEqual(all.map((change) => change.version), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const exact = await collect(chain.watch('key', { fromVersion: 1, exact: true }), (changes) => changes.length === 5);
    assert.deepEqual(exact.map(describeChange), ['key=0', 'key=2', 'key=4', 'key=6', 'key=8']);
  });

  test('a watch over many chains sees every chain’s changes; position() resumes it without a gap', async () => {
    const chain = track(createChain({ replicas: 2, chains: 4, nodes: 3 }));
    const keys = Array.from({ length: 40 }, (_, index) => `item:${index}`);
    await Promise.all(keys.map((key) => chain.put(key, 'first')));
    const watch = chain.watch('item:', { fromVersion: 1 });
    const firstHalf = await collect(watch, (changes) => changes.length === 20);
    const position = watch.position();
    watch.close();
    const rest = await collect(chain.watch('item:', { fromVersion: position }), (changes) => changes.length === 20);
    const seen = [...firstHalf, ...rest].map((change) => change.key.toString()).sort();
    assert.deepEqual(seen, [...keys].sort(), 'every key once, over the two watches');
    assert.ok(new Set(firstHalf.map((change) => change.chain)).size > 1, 'changes come from several chains');
  });

  for (const role of ['head', 'middle', 'tail'] as const) {
    test(`the ${role} crashes under writes: every acknowledged change arrives exactly once, in order`, { timeout: 60_000 }, async () => {
      const chain = track(createChain({ replicas: 3, suspectAfterMs: 300 }));
      const watch = chain.watch('w:', { fromVersion: 1 });
      const acknowledged = new Set<string>();
      const writers = Array.from({ length: 4 }, async (_, writer) => {
        for (let index = 0; index < 300; index++) {
          const key = `w:${writer}:${index}`;
          try {
            await chain.put(key, `${index}`);
            acknowledged.add(key);
          } catch (error) {
            if (!isDabbaError(error, 'DABBA_ERR_OUTCOME_UNKNOWN')) throw error;
          }
          if (writer === 0 && index === 100) {
            const members = chain.members();
            const victim = role === 'head' ? members[0]! : role === 'tail' ? members.at(-1)! : members[1]!;
            chain.crashReplica(victim.id);
          }
        }
      });
      await Promise.all(writers);
      const committed = chain.stats().writesAcknowledged;
      const missing = new Set(acknowledged);
      const changes = await collect(watch, (seen) => {
        missing.delete(seen.at(-1)!.key.toString());
        return missing.size === 0;
      });
      const versions = changes.map((change) => change.version);
      for (let index = 1; index < versions.length; index++) assert.ok(versions[index]! > versions[index - 1]!, `versions in order: ${versions[index - 1]} then ${versions[index]}`);
      assert.equal(new Set(changes.map((change) => change.key.toString())).size, changes.length, 'no change twice');
      assert.ok(changes.length <= committed + 4, 'no change that was not written');
      watch.close();
    });
  }

  test('a watcher too slow for the history gets DABBA_ERR_WATCH_LAGGED with the version to resume from', async () => {
    const chain = track(createChain({ replicas: 2, watchHistoryBytes: 64 * 1024, batch: { maxBytes: 16 * 1024, maxWrites: 64 }, valueBytesMax: 1024, keyBytesMax: 64, inflightBytesMax: 64 * 1024 }));
    const watch = chain.watch('', { fromVersion: 1, bufferedChangesMax: 8 });
    const first = watch.next();
    await chain.put('first', 'v');
    assert.equal((await first).done, false);
    for (let round = 0; round < 20; round++) await Promise.all(Array.from({ length: 64 }, (_, index) => chain.put(`k${index}`, 'v'.repeat(500))));
    let lagged: unknown = null;
    try {
      for await (const change of watch) void change;
    } catch (error) {
      lagged = error;
    }
    if (!isDabbaError(lagged, 'DABBA_ERR_WATCH_LAGGED')) assert.fail(`lagged: ${String(lagged)}`);
    const resumeVersion = lagged.resumeVersion!;
    assert.ok(resumeVersion > 1, `resume at ${resumeVersion}`);
    const resumed = await collect(chain.watch('', { fromVersion: resumeVersion }), (changes) => changes.length === 1);
    assert.equal(resumed[0]!.version, resumeVersion, 'a watch from the resume version starts there');
  });
});
