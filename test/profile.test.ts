/**
 * The profiling recipe CI runs: `profile:workers` on a tiny workload must leave a profile and a
 * flame graph per thread, named by the replica it was, and an index page linking them.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

test('profile:workers profiles every thread and renders a flame graph for each', { timeout: 600_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), 'dabba-profile-'));
  try {
    const printed = execFileSync(process.execPath, ['dist/bench/profile-workers.js', '--seconds', '0.5', '--out', out], { encoding: 'utf8' });
    for (const thread of ['main-client', 'replica-1-head', 'replica-2-middle', 'replica-3-tail']) {
      assert.ok(existsSync(join(out, thread, 'profile.cpuprofile')), `${thread}: no profile`);
      const flame = join(out, thread, 'flamegraph.html');
      assert.ok(existsSync(flame), `${thread}: no flame graph`);
      assert.match(readFileSync(flame, 'utf8'), /<html/i);
    }
    const index = readFileSync(join(out, 'index.html'), 'utf8');
    assert.match(index, /replica 3 \(tail\)/);
    assert.match(printed, /replica 1 \(head\)\n +[0-9.]+ %/, 'a top-functions table per thread');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
