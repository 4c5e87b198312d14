/**
 * Batching to a latency target and adaptive spinning. The controller (pure, time passed in) keeps
 * its cap while the p99 meets the target, steps it while it does not and turns back when a step
 * made the p99 worse, and returns to the largest batches when the client is saturated. The spin
 * budget grows when waits end while spinning or after a short sleep, shrinks after a long sleep,
 * and never spins with no core to spare. In one process, a chain with a target too tight for it
 * shrinks its batches (as its metrics show), writes stay exact, and a backlog brings the cap back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LatencyController, PERIOD_BATCHES, PERIOD_MS, WRITES_CAP_MIN } from '../src/latency-controller.js';
import { SHORT_SLEEP_MS, SpinBudget } from '../workers/spin-budget.js';
import { createChain } from '../src/index.js';
import { resolveOptions } from '../src/options.js';
import { parseServeConfig } from '../src/host/serve-config.js';
import { parsePromText } from './helpers/prometheus-text.js';

/** Feeds one period of batches whose latency is `latencyMs`; returns the time after it. */
function period(controller: LatencyController, latencyMs: number, nowMs: number): number {
  for (let batch = 0; batch < PERIOD_BATCHES; batch++) controller.observe(latencyMs, nowMs + (PERIOD_MS * batch) / (PERIOD_BATCHES - 1));
  return nowMs + PERIOD_MS + 1;
}

test('the cap stays while the p99 meets the target', () => {
  const controller = new LatencyController(2000, 1024, 0);
  let now = 1;
  for (let round = 0; round < 10; round++) now = period(controller, 1.5, now);
  assert.equal(controller.writesCap, 1024);
  assert.equal(controller.lastP99Us, 1500);
});

test('over the target the cap halves while that helps, turns back when it does not, and stays within its bounds', () => {
  const controller = new LatencyController(1000, 1024, 0);
  let now = period(controller, 8, 1);
  assert.equal(controller.writesCap, 512);
  now = period(controller, 6, now); // better: go on
  assert.equal(controller.writesCap, 256);
  now = period(controller, 7, now); // worse: back up
  assert.equal(controller.writesCap, 512);
  now = period(controller, 6.5, now); // better: go on up
  assert.equal(controller.writesCap, 1024);
  now = period(controller, 6, now); // at the top: turns, the cap unchanged
  assert.equal(controller.writesCap, 1024);
  for (let round = 0; round < 20; round++) now = period(controller, 5 - round * 0.1, now); // always better: down to the floor
  assert.equal(controller.writesCap, WRITES_CAP_MIN);
  period(controller, 0.5, now); // met: it stays
  assert.equal(controller.writesCap, WRITES_CAP_MIN);
});

test('a saturated client goes back to the largest batches', () => {
  const controller = new LatencyController(1000, 1024, 0);
  let now = period(controller, 8, 1);
  now = period(controller, 6, now);
  assert.equal(controller.writesCap, 256);
  controller.noteSaturated();
  period(controller, 50, now);
  assert.equal(controller.writesCap, 1024);
  assert.equal(controller.decisions.saturated, 1);
});

test('no decision before a period has both its time and its batches', () => {
  const controller = new LatencyController(1000, 1024, 0);
  for (let batch = 0; batch < 10 * PERIOD_BATCHES; batch++) controller.observe(9, 1 + batch * 0.01); // many batches, too little time
  assert.equal(controller.writesCap, 1024);
  controller.observe(9, 10 * PERIOD_MS); // time, but the batch count restarted only at a decision: decides now
  assert.equal(controller.writesCap, 512);
});

