/**
 * `npm run bench:report` (entry point: ./report-main.ts): SVG plots from the result ledger, for
 * BENCHMARKS.md. Each plot comes from one run: the newest run (one `npm run bench` invocation: one
 * commit, one date) that recorded data for it, named in the plot's title, so a plot never mixes
 * figures from different code.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { SweepRow } from './chain-bench.js';
import type { FailoverRow } from './failover-bench.js';
import { resultsFile } from './ledger.js';
import type { OpenLoopRow } from './openloop-bench.js';
import { compactNumber, lineChart, type LineChartOptions } from './svg-chart.js';

/** One ledger line: the suite, the environment harness.record() adds, and the suite's own fields. */
export interface LedgerEntry {
  suite: string;
  date: string;
  commit: string;
  cpu?: string;
  cores?: number;
  node?: string;
  [field: string]: unknown;
}

export interface Run {
  commit: string;
  date: string;
  entries: LedgerEntry[];
}

export function readLedger(file: string, log: (line: string) => void = () => undefined): LedgerEntry[] {
  const entries: LedgerEntry[] = [];
  readFileSync(file, 'utf8')
    .split('\n')
    .forEach((line, index) => {
      if (line.trim() === '') return;
      try {
        const entry = JSON.parse(line) as LedgerEntry;
        if (typeof entry.suite === 'string' && typeof entry.date === 'string' && typeof entry.commit === 'string') entries.push(entry);
      } catch {
        // A run killed mid-write leaves a partial last line; the rest of the ledger is still good.
        log(`  ${file}:${index + 1}: not JSON, ignored`);
      }
    });
  return entries;
}

/** The newest run with entries that `wanted` accepts, and those entries (a later line wins a tie). */
export function newestRun(ledger: LedgerEntry[], wanted: (entry: LedgerEntry) => boolean): Run | undefined {
  const matching = ledger.filter(wanted);
  let newest: LedgerEntry | undefined;
  for (const entry of matching) if (newest === undefined || entry.date >= newest.date) newest = entry;
  if (newest === undefined) return undefined;
  const { commit, date } = newest;
  return { commit, date, entries: matching.filter((entry) => entry.commit === commit && entry.date === date) };
}

function machine(run: Run): string {
  const first = run.entries[0]!;
  return `${run.date.slice(0, 10)}, ${first.cpu ?? '?'}, ${first.cores ?? '?'} cores, Node ${first.node ?? '?'}`;
}

function bytes(value: number): string {
  if (value >= 1024 * 1024) return `${compactNumber(value / (1024 * 1024))} MiB`;
  if (value >= 1024) return `${compactNumber(value / 1024)} KiB`;
  return `${compactNumber(value)} B`;
}

function microseconds(value: number): string {
  if (value >= 1e6) return `${compactNumber(value / 1e6)} s`;
  if (value >= 1e3) return `${compactNumber(value / 1e3)} ms`;
  return `${compactNumber(value)} µs`;
}

interface Plot {
  file: string;
  /** What the plot needs, for the message when the ledger has none. */
  needs: string;
  chart(ledger: LedgerEntry[]): { run: Run; options: LineChartOptions } | undefined;
}

function sweepPlot(file: string, dimension: 'batch' | 'value', chartFor: (run: Run, rows: SweepRow[]) => LineChartOptions): Plot {
  return {
    file,
    needs: `chain.sweep rows for dimension '${dimension}' (npm run bench -- --suite sweeps)`,
    chart(ledger) {
      const run = newestRun(ledger, (entry) => entry.suite === 'chain.sweep' && entry.dimension === dimension);
      return run && { run, options: chartFor(run, run.entries as unknown as SweepRow[]) };
    },
  };
}

