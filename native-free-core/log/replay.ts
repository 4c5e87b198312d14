/**
 * Recovering a replica's state from its log: every batch of its segments, oldest first, applied to
 * a store, with everything a restart must know checked on the way. A record must be a well-formed
 * batch whose own checksum holds (the record's CRC already held), and the batches must continue
 * each other's sequence numbers: the log of one replica has no gaps. Batches at or before
 * `afterSeq` (already in the snapshot the store was loaded from) are skipped.
 *
 * Only the end of the LAST segment may be torn (a crash while appending); the runtime truncates the
 * file there and appends from that point. Damage anywhere else stops the replay, naming the segment
 * and the offset: the replica does not start on a log it cannot trust. Pure: the runtime reads the
 * files and hands their bytes in.
 */
import type { Crc32 } from '../checksum.js';
import { applyBatch } from '../chain/apply-batch.js';
import type { Store } from '../store.js';
import { WriteBatchView, type RecordLimits } from '../wire/codec.js';
import { scanSegment } from './segment.js';

export interface SegmentBytes {
  /** The file's name, for messages. */
  name: string;
  bytes: Uint8Array;
}

export interface ReplayOptions {
  crc: Crc32;
  /** Largest frame a record may hold (a larger declared length is damage). */
  frameBytesMax: number;
  limits: RecordLimits;
  /** The sequence number the store already holds (a snapshot's), 0 for an empty store. */
  afterSeq: number;
  /**
   * Keep the newest batches that end the log, at most this many bytes and batches (`recent`): a
   * restarted replica resends them to a successor that has less (its in-flight list's share).
   */
  keepRecent?: { bytesMax: number; batchesMax: number };
  /**
   * Replay only through this seq (never below afterSeq): the first batch that ends past it, and
   * everything after, is left out and reported as `cutAt` for the runtime to remove. A joiner that
   * adopts an old log stops where that log is known to be committed (see ../chain/node.ts).
   */
  stopAfterSeq?: number;
}

export interface ReplayResult {
  /** The last sequence number applied (afterSeq if the log adds nothing). */
  appliedSeq: number;
  batchesApplied: number;
  /** Each client's highest client sequence in the log: the head's exactly-once state. */
  clientHighWater: Map<number, number>;
  /** Where the last segment's torn end starts, to truncate; null if it ends cleanly. */
  tornAt: { segment: number; offset: number; reason: string } | null;
  /** With stopAfterSeq: the first record left out (its segment's index and offset); null if none was. */
  cutAt: { segment: number; offset: number } | null;
  /** Damage that must stop the replica from starting; null if none. */
  corrupt: { name: string; offset: number; reason: string } | null;
  /**
   * The newest batches, oldest first, contiguous and ending at appliedSeq (views of the segments'
   * bytes), within `keepRecent`; empty if not asked for or if the log's end is a snapshot's.
   */
  recent: Uint8Array[];
}

/** Replays `segments` into `store`; with a null store, only checks them (nothing is applied). */
export function replaySegments(segments: readonly SegmentBytes[], store: Store | null, options: ReplayOptions): ReplayResult {
  const view = new WriteBatchView(options.limits);
  const result: ReplayResult = { appliedSeq: options.afterSeq, batchesApplied: 0, clientHighWater: new Map(), tornAt: null, cutAt: null, corrupt: null, recent: [] };
  const stopAfterSeq = Math.max(options.afterSeq, options.stopAfterSeq ?? Number.POSITIVE_INFINITY);
  const recent = new RecentBatches(options.keepRecent ?? { bytesMax: 0, batchesMax: 0 });
  for (let index = 0; index < segments.length; index++) {
    const { name, bytes } = segments[index]!;
    const scan = scanSegment(bytes, options.crc, options.frameBytesMax);
    for (const record of scan.records) {
      const frame = bytes.subarray(record.frameOffset, record.frameOffset + record.frameLength);
      const problem = batchProblem(view, frame, result.appliedSeq, options.afterSeq, options.crc);
      if (problem !== null) {
        result.corrupt = { name, offset: record.offset, reason: problem };
        return result;
      }
      const lastSeq = view.firstSeq + view.count - 1;
      if (lastSeq > stopAfterSeq) {
        result.cutAt = { segment: index, offset: record.offset };
        result.recent = recent.endingAt(result.appliedSeq);
        return result;
      }
      const lastClientSeq = view.firstClientSeq + view.count - 1;
      if (lastClientSeq > (result.clientHighWater.get(view.clientId) ?? 0)) result.clientHighWater.set(view.clientId, lastClientSeq);
      recent.add(frame, view.firstSeq, lastSeq);
      if (lastSeq <= result.appliedSeq) continue; // in the snapshot already
      if (store !== null) applyBatch(store, view);
      result.appliedSeq = lastSeq;
      result.batchesApplied++;
    }
    if (scan.problem !== null) {
      if (scan.problem.kind === 'torn' && index === segments.length - 1) {
        result.tornAt = { segment: index, offset: scan.problem.offset, reason: scan.problem.reason };
      } else {
        const where = scan.problem.kind === 'torn' ? 'a torn end in a segment that is not the last' : scan.problem.reason;
        result.corrupt = { name, offset: scan.problem.offset, reason: where === scan.problem.reason ? where : `${where}: ${scan.problem.reason}` };
        return result;
      }
    }
  }
  result.recent = recent.endingAt(result.appliedSeq);
  return result;
}

/** A window over the newest contiguous batches seen, within a byte and a batch budget. */
class RecentBatches {
  private frames: Uint8Array[] = [];
  private bytes = 0;
  private lastSeq = -1;

  constructor(private readonly budget: { bytesMax: number; batchesMax: number }) {}

  add(frame: Uint8Array, firstSeq: number, lastSeq: number): void {
    if (this.budget.batchesMax === 0) return;
    // Batches the snapshot covers may overlap or precede others: the window holds one run.
    if (firstSeq !== this.lastSeq + 1) {
      this.frames = [];
      this.bytes = 0;
    }
    this.frames.push(frame);
    this.bytes += frame.length;
    this.lastSeq = lastSeq;
    let drop = 0;
    while (this.frames.length - drop > this.budget.batchesMax || this.bytes > this.budget.bytesMax) this.bytes -= this.frames[drop++]!.length;
    if (drop > 0) this.frames = this.frames.slice(drop);
  }

  endingAt(seq: number): Uint8Array[] {
    return this.lastSeq === seq ? this.frames : [];
  }
}

/**
 * Why a logged frame cannot be replayed after `appliedSeq`, or null. Only batches the snapshot
 * covers (through `afterSeq`) may come again; past it, each batch continues the one before.
 */
function batchProblem(view: WriteBatchView, frame: Uint8Array, appliedSeq: number, afterSeq: number, crc: Crc32): string | null {
  const malformed = view.open(frame);
  if (malformed !== null) return `not a write batch: ${malformed}`;
  if (!view.checksumMatches(crc)) return "the batch's checksum does not match its bytes";
  const lastSeq = view.firstSeq + view.count - 1;
  if (lastSeq <= afterSeq) return null;
  if (view.firstSeq !== appliedSeq + 1) return `the batch holds seq ${view.firstSeq}..${lastSeq}, the log before it ends at ${appliedSeq}`;
  return null;
}
