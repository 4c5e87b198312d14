/**
 * Prometheus metrics in one process: chain.metrics() is the text format, its counters agree with
 * what the chain did (writes, reads, reconfigurations, refusals), each chain and replica has its
 * series, and the latency histograms hold one observation per write or read, in buckets whose
 * counts add up. The hosts' GET /metrics is checked against a live cluster in readme-shapes.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createChain } from '../src/index.js';
import { LATENCY_BUCKETS_SECONDS, WeightedHistogram } from '../src/metrics/weighted-histogram.js';
import { parsePromText, type PromText } from './helpers/prometheus-text.js';

test('a weighted histogram counts each value with its weight in the first bucket that holds it; quantiles are bucket bounds', () => {
  const histogram = new WeightedHistogram([0.001, 0.01, 0.1]);
  histogram.record(0.0005, 98);
  histogram.record(0.001, 1);
  histogram.record(5, 1);
  assert.deepEqual([...histogram.counts], [99, 0, 0, 1]);
  assert.equal(histogram.count, 100);
  assert.ok(Math.abs(histogram.sum - (0.049 + 0.001 + 5)) < 1e-9);
  assert.equal(histogram.quantile(0.5), 0.001);
  assert.equal(histogram.quantile(0.99), 0.001);
  assert.equal(histogram.quantile(1), 0.1, 'the overflow bucket reports the last bound');
  assert.equal(new WeightedHistogram([1]).quantile(0.99), 0, 'empty');
});

/** Checks a histogram's series: cumulative buckets that never fall, +Inf equal to _count. */
function checkHistogram(metrics: PromText, name: string, labels: Record<string, string>): number {
  const buckets = metrics.all(`${name}_bucket`, labels);
  assert.equal(buckets.length, LATENCY_BUCKETS_SECONDS.length + 1, `${name}: a bucket per bound and +Inf`);
  for (let index = 1; index < buckets.length; index++) assert.ok(buckets[index]!.value >= buckets[index - 1]!.value, `${name}: buckets are cumulative`);
  assert.equal(buckets.at(-1)!.labels.le, '+Inf');
  const count = metrics.value(`${name}_count`, labels);
  assert.equal(buckets.at(-1)!.value, count);
  assert.ok(metrics.value(`${name}_sum`, labels) > 0 || count === 0);
  return count;
}

