/**
 * What metrics cost the writes: the same closed loop of puts (one process, 3 replicas, 100 B
 * values, one writer with 8192 in flight) with nobody scraping, and with a scraper that calls
 * chain.metrics() every second (and, to be sure it is read, parses its length), as Prometheus would
 * scrape a host. A new chain each run, the variants alternated run by run, medians and ratios. The
 * latency histograms record in both (one clock read per batch): what they cost against no
 * histograms at all is measured by building the commit before them (BENCHMARKS.md says how).
 */
import { createChain } from '../src/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { record } from './ledger.js';

type Variant = 'no scraper' | 'scraped every 1 s';
const VARIANTS: readonly Variant[] = ['no scraper', 'scraped every 1 s'];
const SCRAPE_INTERVAL_MS = 1000;

export interface MetricsRow {
  variant: Variant;
  writesPerSecond: number;
  scrapes: number;
  runs: number[];
}

async function measure(variant: Variant, seconds: number): Promise<{ writesPerSecond: number; scrapes: number }> {
  const chain = createChain({ replicas: 3 });
  let scrapes = 0;
  let bytes = 0;
  const timer =
    variant === 'no scraper'
      ? null
      : setInterval(() => {
          void chain.metrics().then((text) => {
            scrapes++;
            bytes += text.length;
          });
        }, SCRAPE_INTERVAL_MS);
  try {
    const report = await runClosedLoop(chain, { durationMs: seconds * 1000, keySpace: 100_000, writers: 1, writeWindow: 8192 });
    if (timer !== null && bytes === 0) throw new Error('the scraper read nothing');
    return { writesPerSecond: report.writesPerSecond, scrapes };
  } finally {
    if (timer !== null) clearInterval(timer);
    await chain.close();
  }
}

export async function metricsBench(env: Environment, seconds: number, runs: number, log: (line: string) => void): Promise<MetricsRow[]> {
  const results = new Map<Variant, Array<{ writesPerSecond: number; scrapes: number }>>(VARIANTS.map((variant) => [variant, []]));
  for (let run = 0; run < runs; run++) {
    for (const variant of run % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()) {
      const result = await measure(variant, seconds);
      results.get(variant)!.push(result);
      log(`  run ${run + 1}/${runs}, ${variant}: ${formatRate(result.writesPerSecond)} writes/s, ${result.scrapes} scrapes`);
    }
  }
  const base = results.get('no scraper')!;
  const ratioOf = (variant: Variant): number[] => results.get(variant)!.map((run, index) => run.writesPerSecond / base[index]!.writesPerSecond);
  const rows = VARIANTS.map((variant): MetricsRow => {
    const of = results.get(variant)!;
    return { variant, writesPerSecond: median(of.map((run) => run.writesPerSecond)), scrapes: of.reduce((total, run) => total + run.scrapes, 0), runs: of.map((run) => run.writesPerSecond) };
  });
  for (const row of rows) record('metrics', { seconds, ...row, medianRatio: median(ratioOf(row.variant)) }, env);
  printTable(
    `Metrics: puts with nobody scraping vs chain.metrics() every second, 3 replicas, 100 B values, 1 x 8192 in flight (medians of ${runs} alternated runs)`,
    ['variant', 'writes/s', 'vs none', 'scrapes'],
    rows.map((row) => [row.variant, formatRate(row.writesPerSecond), `${median(ratioOf(row.variant)).toFixed(2)}x`, row.scrapes]),
  );
  log(`  scraped / none, run by run: ${ratioOf('scraped every 1 s').map((ratio) => ratio.toFixed(3)).join(', ')}`);
  return rows;
}
