/**
 * The protocol core as a pure state machine: H, M1, ..., T driven by a seeded scheduler that picks
 * which queued message is delivered next and how much of each Ready is forwarded.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ChainNode } from '../native-free-core/chain/node.js';
import { InflightLog } from '../native-free-core/chain/inflight-log.js';
import { Store } from '../native-free-core/store.js';
import { AckEncoder, HelloEncoder, Op, ReadBatchEncoder, ReadReplyView, ReadStatus, WriteBatchEncoder, WriteBatchView } from '../native-free-core/wire/codec.js';
import { SnapshotView, SnapshotWriter } from '../native-free-core/chain/snapshot.js';
import { ChainHarness } from './helpers/chain-harness.js';
import { crc32 } from '../native-free-core/checksum.js';
import { encodeSegment } from '../native-free-core/log/segment.js';
import { replaySegments, type SegmentBytes } from '../native-free-core/log/replay.js';
import { FORMAT_RECORD_LIMITS } from '../native-free-core/wire/codec.js';

const text = new TextEncoder();

/** The frames a replica logged, as one segment file. */
function segmentsOf(frames: Uint8Array[]): SegmentBytes[] {
  return [{ name: 'segment', bytes: encodeSegment(frames, crc32) }];
}

function checkPrefixInvariant(harness: ChainHarness): void {
  // I1: for nodes i before j, what j applied is a prefix of what i applied. I3: contiguous from 1.
  harness.appliedLog.forEach((log, index) => {
    log.forEach((seq, position) => assert.equal(seq, position + 1, `node ${index + 1} applied seq ${seq} at position ${position}`));
    if (index > 0) assert.ok(log.length <= harness.appliedLog[index - 1]!.length, `I1 broken between nodes ${index} and ${index + 1}`);
  });
  harness.nodes.forEach((node, index) => {
    if (index > 0) assert.ok(node.appliedSeq <= harness.nodes[index - 1]!.appliedSeq, 'I1: successor ahead of predecessor');
    assert.ok(node.committedSeq <= harness.tail.appliedSeq, 'I2: nothing committed beyond the tail');
  });
}

describe('ChainNode: H, M1, T under random interleavings', () => {
  for (const replicas of [1, 2, 3, 5]) {
    test(`${replicas} replica(s): contiguous sequences, prefix invariant after every step, identical state`, () => {
      for (let seed = 1; seed <= 40; seed++) {
        const harness = new ChainHarness({ replicas, seed, inflightBytesMax: 8 * 1024, inflightBatchesMax: 6 });
        let submitted = 0;
        for (let round = 0; round < 30; round++) {
          const count = 1 + Math.floor(harness.random() * 20);
          harness.submit(count);
          submitted += count;
          for (let steps = Math.floor(harness.random() * 10); steps > 0 && harness.step(); steps--) checkPrefixInvariant(harness);
        }
        while (harness.step()) checkPrefixInvariant(harness);
        for (const node of harness.nodes) {
          assert.equal(node.appliedSeq, submitted, `seed ${seed}: node ${node.id} applied everything`);
          assert.equal(node.committedSeq, submitted, `seed ${seed}: node ${node.id} learned the final commit`);
          assert.equal(node.inflightBatches, 0, `seed ${seed}: cumulative acks trimmed node ${node.id}'s in-flight list`);
        }
        const digests = harness.nodes.map((node) => node.store.digest());
        assert.ok(digests.every((digest) => digest === digests[0]), `seed ${seed}: digests ${digests.join(' ')}`);
        const lastAck = harness.clientAcks.at(-1)!;
        assert.equal(lastAck.committedClientSeq, submitted, 'the client hears of every write');
        // Client acks are cumulative and never go backwards.
        harness.clientAcks.reduce((previous, ack) => {
          assert.ok(ack.committedClientSeq >= previous);
          return ack.committedClientSeq;
        }, 0);
      }
    });
  }

  test('a full in-flight list refuses batches (backpressure) until acks trim it', () => {
    const harness = new ChainHarness({ replicas: 3, seed: 7, inflightBytesMax: 4096, inflightBatchesMax: 2 });
    for (let round = 0; round < 5; round++) harness.submit(10);
    // Deliver only to the head: it takes two batches, then refuses the third.
    assert.equal(harness.head.step('upstream', harness.batchQueues[0]![0]!).status, 'applied');
    harness.batchQueues[0]!.shift();
    assert.equal(harness.head.step('upstream', harness.batchQueues[0]![0]!).status, 'applied');
    harness.batchQueues[0]!.shift();
    assert.equal(harness.head.step('upstream', harness.batchQueues[0]![0]!).status, 'full');
    assert.equal(harness.head.appliedSeq, 20, 'a refused batch is not applied');
    harness.settle();
    assert.equal(harness.tail.appliedSeq, 50);
    assert.ok(harness.fullRefusals > 0 || harness.head.inflightBatches === 0);
  });
});

