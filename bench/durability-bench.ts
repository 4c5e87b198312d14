/**
 * Durability modes against memory, in one process: 3 replicas, 100 B values, closed loop, the
 * chain's logs on this machine's disk (os.tmpdir()). `memory`, `async` (100 ms sync interval) and
 * `fsync` run alternated, run by run (medians; this machine is shared and noisy, so the ratios
 * within a run are what count). Reports writes/s, each mode's ratio to memory, fdatasyncs per
 * second and per replica, writes per fdatasync (group commit), and log bytes per write per replica.
 * Beside them, in the same runs, two systems that also keep every acknowledged write on disk: a
 * 3-member etcd (an fsync per Raft batch on a majority) and Redis, a primary and 2 replicas with
 * `appendfsync always`, each window of SETs followed by `WAIT 2 0`.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createChain, type Durability } from '../src/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { record } from './ledger.js';
import { etcdCluster } from '../src/bench/peers/etcd.js';
import { MissingPackageError } from '../src/bench/peers/optional-package.js';
import { redisReplicated } from '../src/bench/peers/redis.js';
import { MissingBinaryError } from '../src/bench/peers/servers.js';

/** A peer measured in the same runs as dabba's `fsync` mode. */
export interface DurabilityPeerRow {
  system: string;
  /** What its acknowledged write survives. */
  guarantee: string;
  writesPerSecond: number;
  /** dabba `fsync` mode's writes/s over this peer's, run by run, median. */
  fsyncRatio: number;
}

export interface DurabilityResult {
  modes: DurabilityRow[];
  peers: DurabilityPeerRow[];
  skipped: string[];
}

interface DurablePeer {
  system: string;
  guarantee: string;
  measure(seconds: number): Promise<number>;
}

const PEERS: readonly DurablePeer[] = [
  {
    system: 'etcd, 3 members (256 puts in flight)',
    guarantee: 'on disk on a majority (Raft: fsync before acking)',
    measure: async (seconds) => (await etcdCluster({ seconds, valueBytes: 100 })).writesPerSecond,
  },
  {
    system: 'Redis primary + 2 replicas, appendfsync always, WAIT 2 0 (2 x 2048 pipelined)',
    guarantee: "on the primary's disk, in the replicas' memory (WAITAOF, which waits for replicas' fsync, is Redis 7.2; Debian 12 has 7.0)",
    measure: async (seconds) => (await redisReplicated({ seconds, valueBytes: 100, appendFsync: 'always' })).writesPerSecond,
  },
];

export interface DurabilityRow {
  durability: Durability;
  writesPerSecond: number;
  /** Its writes/s over memory's in the same run. */
  ratioToMemory: number;
  /** fdatasyncs per second, per replica (the busiest). */
  syncsPerSecond: number;
  writesPerSync: number;
  /** Log bytes written per acknowledged write, per replica. */
  logBytesPerWrite: number;
}

const MODES: readonly Durability[] = ['memory', 'async', 'fsync'];

async function measure(durability: Durability, seconds: number): Promise<Omit<DurabilityRow, 'ratioToMemory'>> {
  const directory = durability === 'memory' ? null : mkdtempSync(join(tmpdir(), 'dabba-durability-bench-'));
  const chain = createChain({ replicas: 3, ...(directory === null ? {} : { dataDir: directory, durability }) });
  try {
    await runClosedLoop(chain, { durationMs: 700, writeWindow: 4096 });
    const before = chain.stats();
    const report = await runClosedLoop(chain, { durationMs: seconds * 1000, writeWindow: 4096 });
    const after = chain.stats();
    const writes = after.writesAcknowledged - before.writesAcknowledged;
    const perReplica = after.replicas.map((replica, index) => ({
      syncs: replica.logSyncs - before.replicas[index]!.logSyncs,
      bytes: replica.logBytesWritten - before.replicas[index]!.logBytesWritten,
    }));
    const syncs = Math.max(...perReplica.map((replica) => replica.syncs));
    return {
      durability,
      writesPerSecond: report.writesPerSecond,
      syncsPerSecond: syncs / seconds,
      writesPerSync: syncs === 0 ? 0 : writes / syncs,
      logBytesPerWrite: median(perReplica.map((replica) => replica.bytes)) / writes,
    };
  } finally {
    await chain.close();
    if (directory !== null) rmSync(directory, { recursive: true, force: true });
  }
}

