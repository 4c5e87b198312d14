/** A head's commit latency, as its node thread keeps it in the replica's statistics (workers/commit-latency.ts), as a histogram. */
import { ReplicaStat } from '../../workers/replica-task.js';
import { LATENCY_BUCKETS_SECONDS, WeightedHistogram } from './weighted-histogram.js';

export function commitLatencyOf(statistics: Float64Array): WeightedHistogram {
  const histogram = new WeightedHistogram(LATENCY_BUCKETS_SECONDS);
  for (let index = 0; index < histogram.counts.length; index++) histogram.counts[index] = statistics[ReplicaStat.commitLatencyBuckets + index]!;
  histogram.sum = statistics[ReplicaStat.commitLatencySum]!;
  histogram.count = statistics[ReplicaStat.commitLatencyCount]!;
  return histogram;
}
