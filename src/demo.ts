/**
 * `npm start` / `dabba demo`: a real 3-replica chain in this process under a mixed closed-loop
 * load, a live progress line, and a final report with throughput, write latency percentiles and a
 * per-replica state digest proving that every replica ends with identical state.
 */
import { createChain } from './chain.js';
import { runClosedLoop, type LoadProgress } from './load.js';

export interface DemoOptions {
  replicas: number;
  seconds: number;
  valueBytes: number;
  readers: number;
}

function formatRate(perSecond: number): string {
  return perSecond >= 1e6 ? `${(perSecond / 1e6).toFixed(2)} M/s` : `${(perSecond / 1e3).toFixed(1)} k/s`;
}

export async function runDemo(options: DemoOptions, out: NodeJS.WriteStream = process.stdout): Promise<boolean> {
  const chain = createChain({ replicas: options.replicas });
  chain.on('warning', (warning: Error) => out.write(`warning: ${warning.message}\n`));
  out.write(
    `dabba: ${options.replicas}-replica chain, one worker thread per replica; ${options.seconds} s of closed-loop load ` +
      `(16 B keys, ${options.valueBytes} B values, ${options.readers} reader(s))\n`,
  );
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
  await chain.close();

  const consistent = digests.every((digest) => digest.digest === digests[0]!.digest && digest.appliedSeq === digests[0]!.appliedSeq);
  const latency = report.writeLatencyUs;
  out.write(
    [
      '',
      `acknowledged writes  ${report.writes.toLocaleString('en-US')} in ${report.seconds.toFixed(1)} s = ${formatRate(report.writesPerSecond)}` +
        `  (${report.writeMegabytesPerSecond.toFixed(1)} MB/s of keys + values)`,
      `reads                ${report.reads.toLocaleString('en-US')} = ${formatRate(report.readsPerSecond)} (served by the tail)`,
      `write latency        p50 ${latency.p50} us   p99 ${latency.p99} us   p99.9 ${latency.p999} us   (${latency.samples} samples, put() to ack)`,
      `batches              ${stats.batchesSent.toLocaleString('en-US')} sent, ${(report.writes / Math.max(1, stats.batchesSent)).toFixed(0)} writes per batch on average`,
      `memory (RSS)         ${report.rssStartMiB.toFixed(0)} MiB at start, ${report.rssEndMiB.toFixed(0)} MiB at end`,
      `replicas             ${digests.map((digest) => `#${digest.id} applied ${digest.appliedSeq} keys ${digest.keys} digest ${digest.digest}`).join('\n                     ')}`,
      consistent
        ? `consistency          OK: all ${digests.length} replicas hold identical state`
        : 'consistency          FAILED: replicas differ',
      `result hash          ${report.resultHash}`,
      '',
    ].join('\n'),
  );
  return consistent;
}
