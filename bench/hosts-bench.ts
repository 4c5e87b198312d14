/**
 * Hosts over loopback: three `dabba serve` processes (one replica each, on its own worker thread
 * behind rings, linked by uWebSockets.js/ws) driven by a remote client in this process, next to
 * the same 3-replica chain in one process, interleaved run by run; medians of the runs.
 */
import { connect } from '../src/client/index.js';
import { runClosedLoop, type LoadReport } from '../src/load.js';
import { formatRate, median, printTable } from '../src/bench/harness.js';
import { SERVE_NODE_FLAGS } from '../src/host/node-flags.js';
import { startLocalHosts } from '../src/bench/local-hosts.js';
import { createThrowawayCa } from '../src/bench/peers/throwaway-ca.js';
import { measureHeadlineDabba, type ChainBenchSettings } from './chain-bench.js';
import { record } from './ledger.js';

const WARMUP_MS = 1000;

export interface HostsBenchResult {
  hostsWritesPerSecond: number;
  inProcessWritesPerSecond: number;
  ratio: number;
  hostsRuns: number[];
  inProcessRuns: number[];
  hostsLatencyUs: LoadReport['writeLatencyUs'];
  inProcessLatencyUs: LoadReport['writeLatencyUs'];
}

export async function hostsBench(settings: ChainBenchSettings): Promise<HostsBenchResult> {
  const hosts = await startLocalHosts(3, { log: settings.log });
  const hostsReports: LoadReport[] = [];
  const inProcessReports: LoadReport[] = [];
  try {
    const client = await connect({ hosts: hosts.urls, secret: hosts.secret });
    try {
      await runClosedLoop(client, { durationMs: WARMUP_MS, writers: 4, writeWindow: 4096 });
      for (let run = 0; run < settings.runs; run++) {
        const inProcess = await measureHeadlineDabba(settings.seconds);
        const overHosts = await runClosedLoop(client, { durationMs: settings.seconds * 1000, writers: 4, writeWindow: 4096 });
        inProcessReports.push(inProcess);
        hostsReports.push(overHosts);
        settings.log(`  run ${run + 1}/${settings.runs}: 3 hosts ${formatRate(overHosts.writesPerSecond)}, one process ${formatRate(inProcess.writesPerSecond)}`);
      }
    } finally {
      await client.close();
    }
  } finally {
    await hosts.stop();
  }
  const pick = (reports: LoadReport[]): LoadReport => {
    const rate = median(reports.map((report) => report.writesPerSecond));
    return reports.reduce((best, report) => (Math.abs(report.writesPerSecond - rate) < Math.abs(best.writesPerSecond - rate) ? report : best));
  };
  const hostsMedian = median(hostsReports.map((report) => report.writesPerSecond));
  const inProcessMedian = median(inProcessReports.map((report) => report.writesPerSecond));
  const result: HostsBenchResult = {
    hostsWritesPerSecond: hostsMedian,
    inProcessWritesPerSecond: inProcessMedian,
    ratio: hostsMedian / inProcessMedian,
    hostsRuns: hostsReports.map((report) => report.writesPerSecond),
    inProcessRuns: inProcessReports.map((report) => report.writesPerSecond),
    hostsLatencyUs: pick(hostsReports).writeLatencyUs,
    inProcessLatencyUs: pick(inProcessReports).writeLatencyUs,
  };
  record('hosts', { seconds: settings.seconds, valueBytes: 100, ...result }, settings.env);
  printTable(
    '3 replicas, 16 B keys, 100 B values, closed loop: three dabba serve processes on loopback vs one process',
    ['setup', 'writes/s (median)', 'p50', 'p99', 'hosts / one process'],
    [
      ['3 dabba serve processes, remote client (4 x 4096 in flight)', formatRate(hostsMedian), `${result.hostsLatencyUs.p50} us`, `${result.hostsLatencyUs.p99} us`, `${result.ratio.toFixed(2)}x`],
      ['3 replicas in one process (2 x 2048 in flight)', formatRate(inProcessMedian), `${result.inProcessLatencyUs.p50} us`, `${result.inProcessLatencyUs.p99} us`, '1.00x'],
    ],
  );
  return result;
}

export interface HostsBatchResult {
  smallBatchWritesPerSecond: number;
  largeBatchWritesPerSecond: number;
  ratio: number;
  smallRuns: number[];
  largeRuns: number[];
}

