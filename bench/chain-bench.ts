/**
 * End-to-end benchmarks of a chain in one process, driven through put() (one promise per write):
 * the headline figure against the naive postMessage chain measured in the same run, latency at half
 * the measured maximum (open loop), sweeps over chain length, batch size and value size, and a soak
 * that reports memory at start and end.
 */
import { createChain, type ChainOptions } from '../src/index.js';
import { runClosedLoop, runOpenLoop, type LoadReport } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { NaiveChain } from '../src/bench/naive-chain.js';
import { record } from './ledger.js';

export interface ChainBenchSettings {
  /** Seconds per measured run. */
  seconds: number;
  /** Runs per configuration for medians (dabba and baseline interleaved). */
  runs: number;
  env: Environment;
  log: (line: string) => void;
}

const WARMUP_MS = 500;
const OPEN_LOOP_SETTLE_MS = 2000;

/** Keys written: 100k, fewer for large values so a replica's data set stays near 64 MiB. */
function keySpaceFor(valueBytes: number): number {
  return Math.min(100_000, Math.floor((64 * 1024 * 1024) / (valueBytes + 16)));
}

export async function measureDabba(options: ChainOptions, seconds: number, valueBytes = 100, putMany = false): Promise<LoadReport> {
  const chain = createChain(options);
  const keySpace = keySpaceFor(valueBytes);
  try {
    await runClosedLoop(chain, { durationMs: WARMUP_MS, valueBytes, keySpace, putMany });
    return await runClosedLoop(chain, { durationMs: seconds * 1000, valueBytes, keySpace, putMany });
  } finally {
    await chain.close();
  }
}

/** The headline's dabba measurement (3 replicas, 100 B values, closed loop), for suites that compare against it. */
export function measureHeadlineDabba(seconds: number): Promise<LoadReport> {
  return measureDabba({ replicas: 3 }, seconds);
}

/** The same, each writer's window of 2048 sent as one putMany() (one promise per window). */
export function measureHeadlineDabbaPutMany(seconds: number): Promise<LoadReport> {
  return measureDabba({ replicas: 3 }, seconds, 100, true);
}

async function measureNaive(replicas: number, seconds: number): Promise<LoadReport> {
  const chain = new NaiveChain(replicas);
  try {
    await runClosedLoop(chain, { durationMs: WARMUP_MS, writeWindow: 1024 });
    return await runClosedLoop(chain, { durationMs: seconds * 1000, writeWindow: 1024 });
  } finally {
    await chain.close();
  }
}

export interface HeadlineResult {
  dabbaWritesPerSecond: number;
  naiveWritesPerSecond: number;
  ratio: number;
  dabbaRuns: number[];
  naiveRuns: number[];
  p99AtMaxUs: number;
  halfLoad: { offeredPerSecond: number; achievedPerSecond: number; p50Us: number; p99Us: number; p999Us: number; refused: number };
}

/** 3 replicas, 16 B keys, 100 B values: dabba vs the naive chain, interleaved, medians of `runs`. */
export async function headline(settings: ChainBenchSettings): Promise<HeadlineResult> {
  const dabbaRuns: number[] = [];
  const naiveRuns: number[] = [];
  const p99s: number[] = [];
  for (let run = 0; run < settings.runs; run++) {
    const dabba = await measureDabba({ replicas: 3 }, settings.seconds);
    dabbaRuns.push(dabba.writesPerSecond);
    p99s.push(dabba.writeLatencyUs.p99);
    const naive = await measureNaive(3, settings.seconds);
    naiveRuns.push(naive.writesPerSecond);
    settings.log(
      `  run ${run + 1}/${settings.runs}: dabba ${formatRate(dabba.writesPerSecond)} (p99 ${dabba.writeLatencyUs.p99} us), ` +
        `naive ${formatRate(naive.writesPerSecond)}`,
    );
  }
  const dabbaWritesPerSecond = median(dabbaRuns);
  const naiveWritesPerSecond = median(naiveRuns);
  // Latency at half the measured maximum, offered open-loop so stalls are not hidden.
  const chain = createChain({ replicas: 3 });
  let halfLoad: HeadlineResult['halfLoad'];
  try {
    await runClosedLoop(chain, { durationMs: WARMUP_MS });
    // The switch from closed to open loop leaves a backlog of small batches that takes a second or
    // two to drain (adaptive batching grows them); measure the steady state after it.
    await runOpenLoop(chain, { ratePerSecond: dabbaWritesPerSecond / 2, durationMs: OPEN_LOOP_SETTLE_MS });
    const open = await runOpenLoop(chain, { ratePerSecond: dabbaWritesPerSecond / 2, durationMs: settings.seconds * 1000 });
    halfLoad = {
      offeredPerSecond: open.offeredPerSecond,
      achievedPerSecond: open.achievedPerSecond,
      p50Us: open.latencyUs.p50,
      p99Us: open.latencyUs.p99,
      p999Us: open.latencyUs.p999,
      refused: open.refused,
    };
  } finally {
    await chain.close();
  }
  const result: HeadlineResult = {
    dabbaWritesPerSecond,
    naiveWritesPerSecond,
    ratio: dabbaWritesPerSecond / naiveWritesPerSecond,
    dabbaRuns,
    naiveRuns,
    p99AtMaxUs: median(p99s),
    halfLoad,
  };
  record('chain.headline', { seconds: settings.seconds, runs: settings.runs, ...result }, settings.env);
  printTable(
    'Headline: 3 replicas, 16 B keys, 100 B values, closed loop through put()',
    ['chain', 'writes/s (median)', 'runs', 'p99 at max', 'vs naive'],
    [
      ['dabba', formatRate(dabbaWritesPerSecond), dabbaRuns.map(formatRate).join(' '), `${result.p99AtMaxUs} us`, `${result.ratio.toFixed(1)}x`],
      ['naive postMessage', formatRate(naiveWritesPerSecond), naiveRuns.map(formatRate).join(' '), '', '1.0x'],
    ],
  );
  printTable(
    'Latency at half the maximum (open loop, from intended start)',
    ['offered', 'achieved', 'p50', 'p99', 'p99.9', 'refused'],
    [[formatRate(halfLoad.offeredPerSecond), formatRate(halfLoad.achievedPerSecond), `${halfLoad.p50Us} us`, `${halfLoad.p99Us} us`, `${halfLoad.p999Us} us`, String(halfLoad.refused)]],
  );
  return result;
}

