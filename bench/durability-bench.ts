/**
 * Durability modes against memory, in one process: 3 replicas, 100 B values, closed loop, the
 * chain's logs on this machine's disk (os.tmpdir()). `memory`, `async` (100 ms sync interval) and
 * `fsync` run alternated, run by run (medians; this machine is shared and noisy, so the ratios
 * within a run are what count). Reports writes/s, each mode's ratio to memory, fdatasyncs per
 * second and per replica, writes per fdatasync (group commit), and log bytes per write per replica.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createChain, type Durability } from '../src/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { record } from './ledger.js';

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

export async function durabilityBench(env: Environment, seconds: number, runs: number, log: (line: string) => void): Promise<DurabilityRow[]> {
  const all: DurabilityRow[] = [];
  for (let run = 1; run <= runs; run++) {
    let memory = 0;
    for (const durability of MODES) {
      const row = await measure(durability, seconds);
      if (durability === 'memory') memory = row.writesPerSecond;
      all.push({ ...row, ratioToMemory: row.writesPerSecond / memory });
      log(`  run ${run}, ${durability}: ${formatRate(row.writesPerSecond)} (${(row.writesPerSecond / memory).toFixed(2)}x memory), ${row.syncsPerSecond.toFixed(0)} fdatasyncs/s`);
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
  for (const row of rows) record('durability', { ...row, runs }, env);
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
  return rows;
}
