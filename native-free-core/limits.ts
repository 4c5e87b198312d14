/**
 * Every size limit of a chain, derived from a few settings in one place, so that whatever one
 * boundary accepts, every later stage can carry. Input is checked where it enters (a client's
 * put(), a socket, a ring, a snapshot frame) against these limits and refused with a coded error;
 * past that point the engine relies on them, and `checkLimits()` asserts the relationships at
 * start-up so a change to one limit that breaks another fails at once, not under load.
 *
 * The derivation (each line needs the ones above it):
 *
 *   ringRecordBytesMax       = ringBytes / 2 - 8 - 8            (ring.ts: a record fits half the ring;
 *                                                                the frame in it follows its chain tag,
 *                                                                wire/chain-tag.ts)
 *   controlRecordBytesMax    = controlRingBytes / 2 - 8 - 8     (the Ack/Hello rings)
 *   linkRecordBytesMax       = ringRecordBytesMax               (a socket message becomes one data-ring
 *                                                                record, byte for byte; larger ones are
 *                                                                refused by the socket itself)
 *   controlFrameBytesMax     = 1 KiB <= controlRecordBytesMax   (an Ack or a Hello is ~64 bytes; one
 *                                                                padded beyond 1 KiB is refused)
 *   keyBytesMax              <= 65535                          (WriteRecord.key_length is a uint16)
 *   keyBytesMax + valueBytesMax <= batchBytesMax                (one write fits one batch)
 *   writeFrameBytesMax       = frame overhead + 12 * batchWritesMax + batchBytesMax
 *                            <= ringRecordBytesMax              (a full batch fits one record)
 *   inflightBytesMax         >= writeFrameBytesMax             (a full batch fits the in-flight log)
 *   readBatchReadsMax        = reads of keyBytesMax keys that fit one record (at most 1024)
 *   readReplyPayloadBytesMax = what one record holds beside readBatchReadsMax results (at most 4 MiB)
 *                            >= valueBytesMax                  (any value fits one read reply)
 *   snapshotFrameBytesMax    = max(256 KiB, one frame holding one largest entry)
 *                            <= ringRecordBytesMax              (any entry fits one snapshot frame)
 *   watchReplyContentBytesMax = max(256 KiB, one change of keyBytesMax and valueBytesMax), its frame
 *                            <= ringRecordBytesMax              (any change fits one watch reply)
 *   segmentBytesMax          = max(64 MiB, a segment holding one record of writeFrameBytesMax)
 *                                                               (a replica's log: any batch fits a segment)
 *
 * A value that passed put() or a socket is at most valueBytesMax, so a store only ever holds
 * entries that a read reply and a snapshot frame can carry: the reply encoder's and the snapshot
 * writer's assertions are then invariants of the engine, never reachable from input.
 */
import { assert } from './assert.js';
import { snapshotFrameBytesFor } from './chain/snapshot.js';
import { recordBytes, SEGMENT_HEADER_BYTES } from './log/segment.js';
import { RING_RECORD_ALIGNMENT_BYTES } from './ring.js';
import { CHAIN_TAG_BYTES } from './wire/chain-tag.js';
import { watchChangeBytes, watchReplyFrameBytesFor } from './wire/watch-frames.js';
import { FRAME_OVERHEAD_BYTES, KEY_BYTES_LIMIT, READ_RECORD_BYTES, READ_RESULT_BYTES, writeBatchFrameBytesMax } from './wire/codec.js';

/** The settings every other limit is derived from (resolved options). */
export interface LimitSettings {
  /** Capacity of each data ring (batches, reads, replies), a power of two. */
  ringBytes: number;
  /** Capacity of each control ring (acks, Hellos), a power of two. */
  controlRingBytes: number;
  keyBytesMax: number;
  valueBytesMax: number;
  /** Most writes in one batch a client sends. */
  batchWritesMax: number;
  /** Most key + value bytes in one batch a client sends. */
  batchBytesMax: number;
  /** Reads a client keeps unanswered at most. */
  pendingReadsMax: number;
  /** Bytes of applied, unacknowledged batches a replica keeps. */
  inflightBytesMax: number;
}

