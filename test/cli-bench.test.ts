/**
 * `dabba bench`: a scenario from flags, a summary as JSON for machines, peers side by side, results
 * where the user says (or a temp directory), and clear errors for bad flags. Short runs of the
 * compiled CLI, as a user would call it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);

const CLI = resolve('dist/src/cli.js');

async function bench(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const results = mkdtempSync(join(tmpdir(), 'dabba-cli-bench-'));
  try {
    // Before `args`, so that a test's own --results-dir wins.
    return await run(process.execPath, [CLI, 'bench', '--results-dir', results, ...args], { timeout: 180_000 });
  } finally {
    rmSync(results, { recursive: true, force: true });
  }
}

test('closed loop with reads, beside the naive chain, as JSON', async () => {
  const { stdout } = await bench(['--seconds', '0.4', '--replicas', '2', '--read-ratio', '0.5', '--json']);
  const summary = JSON.parse(stdout);
  const [dabba] = summary.rows;
  assert.equal(dabba.system, 'dabba (2 replicas)');
  assert.ok(dabba.writesPerSecond > 0 && dabba.readsPerSecond > 0);
  const readShare = dabba.readsPerSecond / dabba.opsPerSecond;
  assert.ok(Math.abs(readShare - 0.5) < 0.05, `read share ${readShare}`);
  assert.ok(dabba.p99Us >= dabba.p50Us && dabba.p50Us > 0);
  assert.equal(summary.environment.cores > 0, true);

  // --reads tail: the same load, every read at the tail (the default spreads them: README).
  const atTail = JSON.parse((await bench(['--seconds', '0.4', '--replicas', '2', '--read-ratio', '0.5', '--reads', 'tail', '--json'])).stdout);
  assert.ok(atTail.rows[0].readsPerSecond > 0);

  const side = JSON.parse((await bench(['--seconds', '0.4', '--peers', 'naive', '--json'])).stdout);
  assert.deepEqual(
    side.rows.map((row: { system: string }) => row.system),
    ['dabba (3 replicas)', 'naive postMessage chain (3)'],
  );
  assert.ok(side.rows.every((row: { opsPerSecond: number }) => row.opsPerSecond > 0));
});

test('--chains splits the in-process load over chains on node threads', async () => {
  const { stdout } = await bench(['--seconds', '0.4', '--chains', '6', '--nodes', '3', '--json']);
  const [dabba] = JSON.parse(stdout).rows;
  assert.equal(dabba.system, 'dabba (3 replicas, 6 chains)');
  assert.ok(dabba.writesPerSecond > 0);
});

test('--durability fsync keeps the logs in a temp directory it removes after', async () => {
  const before = new Set(readdirSync(tmpdir()).filter((name) => name.startsWith('dabba-bench-data-')));
  const { stdout } = await bench(['--seconds', '0.4', '--durability', 'fsync', '--json']);
  const [dabba] = JSON.parse(stdout).rows;
  assert.equal(dabba.system, 'dabba (3 replicas, fsync)');
  assert.ok(dabba.writesPerSecond > 0);
  assert.deepEqual(readdirSync(tmpdir()).filter((name) => name.startsWith('dabba-bench-data-') && !before.has(name)), [], 'nothing left behind');
});

test('--hosts runs the chains as dabba serve processes on loopback, reads and writes through a remote client', async () => {
  const { stdout } = await bench(['--hosts', '--replicas', '2', '--chains', '4', '--seconds', '0.5', '--read-ratio', '0.2', '--json']);
  const [dabba] = JSON.parse(stdout).rows;
  assert.equal(dabba.system, 'dabba (2 dabba serve processes, 4 chains)');
  assert.ok(dabba.writesPerSecond > 0 && dabba.readsPerSecond > 0 && dabba.p99Us >= dabba.p50Us, JSON.stringify(dabba));
});

test('open loop at a fixed rate prints a table with latency percentiles', async () => {
  const { stdout } = await bench(['--seconds', '0.5', '--rate', '20000', '--batch', '64', '--linger', '200']);
  assert.match(stdout, /open loop at 20\.0 k\/s/);
  assert.match(stdout, /dabba \(3 replicas\)\s+[\d.]+ k\/s/);
  assert.match(stdout, /\d+ us\s+\d+ us\s+\d+ us\s+1\.00x/);
});

test('results go to --results-dir, or else to a new directory under the temp dir, never into the working directory', async () => {
  const scratch = mkdtempSync(join(tmpdir(), 'dabba-cli-bench-'));
  try {
    const cwd = join(scratch, 'cwd');
    const temp = join(scratch, 'temp');
    mkdirSync(cwd);
    mkdirSync(temp);
    const { stdout } = await run(process.execPath, [CLI, 'bench', '--seconds', '0.3', '--replicas', '1'], { cwd, env: { ...process.env, TMPDIR: temp }, timeout: 60_000 });
    assert.deepEqual(readdirSync(cwd), []);
    const [made, ...more] = readdirSync(temp);
    assert.match(made ?? '', /^dabba-bench-/);
    assert.deepEqual(more, []);
    const resultsFile = join(temp, made!, 'results.jsonl');
    assert.ok(stdout.endsWith(`\nresults appended to ${resultsFile}\n`), stdout);
    const [row] = readFileSync(resultsFile, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    assert.equal(row.suite, 'scenario');
    assert.equal(row.system, 'dabba (1 replicas)');
    // Run from outside the repository, the row still names this checkout's commit.
    assert.match(row.commit, /^[0-9a-f]{7,}(\+dirty)?$/);

    const json = JSON.parse((await run(process.execPath, [CLI, 'bench', '--seconds', '0.3', '--replicas', '1', '--json', '--results-dir', 'mine'], { cwd, timeout: 60_000 })).stdout);
    assert.equal(json.resultsFile, join(cwd, 'mine', 'results.jsonl'));
    assert.equal(readFileSync(json.resultsFile, 'utf8').trim().split('\n').length, 1);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});

test('bad flags are refused with a message and exit code 2', async () => {
  for (const [args, message] of [
    [['--replicas', '9'], /--replicas must be 1 to 5/],
    [['--value-size', '100000'], /--value-size must be 1 B to 64 KiB/],
    [['--peers', 'mysql'], /unknown peer mysql/],
    [['--rate', '1000', '--read-ratio', '0.5'], /open loop\) drives writes only/],
    [['--results-dir='], /--results-dir must name a directory/],
    [['--chains', '2000'], /--chains must be 1 to 1024/],
    [['--hosts', '--nodes', '4'], /--nodes is for the in-process engine/],
    [['--durability', 'disk'], /--durability must be memory, async or fsync/],
    [['--hosts', '--durability', 'fsync'], /--durability is for the in-process engine/],
    [['--reads', 'middle'], /--reads must be any or tail, got middle/],
  ] as const) {
    await assert.rejects(bench([...args]), (error: { code: number; stderr: string }) => {
      assert.equal(error.code, 2);
      assert.match(error.stderr, message);
      return true;
    });
  }
});
