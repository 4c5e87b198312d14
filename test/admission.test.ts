/**
 * The admission hook in one process (`createChain({ admit })`): the head's worker runs it on every
 * write before ordering it. Accepted writes apply; a reason refuses the write with DABBA_ERR_REJECTED;
 * a hook that throws, returns something else or runs past its budget refuses the write too, is
 * counted and logged, and the chain goes on; every replica skips what the head refused, through the
 * crash of the head. (Across hosts: test/hosts-reads.test.ts, with `dabba serve --admit`.)
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createChain, isDabbaError, type Chain } from '../src/index.js';

let directory: string;
let hook: string;
const chains: Chain[] = [];

before(() => {
  directory = mkdtempSync(join(tmpdir(), 'dabba-admit-'));
  hook = join(directory, 'admit.mjs');
  writeFileSync(
    hook,
    `export default function admit(write) {
  const key = write.key.toString();
  if (key.startsWith('deny:')) return 'keys under deny: are refused (' + key + ', a ' + write.op + ')';
  if (key === 'throws') throw new Error('the hook broke');
  if (key === 'slow') { const until = performance.now() + 150; while (performance.now() < until); return true; }
  if (key === 'promise') return Promise.resolve(true);
  if (key === 'big' && write.value.length > 10) return 'values of big are at most 10 bytes';
  return true;
}
`,
  );
});

after(async () => {
  await Promise.all(chains.map((chain) => chain.close()));
  rmSync(directory, { recursive: true, force: true });
});

function track(chain: Chain): Chain {
  chains.push(chain);
  return chain;
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isDabbaError(error, 'DABBA_ERR_REJECTED'), String(error));
    return error.message;
  }
  assert.fail('expected DABBA_ERR_REJECTED');
}

describe('admission hook', () => {
  test('accept, refuse with a reason, throw, run late, return a promise: only the accepted writes apply, on every replica', async () => {
    const chain = track(createChain({ replicas: 3, admit: hook, admitBudgetUs: 50_000 }));
    const warnings: string[] = [];
    chain.on('warning', (warning: Error) => warnings.push(warning.message));
    await chain.put('ok', '1');
    assert.match(await refusal(chain.put('deny:a', 'x')), /keys under deny: are refused \(deny:a, a put\)/);
    assert.match(await refusal(chain.delete('deny:a')), /a delete/);
    assert.match(await refusal(chain.put('throws', 'x')), /the admission hook threw: the hook broke/);
    assert.match(await refusal(chain.put('slow', 'x')), /took [\d.]+ ms, over its budget of 50 ms/);
    assert.match(await refusal(chain.put('promise', 'x')), /returned a promise/);
    await chain.put('big', 'short');
    assert.match(await refusal(chain.put('big', 'a value that is too long')), /at most 10 bytes/);
    // In one batch: the refused write rejects, the writes around it apply.
    const mixed = await Promise.allSettled([chain.put('m1', '1'), chain.put('deny:m2', '2'), chain.put('m3', '3')]);
    assert.deepEqual(mixed.map((result) => result.status), ['fulfilled', 'rejected', 'fulfilled']);
    await assert.rejects(chain.putMany([['p1', '1'], ['deny:p2', '2']]), { code: 'DABBA_ERR_REJECTED' });
    assert.equal((await chain.get('p1'))?.toString(), '1', 'putMany rejects, and its admitted writes apply');
    for (const key of ['deny:a', 'throws', 'slow', 'promise', 'deny:m2', 'deny:p2']) assert.equal(await chain.get(key), undefined, key);
    assert.equal((await chain.get('big'))?.toString(), 'short');
    const head = chain.stats().replicas[0]!;
    assert.deepEqual({ refused: head.admissionRefused, failures: head.admissionFailures }, { refused: 5, failures: 3 });
    assert.ok(warnings.some((warning) => /the hook broke/.test(warning)), warnings.join('\n'));
    await chain.whenIdle();
    const digests = await chain.digests();
    assert.ok(digests.every((digest) => digest.digest === digests[0]!.digest && digest.appliedSeq === digests[0]!.appliedSeq), 'every replica skipped the same writes');
  });

  test('the head crashes under a load of admitted and refused writes: no refused write ever applies, each write resolves, rejects, or has an unknown outcome', { timeout: 60_000 }, async () => {
    const chain = track(createChain({ replicas: 3, admit: hook }));
    const head = chain.members()[0]!.id;
    const outcomes = new Map<string, number>();
    const writes: Array<Promise<void>> = [];
    for (let index = 0; index < 20_000; index++) {
      const key = index % 5 === 0 ? `deny:${index}` : `k${index}`;
      writes.push(
        chain.put(key, 'v').then(
          () => void outcomes.set(`applied ${key.startsWith('deny:') ? 'denied' : 'admitted'}`, (outcomes.get(`applied ${key.startsWith('deny:') ? 'denied' : 'admitted'}`) ?? 0) + 1),
          (error: { code: string }) => void outcomes.set(error.code, (outcomes.get(error.code) ?? 0) + 1),
        ),
      );
      if (index === 8_000) chain.crashReplica(head);
    }
    await Promise.all(writes);
    assert.equal(outcomes.get('applied denied'), undefined, `a refused write was acknowledged: ${JSON.stringify([...outcomes])}`);
    assert.ok((outcomes.get('DABBA_ERR_REJECTED') ?? 0) > 1000, JSON.stringify([...outcomes]));
    for (let index = 0; index < 20_000; index += 5) assert.equal(await chain.get(`deny:${index}`), undefined);
    await chain.whenIdle();
    const digests = await chain.digests();
    assert.ok(digests.every((digest) => digest.digest === digests[0]!.digest));
  });

  test('admit must be the absolute path of a module that exists', () => {
    assert.throws(() => createChain({ admit: 'relative/admit.js' }), { name: 'TypeError', code: 'DABBA_ERR_INVALID_ARGUMENT', message: /absolute path/ });
    assert.throws(() => createChain({ admit: join(directory, 'missing.mjs') }), { name: 'TypeError', code: 'DABBA_ERR_INVALID_ARGUMENT', message: /no module at/ });
    assert.throws(() => createChain({ admit: hook, admitBudgetUs: 0 }), { name: 'RangeError', code: 'DABBA_ERR_OUT_OF_RANGE' });
  });
});
