/**
 * `npm run test:sim -- --seeds N [--first S]` runs N seeds of the deterministic simulator;
 * `npm run test:sim -- --seed S [--verbose]` replays one (the seed a failure printed), with every
 * frame in the trace if verbose; `--bail` stops at the first failure. Seeds vary the chain's length,
 * the clients, whether hosts have a disk and which replicas answer reads as `npm test` does; `--disk`
 * gives every host one, `--reads any|tail` sets the reads of every seed.
 */
import { parseArgs } from 'node:util';
import { seedOptions, simulate, type SimulationResult } from './simulator.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    seeds: { type: 'string' },
    first: { type: 'string' },
    replicas: { type: 'string' },
    verbose: { type: 'boolean' },
    bail: { type: 'boolean' },
    disk: { type: 'boolean' },
    reads: { type: 'string' },
  },
});
const replicas = values.replicas === undefined ? undefined : Number(values.replicas);
const seeds =
  values.seed !== undefined ? [Number(values.seed)] : Array.from({ length: Number(values.seeds ?? 100) }, (_, index) => Number(values.first ?? 1) + index);

const COUNTED = ['operations', 'crashes', 'restarts', 'rejoins', 'partitions', 'slowDowns', 'demotions', 'losses', 'linkRepairs', 'duplicates', 'stallResends', 'joinsBegun', 'joinsCompleted', 'reconfigurations', 'recoveredFromDisk', 'resumedJoins', 'catchUpsCompleted', 'logsDiverged', 'readsOffTail', 'dirtyReads', 'conditionalApplied', 'conditionsFailed', 'admissionRefused', 'watchedChanges', 'watchesLagged'] as const;
const totals = Object.fromEntries(COUNTED.map((name) => [name, 0])) as Record<(typeof COUNTED)[number], number>;
const started = performance.now();
let failed = 0;
let ran = 0;
for (const seed of seeds) {
  if (failed > 0 && values.bail === true) break;
  ran++;
  let result: SimulationResult;
  try {
    result = await simulate({ ...seedOptions(seed), ...(replicas === undefined ? {} : { replicas }), ...(values.disk === true ? { disk: true } : {}), ...(values.reads === 'tail' || values.reads === 'any' ? { reads: values.reads } : {}), verbose: values.verbose ?? false });
  } catch (error) {
    failed++;
    process.stderr.write(`seed ${seed} FAILED: ${error instanceof Error ? error.message : String(error)}\n`);
    continue;
  }
  for (const name of COUNTED) totals[name] += result[name];
  if (seeds.length === 1) process.stdout.write(`${JSON.stringify(result)}\n`);
}
const seconds = (performance.now() - started) / 1000;
process.stdout.write(
  `${ran - failed} passed, ${failed} failed (${ran} seeds in ${seconds.toFixed(1)} s): ` +
    `${COUNTED.map((name) => `${totals[name]} ${name}`).join(', ')}\n`,
);
process.exitCode = failed === 0 ? 0 : 1;
