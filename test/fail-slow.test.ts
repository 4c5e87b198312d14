/**
 * Fail-slow demotion: the detector (pure, time passed in) finds a node whose time per write stays
 * above `factor` times its peers' median for `forMs`, not one that is slow for a moment, not an idle
 * chain, not with two nodes; quarantines double for a node found slow again soon after. In one
 * process, a node slowed down under load (slowReplica, as a throttled CPU would be) is moved out of
 * its chain within seconds, the chain goes on without it, and it joins again at the tail once its
 * quarantine is over.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FailSlowDetector, SlowNodeBench, type NodeLoad } from '../native-free-core/master/fail-slow.js';
import { createChain, type Chain, type DemotionEvent } from '../src/index.js';
import { parsePromText } from './helpers/prometheus-text.js';

const SETTINGS = { factor: 4, forMs: 2000, windowMs: 1000, writesMin: 500, quarantineMs: 30_000, quarantineMaxMs: 600_000 };

/** Drives a detector: every 100 ms each node applies `writesPerTick` writes at its cost per write (ms). */
function run(detector: FailSlowDetector, costs: () => Record<string, number>, ms: number, from = 0, writesPerTick = 1000, totals = new Map<string, NodeLoad>()): { verdicts: Array<{ at: number; node: string }>; totals: Map<string, NodeLoad> } {
  const verdicts: Array<{ at: number; node: string }> = [];
  for (let now = from; now <= from + ms; now += 100) {
    for (const [node, cost] of Object.entries(costs())) {
      const load = totals.get(node) ?? { busyMs: 0, writesApplied: 0 };
      totals.set(node, { busyMs: load.busyMs + cost * writesPerTick, writesApplied: load.writesApplied + writesPerTick });
    }
    const verdict = detector.observe(totals, now);
    if (verdict !== null) verdicts.push({ at: now, node: verdict.node });
  }
  return { verdicts, totals };
}

test('a node 10x slower than its peers is found once it has been slow for forMs, not before', () => {
  const detector = new FailSlowDetector(SETTINGS);
  const { verdicts } = run(detector, () => ({ a: 0.001, b: 0.0012, c: 0.01 }), 5000);
  assert.ok(verdicts.length > 0);
  assert.ok(verdicts.every(({ node }) => node === 'c'));
  // Its window fills by ~500 ms, then it must stay slow for 2 s.
  assert.ok(verdicts[0]!.at >= 2000 && verdicts[0]!.at <= 3000, `found at ${verdicts[0]!.at} ms`);
});

test('no verdict for a node 3x slower (below the factor), a slow moment, an idle chain, or two nodes', () => {
  assert.deepEqual(run(new FailSlowDetector(SETTINGS), () => ({ a: 0.001, b: 0.001, c: 0.003 }), 6000).verdicts, [], '3x');
  let tick = 0;
  const blip = run(new FailSlowDetector(SETTINGS), () => ({ a: 0.001, b: 0.001, c: tick++ % 30 < 10 ? 0.02 : 0.001 }), 9000).verdicts;
  assert.deepEqual(blip, [], 'slow 1 s in every 3 s: never for 2 s on end');
  assert.deepEqual(run(new FailSlowDetector(SETTINGS), () => ({ a: 0.001, b: 0.001, c: 0.05 }), 6000, 0, 10).verdicts, [], 'idle: 100 writes a second, below writesMin');
  assert.deepEqual(run(new FailSlowDetector(SETTINGS), () => ({ a: 0.001, c: 0.05 }), 6000).verdicts, [], 'two nodes: which is slow is a guess');
});

test('quarantines: the first is quarantineMs, one found slow again soon after is twice as long, up to the maximum; a node that recovers is not found', () => {
  const detector = new FailSlowDetector(SETTINGS);
  assert.equal(detector.quarantine('c', 0), 30_000);
  assert.ok(detector.isQuarantined('c', 29_999));
  assert.ok(!detector.isQuarantined('c', 30_000));
  assert.equal(detector.quarantine('c', 40_000), 40_000 + 60_000, 'slow again 10 s after its quarantine: twice as long');
  assert.equal(detector.quarantine('c', 110_000), 110_000 + 120_000);
  assert.equal(detector.quarantine('c', 1_000_000), 1_000_000 + 30_000, 'a long time later: the first length again');
  const capped = new FailSlowDetector({ ...SETTINGS, quarantineMaxMs: 45_000 });
  capped.quarantine('c', 0);
  assert.equal(capped.quarantine('c', 31_000), 31_000 + 45_000, 'doubled, capped');
  assert.deepEqual(capped.quarantined(31_000), ['c']);

  let slow = true;
  const recovering = new FailSlowDetector(SETTINGS);
  const { totals } = run(recovering, () => ({ a: 0.001, b: 0.001, c: slow ? 0.01 : 0.001 }), 1500);
  slow = false;
  assert.deepEqual(run(recovering, () => ({ a: 0.001, b: 0.001, c: 0.001 }), 5000, 1600, 1000, totals).verdicts, [], 'recovered before forMs');
});

/** Resolves once `holds()` is true, checked now and after each reconfiguration. */
function reconfiguredUntil(chain: Chain, holds: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    if (holds()) return resolve();
    const check = (): void => {
      if (!holds()) return;
      chain.off('reconfigured', check);
      resolve();
    };
    chain.on('reconfigured', check);
  });
}