/**
 * The remote client's batch size across hosts: 1024-write batches (the in-process default) against
 * 4096 (the remote default), two clients of the same three hosts, alternating which goes first.
 */
export async function hostsBatchBench(settings: ChainBenchSettings): Promise<HostsBatchResult> {
  const hosts = await startLocalHosts(3, { log: settings.log });
  const smallRuns: number[] = [];
  const largeRuns: number[] = [];
  try {
    const small = await connect({ hosts: hosts.urls, secret: hosts.secret, chain: { batch: { maxWrites: 1024, maxBytes: 1024 * 1024 } } });
    const large = await connect({ hosts: hosts.urls, secret: hosts.secret });
    try {
      const load = { writers: 4, writeWindow: 4096 };
      for (const client of [small, large]) await runClosedLoop(client, { durationMs: WARMUP_MS, ...load });
      for (let run = 0; run < settings.runs; run++) {
        const order = run % 2 === 0 ? [small, large] : [large, small];
        for (const client of order) {
          const rate = (await runClosedLoop(client, { durationMs: settings.seconds * 1000, ...load })).writesPerSecond;
          (client === small ? smallRuns : largeRuns).push(rate);
        }
        settings.log(`  run ${run + 1}/${settings.runs}: 1024-write batches ${formatRate(smallRuns.at(-1)!)}, 4096-write batches ${formatRate(largeRuns.at(-1)!)}`);
      }
    } finally {
      await small.close();
      await large.close();
    }
  } finally {
    await hosts.stop();
  }
  const result: HostsBatchResult = {
    smallBatchWritesPerSecond: median(smallRuns),
    largeBatchWritesPerSecond: median(largeRuns),
    ratio: median(largeRuns) / median(smallRuns),
    smallRuns,
    largeRuns,
  };
  record('hosts-batch', { seconds: settings.seconds, valueBytes: 100, ...result }, settings.env);
  printTable(
    'Remote client batch size, three dabba serve processes, 100 B values, 4 x 4096 in flight (alternating runs)',
    ['batch', 'writes/s (median)', 'vs 1024'],
    [
      ['1024 writes, 1 MiB (in-process default)', formatRate(result.smallBatchWritesPerSecond), '1.00x'],
      ['4096 writes, 2 MiB (remote default)', formatRate(result.largeBatchWritesPerSecond), `${result.ratio.toFixed(2)}x`],
    ],
  );
  return result;
}

export interface HostsNodeFlagsResult {
  withoutWritesPerSecond: number;
  withWritesPerSecond: number;
  ratio: number;
  withoutRuns: number[];
  withRuns: number[];
}

/**
 * Three fresh hosts per run, started without and with SERVE_NODE_FLAGS (src/host/node-flags.ts),
 * alternating which goes first; each run writes for a warm-up, then is measured.
 */
export async function hostsNodeFlagsBench(settings: ChainBenchSettings): Promise<HostsNodeFlagsResult> {
  const withoutRuns: number[] = [];
  const withRuns: number[] = [];
  const load = { writers: 4, writeWindow: 4096 };
  for (let run = 0; run < settings.runs; run++) {
    const order = run % 2 === 0 ? [[], SERVE_NODE_FLAGS] : [SERVE_NODE_FLAGS, []];
    for (const serveNodeFlags of order) {
      const hosts = await startLocalHosts(3, { serveNodeFlags });
      try {
        const client = await connect({ hosts: hosts.urls, secret: hosts.secret });
        try {
          await runClosedLoop(client, { durationMs: 2 * WARMUP_MS, ...load });
          const rate = (await runClosedLoop(client, { durationMs: settings.seconds * 1000, ...load })).writesPerSecond;
          (serveNodeFlags.length === 0 ? withoutRuns : withRuns).push(rate);
        } finally {
          await client.close();
        }
      } finally {
        await hosts.stop();
      }
    }
    settings.log(`  run ${run + 1}/${settings.runs}: without ${formatRate(withoutRuns.at(-1)!)}, with ${SERVE_NODE_FLAGS.join(' ')} ${formatRate(withRuns.at(-1)!)}`);
  }
  const result: HostsNodeFlagsResult = {
    withoutWritesPerSecond: median(withoutRuns),
    withWritesPerSecond: median(withRuns),
    ratio: median(withRuns) / median(withoutRuns),
    withoutRuns,
    withRuns,
  };
  record('hosts-node-flags', { seconds: settings.seconds, valueBytes: 100, flags: SERVE_NODE_FLAGS, ...result }, settings.env);
  printTable(
    'Three dabba serve processes started without and with their Node.js flags, 100 B values, 4 x 4096 in flight (alternating runs)',
    ['hosts started', 'writes/s (median)', 'vs without'],
    [
      ['node (no flags)', formatRate(result.withoutWritesPerSecond), '1.00x'],
      [`node ${SERVE_NODE_FLAGS.join(' ')}`, formatRate(result.withWritesPerSecond), `${result.ratio.toFixed(2)}x`],
    ],
  );
  return result;
}