export interface Limits extends LimitSettings {
  ringRecordBytesMax: number;
  controlRecordBytesMax: number;
  /** Largest message a socket may deliver into a data ring (batches, snapshot frames, reads). */
  linkRecordBytesMax: number;
  /** Largest Ack or Hello frame accepted. */
  controlFrameBytesMax: number;
  /** Largest WriteBatch frame a client's full batch makes. */
  writeFrameBytesMax: number;
  readBatchReadsMax: number;
  readReplyResultsMax: number;
  readReplyPayloadBytesMax: number;
  /** Largest Snapshot frame a tail cuts for a joiner. */
  snapshotFrameBytesMax: number;
  /** Key, value and per-change bytes one watch reply carries at most. */
  watchReplyContentBytesMax: number;
  /** Largest file of a replica's log (workers/replica-log.ts starts a new one before it would pass it). */
  segmentBytesMax: number;
}

/** An Ack or Hello is about 64 bytes; anything much larger is padding nobody sends. */
export const CONTROL_FRAME_BYTES_MAX = 1024;
/** Snapshot frames aim at this size, so cutting one never holds up the batches a tail applies. */
const SNAPSHOT_FRAME_BYTES_TARGET = 256 * 1024;
/** Watch replies aim at this much content, so one poll never holds up the replica's loop for long. */
const WATCH_REPLY_CONTENT_BYTES_TARGET = 256 * 1024;
const SEGMENT_BYTES_TARGET = 64 * 1024 * 1024;
const READ_BATCH_READS_LIMIT = 1024;
const READ_REPLY_PAYLOAD_BYTES_LIMIT = 4 * 1024 * 1024;
/** A read reply's status byte per result, beside its ReadResult struct. */
const READ_STATUS_BYTES = 1;

/** The largest frame one record of a ring of `ringBytes` carries, behind its chain tag. */
export function ringRecordBytesMaxFor(ringBytes: number): number {
  return ringBytes / 2 - RING_RECORD_ALIGNMENT_BYTES - CHAIN_TAG_BYTES;
}

/** Derives every limit, or returns why the settings cannot work together (for a RangeError). */
export function deriveLimits(settings: LimitSettings): Limits | string {
  const { ringBytes, controlRingBytes, keyBytesMax, valueBytesMax, batchWritesMax, batchBytesMax, pendingReadsMax, inflightBytesMax } = settings;
  const ringRecordBytesMax = ringRecordBytesMaxFor(ringBytes);
  const controlRecordBytesMax = ringRecordBytesMaxFor(controlRingBytes);
  if (keyBytesMax < 1 || keyBytesMax > KEY_BYTES_LIMIT) return `keyBytesMax must be between 1 and ${KEY_BYTES_LIMIT}, got ${keyBytesMax}`;
  if (keyBytesMax + valueBytesMax > batchBytesMax) {
    return `keyBytesMax + valueBytesMax (${keyBytesMax + valueBytesMax}) must fit in batch.maxBytes (${batchBytesMax})`;
  }
  const writeFrameBytesMax = writeBatchFrameBytesMax(batchWritesMax, batchBytesMax);
  if (writeFrameBytesMax > ringRecordBytesMax) {
    return `a full batch (${writeFrameBytesMax} bytes) must fit in half a ring: raise ringBytes (${ringBytes}) or lower batch.maxBytes/maxWrites`;
  }
  if (inflightBytesMax < writeFrameBytesMax) {
    return `inflightBytesMax (${inflightBytesMax}) must hold at least one full batch (${writeFrameBytesMax} bytes)`;
  }
  const readBatchReadsMax = Math.min(
    READ_BATCH_READS_LIMIT,
    pendingReadsMax,
    Math.floor((ringRecordBytesMax - FRAME_OVERHEAD_BYTES) / (READ_RECORD_BYTES + keyBytesMax)),
  );
  if (readBatchReadsMax < 1) return `ringBytes (${ringBytes}) is too small for a read of a ${keyBytesMax}-byte key`;
  const readReplyResultsMax = readBatchReadsMax;
  const readReplyPayloadBytesMax = Math.min(
    READ_REPLY_PAYLOAD_BYTES_LIMIT,
    ringRecordBytesMax - FRAME_OVERHEAD_BYTES - readReplyResultsMax * (READ_RESULT_BYTES + READ_STATUS_BYTES),
  );
  if (readReplyPayloadBytesMax < Math.max(valueBytesMax, 1)) {
    return `ringBytes (${ringBytes}) is too small to carry a read reply of valueBytesMax (${valueBytesMax}) bytes`;
  }
  const largestEntryFrameBytes = snapshotFrameBytesFor(keyBytesMax + valueBytesMax);
  if (largestEntryFrameBytes > ringRecordBytesMax) {
    return `ringBytes (${ringBytes}) is too small for a snapshot frame holding a ${keyBytesMax}-byte key and a ${valueBytesMax}-byte value`;
  }
  const largestChangeBytes = watchChangeBytes(keyBytesMax, valueBytesMax);
  if (watchReplyFrameBytesFor(largestChangeBytes) > ringRecordBytesMax) {
    return `ringBytes (${ringBytes}) is too small for a watch reply holding a ${keyBytesMax}-byte key and a ${valueBytesMax}-byte value`;
  }
  const limits: Limits = {
    ...settings,
    ringRecordBytesMax,
    controlRecordBytesMax,
    linkRecordBytesMax: ringRecordBytesMax,
    controlFrameBytesMax: CONTROL_FRAME_BYTES_MAX,
    writeFrameBytesMax,
    readBatchReadsMax,
    readReplyResultsMax,
    readReplyPayloadBytesMax,
    snapshotFrameBytesMax: Math.min(ringRecordBytesMax, Math.max(SNAPSHOT_FRAME_BYTES_TARGET, largestEntryFrameBytes)),
    watchReplyContentBytesMax: Math.max(largestChangeBytes, Math.min(WATCH_REPLY_CONTENT_BYTES_TARGET, ringRecordBytesMax - watchReplyFrameBytesFor(0))),
    segmentBytesMax: Math.max(SEGMENT_BYTES_TARGET, SEGMENT_HEADER_BYTES + recordBytes(writeFrameBytesMax)),
  };
  checkLimits(limits);
  return limits;
}

