/**
 * A slow host across hosts, before and after its demotion: four `dabba serve` processes on loopback
 * (one chain of three replicas and a spare), a remote client's closed loop of puts (4 writers x 4096
 * in flight). Each run measures the chain healthy, then caps the CPU of the middle's host to a
 * tenth of a core with a cgroup (root only) and measures again: with demotion off (hosts started
 * with --no-fail-slow), after a moment to settle; with it on, once the master has moved the chain
 * off the throttled host. Fresh hosts for each variant, medians of the runs.
 */
import { connect } from '../src/client/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate, median, printTable, type Environment } from '../src/bench/harness.js';
import { startLocalHosts, type LocalHosts } from '../src/bench/local-hosts.js';
import { throttleCpu } from '../src/bench/cpu-throttle.js';
import { record } from './ledger.js';

type Variant = 'demotion off' | 'demotion on';
const VARIANTS: readonly Variant[] = ['demotion off', 'demotion on'];
const LOAD = { writers: 4, writeWindow: 4096 };
const CPU_FRACTION = 0.1;
const SETTLE_MS = 3000;
const DEMOTION_WAIT_MS = 60_000;

export interface HostsFailSlowRow {
  variant: Variant;
  healthyPerSecond: number;
  throttledPerSecond: number;
  ratio: number;
  /** From the throttle to the chain being off the throttled host (demotion on). */
  movedAfterMs: number | null;
  runs: Array<{ healthy: number; throttled: number; movedAfterMs: number | null }>;
}

interface ChainStatus {
  chains: Array<{ members: Array<{ hostId: string | null; role: string }> }>;
}

async function chainOf(hosts: LocalHosts): Promise<ChainStatus['chains'][number]> {
  const answer = await fetch(`${hosts.urls[0]!.replace(/^ws/, 'http')}/status`);
  return ((await answer.json()) as ChainStatus).chains[0]!;
}

async function measure(variant: Variant, seconds: number, log: (line: string) => void): Promise<{ healthy: number; throttled: number; movedAfterMs: number | null }> {
  const hosts = await startLocalHosts(4, { replicas: 3, hostArgs: () => (variant === 'demotion off' ? ['--no-fail-slow'] : []) });
  try {
    const client = await connect({ hosts: hosts.urls, secret: hosts.secret });
    try {
      await runClosedLoop(client, { durationMs: 2000, ...LOAD });
      const healthy = (await runClosedLoop(client, { durationMs: seconds * 1000, ...LOAD })).writesPerSecond;
      const middle = (await chainOf(hosts)).members.find((member) => member.role === 'middle')!.hostId!;
      const index = Number(/^bench-h(\d+)$/.exec(middle)![1]) - 1;
      const throttle = throttleCpu(hosts.pids[index]!, CPU_FRACTION, 'dabba-bench-slow');
      try {
        const since = performance.now();
        let movedAfterMs: number | null = null;
        if (variant === 'demotion on') {
          // Load keeps the slow host measurable until the master moves the chain off it.
          const movedOff = async (): Promise<boolean> => {
            const chain = await chainOf(hosts);
            return chain.members.length === 3 && chain.members.every((member) => member.role !== 'joining' && member.hostId !== middle);
          };
          while (!(await movedOff())) {
            if (performance.now() - since > DEMOTION_WAIT_MS) throw new Error(`the master did not move the chain off the throttled host ${middle} within ${DEMOTION_WAIT_MS / 1000} s`);
            await runClosedLoop(client, { durationMs: 500, ...LOAD });
          }
          movedAfterMs = performance.now() - since;
        } else {
          await runClosedLoop(client, { durationMs: SETTLE_MS, ...LOAD });
        }
        const throttled = (await runClosedLoop(client, { durationMs: seconds * 1000, ...LOAD })).writesPerSecond;
        log(`  ${variant}: healthy ${formatRate(healthy)}, middle's host at ${CPU_FRACTION * 100} % of a core ${formatRate(throttled)}${movedAfterMs === null ? '' : ` (moved off it after ${(movedAfterMs / 1000).toFixed(1)} s)`}`);
        return { healthy, throttled, movedAfterMs };
      } finally {
        throttle.release();
      }
    } finally {
      await client.close();
    }
  } finally {
    await hosts.stop();
  }
}

export async function hostsFailSlowBench(env: Environment, seconds: number, runs: number, log: (line: string) => void): Promise<HostsFailSlowRow[]> {
  const results = new Map<Variant, Array<{ healthy: number; throttled: number; movedAfterMs: number | null }>>(VARIANTS.map((variant) => [variant, []]));
  for (let run = 0; run < runs; run++) {
    for (const variant of run % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()) results.get(variant)!.push(await measure(variant, seconds, log));
  }
  const rows = VARIANTS.map((variant): HostsFailSlowRow => {
    const of = results.get(variant)!;
    const moved = of.flatMap((run) => (run.movedAfterMs === null ? [] : [run.movedAfterMs]));
    return {
      variant,
      healthyPerSecond: median(of.map((run) => run.healthy)),
      throttledPerSecond: median(of.map((run) => run.throttled)),
      ratio: median(of.map((run) => run.throttled / run.healthy)),
      movedAfterMs: moved.length === 0 ? null : median(moved),
      runs: of,
    };
  });
  for (const row of rows) record('hosts-fail-slow', { seconds, ...row }, env);
  printTable(
    `A host throttled to ${CPU_FRACTION * 100} % of a core (cgroup), 4 dabba serve processes, one chain of 3 and a spare, remote closed loop; medians of ${runs}`,
    ['variant', 'healthy', 'middle throttled', 'vs healthy', 'moved off after'],
    rows.map((row) => [row.variant, formatRate(row.healthyPerSecond), formatRate(row.throttledPerSecond), `${row.ratio.toFixed(2)}x`, row.movedAfterMs === null ? '-' : `${(row.movedAfterMs / 1000).toFixed(1)} s`]),
  );
  return rows;
}
