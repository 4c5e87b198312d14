/**
 * A simulated host's disk in `fsync` mode: the log of the one replica it runs, as the worker keeps
 * it (workers/node.ts with workers/replica-log.ts), in the real formats and read back by the real
 * recovery code (native-free-core/log/: encodeCheckpoint, loadCheckpoint, replaySegments).
 *
 * - A member's log starts empty; a joiner's starts with a checkpoint of the snapshot it loaded.
 * - Each batch the replica applies is staged; the host's next Ready commits what is staged (write
 *   and fdatasync) before anything leaves the replica. Group commit: a drain stages several.
 * - Now and then a checkpoint of the whole store replaces the log, keeping the batches not yet
 *   acknowledged (a successor may have to be sent them after a restart).
 * - A crash keeps what was committed and, of what was staged, any prefix, possibly cut mid-record
 *   (a torn write): recovery truncates it.
 * - A host whose replica left the chain keeps its log: a joiner it runs next starts from it (resume),
 *   only through the committed seq the replica last noted (its log after that may hold writes the
 *   chain never took), and is sent what it lacks, read back from the tail's log (catchUpFiles).
 *   The note is kept through a crash (the worker's may lag by 100 ms: never ahead).
 */
import type { ChainNode, RecoveredState } from '../../native-free-core/chain/node.js';
import { crc32 } from '../../native-free-core/checksum.js';
import { encodeCheckpoint } from '../../native-free-core/log/checkpoint.js';
import { recoverLog } from '../../native-free-core/log/recover.js';
import type { CatchUpFiles } from '../../native-free-core/log/catch-up.js';
import { encodeSegment, SEGMENT_HEADER_BYTES } from '../../native-free-core/log/segment.js';
import type { Store } from '../../native-free-core/store.js';
import { FORMAT_RECORD_LIMITS, WriteBatchView } from '../../native-free-core/wire/codec.js';

const FRAME_BYTES_MAX = 1 << 20;

export class SimulatedDisk {
  /** The replica whose log this is (0: none). */
  replicaId = 0;
  /** Whether batches are logged (a joiner's log starts at its checkpoint). */
  logging = false;
  /** The newest checkpoint's bytes, or null. */
  private checkpoint: Uint8Array | null = null;
  /** Batches on disk after (or overlapping) the checkpoint, oldest first. */
  private committed: Uint8Array[] = [];
  /** Applied, not yet committed: lost or torn in a crash. */
  private staged: Uint8Array[] = [];
  /** The start of a record a crash cut short, after the committed ones (recovery truncates it). */
  private tornRecord: Uint8Array | null = null;
  private readonly view = new WriteBatchView();
  /** The replica's committed seq as it last noted it (workers/replica-log.ts markCommitted). */
  private committedMark = 0;
  readonly counts = { checkpoints: 0, tornRecords: 0, stagedLost: 0 };

  constructor(private readonly random: () => number) {}

  /** A new replica's empty log (a joiner's stays unused until its snapshot is loaded). */
  startFresh(replicaId: number, joining: boolean): void {
    this.replicaId = replicaId;
    this.logging = !joining;
    this.checkpoint = null;
    this.committed = [];
    this.staged = [];
    this.tornRecord = null;
    this.committedMark = 0;
  }

  /** The replica's committed seq, noted after each Ready. */
  noteCommitted(seq: number): void {
    if (seq > this.committedMark) this.committedMark = seq;
  }

  /** Whether it holds a log to start a replica from (a checkpoint or a logged batch). */
  get holdsLog(): boolean {
    return this.replicaId !== 0 && (this.checkpoint !== null || this.committed.length > 0 || this.staged.length > 0);
  }

  /** The replica left the chain, its process still up: the log is closed whole (nothing staged is lost). */
  closeCleanly(): void {
    this.commit();
  }

  /** A joiner starts from this log (recover() loaded it) and appends to it from there. */
  resume(replicaId: number): void {
    this.replicaId = replicaId;
    this.logging = true;
  }

  /** The log as the segment files a tail's catch-up reads (../../native-free-core/log/catch-up.ts): one segment. */
  catchUpFiles(): CatchUpFiles {
    return {
      list: () => {
        const first = this.committed[0];
        if (first === undefined) return [];
        this.view.open(first);
        return [{ firstSeq: this.view.firstSeq, name: 'segment' }];
      },
      read: () => encodeSegment(this.committed, crc32),
    };
  }

