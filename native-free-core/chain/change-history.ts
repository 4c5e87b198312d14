import { assert } from '../assert.js';
import { Op, WriteBatchView } from '../wire/codec.js';
import { InflightLog } from './inflight-log.js';

/**
 * One change met by ChangeHistory.scan: a Put or Delete at `seq`, its key at `keyStart` of `bytes`
 * and a Put's value right after it. Return false to stop before it (it is not taken).
 */
export type ChangeVisitor = (op: Op, bytes: Uint8Array, keyStart: number, keyLength: number, valueLength: number, seq: number) => boolean;

/**
 * A replica's recent history: the batches it applied, newest last, as their exact bytes, so that a
 * watch (./watch-polls.ts) can be served from any version it still holds, at whichever replica the
 * watcher reaches after a failover. It is bounded in bytes and in batches: the oldest batches make
 * room for new ones, and a watcher behind what is left is told it lagged.
 *
 * The arena is an in-flight log (./inflight-log.ts) that is trimmed by room instead of by acks, and
 * whose batches count as forwarded as soon as they are in. Writes a replica skipped (a failed
 * condition, a write the admission hook refused) are listed apart: they changed nothing.
 */
export class ChangeHistory {
  private readonly batches: InflightLog;
  /** Sequence numbers of records held but not applied, ascending. */
  private readonly skipped: number[] = [];
  private skippedStart = 0;
  private readonly batch = new WriteBatchView();

  constructor(bytesMax: number, batchesMax: number) {
    this.batches = new InflightLog(bytesMax, batchesMax, { prefault: false });
  }

  /** The oldest version held: a watcher can resume from here on (lastSeq + 1 when it holds nothing). */
  get startSeq(): number {
    return this.batches.firstSeq;
  }

  get lastSeq(): number {
    return this.batches.lastSeq;
  }

  get batchCount(): number {
    return this.batches.batchCount;
  }

  /** Forgets everything: the history continues after `seq` (a replica that starts from a log or a snapshot). */
  resetAfter(seq: number): void {
    while (this.batches.batchCount > 0) this.evictOldest();
    this.batches.resetAfter(seq);
    this.skipped.length = 0;
    this.skippedStart = 0;
  }

  /** A batch just applied, continuing the history (its records not applied were reported with skip()). */
  append(bytes: Uint8Array, firstSeq: number, count: number): void {
    assert(firstSeq === this.batches.lastSeq + 1, `ChangeHistory.append: seq ${firstSeq} does not follow ${this.batches.lastSeq}`);
    if (!this.batches.canEverHold(bytes.length)) {
      // Larger than the whole history: what came before is gone, and so is this batch.
      this.resetAfter(firstSeq + count - 1);
      return;
    }
    while (!this.batches.hasRoomFor(bytes.length)) this.evictOldest();
    this.batches.append(bytes, firstSeq, count);
    this.batches.markForwardedThrough(firstSeq + count - 1);
  }

  /** The record at `seq` of the batch being applied changed nothing (call before append()). */
  skip(seq: number): void {
    assert(seq > this.batches.lastSeq, 'ChangeHistory.skip: a record of the batch being applied');
    this.skipped.push(seq);
  }

  /** Whether the record at `seq` (a held one) was not applied. */
  isSkipped(seq: number): boolean {
    const index = this.firstSkippedFrom(seq);
    return index < this.skipped.length && this.skipped[index] === seq;
  }

  /** Whether any record in [firstSeq, lastSeq] was skipped (most batches have none: no lookups then). */
  skipsWithin(firstSeq: number, lastSeq: number): boolean {
    const index = this.firstSkippedFrom(firstSeq);
    return index < this.skipped.length && this.skipped[index]! <= lastSeq;
  }

  /** The index of the first skipped seq >= `seq`. */
  private firstSkippedFrom(seq: number): number {
    const skipped = this.skipped;
    let low = this.skippedStart;
    let high = skipped.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (skipped[middle]! < seq) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /**
   * Visits the changes with versions from `from` through `through` (both held), in order: the
   * records applied, not those skipped or refused. Stops when `visit` returns false, or after
   * looking at `recordsMax` records; returns the version to go on from (the first not looked at,
   * or the one `visit` stopped before).
   */
  scan(from: number, through: number, visit: ChangeVisitor, recordsMax = Infinity): number {
    assert(from >= this.startSeq && through <= this.lastSeq, `ChangeHistory.scan: ${from}..${through} is not held`);
    const batch = this.batch;
    let seq = from;
    let looked = 0;
    for (let index = seq <= through ? this.indexOf(seq) : this.batchCount; index < this.batchCount && seq <= through && looked < recordsMax; index++) {
      const firstSeq = this.firstSeqAt(index);
      const count = this.countAt(index);
      assert(batch.open(this.batchAt(index)) === null, 'a batch in the change history is well-formed');
      const skips = this.skipsWithin(firstSeq, firstSeq + count - 1);
      const bytes = batch.bytes;
      for (let record = seq - firstSeq; record < count && seq <= through && looked < recordsMax; record++, seq++, looked++) {
        const write = batch.recordAt(record);
        const op = write.op();
        if (op === Op.Rejected || (skips && this.isSkipped(seq))) continue;
        if (!visit(op, bytes, batch.keyPosition(write), write.keyLength(), op === Op.Put ? write.valueLength() : 0, seq)) return seq;
      }
    }
    return seq;
  }

  /** The index of the held batch containing `seq` (startSeq <= seq <= lastSeq). */
  indexOf(seq: number): number {
    assert(seq >= this.startSeq && seq <= this.lastSeq, `ChangeHistory.indexOf: ${seq} is not held`);
    let low = 0;
    let high = this.batches.batchCount - 1;
    while (low < high) {
      const middle = (low + high + 1) >>> 1;
      if (this.batches.firstSeqAt(middle) <= seq) low = middle;
      else high = middle - 1;
    }
    return low;
  }

  /** A view of held batch `index` (0 = oldest), valid until the next append. */
  batchAt(index: number): Uint8Array {
    return this.batches.batchAt(index);
  }

  firstSeqAt(index: number): number {
    return this.batches.firstSeqAt(index);
  }

  countAt(index: number): number {
    return this.batches.countAt(index);
  }

  private evictOldest(): void {
    const lastSeq = this.batches.firstSeqAt(0) + this.batches.countAt(0) - 1;
    this.batches.trimThrough(lastSeq);
    while (this.skippedStart < this.skipped.length && this.skipped[this.skippedStart]! <= lastSeq) this.skippedStart++;
    if (this.skippedStart > 1024 && this.skippedStart * 2 > this.skipped.length) {
      this.skipped.splice(0, this.skippedStart);
      this.skippedStart = 0;
    }
  }
}
