/**
 * Latency against offered load: the closed-loop maximum first (median of `runs`), then open-loop
 * load at fractions of it, lowest first, on one fresh chain. Latency is measured from each write's
 * intended start (see runOpenLoop), so it shows queueing as the load nears the maximum.
 */
import { createChain } from '../src/index.js';
import { prefill, runOpenLoop } from '../src/load.js';
import { formatRate, median, printTable } from '../src/bench/harness.js';
import { measureDabba, type ChainBenchSettings } from './chain-bench.js';
import { record } from './ledger.js';

export interface OpenLoopRow {
  /** Offered load as a fraction of the closed-loop maximum. */
  fraction: number;
  closedLoopPerSecond: number;
  offeredPerSecond: number;
  achievedPerSecond: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  refused: number;
}

/** Time at each new rate before measuring, so adaptive batching has adjusted to it. */
const SETTLE_MS = 500;

export async function openLoop(settings: ChainBenchSettings, fractions: number[]): Promise<OpenLoopRow[]> {
  const maxima: number[] = [];
  for (let run = 0; run < settings.runs; run++) maxima.push((await measureDabba({ replicas: 3 }, settings.seconds)).writesPerSecond);
  const closedLoopPerSecond = median(maxima);
  settings.log(`  closed-loop maximum: ${formatRate(closedLoopPerSecond)} (${maxima.map(formatRate).join(' ')})`);
  const settleMs = Math.min(SETTLE_MS, settings.seconds * 500);
  const rows: OpenLoopRow[] = [];
  // A fresh chain driven open-loop from the start: switching from a closed loop would leave a
  // backlog of small batches that takes seconds to drain (see the headline).
  const chain = createChain({ replicas: 3 });
  try {
    await prefill(chain, {});
    for (const fraction of [...fractions].sort((a, b) => a - b)) {
      const ratePerSecond = closedLoopPerSecond * fraction;
      await runOpenLoop(chain, { ratePerSecond, durationMs: settleMs });
      const open = await runOpenLoop(chain, { ratePerSecond, durationMs: settings.seconds * 1000 });
      const row: OpenLoopRow = {
        fraction,
        closedLoopPerSecond,
        offeredPerSecond: open.offeredPerSecond,
        achievedPerSecond: open.achievedPerSecond,
        p50Us: open.latencyUs.p50,
        p99Us: open.latencyUs.p99,
        p999Us: open.latencyUs.p999,
        refused: open.refused,
      };
      rows.push(row);
      settings.log(`  ${Math.round(fraction * 100)} %: offered ${formatRate(row.offeredPerSecond)}, p50 ${row.p50Us} us, p99 ${row.p99Us} us, p99.9 ${row.p999Us} us`);
    }
  } finally {
    await chain.close();
  }
  for (const row of rows) record('chain.openloop', { seconds: settings.seconds, runs: settings.runs, ...row }, settings.env);
  printTable(
    `Latency against offered load (3 replicas, 100 B values, open loop from intended start; closed-loop maximum ${formatRate(closedLoopPerSecond)})`,
    ['load', 'offered', 'achieved', 'p50', 'p99', 'p99.9', 'refused'],
    rows.map((row) => [
      `${Math.round(row.fraction * 100)} %`,
      formatRate(row.offeredPerSecond),
      formatRate(row.achievedPerSecond),
      `${row.p50Us} us`,
      `${row.p99Us} us`,
      `${row.p999Us} us`,
      String(row.refused),
    ]),
  );
  return rows;
}
