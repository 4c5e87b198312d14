/**
 * A workload for `npm run profile:doctor`: a remote client (`dabba/client`) in this process drives
 * a chain of three `dabba serve` processes on loopback, closed loop, for --seconds, then exits
 * cleanly. This process has no worker threads (the replicas run in the host processes), which is
 * what clinic doctor needs; it diagnoses the client side of a real deployment: event-loop delay,
 * GC and CPU of a service that embeds the client.
 *
 *   node dist/bench/profile-remote-client.js [--seconds S]
 */
import { parseArgs } from 'node:util';
import { connect } from '../src/client/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate } from '../src/bench/harness.js';
import { startLocalHosts } from '../src/bench/local-hosts.js';

const { values } = parseArgs({ options: { seconds: { type: 'string' } } });
const seconds = Number(values.seconds ?? 10);

// The hosts must not inherit a profiler's preload, should it come in NODE_OPTIONS.
const hosts = await startLocalHosts(3, { env: { NODE_OPTIONS: '' } });
try {
  const client = await connect({ hosts: hosts.urls, secret: hosts.secret });
  try {
    const report = await runClosedLoop(client, { durationMs: seconds * 1000, writers: 4, writeWindow: 4096 });
    process.stdout.write(`remote client workload: 3 dabba serve processes, ${formatRate(report.writes / report.seconds)} over ${report.seconds.toFixed(1)} s\n`);
  } finally {
    await client.close();
  }
} finally {
  await hosts.stop();
}