test('chain.metrics(): writes, reads, latency histograms, each replica with its role and progress, reconfigurations', { timeout: 60_000 }, async (t) => {
  const chain = await createChain({ replicas: 3, chains: 2, nodes: 3 });
  t.after(() => chain.close());
  const writes = 3000;
  await Promise.all(Array.from({ length: writes }, (_, index) => chain.put(`key-${index}`, `value-${index}`)));
  const reads = 500;
  await Promise.all(Array.from({ length: reads }, (_, index) => chain.get(`key-${index}`)));

  let metrics = parsePromText(await chain.metrics());
  assert.equal(chain.metricsContentType, 'text/plain; version=0.0.4; charset=utf-8');
  assert.equal(metrics.types.get('dabba_write_latency_seconds'), 'histogram');
  assert.equal(metrics.types.get('dabba_writes_acknowledged_total'), 'counter');
  assert.equal(metrics.types.get('dabba_replica_applied_seq'), 'gauge');
  const perChain = [0, 1].map((chain) => ({
    acknowledged: metrics.value('dabba_writes_acknowledged_total', { chain: String(chain) }),
    answered: metrics.value('dabba_reads_answered_total', { chain: String(chain) }),
    writeLatencies: checkHistogram(metrics, 'dabba_write_latency_seconds', { chain: String(chain) }),
    readLatencies: checkHistogram(metrics, 'dabba_read_latency_seconds', { chain: String(chain) }),
    batchWrites: metrics.value('dabba_batch_writes_sum', { chain: String(chain) }),
  }));
  assert.equal(perChain[0]!.acknowledged + perChain[1]!.acknowledged, writes, 'every write, on the chain of its key');
  assert.ok(perChain.every(({ acknowledged }) => acknowledged > 0), 'both chains took writes');
  for (const figures of perChain) {
    assert.equal(figures.writeLatencies, figures.acknowledged, 'one latency per acknowledged write');
    assert.equal(figures.batchWrites, figures.acknowledged, 'the batch sizes add up to the writes');
    assert.equal(figures.readLatencies, figures.answered, 'one latency per answered read');
  }
  assert.equal(perChain[0]!.answered + perChain[1]!.answered, reads);
  assert.equal(metrics.value('dabba_writes_pending', { chain: '0' }), 0);

  for (const chainLabel of ['0', '1']) {
    const roles = metrics.all('dabba_replica_info', { chain: chainLabel }).map((sample) => sample.labels.role).sort();
    assert.deepEqual(roles, ['head', 'middle', 'tail']);
    const applied = metrics.all('dabba_replica_applied_seq', { chain: chainLabel });
    assert.equal(applied.length, 3);
    const acknowledged = perChain[Number(chainLabel)]!.acknowledged;
    for (const sample of applied) {
      assert.equal(sample.value, acknowledged, `replica ${sample.labels.replica} applied every write of its chain`);
      assert.ok(sample.labels.node !== undefined, 'a replica says which node it is on');
    }
    assert.deepEqual(metrics.all('dabba_replica_lag_writes', { chain: chainLabel }).map((sample) => sample.value), [0, 0, 0]);
    const rings = metrics.all('dabba_replica_inbound_ring_bytes', { chain: chainLabel });
    assert.equal(rings.length, 3);
    assert.ok(rings.every((sample) => sample.value >= 0 && Number.isInteger(sample.value)), 'ring occupancy in bytes');
    assert.equal(metrics.value('dabba_chain_epoch', { chain: chainLabel }), 1);
  }
  assert.equal(metrics.value('dabba_reconfigurations_total'), 0);

  // Each head times its batches to their commit: one figure per write, once the acks are back up
  // the chain (a moment after the client has its own, from the tail: asked again until then, 5 s at most).
  for (const deadline = performance.now() + 5000; ; await new Promise((resolve) => setTimeout(resolve, 20))) {
    const heads = [0, 1].map((chain) => metrics.all('dabba_replica_info', { chain: String(chain), role: 'head' })[0]!.labels.replica!);
    const counted = [0, 1].map((chain) => metrics.all('dabba_replica_commit_latency_seconds_count', { chain: String(chain), replica: heads[chain]! })[0]?.value ?? 0);
    if (counted.every((count, chain) => count === perChain[chain]!.acknowledged)) {
      for (const chain of [0, 1]) checkHistogram(metrics, 'dabba_replica_commit_latency_seconds', { chain: String(chain), replica: heads[chain]! });
      assert.equal(metrics.all('dabba_replica_commit_latency_seconds_count').length, 2, 'only heads time commits');
      break;
    }
    assert.ok(performance.now() < deadline, `heads timed ${counted.join(', ')} commits of ${perChain.map(({ acknowledged }) => acknowledged).join(', ')} writes`);
    metrics = parsePromText(await chain.metrics());
  }

  // A node crashes: both chains it was in reconfigure, and the metrics say so.
  const crashed = chain.members()[1]!.id;
  const events: number[] = [];
  const reconfigured = new Promise<void>((resolve) => {
    chain.on('reconfigured', (event: { chain: number }) => {
      events.push(event.chain);
      if (new Set(events).size === 2) resolve();
    });
  });
  chain.crashReplica(crashed);
  await reconfigured;
  metrics = parsePromText(await chain.metrics());
  assert.equal(metrics.value('dabba_reconfigurations_total'), events.length);
  for (const chainLabel of ['0', '1']) {
    const epoch = 1 + events.filter((chain) => String(chain) === chainLabel).length;
    assert.equal(metrics.value('dabba_chain_epoch', { chain: chainLabel }), epoch);
    assert.equal(metrics.all('dabba_replica_info', { chain: chainLabel, node: String(crashed) }).length, 0, 'the crashed node is in no chain');
  }
});
