/**
 * Failover under load: a 3-replica chain in a closed loop; at 2 s one replica (head, middle or
 * tail) is crashed with crashReplica(). Reported per role: the stall (the longest time without any
 * acknowledgement around the crash, i.e. from the crash to the first write acknowledged after it),
 * when the reconfiguration was installed, and throughput in the second before and after.
 */
import { createChain, type ReconfigurationEvent } from '../src/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate, printTable, type Environment } from '../src/bench/harness.js';
import { countAt as countSamplesAt, longestStall, type AckSamples } from './ack-samples.js';
import { record } from './ledger.js';

export interface FailoverRow {
  role: 'head' | 'middle' | 'tail';
  stallMs: number;
  reconfiguredAfterMs: number;
  writesPerSecondBefore: number;
  writesPerSecondAfter: number;
  /** Writes acknowledged per `bucketMs`, the first bucket starting `startMs` from the crash (negative: before it). */
  timeline: { bucketMs: number; startMs: number; acknowledged: number[] };
}

const CRASH_AT_MS = 2000;
const RUN_MS = 4000;
const SAMPLE_MS = 1;
/** The timeline around the crash: 10 ms buckets from 200 ms before it to 500 ms after. */
const TIMELINE = { bucketMs: 10, startMs: -200, endMs: 500 };

export async function failover(env: Environment, log: (line: string) => void): Promise<FailoverRow[]> {
  const rows: FailoverRow[] = [];
  for (const role of ['head', 'middle', 'tail'] as const) {
    const chain = createChain({ replicas: 3 });
    try {
      await runClosedLoop(chain, { durationMs: 500 });
      const samples: AckSamples = [];
      const started = performance.now();
      let crashedAt = 0;
      let reconfiguredAt = 0;
      chain.once('reconfigured', (_event: ReconfigurationEvent) => {
        reconfiguredAt = performance.now();
      });
      const sampler = setInterval(() => samples.push([performance.now(), chain.stats().writesAcknowledged]), SAMPLE_MS);
      const crashTimer = setTimeout(() => {
        crashedAt = performance.now();
        chain.crashReplica(chain.members().find((member) => member.role === role)!.id);
      }, CRASH_AT_MS);
      await runClosedLoop(chain, { durationMs: RUN_MS });
      clearInterval(sampler);
      clearTimeout(crashTimer);
      // The stall: the longest stretch with no new acknowledgement, from the crash on.
      const { stallMs } = longestStall(samples, crashedAt);
      const countAt = (time: number): number => countSamplesAt(samples, time);
      const acknowledged: number[] = [];
      for (let start = TIMELINE.startMs; start < TIMELINE.endMs; start += TIMELINE.bucketMs) {
        acknowledged.push(countAt(crashedAt + start + TIMELINE.bucketMs) - countAt(crashedAt + start));
      }
      const row: FailoverRow = {
        role,
        stallMs,
        reconfiguredAfterMs: reconfiguredAt - crashedAt,
        writesPerSecondBefore: countAt(crashedAt) - countAt(crashedAt - 1000),
        writesPerSecondAfter: countAt(crashedAt + 1000) - countAt(crashedAt),
        timeline: { bucketMs: TIMELINE.bucketMs, startMs: TIMELINE.startMs, acknowledged },
      };
      rows.push(row);
      log(`  ${role}: stall ${row.stallMs.toFixed(0)} ms, reconfigured after ${row.reconfiguredAfterMs.toFixed(1)} ms (run ${((performance.now() - started) / 1000).toFixed(1)} s)`);
    } finally {
      await chain.close();
    }
  }
  for (const row of rows) record('failover', row, env);
  printTable(
    'Failover under closed-loop load (3 replicas, 100 B values; crash at 2 s)',
    ['crashed', 'stall (no acks)', 'reconfigured after', 'writes/s 1 s before', 'writes/s 1 s after'],
    rows.map((row) => [
      row.role,
      `${row.stallMs.toFixed(0)} ms`,
      `${row.reconfiguredAfterMs.toFixed(1)} ms`,
      formatRate(row.writesPerSecondBefore),
      formatRate(row.writesPerSecondAfter),
    ]),
  );
  return rows;
}
