/**
 * The repository's benchmark ledger: every suite of `npm run bench` appends its results to
 * bench/results/results.jsonl (run from the repository root, as npm runs scripts), or to
 * results.jsonl in $DABBA_BENCH_RESULTS. BENCHMARKS.md and `npm run bench:report` read it.
 */
import { join } from 'node:path';
import { appendResult, type Environment } from '../src/bench/harness.js';

/** The ledger: bench/results/results.jsonl, or results.jsonl in $DABBA_BENCH_RESULTS. */
export function resultsFile(): string {
  return join(process.env.DABBA_BENCH_RESULTS ?? join(process.cwd(), 'bench', 'results'), 'results.jsonl');
}

/** Appends one result as a JSON line, with the environment, to the ledger. */
export function record(suite: string, result: object, env: Environment): void {
  appendResult(resultsFile(), suite, result, env);
}
