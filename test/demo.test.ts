/**
 * The quick start's main job stays true: `dabba demo` runs a real chain under load and ends with a
 * consistency line. A short run of the same code path as `npm start`.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { promisify } from 'node:util';
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
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'demo', '--seconds', '3', '--http', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  const exited = once(child, 'exit');
  let output = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      output += chunk;
      const match = /and metrics at (http:\/\/\S+\/metrics) while the demo runs/.exec(output);
      if (match !== null) resolve(match[1]!);
    });
    child.once('exit', () => reject(new Error(`the demo ended without saying where its metrics are: ${output}`)));
  });
  const response = await fetch(url);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  const metrics = parsePromText(await response.text());
  assert.equal(metrics.all('dabba_replica_info').length, 3);
  assert.equal((await fetch(url.replace('/metrics', '/nowhere'))).status, 404);
  const [code] = (await exited) as [number];
  assert.equal(code, 0);
  assert.match(output, /consistency\s+OK/);
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
