/**
 * What watches cost the writes: a closed loop of puts (one process, 3 replicas, 100 B values, one
 * writer with 8192 in flight) with no watcher, then with 10 watchers on the hot prefix (`k`: every
 * key the load writes, so each watcher is sent every change), then 10 on a prefix of a fifteenth of
 * the keys, each taking its changes in bulk (nextBatch) and counting them. The 10 start together
 * "from now" on one prefix, so they share one stream (src/watch.ts). A new chain each run, the variants alternated run by run, medians.
 * The watchers' changes are decoded on the same thread as the writer's batches and acks (the
 * client's), and served by the replicas that answer reads, spread over the three.
 */
import { createChain, isDabbaError, type Watch } from '../src/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { record } from './ledger.js';

const WATCHERS = Number(process.env.WATCHERS ?? 10);
/** The same history in both variants (its copies cost the writes whether anyone watches: see ChainOptions.watchHistoryBytes). */
const HISTORY_BYTES = Number(process.env.HISTORY_BYTES ?? 32 * 1024 * 1024);
type Variant = 'no watchers' | '10 watchers' | '10 watchers, 1/15 of keys';
const VARIANTS: readonly Variant[] = ['no watchers', '10 watchers', '10 watchers, 1/15 of keys'];
/** The load's keys (src/load.ts): `k`, dashes, then the number in base 36. Under this prefix: 93312..99999 of 0..99999. */
const PREFIX_OF: Record<Exclude<Variant, 'no watchers'>, string> = { '10 watchers': 'k', '10 watchers, 1/15 of keys': 'k-----------2' };

export interface WatchesRow {
  variant: Variant;
  writesPerSecond: number;
  /** Changes the watchers took per second, all of them together. */
  changesPerSecond: number;
  /** Times a watcher fell behind the replicas' history (and went on from where they held). */
  lags: number;
  /** Writes acknowledged, and changes the watchers took once they caught up after the load (every run together). */
  writes: number;
  changesTaken: number;
  runs: number[];
}

type Measured = Omit<WatchesRow, 'variant' | 'runs'>;
/** How long the watchers may take to catch up once the load stops (they are behind by what is in flight). */
const CATCH_UP_MS = 10_000;

async function measure(variant: Variant, seconds: number): Promise<Measured> {
  const chain = createChain({ replicas: 3, watchHistoryBytes: HISTORY_BYTES });
  let stopped = false;
  let changes = 0;
  let lags = 0;
  const open = new Set<Watch>();
  /** One watcher: takes its changes in bulk; when it lags, it goes on from where the replicas hold (as a consumer that can re-read would). */
  const watcher = async (): Promise<void> => {
    const prefix = PREFIX_OF[variant as Exclude<Variant, 'no watchers'>];
    let watch = chain.watch(prefix);
    for (;;) {
      open.add(watch);
      try {
        for (let batch = await watch.nextBatch(); batch.length > 0; batch = await watch.nextBatch()) changes += batch.length;
        return;
      } catch (error) {
        if (stopped || !isDabbaError(error, 'DABBA_ERR_WATCH_LAGGED')) return;
        lags++;
        open.delete(watch);
        watch = chain.watch(prefix, { fromVersion: error.resumeVersion! });
      }
    }
  };
  const consumers = variant === 'no watchers' ? [] : Array.from({ length: WATCHERS }, watcher);
  try {
    const started = performance.now();
    const report = await runClosedLoop(chain, { durationMs: seconds * 1000, keySpace: 100_000, writers: 1, writeWindow: 8192 });
    const elapsedSeconds = (performance.now() - started) / 1000;
    const changesPerSecond = changes / elapsedSeconds;
    // Then every watcher of every key must take every acknowledged write (one chain: its versions are 1..writes).
    const writes = chain.stats().writesAcknowledged;
    const expected = variant === '10 watchers' && lags === 0 ? WATCHERS * writes : 0;
    for (const deadline = performance.now() + CATCH_UP_MS; changes < expected && performance.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 10));
    return { writesPerSecond: report.writesPerSecond, changesPerSecond, lags, writes, changesTaken: changes };
  } finally {
    stopped = true;
    for (const watch of open) watch.close();
    await Promise.all(consumers);
    await chain.close();
  }
}

