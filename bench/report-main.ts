/**
 * `npm run bench:report`: SVG plots from bench/results/results.jsonl (or $DABBA_BENCH_RESULTS) into
 * bench/plots/, from the compiled build. See report.ts.
 */
import { writeReport } from './report.js';

try {
  writeReport();
} catch (error) {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
