/**
 * The closed-loop load generator (src/load.ts): a window ends only when every write in it is
 * answered. With many chains, answers arrive in order per chain only, so the window's last write
 * alone says nothing about the other chains' writes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runClosedLoop, type LoadTarget } from '../src/load.js';

/** Two chains by the key's last character; chain 1's writes wait until release() is called. */
class TwoChains implements LoadTarget {
  pending = 0;
  pendingMost = 0;
  private held: Array<() => void> = [];

  chainOf(key: string): number {
    return key.charCodeAt(key.length - 1) & 1;
  }

  put(key: string): Promise<void> {
    this.pending++;
    this.pendingMost = Math.max(this.pendingMost, this.pending);
    const settle = (): void => void this.pending--;
    if (this.chainOf(key) === 0) return Promise.resolve().then(settle);
    return new Promise<void>((resolve) => this.held.push(resolve)).then(settle);
  }

  release(): void {
    for (const resolve of this.held.splice(0)) resolve();
  }
}

test('a window waits for the writes of every chain, not only for its last write', async () => {
  const target = new TwoChains();
  const releaser = setInterval(() => target.release(), 5);
  try {
    const report = await runClosedLoop(target, { durationMs: 100, writers: 1, writeWindow: 64, keySpace: 1_000 });
    assert.ok(report.writes > 0, 'the loop made progress');
    assert.equal(target.pending, 0, 'every write was answered when the loop ended');
    assert.ok(target.pendingMost <= 64, `at most one window in flight, saw ${target.pendingMost} writes pending`);
  } finally {
    clearInterval(releaser);
  }
});