export async function watchesBench(env: Environment, seconds: number, runs: number, log: (line: string) => void): Promise<WatchesRow[]> {
  const results = new Map<Variant, Measured[]>(VARIANTS.map((variant) => [variant, []]));
  for (let run = 0; run < runs; run++) {
    for (const variant of run % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()) {
      const result = await measure(variant, seconds);
      results.get(variant)!.push(result);
      log(`  run ${run + 1}/${runs}, ${variant}: ${formatRate(result.writesPerSecond)} writes/s, ${formatRate(result.changesPerSecond)} changes/s watched, ${result.lags} lags`);
    }
  }
  const rows = VARIANTS.map((variant): WatchesRow => {
    const of = results.get(variant)!;
    const sum = (figure: (run: Measured) => number): number => of.reduce((total, run) => total + figure(run), 0);
    return {
      variant,
      writesPerSecond: median(of.map((run) => run.writesPerSecond)),
      changesPerSecond: median(of.map((run) => run.changesPerSecond)),
      lags: sum((run) => run.lags),
      writes: sum((run) => run.writes),
      changesTaken: sum((run) => run.changesTaken),
      runs: of.map((run) => run.writesPerSecond),
    };
  });
  const ratioOf = (variant: Variant): number[] => results.get(variant)!.map((run, index) => run.writesPerSecond / results.get('no watchers')![index]!.writesPerSecond);
  for (const row of rows) record('watches', { seconds, ...row, medianRatio: median(ratioOf(row.variant)) }, env);
  printTable(
    `Watches: puts with no watcher vs ${WATCHERS} watchers of every key written (bulk), 3 replicas, 100 B values, 1 x 8192 in flight (medians of ${runs} alternated runs)`,
    ['variant', 'writes/s', 'vs none', 'changes/s watched', 'lags'],
    rows.map((row) => [row.variant, formatRate(row.writesPerSecond), `${median(ratioOf(row.variant)).toFixed(2)}x`, formatRate(row.changesPerSecond), row.lags]),
  );
  for (const variant of VARIANTS.slice(1)) log(`  ${variant} / none, run by run: ${ratioOf(variant).map((ratio) => ratio.toFixed(2)).join(', ')} (median ${median(ratioOf(variant)).toFixed(2)})`);
  return rows;
}

export interface WatchHistoryRow {
  /** watchHistoryBytes asked for (4096: clamped to one full batch, about 1 MiB). */
  historyBytes: number;
  writesPerSecond: number;
  runs: number[];
}

const HISTORY_SIZES = [4096, 4 << 20, 16 << 20, 64 << 20];

/**
 * What the replicas' change history costs the writes with nobody watching: the same closed loop of
 * puts with watchHistoryBytes of one batch, 4, 16 and 64 MiB, alternated run by run, medians and
 * ratios against the smallest.
 */
export async function watchHistoryBench(env: Environment, seconds: number, runs: number, log: (line: string) => void): Promise<WatchHistoryRow[]> {
  const results = new Map<number, number[]>(HISTORY_SIZES.map((bytes) => [bytes, []]));
  for (let run = 0; run < runs; run++) {
    for (const bytes of run % 2 === 0 ? HISTORY_SIZES : [...HISTORY_SIZES].reverse()) {
      const chain = createChain({ replicas: 3, watchHistoryBytes: bytes });
      try {
        const report = await runClosedLoop(chain, { durationMs: seconds * 1000, keySpace: 100_000, writers: 1, writeWindow: 8192 });
        results.get(bytes)!.push(report.writesPerSecond);
        log(`  run ${run + 1}/${runs}, history ${bytes} B: ${formatRate(report.writesPerSecond)} writes/s`);
      } finally {
        await chain.close();
      }
    }
  }
  const smallest = results.get(HISTORY_SIZES[0]!)!;
  const ratioOf = (bytes: number): number => median(results.get(bytes)!.map((rate, index) => rate / smallest[index]!));
  const rows = HISTORY_SIZES.map((bytes): WatchHistoryRow => ({ historyBytes: bytes, writesPerSecond: median(results.get(bytes)!), runs: results.get(bytes)! }));
  for (const row of rows) record('watch-history', { seconds, ...row, medianRatio: ratioOf(row.historyBytes) }, env);
  printTable(
    `Change history for watches, nobody watching: closed loop of puts, 3 replicas, 100 B values, 1 x 8192 in flight (medians of ${runs} alternated runs)`,
    ['watchHistoryBytes', 'writes/s', 'vs one batch'],
    rows.map((row) => [row.historyBytes === 4096 ? 'one batch' : `${row.historyBytes >> 20} MiB`, formatRate(row.writesPerSecond), `${ratioOf(row.historyBytes).toFixed(2)}x`]),
  );
  return rows;
}
