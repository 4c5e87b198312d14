/**
 * A client's reads of one chain, spread over the replicas that serve them. With `reads: 'tail'` one
 * lane sends every read to the tail; with `reads: 'any'` (CRAQ) there is a lane per replica, and
 * gets take the lanes in turn, a batch at a time (a read per lane in turn would send each replica
 * batches a third the size: more frames and wake-ups for the same reads). Each lane is a ReadPipeline of its own (its request ids, its futures,
 * its unanswered batches), stamps its number on its batches, and is answered in order by the one
 * replica it points at: replies carry the lane back, so whatever link they arrive on, they reach
 * their lane. When the chain changes, each lane is pointed at a member again, and a lane whose
 * replica changed sends its unanswered reads to the new one (a read answered twice counts once).
 */
import type { DabbaError } from '../native-free-core/errors.js';
import { ReadReplyView } from '../native-free-core/wire/codec.js';
import { ReadPipeline, type VersionedValue } from './read-pipeline.js';
import type { ResolvedOptions } from './options.js';
import type { RecordSink, Wakeable } from './record-sink.js';
import type { KeyInput } from './write-pipeline.js';
import { systemClock, type Clock } from './runtime/clock.js';
import { LATENCY_BUCKETS_SECONDS, WeightedHistogram } from './metrics/weighted-histogram.js';

/** Where a lane sends its reads: a replica, named by `key` (a node or host id). */
export interface ReadTarget {
  key: number | string;
  sink: RecordSink;
  doorbell: Wakeable;
}

export class ReadLanes {
  readonly lanes: ReadPipeline[];
  private readonly targetKeys: Array<number | string>;
  private turn = 0;
  /** The lane the last get() went to. */
  lastLane: ReadPipeline;
  private readonly replyView = new ReadReplyView();
  /** Every lane's answered reads' latency (see ReadPipeline). */
  readonly latency = new WeightedHistogram(LATENCY_BUCKETS_SECONDS);

  constructor(options: ResolvedOptions, targets: readonly ReadTarget[], laneCount: number, epoch: () => number, clock: Clock = systemClock) {
    const perLane = Math.max(1, Math.ceil(options.pendingReadsMax / laneCount));
    this.lanes = [];
    this.targetKeys = [];
    for (let lane = 0; lane < laneCount; lane++) {
      const target = targets[lane % targets.length]!;
      this.lanes.push(new ReadPipeline(options, target.sink, target.doorbell, epoch, clock, lane, perLane, this.latency));
      this.targetKeys.push(target.key);
    }
    this.lastLane = this.lanes[0]!;
  }

  get(key: KeyInput): Promise<VersionedValue | undefined> {
    const lanes = this.lanes;
    let lane = lanes[this.turn]!;
    // The lane's batch left (full, or at the end of the last turn): the next batch goes to the next lane.
    if (lanes.length > 1 && lane.openReads === 0) {
      this.turn = this.turn + 1 === lanes.length ? 0 : this.turn + 1;
      lane = lanes[this.turn]!;
    }
    this.lastLane = lane;
    return lane.get(key);
  }

  get pending(): number {
    let pending = 0;
    for (const lane of this.lanes) pending += lane.pending;
    return pending;
  }

  get readsAnswered(): number {
    let answered = 0;
    for (const lane of this.lanes) answered += lane.readsAnswered;
    return answered;
  }

  flush(): void {
    for (const lane of this.lanes) lane.flush();
  }

  canPump(): boolean {
    for (const lane of this.lanes) if (lane.canPump()) return true;
    return false;
  }

  pump(): void {
    for (const lane of this.lanes) lane.pump();
  }

  /** One ReadReplyBatch: returns how many reads it answered, or why it is not one for these lanes. */
  receiveReply(frame: Uint8Array): number | string {
    const view = this.replyView;
    const malformed = view.open(frame);
    if (malformed !== null) return malformed;
    const lane = this.lanes[view.lane];
    if (lane === undefined) return `reply for read lane ${view.lane}, never sent`;
    return lane.answer(view);
  }

  /** After a run of receiveReply(): each lane forgets its answered batches. */
  afterReplies(): void {
    for (const lane of this.lanes) lane.afterReplies();
  }

  /**
   * The replicas that serve reads now (the tail alone, or every member): lane i reads from
   * targets[i mod n]. A lane whose replica changed (or every lane, with `resendAll`) sends its
   * unanswered reads again.
   */
  point(targets: readonly ReadTarget[], resendAll = false): void {
    if (targets.length === 0) return;
    this.lanes.forEach((lane, index) => {
      const target = targets[index % targets.length]!;
      if (!resendAll && this.targetKeys[index] === target.key) return;
      this.targetKeys[index] = target.key;
      lane.switchTail(target.sink, target.doorbell);
    });
  }

  /** The link to `target`'s replica (re)opened: the lanes that read from it send their unanswered reads again. */
  resendOn(target: ReadTarget): void {
    this.lanes.forEach((lane, index) => {
      if (this.targetKeys[index] === target.key) lane.switchTail(target.sink, target.doorbell);
    });
  }

  /** Settles every pending read of every lane with `error`. */
  fail(error: DabbaError): void {
    for (const lane of this.lanes) lane.fail(error);
  }
}