export interface SweepRow {
  dimension: 'replicas' | 'batch' | 'value';
  setting: number;
  writesPerSecond: number;
  megabytesPerSecond: number;
  p50Us: number;
  p99Us: number;
}

/** One dimension at a time around the default (3 replicas, batches of 1024, 100 B values). */
export async function sweeps(settings: ChainBenchSettings, small: boolean): Promise<SweepRow[]> {
  const rows: SweepRow[] = [];
  const replicaSettings = [1, 2, 3, 5];
  const batchSettings = small ? [1, 64, 4096] : [1, 16, 256, 1024, 4096];
  const valueSettings = small ? [16, 16384] : [16, 100, 1024, 16384];
  const measure = async (dimension: SweepRow['dimension'], setting: number, options: ChainOptions, valueBytes = 100): Promise<void> => {
    const report = await measureDabba(options, settings.seconds, valueBytes);
    rows.push({
      dimension,
      setting,
      writesPerSecond: report.writesPerSecond,
      megabytesPerSecond: report.writeMegabytesPerSecond,
      p50Us: report.writeLatencyUs.p50,
      p99Us: report.writeLatencyUs.p99,
    });
    settings.log(`  ${dimension} ${setting}: ${formatRate(report.writesPerSecond)}`);
  };
  for (const replicas of replicaSettings) await measure('replicas', replicas, { replicas });
  for (const maxWrites of batchSettings) await measure('batch', maxWrites, { replicas: 3, batch: { maxWrites } });
  for (const valueBytes of valueSettings) {
    // Large values: fewer writes per batch keep a batch's bytes near 1 MiB.
    const maxWrites = Math.max(16, Math.min(1024, Math.floor((1024 * 1024) / (valueBytes + 16))));
    await measure('value', valueBytes, { replicas: 3, batch: { maxWrites } }, valueBytes);
  }
  for (const row of rows) record('chain.sweep', { seconds: settings.seconds, ...row }, settings.env);
  printTable(
    'Sweeps (one run each; 3 replicas, batches of 1024, 100 B values, 100k keys unless varied; large values use fewer keys, about 64 MiB per replica)',
    ['dimension', 'setting', 'writes/s', 'MB/s', 'p50', 'p99'],
    rows.map((row) => [
      row.dimension,
      row.dimension === 'value' ? `${row.setting} B` : String(row.setting),
      formatRate(row.writesPerSecond),
      row.megabytesPerSecond.toFixed(1),
      `${row.p50Us} us`,
      `${row.p99Us} us`,
    ]),
  );
  return rows;
}

/** A long closed-loop run reporting resident memory at start and end (it must stay flat). */
export async function soak(settings: ChainBenchSettings, seconds: number): Promise<LoadReport> {
  const chain = createChain({ replicas: 3 });
  try {
    await runClosedLoop(chain, { durationMs: WARMUP_MS });
    const report = await runClosedLoop(chain, {
      durationMs: seconds * 1000,
      onProgress: (progress) => {
        if (Math.round(progress.elapsedMs / 1000) % 10 === 0) {
          settings.log(`  ${Math.round(progress.elapsedMs / 1000)} s: ${formatRate(progress.writesPerSecond)}, rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`);
        }
      },
    });
    record('chain.soak', { ...report, soakSeconds: seconds }, settings.env);
    printTable(
      `Soak: ${seconds} s closed loop, 3 replicas`,
      ['writes/s', 'RSS at start', 'RSS at end', 'p99'],
      [[formatRate(report.writesPerSecond), `${report.rssStartMiB.toFixed(0)} MiB`, `${report.rssEndMiB.toFixed(0)} MiB`, `${report.writeLatencyUs.p99} us`]],
    );
    return report;
  } finally {
    await chain.close();
  }
}
