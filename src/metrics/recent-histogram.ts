/**
 * A histogram of the last `windowMs`, from cumulative ones taken now and then (every status
 * interval): the newest less the newest one taken at least `windowMs` before it. For a live p99
 * (a status page's chart), where the cumulative histogram holds every write since the start.
 */
import { WeightedHistogram } from './weighted-histogram.js';

export class RecentHistogram {
  private readonly samples: Array<{ atMs: number; histogram: WeightedHistogram }> = [];

  constructor(
    private readonly bounds: readonly number[],
    private readonly windowMs: number,
  ) {}

  /** Takes the cumulative figures as of `atMs`. */
  add(atMs: number, cumulative: WeightedHistogram): void {
    const copy = new WeightedHistogram(this.bounds);
    copy.add(cumulative);
    this.samples.push({ atMs, histogram: copy });
    // Keep one sample at or before the window's start, and what came after it.
    while (this.samples.length > 2 && this.samples[1]!.atMs <= atMs - this.windowMs) this.samples.shift();
  }

  /** What was recorded between the oldest sample kept and the newest. */
  window(): WeightedHistogram {
    const recent = new WeightedHistogram(this.bounds);
    const newest = this.samples.at(-1);
    const oldest = this.samples[0];
    if (newest === undefined || oldest === undefined || newest === oldest) return recent;
    for (let index = 0; index < recent.counts.length; index++) recent.counts[index] = Math.max(0, newest.histogram.counts[index]! - oldest.histogram.counts[index]!);
    recent.count = Math.max(0, newest.histogram.count - oldest.histogram.count);
    recent.sum = Math.max(0, newest.histogram.sum - oldest.histogram.sum);
    return recent;
  }
}