describe('ChainNode guards', () => {
  function makeNode(role: 'head' | 'middle' | 'tail', epoch = 1): ChainNode {
    return new ChainNode({
      id: 1,
      epoch,
      role,
      store: new Store(),
      inflightBytesMax: 64 * 1024,
      inflightBatchesMax: 16,
      readReplyPayloadBytesMax: 4096,
      readReplyResultsMax: 8,
    });
  }

  function stampedBatch(epoch: number, firstSeq: number, count: number, firstClientSeq = 1): Uint8Array {
    const encoder = new WriteBatchEncoder({ writesMax: 64, payloadBytesMax: 4096 });
    encoder.begin(1, firstClientSeq);
    for (let index = 0; index < count; index++) encoder.addPut(text.encode('k'), 0, 1, text.encode(`v${index}`), 0, 2);
    const frame = encoder.finish().slice();
    const view = new WriteBatchView();
    assert.equal(view.open(frame), null);
    view.stamp(epoch, firstSeq);
    return frame;
  }

  test('batches damaged between nodes are refused and sent again: nothing damaged is applied, every write arrives', () => {
    for (const replicas of [2, 3, 5]) {
      for (let seed = 1; seed <= 25; seed++) {
        const harness = new ChainHarness({ replicas, seed, inflightBytesMax: 16 * 1024, inflightBatchesMax: 8, corruptRate: 0.15 });
        // The same writes applied by one replica alone, with nothing in the way: the reference.
        const reference = new ChainHarness({ replicas: 1, seed });
        let submitted = 0;
        for (let round = 0; round < 25; round++) {
          const count = 1 + ((seed * 7 + round * 13) % 17);
          harness.submit(count);
          reference.submit(count);
          submitted += count;
          for (let steps = Math.floor(harness.random() * 10); steps > 0 && harness.step(); steps--) checkPrefixInvariant(harness);
        }
        while (harness.step()) checkPrefixInvariant(harness);
        reference.settle();
        for (const node of harness.nodes) assert.equal(node.appliedSeq, submitted, `${replicas} replicas, seed ${seed}: node ${node.id} applied every write`);
        assert.equal(harness.clientAcks.at(-1)!.committedClientSeq, submitted, 'the client hears of every write');
        for (const node of harness.nodes) {
          assert.equal(node.store.digest(), reference.head.store.digest(), `${replicas} replicas, seed ${seed}: node ${node.id} holds exactly the writes sent`);
        }
        if (seed === 1) assert.ok(harness.corrupted > 0 && harness.refusedWhileCorrupt >= harness.corrupted, `damage happened and was refused (${harness.corrupted} damaged, ${harness.refusedWhileCorrupt} refused)`);
      }
    }
  });

  test('a tail restarted from its own log rejoins in the next epoch and is sent only what it missed', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const harness = new ChainHarness({ replicas: 3, seed, inflightBytesMax: 64 * 1024, inflightBatchesMax: 64 });
      // What the tail applied, in order: its log (the stamped bytes, as a replica logs them).
      const logged: Uint8Array[] = [];
      const recordApplied = (node: ChainNode): void => {
        const step = node.step.bind(node);
        node.step = (source, frame) => {
          const result = step(source, frame);
          if (source === 'upstream' && result.status === 'applied') logged.push(frame.slice());
          return result;
        };
      };
      recordApplied(harness.tail);
      let submitted = 0;
      for (let round = 0; round < 12; round++) {
        const count = 1 + ((seed + round * 5) % 11);
        harness.submit(count);
        submitted += count;
        for (let steps = Math.floor(harness.random() * 12); steps > 0 && harness.step(); steps--);
      }
      // The tail's process dies: what was on its way to it and from it is lost with it, and what
      // the others still have in flight belongs to epoch 1, which every node drops from now on.
      const crashed = harness.tail;
      for (const queue of [harness.batchQueues[1]!, harness.batchQueues[2]!, ...harness.ackQueues]) queue.length = 0;
      // It restarts from its log, as the same replica, in the next epoch; the others reconfigure.
      const store = new Store();
      const recovered = replaySegments(segmentsOf(logged), store, { crc: crc32, frameBytesMax: 1 << 20, limits: FORMAT_RECORD_LIMITS, afterSeq: 0 });
      assert.equal(recovered.appliedSeq, crashed.appliedSeq);
      const restarted = new ChainNode({
        id: crashed.id,
        epoch: 2,
        role: 'tail',
        store,
        inflightBytesMax: 64 * 1024,
        inflightBatchesMax: 64,
        readReplyPayloadBytesMax: 64 * 1024,
        readReplyResultsMax: 64,
        recovered,
      });
      harness.nodes[0]!.reconfigure(2, 'head');
      harness.nodes[1]!.reconfigure(2, 'middle');
      harness.nodes[2] = restarted;
      const firstSeqs: number[] = [];
      const step = restarted.step.bind(restarted);
      const view = new WriteBatchView();
      restarted.step = (source, frame) => {
        if (source === 'upstream' && view.open(frame) === null) firstSeqs.push(view.firstSeq);
        return step(source, frame);
      };
      for (let round = 0; round < 6; round++) {
        harness.submit(3);
        submitted += 3;
      }
      harness.settle();
      for (const node of harness.nodes) assert.equal(node.appliedSeq, submitted, `seed ${seed}: node ${node.id} applied every write`);
      assert.equal(restarted.store.digest(), harness.head.store.digest(), `seed ${seed}: the restarted tail holds what the head does`);
      assert.ok(firstSeqs.length > 0 && firstSeqs[0]! === recovered.appliedSeq + 1, `seed ${seed}: resent from ${firstSeqs[0]}, right after its log's ${recovered.appliedSeq}`);
      assert.equal(harness.clientAcks.at(-1)!.committedClientSeq, submitted, 'the client hears of every write');
    }
  });

  test('a whole chain restarted from its logs, cut where a crash cuts them: every acknowledged write survives, the longest log leads, all converge', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const inflight = { bytesMax: 64 * 1024, batchesMax: 64 };
      const harness = new ChainHarness({ replicas: 3, seed, inflightBytesMax: inflight.bytesMax, inflightBatchesMax: inflight.batchesMax });
      // A disk per node, as the worker keeps it: batches applied since the last Ready are staged;
      // performing a Ready commits them first (write + fdatasync) and only then forwards or acks.
      const durable: Uint8Array[][] = harness.nodes.map(() => []);
      const staged: Uint8Array[][] = harness.nodes.map(() => []);
      harness.nodes.forEach((node, index) => {
        const step = node.step.bind(node);
        node.step = (source, frame) => {
          const result = step(source, frame);
          // The stamped bytes (the head stamps the client's frame in place).
          if (source === 'upstream' && result.status === 'applied') staged[index]!.push(frame.slice());
          return result;
        };
      });
      const performReady = harness.performReady.bind(harness);
      harness.performReady = (index) => {
        durable[index]!.push(...staged[index]!.splice(0));
        return performReady(index);
      };
      let submitted = 0;
      for (let round = 0; round < 12; round++) {
        const count = 1 + ((seed + round * 5) % 11);
        harness.submit(count);
        submitted += count;
        for (let steps = Math.floor(harness.random() * 12); steps > 0 && harness.step(); steps--);
      }
      // Every process dies at once: what was between nodes is lost, and of what each had staged
      // but not committed, any prefix may have reached its disk.
      const acknowledged = Math.max(0, ...harness.clientAcks.map((ack) => ack.committedSeq));
      for (const queue of [harness.batchQueues[1]!, harness.batchQueues[2]!, ...harness.ackQueues]) queue.length = 0;
      harness.restartClient();
      const logs = harness.nodes.map((_, index) => [...durable[index]!, ...staged[index]!.slice(0, Math.floor(harness.random() * (staged[index]!.length + 1)))]);
      const recovered = logs.map((log) => {
        const store = new Store();
        return { store, ...replaySegments(segmentsOf(log), store, { crc: crc32, frameBytesMax: 1 << 20, limits: FORMAT_RECORD_LIMITS, afterSeq: 0, keepRecent: inflight }) };
      });
      for (const [index, state] of recovered.entries()) assert.ok(state.appliedSeq >= acknowledged, `seed ${seed}: node ${index + 1}'s disk holds every acknowledged write`);
      // Longest log first (src/chain.ts orders a restarted chain so), ties in chain order.
      const order = [0, 1, 2].sort((a, b) => recovered[b]!.appliedSeq - recovered[a]!.appliedSeq);
      const roles = ['head', 'middle', 'tail'] as const;
      const restarted = order.map((index, position) => {
        const state = recovered[index]!;
        return new ChainNode({
          id: index + 1,
          epoch: 2,
          role: roles[position]!,
          store: state.store,
          inflightBytesMax: inflight.bytesMax,
          inflightBatchesMax: inflight.batchesMax,
          readReplyPayloadBytesMax: 64 * 1024,
          readReplyResultsMax: 64,
          ...(state.appliedSeq > 0 ? { recovered: { ...state, inflight: state.recent } } : {}),
        });
      });
      harness.nodes.splice(0, 3, ...restarted);
      const longest = recovered[order[0]!]!.appliedSeq;
      harness.settle();
      const headSeq = harness.head.appliedSeq;
      assert.ok(headSeq >= longest, 'the head keeps what the longest log held');
      assert.deepEqual(harness.nodes.map((node) => node.appliedSeq), [headSeq, headSeq, headSeq], `seed ${seed}: the others caught up with the head`);
      // A new client (a new process: a new client id) writes on.
      for (let round = 0; round < 4; round++) harness.submit(3, 50, 2);
      harness.settle();
      for (const node of harness.nodes) assert.equal(node.store.digest(), harness.head.store.digest(), `seed ${seed}: node ${node.id} holds what the head does`);
      assert.equal(harness.clientAcks.filter((ack) => ack.clientId === 2).at(-1)!.committedClientSeq, 12, 'the new client hears of every write');
      assert.ok(submitted > 0);
    }
  });

  test('a tail restarted from its log in a configuration that names a joiner sends that joiner its snapshot (a head does not)', () => {
    const source = makeNode('tail');
    source.step('upstream', stampedBatch(1, 1, 3));
    const recovered = { appliedSeq: 3, clientHighWater: new Map([[1, 3]]) };
    const options = { id: 2, epoch: 4, store: source.store, inflightBytesMax: 64 * 1024, inflightBatchesMax: 16, readReplyPayloadBytesMax: 4096, readReplyResultsMax: 8, recovered, joiner: 7 };
    const tail = new ChainNode({ ...options, role: 'tail' });
    assert.equal(tail.ready().snapshot, null, 'nothing goes to the joiner before its Hello says what it holds');
    assert.equal(tail.step('downstream', new HelloEncoder().encode({ epoch: 4, replicaId: 7, appliedSeq: 0 }).slice()).status, 'applied');
    const snapshot = tail.ready().snapshot;
    assert.ok(snapshot !== null, 'the joiner is sent a snapshot frame');
    const view = new SnapshotView();
    assert.equal(view.open(snapshot), null);
    assert.equal(view.appliedSeq, 3);
    const head = new ChainNode({ ...options, role: 'head' });
    assert.equal(head.ready().snapshot, null);
  });

  test('a middle drops batches from another epoch, ignores duplicates and rejects gaps', () => {
    const messages: string[] = [];
    const middle = new ChainNode({
      id: 2,
      epoch: 3,
      role: 'middle',
      store: new Store(),
      inflightBytesMax: 64 * 1024,
      inflightBatchesMax: 16,
      readReplyPayloadBytesMax: 4096,
      readReplyResultsMax: 8,
      log: (message) => messages.push(message),
    });
    const stale = middle.step('upstream', stampedBatch(2, 1, 3));
    assert.equal(stale.status, 'ignored');
    assert.equal(stale.status === 'ignored' && stale.code, 'DABBA_ERR_STALE_EPOCH');
    assert.match(messages[0]!, /ignoring \(stale epoch 2/);
    assert.equal(middle.step('upstream', stampedBatch(3, 1, 3)).status, 'applied');
    assert.equal(middle.step('upstream', stampedBatch(3, 1, 3)).status, 'duplicate');
    const gap = middle.step('upstream', stampedBatch(3, 10, 1));
    assert.equal(gap.status === 'rejected' && gap.code, 'DABBA_ERR_SEQUENCE_GAP');
    assert.equal(middle.appliedSeq, 3);
  });

  test('the head applies a client batch once (exactly-once by client sequence) and rejects client gaps', () => {
    const head = makeNode('head');
    const encoder = new WriteBatchEncoder({ writesMax: 8, payloadBytesMax: 1024 });
    encoder.begin(5, 1);
    encoder.addPut(text.encode('a'), 0, 1, text.encode('1'), 0, 1);
    encoder.addPut(text.encode('b'), 0, 1, text.encode('2'), 0, 1);
    const batch = encoder.finish().slice();
    assert.deepEqual(head.step('upstream', batch.slice()), { status: 'applied', firstSeq: 1, count: 2 });
    assert.equal(head.step('upstream', batch.slice()).status, 'duplicate', 'a retried batch is not applied twice');
    assert.equal(head.appliedSeq, 2);
    assert.equal(head.clientHighWaterMark(5), 2);
    encoder.begin(5, 7);
    encoder.addPut(text.encode('c'), 0, 1, text.encode('3'), 0, 1);
    const gap = head.step('upstream', encoder.finish().slice());
    assert.equal(gap.status === 'rejected' && gap.code, 'DABBA_ERR_SEQUENCE_GAP');
  });

  test('malformed bytes are rejected with a code before anything is applied', () => {
    const head = makeNode('head');
    const result = head.step('upstream', new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]));
    assert.equal(result.status === 'rejected' && result.code, 'DABBA_ERR_MALFORMED_FRAME');
    assert.equal(head.appliedSeq, 0);
    const ack = head.step('downstream', new Uint8Array(16));
    assert.equal(ack.status === 'rejected' && ack.code, 'DABBA_ERR_MALFORMED_FRAME');
  });

  test('acks from another epoch are ignored; an ack beyond what was forwarded is refused and changes nothing', () => {
    const head = makeNode('head', 2);
    const encoder = new WriteBatchEncoder({ writesMax: 8, payloadBytesMax: 1024 });
    encoder.begin(1, 1);
    encoder.addPut(text.encode('a'), 0, 1, text.encode('1'), 0, 1);
    head.step('upstream', encoder.finish().slice());
    const acks = new AckEncoder();
    assert.equal(head.step('downstream', acks.encode({ epoch: 1, committedSeq: 1, clientId: 0, committedClientSeq: 0 })).status, 'ignored');
    // Not forwarded yet: a correct successor cannot have it. (This used to reach an assertion.)
    const beyond = head.step('downstream', acks.encode({ epoch: 2, committedSeq: 1, clientId: 0, committedClientSeq: 0 }));
    assert.equal(beyond.status === 'rejected' && beyond.code, 'DABBA_ERR_PROTOCOL_VIOLATION');
    assert.equal(head.inflightBatches, 1);
    assert.equal(head.committedSeq, 0);
    const ready = head.ready();
    head.advance(ready, { forwarded: 1, acksSent: true, repliesSent: 0 });
    assert.equal(head.step('downstream', acks.encode({ epoch: 2, committedSeq: 1, clientId: 0, committedClientSeq: 0 })).status, 'applied');
    assert.equal(head.inflightBatches, 0);
  });

  test('one door: each role takes its frame kinds from its links and refuses the rest by name', () => {
    const acks = new AckEncoder();
    const ack = acks.encode({ epoch: 1, committedSeq: 0, clientId: 0, committedClientSeq: 0 }).slice();
    const reads = new ReadBatchEncoder({ readsMax: 1, keyBytesMax: 8 });
    reads.begin(1);
    reads.addRead(text.encode('k'), 0, 1);
    const read = reads.finish(1).slice();
    const codeOf = (result: ReturnType<ChainNode['step']>): string => (result.status === 'ignored' || result.status === 'rejected' ? result.code : result.status);
    // Reads go to the tail only.
    assert.equal(codeOf(makeNode('head').step('client', read)), 'DABBA_ERR_NOT_TAIL');
    assert.equal(codeOf(makeNode('middle').step('client', read)), 'DABBA_ERR_NOT_TAIL');
    assert.equal(codeOf(makeNode('tail').step('client', read)), 'applied');
    // Acks reach only a node that forwards.
    assert.equal(codeOf(makeNode('tail').step('downstream', ack)), 'DABBA_ERR_NOT_FORWARDING');
    // A frame on a link it never travels: an ack from upstream, a batch from downstream, reads as a batch.
    assert.equal(codeOf(makeNode('middle').step('upstream', ack)), 'DABBA_ERR_UNEXPECTED_FRAME');
    assert.equal(codeOf(makeNode('middle').step('downstream', stampedBatch(1, 1, 1))), 'DABBA_ERR_UNEXPECTED_FRAME');
    assert.equal(codeOf(makeNode('tail').step('upstream', read)), 'DABBA_ERR_UNEXPECTED_FRAME');
    // Bytes that are no frame at all, on any link.
    assert.equal(codeOf(makeNode('head').step('upstream', new Uint8Array(3))), 'DABBA_ERR_MALFORMED_FRAME');
  });

  test('a Hello at the current epoch that no correct successor sends is refused, never asserted on', () => {
    const hellos = new HelloEncoder();
    // A tail has no successor (this used to reach an assertion: one such Hello crashed every replica).
    const tail = makeNode('tail', 2);
    assert.equal(tail.step('upstream', stampedBatch(2, 1, 3)).status, 'applied');
    const toTail = tail.step('downstream', hellos.encode({ epoch: 2, replicaId: 9, appliedSeq: 0 }));
    assert.equal(toTail.status === 'ignored' && toTail.code, 'DABBA_ERR_NOT_FORWARDING');
    // A middle hears of a successor claiming writes it never had (I1).
    const middle = makeNode('middle', 2);
    assert.equal(middle.step('upstream', stampedBatch(2, 1, 3)).status, 'applied');
    const beyond = middle.step('downstream', hellos.encode({ epoch: 2, replicaId: 9, appliedSeq: 1000 }));
    assert.equal(beyond.status === 'rejected' && beyond.code, 'DABBA_ERR_PROTOCOL_VIOLATION');
    // A successor applies whole batches: a Hello inside one (seqs 1-3 here) is not from a correct one.
    const inside = middle.step('downstream', hellos.encode({ epoch: 2, replicaId: 9, appliedSeq: 2 }));
    assert.equal(inside.status === 'rejected' && inside.code, 'DABBA_ERR_PROTOCOL_VIOLATION');
    // A correct Hello still works afterwards.
    assert.equal(middle.step('downstream', hellos.encode({ epoch: 2, replicaId: 3, appliedSeq: 0 })).status, 'applied');
    assert.equal(middle.ready().forward.length, 1);
  });

  test('a joining replica refuses a batch before its first snapshot frame (it would break its start)', () => {
    const joiner = new ChainNode({ id: 4, epoch: 2, role: 'joining', store: new Store(), inflightBytesMax: 64 * 1024, inflightBatchesMax: 16, readReplyPayloadBytesMax: 4096, readReplyResultsMax: 8 });
    const early = joiner.step('upstream', stampedBatch(2, 1, 3));
    assert.equal(early.status === 'ignored' && early.code, 'DABBA_ERR_PROTOCOL_VIOLATION');
    assert.equal(joiner.appliedSeq, 0);
    const source = new Store();
    source.put(text.encode('k'), 0, 1, text.encode('v'), 0, 1, 5);
    const writer = new SnapshotWriter({ store: source, epoch: 2, appliedSeq: 5, clientHighWater: new Map([[1, 5]]) }, 64 * 1024);
    assert.equal(joiner.step('upstream', writer.next().slice()).status, 'applied');
    assert.equal(joiner.step('upstream', stampedBatch(2, 6, 2, 6)).status, 'applied');
    assert.equal(joiner.appliedSeq, 7);
  });

  test('an idle tail sends its joiner one snapshot frame after another, without waiting for a batch turn', () => {
    const tail = new ChainNode({ id: 3, epoch: 1, role: 'tail', store: new Store(), inflightBytesMax: 64 * 1024, inflightBatchesMax: 16, readReplyPayloadBytesMax: 4096, readReplyResultsMax: 8, keyBytesMax: 8, valueBytesMax: 1024, snapshotFrameBytesMax: 2048 });
    for (let seq = 1; seq <= 8; seq++) {
      const encoder = new WriteBatchEncoder({ writesMax: 1, payloadBytesMax: 1100 });
      encoder.begin(1, seq);
      encoder.addPut(text.encode(`k${seq}`), 0, 2, new Uint8Array(1000), 0, 1000);
      const frame = encoder.finish().slice();
      const view = new WriteBatchView();
      view.open(frame);
      view.stamp(1, seq);
      assert.equal(tail.step('upstream', frame).status, 'applied');
    }
    tail.reconfigure(2, 'tail', { joiner: 4 });
    assert.equal(tail.step('downstream', new HelloEncoder().encode({ epoch: 2, replicaId: 4, appliedSeq: 0 }).slice()).status, 'applied');
    // Eight 1 KB entries in 2 KB frames: several frames, and no batch in between to take turns with.
    let frames = 0;
    for (let ready = tail.ready(); ready.snapshot !== null; ready = tail.ready()) {
      frames++;
      tail.advance(ready, { forwarded: 0, acksSent: true, repliesSent: 0, snapshotSent: true });
    }
    assert.ok(frames >= 4, `${frames} frames in a row`);
    assert.equal(tail.hasReady(), false, 'every frame went');
  });

  test('keys and values above the limits are refused in batches, reads and snapshot frames', () => {
    const limited = (role: 'head' | 'tail' | 'joining'): ChainNode =>
      new ChainNode({ id: 1, epoch: 1, role, store: new Store(), inflightBytesMax: 64 * 1024, inflightBatchesMax: 16, readReplyPayloadBytesMax: 4096, readReplyResultsMax: 8, keyBytesMax: 8, valueBytesMax: 100 });
    const encoder = new WriteBatchEncoder({ writesMax: 4, payloadBytesMax: 8192 });
    encoder.begin(1, 1);
    encoder.addPut(text.encode('k'), 0, 1, new Uint8Array(101), 0, 101);
    const big = limited('head').step('upstream', encoder.finish().slice());
    assert.equal(big.status === 'rejected' && big.code, 'DABBA_ERR_MALFORMED_FRAME');
    assert.match(big.status === 'rejected' ? big.reason : '', /101-byte value, above valueBytesMax 100/);
    encoder.begin(1, 1);
    encoder.addPut(text.encode('k'), 0, 1, new Uint8Array(100), 0, 100);
    assert.equal(limited('head').step('upstream', encoder.finish().slice()).status, 'applied', 'the largest legal value is taken');
    const reads = new ReadBatchEncoder({ readsMax: 2, keyBytesMax: 16 });
    reads.begin(1);
    reads.addRead(text.encode('123456789'), 0, 9);
    const longKey = limited('tail').step('client', reads.finish(1).slice());
    assert.equal(longKey.status === 'rejected' && longKey.code, 'DABBA_ERR_MALFORMED_FRAME');
    const source = new Store();
    source.put(text.encode('k'), 0, 1, new Uint8Array(101), 0, 101, 1);
    const writer = new SnapshotWriter({ store: source, epoch: 1, appliedSeq: 1, clientHighWater: new Map() }, 64 * 1024);
    const snapshot = limited('joining').step('upstream', writer.next().slice());
    assert.equal(snapshot.status === 'rejected' && snapshot.code, 'DABBA_ERR_MALFORMED_FRAME');
  });

  test('the tail serves reads from its store; other roles refuse them', () => {
    const tail = makeNode('tail');
    assert.equal(tail.step('upstream', stampedBatch(1, 1, 3)).status, 'applied');
    const reads = new ReadBatchEncoder({ readsMax: 4, keyBytesMax: 8 });
    reads.begin(40);
    reads.addRead(text.encode('k'), 0, 1);
    reads.addRead(text.encode('missing'), 0, 7);
    const frame = reads.finish(1).slice();
    assert.equal(tail.step('client', frame).status, 'applied');
    const ready = tail.ready();
    assert.equal(ready.readReplies.length, 1);
    const reply = new ReadReplyView();
    assert.equal(reply.open(ready.readReplies[0]!), null);
    assert.equal(reply.firstRequestId, 40);
    assert.equal(reply.statusAt(0), ReadStatus.Found);
    assert.equal(reply.resultAt(0).version(), 3, 'the version is the seq of the last write to the key');
    const result = reply.resultAt(0);
    const start = reply.payloadPosition + result.valueOffset();
    assert.equal(Buffer.from(reply.bytes.subarray(start, start + result.valueLength())).toString(), 'v2');
    assert.equal(reply.statusAt(1), ReadStatus.NotFound);
    assert.equal(makeNode('middle').step('client', frame).status, 'ignored');
  });
});

