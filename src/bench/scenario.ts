/**
 * `dabba bench`: one configurable scenario against an in-process chain (or, with --hosts, a chain
 * of `dabba serve` processes on loopback), optionally with peers measured the same way in the
 * same run. Closed loop (maximum throughput: each client keeps a
 * window of operations in flight) or open loop (a fixed write rate, latency from each write's
 * intended start, so stalls are not hidden). Prints a live progress line, then a table; --json
 * prints one JSON object instead. Every row is appended to results.jsonl in the directory the user
 * names (--results-dir) or else in a fresh temp directory, never in the working directory uninvited,
 * and the output says which file.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connect } from '../client/index.js';
import { createChain, type ChainOptions, type Durability } from '../index.js';
import { prefill, runClosedLoop, runOpenLoop, type LoadTarget } from '../load.js';
import { appendResult, environment, formatRate, median, printTable, type Environment } from './harness.js';
import { startLocalHosts, type LocalHosts } from './local-hosts.js';
import { NaiveChain } from './naive-chain.js';
import { etcdCluster } from './peers/etcd.js';
import { MissingPackageError } from './peers/optional-package.js';
import { redisReplicated } from './peers/redis.js';
import { MissingBinaryError } from './peers/servers.js';

export type PeerChoice = 'naive' | 'redis' | 'etcd';

export interface ScenarioOptions {
  replicas: number;
  /** Chains over node threads (one process only; createChain's `chains` and `nodes`). */
  chains?: number;
  nodes?: number | undefined;
  valueBytes: number;
  keySpace: number;
  /** Writes per batch; undefined = the engine's adaptive batching with its default maximum. */
  batchWrites: number | undefined;
  lingerUs: number | undefined;
  /** Batches in flight before a partial batch waits (adaptive batching). */
  batchesInFlight: number | undefined;
  /** Batching to this p99 target, in microseconds (createChain's batch.latencyTargetUs); undefined = off. */
  latencyTargetUs?: number | undefined;
  /** Fraction of operations that are reads (closed loop only). */
  readRatio: number;
  /** Which replicas answer reads (createChain's and dabba serve's `reads`; default any). */
  reads?: 'any' | 'tail';
  clients: number;
  /** Operations each client keeps in flight (closed loop). */
  window: number;
  seconds: number;
  /** Open loop at this many writes/s; undefined = closed loop. */
  rate: number | undefined;
  runs: number;
  peers: PeerChoice[];
  /** Run the chain as `replicas` dabba serve processes on loopback, driven by a remote client. */
  hosts: boolean;
  /** In one process: 'async' and 'fsync' keep the replicas' logs in a new directory under the temp dir, removed after. */
  durability?: Durability;
  json: boolean;
}

interface Measurement {
  opsPerSecond: number;
  writesPerSecond: number;
  readsPerSecond: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
}

export interface ScenarioRow extends Measurement {
  system: string;
  runs: number[];
}

/** Where a scenario's results go. */
export interface ScenarioOutput {
  /** results.jsonl is appended in this directory (made if missing); undefined = a fresh directory under os.tmpdir(). */
  resultsDirectory: string | undefined;
  /** Where the table, or the JSON object, is written. */
  out: typeof process.stdout;
}

const WARMUP_MS = 1000;

export async function runScenario(options: ScenarioOptions, output: ScenarioOutput = { resultsDirectory: undefined, out: process.stdout }): Promise<ScenarioRow[]> {
  validate(options);
  const env = environment();
  const progress = options.json ? () => {} : progressLine();
  // Hosts are started once for every run, and stopped by pid at the end.
  const hosts = options.hosts ? await startLocalHosts(options.replicas, { chains: options.chains ?? 1, replicas: options.replicas, ...(options.reads === undefined ? {} : { hostArgs: () => ['--reads', options.reads!] }) }) : null;
  try {
    return await runSystems(options, env, progress, hosts, output);
  } finally {
    await hosts?.stop();
  }
}

