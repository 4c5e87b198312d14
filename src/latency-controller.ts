/**
 * Batching to a latency target (`batch: { latencyTargetUs }`): a client's batch size adapts at run
 * time so that the p99 of its acknowledged writes stays near the target while the load allows, and
 * goes back to the largest batches when the client is saturated.
 *
 * The controller is fed every acknowledged batch (its latency, from its first write to its ack) and
 * decides once per period (at least PERIOD_MS and PERIOD_BATCHES), on the period's p99:
 * - saturated (a backlog of writes, or batches waiting for ring space, during the period): the cap
 *   goes back to `writesMax`. Throughput comes first, and small batches cost more per write.
 * - p99 at or below the target: the cap stays.
 * - p99 above the target: the cap moves one step (halved or doubled), in the direction of the last
 *   step if that step lowered the p99, else the other way. Smaller batches finish each hop sooner
 *   (a replica applies a batch whole before the next replica starts on it); larger ones cost less
 *   per write, which matters when the p99 comes from queueing. Which one wins depends on the
 *   machine and the load, so the controller measures instead of assuming (extremum seeking).
 * It reads no clock and schedules nothing: the caller passes the time, so it is driven the same way
 * in tests and at run time.
 */

/** The smallest cap the controller sets: below it, per-batch costs dominate whatever the load. */
export const WRITES_CAP_MIN = 16;
/** A decision needs at least this long and this many acknowledged batches since the last. */
export const PERIOD_MS = 250;
export const PERIOD_BATCHES = 64;
/** Latencies kept per period for its p99; more than that are sampled evenly (see observe). */
const SAMPLES_MAX = 1024;

export class LatencyController {
  /** The most writes the client puts in one batch now. */
  writesCap: number;
  /** Decisions taken, by kind (for stats and tests). */
  readonly decisions = { shrink: 0, grow: 0, saturated: 0 };
  /** The p99 of the last period that decided, in microseconds (0 before the first). */
  lastP99Us = 0;

  private readonly targetMs: number;
  private readonly samples = new Float64Array(SAMPLES_MAX);
  private sampleCount = 0;
  private batchesSeen = 0;
  private periodStartMs: number;
  private saturatedInPeriod = false;
  /** The way the cap moves next while the p99 is above the target: -1 smaller, +1 larger. */
  private direction: 1 | -1 = -1;
  private previousP99Ms = 0;

  constructor(
    targetUs: number,
    private readonly writesMax: number,
    nowMs: number,
  ) {
    this.targetMs = targetUs / 1000;
    this.writesCap = writesMax;
    this.periodStartMs = nowMs;
  }

  /** The client had more writes than its batches could take at once: it is saturated. */
  noteSaturated(): void {
    this.saturatedInPeriod = true;
  }

  /** One acknowledged batch: `latencyMs` from its first write to its ack. */
  observe(latencyMs: number, nowMs: number): void {
    this.batchesSeen++;
    if (this.sampleCount < SAMPLES_MAX) this.samples[this.sampleCount++] = latencyMs;
    // Past the buffer, replace a slot in turn: the period's p99 stays an estimate from an even
    // sample instead of the first 1024 batches.
    else this.samples[this.batchesSeen % SAMPLES_MAX] = latencyMs;
    if (nowMs - this.periodStartMs >= PERIOD_MS && this.batchesSeen >= PERIOD_BATCHES) this.decide(nowMs);
  }

  private decide(nowMs: number): void {
    const sorted = this.samples.subarray(0, this.sampleCount).sort();
    const p99Ms = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))]!;
    this.lastP99Us = Math.round(p99Ms * 1000);
    if (this.saturatedInPeriod) {
      this.writesCap = this.writesMax;
      this.direction = -1;
      this.decisions.saturated++;
    } else if (p99Ms > this.targetMs) {
      // Keep going while the last step helped; turn back when it did not.
      if (this.previousP99Ms > 0 && p99Ms >= this.previousP99Ms) this.direction = -this.direction as 1 | -1;
      const next = this.direction < 0 ? Math.floor(this.writesCap / 2) : this.writesCap * 2;
      const bounded = Math.max(Math.min(WRITES_CAP_MIN, this.writesMax), Math.min(this.writesMax, next));
      if (bounded === this.writesCap) {
        // At a bound: the next step goes the other way.
        this.direction = -this.direction as 1 | -1;
      } else {
        if (bounded < this.writesCap) this.decisions.shrink++;
        else this.decisions.grow++;
        this.writesCap = bounded;
      }
    }
    this.previousP99Ms = p99Ms;
    this.sampleCount = 0;
    this.batchesSeen = 0;
    this.periodStartMs = nowMs;
    this.saturatedInPeriod = false;
  }
}
