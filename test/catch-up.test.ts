/**
 * A tail's catch-up of a joiner restarted from its own log (native-free-core/log/catch-up.ts and
 * the join in ChainNode): the tail's log gives the batches after the joiner's end only if it holds
 * the batch ending there with the same epoch stamp; it reads across segments and a segment that
 * is still growing; and a joiner fed that way ends with the tail's state, while one whose log the
 * tail cannot continue refuses the snapshot it is sent (DABBA_ERR_LOG_DIVERGED).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ChainNode } from '../native-free-core/chain/node.js';
import { crc32 } from '../native-free-core/checksum.js';
import { ErrorCode } from '../native-free-core/errors.js';
import { openCatchUp, type CatchUpFiles } from '../native-free-core/log/catch-up.js';
import { encodeSegment } from '../native-free-core/log/segment.js';
import { Store } from '../native-free-core/store.js';
import { AckEncoder, FORMAT_RECORD_LIMITS, frameKind, HelloEncoder, MessageKind, WriteBatchEncoder, WriteBatchView } from '../native-free-core/wire/codec.js';

const OPTIONS = { crc: crc32, frameBytesMax: 1 << 20, limits: FORMAT_RECORD_LIMITS };
const text = new TextEncoder();

/** A batch of `count` puts from client 1, stamped (epoch, firstSeq). */
function batch(epoch: number, firstSeq: number, count: number, value = 'v'): Uint8Array {
  const encoder = new WriteBatchEncoder({ writesMax: count, payloadBytesMax: 1024 });
  encoder.begin(1, firstSeq);
  for (let index = 0; index < count; index++) {
    const key = text.encode(`k${(firstSeq + index) % 5}`);
    const bytes = text.encode(`${value}${firstSeq + index}`);
    encoder.addPut(key, 0, key.length, bytes, 0, bytes.length);
  }
  const frame = encoder.finish().slice();
  const view = new WriteBatchView();
  assert.equal(view.open(frame), null);
  view.stamp(epoch, firstSeq);
  return frame;
}

/** Segments in memory, named by their first seq; `append` grows the last one. */
class MemoryLog implements CatchUpFiles {
  readonly segments: Array<{ firstSeq: number; frames: Uint8Array[] }> = [];
  private readonly view = new WriteBatchView();

  append(frame: Uint8Array, newSegment = false): void {
    this.view.open(frame);
    if (newSegment || this.segments.length === 0) this.segments.push({ firstSeq: this.view.firstSeq, frames: [] });
    this.segments.at(-1)!.frames.push(frame);
  }
  list(): Array<{ firstSeq: number; name: string }> {
    return this.segments.map((segment) => ({ firstSeq: segment.firstSeq, name: String(segment.firstSeq) }));
  }
  read(name: string): Uint8Array {
    return encodeSegment(this.segments.find((segment) => String(segment.firstSeq) === name)!.frames, crc32);
  }
}

function seqsOf(frames: Array<Uint8Array | null>): string[] {
  const view = new WriteBatchView();
  return frames.map((frame) => {
    assert.ok(frame !== null);
    view.open(frame);
    return `${view.firstSeq}+${view.count}@${view.epoch}`;
  });
}

