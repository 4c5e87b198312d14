/**
 * The deterministic simulator in npm test: named scenarios that read like protocol diagrams, then
 * many random seeds. A failure prints `reproduce with --seed=N` (replay: npm run test:sim -- --seed N).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AckEncoder } from '../native-free-core/wire/codec.js';
import { resolveOptions } from '../src/options.js';
import type { RecordSink, Wakeable } from '../src/record-sink.js';
import type { Clock } from '../src/runtime/clock.js';
import { ClientSession } from '../src/session/client-session.js';
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

/** A head or tail link of a client: records what it takes; refuses everything while down. */
class RecordingSink implements RecordSink {
  readonly frames: Uint8Array[] = [];
  constructor(public up: boolean) {}
  tryWrite(bytes: Uint8Array): boolean {
    if (this.up) this.frames.push(bytes.slice());
    return this.up;
  }
  canWrite(): boolean {
    return this.up;
  }
  markProducerWaiting(): void {}
  publish(): boolean {
    return false;
  }
}

/** Time stands still; soon() callbacks run when the test says so. */
class SteppedClock implements Clock {
  private readonly due: Array<() => void> = [];
  nowMs(): number {
    return 0;
  }
  soon(callback: () => void): void {
    this.due.push(callback);
  }
  after(): { cancel(): void } {
    return { cancel: () => undefined };
  }
  runSoon(): void {
    for (const callback of this.due.splice(0)) callback();
  }
}

describe("client session: a new head not reachable yet when the old head's batches are acknowledged", () => {
  test("C sends two batches to H; the chain changes to H2, whose link is not up; T acknowledges both: nothing stays in flight, and C's next write leaves at once", async () => {
    const noWake: Wakeable = { ring: () => undefined };
    const clock = new SteppedClock();
    const head = new RecordingSink(true);
    const session = new ClientSession(
      resolveOptions({ batch: { maxWrites: 8, maxInFlight: 2 } }),
      { clientId: 7, head, headDoorbell: noWake, tail: new RecordingSink(true), tailDoorbell: noWake, epoch: () => 1, clock },
      () => null,
    );
    const first = session.put('a', '1');
    clock.runSoon();
    const second = session.put('b', '2');
    clock.runSoon();
    assert.equal(head.frames.length, 2, 'H took one batch per write');

    const newHead = new RecordingSink(false);
    session.switchHead(newHead, noWake);
    assert.equal(session.receiveAck(new AckEncoder().encode({ epoch: 1, committedSeq: 2, clientId: 7, committedClientSeq: 2 }).slice()), null);
    await Promise.all([first, second]);
    assert.equal(session.writes.batchesInFlight, 0, 'both batches are acknowledged, whichever head holds them');

    newHead.up = true;
    session.switchHead(newHead, noWake);
    assert.equal(newHead.frames.length, 0, 'nothing acknowledged is sent again');
    const third = session.put('c', '3');
    clock.runSoon();
    assert.equal(newHead.frames.length, 1, 'the next write is not held back behind acknowledged batches');
    assert.equal(session.receiveAck(new AckEncoder().encode({ epoch: 2, committedSeq: 3, clientId: 7, committedClientSeq: 3 }).slice()), null);
    await third;
  });
});