export const PLOTS: Plot[] = [
  sweepPlot('throughput-vs-batch.svg', 'batch', (run, rows) => ({
    title: `Throughput vs batch size (commit ${run.commit})`,
    subtitle: `${machine(run)}; 3 replicas, 100 B values, closed loop`,
    xLabel: 'writes per batch (maxWrites)',
    yLabel: 'writes/s',
    xScale: 'log2',
    series: [{ name: 'dabba, 3 replicas', points: rows.map((row) => [row.setting, row.writesPerSecond]) }],
  })),
  // Bytes per second: writes per second fall by orders of magnitude as values grow, bytes do not.
  sweepPlot('throughput-vs-value-size.svg', 'value', (run, rows) => ({
    title: `Throughput vs value size (commit ${run.commit})`,
    subtitle: `${machine(run)}; 3 replicas, 16 B keys, closed loop`,
    xLabel: 'value size',
    yLabel: 'MB/s (keys + values)',
    xScale: 'log2',
    xFormat: bytes,
    series: [{ name: 'dabba, 3 replicas', points: rows.map((row) => [row.setting, row.megabytesPerSecond]) }],
  })),
  {
    file: 'latency-vs-load.svg',
    needs: 'chain.openloop rows (npm run bench -- --suite openloop)',
    chart(ledger) {
      const run = newestRun(ledger, (entry) => entry.suite === 'chain.openloop');
      if (run === undefined) return undefined;
      const rows = run.entries as unknown as OpenLoopRow[];
      const percentile = (name: string, field: 'p50Us' | 'p99Us' | 'p999Us') => ({
        name,
        points: rows.map((row): [number, number] => [row.offeredPerSecond, row[field]]),
      });
      return {
        run,
        options: {
          title: `Write latency vs offered load (commit ${run.commit})`,
          subtitle: `${machine(run)}; 3 replicas, open loop; closed-loop max ${compactNumber(rows[0]!.closedLoopPerSecond)} writes/s`,
          xLabel: 'offered load (writes/s)',
          yLabel: 'latency from intended start',
          yScale: 'log10',
          yFormat: microseconds,
          series: [percentile('p50', 'p50Us'), percentile('p99', 'p99Us'), percentile('p99.9', 'p999Us')],
        },
      };
    },
  },
  {
    file: 'failover-timeline.svg',
    needs: 'failover rows with a timeline (npm run bench -- --suite failover)',
    chart(ledger) {
      const run = newestRun(ledger, (entry) => entry.suite === 'failover' && Array.isArray((entry as Partial<FailoverRow>).timeline?.acknowledged));
      if (run === undefined) return undefined;
      const rows = run.entries as unknown as FailoverRow[];
      const bucketMs = rows[0]!.timeline.bucketMs;
      return {
        run,
        options: {
          title: `Acknowledged writes around a crash (commit ${run.commit})`,
          subtitle: `${machine(run)}; 3 replicas, closed loop; one replica crashed at 0 ms`,
          xLabel: `ms from the crash (${bucketMs} ms buckets)`,
          yLabel: `writes acknowledged per ${bucketMs} ms`,
          markers: [{ x: 0, label: 'crash' }],
          series: rows.map((row) => ({
            name: `${row.role} crashed`,
            points: row.timeline.acknowledged.map((count, index): [number, number] => [row.timeline.startMs + index * row.timeline.bucketMs, count]),
          })),
        },
      };
    },
  },
];

export interface ReportOptions {
  /** Default: the ledger harness.record() writes to. */
  resultsFile?: string;
  /** Default: bench/plots/ under the working directory. */
  plotsDirectory?: string;
  log?: (line: string) => void;
}

/** Writes every plot the ledger has data for; returns the paths written. */
export function writeReport(options: ReportOptions = {}): string[] {
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  const ledgerFile = options.resultsFile ?? resultsFile();
  const plotsDirectory = options.plotsDirectory ?? join(process.cwd(), 'bench', 'plots');
  if (!existsSync(ledgerFile)) throw new Error(`no benchmark results at ${ledgerFile}: run npm run bench first`);
  const ledger = readLedger(ledgerFile, log);
  const written: string[] = [];
  mkdirSync(plotsDirectory, { recursive: true });
  for (const plot of PLOTS) {
    const chart = plot.chart(ledger);
    if (chart === undefined) {
      log(`skipped ${plot.file}: the ledger has no ${plot.needs}`);
      continue;
    }
    const path = join(plotsDirectory, plot.file);
    writeFileSync(path, lineChart(chart.options));
    written.push(path);
    const shown = relative(process.cwd(), path);
    log(`wrote ${shown.startsWith('..') ? path : shown} (commit ${chart.run.commit}, ${chart.run.date})`);
  }
  return written;
}
