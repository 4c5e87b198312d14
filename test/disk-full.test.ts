/**
 * A full disk (issue 13): on a small tmpfs of its own, a replica's log that runs out of space loses
 * nothing and half-writes nothing (ReplicaLog), and a durable chain whose disk fills refuses new
 * writes with DABBA_ERR_DISK_FULL while it keeps serving reads, then goes on by itself once space is
 * freed, with every acknowledged write there after a restart: first below its reserve (before any
 * write fails), then with no reserve at all (a write fails with ENOSPC, and is retried).
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { isDabbaError } from '../native-free-core/errors.js';
import { Store } from '../native-free-core/store.js';
import { FORMAT_RECORD_LIMITS, WriteBatchEncoder, WriteBatchView } from '../native-free-core/wire/codec.js';
import { createChain, type Chain, type DiskEvent } from '../src/index.js';
import { nativeCrc32 } from '../workers/native-crc32.js';
import { readCommittedMark, ReplicaLog } from '../workers/replica-log.js';
import { fillLeaving, mountTmpfs } from './helpers/tmpfs.js';

const MiB = 1024 * 1024;

test('a replica log out of space: commit() says so and keeps every batch; once space is freed it writes them all, and a reopen replays them', (t) => {
  const disk = mountTmpfs(4 * MiB);
  t.after(() => disk.unmount());
  const directory = join(disk.path, 'log');
  const options = { directory, durability: 'fsync' as const, segmentBytesMax: 256 * 1024, frameBytesMax: 8 * 1024, limits: FORMAT_RECORD_LIMITS, syncIntervalMs: 100 };
  const { log } = ReplicaLog.open(options, new Store());
  const filler = fillLeaving(disk.path, 96 * 1024);
  const encoder = new WriteBatchEncoder({ writesMax: 16, payloadBytesMax: 4096 }, nativeCrc32);
  const view = new WriteBatchView();
  let seq = 0;
  let refusedAt = 0;
  for (let batch = 0; batch < 400 && refusedAt === 0; batch++) {
    encoder.begin(1, seq + 1);
    for (let index = 0; index < 8; index++) {
      const key = Buffer.from(`k${seq + index}`);
      const value = Buffer.alloc(200, seq + index);
      encoder.addPut(key, 0, key.length, value, 0, value.length);
    }
    const frame = encoder.finish().slice();
    assert.equal(view.open(frame), null);
    view.stamp(1, seq + 1);
    log.append(frame, seq + 1, view.count);
    seq += view.count;
    if (!log.commit()) refusedAt = seq;
    if (batch === 0) log.markCommitted(seq, true);
  }
  assert.ok(refusedAt > 0, 'the disk filled up');
  assert.ok(log.syncedSeq < refusedAt, `nothing past ${log.syncedSeq} is counted durable`);
  // More batches come (a drain's worth): they wait too.
  for (let batch = 0; batch < 3; batch++) {
    encoder.begin(1, seq + 1);
    const key = Buffer.from(`late${batch}`);
    encoder.addPut(key, 0, key.length, Buffer.alloc(3000, 7), 0, 3000);
    const frame = encoder.finish().slice();
    assert.equal(view.open(frame), null);
    view.stamp(1, seq + 1);
    log.append(frame, seq + 1, view.count);
    seq += view.count;
  }
  assert.equal(log.commit(), false, 'still no room');
  // Not a byte left: the committed mark is not written (it may lag), and nothing throws.
  const rest = fillLeaving(disk.path, 0, 'rest');
  log.markCommitted(seq, true);
  assert.equal(readCommittedMark(directory), 8, 'the mark stays where it was');
  rmSync(rest);
  rmSync(filler);
  assert.equal(log.commit(), true, 'room again: everything written');
  assert.equal(log.syncedSeq, seq);
  log.close();
  const reopened = ReplicaLog.open(options, new Store());
  assert.equal(reopened.recovered.appliedSeq, seq, 'every batch reads back');
  assert.equal(reopened.recovered.tornAt, null, 'no half-written record was left in the log');
  reopened.log.close();
});

test('diskReserveBytes is a non-negative integer', () => {
  assert.throws(() => createChain({ dataDir: '/nonexistent/dabba', diskReserveBytes: -1 }), { code: 'DABBA_ERR_OUT_OF_RANGE' });
  assert.throws(() => createChain({ dataDir: '/nonexistent/dabba', diskReserveBytes: 1.5 }), { code: 'DABBA_ERR_INVALID_ARGUMENT' });
});

/** Batches of 500 small values, one after another, until the disk fills: how many were acknowledged, and the batch still waiting. */
async function writeUntilFull(chain: Chain, full: Promise<DiskEvent>): Promise<{ acknowledged: number; waiting: Promise<void> }> {
  let acknowledged = 0;
  const filled = full.then(() => 'full' as const);
  for (;;) {
    const entries = Array.from({ length: 500 }, (_, index) => [`k${acknowledged + index}`, Buffer.alloc(100, (acknowledged + index) % 251)] as const);
    const written = chain.putMany(entries);
    // Accepted before the disk filled: it waits for room (backpressure), it is not refused.
    if ((await Promise.race([written.then(() => 'written' as const), filled])) === 'full') return { acknowledged, waiting: written };
    acknowledged += entries.length;
  }
}

