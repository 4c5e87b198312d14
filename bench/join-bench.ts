/**
 * Online join under load: a 2-replica chain holding N keys (100 B values) in a closed loop; after
 * 1 s, addReplica(). Reported: how long the join took (snapshot, catch-up, handoff) and write
 * throughput during the join, against half a second before it (2 replicas) and half a second
 * after it (the 3 replicas it made). Runs are interleaved across state sizes; medians reported.
 */
import { createChain } from '../src/index.js';
import { makeKeys, makeValue, runClosedLoop } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { record } from './ledger.js';

/** How long the load may go on after the join starts; a join must finish within it. */
const JOIN_TIMEOUT_MS = 30_000;

export interface JoinRow {
  keys: number;
  joinMs: number;
  writesPerSecondBefore: number;
  writesPerSecondDuring: number;
  /** The same load on the 3-replica chain the join produced, measured right after it. */
  writesPerSecondAfter: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function measureJoin(keyCount: number): Promise<JoinRow> {
  const chain = createChain({ replicas: 2 });
  const stopLoad = new AbortController();
  try {
    // Load the state: every key once.
    const keys = makeKeys(keyCount, 16);
    const value = makeValue(100);
    for (let start = 0; start < keyCount; start += 4096) {
      let last: Promise<void> | undefined;
      for (let index = start; index < Math.min(keyCount, start + 4096); index++) last = chain.put(keys[index]!, value);
      await last;
    }
    const load = runClosedLoop(chain, { durationMs: 1500 + JOIN_TIMEOUT_MS, keySpace: keyCount, signal: stopLoad.signal });
    try {
      await sleep(1000);
      const before = chain.stats().writesAcknowledged;
      const beforeAt = performance.now();
      await sleep(500);
      const writesPerSecondBefore = ((chain.stats().writesAcknowledged - before) * 1000) / (performance.now() - beforeAt);
      const joinStarted = performance.now();
      const ackedAtStart = chain.stats().writesAcknowledged;
      await chain.addReplica();
      const joinMs = performance.now() - joinStarted;
      const writesPerSecondDuring = ((chain.stats().writesAcknowledged - ackedAtStart) * 1000) / joinMs;
      await sleep(200);
      const after = chain.stats().writesAcknowledged;
      const afterAt = performance.now();
      await sleep(500);
      const writesPerSecondAfter = ((chain.stats().writesAcknowledged - after) * 1000) / (performance.now() - afterAt);
      return { keys: keyCount, joinMs, writesPerSecondBefore, writesPerSecondDuring, writesPerSecondAfter };
    } finally {
      // The load must finish before the chain closes, whatever happened to the join.
      stopLoad.abort();
      await load;
    }
  } finally {
    await chain.close();
  }
}

export async function joinBench(env: Environment, keyCounts: number[], runs: number, log: (line: string) => void): Promise<JoinRow[]> {
  const runsByKeys = new Map<number, JoinRow[]>(keyCounts.map((keys) => [keys, []]));
  for (let run = 1; run <= runs; run++) {
    for (const keyCount of keyCounts) {
      const row = await measureJoin(keyCount);
      runsByKeys.get(keyCount)!.push(row);
      record('join', { ...row, run }, env);
      log(
        `  run ${run}, ${keyCount} keys: joined in ${row.joinMs.toFixed(0)} ms, ${formatRate(row.writesPerSecondDuring)} during ` +
          `(${formatRate(row.writesPerSecondBefore)} before, ${formatRate(row.writesPerSecondAfter)} after)`,
      );
    }
  }
  const medians: JoinRow[] = keyCounts.map((keys) => {
    const rows = runsByKeys.get(keys)!;
    return {
      keys,
      joinMs: median(rows.map((row) => row.joinMs)),
      writesPerSecondBefore: median(rows.map((row) => row.writesPerSecondBefore)),
      writesPerSecondDuring: median(rows.map((row) => row.writesPerSecondDuring)),
      writesPerSecondAfter: median(rows.map((row) => row.writesPerSecondAfter)),
    };
  });
  printTable(
    `Online join under closed-loop load (2 replicas + 1 joining, 100 B values; medians of ${runs} runs)`,
    ['keys', 'join time', 'before (2 replicas)', 'during join', 'after (3 replicas)', 'during/before', 'during/after', 'during/before per run'],
    medians.map((row) => [
      String(row.keys),
      `${row.joinMs.toFixed(0)} ms`,
      formatRate(row.writesPerSecondBefore),
      formatRate(row.writesPerSecondDuring),
      formatRate(row.writesPerSecondAfter),
      (row.writesPerSecondDuring / row.writesPerSecondBefore).toFixed(2),
      (row.writesPerSecondDuring / row.writesPerSecondAfter).toFixed(2),
      runsByKeys
        .get(row.keys)!
        .map((run) => (run.writesPerSecondDuring / run.writesPerSecondBefore).toFixed(2))
        .join(' '),
    ]),
  );
  return medians;
}