export interface HostsTlsResult {
  plainWritesPerSecond: number;
  tlsWritesPerSecond: number;
  /** TLS writes/s over plain writes/s, medians. */
  ratio: number;
  plainRuns: number[];
  tlsRuns: number[];
  plainLatencyUs: LoadReport['writeLatencyUs'];
  tlsLatencyUs: LoadReport['writeLatencyUs'];
}

/**
 * What TLS costs across hosts: three fresh hosts per run, plain (ws://) or serving TLS (wss://,
 * a throwaway CA, the remote client presenting a certificate), alternating which goes first; each
 * run writes for a warm-up, then is measured. etcd stays plain: it is off the data path.
 */
export async function hostsTlsBench(settings: ChainBenchSettings): Promise<HostsTlsResult> {
  const ca = await createThrowawayCa({ addresses: [], name: 'dabba bench' });
  const plainReports: LoadReport[] = [];
  const tlsReports: LoadReport[] = [];
  const load = { writers: 4, writeWindow: 4096 };
  try {
    for (let run = 0; run < settings.runs; run++) {
      for (const secure of run % 2 === 0 ? [false, true] : [true, false]) {
        const hosts = await startLocalHosts(3, secure ? { tls: ca } : {});
        try {
          const client = await connect({ hosts: hosts.urls, secret: hosts.secret, ...(hosts.clientTls === null ? {} : { tls: hosts.clientTls }) });
          try {
            await runClosedLoop(client, { durationMs: 2 * WARMUP_MS, ...load });
            (secure ? tlsReports : plainReports).push(await runClosedLoop(client, { durationMs: settings.seconds * 1000, ...load }));
          } finally {
            await client.close();
          }
        } finally {
          await hosts.stop();
        }
      }
      settings.log(`  run ${run + 1}/${settings.runs}: plain ${formatRate(plainReports.at(-1)!.writesPerSecond)}, TLS ${formatRate(tlsReports.at(-1)!.writesPerSecond)}`);
    }
  } finally {
    ca.remove();
  }
  const plainRuns = plainReports.map((report) => report.writesPerSecond);
  const tlsRuns = tlsReports.map((report) => report.writesPerSecond);
  const medianReport = (reports: LoadReport[]): LoadReport => {
    const rate = median(reports.map((report) => report.writesPerSecond));
    return reports.reduce((best, report) => (Math.abs(report.writesPerSecond - rate) < Math.abs(best.writesPerSecond - rate) ? report : best));
  };
  const result: HostsTlsResult = {
    plainWritesPerSecond: median(plainRuns),
    tlsWritesPerSecond: median(tlsRuns),
    ratio: median(tlsRuns) / median(plainRuns),
    plainRuns,
    tlsRuns,
    plainLatencyUs: medianReport(plainReports).writeLatencyUs,
    tlsLatencyUs: medianReport(tlsReports).writeLatencyUs,
  };
  record('hosts-tls', { seconds: settings.seconds, valueBytes: 100, ...result }, settings.env);
  printTable(
    'Three dabba serve processes, plain and over TLS, 100 B values, 4 x 4096 in flight (fresh hosts per run, alternating)',
    ['links', 'writes/s (median)', 'p50', 'p99', 'vs plain'],
    [
      ['ws:// (plain)', formatRate(result.plainWritesPerSecond), `${result.plainLatencyUs.p50} us`, `${result.plainLatencyUs.p99} us`, '1.00x'],
      ['wss:// (TLS, client certificates)', formatRate(result.tlsWritesPerSecond), `${result.tlsLatencyUs.p50} us`, `${result.tlsLatencyUs.p99} us`, `${result.ratio.toFixed(2)}x`],
    ],
  );
  return result;
}
