/**
 * Failover across hosts: three `dabba serve` processes on loopback under a closed loop from a
 * remote client; at 2 s the host of the head, the middle or the tail is SIGKILLed. Reported per
 * role: the stall (the longest time without any acknowledgement from the kill on), when the client
 * heard of the new configuration, and throughput in the second before and the seconds after. The
 * stall is bounded below by the lease TTL (2 s): a silent host is removed only once its lease expired.
 */
import { connect } from '../src/client/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate, printTable, type Environment } from '../src/bench/harness.js';
import { startLocalHosts } from '../src/bench/local-hosts.js';
import { countAt as countSamplesAt, longestStall, type AckSamples } from './ack-samples.js';
import { record } from './ledger.js';

export interface HostsFailoverRow {
  role: 'head' | 'middle' | 'tail';
  stallMs: number;
  clientReconfiguredAfterMs: number;
  writesPerSecondBefore: number;
  /** From the end of the stall, over one second. */
  writesPerSecondAfter: number;
}

const KILL_AT_MS = 2000;
const RUN_MS = 7000;
const SAMPLE_MS = 5;

export async function hostsFailover(env: Environment, log: (line: string) => void): Promise<HostsFailoverRow[]> {
  const rows: HostsFailoverRow[] = [];
  for (const role of ['head', 'middle', 'tail'] as const) {
    const hosts = await startLocalHosts(3);
    try {
      const client = await connect({ hosts: hosts.urls, secret: hosts.secret });
      try {
        await runClosedLoop(client, { durationMs: 500, writers: 4, writeWindow: 4096 });
        const { head, tail } = client.stats();
        const victimUrl = role === 'head' ? head : role === 'tail' ? tail : hosts.urls.find((url) => url !== head && url !== tail)!;
        const victimPid = hosts.pids[hosts.urls.indexOf(victimUrl!)]!;
        const samples: AckSamples = [];
        let killedAt = 0;
        let reconfiguredAt = 0;
        client.once('reconfigured', () => {
          reconfiguredAt = performance.now();
        });
        const sampler = setInterval(() => samples.push([performance.now(), client.stats().writesAcknowledged]), SAMPLE_MS);
        const killTimer = setTimeout(() => {
          killedAt = performance.now();
          process.kill(victimPid, 'SIGKILL');
        }, KILL_AT_MS);
        await runClosedLoop(client, { durationMs: RUN_MS, writers: 4, writeWindow: 4096 });
        clearInterval(sampler);
        clearTimeout(killTimer);
        const { stallMs, endedAt: stallEnd } = longestStall(samples, killedAt);
        const countAt = (time: number): number => countSamplesAt(samples, time);
        const row: HostsFailoverRow = {
          role,
          stallMs: Math.round(stallMs),
          clientReconfiguredAfterMs: Math.round(reconfiguredAt - killedAt),
          writesPerSecondBefore: countAt(killedAt) - countAt(killedAt - 1000),
          writesPerSecondAfter: countAt(stallEnd + 1000) - countAt(stallEnd),
        };
        rows.push(row);
        log(`  ${role} host killed: stall ${row.stallMs} ms, client reconfigured after ${row.clientReconfiguredAfterMs} ms`);
      } finally {
        await client.close();
      }
    } finally {
      await hosts.stop();
    }
  }
  for (const row of rows) record('hosts-failover', row, env);
  printTable(
    'Failover across hosts: kill -9 of one dabba serve process of three under load (lease TTL 2 s)',
    ['role', 'stall', 'client told after', 'writes/s before', 'writes/s after'],
    rows.map((row) => [row.role, `${row.stallMs} ms`, `${row.clientReconfiguredAfterMs} ms`, formatRate(row.writesPerSecondBefore), formatRate(row.writesPerSecondAfter)]),
  );
  return rows;
}
