/**
 * Replaying a replica's log (native-free-core/log/replay.ts): the batches a live replica applied,
 * written to segments and replayed into an empty store, give the same digest, applied sequence and
 * client high-water marks; a snapshot's prefix is skipped; a torn end of the last segment is
 * dropped; a torn end elsewhere, a gap and a damaged batch stop the replay, named by segment and
 * offset.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32 } from '../native-free-core/checksum.js';
import { encodeSegment, recordBytes } from '../native-free-core/log/segment.js';
import { replaySegments, type SegmentBytes } from '../native-free-core/log/replay.js';
import { Store } from '../native-free-core/store.js';
import { FORMAT_RECORD_LIMITS, WriteBatchView } from '../native-free-core/wire/codec.js';
import { ChainHarness } from './helpers/chain-harness.js';
import { mulberry32 } from './helpers/prng.js';

const OPTIONS = { crc: crc32, frameBytesMax: 1 << 20, limits: FORMAT_RECORD_LIMITS };

/** Runs a 3-replica chain and returns, per node, the batches it applied (stamped, in order). */
function appliedBatches(seed: number): { harness: ChainHarness; logs: Uint8Array[][] } {
  const harness = new ChainHarness({ replicas: 3, seed, inflightBytesMax: 16 * 1024, inflightBatchesMax: 8 });
  const logs: Uint8Array[][] = harness.nodes.map(() => []);
  harness.nodes.forEach((node, index) => {
    const step = node.step.bind(node);
    node.step = (source, frame) => {
      const result = step(source, frame);
      if (source === 'upstream' && result.status === 'applied') logs[index]!.push(frame.slice()); // stamped by now
      return result;
    };
  });
  for (let round = 0; round < 40; round++) {
    harness.submit(1 + ((seed + round * 7) % 23), 60);
    for (let steps = Math.floor(harness.random() * 8); steps > 0 && harness.step(); steps--);
  }
  harness.settle();
  return { harness, logs };
}

/** Splits `frames` over segments at random record boundaries, as an appender rotating files would. */
function segmentsOf(frames: Uint8Array[], seed: number): SegmentBytes[] {
  const random = mulberry32(seed);
  const segments: SegmentBytes[] = [];
  let start = 0;
  while (start < frames.length) {
    const end = Math.min(frames.length, start + 1 + Math.floor(random() * 12));
    segments.push({ name: `segment-${segments.length}`, bytes: encodeSegment(frames.slice(start, end), crc32) });
    start = end;
  }
  return segments;
}

test("replaying a replica's log into an empty store gives its store, its sequence and its clients' high-water marks", () => {
  for (let seed = 1; seed <= 10; seed++) {
    const { harness, logs } = appliedBatches(seed);
    harness.nodes.forEach((node, index) => {
      const store = new Store();
      const result = replaySegments(segmentsOf(logs[index]!, seed), store, { ...OPTIONS, afterSeq: 0 });
      assert.equal(result.corrupt, null);
      assert.equal(result.tornAt, null);
      assert.equal(result.appliedSeq, node.appliedSeq, `seed ${seed}, node ${node.id}`);
      assert.equal(store.digest(), node.store.digest(), `seed ${seed}, node ${node.id}: the replayed store is the live one`);
      assert.equal(result.clientHighWater.get(1), node.clientHighWaterMark(1), "the head's exactly-once state comes back");
    });
  }
});

test("a snapshot's prefix is skipped: snapshot plus the rest of the log is the whole store", () => {
  const { harness, logs } = appliedBatches(3);
  const frames = logs[2]!;
  const half = Math.floor(frames.length / 2);
  // The "snapshot": the store after the first half, and the sequence it ends at.
  const store = new Store();
  const snapshot = replaySegments(segmentsOf(frames.slice(0, half), 5), store, { ...OPTIONS, afterSeq: 0 });
  // The log still holds a few batches the snapshot covers (it is trimmed only later).
  const result = replaySegments(segmentsOf(frames.slice(half - 3), 6), store, { ...OPTIONS, afterSeq: snapshot.appliedSeq });
  assert.equal(result.corrupt, null);
  assert.equal(result.appliedSeq, harness.tail.appliedSeq);
  assert.equal(store.digest(), harness.tail.store.digest());
});

