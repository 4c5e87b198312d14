/**
 * Many chains against one, in one process: the same 3 worker threads, 3 replicas, 100 B values,
 * closed loop, with `chains: 1` and with `chains: 12`, alternated run by run (medians; this machine
 * is shared and noisy, so only the ratio within a run pair is trusted). With one chain the head's
 * thread and the tail's thread carry different work; with twelve every thread heads four chains
 * and tails four, so the work spreads. Reports writes/s and each node thread's CPU share.
 */
import { createChain } from '../src/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { record } from './ledger.js';
import { threadCpuMilliseconds } from './thread-cpu.js';

export interface ChainsRow {
  chains: number;
  writesPerSecond: number;
  /** Each node thread's CPU time over the run, in % of one core, busiest first. */
  nodeCpuPercent: number[];
  mainCpuPercent: number;
}

const CHAIN_COUNTS = [1, 12];

async function measure(chains: number, seconds: number): Promise<ChainsRow> {
  const chain = createChain({ replicas: 3, chains, nodes: 3 });
  try {
    await runClosedLoop(chain, { durationMs: 700, writeWindow: 4096 });
    const before = threadCpuMilliseconds();
    const startedAt = performance.now();
    const report = await runClosedLoop(chain, { durationMs: seconds * 1000, writeWindow: 4096 });
    const elapsedMs = performance.now() - startedAt;
    const after = threadCpuMilliseconds();
    const percentOf = (thread: number): number => (100 * ((after.get(thread) ?? 0) - (before.get(thread) ?? 0))) / elapsedMs;
    const nodeThreads = new Set(chain.stats().replicas.map((replica) => replica.osThreadId));
    return {
      chains,
      writesPerSecond: report.writesPerSecond,
      nodeCpuPercent: [...nodeThreads].map(percentOf).sort((a, b) => b - a),
      mainCpuPercent: percentOf(process.pid),
    };
  } finally {
    await chain.close();
  }
}

export async function chainsBench(env: Environment, seconds: number, runs: number, log: (line: string) => void): Promise<ChainsRow[]> {
  const all: ChainsRow[] = [];
  for (let run = 1; run <= runs; run++) {
    for (const chains of CHAIN_COUNTS) {
      const row = await measure(chains, seconds);
      all.push(row);
      log(`  run ${run}, chains ${chains}: ${formatRate(row.writesPerSecond)}, node CPU ${row.nodeCpuPercent.map((value) => value.toFixed(0)).join('/')} %`);
    }
  }
  const rows = CHAIN_COUNTS.map((chains) => {
    const of = all.filter((row) => row.chains === chains);
    return {
      chains,
      writesPerSecond: median(of.map((row) => row.writesPerSecond)),
      nodeCpuPercent: [0, 1, 2].map((index) => median(of.map((row) => row.nodeCpuPercent[index] ?? 0))),
      mainCpuPercent: median(of.map((row) => row.mainCpuPercent)),
    };
  });
  const ratios = all
    .filter((row) => row.chains === CHAIN_COUNTS[1])
    .map((row, index) => row.writesPerSecond / all.filter((other) => other.chains === CHAIN_COUNTS[0])[index]!.writesPerSecond);
  for (const row of rows) record('chains', { ...row, runs, medianRatio: median(ratios) }, env);
  printTable(
    `Many chains in one process (3 nodes, 3 replicas, 100 B values, closed loop; medians of ${runs} alternated runs)`,
    ['chains', 'writes/s', 'node threads CPU (busiest first)', 'main thread CPU'],
    rows.map((row) => [row.chains, formatRate(row.writesPerSecond), row.nodeCpuPercent.map((value) => `${value.toFixed(0)} %`).join(' / '), `${row.mainCpuPercent.toFixed(0)} %`]),
  );
  log(`  chains ${CHAIN_COUNTS[1]} / chains ${CHAIN_COUNTS[0]}, run by run: ${ratios.map((ratio) => ratio.toFixed(2)).join(', ')} (median ${median(ratios).toFixed(2)})`);
  return rows;
}
