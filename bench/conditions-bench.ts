/**
 * What a conditional write costs: plain puts against puts with `{ ifAbsent: true }` (every one of
 * fresh keys, so every condition holds and every write is applied), in one process, 3 replicas,
 * 100 B values, one writer with 8192 writes in flight, closed loop; a new chain each run (fresh
 * keys), the two alternated run by run, medians. Each replica checks the condition as it applies
 * the write (a lookup of the key first); the client stages the expected version with the record.
 */
import { createChain } from '../src/index.js';
import { runClosedLoop, type LoadOptions } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { record } from './ledger.js';

type Kind = 'plain' | 'ifAbsent';
const KINDS: readonly Kind[] = ['plain', 'ifAbsent'];

export interface ConditionsRow {
  kind: Kind;
  writesPerSecond: number;
  runs: number[];
  /** Conditions that failed (0: the keys were fresh throughout). */
  conditionFailures: number;
}

async function measure(kind: Kind, seconds: number, keySpace: number): Promise<{ writesPerSecond: number; conditionFailures: number }> {
  const chain = createChain({ replicas: 3 });
  try {
    const load: LoadOptions = { durationMs: seconds * 1000, keySpace, writers: 1, writeWindow: 8192, ...(kind === 'ifAbsent' ? { writeConditions: { ifAbsent: true } } : {}) };
    const report = await runClosedLoop(chain, load);
    return { writesPerSecond: report.writesPerSecond, conditionFailures: report.conditionFailures };
  } finally {
    await chain.close();
  }
}

export async function conditionsBench(env: Environment, seconds: number, runs: number, log: (line: string) => void): Promise<ConditionsRow[]> {
  // Enough keys that no run wraps around to one it wrote (a put-if-absent of it would fail).
  const keySpace = Math.max(200_000, Math.ceil(seconds * 1_500_000));
  const results = new Map<Kind, Array<{ writesPerSecond: number; conditionFailures: number }>>(KINDS.map((kind) => [kind, []]));
  for (let run = 0; run < runs; run++) {
    for (const kind of run % 2 === 0 ? KINDS : [...KINDS].reverse()) {
      const result = await measure(kind, seconds, keySpace);
      results.get(kind)!.push(result);
      log(`  run ${run + 1}/${runs}, ${kind}: ${formatRate(result.writesPerSecond)}${result.conditionFailures > 0 ? `, ${result.conditionFailures} conditions failed` : ''}`);
    }
  }
  const rows = KINDS.map((kind): ConditionsRow => {
    const of = results.get(kind)!;
    return { kind, writesPerSecond: median(of.map((run) => run.writesPerSecond)), runs: of.map((run) => run.writesPerSecond), conditionFailures: of.reduce((sum, run) => sum + run.conditionFailures, 0) };
  });
  const ratios = results.get('ifAbsent')!.map((run, index) => run.writesPerSecond / results.get('plain')![index]!.writesPerSecond);
  for (const row of rows) record('conditions', { seconds, ...row, medianRatio: median(ratios) }, env);
  printTable(
    `Conditional writes: put() vs put(..., { ifAbsent: true }) of fresh keys, 3 replicas, 100 B values, 1 x 8192 in flight (medians of ${runs} alternated runs)`,
    ['writes', 'writes/s', 'vs plain', 'conditions failed'],
    rows.map((row) => [row.kind, formatRate(row.writesPerSecond), row.kind === 'plain' ? '1.00x' : `${median(ratios).toFixed(2)}x`, row.conditionFailures]),
  );
  log(`  ifAbsent / plain, run by run: ${ratios.map((ratio) => ratio.toFixed(2)).join(', ')} (median ${median(ratios).toFixed(2)})`);
  return rows;
}
