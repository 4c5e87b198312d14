/**
 * A replica's log on disk (`durability: 'async' | 'fsync'`): the batches it applied, in segment files of native-free-core/log/segment.ts, written by the replica's own worker
 * thread with synchronous calls (the thread blocks on its rings anyway).
 *
 * Group commit: append() stages each applied batch; commit(), once per pass over the rings and
 * before the pass's batches are forwarded or acknowledged, writes everything staged with one write
 * and, in `fsync` mode, one fdatasync. In `async` mode the data goes to the OS at each commit and is
 * synced at most `syncIntervalMs` later: a process crash loses nothing handed to the OS, a machine
 * crash at most that interval.
 *
 * Out of space (ENOSPC, EDQUOT on a write): nothing is lost and nothing half-written counts. A
 * batch that could not be staged waits in memory (`pending`, one batch: the replica takes no more
 * while its disk is full, see ./disk-room.ts); commit() returns false until a retry writes it all,
 * and every retry writes from the last whole record again (positioned writes), so a partial write
 * is overwritten. A failed fdatasync is not retried: after one, what the page cache holds is unknown
 * (the replica fails, and the chain goes on without it).
 *
 * open() recovers: it replays every segment into the store (checksums, no gaps: log/replay.ts),
 * truncates a torn end of the last one (a crash while appending) and appends after it. Damage
 * anywhere else refuses to start, with one line naming the file and the offset.
 *
 * checkpoint() writes the whole store (log/checkpoint.ts) and deletes the segments it covers, so
 * disk use follows live data; open() loads the newest checkpoint first and replays only after it.
 * It keeps the newest segments that add up to `retainBytes` even so: a tail sends a joiner that
 * restarted from its own log the batches it missed from them (catchUpFiles(), log/catch-up.ts).
 *
 * Files: `<directory>/<first seq, 20 digits>.log` (a new segment starts when the current one would
 * pass `segmentBytesMax`) and `<seq, 20 digits>.checkpoint` (written as `.tmp`, synced, renamed).
 */
