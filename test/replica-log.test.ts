/**
 * A replica's log on disk (workers/replica-log.ts), against the real file system: what is
 * committed reads back after a reopen, across segment files; a torn end (a file cut short) is
 * truncated and appending goes on after it; damage before the end refuses to open, naming the file
 * and the offset; a checkpoint plus the log after it is the whole store, and deletes what it covers;
 * and a writer SIGKILLed while appending in `fsync` mode, three times over, loses nothing it reported
 * durable.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isDabbaError } from '../native-free-core/errors.js';
import { Store } from '../native-free-core/store.js';
import { applyBatch } from '../native-free-core/chain/apply-batch.js';
import { FORMAT_RECORD_LIMITS, WriteBatchView } from '../native-free-core/wire/codec.js';
import { readCommittedMark, ReplicaLog, type ReplicaLogOptions } from '../workers/replica-log.js';
import { ChainHarness } from './helpers/chain-harness.js';

/** Appends a stamped batch as a replica does, with the seq range it checked. */
function appendTo(log: ReplicaLog, frame: Uint8Array): void {
  const view = new WriteBatchView();
  assert.equal(view.open(frame), null);
  log.append(frame, view.firstSeq, view.count);
}

function optionsIn(directory: string, overrides: Partial<ReplicaLogOptions> = {}): ReplicaLogOptions {
  return { directory, durability: 'fsync', segmentBytesMax: 8 * 1024, frameBytesMax: 4 * 1024, limits: FORMAT_RECORD_LIMITS, syncIntervalMs: 100, ...overrides };
}

/** The batches a chain's tail applied, stamped, in order, and the tail itself. */
function tailBatches(seed: number): { frames: Uint8Array[]; harness: ChainHarness } {
  const harness = new ChainHarness({ replicas: 2, seed });
  const frames: Uint8Array[] = [];
  const step = harness.tail.step.bind(harness.tail);
  harness.tail.step = (source, frame) => {
    const result = step(source, frame);
    if (source === 'upstream' && result.status === 'applied') frames.push(frame.slice());
    return result;
  };
  for (let round = 0; round < 60; round++) harness.submit(1 + (round % 9), 80);
  harness.settle();
  return { frames, harness };
}

function withDirectory(run: (directory: string) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const directory = mkdtempSync(join(tmpdir(), 'dabba-log-'));
    try {
      await run(directory);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  };
}

test('committed batches read back after a reopen, across segment files', withDirectory((directory) => {
  const { frames, harness } = tailBatches(1);
  const { log } = ReplicaLog.open(optionsIn(directory), new Store());
  frames.forEach((frame, index) => {
    appendTo(log, frame);
    if (index % 4 === 3) log.commit();
  });
  log.close();
  assert.ok(readdirSync(directory).length >= 2, `segments rotate (${readdirSync(directory).join(' ')})`);
  const store = new Store();
  const { log: reopened, recovered } = ReplicaLog.open(optionsIn(directory), store);
  reopened.close();
  assert.equal(recovered.appliedSeq, harness.tail.appliedSeq);
  assert.equal(recovered.tornAt, null);
  assert.equal(store.digest(), harness.tail.store.digest());
}));

test('a torn end is truncated and appending goes on after it', withDirectory((directory) => {
  const { frames, harness } = tailBatches(2);
  const half = Math.floor(frames.length / 2);
  const { log } = ReplicaLog.open(optionsIn(directory, { segmentBytesMax: 1 << 20 }), new Store());
  for (const frame of frames.slice(0, half)) appendTo(log, frame);
  log.close();
  const [segment] = readdirSync(directory);
  const path = join(directory, segment!);
  truncateSync(path, statSync(path).size - 5); // a crash in the middle of the last record
  const { log: reopened, recovered } = ReplicaLog.open(optionsIn(directory, { segmentBytesMax: 1 << 20 }), new Store());
  assert.notEqual(recovered.tornAt, null);
  // The last batch is gone; the writer (a replica catching up) appends it and the rest again.
  for (const frame of frames.slice(half - 1)) appendTo(reopened, frame);
  reopened.close();
  const store = new Store();
  const { log: last, recovered: again } = ReplicaLog.open(optionsIn(directory, { segmentBytesMax: 1 << 20 }), store);
  last.close();
  assert.equal(again.tornAt, null);
  assert.equal(again.appliedSeq, harness.tail.appliedSeq);
  assert.equal(store.digest(), harness.tail.store.digest());
}));

test('damage before the end refuses to open, naming the file and the offset', withDirectory((directory) => {
  const { frames } = tailBatches(3);
  const { log } = ReplicaLog.open(optionsIn(directory, { segmentBytesMax: 1 << 20 }), new Store());
  for (const frame of frames) appendTo(log, frame);
  log.close();
  const [segment] = readdirSync(directory);
  const path = join(directory, segment!);
  const bytes = readFileSync(path);
  bytes[200]! ^= 0x08;
  writeFileSync(path, bytes);
  assert.throws(
    () => ReplicaLog.open(optionsIn(directory, { segmentBytesMax: 1 << 20 }), new Store()),
    (error: unknown) => isDabbaError(error, 'DABBA_ERR_CORRUPT' as never) && error.message.includes(path) && /damaged at offset \d+/.test(error.message),
  );
}));