describe('ChainNode: reads at any replica (CRAQ)', () => {
  const reads = new ReadBatchEncoder({ readsMax: 4, keyBytesMax: 8 });
  function readFrame(firstRequestId: number, keys: string[], lane = 0): Uint8Array {
    reads.begin(firstRequestId);
    for (const key of keys) reads.addRead(text.encode(key), 0, key.length);
    return reads.finish(1, lane).slice();
  }
  function batch(firstSeq: number, writes: Array<[string, string | null]>, firstClientSeq = firstSeq): Uint8Array {
    const encoder = new WriteBatchEncoder({ writesMax: 64, payloadBytesMax: 4096 });
    encoder.begin(1, firstClientSeq);
    for (const [key, value] of writes) {
      if (value === null) encoder.addDelete(text.encode(key), 0, key.length);
      else encoder.addPut(text.encode(key), 0, key.length, text.encode(value), 0, value.length);
    }
    const frame = encoder.finish().slice();
    const view = new WriteBatchView();
    assert.equal(view.open(frame), null);
    view.stamp(1, firstSeq);
    return frame;
  }
  function middle(readsAtAnyReplica: boolean): ChainNode {
    return new ChainNode({ id: 2, epoch: 1, role: 'middle', store: new Store(), inflightBytesMax: 64 * 1024, inflightBatchesMax: 16, readReplyPayloadBytesMax: 4096, readReplyResultsMax: 8, readsAtAnyReplica });
  }
  function ack(committedSeq: number): Uint8Array {
    return new AckEncoder().encode({ epoch: 1, committedSeq, clientId: 0, committedClientSeq: 0 }).slice();
  }
  function answers(node: ChainNode): Array<{ lane: number; first: number; results: Array<string | null> }> {
    const ready = node.ready();
    node.advance(ready, { forwarded: ready.forward.length, acksSent: true, repliesSent: ready.readReplies.length });
    const view = new ReadReplyView();
    return ready.readReplies.map((frame) => {
      assert.equal(view.open(frame), null);
      const results = Array.from({ length: view.count }, (_, index) => {
        if (view.statusAt(index) === ReadStatus.NotFound) return null;
        const result = view.resultAt(index);
        const start = view.payloadPosition + result.valueOffset();
        return `${Buffer.from(view.bytes.subarray(start, start + result.valueLength())).toString()}@${result.version()}`;
      });
      return { lane: view.lane, first: view.firstRequestId, results };
    });
  }

  test('a clean key is answered at once; a dirty one is held, with the value it had when the read came, until the commit point reaches it', () => {
    const node = middle(true);
    assert.equal(node.step('upstream', batch(1, [['a', 'a1'], ['b', 'b1']])).status, 'applied');
    answers(node); // forwarded
    assert.equal(node.step('downstream', ack(2)).status, 'applied');
    assert.equal(node.step('upstream', batch(3, [['a', 'a2']])).status, 'applied');
    answers(node);
    // b is clean (its write, seq 2, is committed); a's newest write (seq 3) is not.
    assert.equal(node.step('client', readFrame(10, ['b'], 2)).status, 'applied');
    assert.deepEqual(answers(node), [{ lane: 2, first: 10, results: ['b1@2'] }]);
    assert.equal(node.step('client', readFrame(11, ['a', 'b'], 2)).status, 'applied');
    assert.equal(node.step('upstream', batch(4, [['a', 'a3']])).status, 'applied');
    assert.deepEqual(answers(node), [], 'a read of a dirty key waits');
    assert.equal(node.step('client', readFrame(13, ['b'], 2)).status, 'applied');
    assert.deepEqual(answers(node), [], 'replies leave in order: a clean read waits behind a held one');
    assert.equal(node.dirtyReads, 1);
    assert.equal(node.step('downstream', ack(3)).status, 'applied');
    assert.deepEqual(answers(node), [
      { lane: 2, first: 11, results: ['a2@3', 'b1@2'] },
      { lane: 2, first: 13, results: ['b1@2'] },
    ], 'seq 3 committed: the value a had when the read came, though a3 was applied since');
  });

  test('an absent key is dated by the newest delete: after an uncommitted delete, its absence waits for the commit point', () => {
    const node = middle(true);
    node.step('upstream', batch(1, [['a', 'a1']]));
    answers(node); // forwarded
    node.step('downstream', ack(1));
    assert.equal(node.step('client', readFrame(1, ['zz'])).status, 'applied');
    assert.deepEqual(answers(node), [{ lane: 0, first: 1, results: [null] }], 'never written, no delete pending: clean');
    node.step('upstream', batch(2, [['a', null]], 2));
    assert.equal(node.step('client', readFrame(2, ['a'])).status, 'applied');
    assert.deepEqual(answers(node), [], 'deleted at seq 2, not committed: held');
    node.step('downstream', ack(2));
    assert.deepEqual(answers(node), [{ lane: 0, first: 2, results: [null] }]);
  });

  test("with reads 'tail' a middle refuses reads, and a joiner refuses them either way", () => {
    const refused = middle(false).step('client', readFrame(1, ['a']));
    assert.equal(refused.status === 'ignored' && refused.code, 'DABBA_ERR_NOT_TAIL');
    const joiner = new ChainNode({ id: 4, epoch: 1, role: 'joining', store: new Store(), inflightBytesMax: 64 * 1024, inflightBatchesMax: 16, readReplyPayloadBytesMax: 4096, readReplyResultsMax: 8, readsAtAnyReplica: true });
    const joinerRefusal = joiner.step('client', readFrame(1, ['a']));
    assert.equal(joinerRefusal.status === 'ignored' && joinerRefusal.code, 'DABBA_ERR_NOT_TAIL');
  });

  test('a middle that becomes the tail commits what it applied: held reads leave', () => {
    const node = middle(true);
    node.step('upstream', batch(1, [['a', 'a1']]));
    node.step('client', readFrame(5, ['a']));
    assert.deepEqual(answers(node), []);
    node.reconfigure(2, 'tail');
    assert.deepEqual(answers(node), [{ lane: 0, first: 5, results: ['a1@1'] }]);
  });
});

