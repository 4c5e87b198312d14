/**
 * A replica's log alone on this machine's disk (workers/replica-log.ts, which the engine does not use
 * yet): batches of N writes (16 B keys, 100 B values) appended and committed one batch per commit,
 * in `fsync` mode (one fdatasync per commit: group commit's unit) and in `async` mode (synced every
 * 100 ms), for batch sizes from one write to a full batch. What it shows: how many writes a second
 * one replica can make durable, and how much of a commit is the fdatasync.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../native-free-core/store.js';
import { FORMAT_RECORD_LIMITS, WriteBatchEncoder, WriteBatchView } from '../native-free-core/wire/codec.js';
import { nativeCrc32 } from '../workers/native-crc32.js';
import { ReplicaLog, type LogDurability } from '../workers/replica-log.js';
import { formatRate, printTable, type Environment } from '../src/bench/harness.js';
import { record } from './ledger.js';

export interface LogRow {
  durability: LogDurability;
  writesPerBatch: number;
  writesPerSecond: number;
  commitsPerSecond: number;
  /** Mean time of one commit (write, and fdatasync in fsync mode), microseconds. */
  commitUs: number;
  syncs: number;
}

const BATCH_SIZES = [1, 64, 1024];

function measure(durability: LogDurability, writesPerBatch: number, seconds: number): LogRow {
  const directory = mkdtempSync(join(tmpdir(), 'dabba-log-bench-'));
  try {
    const { log } = ReplicaLog.open(
      { directory, durability, segmentBytesMax: 64 * 1024 * 1024, frameBytesMax: 1024 * 1024, limits: FORMAT_RECORD_LIMITS, syncIntervalMs: 100 },
      new Store(),
    );
    const encoder = new WriteBatchEncoder({ writesMax: writesPerBatch, payloadBytesMax: writesPerBatch * 128 }, nativeCrc32);
    const view = new WriteBatchView();
    const key = Buffer.from('key-000000000000');
    const value = Buffer.alloc(100, 7);
    let seq = 0;
    let commits = 0;
    let commitMs = 0;
    const started = performance.now();
    while (performance.now() - started < seconds * 1000) {
      encoder.begin(1, seq + 1);
      for (let index = 0; index < writesPerBatch; index++) encoder.addPut(key, 0, key.length, value, 0, value.length);
      const frame = encoder.finish();
      view.open(frame);
      view.stamp(1, seq + 1);
      log.append(frame, seq + 1, view.count);
      seq += writesPerBatch;
      const before = performance.now();
      log.commit();
      commitMs += performance.now() - before;
      commits++;
    }
    const elapsed = (performance.now() - started) / 1000;
    log.close();
    return { durability, writesPerBatch, writesPerSecond: seq / elapsed, commitsPerSecond: commits / elapsed, commitUs: (commitMs * 1000) / commits, syncs: log.syncs };
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

export function logBench(env: Environment, seconds: number, log: (line: string) => void): LogRow[] {
  const rows: LogRow[] = [];
  for (const durability of ['fsync', 'async'] as const) {
    for (const writesPerBatch of BATCH_SIZES) {
      const row = measure(durability, writesPerBatch, seconds);
      rows.push(row);
      record('log', row, env);
      log(`  ${durability}, ${writesPerBatch} writes per commit: ${formatRate(row.writesPerSecond)}, ${row.commitUs.toFixed(0)} us per commit`);
    }
  }
  printTable(
    `A replica's log alone (${tmpdir()}; one commit per batch; 16 B keys, 100 B values)`,
    ['durability', 'writes per commit', 'writes/s', 'commits/s', 'us per commit', 'fdatasyncs'],
    rows.map((row) => [row.durability, row.writesPerBatch, formatRate(row.writesPerSecond), formatRate(row.commitsPerSecond), row.commitUs.toFixed(0), row.syncs]),
  );
  return rows;
}
