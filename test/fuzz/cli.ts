/**
 * `npm run fuzz -- --frames N [--seed S]` feeds N mutated frames (seed S, default 1) through every
 * reader and prints frames/s, each kind's accepted and refused counts, the known findings reached
 * and every new finding; `npm run fuzz -- --seed S --iteration I` replays the run up to frame I and
 * describes what each reader made of that frame (the line a failure printed).
 *
 * `npm run fuzz -- --live [--frames N] [--handshakes H]` starts etcd and three `dabba serve` hosts
 * (in network namespaces as root) and sends them hostile input of every class in
 * test/fuzz/live-fuzz.ts (N mutated frames from authenticated clients, default 20,000), beside a
 * well-behaved client; it prints each class's counts and exits 1 if a host died, the chain lost a
 * replica or an acknowledged write did not read back.
 */
import { parseArgs } from 'node:util';
import { describeFinding, runFuzz } from './frame-harness.js';
import { KNOWN_FINDINGS } from './known-findings.js';

const { values } = parseArgs({
  options: {
    frames: { type: 'string' },
    seed: { type: 'string' },
    iteration: { type: 'string' },
    json: { type: 'boolean' },
    live: { type: 'boolean' },
    handshakes: { type: 'string' },
  },
});
if (values.live === true) {
  const { runLiveSession } = await import('./live-cli.js');
  process.exitCode = await runLiveSession(Number(values.seed ?? 1), Number(values.frames ?? 20_000), Number(values.handshakes ?? 50));
  process.exit();
}
const seed = Number(values.seed ?? 1);
const iteration = values.iteration === undefined ? undefined : Number(values.iteration);
const frames = iteration === undefined ? Number(values.frames ?? 1_000_000) : iteration + 1;
if (!Number.isSafeInteger(seed) || !Number.isSafeInteger(frames) || frames < 1) {
  process.stderr.write('usage: npm run fuzz -- --frames N [--seed S] | --seed S --iteration I\n');
  process.exit(2);
}

const started = performance.now();
const report = runFuzz({ seed, frames, known: KNOWN_FINDINGS, ...(iteration === undefined ? {} : { traceIteration: iteration }) });
const seconds = (performance.now() - started) / 1000;

if (iteration !== undefined) {
  process.stdout.write(`seed ${seed}, iteration ${iteration}:\n${report.trace.map((line) => `  ${line}`).join('\n')}\n`);
}
const lines = [`${report.frames} frames, seed ${seed}: ${seconds.toFixed(1)} s, ${Math.round(report.frames / seconds)} frames/s`];
lines.push('kind             frames  accepted   refused');
for (const [kind, counts] of Object.entries(report.kinds)) {
  lines.push(`${kind.padEnd(15)} ${String(counts.frames).padStart(7)} ${String(counts.accepted).padStart(9)} ${String(counts.refused).padStart(9)}`);
}
lines.push(`accepted by a reader of another kind: ${report.otherKindAccepted}`);
lines.push(`known findings (being fixed): ${Object.entries(report.known).map(([name, count]) => `${name}: ${count}`).join(', ')}`);
lines.push(`new findings: ${report.findingCount}; verdict hash ${report.verdictHash.toString(16)}`);
process.stdout.write(`${lines.join('\n')}\n`);
if (values.json) process.stdout.write(`${JSON.stringify({ seconds, ...report, trace: undefined })}\n`);
for (const finding of report.findings) process.stderr.write(`\n${describeFinding(finding)}\n`);
process.exitCode = report.findingCount === 0 ? 0 : 1;
