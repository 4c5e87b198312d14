/**
 * Latency against offered load, with and without batching to a latency target (issue 15), on one
 * process (3 replicas, 100 B values) and across three `dabba serve` processes on loopback.
 *
 * In one process, three variants:
 * - 'spin 2000': node threads may spin up to 2000 polls before they sleep (the old default; the
 *   budget now adapts within it);
 * - 'defaults': no spinning here (no core to spare: src/options.ts), no target;
 * - 'target 2 ms': the defaults and `batch.latencyTargetUs` 2000.
 * First each variant's closed-loop maximum (variants interleaved run by run, medians); then, for
 * each load (a fraction of the 'defaults' maximum), each variant open loop on a fresh prefilled chain
 * (interleaved, `runs` times, medians of p50 and p99). Latency is measured from each write's
 * intended start, the schedule paced by a metronome thread (src/bench/pacer.ts).
 *
 * Across hosts, one client without a target and one with, over the same three hosts, the same way.
 */
import { connect } from '../src/client/index.js';
import { createChain, type ChainOptions } from '../src/index.js';
import { prefill, runClosedLoop, runOpenLoop, type LoadTarget, type OpenLoopReport } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { startLocalHosts } from '../src/bench/local-hosts.js';
import { record } from './ledger.js';

const TARGET_US = 2000;
const IN_PROCESS: ReadonlyArray<{ name: string; options: ChainOptions }> = [
  { name: 'spin 2000', options: { replicas: 3, spinIterations: 2000 } },
  { name: 'defaults', options: { replicas: 3 } },
  { name: 'target 2 ms', options: { replicas: 3, batch: { latencyTargetUs: TARGET_US } } },
];
/** Time at each load before it is measured: adaptive batching and the controller settle. */
const SETTLE_MS = 1000;

export interface LatencyTargetRow {
  place: 'one process' | '3 hosts';
  variant: string;
  fraction: number;
  offeredPerSecond: number;
  achievedPerSecond: number;
  p50Us: number;
  p99Us: number;
  refused: number;
  runs: number;
}

export interface LatencyTargetResult {
  maxima: Array<{ place: string; variant: string; writesPerSecond: number; runs: number[] }>;
  rows: LatencyTargetRow[];
}

export interface LatencyTargetSettings {
  env: Environment;
  seconds: number;
  runs: number;
  fractions: number[];
  hosts: boolean;
  log: (line: string) => void;
}

/** A remote client keeps more in flight, as the hosts suite does: its round trips are longer. */
const REMOTE_LOAD = { writers: 4, writeWindow: 4096 };

async function closedLoopMax(target: LoadTarget, seconds: number, load: { writers?: number; writeWindow?: number } = {}): Promise<number> {
  await runClosedLoop(target, { durationMs: 1000, ...load });
  return (await runClosedLoop(target, { durationMs: seconds * 1000, ...load })).writesPerSecond;
}

async function openLoopAt(target: LoadTarget, ratePerSecond: number, seconds: number): Promise<OpenLoopReport> {
  await runOpenLoop(target, { ratePerSecond, durationMs: SETTLE_MS });
  return runOpenLoop(target, { ratePerSecond, durationMs: seconds * 1000 });
}

function summarise(place: LatencyTargetRow['place'], variant: string, fraction: number, ratePerSecond: number, reports: OpenLoopReport[]): LatencyTargetRow {
  return {
    place,
    variant,
    fraction,
    offeredPerSecond: ratePerSecond,
    achievedPerSecond: median(reports.map((report) => report.achievedPerSecond)),
    p50Us: median(reports.map((report) => report.latencyUs.p50)),
    p99Us: median(reports.map((report) => report.latencyUs.p99)),
    refused: reports.reduce((total, report) => total + report.refused, 0),
    runs: reports.length,
  };
}