describe('openCatchUp', () => {
  const log = new MemoryLog();
  log.append(batch(1, 1, 2));
  log.append(batch(1, 3, 3));
  log.append(batch(2, 6, 1), true);
  log.append(batch(2, 7, 4));
  log.append(batch(3, 11, 2), true);

  test('from the end of a batch with the same stamp: the batches after it, across segments, through throughSeq', () => {
    const catchUp = openCatchUp(log, 5, 1, 12, OPTIONS)!;
    assert.ok(catchUp !== null);
    assert.deepEqual(seqsOf([catchUp.next(), catchUp.next(), catchUp.next()]), ['6+1@2', '7+4@2', '11+2@3']);
    assert.equal(catchUp.done, true);
    assert.equal(catchUp.next(), null);
    const short = openCatchUp(log, 2, 1, 6, OPTIONS)!;
    assert.deepEqual(seqsOf([short.next(), short.next()]), ['3+3@1', '6+1@2']);
    assert.equal(short.done, true);
  });

  test('nothing when the stamp differs, the seq falls inside a batch, or the log no longer reaches back to it', () => {
    assert.equal(openCatchUp(log, 5, 2, 12, OPTIONS), null, 'the same seq ordered in another epoch is another batch');
    assert.equal(openCatchUp(log, 4, 1, 12, OPTIONS), null, 'a joiner never stops inside a batch of ours');
    assert.equal(openCatchUp(log, 12, 3, 11, OPTIONS), null, 'beyond what the tail holds');
    const trimmed = new MemoryLog();
    trimmed.append(batch(2, 7, 4));
    assert.equal(openCatchUp(trimmed, 6, 2, 10, OPTIONS), null, 'a checkpoint covered that batch');
    assert.equal(openCatchUp(log, 0, 0, 12, OPTIONS), null, 'an empty joiner gets a snapshot');
  });

  test('a growing segment: a batch not written yet reads as null, then comes once it is', () => {
    const growing = new MemoryLog();
    growing.append(batch(1, 1, 2));
    const catchUp = openCatchUp(growing, 2, 1, 5, OPTIONS)!;
    assert.equal(catchUp.next(), null);
    assert.equal(catchUp.done, false);
    growing.append(batch(1, 3, 1));
    growing.append(batch(1, 4, 2), true);
    assert.deepEqual(seqsOf([catchUp.next(), catchUp.next()]), ['3+1@1', '4+2@1']);
    assert.equal(catchUp.done, true);
  });
});