test('a writer killed with SIGKILL while appending in fsync mode loses nothing it reported durable, three times over', withDirectory(async (directory) => {
  let reported = 0;
  for (let round = 1; round <= 3; round++) {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/log-writer.ts', directory], { stdio: ['ignore', 'pipe', 'inherit'] });
    let commits = 0;
    let buffered = '';
    await new Promise<void>((resolve) => {
      child.stdout.setEncoding('utf8').on('data', (text: string) => {
        buffered += text;
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        for (const line of lines) {
          reported = Math.max(reported, Number(line));
          if (++commits === 300) resolve();
        }
      });
    });
    const exited = once(child, 'exit');
    process.kill(child.pid!, 'SIGKILL');
    await exited;
    const store = new Store();
    const { log, recovered } = ReplicaLog.open(optionsIn(directory, { segmentBytesMax: 64 * 1024, frameBytesMax: 8 * 1024 }), store);
    log.close();
    assert.ok(recovered.appliedSeq >= reported, `round ${round}: recovered through ${recovered.appliedSeq}, the writer reported ${reported} durable`);
    assert.ok(store.size > 0);
  }
}));

test('a checkpoint plus the log after it is the whole store, and the segments it covers are deleted', withDirectory((directory) => {
  const { frames, harness } = tailBatches(4);
  const options = optionsIn(directory);
  const { log } = ReplicaLog.open(options, new Store());
  // The replica's own store, kept as it applies each batch (what a checkpoint is taken of).
  const live = new Store();
  const marks = new Map<number, number>();
  const view = new WriteBatchView();
  let appliedSeq = 0;
  let checkpointSeq = 0;
  const half = Math.floor(frames.length * 0.7);
  frames.forEach((frame, index) => {
    appendTo(log, frame);
    assert.equal(view.open(frame), null);
    applyBatch(live, view);
    appliedSeq = view.firstSeq + view.count - 1;
    marks.set(view.clientId, view.firstClientSeq + view.count - 1);
    if (index % 5 === 4) log.commit();
    if (index === half) {
      log.checkpoint({ store: live, epoch: 1, appliedSeq, clientHighWater: marks }, 64 * 1024);
      checkpointSeq = appliedSeq;
    }
  });
  log.close();
  const names = readdirSync(directory);
  assert.deepEqual(names.filter((name) => name.endsWith('.checkpoint')), [`${String(checkpointSeq).padStart(20, '0')}.checkpoint`]);
  assert.ok(names.filter((name) => name.endsWith('.log')).every((name) => Number(name.slice(0, 20)) > 1), `the first segments are gone: ${names.join(' ')}`);
  writeFileSync(join(directory, 'stray.checkpoint.tmp'), 'a checkpoint a crash cut short');
  const store = new Store();
  const { log: reopened, recovered } = ReplicaLog.open(options, store, 64 * 1024);
  reopened.close();
  assert.equal(recovered.checkpointSeq, checkpointSeq);
  assert.equal(recovered.appliedSeq, harness.tail.appliedSeq);
  assert.equal(store.digest(), harness.tail.store.digest(), 'checkpoint + replay = the live store');
  assert.equal(recovered.clientHighWater.get(1), harness.tail.clientHighWaterMark(1));
  assert.ok(!readdirSync(directory).includes('stray.checkpoint.tmp'), 'an unfinished checkpoint is removed');
  // A damaged checkpoint is not trusted.
  const [checkpoint] = readdirSync(directory).filter((name) => name.endsWith('.checkpoint'));
  const path = join(directory, checkpoint!);
  const bytes = readFileSync(path);
  bytes[bytes.length - 3]! ^= 0x01;
  writeFileSync(path, bytes);
  assert.throws(() => ReplicaLog.open(options, new Store(), 64 * 1024), (error: unknown) => isDabbaError(error) && error.message.startsWith(`checkpoint ${path} is damaged at offset`));
}));

test('a log opened only through its committed mark (a joiner adopting it) ends there: later segments are removed, the rest is cut, and appending goes on from there', withDirectory((directory) => {
  const { frames } = tailBatches(7);
  const log = ReplicaLog.open(optionsIn(directory, { segmentBytesMax: 4 * 1024 + 64 }), new Store()).log;
  for (const frame of frames) {
    appendTo(log, frame);
    assert.ok(log.commit());
  }
  const view = new WriteBatchView();
  const ends = frames.map((frame) => (view.open(frame), view.firstSeq + view.count - 1));
  const mark = ends[Math.floor(frames.length / 3)]!;
  log.markCommitted(mark, true);
  log.markCommitted(ends.at(-1)!, false); // within 100 ms of the last: not written (it may lag, never lead)
  log.close();
  assert.equal(readCommittedMark(directory), mark);
  const segmentsBefore = readdirSync(directory).filter((name) => name.endsWith('.log')).length;
  assert.ok(segmentsBefore > 2, `${segmentsBefore} segments`);

  const store = new Store();
  const { log: reopened, recovered } = ReplicaLog.open(optionsIn(directory, { stopAfterSeq: mark }), store);
  assert.equal(recovered.appliedSeq, mark);
  assert.ok(recovered.cutAt !== null);
  const expected = new Store();
  for (const frame of frames.slice(0, Math.floor(frames.length / 3) + 1)) {
    view.open(frame);
    applyBatch(expected, view);
  }
  assert.equal(store.digest(), expected.digest(), 'the store holds the batches through the mark, and no later one');
  assert.ok(readdirSync(directory).filter((name) => name.endsWith('.log')).length < segmentsBefore, 'segments after the cut are gone');
  appendTo(reopened, frames[Math.floor(frames.length / 3) + 1]!);
  assert.ok(reopened.commit());
  reopened.close();
  assert.equal(ReplicaLog.open(optionsIn(directory), new Store()).recovered.appliedSeq, ends[Math.floor(frames.length / 3) + 1], 'the log goes on after the cut, with no gap');
}));