import { closeSync, existsSync, fdatasyncSync, fstatSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';
import { DabbaError, ErrorCode } from '../native-free-core/errors.js';
import type { SnapshotSource } from '../native-free-core/chain/snapshot.js';
import type { CatchUpFiles } from '../native-free-core/log/catch-up.js';
import { encodeCheckpoint } from '../native-free-core/log/checkpoint.js';
import { recoverLog, type Recovered } from '../native-free-core/log/recover.js';
import type { SegmentBytes } from '../native-free-core/log/replay.js';
import { recordBytes, scanSegment, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, writeRecord } from '../native-free-core/log/segment.js';
import type { Store } from '../native-free-core/store.js';
import { FORMAT_RECORD_LIMITS, WriteBatchView, type RecordLimits } from '../native-free-core/wire/codec.js';
import { assert } from '../native-free-core/assert.js';
import { syncDirectory, TEMPORARY_SUFFIX, writeFileDurably } from './durable-files.js';
import { isOutOfSpace } from './disk-room.js';
import { nativeCrc32 } from './native-crc32.js';

export type LogDurability = 'async' | 'fsync';

export interface ReplicaLogOptions {
  directory: string;
  durability: LogDurability;
  /** A segment is closed and a new one started before it would pass this many bytes. */
  segmentBytesMax: number;
  /** Largest batch frame (a record holding more is damage). */
  frameBytesMax: number;
  limits: RecordLimits;
  /** `async` mode: the longest a commit's data waits for an fdatasync. */
  syncIntervalMs: number;
  /** Monotonic milliseconds (tests pass their own). */
  now?: () => number;
  /** Keep the newest batches that fit this budget in `recovered.recent` (see log/replay.ts). */
  keepRecent?: { bytesMax: number; batchesMax: number };
  /** A checkpoint keeps the newest segments adding up to this many bytes (default 0). */
  retainBytes?: number;
  /**
   * Open only through this seq: the log after it is removed (a joiner adopting an old log stops
   * where it was committed, see readCommittedMark). Default: all of it.
   */
  stopAfterSeq?: number;
}

const SEGMENT_SUFFIX = '.log';
const CHECKPOINT_SUFFIX = '.checkpoint';
/** The highest seq the replica knew committed at the tail, written now and then (see markCommitted). */
const COMMITTED_MARK = 'committed';
const MARK_INTERVAL_MS = 100;

/** What open() recovered: the log's replay, after the checkpoint it started from (0: none). */
export type { Recovered };

function fileName(seq: number, suffix: string): string {
  return `${String(seq).padStart(20, '0')}${suffix}`;
}

export class ReplicaLog {
  private fd = -1;
  private segmentBytes = 0;
  /** Records staged since the last commit, and where the next one goes. */
  private readonly staged: Uint8Array;
  private stagedBytes = 0;
  /** Batches appended while the disk was out of space, oldest first (see the module comment). */
  private readonly pending: Array<{ frame: Uint8Array; firstSeq: number; lastSeq: number }> = [];
  private lastSyncAt: number;
  private markedSeq = 0;
  private markedAt = 0;
  private bytesAtCheckpoint = 0;
  private unsynced = false;
  private readonly now: () => number;
  /** The last sequence number appended (staged or written), and the last one on disk for sure. */
  appendedSeq: number;
  syncedSeq: number;
  writtenSeq: number;
  syncs = 0;
  bytesWritten = 0;
  readonly directory: string;
  checkpoints = 0;

  private constructor(
    private readonly options: ReplicaLogOptions,
    recovered: Recovered,
  ) {
    this.now = options.now ?? (() => performance.now());
    this.directory = options.directory;
    this.lastSyncAt = this.now();
    this.staged = new Uint8Array(recordBytes(options.frameBytesMax) * 2);
    this.appendedSeq = this.writtenSeq = this.syncedSeq = recovered.appliedSeq;
  }

  /**
   * Opens the log in `options.directory` (made if missing): loads its newest checkpoint into the
   * empty `store` and replays the segments after it. Throws DABBA_ERR_CORRUPT, naming the file and
   * offset, if the log cannot be trusted. `snapshotFrameBytesMax` bounds a checkpoint's frames.
   */
  static open(options: ReplicaLogOptions, store: Store, snapshotFrameBytesMax = 1024 * 1024): { log: ReplicaLog; recovered: Recovered } {
    if (recordBytes(options.frameBytesMax) + SEGMENT_HEADER_BYTES > options.segmentBytesMax) {
      throw new DabbaError(ErrorCode.outOfRange, `a segment of ${options.segmentBytesMax} bytes cannot hold a batch of ${options.frameBytesMax}`);
    }
    mkdirSync(options.directory, { recursive: true });
    const files = readdirSync(options.directory).sort();
    // A checkpoint a crash interrupted before its rename: never trusted, never needed.
    for (const name of files) if (name.endsWith(TEMPORARY_SUFFIX)) rmSync(join(options.directory, name));
    const { checkpoint, segments } = readLogFiles(options.directory, files);
    const recovered = recoverLog(checkpoint, segments, store, {
      crc: nativeCrc32,
      frameBytesMax: options.frameBytesMax,
      snapshotFrameBytesMax,
      limits: options.limits,
      ...(options.keepRecent === undefined ? {} : { keepRecent: options.keepRecent }),
      ...(options.stopAfterSeq === undefined ? {} : { stopAfterSeq: options.stopAfterSeq }),
    });
    if (recovered.corrupt !== null) {
      const { file, name, offset, reason } = recovered.corrupt;
      throw new DabbaError(ErrorCode.corrupt, `${file} ${name} is damaged at offset ${offset}: ${reason}`);
    }
    const log = new ReplicaLog(options, recovered);
    // Stopped short (stopAfterSeq): the log ends where the replay stopped; what came after goes.
    const cut = recovered.cutAt;
    if (cut !== null) for (const later of segments.slice(cut.segment + 1)) rmSync(later.name);
    const last = cut === null ? segments.at(-1) : segments[cut.segment];
    if (last !== undefined) {
      log.fd = openSync(last.name, 'r+');
      const end = cut?.offset ?? recovered.tornAt?.offset ?? last.bytes.length;
      if (end < SEGMENT_HEADER_BYTES) {
        // Torn before its header was whole: start the segment again.
        ftruncateSync(log.fd, 0);
        writeSync(log.fd, SEGMENT_MAGIC, 0, SEGMENT_HEADER_BYTES, 0);
        log.segmentBytes = SEGMENT_HEADER_BYTES;
      } else {
        if (end < fstatSync(log.fd).size) ftruncateSync(log.fd, end);
        log.segmentBytes = end;
      }
      fdatasyncSync(log.fd);
    }
    return { log, recovered };
  }

  /**
   * Stages one applied batch: its stamped bytes, which hold seq `firstSeq` .. `firstSeq + count - 1`
   * (the replica checked them before applying). commit() makes it durable.
   */
  append(frame: Uint8Array, firstSeq: number, count: number): void {
    const lastSeq = firstSeq + count - 1;
    const expected = (this.pending.at(-1)?.lastSeq ?? this.appendedSeq) + 1;
    assert(firstSeq === expected, `ReplicaLog: batch ${firstSeq}..${lastSeq} does not follow ${expected - 1} in the log`);
    assert(frame.length <= this.options.frameBytesMax, `ReplicaLog: a batch of ${frame.length} bytes is larger than frameBytesMax`);
    if (this.pending.length === 0) {
      try {
        return this.stage(frame, firstSeq, lastSeq);
      } catch (error) {
        if (!isOutOfSpace(error)) throw error;
      }
    }
    this.pending.push({ frame: frame.slice(), firstSeq, lastSeq });
  }

  /** Whether batches wait in memory for room on the disk (see the module comment). */
  get hasPending(): boolean {
    return this.pending.length > 0;
  }

  private stage(frame: Uint8Array, firstSeq: number, lastSeq: number): void {
    const bytes = recordBytes(frame.length);
    if (this.stagedBytes + bytes > this.staged.length) this.write();
    if (this.fd < 0 || this.segmentBytes + this.stagedBytes + bytes > this.options.segmentBytesMax) {
      this.write();
      this.startSegment(firstSeq);
    }
    this.stagedBytes = writeRecord(this.staged, this.stagedBytes, frame, nativeCrc32);
    this.appendedSeq = lastSeq;
  }

  /**
   * Notes how far the chain committed, as this replica knows it (its committedSeq), in a small file
   * written at most every 100 ms and not synced: it may lag, never lead. A joiner that adopts this
   * log later stops there (readCommittedMark): batches after it may be writes the chain never took.
   */
  markCommitted(seq: number, now = false): void {
    if (seq <= this.markedSeq || (!now && this.now() - this.markedAt < MARK_INTERVAL_MS)) return;
    const temporary = join(this.options.directory, COMMITTED_MARK + TEMPORARY_SUFFIX);
    try {
      writeFileSync(temporary, String(seq));
    } catch (error) {
      // No room for the mark: it stays where it was, which it may (it lags, never leads).
      if (!isOutOfSpace(error)) throw error;
      rmSync(temporary, { force: true });
      return;
    }
    renameSync(temporary, join(this.options.directory, COMMITTED_MARK));
    this.markedSeq = seq;
    this.markedAt = this.now();
  }

  /** Bytes appended since the last checkpoint (or since the log was opened). */
  get bytesSinceCheckpoint(): number {
    return this.bytesWritten + this.stagedBytes - this.bytesAtCheckpoint;
  }

  /**
   * Writes a checkpoint of `source`, the replica's store at the end of this log (appliedSeq equal
   * to what was appended), then deletes the older checkpoints and every segment it covers, keeping
   * those that hold any batch after `keepAfterSeq` (a replica keeps what it may have to resend: its
   * batches not yet acknowledged, see log/replay.ts's keepRecent).
   */
  checkpoint(source: SnapshotSource, snapshotFrameBytesMax: number, keepAfterSeq = source.appliedSeq): void {
    // What was appended goes first (a checkpoint covers it, and the log must not end before it).
    if (!this.commit()) throw Object.assign(new Error(`no space left to write the log in ${this.options.directory}`), { code: 'ENOSPC' });
    const started = this.fd >= 0 || this.appendedSeq > 0;
    // A fresh log may start at a snapshot's seq (a joiner's first checkpoint); others only at their end.
    if (started ? source.appliedSeq !== this.appendedSeq : source.appliedSeq < this.appendedSeq) {
      throw new DabbaError(ErrorCode.outOfRange, `a checkpoint at seq ${source.appliedSeq} of a log that ends at ${this.appendedSeq}`);
    }
    const directory = this.options.directory;
    const final = join(directory, fileName(source.appliedSeq, CHECKPOINT_SUFFIX));
    writeFileDurably(final, encodeCheckpoint(source, snapshotFrameBytesMax, nativeCrc32));
    // What the checkpoint covers: older checkpoints, and each segment whose successor starts at or
    // before the seq after it (all its batches are in the checkpoint). The newest segment stays.
    const files = readdirSync(directory).sort();
    for (const name of files) if (name.endsWith(CHECKPOINT_SUFFIX) && join(directory, name) !== final) rmSync(join(directory, name));
    const segments = files.filter((name) => name.endsWith(SEGMENT_SUFFIX));
    const retained = this.retainedFrom(segments);
    for (let index = 0; index + 1 < segments.length && index < retained; index++) {
      if (Number(segments[index + 1]!.slice(0, 20)) <= Math.min(keepAfterSeq, source.appliedSeq) + 1) rmSync(join(directory, segments[index]!));
    }
    syncDirectory(directory);
    this.checkpoints++;
    this.bytesAtCheckpoint = this.bytesWritten;
    this.appendedSeq = this.writtenSeq = this.syncedSeq = source.appliedSeq;
  }

  /** The index of the oldest of `segments` (oldest first) the newest retainBytes of the log reach into. */
  private retainedFrom(segments: readonly string[]): number {
    let bytes = 0;
    let index = segments.length;
    while (index > 0 && bytes < (this.options.retainBytes ?? 0)) bytes += statSync(join(this.options.directory, segments[--index]!)).size;
    return index;
  }

  /** The segments as a tail's catch-up reads them (log/catch-up.ts); what is staged is not there yet. */
  catchUpFiles(): CatchUpFiles {
    const directory = this.options.directory;
    return {
      list: () =>
        readdirSync(directory)
          .filter((name) => name.endsWith(SEGMENT_SUFFIX))
          .sort()
          .map((name) => ({ firstSeq: Number(name.slice(0, 20)), name })),
      read: (name) => readFileSync(join(directory, name)),
    };
  }

  /**
   * Writes what is staged; in `fsync` mode syncs it, in `async` mode syncs if the interval passed.
   * False if the disk is out of space: nothing appended may leave the replica yet (retry later).
   */
  commit(): boolean {
    try {
      while (this.pending.length > 0) {
        const { frame, firstSeq, lastSeq } = this.pending[0]!;
        this.stage(frame, firstSeq, lastSeq);
        this.pending.shift();
      }
      this.write();
    } catch (error) {
      if (isOutOfSpace(error)) return false;
      throw error;
    }
    if (this.unsynced && (this.options.durability === 'fsync' || this.now() - this.lastSyncAt >= this.options.syncIntervalMs)) this.sync();
    return true;
  }

  /** `async` mode: syncs what was written if it has waited syncIntervalMs (call when idle). */
  syncIfDue(): void {
    if (this.unsynced && this.now() - this.lastSyncAt >= this.options.syncIntervalMs) this.sync();
  }

  /** How long until written data is due for a sync, in ms; Infinity if none waits. */
  msUntilSyncDue(): number {
    return this.unsynced ? Math.max(0, this.lastSyncAt + this.options.syncIntervalMs - this.now()) : Number.POSITIVE_INFINITY;
  }

  /** A crash: let the file go without writing what is staged (the tests' and crashReplica's power cut). */
  abandon(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    this.stagedBytes = 0;
  }

  close(): void {
    try {
      this.write();
    } catch (error) {
      // Out of space: what it held never left the replica (commit() comes first), so no one counts on it.
      if (!isOutOfSpace(error)) throw error;
    }
    if (this.unsynced) this.sync();
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }

  private write(): void {
    if (this.stagedBytes === 0) return;
    let written = 0;
    while (written < this.stagedBytes) {
      written += writeSync(this.fd, this.staged, written, this.stagedBytes - written, this.segmentBytes + written);
    }
    this.segmentBytes += this.stagedBytes;
    this.bytesWritten += this.stagedBytes;
    this.stagedBytes = 0;
    this.writtenSeq = this.appendedSeq;
    this.unsynced = true;
  }

  private sync(): void {
    fdatasyncSync(this.fd);
    this.syncs++;
    this.syncedSeq = this.writtenSeq;
    this.unsynced = false;
    this.lastSyncAt = this.now();
  }

  /**
   * Starts the next segment, named by its first sequence number, and closes the current one
   * (synced). If the new file cannot be written (out of space), it is removed and nothing changes.
   */
  private startSegment(firstSeq: number): void {
    const name = join(this.options.directory, fileName(firstSeq, SEGMENT_SUFFIX));
    const fd = openSync(name, 'wx+');
    try {
      writeSync(fd, SEGMENT_MAGIC, 0, SEGMENT_HEADER_BYTES, 0);
    } catch (error) {
      closeSync(fd);
      rmSync(name, { force: true });
      throw error;
    }
    if (this.fd >= 0) {
      if (this.unsynced) this.sync();
      closeSync(this.fd);
    }
    this.fd = fd;
    this.segmentBytes = SEGMENT_HEADER_BYTES;
    // The new file's name must survive a crash too.
    syncDirectory(this.options.directory);
    this.unsynced = true;
  }
}

/** A log directory's newest checkpoint and its segments, oldest first, read whole. */
function readLogFiles(directory: string, files: readonly string[]): { checkpoint: SegmentBytes | null; segments: SegmentBytes[] } {
  const checkpoint = files.filter((name) => name.endsWith(CHECKPOINT_SUFFIX)).at(-1);
  const read = (name: string): SegmentBytes => ({ name: join(directory, name), bytes: readFileSync(join(directory, name)) });
  return { checkpoint: checkpoint === undefined ? null : read(checkpoint), segments: files.filter((name) => name.endsWith(SEGMENT_SUFFIX)).map(read) };
}

/**
 * The damage that would stop the log in `directory` from opening (see open()), or null: every
 * record and batch is checked as open() checks them, nothing is applied, and nothing on disk changes (dabba serve checks its
 * replicas' logs so before it starts; see src/host/host-data-dir.ts).
 */
export function logDamage(directory: string, options: { frameBytesMax: number; snapshotFrameBytesMax: number; limits: RecordLimits }): Recovered['corrupt'] {
  const files = readdirSync(directory).sort().filter((name) => !name.endsWith(TEMPORARY_SUFFIX));
  const { checkpoint, segments } = readLogFiles(directory, files);
  return recoverLog(checkpoint, segments, null, { crc: nativeCrc32, ...options }).corrupt;
}

/**
 * How far the log in `directory` reaches, without loading it: the last sequence number of its last
 * whole record, or of its checkpoint (0 for none). A restarted chain puts its longest log first.
 * Damage is not judged here: the replica that opens the log does that.
 */
export function logEnd(directory: string, frameBytesMax: number): number {
  if (!existsSync(directory)) return 0;
  const files = readdirSync(directory).sort();
  const checkpoint = files.filter((name) => name.endsWith(CHECKPOINT_SUFFIX)).at(-1);
  const checkpointSeq = checkpoint === undefined ? 0 : Number(checkpoint.slice(0, 20));
  const view = new WriteBatchView(FORMAT_RECORD_LIMITS);
  const segments = files.filter((name) => name.endsWith(SEGMENT_SUFFIX));
  for (let index = segments.length - 1; index >= 0; index--) {
    const bytes = readFileSync(join(directory, segments[index]!));
    const last = scanSegment(bytes, nativeCrc32, frameBytesMax).records.at(-1);
    if (last === undefined) continue;
    if (view.open(bytes.subarray(last.frameOffset, last.frameOffset + last.frameLength)) !== null) continue;
    return Math.max(checkpointSeq, view.firstSeq + view.count - 1);
  }
  return checkpointSeq;
}

/** The committed seq a log's replica last noted (markCommitted), or 0 if none can be read. */
export function readCommittedMark(directory: string): number {
  try {
    const seq = Number(readFileSync(join(directory, COMMITTED_MARK), 'utf8'));
    return Number.isSafeInteger(seq) && seq > 0 ? seq : 0;
  } catch {
    return 0;
  }
}

/**
 * Cuts a replica's log at a damaged record: the segment is truncated there and every later one
 * removed. False (nothing changed) when the segment starts at or before the log's checkpoint:
 * what precedes the damage may then end before the checkpoint, and the log would have a gap.
 */
export function cutLogAt(directory: string, segment: string, offset: number): boolean {
  const names = readdirSync(directory).sort();
  const checkpoint = names.filter((name) => name.endsWith(CHECKPOINT_SUFFIX)).at(-1);
  const name = basename(segment);
  if (checkpoint !== undefined && Number(name.slice(0, 20)) <= Number(checkpoint.slice(0, 20))) return false;
  for (const later of names.filter((other) => other.endsWith(SEGMENT_SUFFIX) && other > name)) rmSync(join(directory, later));
  truncateSync(join(directory, name), offset);
  return true;
}
