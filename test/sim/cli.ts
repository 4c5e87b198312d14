/**
 * `npm run test:sim -- --seeds N [--first S]` runs N seeds of the deterministic simulator;
 * `npm run test:sim -- --seed S` replays one (the seed a failure printed).
 */
import { parseArgs } from 'node:util';
import { simulate, type SimulationResult } from './simulator.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    seeds: { type: 'string' },
    first: { type: 'string' },
    replicas: { type: 'string' },
    'join-rate': { type: 'string' },
  },
});
const replicas = values.replicas === undefined ? undefined : Number(values.replicas);
const joinRate = values['join-rate'] === undefined ? undefined : Number(values['join-rate']);
const seeds =
  values.seed !== undefined
    ? [Number(values.seed)]
    : Array.from({ length: Number(values.seeds ?? 100) }, (_, index) => Number(values.first ?? 1) + index);
const totals = { operations: 0, crashes: 0, joins: 0, reconfigurations: 0 };
const started = Date.now();
let failed = 0;
for (const seed of seeds) {
  let result: SimulationResult;
  try {
    result = simulate({ seed, ...(replicas === undefined ? {} : { replicas }), ...(joinRate === undefined ? {} : { joinRate }) });
  } catch (error) {
    failed++;
    process.stderr.write(`seed ${seed} FAILED: ${error instanceof Error ? error.message : String(error)}\n`);
    continue;
  }
  totals.operations += result.operations;
  totals.crashes += result.crashes;
  totals.reconfigurations += result.reconfigurations;
  totals.joins += result.joins;
  if (seeds.length === 1) process.stdout.write(`${JSON.stringify(result)}\n`);
}
process.stdout.write(
  `${seeds.length - failed} passed, ${failed} failed (${seeds.length} seeds, ${totals.operations} client operations, ` +
    `${totals.crashes} crashes, ${totals.joins} joins, ${totals.reconfigurations} reconfigurations, ${((Date.now() - started) / 1000).toFixed(1)} s)\n`,
);
process.exitCode = failed === 0 ? 0 : 1;
