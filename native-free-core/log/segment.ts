/**
 * The on-disk form of a replica's log: segment files of records, each record one batch exactly as
 * the replica applied it (the stamped WriteBatch frame). A file is
 *
 *   magic "dabbalg1" (8 bytes), then records, each:
 *     length  u32 LE   bytes of the frame
 *     crc     u32 LE   CRC-32 of the length's 4 bytes and the frame's bytes
 *     frame   length bytes
 *     padding to a multiple of 8 (zeros, not covered by the CRC)
 *
 * The batch carries a checksum of its own, but not of the head's stamps (epoch, first sequence
 * number), which the log must keep: the record's CRC covers everything it stores.
 *
 * Reading back (scanSegment) tells apart the two ways a file goes bad. A crash while appending
 * leaves the END of the file torn: cut short, or whole but not what was written (a file system may
 * extend the file before the data lands). Nothing in an unfinished append was acknowledged in
 * `fsync` mode (a replica syncs before it forwards or acknowledges), so recovery truncates it.
 * Damage with good records after it is corruption: the replica must not start on it, and the scan
 * names the offset. (Damage to a synced last record looks torn and is truncated; the chain's other
 * replicas still hold that write.)
 * Pure: the runtime reads and writes the files.
 */
import type { Crc32 } from '../checksum.js';

export const SEGMENT_MAGIC = new Uint8Array([0x64, 0x61, 0x62, 0x62, 0x61, 0x6c, 0x67, 0x31]); // "dabbalg1"
export const SEGMENT_HEADER_BYTES = SEGMENT_MAGIC.length;
export const RECORD_HEADER_BYTES = 8;
const ALIGNMENT = 8;

/** Bytes a record of a `frameBytes`-byte frame takes in a segment, padding included. */
export function recordBytes(frameBytes: number): number {
  return RECORD_HEADER_BYTES + alignUp(frameBytes);
}

function alignUp(bytes: number): number {
  return (bytes + ALIGNMENT - 1) & ~(ALIGNMENT - 1);
}

/**
 * Writes the record of `frame` into `target` at `offset` (the caller made sure recordBytes() fit)
 * and returns the offset after it.
 */
export function writeRecord(target: Uint8Array, offset: number, frame: Uint8Array, crc: Crc32): number {
  const length = frame.length;
  target[offset] = length & 0xff;
  target[offset + 1] = (length >>> 8) & 0xff;
  target[offset + 2] = (length >>> 16) & 0xff;
  target[offset + 3] = length >>> 24;
  target.set(frame, offset + RECORD_HEADER_BYTES);
  const checksum = crc(target, offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length, crc(target, offset, offset + 4, 0));
  target[offset + 4] = checksum & 0xff;
  target[offset + 5] = (checksum >>> 8) & 0xff;
  target[offset + 6] = (checksum >>> 16) & 0xff;
  target[offset + 7] = checksum >>> 24;
  const end = offset + recordBytes(length);
  target.fill(0, offset + RECORD_HEADER_BYTES + length, end);
  return end;
}

/** A whole segment holding `frames`, in order (a checkpoint file, or a log as an appender leaves it). */
export function encodeSegment(frames: readonly Uint8Array[], crc: Crc32): Uint8Array {
  const bytes = new Uint8Array(SEGMENT_HEADER_BYTES + frames.reduce((sum, frame) => sum + recordBytes(frame.length), 0));
  bytes.set(SEGMENT_MAGIC);
  let offset = SEGMENT_HEADER_BYTES;
  for (const frame of frames) offset = writeRecord(bytes, offset, frame, crc);
  return bytes;
}

/** Where a record's frame lies in the segment. */
export interface SegmentRecord {
  /** Offset of the record (its header) in the segment. */
  offset: number;
  /** Offset and length of the frame. */
  frameOffset: number;
  frameLength: number;
}

export type SegmentProblem =
  /** The last record is cut short or damaged: a crash while appending. Truncate at `offset`. */
  | { kind: 'torn'; offset: number; reason: string }
  /** A record before the last is damaged, or the file is not a segment: do not start on it. */
  | { kind: 'corrupt'; offset: number; reason: string };

export interface SegmentScan {
  records: SegmentRecord[];
  /** Offset after the last good record: where appending resumes (after truncating a torn one). */
  end: number;
  problem: SegmentProblem | null;
}

/**
 * Reads every record of a segment's bytes, checking each one's CRC, up to the end or the first bad
 * one. `frameBytesMax` bounds a record's declared length (a larger one is damage, not a record).
 */
export function scanSegment(bytes: Uint8Array, crc: Crc32, frameBytesMax: number): SegmentScan {
  const records: SegmentRecord[] = [];
  if (bytes.length < SEGMENT_HEADER_BYTES) {
    // A crash right after the file was made, before its magic was written whole.
    return { records, end: 0, problem: bytes.length === 0 ? null : { kind: 'torn', offset: 0, reason: `${bytes.length} bytes, less than the segment header` } };
  }
  for (let index = 0; index < SEGMENT_HEADER_BYTES; index++) {
    if (bytes[index] !== SEGMENT_MAGIC[index]) return { records, end: 0, problem: { kind: 'corrupt', offset: 0, reason: 'not a dabba log segment (bad magic)' } };
  }
  let offset = SEGMENT_HEADER_BYTES;
  while (offset < bytes.length) {
    const problem = recordProblem(bytes, offset, crc, frameBytesMax);
    if (problem !== null) {
      const torn = !goodRecordAfter(bytes, offset + ALIGNMENT, crc, frameBytesMax);
      return { records, end: offset, problem: { kind: torn ? 'torn' : 'corrupt', offset, reason: problem } };
    }
    const frameLength = readUint32(bytes, offset);
    records.push({ offset, frameOffset: offset + RECORD_HEADER_BYTES, frameLength });
    offset += recordBytes(frameLength);
  }
  return { records, end: offset, problem: null };
}

/** Why the record at `offset` is bad, or null. */
function recordProblem(bytes: Uint8Array, offset: number, crc: Crc32, frameBytesMax: number): string | null {
  if (offset + RECORD_HEADER_BYTES > bytes.length) return 'the file ends inside a record header';
  const length = readUint32(bytes, offset);
  if (length === 0 || length > frameBytesMax) return `a record of ${length} bytes (at most ${frameBytesMax})`;
  if (offset + recordBytes(length) > bytes.length) return `the file ends inside a record of ${length} bytes`;
  const stored = readUint32(bytes, offset + 4);
  const computed = crc(bytes, offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length, crc(bytes, offset, offset + 4, 0));
  if (stored !== computed) return `the record's CRC is ${hex(stored)}, its bytes give ${hex(computed)}`;
  return null;
}

/**
 * Whether a good record starts anywhere from `from` on. A crash while appending damages only the
 * end of the file: whatever follows the first bad record there is part of the same unfinished
 * write, and no good record follows it. A good record after a bad one means the damage is in the
 * middle of what was written: corruption. (A value that happens to hold a well-formed record makes
 * a torn end look like corruption: the replica then refuses to start, which is the safe mistake.)
 */
function goodRecordAfter(bytes: Uint8Array, from: number, crc: Crc32, frameBytesMax: number): boolean {
  for (let offset = from; offset + RECORD_HEADER_BYTES <= bytes.length; offset += ALIGNMENT) {
    if (recordProblem(bytes, offset, crc, frameBytesMax) === null) return true;
  }
  return false;
}

function readUint32(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24)) >>> 0;
}

function hex(value: number): string {
  return value.toString(16).padStart(8, '0');
}