test('keepRecent keeps the newest contiguous batches within its budget, ending at the applied seq', () => {
  const { logs } = appliedBatches(4);
  const frames = logs[0]!;
  const view = new WriteBatchView();
  for (const budget of [{ bytesMax: 1 << 20, batchesMax: 5 }, { bytesMax: 600, batchesMax: 1000 }, { bytesMax: 1 << 30, batchesMax: 1 << 20 }]) {
    const result = replaySegments(segmentsOf(frames, 7), new Store(), { ...OPTIONS, afterSeq: 0, keepRecent: budget });
    assert.ok(result.recent.length >= 1 && result.recent.length <= budget.batchesMax);
    assert.ok(result.recent.reduce((sum, frame) => sum + frame.length, 0) <= budget.bytesMax || result.recent.length === 0);
    let next = -1;
    for (const frame of result.recent) {
      assert.equal(view.open(frame), null);
      if (next >= 0) assert.equal(view.firstSeq, next, 'contiguous');
      next = view.firstSeq + view.count;
    }
    assert.equal(next - 1, result.appliedSeq, 'ending at the applied seq');
    assert.deepEqual([...result.recent.at(-1)!], [...frames.at(-1)!], 'the newest is the last logged');
  }
  assert.equal(replaySegments(segmentsOf(frames, 7), new Store(), { ...OPTIONS, afterSeq: 0 }).recent.length, 0, 'none unless asked');
  // A log that ends at its snapshot (a joiner's, before its first batch) has none to keep.
  const store = new Store();
  const snapshot = replaySegments(segmentsOf(frames, 8), store, { ...OPTIONS, afterSeq: 0 });
  const after = replaySegments([], store, { ...OPTIONS, afterSeq: snapshot.appliedSeq, keepRecent: { bytesMax: 1 << 20, batchesMax: 8 } });
  assert.deepEqual(after.recent, []);
});

test('a torn end of the last segment is dropped; anywhere else the replay stops and names the place', () => {
  const { harness, logs } = appliedBatches(4);
  const frames = logs[1]!;
  const segments = segmentsOf(frames, 7);
  const last = segments.at(-1)!;
  const lastFrame = frames.at(-1)!;
  const lastRecord = last.bytes.length - recordBytes(lastFrame.length);
  for (let cut = lastRecord + 1; cut < last.bytes.length - 1; cut += 3) {
    const store = new Store();
    const torn = [...segments.slice(0, -1), { ...last, bytes: last.bytes.subarray(0, cut) }];
    const result = replaySegments(torn, store, { ...OPTIONS, afterSeq: 0 });
    assert.equal(result.corrupt, null, `cut at ${cut}`);
    assert.deepEqual(result.tornAt && { segment: result.tornAt.segment, offset: result.tornAt.offset }, { segment: segments.length - 1, offset: lastRecord });
    assert.equal(result.appliedSeq, harness.nodes[1]!.appliedSeq - countOf(lastFrame), 'everything before the torn batch is applied');
  }
  // The same damage in a segment that is not the last: corruption.
  const first = segments[0]!;
  const cutFirst = [{ ...first, bytes: first.bytes.subarray(0, first.bytes.length - 5) }, ...segments.slice(1)];
  const stopped = replaySegments(cutFirst, new Store(), { ...OPTIONS, afterSeq: 0 });
  assert.equal(stopped.corrupt?.name, 'segment-0');
  assert.match(stopped.corrupt.reason, /torn end in a segment that is not the last/);
  // A batch missing from the middle of the log: a gap.
  const gap = replaySegments(segmentsOf([...frames.slice(0, 5), ...frames.slice(6)], 8), new Store(), { ...OPTIONS, afterSeq: 0 });
  assert.match(gap.corrupt?.reason ?? 'no problem found', /the log before it ends at/);
  // A batch whose own checksum fails although its record's CRC holds (damaged before it was logged).
  const damaged = frames.map((frame) => frame.slice());
  damaged[7]![damaged[7]!.length - 1]! ^= 1;
  const bad = replaySegments(segmentsOf(damaged, 9), new Store(), { ...OPTIONS, afterSeq: 0 });
  assert.match(bad.corrupt?.reason ?? 'no problem found', /checksum does not match/);
});

/** How many writes a logged batch holds. */
function countOf(frame: Uint8Array): number {
  const view = new WriteBatchView();
  assert.equal(view.open(frame), null);
  return view.count;
}
