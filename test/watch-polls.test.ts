/**
 * Watches in the protocol core: a replica answers a watch poll from its change history with the
 * committed changes under a prefix, in version order, holds it until one is committed, and says
 * Lagged once the history no longer reaches back to the poll's version.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ChainNode, type Role } from '../native-free-core/chain/node.js';
import { Store } from '../native-free-core/store.js';
import { AckEncoder, frameKind, MessageKind, Op, WriteBatchEncoder, WriteBatchView } from '../native-free-core/wire/codec.js';
import { encodeWatchRequest, WatchReplyView, WatchStatus } from '../native-free-core/wire/watch-frames.js';

const text = new TextEncoder();

type Write = [string, string | null] | [string, string, number];

function batch(firstSeq: number, writes: Write[], firstClientSeq = firstSeq): Uint8Array {
  const encoder = new WriteBatchEncoder({ writesMax: 64, payloadBytesMax: 8192 });
  encoder.begin(1, firstClientSeq);
  for (const [key, value, expected] of writes) {
    if (value === null) encoder.addDelete(text.encode(key), 0, key.length);
    else encoder.addPut(text.encode(key), 0, key.length, text.encode(value), 0, value.length, expected);
  }
  const frame = encoder.finish().slice();
  const view = new WriteBatchView();
  assert.equal(view.open(frame), null);
  view.stamp(1, firstSeq);
  return frame;
}

function replica(role: Role, options: { readsAtAnyReplica?: boolean; historyBytes?: number; heldMax?: number } = {}): ChainNode {
  return new ChainNode({
    id: 2,
    epoch: 1,
    role,
    store: new Store(),
    inflightBytesMax: 64 * 1024,
    inflightBatchesMax: 16,
    readReplyPayloadBytesMax: 4096,
    readReplyResultsMax: 8,
    keyBytesMax: 16,
    valueBytesMax: 64,
    readsAtAnyReplica: options.readsAtAnyReplica ?? false,
    watchHistoryBytesMax: options.historyBytes ?? 64 * 1024,
    watchHistoryBatchesMax: 64,
    watchPollsHeldMax: options.heldMax ?? 16,
  });
}

function poll(requestId: number, prefix: string, fromVersion: number, bytesMax = 65536): Uint8Array {
  return encodeWatchRequest({ requestId, fromVersion, bytesMax, prefix: text.encode(prefix) });
}

interface Reply {
  id: number;
  status: 'changes' | 'lagged';
  through: number;
  resume: number;
  changes: string[];
}

/** The watch replies the node sends now (read replies among them are left out). */
function replies(node: ChainNode): Reply[] {
  const ready = node.ready();
  node.advance(ready, { forwarded: ready.forward.length, acksSent: true, repliesSent: ready.readReplies.length });
  const view = new WatchReplyView();
  return ready.readReplies
    .filter((frame) => frameKind(frame) === MessageKind.watchReply)
    .map((frame) => {
      assert.equal(view.open(frame), null);
      const changes = Array.from({ length: view.count }, (_, index) => {
        const change = view.changeAt(index);
        const key = Buffer.from(view.bytes.subarray(change.keyStart, change.keyStart + change.keyLength)).toString();
        if (change.op === Op.Delete) return `-${key}@${change.version}`;
        const value = Buffer.from(view.bytes.subarray(change.keyStart + change.keyLength, change.keyStart + change.keyLength + change.valueLength)).toString();
        return `${key}=${value}@${change.version}`;
      });
      return { id: view.requestId, status: view.status === WatchStatus.Lagged ? 'lagged' : 'changes', through: view.throughVersion, resume: view.resumeVersion, changes };
    });
}

function ack(committedSeq: number): Uint8Array {
  return new AckEncoder().encode({ epoch: 1, committedSeq, clientId: 0, committedClientSeq: 0 }).slice();
}

