/**
 * A checkpoint: a replica's whole store, its applied sequence number and its clients' high-water
 * marks, as the Snapshot frames a joiner would be sent (chain/snapshot.ts), stored as the records
 * of a segment (./segment.ts). Recovery loads the newest checkpoint and replays the log after it,
 * and the log's older segments can then go: disk use follows live data, not history.
 *
 * A checkpoint file is written whole under another name, synced and then renamed, so it is either
 * complete or absent: any damage, a missing last frame, or frames that disagree on their sequence
 * number make it untrustworthy (a corrupt result naming the offset), never "torn". Pure.
 */
import type { Crc32 } from '../checksum.js';
import { SnapshotView, SnapshotWriter, type SnapshotEntryLimits, type SnapshotSource } from '../chain/snapshot.js';
import type { Store } from '../store.js';
import { encodeSegment, scanSegment, SEGMENT_HEADER_BYTES } from './segment.js';

export interface LoadedCheckpoint {
  appliedSeq: number;
  clientHighWater: Map<number, number>;
}

/** The bytes of a checkpoint file of `source` (its store as it is now, at source.appliedSeq). */
export function encodeCheckpoint(source: SnapshotSource, frameBytesMax: number, crc: Crc32): Uint8Array {
  const writer = new SnapshotWriter(source, frameBytesMax);
  const frames: Uint8Array[] = [];
  while (!writer.done) frames.push(writer.next().slice());
  return encodeSegment(frames, crc);
}

/**
 * Loads a checkpoint file's bytes into an empty `store` (null: only checks them). Returns what it
 * holds, or why it cannot be trusted and where (then the store holds part of it and must be dropped).
 */
export function loadCheckpoint(
  bytes: Uint8Array,
  store: Store | null,
  options: { crc: Crc32; frameBytesMax: number; limits: SnapshotEntryLimits },
): LoadedCheckpoint | { offset: number; reason: string } {
  const scan = scanSegment(bytes, options.crc, options.frameBytesMax);
  if (scan.problem !== null) return { offset: scan.problem.offset, reason: scan.problem.reason };
  const view = new SnapshotView(options.limits);
  const clientHighWater = new Map<number, number>();
  let appliedSeq = -1;
  for (let index = 0; index < scan.records.length; index++) {
    const record = scan.records[index]!;
    const malformed = view.open(bytes.subarray(record.frameOffset, record.frameOffset + record.frameLength));
    if (malformed !== null) return { offset: record.offset, reason: `not a snapshot frame: ${malformed}` };
    if (appliedSeq >= 0 && view.appliedSeq !== appliedSeq) return { offset: record.offset, reason: `a frame at seq ${view.appliedSeq} in a checkpoint at ${appliedSeq}` };
    appliedSeq = view.appliedSeq;
    if (store !== null) view.applyTo(store, clientHighWater);
    if (view.last !== (index === scan.records.length - 1)) {
      return { offset: record.offset, reason: view.last ? 'frames after the last one' : 'the checkpoint ends before its last frame' };
    }
  }
  if (appliedSeq < 0) return { offset: SEGMENT_HEADER_BYTES, reason: 'an empty checkpoint' };
  return { appliedSeq, clientHighWater };
}