/** The replicas whose disk is full, as the 'disk' events tell, and a wait until none is. */
function trackDisks(chain: Chain): { full: Set<number>; filled: Promise<DiskEvent>; allRoomy(): Promise<void> } {
  const full = new Set<number>();
  let filled!: (event: DiskEvent) => void;
  let roomy: (() => void) | null = null;
  chain.on('disk', (event: DiskEvent) => {
    if (event.full) {
      full.add(event.replicaId);
      filled(event);
    } else if (full.delete(event.replicaId) && full.size === 0) {
      roomy?.();
    }
  });
  return {
    full,
    filled: new Promise((resolve) => (filled = resolve)),
    allRoomy: () => new Promise((resolve) => (full.size === 0 ? resolve() : (roomy = resolve))),
  };
}

for (const reserve of ['below its reserve', 'with no reserve: a write fails with ENOSPC'] as const) {
  test(`a durable chain whose disk fills (${reserve}) refuses writes with DABBA_ERR_DISK_FULL, serves reads, goes on once space is freed, and keeps every acknowledged write`, { timeout: 120_000 }, async (t) => {
    const disk = mountTmpfs(96 * MiB);
    const dataDir = join(disk.path, 'data');
    const diskReserveBytes = reserve === 'below its reserve' ? 24 * MiB : 0;
    let chain = await createChain({ replicas: 3, dataDir, durability: 'fsync', diskReserveBytes });
    t.after(async () => {
      await chain.close();
      disk.unmount();
    });
    chain.on('warning', () => undefined);
    // A full disk is no failure: every replica stays in the chain throughout.
    const reconfigurations: unknown[] = [];
    chain.on('reconfigured', (event) => reconfigurations.push(event));
    // Three replicas log the same writes: ~6 MiB of room is ~2 MiB of log each, ~15,000 writes.
    const filler = fillLeaving(disk.path, diskReserveBytes + 6 * MiB);
    const disks = trackDisks(chain);
    const { acknowledged, waiting } = await writeUntilFull(chain, disks.filled);
    assert.ok(acknowledged > 1000, `only ${acknowledged} writes before the disk filled`);
    const event = await disks.filled;
    assert.equal(event.chain, 0);
    assert.ok(chain.stats().replicas.some((replica) => replica.diskFull), 'stats show the full disk');
    const refusal = await chain.put('more', 'x').then(() => null, (error: unknown) => error);
    assert.ok(isDabbaError(refusal, 'DABBA_ERR_DISK_FULL'), `refused with ${String(refusal)}`);
    assert.match((refusal as Error).message, /disk of replica \d+ \(node \d+\) is full/);
    // Reads go on.
    assert.deepEqual(await chain.get(`k${acknowledged - 1}`), Buffer.alloc(100, (acknowledged - 1) % 251));
    // Space is freed: the chain goes on by itself, and the batch that waited is written.
    rmSync(filler);
    await disks.allRoomy();
    await waiting;
    await chain.put('after', 'room again');
    assert.deepEqual(reconfigurations, [], 'no replica failed');
    await chain.close();
    chain = await createChain({ replicas: 3, dataDir, durability: 'fsync', diskReserveBytes });
    for (const index of [0, Math.floor(acknowledged / 2), acknowledged - 1, acknowledged + 499]) {
      assert.deepEqual(await chain.get(`k${index}`), Buffer.alloc(100, index % 251), `write ${index} survived the restart`);
    }
    assert.equal((await chain.get('after'))?.toString(), 'room again');
    const digests = new Set((await chain.digests()).map((entry) => entry.digest));
    assert.equal(digests.size, 1, 'every replica holds the same');
  });
}