  /** After `node` applied a frame from upstream (a batch, or a joiner's snapshot frame). */
  applied(node: ChainNode, frame: Uint8Array, isBatch: boolean): void {
    if (this.logging) {
      if (isBatch) this.staged.push(frame.slice());
      return;
    }
    // A joiner's log starts with a checkpoint of what it loaded, written whole and synced.
    if (!node.joinCaughtUp) return;
    this.writeCheckpoint(node, Number.POSITIVE_INFINITY);
    this.logging = true;
  }

  /** The start of every Ready: what was staged is on disk before anything leaves. */
  commit(): void {
    if (this.staged.length > 0) this.committed.push(...this.staged.splice(0));
  }

  /**
   * Checkpoints once the log holds more than `batchesMax` batches, keeping those after the committed
   * seq and the newest `retain` (as the worker keeps its newest segments: a replica that was away
   * catches up from them).
   */
  checkpointIfDue(node: ChainNode, batchesMax: number, retain: number): void {
    if (!this.logging || this.committed.length + this.staged.length <= batchesMax) return;
    this.writeCheckpoint(node, node.committedSeq, retain);
  }

  private writeCheckpoint(node: ChainNode, keepAfterSeq: number, retain = 0): void {
    this.commit();
    this.checkpoint = encodeCheckpoint(node.checkpointSource(), FRAME_BYTES_MAX, crc32);
    const retainFrom = this.committed.length - retain;
    this.committed = this.committed.filter((frame, index) => {
      this.view.open(frame);
      return index >= retainFrom || this.view.firstSeq + this.view.count - 1 > keepAfterSeq;
    });
    this.counts.checkpoints++;
  }

  /** The process dies: what was committed stays; of what was staged, any prefix, and maybe part of the next record. */
  crash(): void {
    const kept = Math.floor(this.random() * (this.staged.length + 1));
    this.committed.push(...this.staged.slice(0, kept));
    const next = this.staged[kept];
    this.counts.stagedLost += this.staged.length - kept;
    this.staged = [];
    if (next === undefined || this.random() < 0.5) return;
    const record = encodeSegment([next], crc32).subarray(SEGMENT_HEADER_BYTES);
    this.tornRecord = record.slice(0, 1 + Math.floor(this.random() * (record.length - 1)));
    this.counts.tornRecords++;
  }

  /**
   * What the restarted replica starts from: its store loaded from the log, as the worker's
   * ReplicaLog.open does, or 'unusable' with why (damage, which the simulator never makes).
   */
  recover(store: Store, keepRecent: { bytesMax: number; batchesMax: number }, throughCommitted = false): RecoveredState | string {
    const committed = encodeSegment(this.committed, crc32);
    const torn = this.tornRecord;
    const bytes = torn === null ? committed : new Uint8Array([...committed, ...torn]);
    const recovered = recoverLog(this.checkpoint === null ? null : { name: 'checkpoint', bytes: this.checkpoint }, [{ name: 'segment', bytes }], store, {
      crc: crc32,
      frameBytesMax: FRAME_BYTES_MAX,
      snapshotFrameBytesMax: FRAME_BYTES_MAX,
      limits: FORMAT_RECORD_LIMITS,
      keepRecent,
      ...(throughCommitted ? { stopAfterSeq: this.committedMark } : {}),
    });
    if (recovered.corrupt !== null) return `${recovered.corrupt.file} damaged at ${recovered.corrupt.offset}: ${recovered.corrupt.reason}`;
    // (A replay stopped short of the end, with stopAfterSeq, does not reach a torn record.)
    const tornSeen = recovered.cutAt === null && torn !== null;
    if ((recovered.tornAt !== null) !== tornSeen || (recovered.tornAt !== null && recovered.tornAt.offset !== committed.length)) {
      return `the torn record at ${committed.length} was found at ${recovered.tornAt?.offset ?? 'none'}`;
    }
    // Truncated there, as the worker does: the log goes on after the last whole record (or where
    // the replay stopped, short of a cut).
    this.tornRecord = null;
    if (recovered.cutAt !== null) {
      this.committed = this.committed.filter((frame) => {
        this.view.open(frame);
        return this.view.firstSeq + this.view.count - 1 <= recovered.appliedSeq;
      });
    }
    return { appliedSeq: recovered.appliedSeq, clientHighWater: recovered.clientHighWater, inflight: recovered.recent };
  }
}