async function runSystems(options: ScenarioOptions, env: Environment, progress: Progress, hosts: LocalHosts | null, { resultsDirectory, out }: ScenarioOutput): Promise<ScenarioRow[]> {
  const systems: Array<{ name: string; measure: () => Promise<Measurement> }> = [
    hosts === null
      ? { name: `dabba (${options.replicas} replicas${(options.chains ?? 1) > 1 ? `, ${options.chains} chains` : ''}${(options.durability ?? 'memory') === 'memory' ? '' : `, ${options.durability}`})`, measure: () => measureDabba(options, progress) }
      : { name: `dabba (${options.replicas} dabba serve processes${(options.chains ?? 1) > 1 ? `, ${options.chains} chains` : ''})`, measure: () => measureHosts(hosts, options, progress) },
  ];
  for (const peer of options.peers) systems.push(peerSystem(peer, options, progress));

  const measured = new Map<string, Measurement[]>();
  const skipped: string[] = [];
  for (let run = 1; run <= options.runs; run++) {
    for (const system of systems) {
      if (skipped.includes(system.name)) continue;
      try {
        const result = await system.measure();
        measured.set(system.name, [...(measured.get(system.name) ?? []), result]);
      } catch (error) {
        // A peer whose server or client package is missing is left out, in one line that says
        // what to install; the other systems are still measured.
        const missing = missingPrerequisite(error);
        if (missing === null) throw error;
        skipped.push(system.name);
        process.stderr.write(`skipping ${system.name}: ${missing}\n`);
      }
    }
  }
  progress(null);

  const rows: ScenarioRow[] = [...measured.entries()].map(([system, results]) => ({
    system,
    opsPerSecond: median(results.map((result) => result.opsPerSecond)),
    writesPerSecond: median(results.map((result) => result.writesPerSecond)),
    readsPerSecond: median(results.map((result) => result.readsPerSecond)),
    p50Us: median(results.map((result) => result.p50Us)),
    p99Us: median(results.map((result) => result.p99Us)),
    p999Us: median(results.map((result) => result.p999Us)),
    runs: results.map((result) => result.opsPerSecond),
  }));
  const resultsFile = resolve(resultsDirectory ?? mkdtempSync(join(tmpdir(), 'dabba-bench-')), 'results.jsonl');
  for (const row of rows) appendResult(resultsFile, 'scenario', { ...options, ...row }, env);
  if (options.json) {
    out.write(`${JSON.stringify({ environment: env, options, rows, skipped, resultsFile })}\n`);
    return rows;
  }
  const dabba = rows[0]!.opsPerSecond;
  const mode = options.rate === undefined ? `closed loop, ${options.clients} clients x ${options.window} in flight` : `open loop at ${formatRate(options.rate)}`;
  printTable(
    `${mode}, ${options.valueBytes} B values, ${Math.round(options.readRatio * 100)}% reads, ${options.seconds} s x ${options.runs} run(s); medians`,
    ['system', 'ops/s', 'writes/s', 'reads/s', 'p50', 'p99', 'p99.9', 'dabba/this'],
    rows.map((row) => [
      row.system,
      formatRate(row.opsPerSecond),
      formatRate(row.writesPerSecond),
      formatRate(row.readsPerSecond),
      `${row.p50Us} us`,
      `${row.p99Us} us`,
      `${row.p999Us} us`,
      `${(dabba / row.opsPerSecond).toFixed(2)}x`,
    ]),
    out,
  );
  out.write(`\nresults appended to ${resultsFile}\n`);
  return rows;
}

/** What a peer lacks (and the command that installs it) as one line; null for any other error. */
function missingPrerequisite(error: unknown): string | null {
  if (error instanceof MissingBinaryError) return `${error.binary} is missing (install: ${error.installCommand})`;
  if (error instanceof MissingPackageError) return `the npm package ${error.packageName} is missing (install: ${error.installCommand})`;
  return null;
}

