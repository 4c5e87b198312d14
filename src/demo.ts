/**
 * `npm start` / `dabba demo`: a real 3-replica chain in this process under a mixed closed-loop
 * load, a live progress line, and a final report with throughput, write latency percentiles and a
 * per-replica state digest proving that every replica ends with identical state.
 */
import { createChain, type Chain } from './chain.js';
import { runClosedLoop, type LoadProgress } from './load.js';
import { serveDemoHttp, type DemoHttp } from './demo-http.js';

export interface DemoOptions {
  replicas: number;
  /** Chains the keyspace is split into, and node threads they are placed on (createChain's options). */
  chains: number;
  nodes: number;
  seconds: number;
  valueBytes: number;
  readers: number;
  /** Which replicas answer reads (createChain's `reads`; default any). */
  reads?: 'any' | 'tail';
  /** Serve GET /metrics here while the demo runs (src/demo-http.ts). */
  http?: { host: string; port: number };
}

function formatRate(perSecond: number): string {
  return perSecond >= 1e6 ? `${(perSecond / 1e6).toFixed(2)} M/s` : `${(perSecond / 1e3).toFixed(1)} k/s`;
}

export async function runDemo(options: DemoOptions, out: NodeJS.WriteStream = process.stdout): Promise<boolean> {
  const chain = createChain({ replicas: options.replicas, chains: options.chains, nodes: options.nodes, reads: options.reads ?? 'any' });
  chain.on('warning', (warning: Error) => out.write(`warning: ${warning.message}\n`));
  const shape =
    options.chains === 1
      ? `${options.replicas}-replica chain, one worker thread per replica`
      : `${options.chains} chains of ${options.replicas} replicas on ${chain.stats().nodes} node threads`;
  out.write(
    `dabba: ${shape}; ${options.seconds} s of closed-loop load ` +
      `(16 B keys, ${options.valueBytes} B values, ${options.readers} reader(s))\n`,
  );
  let http: DemoHttp | null = null;
  if (options.http !== undefined) {
    http = await serveDemoHttp(chain, options.http);
    out.write(`status page at ${http.url}/ and metrics at ${http.url}/metrics while the demo runs\n`);
  }
  const live = out.isTTY === true;
  const onProgress = (progress: LoadProgress): void => {
    const stats = chain.stats();
    const line =
      `  ${(progress.elapsedMs / 1000).toFixed(0).padStart(3)} s  writes ${formatRate(progress.writesPerSecond)}  ` +
      `reads ${formatRate(progress.readsPerSecond)}  pending ${stats.writesPending}  ` +
      `applied ${stats.replicas.map((replica) => replica.appliedSeq).join('/')}`;
    out.write(live ? `\r${line}\u001b[K` : `${line}\n`);
  };
  const report = await runClosedLoop(chain, {
    durationMs: options.seconds * 1000,
    valueBytes: options.valueBytes,
    readers: options.readers,
    onProgress,
  });
  if (live) out.write('\n');
  await chain.whenIdle();
  const digests = await chain.digests();
  const stats = chain.stats();
  const layout = chain.layout();
  await http?.close();
  await chain.close();

  // Replicas of one chain must be identical; chains hold different keys.
  const consistent = digests.every((digest) => {
    const first = digests.find((other) => other.chain === digest.chain)!;
    return digest.digest === first.digest && digest.appliedSeq === first.appliedSeq;
  });
  const replicaLines =
    options.chains === 1
      ? digests.map((digest) => `#${digest.id} applied ${digest.appliedSeq} keys ${digest.keys} digest ${digest.digest}`)
      : layout.map(({ chain: id, members }) => {
          const first = digests.find((digest) => digest.chain === id)!;
          return `chain ${id} on nodes ${members.map((member) => member.node).join(' > ')}: applied ${first.appliedSeq} keys ${first.keys} digest ${first.digest}`;
        });
  const latency = report.writeLatencyUs;
  out.write(
    [
      '',
      `acknowledged writes  ${report.writes.toLocaleString('en-US')} in ${report.seconds.toFixed(1)} s = ${formatRate(report.writesPerSecond)}` +
        `  (${report.writeMegabytesPerSecond.toFixed(1)} MB/s of keys + values)`,
      `reads                ${report.reads.toLocaleString('en-US')} = ${formatRate(report.readsPerSecond)} (answered by ${options.reads === 'tail' ? 'the tail' : 'every replica'}; ${describeReads(stats)})`,
      `write latency        p50 ${latency.p50} us   p99 ${latency.p99} us   p99.9 ${latency.p999} us   (${latency.samples} samples, put() to ack)`,
      `batches              ${stats.batchesSent.toLocaleString('en-US')} sent, ${(report.writes / Math.max(1, stats.batchesSent)).toFixed(0)} writes per batch on average`,
      `memory (RSS)         ${report.rssStartMiB.toFixed(0)} MiB at start, ${report.rssEndMiB.toFixed(0)} MiB at end`,
      `replicas             ${replicaLines.join('\n                     ')}`,
      consistent
        ? options.chains === 1
          ? `consistency          OK: all ${digests.length} replicas hold identical state`
          : `consistency          OK: the replicas of each of the ${options.chains} chains hold identical state`
        : 'consistency          FAILED: replicas differ',
      `result hash          ${report.resultHash}`,
      '',
    ].join('\n'),
  );
  return consistent;
}

/** Chain 0's replicas' share of the reads, and how many waited for the commit point (CRAQ's dirty reads). */
function describeReads(stats: ReturnType<Chain['stats']>): string {
  const served = stats.replicas.reduce((sum, replica) => sum + replica.readsServed, 0);
  const dirty = stats.replicas.reduce((sum, replica) => sum + replica.dirtyReads, 0);
  const shares = stats.replicas.map((replica) => `${replica.role} ${Math.round((100 * replica.readsServed) / Math.max(1, served))} %`).join(', ');
  return `${stats.chains === 1 ? '' : 'chain 0: '}${shares}; ${dirty.toLocaleString('en-US')} waited for a commit`;
}
