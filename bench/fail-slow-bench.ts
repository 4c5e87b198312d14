/**
 * What a slow replica costs and what demoting it gives back: the closed loop of puts (one process,
 * 3 replicas on 4 nodes, 100 B values, one writer with 8192 in flight), with every replica healthy;
 * with the middle taking 10x as long over every batch (chain.slowReplica, as a CPU throttled to a
 * tenth would) and fail-slow demotion off; and with it on, measured once the slow node was moved
 * out and the spare took its place. A new chain each run, warmed up by 3 s of the same puts before
 * anything else, the variants alternated run by run, medians and ratios against the healthy chain.
 */
import { createChain, type Chain } from '../src/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { record } from './ledger.js';

type Variant = 'healthy' | 'one node 10x slower' | 'slow node demoted';
const VARIANTS: readonly Variant[] = ['healthy', 'one node 10x slower', 'slow node demoted'];
const SLOWDOWN = 10;

export interface FailSlowRow {
  variant: Variant;
  writesPerSecond: number;
  /** How long demotion took after the node was slowed, median (the demoted variant). */
  demotedAfterMs: number | null;
  runs: number[];
}

/** Puts until `done` settles (the load that makes the slow node show). */
async function writeUntil(chain: Chain, done: Promise<unknown>): Promise<void> {
  let finished = false;
  void done.then(() => (finished = true));
  for (let round = 0; !finished; round++) {
    await chain.putMany(Array.from({ length: 4096 }, (_, index) => [`k-${(round * 4096 + index) % 100_000}`, VALUE] as const));
  }
}

const VALUE = Buffer.alloc(100, 7);
const WARM_UP_MS = 3000;

/** Until the chain is three members again, none of them `node`, with no join under way. */
function wholeWithout(chain: Chain, node: number): Promise<void> {
  return new Promise((resolve) => {
    const check = (): void => {
      const members = chain.members();
      if (members.length !== 3 || members.some((member) => member.id === node || member.role === 'joining')) return;
      chain.off('reconfigured', check);
      resolve();
    };
    chain.on('reconfigured', check);
    check();
  });
}

async function measure(variant: Variant, seconds: number): Promise<{ writesPerSecond: number; demotedAfterMs: number | null }> {
  const chain = createChain({ replicas: 3, nodes: 4, failSlow: variant === 'slow node demoted' ? {} : false });
  chain.on('warning', () => undefined);
  try {
    let demotedAfterMs: number | null = null;
    // Every variant warms up the same (the JIT, the store's tables) before anything is measured.
    await writeUntil(chain, new Promise((resolve) => setTimeout(resolve, WARM_UP_MS)));
    if (variant !== 'healthy') {
      const middle = chain.members()[1]!.id;
      const slowedAt = performance.now();
      chain.slowReplica(middle, SLOWDOWN);
      if (variant === 'slow node demoted') {
        const demoted = new Promise<void>((resolve) => chain.once('demoted', () => resolve())).then(() => (demotedAfterMs = performance.now() - slowedAt));
        const replaced = demoted.then(() => wholeWithout(chain, middle));
        await writeUntil(chain, replaced);
      }
    }
    const report = await runClosedLoop(chain, { durationMs: seconds * 1000, keySpace: 100_000, writers: 1, writeWindow: 8192 });
    return { writesPerSecond: report.writesPerSecond, demotedAfterMs };
  } finally {
    await chain.close();
  }
}

export async function failSlowBench(env: Environment, seconds: number, runs: number, log: (line: string) => void): Promise<FailSlowRow[]> {
  const results = new Map<Variant, Array<{ writesPerSecond: number; demotedAfterMs: number | null }>>(VARIANTS.map((variant) => [variant, []]));
  for (let run = 0; run < runs; run++) {
    for (const variant of run % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()) {
      const result = await measure(variant, seconds);
      results.get(variant)!.push(result);
      log(`  run ${run + 1}/${runs}, ${variant}: ${formatRate(result.writesPerSecond)} writes/s${result.demotedAfterMs === null ? '' : `, demoted after ${Math.round(result.demotedAfterMs)} ms`}`);
    }
  }
  const healthy = results.get('healthy')!;
  const ratioOf = (variant: Variant): number[] => results.get(variant)!.map((run, index) => run.writesPerSecond / healthy[index]!.writesPerSecond);
  const rows = VARIANTS.map((variant): FailSlowRow => {
    const of = results.get(variant)!;
    const demotions = of.map((run) => run.demotedAfterMs).filter((ms): ms is number => ms !== null);
    return { variant, writesPerSecond: median(of.map((run) => run.writesPerSecond)), demotedAfterMs: demotions.length === 0 ? null : median(demotions), runs: of.map((run) => run.writesPerSecond) };
  });
  for (const row of rows) record('fail-slow', { seconds, ...row, medianRatio: median(ratioOf(row.variant)) }, env);
  printTable(
    `Fail-slow: puts on a healthy chain, with one node ${SLOWDOWN}x slower, and after it was demoted (a spare took its place); 3 replicas on 4 nodes, 100 B values, 1 x 8192 in flight (medians of ${runs} alternated runs)`,
    ['variant', 'writes/s', 'vs healthy', 'demoted after'],
    rows.map((row) => [row.variant, formatRate(row.writesPerSecond), `${median(ratioOf(row.variant)).toFixed(2)}x`, row.demotedAfterMs === null ? '-' : `${(row.demotedAfterMs / 1000).toFixed(1)} s`]),
  );
  for (const variant of VARIANTS.slice(1)) log(`  ${variant} / healthy, run by run: ${ratioOf(variant).map((ratio) => ratio.toFixed(2)).join(', ')}`);
  return rows;
}