describe('ChainNode: watch polls', () => {
  test('the tail answers with every committed change under the prefix, in version order, puts and deletes', () => {
    const tail = replica('tail');
    tail.step('upstream', batch(1, [['a1', 'x'], ['b1', 'y'], ['a2', 'z']]));
    tail.step('upstream', batch(4, [['a1', null], ['ab', 'w']]));
    replies(tail);
    assert.equal(tail.step('client', poll(7, 'a', 1)).status, 'applied');
    assert.deepEqual(replies(tail), [{ id: 7, status: 'changes', through: 5, resume: 0, changes: ['a1=x@1', 'a2=z@3', '-a1@4', 'ab=w@5'] }]);
    assert.equal(tail.step('client', poll(8, '', 4)).status, 'applied');
    assert.deepEqual(replies(tail)[0]!.changes, ['-a1@4', 'ab=w@5'], 'an empty prefix watches every key');
  });

  test('a poll with nothing to answer is held until a matching change is committed; from 0 is answered at once with where now is', () => {
    const tail = replica('tail');
    tail.step('upstream', batch(1, [['a', '1']]));
    tail.step('client', poll(1, '', 0));
    assert.deepEqual(replies(tail), [{ id: 1, status: 'changes', through: 1, resume: 0, changes: [] }]);
    tail.step('client', poll(2, 'k', 2));
    assert.deepEqual(replies(tail), []);
    assert.equal(tail.watchPollsHeld, 1);
    tail.step('upstream', batch(2, [['a', '2'], ['b', '3']]));
    assert.deepEqual(replies(tail), [], 'no change under k');
    tail.step('upstream', batch(4, [['k1', 'v']]));
    assert.deepEqual(replies(tail), [{ id: 2, status: 'changes', through: 4, resume: 0, changes: ['k1=v@4'] }]);
    assert.equal(tail.watchPollsHeld, 0);
  });

  test('a middle (reads at any replica) sends only committed changes: the rest waits for the ack', () => {
    const middle = replica('middle', { readsAtAnyReplica: true });
    middle.step('upstream', batch(1, [['a', '1'], ['a', '2']]));
    middle.step('client', poll(3, 'a', 1));
    assert.deepEqual(replies(middle), [], 'nothing committed yet');
    middle.step('downstream', ack(1));
    assert.deepEqual(replies(middle), [{ id: 3, status: 'changes', through: 1, resume: 0, changes: ['a=1@1'] }]);
    middle.step('client', poll(4, 'a', 2));
    middle.step('downstream', ack(2));
    assert.deepEqual(replies(middle)[0]!.changes, ['a=2@2']);
  });

  test('writes that changed nothing are not changes: a failed condition, a write the admission hook refused', () => {
    const tail = replica('tail');
    tail.step('upstream', batch(1, [['a', 'v1']]));
    tail.step('upstream', batch(2, [['a', 'v2', 7], ['a', 'v3', 1]]));
    tail.step('client', poll(1, 'a', 1));
    assert.deepEqual(replies(tail)[0]!.changes, ['a=v1@1', 'a=v3@3'], 'seq 2 expected version 7 and was skipped');
  });

  test('a reply carries at most bytesMax of changes (and always one); the next poll goes on without a gap', () => {
    const tail = replica('tail');
    tail.step('upstream', batch(1, [['a1', 'x'.repeat(40)], ['a2', 'y'.repeat(40)], ['a3', 'z']]));
    tail.step('client', poll(1, 'a', 1, 10));
    const first = replies(tail)[0]!;
    assert.deepEqual(first.changes, [`a1=${'x'.repeat(40)}@1`]);
    tail.step('client', poll(2, 'a', first.through + 1, 120));
    const second = replies(tail)[0]!;
    assert.deepEqual(second.changes, [`a2=${'y'.repeat(40)}@2`, 'a3=z@3']);
    assert.equal(second.through, 3);
  });

  test('a poll behind the history is answered Lagged with the oldest version still held', () => {
    const tail = replica('tail', { historyBytes: 1024 });
    for (let seq = 1; seq <= 40; seq++) tail.step('upstream', batch(seq, [[`k${seq % 3}`, 'v'.repeat(60)]]));
    tail.step('client', poll(5, 'k', 1));
    const [lagged] = replies(tail);
    assert.equal(lagged!.status, 'lagged');
    assert.ok(lagged!.resume > 1 && lagged!.resume <= 40, `resume at ${lagged!.resume}`);
    tail.step('client', poll(6, 'k', lagged!.resume));
    const resumed = replies(tail)[0]!;
    assert.equal(resumed.status, 'changes');
    assert.equal(resumed.changes[0]!.endsWith(`@${lagged!.resume}`), true, 'it holds every change from the resume version on');
  });

  test('held polls are bounded: the oldest is answered empty to make room', () => {
    const tail = replica('tail', { heldMax: 2 });
    for (let id = 1; id <= 3; id++) tail.step('client', poll(id, 'x', 1));
    assert.deepEqual(replies(tail), [{ id: 1, status: 'changes', through: 0, resume: 0, changes: [] }]);
    assert.equal(tail.watchPollsHeld, 2);
  });

  test('a replica that stops answering reads releases its held polls; a joiner refuses polls', () => {
    const tail = replica('tail');
    tail.step('client', poll(9, 'x', 1));
    tail.reconfigure(2, 'middle');
    assert.deepEqual(replies(tail), [{ id: 9, status: 'changes', through: 0, resume: 0, changes: [] }]);
    const refused = replica('joining').step('client', poll(1, 'x', 1));
    assert.equal(refused.status === 'ignored' && refused.code, 'DABBA_ERR_NOT_TAIL');
    const middle = replica('middle').step('client', poll(1, 'x', 1));
    assert.equal(middle.status === 'ignored' && middle.code, 'DABBA_ERR_NOT_TAIL', "with reads 'tail' only the tail serves watches");
  });

  test('a prefix longer than a key is malformed', () => {
    const result = replica('tail').step('client', poll(1, 'p'.repeat(17), 1));
    assert.equal(result.status === 'rejected' && result.code, 'DABBA_ERR_MALFORMED_FRAME');
  });

  test('a joiner that loaded a snapshot holds changes only after it', () => {
    const tail = replica('tail');
    for (let seq = 1; seq <= 5; seq++) tail.step('upstream', batch(seq, [['k', `${seq}`]]));
    // The history of a replica that started from a restart (or a snapshot) begins after it.
    const restarted = new ChainNode({
      id: 3, epoch: 1, role: 'tail', store: new Store(), inflightBytesMax: 64 * 1024, inflightBatchesMax: 16, readReplyPayloadBytesMax: 4096, readReplyResultsMax: 8,
      recovered: { appliedSeq: 5, clientHighWater: new Map([[1, 5]]) },
    });
    restarted.step('client', poll(1, 'k', 3));
    assert.deepEqual(replies(restarted).find((reply) => reply.id === 1), { id: 1, status: 'lagged', through: 2, resume: 6, changes: [] });
  });
});

