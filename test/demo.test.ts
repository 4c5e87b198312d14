/**
 * The quick start's main job stays true: `dabba demo` runs a real chain under load and ends with a
 * consistency line. A short run of the same code path as `npm start`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { startHttpDemo } from './helpers/demo-process.js';
import { parsePromText } from './helpers/prometheus-text.js';

test('dabba demo runs a 3-replica chain under load and reports identical replicas', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'demo', '--seconds', '2'], {
    timeout: 120_000,
  });
  assert.match(stdout, /acknowledged writes\s+[\d,]+ in [\d.]+ s = [\d.]+ [kM]\/s/);
  assert.match(stdout, /write latency\s+p50 \d+ us\s+p99 \d+ us\s+p99\.9 \d+ us/);
  assert.match(stdout, /consistency\s+OK: all 3 replicas hold identical state/);
  const digests = [...stdout.matchAll(/digest ([0-9a-f]{16})/g)].map((match) => match[1]);
  assert.equal(digests.length, 3);
  assert.equal(new Set(digests).size, 1);
});

test('dabba demo --chains 6 --nodes 3 splits the keys over chains and reports each chain identical', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'demo', '--seconds', '1', '--chains', '6', '--nodes', '3'], {
    timeout: 120_000,
  });
  assert.match(stdout, /dabba: 6 chains of 3 replicas on 3 node threads/);
  assert.match(stdout, /consistency\s+OK: the replicas of each of the 6 chains hold identical state/);
  assert.equal([...stdout.matchAll(/chain \d+ on nodes \d > \d > \d: applied \d+/g)].length, 6);
});

test('dabba demo --http 127.0.0.1:0 serves GET /metrics while it runs, every replica in it', async (t) => {
  const demo = await startHttpDemo(3);
  t.after(() => demo.kill());
  const url = `${demo.base}/metrics`;
  const response = await fetch(url);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  const metrics = parsePromText(await response.text());
  assert.equal(metrics.all('dabba_replica_info').length, 3);
  assert.equal((await fetch(`${demo.base}/nowhere`)).status, 404);
  assert.equal(await demo.exited, 0);
  assert.match(demo.output(), /consistency\s+OK/);
});

test('dabba demo --http with a bad address exits 2 with one line', async () => {
  const result = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'demo', '--http', 'here'], { timeout: 60_000 }).then(
    () => null,
    (error: { code: number; stderr: string }) => error,
  );
  assert.ok(result !== null);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /--http must be \[host:\]port/);
});
