/**
 * Many chains across hosts: three `dabba serve` processes holding one 3-replica chain, next to
 * three holding 12 chains of 3 replicas (each host heads 4 and tails 4), each driven by a remote
 * client in this process, runs interleaved (which cluster goes first alternates); medians of the
 * runs. Each host's CPU (user + system, from /proc/<pid>/stat) over a run says whether the work is
 * spread: with one chain the head's host does the most, with twelve every host does the same.
 */
import { readFileSync } from 'node:fs';
import { connect, type RemoteClient } from '../src/client/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate, median, printTable } from '../src/bench/harness.js';
import { startLocalHosts, type LocalHosts } from '../src/bench/local-hosts.js';
import type { ChainBenchSettings } from './chain-bench.js';
import { record } from './ledger.js';

const WARMUP_MS = 1000;
/** Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

export interface HostsChainsRow {
  chains: number;
  writesPerSecond: number;
  runs: number[];
  p99Us: number;
  /** Each host's CPU over the median run, in % of one core, busiest first. */
  hostCpuPercent: number[];
}

export async function hostsChainsBench(settings: ChainBenchSettings): Promise<HostsChainsRow[]> {
  const setups: Array<{ chains: number; hosts: LocalHosts | null; client: RemoteClient | null; runs: Array<{ rate: number; p99: number; cpu: number[] }> }> = [
    { chains: 1, hosts: null, client: null, runs: [] },
    { chains: 12, hosts: null, client: null, runs: [] },
  ];
  try {
    for (const setup of setups) {
      setup.hosts = await startLocalHosts(3, { log: settings.log, chains: setup.chains, replicas: 3 });
      setup.client = await connect({ hosts: setup.hosts.urls, secret: setup.hosts.secret });
      await runClosedLoop(setup.client, { durationMs: WARMUP_MS, writers: 4, writeWindow: 4096 });
    }
    for (let run = 0; run < settings.runs; run++) {
      for (const setup of run % 2 === 0 ? setups : [...setups].reverse()) {
        const before = setup.hosts!.pids.map(cpuTicks);
        const report = await runClosedLoop(setup.client!, { durationMs: settings.seconds * 1000, writers: 4, writeWindow: 4096 });
        const cpu = setup.hosts!.pids.map((pid, index) => ((cpuTicks(pid) - before[index]!) / USER_HZ / settings.seconds) * 100);
        setup.runs.push({ rate: report.writesPerSecond, p99: report.writeLatencyUs.p99, cpu });
        settings.log(`  run ${run + 1}/${settings.runs}: ${setup.chains} chain${setup.chains === 1 ? '' : 's'} ${formatRate(report.writesPerSecond)}, host CPU ${cpu.map((percent) => `${percent.toFixed(0)} %`).join(' / ')}`);
      }
    }
  } finally {
    for (const setup of setups) {
      await setup.client?.close();
      await setup.hosts?.stop();
    }
  }
  const rows = setups.map(({ chains, runs }): HostsChainsRow => {
    const rate = median(runs.map((entry) => entry.rate));
    const middle = runs.reduce((best, entry) => (Math.abs(entry.rate - rate) < Math.abs(best.rate - rate) ? entry : best));
    return { chains, writesPerSecond: rate, runs: runs.map((entry) => entry.rate), p99Us: middle.p99, hostCpuPercent: [...middle.cpu].sort((a, b) => b - a) };
  });
  for (const row of rows) record('hosts-chains', { seconds: settings.seconds, valueBytes: 100, ...row }, settings.env);
  printTable(
    '3 dabba serve processes on loopback, 3 replicas per chain, 100 B values, closed loop (4 x 4096 in flight): 1 chain vs 12',
    ['chains', 'writes/s (median)', 'p99', 'host CPU (busiest first)', 'vs 1 chain'],
    rows.map((row) => [
      String(row.chains),
      formatRate(row.writesPerSecond),
      `${row.p99Us} us`,
      row.hostCpuPercent.map((percent) => `${percent.toFixed(0)} %`).join(' / '),
      `${(row.writesPerSecond / rows[0]!.writesPerSecond).toFixed(2)}x`,
    ]),
  );
  return rows;
}

/** A process's user + system CPU so far, in clock ticks (fields 14 and 15 of /proc/<pid>/stat). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}