export async function durabilityBench(env: Environment, seconds: number, runs: number, log: (line: string) => void): Promise<DurabilityResult> {
  const all: DurabilityRow[] = [];
  const peerRuns = new Map<string, { rates: number[]; ratios: number[] }>();
  const skipped: string[] = [];
  for (let run = 1; run <= runs; run++) {
    let memory = 0;
    let fsync = 0;
    for (const durability of MODES) {
      const row = await measure(durability, seconds);
      if (durability === 'memory') memory = row.writesPerSecond;
      if (durability === 'fsync') fsync = row.writesPerSecond;
      all.push({ ...row, ratioToMemory: row.writesPerSecond / memory });
      log(`  run ${run}, ${durability}: ${formatRate(row.writesPerSecond)} (${(row.writesPerSecond / memory).toFixed(2)}x memory), ${row.syncsPerSecond.toFixed(0)} fdatasyncs/s`);
    }
    for (const peer of PEERS) {
      if (skipped.some((reason) => reason.startsWith(peer.system))) continue;
      try {
        const rate = await peer.measure(seconds);
        const entry = peerRuns.get(peer.system) ?? { rates: [], ratios: [] };
        entry.rates.push(rate);
        entry.ratios.push(fsync / rate);
        peerRuns.set(peer.system, entry);
        log(`  run ${run}, ${peer.system}: ${formatRate(rate)} (dabba fsync ${(fsync / rate).toFixed(2)}x)`);
      } catch (error) {
        if (!(error instanceof MissingBinaryError || error instanceof MissingPackageError)) throw error;
        skipped.push(`${peer.system}: ${error.message}`);
        log(`  skipping ${peer.system}: ${error.message}`);
      }
    }
  }
  const rows = MODES.map((durability) => {
    const of = all.filter((row) => row.durability === durability);
    return {
      durability,
      writesPerSecond: median(of.map((row) => row.writesPerSecond)),
      ratioToMemory: median(of.map((row) => row.ratioToMemory)),
      syncsPerSecond: median(of.map((row) => row.syncsPerSecond)),
      writesPerSync: median(of.map((row) => row.writesPerSync)),
      logBytesPerWrite: median(of.map((row) => row.logBytesPerWrite)),
    };
  });
  const peers: DurabilityPeerRow[] = PEERS.filter((peer) => peerRuns.has(peer.system)).map((peer) => ({
    system: peer.system,
    guarantee: peer.guarantee,
    writesPerSecond: median(peerRuns.get(peer.system)!.rates),
    fsyncRatio: median(peerRuns.get(peer.system)!.ratios),
  }));
  for (const row of rows) record('durability', { ...row, runs }, env);
  for (const row of peers) record('durability-peers', { ...row, runs }, env);
  printTable(
    `Durability modes in one process (3 replicas, 100 B values, closed loop, logs in ${tmpdir()}; medians of ${runs} alternated runs)`,
    ['durability', 'writes/s', 'x memory', 'fdatasyncs/s per replica', 'writes per fdatasync', 'log bytes per write per replica'],
    rows.map((row) => [
      row.durability,
      formatRate(row.writesPerSecond),
      row.ratioToMemory.toFixed(2),
      row.syncsPerSecond.toFixed(0),
      row.writesPerSync === 0 ? '-' : row.writesPerSync.toFixed(0),
      row.logBytesPerWrite.toFixed(0),
    ]),
  );
  printTable(
    `Beside dabba's fsync mode, in the same runs (100 B values, on this machine's disk; medians of ${runs})`,
    ['system', 'an acknowledged write is', 'writes/s', 'dabba fsync / system'],
    [
      ['dabba, 3 replicas, fsync', 'on disk on every replica (fdatasync before forwarding or acking)', formatRate(rows[2]!.writesPerSecond), '1.00'],
      ...peers.map((row) => [row.system, row.guarantee, formatRate(row.writesPerSecond), row.fsyncRatio.toFixed(2)]),
    ],
  );
  return { modes: rows, peers, skipped };
}

