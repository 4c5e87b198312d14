/**
 * Acknowledged-write counts sampled over time ([when, count] pairs, in order), as the failover
 * benchmarks record them around a fault.
 */
export type AckSamples = Array<[at: number, acknowledged: number]>;

/** The count last sampled at or before `time` (0 before the first sample). */
export function countAt(samples: AckSamples, time: number): number {
  let value = 0;
  for (const [at, count] of samples) if (at <= time) value = count;
  return value;
}

/**
 * The stall: the longest stretch with no new acknowledgement from `from` on, and when it ended
 * (the first sample with a new count after it; `from` if there was none).
 */
export function longestStall(samples: AckSamples, from: number): { stallMs: number; endedAt: number } {
  let stallMs = 0;
  let endedAt = from;
  let lastChange = from;
  let lastCount = samples.find(([at]) => at >= from)?.[1] ?? 0;
  for (const [at, count] of samples) {
    if (at < from || count === lastCount) continue;
    if (at - lastChange > stallMs) {
      stallMs = at - lastChange;
      endedAt = at;
    }
    lastChange = at;
    lastCount = count;
  }
  return { stallMs, endedAt };
}