describe('ChainNode: idle watch polls', () => {
  test('a held poll is answered empty once enough versions passed with no change under its prefix: its watcher’s position moves on', () => {
    const tail = new ChainNode({
      id: 2, epoch: 1, role: 'tail', store: new Store(), inflightBytesMax: 64 * 1024, inflightBatchesMax: 16, readReplyPayloadBytesMax: 4096, readReplyResultsMax: 8,
      watchIdleReplyVersions: 5,
    });
    tail.step('client', poll(1, 'quiet:', 1));
    for (let seq = 1; seq <= 4; seq++) tail.step('upstream', batch(seq, [['busy', `${seq}`]]));
    assert.deepEqual(replies(tail), [], 'four versions passed: still held');
    tail.step('upstream', batch(5, [['busy', '5']]));
    assert.deepEqual(replies(tail), [{ id: 1, status: 'changes', through: 5, resume: 0, changes: [] }]);
  });

  test('heldChanges lists what a watch of every key would be sent', () => {
    const tail = replica('tail');
    tail.step('upstream', batch(1, [['a', '1'], ['b', null]]));
    tail.step('upstream', batch(3, [['a', '2', 9]]));
    assert.deepEqual(tail.heldChanges(), { startSeq: 1, changes: [{ op: 'put', key: 'a', value: '1', version: 1 }, { op: 'delete', key: 'b', version: 2 }] });
  });
});
