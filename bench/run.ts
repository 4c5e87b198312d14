/**
 * The benchmark suites (entry point: ./main.ts). Every result is appended as a JSON line to bench/results/results.jsonl with the machine, Node
 * version and commit. `--small` is the setting `npm test` runs so the benchmarks never rot.
 */
import { environment } from '../src/bench/harness.js';
import { headline, soak, sweeps, type ChainBenchSettings } from './chain-bench.js';
import { chainsBench } from './chains-bench.js';
import { durabilityBench, durabilitySoak } from './durability-bench.js';
import { failover } from './failover-bench.js';
import { hostsBatchBench, hostsBench, hostsNodeFlagsBench, hostsTlsBench } from './hosts-bench.js';
import { hostsChainsBench } from './hosts-chains-bench.js';
import { hostsFailover } from './hosts-failover-bench.js';
import { joinBench } from './join-bench.js';
import { logBench } from './log-bench.js';
import { restartBench } from './restart-bench.js';
import { readsBench } from './reads-bench.js';
import { conditionsBench } from './conditions-bench.js';
import { watchHistoryBench, watchesBench } from './watches-bench.js';
import { metricsBench } from './metrics-bench.js';
import { failSlowBench } from './fail-slow-bench.js';
import { hostsFailSlowBench } from './hosts-fail-slow-bench.js';
import { latencyTargetBench } from './latency-target-bench.js';
import { micro } from './micro-bench.js';
import { peers } from './peers-bench.js';
import { openLoop } from './openloop-bench.js';
import { threadCpu } from './thread-cpu.js';

export interface BenchOptions {
  suites: string[];
  seconds: number;
  runs: number;
  soakSeconds: number;
  /** The restart suite: how long the killed host stays down (default 10 s). */
  downMs?: number;
  small: boolean;
  log?: (line: string) => void;
}

export async function runBenchmarks(options: BenchOptions): Promise<Record<string, unknown>> {
  const env = environment();
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  log(`dabba benchmarks: ${env.cpu}, ${env.cores} cores, ${env.memoryGiB} GiB, Node ${env.node}, commit ${env.commit}`);
  const settings: ChainBenchSettings = { seconds: options.seconds, runs: options.runs, env, log };
  const results: Record<string, unknown> = {};
  const wants = (suite: string): boolean => options.suites.includes(suite) || options.suites.includes('all');
  if (wants('micro')) results.micro = await micro(env, options.small);
  if (wants('headline')) results.headline = await headline(settings);
  if (wants('latency-target')) {
    const small = options.small;
    results.latencyTarget = await latencyTargetBench({ env, seconds: small ? 0.3 : options.seconds, runs: small ? 1 : options.runs, fractions: small ? [0.5] : [0.1, 0.25, 0.5, 0.75, 0.9], hosts: true, log });
  }
  if (wants('openloop')) results.openloop = await openLoop(settings, options.small ? [0.25, 0.75] : [0.1, 0.25, 0.5, 0.75, 0.9]);
  if (wants('sweeps')) results.sweeps = await sweeps(settings, options.small);
  if (wants('soak')) results.soak = await soak(settings, options.soakSeconds);
  if (wants('failover')) results.failover = await failover(env, log);
  if (wants('join')) results.join = await joinBench(env, options.small ? [5_000] : [10_000, 100_000, 1_000_000], options.small ? 1 : options.runs, log);
  // Each peer measurement starts and stops its own servers; --small keeps it to one short round.
  if (wants('peers')) results.peers = await peers(options.small ? { ...settings, seconds: 0.5, runs: 1 } : settings);
  if (wants('hosts')) results.hosts = await hostsBench(options.small ? { ...settings, seconds: 0.5, runs: 1 } : settings);
  if (wants('hosts-chains')) results.hostsChains = await hostsChainsBench(options.small ? { ...settings, seconds: 0.5, runs: 1 } : settings);
  // Not in 'all': a comparison behind one default, rerun when that default is in question.
  if (options.suites.includes('hosts-batch')) results.hostsBatch = await hostsBatchBench(settings);
  if (options.suites.includes('hosts-node-flags')) results.hostsNodeFlags = await hostsNodeFlagsBench(settings);
  if (options.suites.includes('hosts-tls')) results.hostsTls = await hostsTlsBench(settings);
  if (options.suites.includes('hosts-failover')) results.hostsFailover = await hostsFailover(env, log);
  if (wants('reads')) results.reads = await readsBench(env, options.small ? 0.5 : options.seconds, options.small ? 1 : options.runs, log, !options.small);
  if (wants('conditions')) results.conditions = await conditionsBench(env, options.small ? 0.3 : Math.min(options.seconds, 2.5), options.small ? 1 : options.runs, log);
  // Not in 'all': behind one default (ChainOptions.watchHistoryBytes), rerun when it is in question.
  if (options.suites.includes('fail-slow')) results.failSlow = await failSlowBench(env, Math.min(options.seconds, 3), options.runs, log);
  // Not in 'all': needs root (a cgroup caps a host's CPU).
  if (options.suites.includes('hosts-fail-slow')) results.hostsFailSlow = await hostsFailSlowBench(env, Math.min(options.seconds, 3), options.runs, log);
  if (options.suites.includes('metrics')) results.metrics = await metricsBench(env, options.seconds, options.runs, log);
  if (options.suites.includes('watch-history')) results.watchHistory = await watchHistoryBench(env, Math.min(options.seconds, 2.5), options.runs, log);
  if (wants('watches')) results.watches = await watchesBench(env, options.small ? 0.3 : Math.min(options.seconds, 2.5), options.small ? 1 : options.runs, log);
  if (wants('chains')) results.chains = await chainsBench(env, options.small ? 0.5 : options.seconds, options.small ? 1 : options.runs, log);
  if (wants('log')) results.log = logBench(env, options.small ? 0.2 : options.seconds, log);
  if (wants('durability-soak')) results.durabilitySoak = await durabilitySoak(env, options.small ? 1 : options.soakSeconds, log);
  if (wants('restart')) results.restart = await restartBench(env, log, options.small ? { runs: 1, keys: 5_000, downMs: 500 } : { runs: options.runs, ...(options.downMs === undefined ? {} : { downMs: options.downMs }) });
  if (wants('durability')) results.durability = await durabilityBench(env, options.small ? 0.5 : options.seconds, options.small ? 1 : options.runs, log);
  if (wants('cpu')) results.cpu = await threadCpu(env, options.seconds, options.small ? [1000] : [1000, 10_000, 100_000], log);
  return results;
}