function validate(options: ScenarioOptions): void {
  const check = (ok: boolean, message: string): void => {
    if (!ok) throw new RangeError(message);
  };
  check(Number.isInteger(options.replicas) && options.replicas >= 1 && options.replicas <= 5, '--replicas must be 1 to 5');
  check((options.chains ?? 1) >= 1 && (options.chains ?? 1) <= 1024, '--chains must be 1 to 1024');
  check(!options.hosts || options.nodes === undefined, '--nodes is for the in-process engine; with --hosts every dabba serve process is a node');
  check(options.durability === undefined || ['memory', 'async', 'fsync'].includes(options.durability), '--durability must be memory, async or fsync');
  check(!options.hosts || (options.durability ?? 'memory') === 'memory', '--durability is for the in-process engine (dabba serve keeps no log yet)');
  check(Number.isInteger(options.valueBytes) && options.valueBytes >= 1 && options.valueBytes <= 64 * 1024, '--value-size must be 1 B to 64 KiB');
  check(options.readRatio >= 0 && options.readRatio <= 1, '--read-ratio must be between 0 and 1');
  check(options.rate === undefined || options.readRatio === 0, '--rate (open loop) drives writes only: leave --read-ratio at 0');
  check(options.rate === undefined || options.rate > 0, '--rate must be positive');
  check(Number.isInteger(options.clients) && options.clients >= 1, '--clients must be a positive integer');
  check(Number.isInteger(options.window) && options.window >= 1, '--window must be a positive integer');
  check(options.seconds > 0 && options.runs >= 1, '--seconds and --runs must be positive');
}

function chainOptions(options: ScenarioOptions): ChainOptions {
  // Big values need big rings: a batch must fit in half a ring.
  const ringBytes = Math.max(8 * 1024 * 1024, 2 ** Math.ceil(Math.log2(options.valueBytes * 64 * 4)));
  return {
    replicas: options.replicas,
    ...(options.reads === undefined ? {} : { reads: options.reads }),
    ...(options.chains === undefined ? {} : { chains: options.chains }),
    ...(options.nodes === undefined ? {} : { nodes: options.nodes }),
    ringBytes,
    batch: {
      ...(options.batchWrites === undefined ? {} : { maxWrites: options.batchWrites }),
      ...(options.lingerUs === undefined ? {} : { lingerUs: options.lingerUs }),
      ...(options.batchesInFlight === undefined ? {} : { maxInFlight: options.batchesInFlight }),
      ...(options.latencyTargetUs === undefined ? {} : { latencyTargetUs: options.latencyTargetUs }),
    },
  };
}

async function measureDabba(options: ScenarioOptions, progress: Progress): Promise<Measurement> {
  const durability = options.durability ?? 'memory';
  const dataDir = durability === 'memory' ? null : mkdtempSync(join(tmpdir(), 'dabba-bench-data-'));
  const chain = createChain({ ...chainOptions(options), ...(dataDir === null ? {} : { dataDir, durability }) });
  try {
    return await measureTarget(chain, options, `dabba`, progress);
  } finally {
    await chain.close();
    if (dataDir !== null) rmSync(dataDir, { recursive: true, force: true });
  }
}

async function measureHosts(hosts: LocalHosts, options: ScenarioOptions, progress: Progress): Promise<Measurement> {
  // The hosts keep their default rings; the client's batches follow the scenario's batching flags.
  const { batch } = chainOptions(options);
  const client = await connect({ hosts: hosts.urls, secret: hosts.secret, chain: { ...(batch === undefined ? {} : { batch }) } });
  try {
    return await measureTarget(client, options, 'dabba', progress);
  } finally {
    await client.close();
  }
}

