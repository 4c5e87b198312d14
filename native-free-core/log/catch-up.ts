/**
 * A tail's side of a catch-up join: the batches its own log holds after the point where a joining
 * replica's log ends, read back from the segment files, so a replica that restarts from its log is
 * sent what it missed instead of a copy of the whole store (ChainNode, chain/join-source.ts).
 *
 * It starts only where the two histories provably agree: the tail's log must hold the batch that
 * ends at the joiner's applied seq, stamped with the same epoch as the joiner's copy. One head
 * orders each seq in an epoch, and the members of an epoch hold prefixes of one history, so one
 * seq and epoch name one batch and everything before it. A replica that was ahead of the chain (a
 * head that ordered writes no one else got before it failed) has a batch the chain does not; the
 * stamps differ there, and it gets a snapshot instead.
 *
 * The runtime lists and reads the files (workers/node.ts, from a ReplicaLog's directory; the
 * simulator, from its disk); this only scans the bytes. The last segment may still be growing, so a
 * batch not on disk yet reads as null: try again after the next commit. Pure.
 */
import type { Crc32 } from '../checksum.js';
import { WriteBatchView, type RecordLimits } from '../wire/codec.js';
import { scanSegment } from './segment.js';

/** What a catch-up reads: the log's segments, by the seq of their first batch, oldest first. */
export interface CatchUpFiles {
  /** The segments as they are now: each one's first seq and a name to read it by. */
  list(): Array<{ firstSeq: number; name: string }>;
  /** A segment's bytes as they are now (a growing one may end mid-record). */
  read(name: string): Uint8Array;
}

/** The batches after a joiner's applied seq, in order, through `throughSeq`. */
export interface CatchUp {
  /** The next batch (a view, valid until the next call), or null if none more is on disk yet. */
  next(): Uint8Array | null;
  /** Whether every batch through throughSeq was given out. */
  readonly done: boolean;
}

export interface CatchUpOptions {
  crc: Crc32;
  frameBytesMax: number;
  limits: RecordLimits;
}

/**
 * A catch-up from `afterSeq` (stamped `afterEpoch` on the joiner) through `throughSeq`, or null if
 * the log cannot give it: it no longer holds that batch (a checkpoint covered it), holds it with
 * another stamp, or holds a batch that straddles afterSeq (the joiner stopped inside one: not ours).
 */
export function openCatchUp(files: CatchUpFiles, afterSeq: number, afterEpoch: number, throughSeq: number, options: CatchUpOptions): CatchUp | null {
  if (afterSeq <= 0 || afterEpoch <= 0 || afterSeq > throughSeq) return null;
  const segments = files.list();
  // The batch ending at afterSeq starts at or before it, in the last segment that does.
  let index = -1;
  for (let candidate = 0; candidate < segments.length; candidate++) if (segments[candidate]!.firstSeq <= afterSeq) index = candidate;
  if (index < 0) return null;
  const reader = new SegmentReader(files, segments[index]!.name, segments[index]!.firstSeq, options);
  for (let frame = reader.next(); frame !== null; frame = reader.next()) {
    const view = reader.view;
    const lastSeq = view.firstSeq + view.count - 1;
    if (lastSeq < afterSeq) continue;
    if (lastSeq !== afterSeq || view.epoch !== afterEpoch) return null;
    return new LogCatchUp(reader, afterSeq, throughSeq);
  }
  return null;
}

class LogCatchUp implements CatchUp {
  constructor(
    private readonly reader: SegmentReader,
    private lastSeq: number,
    private readonly throughSeq: number,
  ) {}

  get done(): boolean {
    return this.lastSeq >= this.throughSeq;
  }

  next(): Uint8Array | null {
    if (this.done) return null;
    const frame = this.reader.next();
    if (frame === null) return null;
    const view = this.reader.view;
    // The log of one replica has no gaps (log/replay.ts checks it on every start).
    if (view.firstSeq !== this.lastSeq + 1) throw new Error(`catch-up: batch ${view.firstSeq} after ${this.lastSeq} in the log`);
    this.lastSeq = view.firstSeq + view.count - 1;
    return frame;
  }
}

/** Walks the records of a log's segments from one segment on, reading a growing one again when it ends. */
class SegmentReader {
  readonly view: WriteBatchView;
  private bytes: Uint8Array = new Uint8Array(0);
  private offsets: Array<{ frameOffset: number; frameLength: number }> = [];
  private position = 0;
  /** Bytes of the current segment already turned into records. */
  private scannedEnd = 0;

  constructor(
    private readonly files: CatchUpFiles,
    private name: string,
    private firstSeq: number,
    private readonly options: CatchUpOptions,
  ) {
    this.view = new WriteBatchView(options.limits);
    this.load(0);
  }

  /** The next record's batch (opened in `view`), or null if none more is on disk yet. */
  next(): Uint8Array | null {
    if (this.position === this.offsets.length && !this.refill()) return null;
    const { frameOffset, frameLength } = this.offsets[this.position++]!;
    const frame = this.bytes.subarray(frameOffset, frameOffset + frameLength);
    const malformed = this.view.open(frame);
    if (malformed !== null) throw new Error(`catch-up: a logged record in ${this.name} is not a batch: ${malformed}`);
    return frame;
  }

  /** Reads the current segment again (it may have grown), else moves to the next one. */
  private refill(): boolean {
    if (this.load(this.scannedEnd)) return true;
    const following = this.files.list().find((segment) => segment.firstSeq > this.firstSeq);
    if (following === undefined) return false;
    this.name = following.name;
    this.firstSeq = following.firstSeq;
    return this.load(0);
  }

  /** Loads the records after byte `from` of the current segment; whether there were any. */
  private load(from: number): boolean {
    this.bytes = this.files.read(this.name);
    // A torn or half-written end is where the file stops for now: records after it come later.
    const scan = scanSegment(this.bytes, this.options.crc, this.options.frameBytesMax);
    this.offsets = scan.records.filter((record) => record.offset >= from);
    this.position = 0;
    this.scannedEnd = scan.end;
    return this.offsets.length > 0;
  }
}
