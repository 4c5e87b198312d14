/**
 * The client's future ring (src/futures.ts): it starts small and grows while more are pending, up to
 * its capacity, and every pending promise keeps its place through each growth.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FutureRing } from '../src/futures.js';

test('a ring grows while promises are pending and settles each of them, in order, after every growth', async () => {
  const ring = new FutureRing<number>(10_000);
  assert.equal(ring.capacity, 16_384);
  const settled: number[] = [];
  const promises: Array<Promise<void>> = [];
  let shared = 0;
  for (let index = 0; index < 5_000; index++) {
    if (index % 7 === 0) {
      // A write settled by a shared promise (putMany) keeps its rejecter through the growth.
      ring.addSettlers(() => settled.push(-1));
      shared++;
    } else {
      const seq = ring.next;
      promises.push(ring.add().then((value) => void settled.push(seq * 1000 + value)));
    }
  }
  assert.equal(ring.pending, 5_000);
  assert.equal(ring.resolveThrough(2_500, 7), 2_500);
  assert.equal(ring.rejectAll(new Error('closed')), 2_500);
  await Promise.allSettled(promises);
  const resolved = settled.filter((value) => value > 0);
  assert.deepEqual(resolved, [...resolved].sort((a, b) => a - b), 'resolved in sequence order');
  assert.ok(resolved.every((value) => value % 1000 === 7 && Math.floor(value / 1000) <= 2_500));
  const sharedPastAck = Array.from({ length: 5_000 }, (_, index) => index).filter((index) => index % 7 === 0 && index + 1 > 2_500).length;
  assert.equal(settled.filter((value) => value === -1).length, sharedPastAck, 'shared writes past the ack are rejected');
  assert.ok(shared > sharedPastAck);
});

test('a full ring says so at its capacity, not before', () => {
  const ring = new FutureRing<void>(3_000);
  for (let index = 0; index < 4_096; index++) {
    assert.equal(ring.isFull, false);
    void ring.add().catch(() => undefined);
  }
  assert.equal(ring.isFull, true);
  ring.resolveThrough(1, undefined);
  assert.equal(ring.isFull, false);
  void ring.add().catch(() => undefined);
  assert.equal(ring.pending, 4_096);
  ring.rejectAll(new Error('closed'));
});