/** Asserts every relationship of the derivation above: the engine relies on each of them. */
export function checkLimits(limits: Limits): void {
  assert(limits.linkRecordBytesMax <= limits.ringRecordBytesMax, 'limits: a link record must fit a data ring record');
  assert(limits.controlFrameBytesMax <= limits.controlRecordBytesMax, 'limits: an Ack or Hello must fit a control ring record');
  assert(limits.keyBytesMax >= 1 && limits.keyBytesMax <= KEY_BYTES_LIMIT, 'limits: keyBytesMax outside the record format');
  assert(limits.keyBytesMax + limits.valueBytesMax <= limits.batchBytesMax, 'limits: one write must fit one batch');
  assert(limits.writeFrameBytesMax <= limits.ringRecordBytesMax, 'limits: a full batch must fit a ring record');
  assert(limits.writeFrameBytesMax <= limits.inflightBytesMax, 'limits: a full batch must fit the in-flight log');
  assert(SEGMENT_HEADER_BYTES + recordBytes(limits.writeFrameBytesMax) <= limits.segmentBytesMax, 'limits: a full batch must fit a log segment');
  assert(limits.valueBytesMax <= limits.readReplyPayloadBytesMax, 'limits: any value must fit one read reply');
  assert(
    readReplyFrameBytesMax(limits) <= limits.ringRecordBytesMax,
    'limits: a full read reply must fit a ring record',
  );
  assert(
    snapshotFrameBytesFor(limits.keyBytesMax + limits.valueBytesMax) <= limits.snapshotFrameBytesMax,
    'limits: the largest entry must fit one snapshot frame',
  );
  assert(limits.snapshotFrameBytesMax <= limits.ringRecordBytesMax, 'limits: a snapshot frame must fit a ring record');
  assert(watchChangeBytes(limits.keyBytesMax, limits.valueBytesMax) <= limits.watchReplyContentBytesMax, 'limits: the largest change must fit one watch reply');
  assert(watchReplyFrameBytesFor(limits.watchReplyContentBytesMax) <= limits.ringRecordBytesMax, 'limits: a full watch reply must fit a ring record');
}

function readReplyFrameBytesMax(limits: Limits): number {
  return FRAME_OVERHEAD_BYTES + limits.readReplyResultsMax * (READ_RESULT_BYTES + READ_STATUS_BYTES) + limits.readReplyPayloadBytesMax;
}
