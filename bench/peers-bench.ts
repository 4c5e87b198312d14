/**
 * dabba side by side with real servers started for the run: Redis with two replicas (writes acked by
 * `WAIT 2 0`), a single unreplicated Redis driven by redis-benchmark, and a 3-member etcd cluster.
 * Rounds are interleaved (dabba, then each peer) so machine noise hits all of them alike; figures
 * are medians over the rounds. A peer whose server is not installed (and cannot be, without root)
 * is reported and left out.
 */
import { formatRate, median, printTable } from '../src/bench/harness.js';
import { etcdCluster } from '../src/bench/peers/etcd.js';
import { redisReplicated, redisUnreplicated } from '../src/bench/peers/redis.js';
import { MissingBinaryError } from '../src/bench/peers/servers.js';
import { measureHeadlineDabba, measureHeadlineDabbaPutMany, type ChainBenchSettings } from './chain-bench.js';
import { record } from './ledger.js';

const VALUE_BYTES = 100;
const KEY_SPACE = 100_000;

export type PeerName = 'dabba' | 'dabba putMany' | 'redis replicated' | 'redis unreplicated' | 'etcd';

export interface PeerRow {
  peer: PeerName;
  setup: string;
  /** Median over the rounds. */
  writesPerSecond: number;
  runs: number[];
  /** Median p99 in microseconds; undefined where the tool reports none (redis-benchmark -q). */
  p99Us: number | undefined;
  /** dabba's writes/s divided by this row's. */
  dabbaRatio: number;
  /** dabba's with putMany windows (one promise per window, as Redis's client waits once per window) divided by this row's. */
  dabbaPutManyRatio: number;
}

export interface PeersResult {
  rows: PeerRow[];
  skipped: Array<{ peer: PeerName; reason: string }>;
}

interface Contender {
  peer: PeerName;
  setup: string;
  measure(seconds: number): Promise<{ writesPerSecond: number; p99Us: number | undefined }>;
}

const contenders: Contender[] = [
  {
    peer: 'dabba',
    setup: '3 replicas in one process, 2 writers x 2048 puts',
    measure: async (seconds) => {
      const report = await measureHeadlineDabba(seconds);
      return { writesPerSecond: report.writesPerSecond, p99Us: report.writeLatencyUs.p99 };
    },
  },
  {
    peer: 'dabba putMany',
    setup: 'the same, each window of 2048 as one putMany',
    measure: async (seconds) => {
      const report = await measureHeadlineDabbaPutMany(seconds);
      return { writesPerSecond: report.writesPerSecond, p99Us: report.writeLatencyUs.p99 };
    },
  },
  {
    peer: 'redis replicated',
    setup: 'primary + 2 replicas, 2 conns x 2048 pipelined SETs + WAIT 2 0',
    measure: (seconds) => redisReplicated({ seconds, valueBytes: VALUE_BYTES, keySpace: KEY_SPACE }),
  },
  {
    peer: 'redis unreplicated',
    setup: 'one primary, redis-benchmark -P 1000',
    measure: async (seconds) => {
      const report = await redisUnreplicated({ seconds, valueBytes: VALUE_BYTES });
      return { writesPerSecond: report.writesPerSecond, p99Us: undefined };
    },
  },
  {
    peer: 'etcd',
    setup: '3 members, 256 puts in flight, fsync per batch',
    measure: (seconds) => etcdCluster({ seconds, valueBytes: VALUE_BYTES, keySpace: KEY_SPACE }),
  },
];

export async function peers(settings: ChainBenchSettings): Promise<PeersResult> {
  const measured = new Map<PeerName, { rates: number[]; p99s: number[] }>();
  const skipped: PeersResult['skipped'] = [];
  for (let run = 0; run < settings.runs; run++) {
    const parts: string[] = [];
    for (const contender of contenders) {
      if (skipped.some((skip) => skip.peer === contender.peer)) continue;
      try {
        const result = await contender.measure(settings.seconds);
        const entry = measured.get(contender.peer) ?? { rates: [], p99s: [] };
        entry.rates.push(result.writesPerSecond);
        if (result.p99Us !== undefined) entry.p99s.push(result.p99Us);
        measured.set(contender.peer, entry);
        parts.push(`${contender.peer} ${formatRate(result.writesPerSecond)}`);
      } catch (error) {
        if (!(error instanceof MissingBinaryError)) throw error;
        skipped.push({ peer: contender.peer, reason: error.message });
        settings.log(`  skipping ${contender.peer}: ${error.binary} is missing; install the Debian package ${error.debianPackage}: ${error.installCommand}`);
      }
    }
    settings.log(`  run ${run + 1}/${settings.runs}: ${parts.join(', ')}`);
  }

  const dabbaRate = median(measured.get('dabba')!.rates);
  const dabbaPutManyRate = median(measured.get('dabba putMany')!.rates);
  const rows: PeerRow[] = contenders
    .filter((contender) => measured.has(contender.peer))
    .map((contender) => {
      const { rates, p99s } = measured.get(contender.peer)!;
      const writesPerSecond = median(rates);
      return {
        peer: contender.peer,
        setup: contender.setup,
        writesPerSecond,
        runs: rates,
        p99Us: p99s.length > 0 ? median(p99s) : undefined,
        dabbaRatio: dabbaRate / writesPerSecond,
        dabbaPutManyRatio: dabbaPutManyRate / writesPerSecond,
      };
    });
  for (const row of rows) record('peers', { seconds: settings.seconds, valueBytes: VALUE_BYTES, keySpace: KEY_SPACE, ...row }, settings.env);
  printTable(
    `Peers: 16 B keys, ${VALUE_BYTES} B values, all on this machine's loopback (p99: per write for dabba put and etcd, per window of 2048 for dabba putMany and Redis)`,
    ['peer', 'setup', 'writes/s (median)', 'p99', 'dabba/peer', 'dabba putMany/peer'],
    rows.map((row) => [
      row.peer,
      row.setup,
      formatRate(row.writesPerSecond),
      row.p99Us === undefined ? '-' : `${row.p99Us} us`,
      formatRatio(row.dabbaRatio),
      formatRatio(row.dabbaPutManyRatio),
    ]),
  );
  return { rows, skipped };
}

function formatRatio(ratio: number): string {
  return `${ratio >= 1 ? ratio.toFixed(1) : ratio.toPrecision(2)}x`;
}
