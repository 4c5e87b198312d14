/**
 * The workload the profiling recipes run (`npm run profile:*`): the headline's chain (3 replicas,
 * 100 B values, 100k keys, closed loop through put()) for --seconds, then a clean exit, which
 * clinic needs. With DABBA_PROFILE_DIR set it also writes threads.json there: which Node.js thread
 * id is which replica, so per-thread profiles can be named.
 *
 *   node dist/bench/profile-workload.js [--seconds S] [--replicas N] [--main-thread-only]
 *                                       [--durability async|fsync [--data-dir DIR]]
 *
 * With --durability the chain logs to DIR (default: a new directory under os.tmpdir(), removed
 * after), to see where a durable mode's time goes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createChain } from '../src/index.js';
import { runClosedLoop } from '../src/load.js';
import { formatRate } from '../src/bench/harness.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string' },
    replicas: { type: 'string' },
    'main-thread-only': { type: 'boolean' },
    durability: { type: 'string' },
    'data-dir': { type: 'string' },
  },
});
const seconds = Number(values.seconds ?? 10);
const replicas = Number(values.replicas ?? 3);

// Under clinic: its preloaded instrumentation must stay on the main thread (see workerExecArgv).
const durability = values.durability;
if (durability !== undefined && durability !== 'async' && durability !== 'fsync') throw new Error(`--durability must be async or fsync, not ${durability}`);
const ownDirectory = durability !== undefined && values['data-dir'] === undefined;
const dataDir = durability === undefined ? undefined : (values['data-dir'] ?? mkdtempSync(join(tmpdir(), 'dabba-profile-')));
const chain = createChain({
  replicas,
  ...(values['main-thread-only'] ? { workerExecArgv: [] } : {}),
  ...(dataDir === undefined ? {} : { dataDir, durability }),
});
try {
  const report = await runClosedLoop(chain, { durationMs: seconds * 1000 });
  const directory = process.env.DABBA_PROFILE_DIR;
  if (directory !== undefined) {
    const threads: Record<string, string> = { '0': 'main (client)' };
    for (const replica of chain.stats().replicas) threads[String(replica.threadId)] = `replica ${replica.id} (${replica.role})`;
    writeFileSync(join(directory, 'threads.json'), `${JSON.stringify(threads, null, 2)}\n`);
  }
  process.stdout.write(`profile workload: ${replicas} replicas, ${formatRate(report.writes / report.seconds)} over ${report.seconds.toFixed(1)} s\n`);
} finally {
  await chain.close();
  if (ownDirectory) rmSync(dataDir!, { recursive: true, force: true });
}