export interface DurabilitySoakRow {
  seconds: number;
  writesPerSecond: number;
  /** The data directory's size, in MiB: sampled every second, the largest, and at the end. */
  diskMaxMiB: number;
  diskEndMiB: number;
  /** The live data: the store's bytes on one replica at the end. */
  storeMiB: number;
  /** Log bytes each replica wrote (median), and the checkpoints each took. */
  logWrittenMiB: number;
  checkpoints: number;
}

/** Bytes of every file under `directory`. */
function directoryBytes(directory: string): number {
  let total = 0;
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    const path = join(directory, entry.name);
    // A checkpoint may be renamed or a segment deleted between the listing and the stat.
    if (entry.isDirectory()) total += directoryBytes(path);
    else total += statSync(path, { throwIfNoEntry: false })?.size ?? 0;
  }
  return total;
}

/**
 * `fsync` mode under closed-loop load for `seconds` (100 B values over the load's key space): the
 * data directory's size, sampled each second, against the live data and what the logs wrote. With
 * checkpoints it stays bounded by the log written between two checkpoints plus the store's copies.
 */
export async function durabilitySoak(env: Environment, seconds: number, log: (line: string) => void): Promise<DurabilitySoakRow> {
  const directory = mkdtempSync(join(tmpdir(), 'dabba-durability-soak-'));
  const chain = createChain({ replicas: 3, dataDir: directory, durability: 'fsync' });
  let diskMax = 0;
  const sampler = setInterval(() => {
    diskMax = Math.max(diskMax, directoryBytes(directory));
  }, 1000);
  try {
    const report = await runClosedLoop(chain, {
      durationMs: seconds * 1000,
      writeWindow: 4096,
      onProgress: (progress) => {
        if (Math.round(progress.elapsedMs / 1000) % 10 === 0) log(`  ${Math.round(progress.elapsedMs / 1000)} s: ${formatRate(progress.writesPerSecond)}, disk ${(directoryBytes(directory) / MIB).toFixed(0)} MiB`);
      },
    });
    const stats = chain.stats();
    const diskEnd = directoryBytes(directory);
    const row: DurabilitySoakRow = {
      seconds,
      writesPerSecond: report.writesPerSecond,
      diskMaxMiB: Math.max(diskMax, diskEnd) / MIB,
      diskEndMiB: diskEnd / MIB,
      storeMiB: stats.replicas[0]!.storeHeapBytes / MIB,
      logWrittenMiB: median(stats.replicas.map((replica) => replica.logBytesWritten)) / MIB,
      checkpoints: median(stats.replicas.map((replica) => replica.logCheckpoints)),
    };
    record('durability-soak', { ...row }, env);
    printTable(
      `Soak: ${seconds} s closed loop, 3 replicas, fsync, 100 B values (data directory in ${tmpdir()})`,
      ['writes/s', 'log written per replica', 'checkpoints per replica', 'disk use, largest', 'disk use at the end', 'store per replica'],
      [[formatRate(row.writesPerSecond), `${row.logWrittenMiB.toFixed(0)} MiB`, row.checkpoints, `${row.diskMaxMiB.toFixed(0)} MiB`, `${row.diskEndMiB.toFixed(0)} MiB`, `${row.storeMiB.toFixed(0)} MiB`]],
    );
    return row;
  } finally {
    clearInterval(sampler);
    await chain.close();
    rmSync(directory, { recursive: true, force: true });
  }
}

const MIB = 1024 * 1024;
