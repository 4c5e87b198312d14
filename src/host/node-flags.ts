/**
 * Node.js flags a `dabba serve` process should start with, and a check that it did.
 *
 * A host receives its predecessor's batches through `ws`, which allocates a fresh buffer for every
 * socket read and every message it assembles: ~140 MB/s of ArrayBuffers at 0.5 M writes/s. Those
 * that live through a scavenge count against the old generation's allocation limit, which V8 sizes
 * from a small heap (13 MB here), so it ran a full mark-compact 5-7 times a second on each receiving
 * host, and the concurrent-marking threads took ~20 % of a core per host. A larger initial old
 * space keeps that limit above the churn: one mark-compact in a 20 s run instead of ~130, the
 * same RSS (~200 MB), and 1.39x the writes/s across three hosts (BENCHMARKS.md). V8 reads heap
 * sizes only when an isolate is created, so this cannot be set at run time (v8.setFlagsFromString
 * was measured to change nothing): it goes on the command line (the `dabba` bin's shebang carries it).
 */
export const SERVE_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=128'];

/** The flags of SERVE_NODE_FLAGS this process was started without (empty when all are there). */
export function missingServeNodeFlags(execArgv: readonly string[] = process.execArgv): string[] {
  return SERVE_NODE_FLAGS.filter((flag) => !execArgv.includes(flag));
}