async function inProcess(settings: LatencyTargetSettings, result: LatencyTargetResult): Promise<void> {
  const maxima = new Map<string, number[]>(IN_PROCESS.map(({ name }) => [name, []]));
  for (let run = 0; run < settings.runs; run++) {
    for (const { name, options } of run % 2 === 0 ? IN_PROCESS : [...IN_PROCESS].reverse()) {
      const chain = createChain(options);
      try {
        maxima.get(name)!.push(await closedLoopMax(chain, settings.seconds));
      } finally {
        await chain.close();
      }
    }
  }
  for (const { name } of IN_PROCESS) {
    const runs = maxima.get(name)!;
    result.maxima.push({ place: 'one process', variant: name, writesPerSecond: median(runs), runs });
    settings.log(`  one process, ${name}: closed-loop maximum ${formatRate(median(runs))} (${runs.map(formatRate).join(' ')})`);
  }
  const base = median(maxima.get('defaults')!);
  for (const fraction of settings.fractions) {
    const ratePerSecond = base * fraction;
    const reports = new Map<string, OpenLoopReport[]>(IN_PROCESS.map(({ name }) => [name, []]));
    for (let run = 0; run < settings.runs; run++) {
      for (const { name, options } of run % 2 === 0 ? IN_PROCESS : [...IN_PROCESS].reverse()) {
        const chain = createChain(options);
        try {
          await prefill(chain, {});
          reports.get(name)!.push(await openLoopAt(chain, ratePerSecond, settings.seconds));
        } finally {
          await chain.close();
        }
      }
    }
    for (const { name } of IN_PROCESS) {
      const row = summarise('one process', name, fraction, ratePerSecond, reports.get(name)!);
      result.rows.push(row);
      settings.log(`  one process, ${Math.round(fraction * 100)} %, ${name}: p50 ${row.p50Us} us, p99 ${row.p99Us} us`);
    }
  }
}

async function acrossHosts(settings: LatencyTargetSettings, result: LatencyTargetResult): Promise<void> {
  const hosts = await startLocalHosts(3, { log: settings.log });
  const variants = [
    { name: 'defaults', chain: {} },
    { name: 'target 2 ms', chain: { batch: { latencyTargetUs: TARGET_US } } },
  ];
  try {
    const clients = await Promise.all(variants.map((variant) => connect({ hosts: hosts.urls, secret: hosts.secret, chain: variant.chain })));
    try {
      await prefill(clients[0]!, {});
      const maxima = variants.map(() => [] as number[]);
      for (let run = 0; run < settings.runs; run++) {
        for (let index = 0; index < variants.length; index++) maxima[index]!.push(await closedLoopMax(clients[index]!, settings.seconds, REMOTE_LOAD));
      }
      variants.forEach((variant, index) => {
        result.maxima.push({ place: '3 hosts', variant: variant.name, writesPerSecond: median(maxima[index]!), runs: maxima[index]! });
        settings.log(`  3 hosts, ${variant.name}: closed-loop maximum ${formatRate(median(maxima[index]!))}`);
      });
      const base = median(maxima[0]!);
      for (const fraction of settings.fractions) {
        const reports = variants.map(() => [] as OpenLoopReport[]);
        for (let run = 0; run < settings.runs; run++) {
          for (let index = 0; index < variants.length; index++) reports[index]!.push(await openLoopAt(clients[index]!, base * fraction, settings.seconds));
        }
        variants.forEach((variant, index) => {
          const row = summarise('3 hosts', variant.name, fraction, base * fraction, reports[index]!);
          result.rows.push(row);
          settings.log(`  3 hosts, ${Math.round(fraction * 100)} %, ${variant.name}: p50 ${row.p50Us} us, p99 ${row.p99Us} us`);
        });
      }
    } finally {
      await Promise.all(clients.map((client) => client.close()));
    }
  } finally {
    await hosts.stop();
  }
}

export async function latencyTargetBench(settings: LatencyTargetSettings): Promise<LatencyTargetResult> {
  const result: LatencyTargetResult = { maxima: [], rows: [] };
  await inProcess(settings, result);
  if (settings.hosts) await acrossHosts(settings, result);
  for (const row of result.rows) record('latency-target', { seconds: settings.seconds, ...row }, settings.env);
  for (const maximum of result.maxima) record('latency-target.max', { seconds: settings.seconds, ...maximum }, settings.env);
  for (const place of ['one process', '3 hosts'] as const) {
    const rows = result.rows.filter((row) => row.place === place);
    if (rows.length === 0) continue;
    const maxima = result.maxima.filter((maximum) => maximum.place === place);
    printTable(
      `p99 against offered load, ${place} (3 replicas, 100 B values, open loop from intended start, medians of ${settings.runs}); closed-loop maxima: ${maxima.map((maximum) => `${maximum.variant} ${formatRate(maximum.writesPerSecond)}`).join(', ')}`,
      ['load', 'offered', 'variant', 'achieved', 'p50', 'p99', 'refused'],
      rows.map((row) => [`${Math.round(row.fraction * 100)} %`, formatRate(row.offeredPerSecond), row.variant, formatRate(row.achievedPerSecond), `${row.p50Us} us`, `${row.p99Us} us`, String(row.refused)]),
    );
  }
  return result;
}
