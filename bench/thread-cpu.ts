/**
 * Where the CPU goes, per thread: reads each thread's user+system time from /proc/self/task (Linux)
 * before and after a run, and attributes it to the main thread, each replica (by the OS thread id
 * its worker publishes), and "runtime" (V8's GC and compiler threads, libuv). Reported in CPU
 * nanoseconds per acknowledged write, which is steadier than throughput on a shared machine.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createChain } from '../src/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate, printTable, type Environment } from '../src/bench/harness.js';
import { record } from './ledger.js';

const CLOCK_TICKS_PER_SECOND = 100;

/** Each thread of this process (by OS thread id): its user + system CPU time so far, in ms. */
export function threadCpuMilliseconds(): Map<number, number> {
  const times = new Map<number, number>();
  for (const entry of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // Fields 14 and 15 of stat (utime, stime), counted after the command name.
      times.set(Number(entry), ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND);
    } catch {
      // The thread exited between listing and reading.
    }
  }
  return times;
}

export interface ThreadCpuRow {
  keySpace: number;
  writesPerSecond: number;
  nsPerWrite: Record<string, number>;
}

export async function threadCpu(env: Environment, seconds: number, keySpaces: number[], log: (line: string) => void): Promise<ThreadCpuRow[]> {
  let supported = true;
  try {
    readdirSync('/proc/self/task');
  } catch {
    supported = false;
  }
  if (!supported) {
    log('  thread CPU accounting needs Linux /proc; skipped on this platform');
    return [];
  }
  const rows: ThreadCpuRow[] = [];
  for (const keySpace of keySpaces) {
    const chain = createChain({ replicas: 3 });
    try {
      await runClosedLoop(chain, { durationMs: 700, keySpace, writeWindow: 4096 });
      const before = threadCpuMilliseconds();
      const report = await runClosedLoop(chain, { durationMs: seconds * 1000, keySpace, writeWindow: 4096 });
      const after = threadCpuMilliseconds();
      const roles = new Map<number, string>([[process.pid, 'main (client)']]);
      for (const replica of chain.stats().replicas) roles.set(replica.osThreadId, `replica ${replica.id} (${replica.role})`);
      const nsPerWrite: Record<string, number> = {};
      for (const [thread, milliseconds] of after) {
        const role = roles.get(thread) ?? 'runtime (GC, compiler, libuv)';
        const spent = milliseconds - (before.get(thread) ?? 0);
        nsPerWrite[role] = (nsPerWrite[role] ?? 0) + (spent * 1e6) / report.writes;
      }
      nsPerWrite.total = Object.values(nsPerWrite).reduce((sum, value) => sum + value, 0);
      rows.push({ keySpace, writesPerSecond: report.writesPerSecond, nsPerWrite });
      log(`  ${keySpace} keys: ${formatRate(report.writesPerSecond)}, ${nsPerWrite.total!.toFixed(0)} CPU ns per write`);
    } finally {
      await chain.close();
    }
  }
  for (const row of rows) record('thread-cpu', row, env);
  const roles = [...new Set(rows.flatMap((row) => Object.keys(row.nsPerWrite)))].filter((role) => role !== 'total').sort();
  printTable(
    'CPU time per acknowledged write, by thread (3 replicas, 100 B values, closed loop)',
    ['thread', ...rows.map((row) => `${row.keySpace} keys`)],
    [
      ...roles.map((role) => [role, ...rows.map((row) => `${(row.nsPerWrite[role] ?? 0).toFixed(0)} ns`)]),
      ['total', ...rows.map((row) => `${row.nsPerWrite.total!.toFixed(0)} ns`)],
      ['writes/s', ...rows.map((row) => formatRate(row.writesPerSecond))],
    ],
  );
  return rows;
}