describe('ChainNode: conditional writes', () => {
  function conditionalBatch(firstSeq: number, firstClientSeq: number, writes: Array<[string, number]>): Uint8Array {
    const encoder = new WriteBatchEncoder({ writesMax: 2048, payloadBytesMax: 64 * 1024 });
    encoder.begin(5, firstClientSeq);
    for (const [key, expected] of writes) encoder.addPut(text.encode(key), 0, key.length, text.encode('v'), 0, 1, expected);
    const frame = encoder.finish().slice();
    const view = new WriteBatchView();
    assert.equal(view.open(frame), null);
    view.stamp(1, firstSeq);
    return frame;
  }
  function node(role: 'middle' | 'tail'): ChainNode {
    return new ChainNode({ id: 2, epoch: 1, role, store: new Store(), inflightBytesMax: 256 * 1024, inflightBatchesMax: 16, readReplyPayloadBytesMax: 4096, readReplyResultsMax: 8 });
  }
  function clientAcks(target: ChainNode) {
    const ready = target.ready();
    target.advance(ready, { forwarded: ready.forward.length, acksSent: true, repliesSent: ready.readReplies.length });
    return ready.clientAcks;
  }

  test('the tail reports failed conditions in the client ack, at most ACK_FAILURES_MAX at a time, the next ack going on from there', () => {
    const tail = node('tail');
    // 1100 puts of distinct keys expecting version 99: every one fails (the keys are absent).
    const writes = Array.from({ length: 1100 }, (_, index): [string, number] => [`k${index}`, 99]);
    assert.equal(tail.step('upstream', conditionalBatch(1, 1, writes)).status, 'applied');
    assert.equal(tail.store.size, 0, 'nothing was applied');
    assert.equal(tail.conditionFailures, 1100);
    const [first] = clientAcks(tail);
    assert.deepEqual({ from: first!.reportedFrom, through: first!.committedClientSeq, listed: first!.failures!.length }, { from: 1, through: 1024, listed: 1024 });
    assert.deepEqual(first!.failures![0], { clientSeq: 1, currentVersion: 0 });
    const [second] = clientAcks(tail);
    assert.deepEqual({ from: second!.reportedFrom, through: second!.committedClientSeq, listed: second!.failures!.length }, { from: 1025, through: 1100, listed: 76 });
    assert.deepEqual(clientAcks(tail), [], 'everything reported');
  });

  test("writes the head's admission hook refused are skipped, and reported with their reasons in acks that fit a control ring's record", () => {
    const tail = node('tail');
    const encoder = new WriteBatchEncoder({ writesMax: 512, payloadBytesMax: 256 * 1024 });
    encoder.begin(5, 1);
    const reason = text.encode('r'.repeat(200));
    for (let index = 0; index < 300; index++) {
      encoder.payload.set(text.encode(`k${index}`.padEnd(6, '-')), encoder.payloadLength);
      encoder.payload.set(reason, encoder.payloadLength + 6);
      encoder.addRecord(Op.Rejected, 6, reason.length);
    }
    const frame = encoder.finish().slice();
    const view = new WriteBatchView();
    assert.equal(view.open(frame), null);
    view.stamp(1, 1);
    assert.equal(tail.step('upstream', frame).status, 'applied');
    assert.equal(tail.store.size, 0);
    assert.equal(tail.admissionRejections, 300);
    const encoded = new AckEncoder();
    let reported = 0;
    for (let ack = clientAcks(tail)[0]; ack !== undefined; ack = clientAcks(tail)[0]) {
      const bytes = encoded.encode(ack).length;
      assert.ok(bytes <= 32 * 1024 - 8, `an ack of ${bytes} bytes does not fit a control ring's record`);
      assert.equal(ack.reportedFrom, reported + 1);
      reported = ack.committedClientSeq;
      assert.ok(ack.failures!.every((failure) => failure.reason !== undefined && failure.reason.length === 200));
    }
    assert.equal(reported, 300, 'every refused write reported, over several acks');
  });

  test('a middle keeps the failures of its uncommitted writes; made the tail, it reports them, from the first of its uncommitted writes', () => {
    const middle = node('middle');
    middle.step('upstream', conditionalBatch(1, 1, [['a', 0], ['a', 0]]));
    middle.step('upstream', conditionalBatch(3, 3, [['b', 5], ['c', 0]]));
    assert.equal(middle.conditionFailures, 2, "the second put of a and b's failed");
    clientAcks(middle); // forwards both batches
    middle.step('downstream', new AckEncoder().encode({ epoch: 1, committedSeq: 2, clientId: 0, committedClientSeq: 0 }).slice());
    middle.reconfigure(2, 'tail');
    const [ack] = clientAcks(middle);
    assert.deepEqual(
      { clientId: ack!.clientId, from: ack!.reportedFrom, through: ack!.committedClientSeq, failures: ack!.failures },
      { clientId: 5, from: 3, through: 4, failures: [{ clientSeq: 3, currentVersion: 0 }] },
      "the failure of client seq 2 was the old tail's to report (committed before); b's is this one's",
    );
  });
});

