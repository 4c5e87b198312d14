/**
 * A replica's log on disk (workers/replica-log.ts), against the real file system: what is
 * committed reads back after a reopen, across segment files; a torn end (a file cut short) is
 * truncated and appending goes on after it; damage before the end refuses to open, naming the file
 * and the offset; and a writer SIGKILLed while appending in `fsync` mode, three times over, loses
 * nothing it reported durable.
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
import { FORMAT_RECORD_LIMITS } from '../native-free-core/wire/codec.js';
import { ReplicaLog, type ReplicaLogOptions } from '../workers/replica-log.js';
import { ChainHarness } from './helpers/chain-harness.js';

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
    log.append(frame);
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
  for (const frame of frames.slice(0, half)) log.append(frame);
  log.close();
  const [segment] = readdirSync(directory);
  const path = join(directory, segment!);
  truncateSync(path, statSync(path).size - 5); // a crash in the middle of the last record
  const { log: reopened, recovered } = ReplicaLog.open(optionsIn(directory, { segmentBytesMax: 1 << 20 }), new Store());
  assert.notEqual(recovered.tornAt, null);
  // The last batch is gone; the writer (a replica catching up) appends it and the rest again.
  for (const frame of frames.slice(half - 1)) reopened.append(frame);
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
  for (const frame of frames) log.append(frame);
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