describe('a joiner restarted from its log', () => {
  const limits = { inflightBytesMax: 64 * 1024, inflightBatchesMax: 16, readReplyPayloadBytesMax: 4096, readReplyResultsMax: 8 };

  /** A tail that applied `frames`, with `log` as its log, and a joiner named in its next epoch. */
  function tailWith(frames: Uint8Array[], log: MemoryLog): ChainNode {
    const tail = new ChainNode({ id: 1, epoch: 1, role: 'tail', store: new Store(), ...limits, openCatchUp: (after, epoch, through) => openCatchUp(log, after, epoch, through, OPTIONS) });
    const view = new WriteBatchView();
    for (const frame of frames) {
      view.open(frame);
      // A tail applies batches of its own epoch: it moves on with the stamps.
      if (view.epoch > tail.epoch) tail.reconfigure(view.epoch, 'tail');
      assert.equal(tail.step('upstream', frame).status, 'applied');
      log.append(frame);
    }
    tail.reconfigure(tail.epoch + 1, 'tail', { joiner: 9 });
    return tail;
  }

  /** A joiner whose own log holds `frames`. */
  function resumedJoiner(frames: Uint8Array[]): ChainNode {
    const store = new Store();
    const replay = new ChainNode({ id: 99, epoch: 1, role: 'tail', store, ...limits });
    for (const frame of frames) assert.equal(replay.step('upstream', frame.slice()).status, 'applied');
    const recovered = { appliedSeq: replay.appliedSeq, clientHighWater: new Map([[1, replay.clientHighWaterMark(1)]]), inflight: frames };
    return new ChainNode({ id: 9, epoch: 2, role: 'joining', store, ...limits, recovered });
  }

  /** Runs the join between the two until nothing moves; returns the frame kinds the tail sent. */
  function run(tail: ChainNode, joiner: ChainNode): { kinds: MessageKind[]; refusals: string[] } {
    const kinds: MessageKind[] = [];
    const refusals: string[] = [];
    const hello = new HelloEncoder();
    const ack = new AckEncoder();
    for (let round = 0; round < 100 && (tail.hasReady() || joiner.hasReady()); round++) {
      if (joiner.hasReady()) {
        const ready = joiner.ready();
        if (ready.helloUpstream !== null) tail.step('downstream', hello.encode(ready.helloUpstream).slice());
        // Its acks open the catch-up's window and let its end go.
        if (ready.ackUpstream !== null) tail.step('downstream', ack.encode(ready.ackUpstream).slice());
        joiner.advance(ready, { forwarded: 0, acksSent: true, repliesSent: 0 });
      }
      if (!tail.hasReady()) continue;
      const ready = tail.ready();
      for (const frame of [ready.snapshot, ...ready.forward]) {
        if (frame === null) continue;
        kinds.push(frameKind(frame) as MessageKind);
        const result = joiner.step('upstream', frame.slice());
        if (result.status === 'rejected') refusals.push(result.code);
      }
      tail.advance(ready, { forwarded: ready.forward.length, acksSent: true, repliesSent: 0, snapshotSent: true });
    }
    return { kinds, refusals };
  }

  test('its log a prefix of the tail\'s: it is sent only the batches after it, then the end of the catch-up, and holds what the tail holds', () => {
    const history = [batch(1, 1, 2), batch(1, 3, 3), batch(1, 6, 2), batch(1, 8, 1)];
    const tail = tailWith(history, new MemoryLog());
    const joiner = resumedJoiner(history.slice(0, 2));
    const { kinds, refusals } = run(tail, joiner);
    assert.deepEqual(refusals, []);
    assert.deepEqual(kinds, [MessageKind.writeBatch, MessageKind.writeBatch, MessageKind.snapshot]);
    assert.equal(joiner.joinCaughtUp, true);
    assert.equal(joiner.appliedSeq, 8);
    assert.equal(joiner.store.digest(), tail.store.digest());
    // What the tail applies from now on follows from its in-flight list.
    assert.equal(tail.step('upstream', batch(2, 9, 1)).status, 'applied');
    run(tail, joiner);
    assert.equal(joiner.appliedSeq, 9);
    assert.equal(joiner.store.digest(), tail.store.digest());
  });

  test('the catch-up stays within the in-flight window: no more than that is sent ahead of the joiner\'s acks', () => {
    const history = Array.from({ length: 40 }, (_, index) => batch(1, 1 + index * 4, 4, 'x'.repeat(200)));
    const tail = new ChainNode({ id: 1, epoch: 1, role: 'tail', store: new Store(), ...limits, inflightBytesMax: 4096, catchUpOnlyIfSmaller: false, openCatchUp: (after, epoch, through) => openCatchUp(log, after, epoch, through, OPTIONS) });
    const log = new MemoryLog();
    for (const frame of history) {
      assert.equal(tail.step('upstream', frame).status, 'applied');
      log.append(frame);
    }
    tail.reconfigure(2, 'tail', { joiner: 9 });
    const joiner = resumedJoiner(history.slice(0, 1));
    const helloReady = joiner.ready();
    tail.step('downstream', new HelloEncoder().encode(helloReady.helloUpstream!).slice());
    joiner.advance(helloReady, { forwarded: 0, acksSent: true, repliesSent: 0 });
    // Sent without any ack: the window's worth, then nothing.
    let sentBytes = 0;
    for (let round = 0; round < 10; round++) {
      const ready = tail.ready();
      for (const frame of ready.forward) {
        sentBytes += frame.length;
        assert.equal(joiner.step('upstream', frame.slice()).status, 'applied');
      }
      tail.advance(ready, { forwarded: ready.forward.length, acksSent: true, repliesSent: 0, snapshotSent: true });
    }
    assert.ok(sentBytes > 0 && sentBytes <= 4096 + 1024, `${sentBytes} bytes ahead of the joiner's acks`);
    assert.equal(joiner.joinCaughtUp, false);
    // Its acks open the window again, until the catch-up ends.
    const { refusals } = run(tail, joiner);
    assert.deepEqual(refusals, []);
    assert.equal(joiner.joinCaughtUp, true);
    assert.equal(joiner.store.digest(), tail.store.digest());
  });

  test('it missed more writes than the store holds keys: the tail sends the smaller transfer, a snapshot, which it refuses', () => {
    const history = Array.from({ length: 6 }, (_, index) => batch(1, 1 + index * 4, 4));
    const tail = tailWith(history, new MemoryLog());
    assert.equal(tail.store.size, 5);
    const joiner = resumedJoiner(history.slice(0, 2));
    const { kinds, refusals } = run(tail, joiner);
    assert.equal(kinds[0], MessageKind.snapshot, '16 writes missed, 5 keys: a copy is smaller');
    assert.deepEqual(refusals, [ErrorCode.logDiverged]);
  });

  test('its last batch ordered in another epoch (it was a head the chain went on without): it is sent a snapshot and refuses it', () => {
    const tail = tailWith([batch(1, 1, 2), batch(2, 3, 3, 'chain')], new MemoryLog());
    const joiner = resumedJoiner([batch(1, 1, 2), batch(1, 3, 3, 'lost')]);
    const { kinds, refusals } = run(tail, joiner);
    assert.equal(kinds[0], MessageKind.snapshot);
    assert.deepEqual(refusals, [ErrorCode.logDiverged]);
    assert.equal(joiner.joinCaughtUp, false);
  });
});
