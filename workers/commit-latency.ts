/**
 * A head's commit latency: when it applied each batch (its last seq and its writes), and once the
 * commit point passes it (the tail's ack, back up the chain), the time since, once for each write,
 * into its replica's shared statistics (ReplicaStat.commitLatency*), which the main thread reads as
 * a histogram. One clock read per batch applied and per pass that sees the commit point move.
 * Bounded: while PENDING_MAX batches wait for their commit, the next ones are not timed.
 */
import { latencyBucket } from './latency-buckets.js';
import { ReplicaStat } from './replica-task.js';

const PENDING_MAX = 4096;

export class CommitLatency {
  private readonly lastSeqs = new Float64Array(PENDING_MAX);
  private readonly appliedAtMs = new Float64Array(PENDING_MAX);
  private readonly writes = new Uint32Array(PENDING_MAX);
  /** The ring of batches waiting: [first, first + waiting), modulo PENDING_MAX. */
  private first = 0;
  private waiting = 0;

  constructor(private readonly stats: Float64Array) {}

  /** A batch applied at the head, through `lastSeq`. */
  applied(lastSeq: number, writes: number, nowMs: number): void {
    if (this.waiting === PENDING_MAX) return;
    const at = (this.first + this.waiting) % PENDING_MAX;
    this.lastSeqs[at] = lastSeq;
    this.appliedAtMs[at] = nowMs;
    this.writes[at] = writes;
    this.waiting++;
  }

  /** Whether a batch waits that `committedSeq` covers (then call committed()). */
  isDue(committedSeq: number): boolean {
    return this.waiting > 0 && this.lastSeqs[this.first]! <= committedSeq;
  }

  /** Records every waiting batch `committedSeq` covers. */
  committed(committedSeq: number, nowMs: number): void {
    const stats = this.stats;
    while (this.waiting > 0 && this.lastSeqs[this.first]! <= committedSeq) {
      const seconds = Math.max(0, nowMs - this.appliedAtMs[this.first]!) / 1000;
      const writes = this.writes[this.first]!;
      stats[ReplicaStat.commitLatencyBuckets + latencyBucket(seconds)]! += writes;
      stats[ReplicaStat.commitLatencySum]! += seconds * writes;
      stats[ReplicaStat.commitLatencyCount]! += writes;
      this.first = (this.first + 1) % PENDING_MAX;
      this.waiting--;
    }
  }
}
