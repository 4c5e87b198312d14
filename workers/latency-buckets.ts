/**
 * The latency buckets every dabba histogram uses, in seconds: fine below a millisecond, where a
 * healthy chain's writes are. Here, not in src/metrics/, because the node threads fill a histogram
 * of their own (a head's commit latency, in its replica's shared statistics: ./replica-task.ts).
 */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** The bucket of `seconds`: the first bound at or above it, or one past the last. */
export function latencyBucket(seconds: number): number {
  let index = 0;
  while (index < LATENCY_BUCKETS_SECONDS.length && seconds > LATENCY_BUCKETS_SECONDS[index]!) index++;
  return index;
}
