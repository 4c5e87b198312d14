/**
 * The deterministic simulator in npm test: named scenarios that read like protocol diagrams, then
 * many random seeds. A failure prints `reproduce with --seed=N` (replay: npm run test:sim -- --seed N).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { simulate } from './sim/simulator.js';

describe('scenarios: H, M1, T with one crash each, under concurrent clients', () => {
  for (const role of ['head', 'middle', 'tail'] as const) {
    test(`${role} crashes mid-stream: the chain reconfigures, nothing acknowledged is lost, history linearizable`, () => {
      const result = simulate({ seed: 11, replicas: 3, crashRate: 0, joinRate: 0, crashes: [{ at: 200, role }] });
      assert.equal(result.crashes, 1);
      assert.equal(result.reconfigurations, 1);
      assert.equal(result.finalMembers.length, 2);
      assert.ok(result.operations > 50);
    });
  }

  test('H crashes, then the new T crashes: a chain of 4 keeps serving with 2', () => {
    const result = simulate({ seed: 5, replicas: 4, crashRate: 0, joinRate: 0, crashes: [{ at: 150, role: 'head' }, { at: 400, role: 'tail' }] });
    assert.equal(result.crashes, 2);
    assert.equal(result.finalMembers.length, 2);
  });

  test('crashes down to a single survivor (I4: one replica is enough)', () => {
    const result = simulate({
      seed: 9,
      replicas: 3,
      crashRate: 0,
      joinRate: 0,
      crashes: [{ at: 120, role: 'middle' }, { at: 300, role: 'head' }],
    });
    assert.deepEqual(result.finalMembers.length, 1);
  });
});

describe('joins: a replacement copies a snapshot from the tail, catches up, and takes over as tail', () => {
  test('T crashes; a new replica joins behind the new T, the tail hands over, and the chain is three again', () => {
    const result = simulate({ seed: 21, replicas: 3, crashRate: 0, joinRate: 0.05, crashes: [{ at: 150, role: 'tail' }] });
    assert.equal(result.crashes, 1);
    assert.equal(result.joins, 1);
    assert.deepEqual(result.finalMembers.length, 3);
    assert.ok(result.finalMembers.includes(4), 'the new replica is a member');
  });
});

test('500 random seeds: crashes, joins, delays, duplicated messages; invariants after every step', () => {
  let crashes = 0;
  let joins = 0;
  let snapshotFrames = 0;
  let operations = 0;
  for (let seed = 1; seed <= 500; seed++) {
    const result = simulate({ seed, replicas: 2 + (seed % 4) });
    crashes += result.crashes;
    joins += result.joins;
    snapshotFrames += result.snapshotFrames;
    operations += result.operations;
  }
  // The runs must actually exercise failures and joins, or passing them would mean nothing.
  assert.ok(crashes > 300, `only ${crashes} crashes in 500 seeds`);
  assert.ok(joins > 200, `only ${joins} joins in 500 seeds`);
  assert.ok(snapshotFrames > 2 * joins, `only ${snapshotFrames} snapshot frames for ${joins} joins: transfers should take several`);
  assert.ok(operations > 50_000, `only ${operations} client operations`);
});
