/**
 * Online join under load: a 2-replica chain holding N keys (100 B values) in a closed loop; after
 * 1 s, addReplica(). Reported: how long the join took (snapshot, catch-up, handoff) and write
 * throughput during the join, against half a second before it (2 replicas) and half a second
 * after it (the 3 replicas it made).
 */
import { createChain } from '../src/index.js';
import { makeKeys, makeValue, runClosedLoop } from '../src/load.js';
import { formatRate, printTable, record, type Environment } from './harness.js';

/** How long the load goes on after the join starts; a join must finish within it. */
const LOAD_AFTER_START_MS = 15_000;

export interface JoinRow {
  keys: number;
  joinMs: number;
  writesPerSecondBefore: number;
  writesPerSecondDuring: number;
  /** The same load on the 3-replica chain the join produced, measured right after it. */
  writesPerSecondAfter: number;
}

export async function joinBench(env: Environment, keyCounts: number[], log: (line: string) => void): Promise<JoinRow[]> {
  const rows: JoinRow[] = [];
  for (const keyCount of keyCounts) {
    const chain = createChain({ replicas: 2 });
    try {
      // Load the state: every key once.
      const keys = makeKeys(keyCount, 16);
      const value = makeValue(100);
      for (let start = 0; start < keyCount; start += 4096) {
        let last: Promise<void> | undefined;
        for (let index = start; index < Math.min(keyCount, start + 4096); index++) last = chain.put(keys[index]!, value);
        await last;
      }
      const load = runClosedLoop(chain, { durationMs: 1000 + LOAD_AFTER_START_MS, keySpace: keyCount });
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const before = chain.stats().writesAcknowledged;
      const beforeAt = performance.now();
      await new Promise((resolve) => setTimeout(resolve, 500));
      const rateBefore = ((chain.stats().writesAcknowledged - before) * 1000) / (performance.now() - beforeAt);
      const joinStarted = performance.now();
      const ackedAtStart = chain.stats().writesAcknowledged;
      let joinMs = Number.NaN;
      let rateDuring = Number.NaN;
      let rateAfter = Number.NaN;
      try {
        await chain.addReplica();
        joinMs = performance.now() - joinStarted;
        rateDuring = ((chain.stats().writesAcknowledged - ackedAtStart) * 1000) / joinMs;
        await new Promise((resolve) => setTimeout(resolve, 200));
        const after = chain.stats().writesAcknowledged;
        const afterAt = performance.now();
        await new Promise((resolve) => setTimeout(resolve, 500));
        rateAfter = ((chain.stats().writesAcknowledged - after) * 1000) / (performance.now() - afterAt);
      } finally {
        // The load must finish before the chain closes, whatever happened to the join.
        await load;
      }
      const row: JoinRow = { keys: keyCount, joinMs, writesPerSecondBefore: rateBefore, writesPerSecondDuring: rateDuring, writesPerSecondAfter: rateAfter };
      rows.push(row);
      log(
        `  ${keyCount} keys: joined in ${joinMs.toFixed(0)} ms, ${formatRate(rateDuring)} during ` +
          `(${formatRate(rateBefore)} before, ${formatRate(rateAfter)} after)`,
      );
    } finally {
      await chain.close();
    }
  }
  for (const row of rows) record('join', row, env);
  printTable(
    'Online join under closed-loop load (2 replicas + 1 joining, 100 B values)',
    ['keys', 'join time', 'before (2 replicas)', 'during join', 'after (3 replicas)', 'during/before', 'during/after'],
    rows.map((row) => [
      String(row.keys),
      `${row.joinMs.toFixed(0)} ms`,
      formatRate(row.writesPerSecondBefore),
      formatRate(row.writesPerSecondDuring),
      formatRate(row.writesPerSecondAfter),
      (row.writesPerSecondDuring / row.writesPerSecondBefore).toFixed(2),
      (row.writesPerSecondDuring / row.writesPerSecondAfter).toFixed(2),
    ]),
  );
  return rows;
}
