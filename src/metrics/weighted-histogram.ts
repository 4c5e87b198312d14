/**
 * A histogram of fixed buckets that takes a weight with each value: a batch's writes share one
 * measurement (the time from the batch's first write to its ack), and recording it once for all of
 * them costs one bucket search per batch instead of one per write. prom-client's Histogram takes
 * one value at a time, so these are exposed through HistogramMetric (./registry.ts).
 */

export { LATENCY_BUCKETS_SECONDS } from '../../workers/latency-buckets.js';

/** Writes per batch: powers of two up to the largest batch a client sends. */
export const BATCH_WRITES_BUCKETS: readonly number[] = Array.from({ length: 15 }, (_, power) => 2 ** power);

export class WeightedHistogram {
  /** Weight recorded at or below each bound (not cumulative), and above the last one. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  record(value: number, weight = 1): void {
    const bounds = this.bounds;
    let index = 0;
    while (index < bounds.length && value > bounds[index]!) index++;
    this.counts[index]! += weight;
    this.sum += value * weight;
    this.count += weight;
  }

  /** Adds `other`'s figures (same bounds) to this one's. */
  add(other: WeightedHistogram): void {
    for (let index = 0; index < this.counts.length; index++) this.counts[index]! += other.counts[index]!;
    this.sum += other.sum;
    this.count += other.count;
  }

  /**
   * The value below which `quantile` of the weight lies, as the upper bound of its bucket (the last
   * bound for the overflow bucket); 0 when empty. Coarse by design: a status page's p99, not a
   * benchmark's.
   */
  quantile(quantile: number): number {
    if (this.count === 0) return 0;
    const rank = quantile * this.count;
    let seen = 0;
    for (let index = 0; index < this.counts.length; index++) {
      seen += this.counts[index]!;
      if (seen >= rank) return this.bounds[Math.min(index, this.bounds.length - 1)]!;
    }
    return this.bounds.at(-1)!;
  }
}
