/**
 * Reads from every replica (CRAQ) against reads at the tail, on a read-heavy mix: 90 % gets and
 * 10 % puts, 100 B values over 100k keys (all written first), 3 replicas, closed loop. In one
 * process, `createChain({ reads: 'any' })` against `{ reads: 'tail' }`; across three `dabba serve`
 * processes on loopback (serving reads at any replica), a client that spreads its reads against one
 * that keeps to the tail (`chain: { reads: 'tail' }`). The two alternate run by run (medians: this
 * machine is shared and noisy, so only ratios within a run pair are trusted). Reports reads/s,
 * each replica's share of the reads, and how many reads had to wait for the commit point (dirty).
 */
import { connect } from '../src/client/index.js';
import { createChain, type Chain } from '../src/index.js';
import { makeKeys, makeValue, runClosedLoop, type LoadOptions } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { startLocalHosts } from '../src/bench/local-hosts.js';
import { record } from './ledger.js';
import { threadCpuMilliseconds } from './thread-cpu.js';

type ReadMode = 'any' | 'tail';
const MODES: readonly ReadMode[] = ['any', 'tail'];
const KEYS = 100_000;
const WARMUP_MS = 500;
/** 4 writers, each a window of 2048 operations of which 9 in 10 are gets. */
const LOAD: Omit<LoadOptions, 'durationMs'> = { keySpace: KEYS, valueBytes: 100, writers: 4, writeWindow: 2048, readRatio: 0.9 };

export interface ReadsRun {
  setup: 'one process' | '3 hosts';
  reads: ReadMode;
  readsPerSecond: number;
  writesPerSecond: number;
  /** Each replica's share of the reads it answered, head first (%). */
  readShares: number[];
  /** Reads that waited for the commit point, in % of the reads answered. */
  dirtyPercent: number;
  /** One process: the client's (main) thread's and each replica's thread's CPU, in % of a core (head first). */
  mainCpuPercent?: number;
  replicaCpuPercent?: number[];
}

export interface ReadsRow extends ReadsRun {
  runs: number;
  /** reads/s with reads at any replica over reads/s at the tail, median of the run pairs (on the 'any' row). */
  ratio: number;
}

/** Writes every key once, so every get finds a value. */
async function fill(target: { putMany(entries: Iterable<readonly [string, Uint8Array]>): Promise<void> }): Promise<void> {
  const keys = makeKeys(KEYS, 16);
  const value = makeValue(100);
  for (let start = 0; start < KEYS; start += 10_000) await target.putMany(keys.slice(start, start + 10_000).map((key) => [key, value] as const));
}

function shares(served: number[], dirty: number[]): { readShares: number[]; dirtyPercent: number } {
  const total = served.reduce((sum, count) => sum + count, 0);
  return {
    readShares: served.map((count) => (100 * count) / Math.max(1, total)),
    dirtyPercent: (100 * dirty.reduce((sum, count) => sum + count, 0)) / Math.max(1, total),
  };
}

async function inProcessRun(reads: ReadMode, seconds: number): Promise<ReadsRun> {
  const chain: Chain = createChain({ replicas: 3, reads });
  try {
    await fill(chain);
    await runClosedLoop(chain, { durationMs: WARMUP_MS, ...LOAD });
    const before = chain.stats().replicas;
    const cpuBefore = threadCpuMilliseconds();
    const startedAt = performance.now();
    const report = await runClosedLoop(chain, { durationMs: seconds * 1000, ...LOAD });
    const elapsedMs = performance.now() - startedAt;
    const cpuAfter = threadCpuMilliseconds();
    const cpuPercent = (thread: number): number => (100 * ((cpuAfter.get(thread) ?? 0) - (cpuBefore.get(thread) ?? 0))) / elapsedMs;
    const after = chain.stats().replicas;
    const served = after.map((replica, index) => replica.readsServed - before[index]!.readsServed);
    const dirty = after.map((replica, index) => replica.dirtyReads - before[index]!.dirtyReads);
    return {
      setup: 'one process',
      reads,
      readsPerSecond: report.readsPerSecond,
      writesPerSecond: report.writesPerSecond,
      ...shares(served, dirty),
      mainCpuPercent: cpuPercent(process.pid),
      replicaCpuPercent: after.map((replica) => cpuPercent(replica.osThreadId)),
    };
  } finally {
    await chain.close();
  }
}

/** Each host's counters of its replica of chain 0, from its GET /status, in chain order (head first). */
async function hostReads(urls: readonly string[]): Promise<Array<{ role: string; readsServed: number; dirtyReads: number }>> {
  const order = ['head', 'middle', 'tail'];
  const lines = await Promise.all(
    urls.map(async (url) => {
      const status = (await (await fetch(`${url.replace(/^ws/, 'http')}/status`)).json()) as { replicas: Array<{ role: string; stats: { readsServed: number; dirtyReads: number } | null }> };
      const replica = status.replicas[0]!;
      return { role: replica.role, readsServed: replica.stats?.readsServed ?? 0, dirtyReads: replica.stats?.dirtyReads ?? 0 };
    }),
  );
  return lines.sort((a, b) => order.indexOf(a.role) - order.indexOf(b.role));
}

