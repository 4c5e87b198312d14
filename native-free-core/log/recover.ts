/**
 * A replica's state from what its log directory holds: the newest checkpoint, if any, loaded into
 * an empty store, then every logged batch after it replayed (./replay.ts), with the clients'
 * high-water marks of both. The runtime (workers/replica-log.ts) reads the files and hands their
 * bytes in; the simulator's disk (test/sim/disk.ts) hands in its own. Pure.
 */
import type { Crc32 } from '../checksum.js';
import type { Store } from '../store.js';
import type { RecordLimits } from '../wire/codec.js';
import { loadCheckpoint } from './checkpoint.js';
import { replaySegments, type ReplayResult, type SegmentBytes } from './replay.js';

export interface RecoverOptions {
  crc: Crc32;
  /** Largest batch a segment's record may hold. */
  frameBytesMax: number;
  /** Largest snapshot frame a checkpoint's record may hold. */
  snapshotFrameBytesMax: number;
  limits: RecordLimits;
  /** See ReplayOptions.keepRecent. */
  keepRecent?: { bytesMax: number; batchesMax: number };
  /** See ReplayOptions.stopAfterSeq. */
  stopAfterSeq?: number;
}

export interface Recovered extends ReplayResult {
  /** The checkpoint's sequence number (0 without one). */
  checkpointSeq: number;
  /** Damage that must stop the replica from starting, in a checkpoint or a segment; null if none. */
  corrupt: { name: string; offset: number; reason: string; file: 'checkpoint' | 'log segment' } | null;
}

/** With a null store, only checks the log (what logDamage() in workers/replica-log.ts needs): nothing is applied. */
export function recoverLog(checkpoint: SegmentBytes | null, segments: readonly SegmentBytes[], store: Store | null, options: RecoverOptions): Recovered {
  let checkpointSeq = 0;
  let checkpointMarks = new Map<number, number>();
  if (checkpoint !== null) {
    const loaded = loadCheckpoint(checkpoint.bytes, store, { crc: options.crc, frameBytesMax: options.snapshotFrameBytesMax, limits: options.limits });
    if ('reason' in loaded) {
      const corrupt = { name: checkpoint.name, offset: loaded.offset, reason: loaded.reason, file: 'checkpoint' as const };
      return { appliedSeq: 0, batchesApplied: 0, clientHighWater: new Map(), tornAt: null, cutAt: null, recent: [], checkpointSeq: 0, corrupt };
    }
    checkpointSeq = loaded.appliedSeq;
    checkpointMarks = loaded.clientHighWater;
  }
  const replayed = replaySegments(segments, store, {
    crc: options.crc,
    frameBytesMax: options.frameBytesMax,
    limits: options.limits,
    afterSeq: checkpointSeq,
    ...(options.keepRecent === undefined ? {} : { keepRecent: options.keepRecent }),
    ...(options.stopAfterSeq === undefined ? {} : { stopAfterSeq: options.stopAfterSeq }),
  });
  for (const [client, mark] of checkpointMarks) if (mark > (replayed.clientHighWater.get(client) ?? 0)) replayed.clientHighWater.set(client, mark);
  return { ...replayed, checkpointSeq, corrupt: replayed.corrupt === null ? null : { ...replayed.corrupt, file: 'log segment' } };
}