describe('InflightLog', () => {
  test('wraps around its arena, trims by cumulative ack, and rewinds forwarding', () => {
    const log = new InflightLog(1024, 8);
    const batch = (length: number, fill: number): Uint8Array => new Uint8Array(length).fill(fill);
    let seq = 1;
    for (let round = 0; round < 50; round++) {
      const length = 100 + ((round * 37) % 200);
      log.markForwardedThrough(log.lastSeq);
      // Acknowledge the oldest batch at a time until the new one fits: the arena is circular.
      while (!log.hasRoomFor(length)) {
        assert.ok(log.batchCount > 0, `round ${round}: an empty log always has room`);
        log.trimThrough(log.firstSeq + log.countAt(0) - 1);
      }
      log.append(batch(length, round & 0xff), seq, 2);
      seq += 2;
      const last = log.batchAt(log.batchCount - 1);
      assert.equal(last.length, length);
      assert.ok(last.every((byte) => byte === (round & 0xff)), 'bytes survive wrap-around');
      assert.ok(log.bytesUsed <= 1024);
    }
    log.markForwardedThrough(log.lastSeq);
    assert.equal(log.pendingCount, 0);
    log.rewindForwardingTo(log.firstSeq - 1, { newSuccessor: true });
    assert.equal(log.pendingCount, log.batchCount, 'after a rewind every logged batch is resent');
  });

  test('appending out of sequence is an invariant violation', () => {
    const log = new InflightLog(1024, 4);
    log.append(new Uint8Array(10), 1, 5);
    assert.throws(() => log.append(new Uint8Array(10), 7, 1), { code: 'DABBA_ERR_ASSERTION' });
  });
});