export async function readsBench(env: Environment, seconds: number, runs: number, log: (line: string) => void, withHosts: boolean): Promise<ReadsRow[]> {
  const all: ReadsRun[] = [];
  for (let run = 0; run < runs; run++) {
    for (const reads of run % 2 === 0 ? MODES : [...MODES].reverse()) {
      const row = await inProcessRun(reads, seconds);
      all.push(row);
      log(`  one process, run ${run + 1}/${runs}, reads ${reads}: ${formatRate(row.readsPerSecond)} reads, ${formatRate(row.writesPerSecond)} writes`);
    }
  }
  if (withHosts) {
    const hosts = await startLocalHosts(3, { log });
    try {
      const clients = { any: await connect({ hosts: hosts.urls, secret: hosts.secret }), tail: await connect({ hosts: hosts.urls, secret: hosts.secret, chain: { reads: 'tail' } }) };
      try {
        await fill(clients.any);
        for (const reads of MODES) await runClosedLoop(clients[reads], { durationMs: WARMUP_MS, ...LOAD });
        for (let run = 0; run < runs; run++) {
          for (const reads of run % 2 === 0 ? MODES : [...MODES].reverse()) {
            const before = await hostReads(hosts.urls);
            const report = await runClosedLoop(clients[reads], { durationMs: seconds * 1000, ...LOAD });
            const after = await hostReads(hosts.urls);
            const served = after.map((host, index) => host.readsServed - before[index]!.readsServed);
            const dirty = after.map((host, index) => host.dirtyReads - before[index]!.dirtyReads);
            const row: ReadsRun = { setup: '3 hosts', reads, readsPerSecond: report.readsPerSecond, writesPerSecond: report.writesPerSecond, ...shares(served, dirty) };
            all.push(row);
            log(`  3 hosts, run ${run + 1}/${runs}, reads ${reads}: ${formatRate(row.readsPerSecond)} reads, ${formatRate(row.writesPerSecond)} writes`);
          }
        }
      } finally {
        await Promise.all([clients.any.close(), clients.tail.close()]);
      }
    } finally {
      await hosts.stop();
    }
  }
  const rows: ReadsRow[] = [];
  for (const setup of ['one process', '3 hosts'] as const) {
    const of = (reads: ReadMode): ReadsRun[] => all.filter((row) => row.setup === setup && row.reads === reads);
    if (of('any').length === 0) continue;
    const ratios = of('any').map((row, index) => row.readsPerSecond / of('tail')[index]!.readsPerSecond);
    for (const reads of MODES) {
      const runsOf = of(reads);
      rows.push({
        setup,
        reads,
        runs: runsOf.length,
        readsPerSecond: median(runsOf.map((row) => row.readsPerSecond)),
        writesPerSecond: median(runsOf.map((row) => row.writesPerSecond)),
        readShares: [0, 1, 2].map((index) => median(runsOf.map((row) => row.readShares[index] ?? 0))),
        dirtyPercent: median(runsOf.map((row) => row.dirtyPercent)),
        ...(setup === 'one process'
          ? { mainCpuPercent: median(runsOf.map((row) => row.mainCpuPercent ?? 0)), replicaCpuPercent: [0, 1, 2].map((index) => median(runsOf.map((row) => row.replicaCpuPercent?.[index] ?? 0))) }
          : {}),
        ratio: reads === 'any' ? median(ratios) : 1,
      });
    }
    log(`  ${setup}: reads any / reads tail, run by run: ${ratios.map((ratio) => ratio.toFixed(2)).join(', ')} (median ${median(ratios).toFixed(2)})`);
  }
  for (const row of rows) record('reads', { seconds, ...row }, env);
  printTable(
    `Reads from every replica vs the tail: 90 % gets, 10 % puts, 100 B values, 100k keys, 3 replicas, closed loop (medians of ${runs} alternated runs)`,
    ['setup', 'reads', 'reads/s', 'writes/s', 'reads answered by head / middle / tail', 'reads that waited (dirty)', 'CPU: client / head / middle / tail', 'reads/s vs tail'],
    rows.map((row) => [
      row.setup,
      row.reads,
      formatRate(row.readsPerSecond),
      formatRate(row.writesPerSecond),
      row.readShares.map((share) => `${share.toFixed(0)} %`).join(' / '),
      `${row.dirtyPercent.toFixed(2)} %`,
      row.mainCpuPercent === undefined ? '-' : [row.mainCpuPercent, ...row.replicaCpuPercent!].map((value) => `${value.toFixed(0)} %`).join(' / '),
      `${row.ratio.toFixed(2)}x`,
    ]),
  );
  return rows;
}
