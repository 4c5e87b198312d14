/**
 * `npm run bench`: the benchmark suites, from the compiled build.
 *
 *   node dist/bench/main.js [--suite micro|headline|openloop|latency-target|sweeps|cpu|chains|reads|conditions|watches|watch-history|metrics|fail-slow|hosts-fail-slow|log|durability|restart|failover|join|peers|hosts|hosts-chains|hosts-batch|hosts-node-flags|hosts-tls|hosts-failover|soak|durability-soak|all]... [--seconds S] [--runs N]
 *                           [--soak-seconds S] [--down-ms MS] [--small]
 */
import { parseArgs } from 'node:util';
import { runBenchmarks } from './run.js';

const { values } = parseArgs({
  options: {
    suite: { type: 'string', multiple: true },
    seconds: { type: 'string' },
    runs: { type: 'string' },
    'soak-seconds': { type: 'string' },
    'down-ms': { type: 'string' },
    small: { type: 'boolean' },
  },
});
const small = values.small ?? false;
runBenchmarks({
  suites: values.suite ?? ['micro', 'headline', 'openloop', 'sweeps', 'cpu', 'chains', 'reads', 'conditions', 'watches', 'log', 'durability', 'failover', 'join', 'peers', 'hosts', 'hosts-chains'],
  seconds: Number(values.seconds ?? (small ? 0.5 : 5)),
  runs: Number(values.runs ?? (small ? 1 : 5)),
  soakSeconds: Number(values['soak-seconds'] ?? 60),
  ...(values['down-ms'] === undefined ? {} : { downMs: Number(values['down-ms']) }),
  small,
}).catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
