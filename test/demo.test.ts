/**
 * The quick start's main job stays true: `dabba demo` runs a real chain under load and ends with a
 * consistency line. A short run of the same code path as `npm start`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';

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