test('the spin budget grows when spinning pays, shrinks when it does not, and never spins at max 0', () => {
  const budget = new SpinBudget(2000);
  budget.record(true, 5);
  assert.equal(budget.iterations, 1000);
  for (let wait = 0; wait < 20; wait++) budget.record(true, 5);
  assert.equal(budget.iterations, 0);
  budget.record(true, SHORT_SLEEP_MS / 2); // woken at once: spinning would have caught it
  assert.equal(budget.iterations, 64);
  budget.record(false, 0); // work came while spinning
  assert.equal(budget.iterations, 128);
  for (let wait = 0; wait < 10; wait++) budget.record(false, 0);
  assert.equal(budget.iterations, 2000);
  const none = new SpinBudget(0);
  none.record(false, 0);
  none.record(true, 0);
  assert.equal(none.iterations, 0);
});

test('options: the target bounds the linger, and a spin default follows the cores', () => {
  assert.equal(resolveOptions({ batch: { latencyTargetUs: 2000, lingerUs: 5000 } }).lingerUs, 500);
  assert.equal(resolveOptions({ batch: { lingerUs: 5000 } }).lingerUs, 5000);
  assert.equal(resolveOptions({}).latencyTargetUs, 0);
  assert.throws(() => resolveOptions({ batch: { latencyTargetUs: -1 } }), /latencyTargetUs/);
  assert.throws(() => resolveOptions({ batch: { latencyTargetUs: 1.5 } }), /latencyTargetUs/);
  assert.equal(resolveOptions({ spinIterations: 10 }).spinIterations, 10);
});

async function batchCap(chain: { metrics(): Promise<string> }): Promise<number> {
  return parsePromText(await chain.metrics()).value('dabba_batch_writes_cap', { chain: '0' });
}

test('a chain under a target it cannot meet shrinks its batches, writes stay exact, and a backlog restores the cap', async () => {
  // 1 us is below any chain's round trip: every period misses it.
  const chain = createChain({ replicas: 3, batch: { latencyTargetUs: 1 } });
  try {
    assert.equal(await batchCap(chain), 1024);
    const deadline = Date.now() + 20_000;
    let round = 0;
    // Steady writes a few at a time (a client below saturation), until the controller has stepped.
    while ((await batchCap(chain)) === 1024) {
      assert.ok(Date.now() < deadline, 'the cap never moved');
      await Promise.all(Array.from({ length: 64 }, (_, index) => chain.put(`steady-${round}-${index}`, `v${round}`)));
      round++;
    }
    assert.ok((await batchCap(chain)) < 1024);
    for (const index of [0, 63]) assert.equal((await chain.get(`steady-${round - 1}-${index}`))?.toString(), `v${round - 1}`);

    // A backlog (more pending than the window carries in full batches) is saturation.
    const until = Date.now() + 20_000;
    while ((await batchCap(chain)) !== 1024) {
      assert.ok(Date.now() < until, 'the cap did not come back under a backlog');
      await chain.putMany(Array.from({ length: 20_000 }, (_, index) => [`bulk-${index}`, 'x'.repeat(100)] as const));
    }
    assert.equal((await chain.get('bulk-19999'))?.toString(), 'x'.repeat(100));
    const digests = await chain.digests();
    assert.equal(new Set(digests.map((digest) => digest.digest)).size, 1);
  } finally {
    await chain.close();
  }
});

test('dabba serve --latency-target-us, from a flag, the environment or the config file, sets its clients\' batch target', () => {
  const base = ['--id', 'h1', '--etcd', 'http://127.0.0.1:2379'];
  const env = { DABBA_PEER_SECRET: 'peer-secret-0123456789', DABBA_CLIENT_SECRET: 'client-secret-0123456789' };
  assert.deepEqual(parseServeConfig([...base, '--latency-target-us', '2000'], env).chain, { batch: { latencyTargetUs: 2000 } });
  assert.deepEqual(parseServeConfig(base, { ...env, DABBA_LATENCY_TARGET_US: '1500' }).chain, { batch: { latencyTargetUs: 1500 } });
  assert.throws(() => parseServeConfig([...base, '--latency-target-us', '0'], env), { message: /--latency-target-us must be an integer in 1\.\.10000000/ });
  assert.throws(() => parseServeConfig([...base, '--latency-target-us', 'fast'], env), { message: /--latency-target-us must be an integer/ });
});