function peerSystem(peer: PeerChoice, options: ScenarioOptions, progress: Progress): { name: string; measure: () => Promise<Measurement> } {
  const noReads = (what: string): void => {
    if (options.readRatio > 0 || options.rate !== undefined) throw new RangeError(`--peers ${what} runs closed-loop writes only (no --read-ratio, no --rate)`);
  };
  switch (peer) {
    case 'naive':
      if (options.readRatio > 0) throw new RangeError('--peers naive serves writes only (no --read-ratio)');
      return {
        name: `naive postMessage chain (${options.replicas})`,
        measure: async () => {
          const chain = new NaiveChain(options.replicas);
          try {
            return await measureTarget(chain, options, 'naive', progress);
          } finally {
            await chain.close();
          }
        },
      };
    case 'redis':
      noReads('redis');
      return {
        name: 'redis + 2 replicas, WAIT 2 0',
        measure: async () => asMeasurement(await redisReplicated({ seconds: options.seconds, valueBytes: options.valueBytes, keySpace: options.keySpace, window: options.window })),
      };
    case 'etcd':
      noReads('etcd');
      return {
        name: 'etcd, 3 members (fsyncs)',
        measure: async () =>
          asMeasurement(await etcdCluster({ seconds: options.seconds, valueBytes: options.valueBytes, keySpace: options.keySpace, concurrency: Math.min(options.window * options.clients, 4096) })),
      };
  }
}

function asMeasurement(report: { writesPerSecond: number; p50Us: number; p99Us: number }): Measurement {
  return { opsPerSecond: report.writesPerSecond, writesPerSecond: report.writesPerSecond, readsPerSecond: 0, p50Us: report.p50Us, p99Us: report.p99Us, p999Us: Number.NaN };
}

async function measureTarget(target: LoadTarget, options: ScenarioOptions, label: string, progress: Progress): Promise<Measurement> {
  if (options.rate !== undefined) {
    await prefill(target, { keySpace: options.keySpace, valueBytes: options.valueBytes });
    await runOpenLoop(target, { ratePerSecond: options.rate, durationMs: WARMUP_MS, keySpace: options.keySpace, valueBytes: options.valueBytes });
    progress(`${label}: open loop at ${formatRate(options.rate)} for ${options.seconds} s`);
    const report = await runOpenLoop(target, { ratePerSecond: options.rate, durationMs: options.seconds * 1000, keySpace: options.keySpace, valueBytes: options.valueBytes });
    const { p50, p99, p999 } = report.latencyUs;
    return { opsPerSecond: report.achievedPerSecond, writesPerSecond: report.achievedPerSecond, readsPerSecond: 0, p50Us: p50, p99Us: p99, p999Us: p999 };
  }
  const load = { keySpace: options.keySpace, valueBytes: options.valueBytes, writers: options.clients, writeWindow: options.window, readRatio: options.readRatio };
  await runClosedLoop(target, { ...load, durationMs: WARMUP_MS });
  const report = await runClosedLoop(target, {
    ...load,
    durationMs: options.seconds * 1000,
    onProgress: (second) =>
      progress(`${label}: ${(second.elapsedMs / 1000).toFixed(0)} s  ${formatRate(second.writesPerSecond)} writes  ${formatRate(second.readsPerSecond)} reads`),
  });
  const { p50, p99, p999 } = report.writeLatencyUs;
  return {
    opsPerSecond: report.writesPerSecond + report.readsPerSecond,
    writesPerSecond: report.writesPerSecond,
    readsPerSecond: report.readsPerSecond,
    p50Us: p50,
    p99Us: p99,
    p999Us: p999,
  };
}

type Progress = (line: string | null) => void;

/** One status line, rewritten in place on a terminal (one line per update elsewhere); null ends it. */
function progressLine(): Progress {
  const tty = process.stderr.isTTY === true;
  let shown = false;
  return (line) => {
    if (line === null) {
      if (shown && tty) process.stderr.write('\n');
      return;
    }
    shown = true;
    process.stderr.write(tty ? `\r\x1b[2K${line}` : `${line}\n`);
  };
}

export const SCENARIO_DEFAULTS: ScenarioOptions = {
  replicas: 3,
  valueBytes: 100,
  keySpace: 100_000,
  batchWrites: undefined,
  lingerUs: undefined,
  batchesInFlight: undefined,
  readRatio: 0,
  clients: 2,
  window: 2048,
  seconds: 5,
  rate: undefined,
  runs: 1,
  peers: [],
  hosts: false,
  json: false,
};