test('the bench: one node at a time, never with two planned nodes or fewer, never while another node is not known healthy; released after its quarantine or when down', () => {
  const bench = new SlowNodeBench(SETTINGS);
  const totals = new Map<string, NodeLoad>();
  const feed = (now: number, situation: { plannedNodes: number; isHealthy: (node: string) => boolean }, costs = { a: 0.001, b: 0.001, c: 0.01 }) => {
    for (const [node, cost] of Object.entries(costs)) {
      const load = totals.get(node) ?? { busyMs: 0, writesApplied: 0 };
      totals.set(node, { busyMs: load.busyMs + cost * 1000, writesApplied: load.writesApplied + 1000 });
    }
    return bench.observe(totals, now, { canMove: true, ...situation });
  };
  const healthy = { plannedNodes: 3, isHealthy: () => true };
  // c is slow, but b has not been heard from lately (it may be dead and not yet found so): no move.
  for (let now = 0; now <= 4000; now += 100) assert.equal(feed(now, { plannedNodes: 3, isHealthy: (node) => node !== 'b' }), null);
  assert.equal(feed(4100, { plannedNodes: 2, isHealthy: () => true }), null, 'two planned nodes: never');
  const demotion = feed(4200, healthy);
  assert.equal(demotion?.node, 'c');
  assert.equal(demotion!.until, 4200 + SETTINGS.quarantineMs);
  assert.ok(bench.isBenched('c') && bench.demotions === 1);
  bench.release(10_000, () => false);
  assert.ok(bench.isBenched('c'), 'kept out through its quarantine');
  bench.release(10_000, (node) => node === 'c');
  assert.ok(!bench.isBenched('c'), 'released when it is down: a failure is the failure detector\'s');
});

test('in one process, a node slowed down under load is moved out of its chain, the chain goes on, and it joins again at the tail after its quarantine', { timeout: 90_000 }, async (t) => {
  const chain = await createChain({ replicas: 3, failSlow: { quarantineMs: 3000 } });
  t.after(() => chain.close());
  chain.on('warning', () => undefined);
  let writing = true;
  let acknowledged = 0;
  const writer = (async () => {
    for (let round = 0; writing; round++) {
      await chain.putMany(Array.from({ length: 2000 }, (_, index) => [`key-${(round * 2000 + index) % 50_000}`, 'v'.repeat(100)] as const));
      acknowledged += 2000;
    }
  })();
  const middle = chain.members()[1]!.id;
  const demoted = new Promise<DemotionEvent>((resolve) => chain.once('demoted', resolve));
  const slowedAt = performance.now();
  chain.slowReplica(middle, 10);
  const event = await demoted;
  const demotedAfterMs = performance.now() - slowedAt;
  assert.equal(event.node, middle);
  assert.ok(event.timesMedian > 4, `${event.timesMedian}x its peers`);
  assert.equal(event.quarantineMs, 3000);
  assert.ok(demotedAfterMs < 10_000, `demoted ${Math.round(demotedAfterMs)} ms after it was slowed`);
  t.diagnostic(`demoted ${Math.round(demotedAfterMs)} ms after it was slowed, at ${event.timesMedian.toFixed(1)}x its peers' time per write`);
  // Out of the chain (the chain goes on with two), and the writes go on.
  await reconfiguredUntil(chain, () => chain.members().every((member) => member.id !== middle));
  const before = acknowledged;
  chain.slowReplica(middle, 1);
  // Its quarantine over, it joins again, at the tail, and the chain is whole.
  await reconfiguredUntil(chain, () => {
    const members = chain.members();
    return members.length === 3 && members.every((member) => member.role !== 'joining') && members.some((member) => member.id === middle);
  });
  assert.ok(acknowledged > before, 'writes went on while it was out');
  writing = false;
  await writer;
  assert.equal(chain.stats().demotions, 1);
  const metrics = parsePromText(await chain.metrics());
  assert.equal(metrics.value('dabba_demotions_total'), 1);
  const digests = new Set((await chain.digests()).map((entry) => entry.digest));
  assert.equal(digests.size, 1, 'every replica holds the same');
});

test('failSlow is false or { factor above 1, forMs, quarantineMs }; slowReplica takes a factor of 1..1000', async (t) => {
  assert.throws(() => createChain({ failSlow: { factor: 1 } }), { code: 'DABBA_ERR_OUT_OF_RANGE' });
  assert.throws(() => createChain({ failSlow: { forMs: -1 } }), { code: 'DABBA_ERR_OUT_OF_RANGE' });
  assert.throws(() => createChain({ failSlow: { quarantineMs: 0 } }), { code: 'DABBA_ERR_OUT_OF_RANGE' });
  assert.throws(() => createChain({ failSlow: true as unknown as false }), { code: 'DABBA_ERR_INVALID_ARGUMENT' });
  const chain = await createChain({ replicas: 1, failSlow: false });
  t.after(() => chain.close());
  assert.throws(() => chain.slowReplica(1, 0.5), { code: 'DABBA_ERR_OUT_OF_RANGE' });
  assert.throws(() => chain.slowReplica(9, 2), { code: 'DABBA_ERR_OUT_OF_RANGE', message: /node 9 does not run/ });
  chain.slowReplica(1, 3);
  await chain.put('a', 'b');
  assert.equal((await chain.get('a'))?.toString(), 'b');
});
