/**
 * Encoders and in-place readers for dabba's frames (schema: ./schema.fbs, generated code in
 * ./generated). Readers verify a frame completely in `open()` before any accessor is used, and
 * return a reason string for malformed bytes instead of throwing. Per-record access goes through the
 * generated struct accessors on one reused object, so reading a batch allocates nothing per write.
 */
import * as flatbuffers from 'flatbuffers';
import { assert } from '../assert.js';
import { copyBytes } from '../bytes.js';
import { crc32 as javascriptCrc32, type Crc32 } from '../checksum.js';
import {
  Ack,
  ConditionFailure,
  Rejection,
  Frame,
  Hello,
  Message,
  Op,
  ReadBatch,
  ReadRecord,
  ReadReplyBatch,
  ReadResult,
  ReadStatus,
  WriteBatch,
  WriteRecord,
} from './generated/schema_generated.js';
import {
  MalformedFrame,
  TableLocation,
  fieldPosition,
  followOffset,
  readUint32,
  readUint64AsNumber,
  requiredFieldPosition,
  verifyRoot,
  verifyTable,
  verifyVector,
} from './verify.js';

export { Op, ReadStatus };

/** Message kinds carried in a Frame, as plain numbers (the generated enum's values). */
export const MessageKind = {
  writeBatch: Message.WriteBatch,
  ack: Message.Ack,
  readBatch: Message.ReadBatch,
  readReplyBatch: Message.ReadReplyBatch,
  hello: Message.Hello,
  snapshot: Message.Snapshot,
  clusterView: Message.ClusterView,
  watchRequest: Message.WatchRequest,
  watchReply: Message.WatchReply,
} as const;
export type MessageKind = (typeof MessageKind)[keyof typeof MessageKind];

/** Largest key, in bytes (the record's key_length is a uint16). */
export const KEY_BYTES_LIMIT = 0xffff;
/** Reasons in acks are text; a malformed sequence reads as U+FFFD, never a throw. */
const utf8 = new TextDecoder('utf-8');
/** Highest read lane a batch can name (the field is a ubyte). */
export const READ_LANE_MAX = 0xff;
const WRITE_RECORD_BYTES = WriteRecord.sizeOf();
export const READ_RECORD_BYTES = ReadRecord.sizeOf();
export const READ_RESULT_BYTES = ReadResult.sizeOf();
/** Largest value the record format can describe (value_length is a uint32). */
const VALUE_BYTES_LIMIT = 0xffffffff;

/**
 * The sizes a reader accepts in a record, beyond what the format allows: a chain's keyBytesMax and
 * valueBytesMax (../limits.ts), so that a value nobody could have put() never reaches a store.
 */
export interface RecordLimits {
  keyBytesMax: number;
  valueBytesMax: number;
}

export const FORMAT_RECORD_LIMITS: RecordLimits = { keyBytesMax: KEY_BYTES_LIMIT, valueBytesMax: VALUE_BYTES_LIMIT };
/** Bytes of a frame beyond its records and payload: root, vtables, header fields, alignment. */
export const FRAME_OVERHEAD_BYTES = 256;

/** Longest reason (UTF-8 bytes) an admission hook's refusal carries in its record and in the ack. */
export const REJECTION_REASON_BYTES_MAX = 256;

/** WriteRecord.flags bit 0: the write is conditional (its expected version is in expected_versions). */
export const CONDITIONAL_FLAG = 1;
/** Bytes of one expected version (a double). */
const EXPECTED_VERSION_BYTES = 8;

export function writeBatchFrameBytesMax(writesMax: number, payloadBytesMax: number): number {
  return FRAME_OVERHEAD_BYTES + writesMax * (WRITE_RECORD_BYTES + EXPECTED_VERSION_BYTES) + payloadBytesMax;
}

/**
 * A builder whose capacity is a multiple of 8. FlatBuffers aligns a finished buffer relative to the
 * END of the builder's storage, so this makes every finished frame start 8-byte aligned, which lets
 * the copy into a ring use word-sized views (see ../bytes.ts).
 */
export function newBuilder(bytesAtLeast: number): flatbuffers.Builder {
  return new flatbuffers.Builder(Math.ceil(bytesAtLeast / 8) * 8);
}

/** The fields a write batch's checksum reads as zeros, in the order frameChecksum takes them. */
const EXCLUDED_FIELD_NAMES = ['epoch, which the head stamps,', 'first_seq, which the head stamps,', 'checksum'];
const ZEROS = new Uint8Array(8);
/** Scratch for frameChecksum (no allocation per batch). */
const EXCLUDED_STARTS = new Int32Array(3);
const EXCLUDED_LENGTHS = Int32Array.of(4, 8, 4);

/**
 * The CRC-32 of a write batch frame with its epoch (4 bytes), first_seq (8) and checksum (4) fields
 * read as zeros: the encoder sums the frame before the head stamps anything, and every replica
 * after, so the stamps must not count (the verifier made sure the three share no byte).
 */
function frameChecksum(bytes: Uint8Array, epochPosition: number, firstSeqPosition: number, checksumPosition: number, crc: Crc32): number {
  const starts = EXCLUDED_STARTS;
  const lengths = EXCLUDED_LENGTHS;
  starts[0] = epochPosition;
  starts[1] = firstSeqPosition;
  starts[2] = checksumPosition;
  let value = 0;
  let position = 0;
  for (let taken = 0; taken < 3; taken++) {
    let next = -1;
    for (let field = 0; field < 3; field++) {
      if (starts[field]! >= position && (next < 0 || starts[field]! < starts[next]!)) next = field;
    }
    value = crc(bytes, position, starts[next]!, value);
    value = crc(ZEROS, 0, lengths[next]!, value);
    position = starts[next]! + lengths[next]!;
  }
  return crc(bytes, position, bytes.length, value);
}

/** Whether the byte ranges [start, start + length) and [otherStart, otherStart + otherLength) share a byte. */
function rangesMeet(start: number, length: number, otherStart: number, otherLength: number): boolean {
  return otherLength > 0 && start < otherStart + otherLength && otherStart < start + length;
}

/**
 * Throws unless the `length` bytes at `start`, a field that a host rewrites in place after the
 * frame is verified, share no byte with the root offset, the Frame table and its vtable, the
 * message's vtable, or any of `parts` (pairs of start and length: every other field and vector a
 * reader trusts). Otherwise rewriting it would change something already verified.
 */
export function checkRewrittenFieldAlone(name: string, start: number, length: number, envelope: FrameEnvelope, message: TableLocation, parts: number[]): void {
  const frame = envelope.table;
  let meets = rangesMeet(start, length, 0, 4) || rangesMeet(start, length, frame.vtablePosition, frame.vtableBytes);
  meets ||= rangesMeet(start, length, frame.position, frame.tableBytes) || rangesMeet(start, length, message.vtablePosition, message.vtableBytes);
  for (let index = 0; index < parts.length && !meets; index += 2) meets = rangesMeet(start, length, parts[index]!, parts[index + 1]!);
  if (meets) throw new MalformedFrame(`${name}, which a host rewrites, shares bytes with another part of the frame`);
}

/** Verifies the Frame envelope and returns the message kind and the message table's position. */
export class FrameEnvelope {
  readonly table = new TableLocation();
  kind = 0;
  messagePosition = 0;

  open(bytes: Uint8Array): void {
    verifyRoot(bytes, this.table);
    const kindPosition = requiredFieldPosition(bytes, this.table, 0, 1, 'message_type');
    this.kind = bytes[kindPosition]!;
    const messageField = requiredFieldPosition(bytes, this.table, 1, 4, 'message');
    this.messagePosition = followOffset(bytes, messageField);
  }
}

/**
 * Runs a verifier and turns a MalformedFrame into its reason: the one place where malformed input
 * becomes a returned string rather than an exception.
 */
export function reasonIfMalformed(verify: () => void): string | null {
  try {
    verify();
    return null;
  } catch (error) {
    if (error instanceof MalformedFrame) return error.message;
    throw error;
  }
}

/** Verifies the envelope of a frame of message kind `kind` and locates its message table in `table`. */
export function openMessage(envelope: FrameEnvelope, bytes: Uint8Array, kind: Message, name: string, table: TableLocation): void {
  envelope.open(bytes);
  if (envelope.kind !== kind) throw new MalformedFrame(`expected a ${name} frame, got message type ${envelope.kind}`);
  verifyTable(bytes, envelope.messagePosition, table);
}

/** The message kind of a frame, or a reason string if the envelope is malformed. */
export function frameKind(bytes: Uint8Array): MessageKind | string {
  const envelope = new FrameEnvelope();
  const malformed = reasonIfMalformed(() => envelope.open(bytes));
  if (malformed !== null) return malformed;
  switch (envelope.kind) {
    case Message.WriteBatch:
    case Message.Ack:
    case Message.ReadBatch:
    case Message.ReadReplyBatch:
    case Message.Hello:
    case Message.Snapshot:
    case Message.ClusterView:
    case Message.WatchRequest:
    case Message.WatchReply:
      return envelope.kind;
    default:
      return `unknown message type ${envelope.kind}`;
  }
}

const kindEnvelope = new FrameEnvelope();

/** Whether a frame on a read replies link is a watch's reply (the rest are read replies). */
export function isWatchReply(bytes: Uint8Array): boolean {
  return reasonIfMalformed(() => kindEnvelope.open(bytes)) === null && kindEnvelope.kind === Message.WatchReply;
}

// ---------------------------------------------------------------------------------------------
// WriteBatch

/**
 * Reads a WriteBatch frame in place. One instance is reused for every batch a node receives.
 * After a successful `open()`, header fields are plain numbers and records are read by index.
 */
export class WriteBatchView {
  bytes: Uint8Array = new Uint8Array(0);
  epoch = 0;
  firstSeq = 0;
  count = 0;
  clientId = 0;
  firstClientSeq = 0;
  /** Absolute position in `bytes` of the payload blob. */
  payloadPosition = 0;
  payloadLength = 0;
  /** How many records are conditional (0: none; see expectedVersionAt). */
  conditionalCount = 0;
  private expectedVersionsPosition = 0;
  /** Over `bytes`, made only for a batch with conditional records. */
  private expectedVersions: DataView | null = null;

  private byteBuffer = new flatbuffers.ByteBuffer(new Uint8Array(0));
  private readonly envelope = new FrameEnvelope();
  private readonly table = new TableLocation();
  private readonly batch = new WriteBatch();
  private readonly record = new WriteRecord();
  private recordsPosition = 0;
  private epochPosition = 0;
  private firstSeqPosition = 0;
  private checksumPosition = 0;
  /** Start and length of each field the checksum skips (starts set per frame; no allocation per batch). */
  private readonly excludedRanges = Int32Array.of(0, 4, 0, 8, 0, 4);
  /** The checksum the frame carries (see checksumMatches). */
  checksum = 0;

  /** Records beyond `limits` make a frame malformed, as if its bytes were. */
  constructor(private readonly limits: RecordLimits = FORMAT_RECORD_LIMITS) {}

  /** Verifies `bytes` completely; returns null on success or the reason it is malformed. */
  open(bytes: Uint8Array): string | null {
    return reasonIfMalformed(() => this.verify(bytes));
  }

  private verify(bytes: Uint8Array): void {
    const { envelope, table } = this;
    openMessage(envelope, bytes, Message.WriteBatch, 'WriteBatch', table);
    // The head stamps epoch and first_seq in place, so both must be present (forceDefaults).
    this.epochPosition = requiredFieldPosition(bytes, table, 0, 4, 'epoch');
    this.firstSeqPosition = requiredFieldPosition(bytes, table, 1, 8, 'first_seq');
    const countPosition = requiredFieldPosition(bytes, table, 2, 4, 'count');
    const clientIdPosition = fieldPosition(bytes, table, 3, 4);
    const firstClientSeqPosition = fieldPosition(bytes, table, 4, 8);
    const recordsField = requiredFieldPosition(bytes, table, 5, 4, 'records');
    const payloadField = fieldPosition(bytes, table, 6, 4);
    this.checksumPosition = requiredFieldPosition(bytes, table, 7, 4, 'checksum');
    const expectedField = fieldPosition(bytes, table, 8, 4);

    this.epoch = readUint32(bytes, this.epochPosition);
    this.checksum = readUint32(bytes, this.checksumPosition);
    this.firstSeq = readUint64AsNumber(bytes, this.firstSeqPosition);
    this.count = readUint32(bytes, countPosition);
    this.clientId = clientIdPosition === 0 ? 0 : readUint32(bytes, clientIdPosition);
    this.firstClientSeq = firstClientSeqPosition === 0 ? 0 : readUint64AsNumber(bytes, firstClientSeqPosition);

    const recordsVector = followOffset(bytes, recordsField);
    const recordCount = verifyVector(bytes, recordsVector, WRITE_RECORD_BYTES, 'records');
    if (recordCount !== this.count) {
      throw new MalformedFrame(`count ${this.count} does not match ${recordCount} records`);
    }
    if (recordCount === 0) throw new MalformedFrame('a write batch holds no records');
    // Each write's seq and client seq are implied (first + index), and the last must stay below
    // 2^53 like the first: past it a replica would apply, and a tail acknowledge, numbers that no
    // reader takes (nor a Number holds exactly). Compared without adding: first + count - 1 could
    // round back below the limit.
    const lastOffset = recordCount - 1;
    if (this.firstSeq > Number.MAX_SAFE_INTEGER - lastOffset || this.firstClientSeq > Number.MAX_SAFE_INTEGER - lastOffset) {
      throw new MalformedFrame(`${recordCount} writes from seq ${this.firstSeq}, client seq ${this.firstClientSeq}, pass 2^53`);
    }
    this.recordsPosition = recordsVector + 4;
    if (payloadField === 0) {
      this.payloadPosition = 0;
      this.payloadLength = 0;
    } else {
      const payloadVector = followOffset(bytes, payloadField);
      this.payloadLength = verifyVector(bytes, payloadVector, 1, 'payload');
      this.payloadPosition = payloadVector + 4;
    }
    // The head stamps epoch and first_seq in place after this check (stamp()), then applies the
    // records and forwards the bytes. Neither field may share a byte with anything else a reader
    // trusts, or stamping would rewrite a verified count, offset or record behind the verifier's
    // back: the head would apply one batch and forward another, which its successor refuses. The
    // checksum is read as zeros when checked, so it may share no byte with anything either.
    let expectedVector = 0;
    this.conditionalCount = 0;
    if (expectedField !== 0) {
      expectedVector = followOffset(bytes, expectedField);
      this.conditionalCount = verifyVector(bytes, expectedVector, EXPECTED_VERSION_BYTES, 'expected_versions');
      if (((expectedVector + 4) & 7) !== 0) throw new MalformedFrame('expected_versions is not 8-byte aligned');
    }
    this.expectedVersionsPosition = expectedVector + 4;
    const frameTable = envelope.table;
    const payloadVectorBytes = payloadField === 0 ? 0 : 4 + this.payloadLength;
    const excluded = this.excludedRanges;
    excluded[0] = this.epochPosition;
    excluded[2] = this.firstSeqPosition;
    excluded[4] = this.checksumPosition;
    for (let field = 0; field < excluded.length; field += 2) {
      const start = excluded[field]!;
      const length = excluded[field + 1]!;
      let meets =
        rangesMeet(start, length, 0, 4) ||
        rangesMeet(start, length, frameTable.vtablePosition, frameTable.vtableBytes) ||
        rangesMeet(start, length, frameTable.position, frameTable.tableBytes) ||
        rangesMeet(start, length, table.vtablePosition, table.vtableBytes) ||
        rangesMeet(start, length, countPosition, 4) ||
        rangesMeet(start, length, clientIdPosition, clientIdPosition === 0 ? 0 : 4) ||
        rangesMeet(start, length, firstClientSeqPosition, firstClientSeqPosition === 0 ? 0 : 8) ||
        rangesMeet(start, length, recordsField, 4) ||
        rangesMeet(start, length, payloadField, payloadField === 0 ? 0 : 4) ||
        rangesMeet(start, length, recordsVector, 4 + recordCount * WRITE_RECORD_BYTES) ||
        rangesMeet(start, length, this.payloadPosition - 4, payloadVectorBytes) ||
        rangesMeet(start, length, expectedField, expectedField === 0 ? 0 : 4) ||
        rangesMeet(start, length, expectedVector, expectedField === 0 ? 0 : 4 + this.conditionalCount * EXPECTED_VERSION_BYTES);
      for (let other = field + 2; other < excluded.length && !meets; other += 2) meets = rangesMeet(start, length, excluded[other]!, excluded[other + 1]!);
      if (meets) throw new MalformedFrame(`${EXCLUDED_FIELD_NAMES[field / 2]} shares bytes with another part of the batch`);
    }

    this.bytes = bytes;
    this.byteBuffer = new flatbuffers.ByteBuffer(bytes);
    this.batch.__init(envelope.messagePosition, this.byteBuffer);
    this.expectedVersions = this.conditionalCount === 0 ? null : new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    // Every record's key and value must lie inside the payload before anyone reads them.
    const payloadLength = this.payloadLength;
    let conditional = 0;
    for (let index = 0; index < recordCount; index++) {
      const record = this.recordAt(index);
      const op = record.op();
      const flags = record.flags();
      if ((flags & ~CONDITIONAL_FLAG) !== 0) throw new MalformedFrame(`record ${index} has unknown flags ${flags}`);
      if (flags === CONDITIONAL_FLAG) {
        if (conditional === this.conditionalCount) throw new MalformedFrame(`record ${index} is conditional beyond the ${this.conditionalCount} expected versions`);
        const expected = this.expectedVersionAt(conditional++);
        if (!Number.isSafeInteger(expected) || expected < 0) throw new MalformedFrame(`record ${index} expects version ${expected}, not a safe integer >= 0`);
      }
      const keyLength = record.keyLength();
      const valueLength = record.valueLength();
      if (op !== Op.Put && op !== Op.Delete && op !== Op.Rejected) throw new MalformedFrame(`record ${index} has unknown op ${op}`);
      if (op === Op.Rejected && (flags !== 0 || valueLength > REJECTION_REASON_BYTES_MAX)) throw new MalformedFrame(`rejected record ${index} is conditional or has a reason over ${REJECTION_REASON_BYTES_MAX} bytes`);
      if (keyLength === 0) throw new MalformedFrame(`record ${index} has an empty key`);
      if (op === Op.Delete && valueLength !== 0) throw new MalformedFrame(`delete record ${index} carries a value`);
      if (record.payloadOffset() + keyLength + valueLength > payloadLength) {
        throw new MalformedFrame(`record ${index} overruns the payload of ${payloadLength} bytes`);
      }
      if (keyLength > this.limits.keyBytesMax) throw new MalformedFrame(`record ${index} has a ${keyLength}-byte key, above keyBytesMax ${this.limits.keyBytesMax}`);
      // A refused record's value is the hook's reason, bounded on its own (it is never stored).
      if (valueLength > this.limits.valueBytesMax && op !== Op.Rejected) {
        throw new MalformedFrame(`record ${index} has a ${valueLength}-byte value, above valueBytesMax ${this.limits.valueBytesMax}`);
      }
    }
    if (conditional !== this.conditionalCount) throw new MalformedFrame(`${this.conditionalCount} expected versions for ${conditional} conditional records`);
  }

  /** The expected version of the `conditional`-th conditional record (in record order). */
  expectedVersionAt(conditional: number): number {
    return this.expectedVersions!.getFloat64(this.expectedVersionsPosition + conditional * EXPECTED_VERSION_BYTES, true);
  }

  /**
   * Whether the frame's bytes are those its client encoded: the CRC-32 of the whole frame, with
   * epoch, first_seq and the checksum read as zeros, equals the checksum it carries.
   */
  checksumMatches(crc: Crc32): boolean {
    return frameChecksum(this.bytes, this.epochPosition, this.firstSeqPosition, this.checksumPosition, crc) === this.checksum;
  }

  /** The generated struct accessor positioned on record `index` (one reused object). */
  recordAt(index: number): WriteRecord {
    return this.record.__init(this.recordsPosition + index * WRITE_RECORD_BYTES, this.byteBuffer);
  }

  /** Re-stamps only the epoch (a logged batch resent after a reconfiguration). */
  restampEpoch(epoch: number): void {
    assert(this.batch.mutate_epoch(epoch), 'restampEpoch: epoch field is absent');
    this.epoch = epoch;
  }

  /** Absolute position in `bytes` of the key of the record last positioned by recordAt(). */
  keyPosition(record: WriteRecord): number {
    return this.payloadPosition + record.payloadOffset();
  }

  /**
   * The head's only write to a batch: stamp the configuration epoch and the first sequence number,
   * in place, through the generated mutators. Nothing else is re-encoded.
   */
  stamp(epoch: number, firstSeq: number): void {
    assert(Number.isSafeInteger(firstSeq) && firstSeq > 0, 'stamp: firstSeq must be a positive safe integer');
    assert(this.batch.mutate_epoch(epoch), 'stamp: epoch field is absent');
    assert(this.batch.mutate_first_seq(BigInt(firstSeq)), 'stamp: first_seq field is absent');
    this.epoch = epoch;
    this.firstSeq = firstSeq;
  }
}

export interface WriteBatchLimits {
  /** Most writes in one batch. */
  writesMax: number;
  /** Most key + value bytes in one batch. */
  payloadBytesMax: number;
}

/**
 * Stages writes and encodes them as one WriteBatch frame. Keys and values are copied into one
 * payload blob as they arrive (callers may also write into `payload` themselves and then call
 * `addRecord`), and each record is kept as three 32-bit words laid out exactly like the
 * WriteRecord struct, so `finish()` emits the struct vector with three writes per record.
 */
export class WriteBatchEncoder {
  readonly writesMax: number;
  readonly payloadBytesMax: number;
  readonly frameBytesMax: number;
  /** Staged key and value bytes; records point into it. */
  readonly payload: Uint8Array;
  payloadLength = 0;
  count = 0;
  clientId = 0;
  firstClientSeq = 0;

  private readonly recordWords: Uint32Array;
  /** The expected versions of the conditional writes staged, in order. */
  private readonly expectedVersions: Float64Array;
  conditionalCount = 0;
  private readonly builder: flatbuffers.Builder;
  private readonly envelope = new FrameEnvelope();
  private readonly table = new TableLocation();

  /** `crc` computes the checksum every batch carries (a faster one may be passed in). */
  constructor(
    limits: WriteBatchLimits,
    private readonly crc: Crc32 = javascriptCrc32,
  ) {
    assert(Number.isSafeInteger(limits.writesMax) && limits.writesMax >= 1, 'writesMax must be a positive integer');
    assert(Number.isSafeInteger(limits.payloadBytesMax) && limits.payloadBytesMax >= 1, 'payloadBytesMax must be positive');
    this.writesMax = limits.writesMax;
    this.payloadBytesMax = limits.payloadBytesMax;
    this.frameBytesMax = writeBatchFrameBytesMax(limits.writesMax, limits.payloadBytesMax);
    this.payload = new Uint8Array(limits.payloadBytesMax);
    this.recordWords = new Uint32Array(limits.writesMax * 3);
    this.expectedVersions = new Float64Array(limits.writesMax);
    this.builder = newBuilder(this.frameBytesMax);
  }

  begin(clientId: number, firstClientSeq: number): void {
    assert(Number.isSafeInteger(firstClientSeq) && firstClientSeq >= 0, 'firstClientSeq must be a safe integer');
    this.clientId = clientId >>> 0;
    this.firstClientSeq = firstClientSeq;
    this.count = 0;
    this.payloadLength = 0;
    this.conditionalCount = 0;
  }

  /** Whether one more write of these sizes fits in this batch. */
  fits(keyLength: number, valueLength: number): boolean {
    return this.count < this.writesMax && this.payloadLength + keyLength + valueLength <= this.payloadBytesMax;
  }

  /**
   * Records a write whose key (then value) the caller already wrote at payload[payloadLength...].
   * The caller must have checked fits(). With `expectedVersion` (>= 0; 0: absent) the write is
   * conditional: it applies only if the key has that version when the chain gets to it.
   */
  addRecord(op: Op, keyLength: number, valueLength: number, expectedVersion = -1): void {
    assert(this.fits(keyLength, valueLength), 'addRecord: batch is full');
    assert(keyLength >= 1 && keyLength <= KEY_BYTES_LIMIT, 'addRecord: key length out of range');
    const words = this.recordWords;
    const base = this.count * 3;
    let flags = 0;
    if (expectedVersion >= 0) {
      assert(Number.isSafeInteger(expectedVersion), 'addRecord: expected version is not a safe integer');
      this.expectedVersions[this.conditionalCount++] = expectedVersion;
      flags = CONDITIONAL_FLAG;
    }
    // Little-endian WriteRecord: op (byte 0), flags (byte 1), key_length (bytes 2-3).
    words[base] = (op | (flags << 8) | (keyLength << 16)) >>> 0;
    words[base + 1] = valueLength;
    words[base + 2] = this.payloadLength;
    this.payloadLength += keyLength + valueLength;
    this.count++;
  }

  addPut(
    keySource: Uint8Array,
    keyStart: number,
    keyLength: number,
    valueSource: Uint8Array,
    valueStart: number,
    valueLength: number,
    expectedVersion = -1,
  ): void {
    assert(this.fits(keyLength, valueLength), 'addPut: batch is full');
    copyBytes(keySource, keyStart, this.payload, this.payloadLength, keyLength);
    copyBytes(valueSource, valueStart, this.payload, this.payloadLength + keyLength, valueLength);
    this.addRecord(Op.Put, keyLength, valueLength, expectedVersion);
  }

  addDelete(keySource: Uint8Array, keyStart: number, keyLength: number, expectedVersion = -1): void {
    assert(this.fits(keyLength, 0), 'addDelete: batch is full');
    copyBytes(keySource, keyStart, this.payload, this.payloadLength, keyLength);
    this.addRecord(Op.Delete, keyLength, 0, expectedVersion);
  }

  /**
   * Encodes the staged writes as a Frame(WriteBatch). The returned view points into the reused
   * builder: copy it (into a ring) before the next finish(). Epoch and first_seq are written as
   * zero but present (forceDefaults), so the head can stamp them in place.
   */
  finish(): Uint8Array {
    assert(this.count > 0, 'finish: empty batch');
    const builder = this.builder;
    builder.clear();
    builder.forceDefaults(true);
    const payloadOffset = builder.createByteVector(this.payload.subarray(0, this.payloadLength));
    const words = this.recordWords;
    builder.startVector(WRITE_RECORD_BYTES, this.count, 4);
    for (let index = this.count - 1; index >= 0; index--) {
      const base = index * 3;
      // Same byte order as the generated createWriteRecord, which writes back to front.
      builder.prep(4, WRITE_RECORD_BYTES);
      builder.writeInt32(words[base + 2]! | 0);
      builder.writeInt32(words[base + 1]! | 0);
      builder.writeInt32(words[base]! | 0);
    }
    const recordsOffset = builder.endVector();
    let expectedOffset = 0;
    if (this.conditionalCount > 0) {
      builder.startVector(EXPECTED_VERSION_BYTES, this.conditionalCount, EXPECTED_VERSION_BYTES);
      for (let index = this.conditionalCount - 1; index >= 0; index--) builder.addFloat64(this.expectedVersions[index]!);
      expectedOffset = builder.endVector();
    }
    WriteBatch.startWriteBatch(builder);
    WriteBatch.addEpoch(builder, 0);
    WriteBatch.addFirstSeq(builder, ZERO_SEQ);
    WriteBatch.addCount(builder, this.count);
    WriteBatch.addClientId(builder, this.clientId);
    WriteBatch.addFirstClientSeq(builder, BigInt(this.firstClientSeq));
    WriteBatch.addRecords(builder, recordsOffset);
    WriteBatch.addPayload(builder, payloadOffset);
    WriteBatch.addChecksum(builder, 0);
    // Only when a write is conditional: a batch without conditions keeps the bytes it always had.
    if (expectedOffset !== 0) WriteBatch.addExpectedVersions(builder, expectedOffset);
    const batchOffset = WriteBatch.endWriteBatch(builder);
    builder.finish(Frame.createFrame(builder, Message.WriteBatch, batchOffset));
    const bytes = builder.asUint8Array();
    assert(bytes.length <= this.frameBytesMax, 'finish: frame exceeds its computed maximum');
    // Epoch, first_seq and the checksum are all zero here, so the whole frame is what is summed.
    openMessage(this.envelope, bytes, Message.WriteBatch, 'WriteBatch', this.table);
    const checksumPosition = requiredFieldPosition(bytes, this.table, 7, 4, 'checksum');
    const checksum = this.crc(bytes, 0, bytes.length, 0);
    bytes[checksumPosition] = checksum & 0xff;
    bytes[checksumPosition + 1] = (checksum >>> 8) & 0xff;
    bytes[checksumPosition + 2] = (checksum >>> 16) & 0xff;
    bytes[checksumPosition + 3] = checksum >>> 24;
    return bytes;
  }
}

const ZERO_SEQ = BigInt(0);

// ---------------------------------------------------------------------------------------------
// Ack

/** A conditional write whose condition failed, or (with `reason`) a write the admission hook refused, as a client ack reports it. */
export interface ConditionFailureFields {
  clientSeq: number;
  /** The key's version when the chain got to the write (0: absent); -1 for a refused write. */
  currentVersion: number;
  /** A refused write: the hook's reason (UTF-8). */
  reason?: Uint8Array;
}

/** A cumulative acknowledgement: everything through committedSeq is applied at the tail. */
export interface AckFields {
  epoch: number;
  committedSeq: number;
  clientId: number;
  committedClientSeq: number;
  /**
   * Client acks of a chain with conditional writes: `failures` are every conditional write of
   * client seq in [reportedFrom, committedClientSeq] that was not applied (absent or 0: no report).
   */
  reportedFrom?: number;
  failures?: readonly ConditionFailureFields[];
}

/** Bytes of one ConditionFailure in an ack. */
const CONDITION_FAILURE_BYTES = 16;
/** Most failures one ack carries (an ack fits a control-ring record; the rest go in the next). */
export const ACK_FAILURES_MAX = 1024;
/**
 * Most bytes of failures and rejections one ack carries (see reportBytes): with its header it stays
 * far below the smallest ring record a client ack travels in (half a 64 KiB control ring).
 */
export const ACK_REPORT_BYTES_MAX = 16 * 1024;

/** What one failure or rejection adds to an ack, at most (a rejection: its table, offset and reason). */
export function reportBytes(failure: ConditionFailureFields): number {
  return failure.reason === undefined ? CONDITION_FAILURE_BYTES : 32 + Math.ceil(failure.reason.length / 4) * 4;
}

export class AckEncoder {
  private readonly builder = newBuilder(256 + ACK_REPORT_BYTES_MAX);

  /** The returned view is valid until the next encode(). */
  encode(ack: AckFields): Uint8Array {
    const builder = this.builder;
    builder.clear();
    builder.forceDefaults(true);
    let failuresOffset = 0;
    let rejectionsOffset = 0;
    // Most acks report nothing (every ack between replicas, most to clients): no work for them.
    if (ack.failures !== undefined && ack.failures.length > 0) {
      const all = ack.failures;
      assert(all.length <= ACK_FAILURES_MAX, 'AckEncoder: too many failures for one ack');
      assert(all.reduce((bytes, failure) => bytes + reportBytes(failure), 0) <= ACK_REPORT_BYTES_MAX, 'AckEncoder: too large a report for one ack');
      const failures = all.filter((failure) => failure.reason === undefined);
      const rejections = all.filter((failure) => failure.reason !== undefined);
      if (failures.length > 0) {
        builder.startVector(CONDITION_FAILURE_BYTES, failures.length, 8);
        for (let index = failures.length - 1; index >= 0; index--) ConditionFailure.createConditionFailure(builder, failures[index]!.clientSeq, failures[index]!.currentVersion);
        failuresOffset = builder.endVector();
      }
      if (rejections.length > 0) {
        const tables = rejections.map((rejection) => Rejection.createRejection(builder, BigInt(rejection.clientSeq), builder.createString(rejection.reason!)));
        rejectionsOffset = Ack.createRejectionsVector(builder, tables);
      }
    }
    Ack.startAck(builder);
    Ack.addEpoch(builder, ack.epoch);
    Ack.addCommittedSeq(builder, BigInt(ack.committedSeq));
    Ack.addClientId(builder, ack.clientId);
    Ack.addCommittedClientSeq(builder, BigInt(ack.committedClientSeq));
    // Only with a report: an ack without one keeps the bytes it always had.
    if ((ack.reportedFrom ?? 0) > 0) Ack.addReportedFrom(builder, BigInt(ack.reportedFrom!));
    if (failuresOffset !== 0) Ack.addFailures(builder, failuresOffset);
    if (rejectionsOffset !== 0) Ack.addRejections(builder, rejectionsOffset);
    const ackOffset = Ack.endAck(builder);
    builder.finish(Frame.createFrame(builder, Message.Ack, ackOffset));
    return builder.asUint8Array();
  }
}

export class AckView implements AckFields {
  epoch = 0;
  committedSeq = 0;
  clientId = 0;
  committedClientSeq = 0;
  /** 0: no report of conditional writes. */
  reportedFrom = 0;
  failureCount = 0;
  /** Writes the admission hook refused, in client seq order, with the hook's reasons. */
  readonly rejections: Array<{ clientSeq: number; reason: string }> = [];
  private failuresPosition = 0;
  /** Over the ack's bytes, made only for an ack that lists failures. */
  private failureWords: DataView | null = null;
  private readonly envelope = new FrameEnvelope();
  private readonly table = new TableLocation();

  /** The client seq and the key's version of failure `index` (client seqs ascend). */
  failureClientSeqAt(index: number): number {
    return this.failureWords!.getFloat64(this.failuresPosition + index * CONDITION_FAILURE_BYTES, true);
  }
  failureVersionAt(index: number): number {
    return this.failureWords!.getFloat64(this.failuresPosition + index * CONDITION_FAILURE_BYTES + 8, true);
  }

  open(bytes: Uint8Array): string | null {
    return reasonIfMalformed(() => {
      const { envelope, table } = this;
      openMessage(envelope, bytes, Message.Ack, 'Ack', table);
      this.epoch = readUint32(bytes, requiredFieldPosition(bytes, table, 0, 4, 'epoch'));
      this.committedSeq = readUint64AsNumber(bytes, requiredFieldPosition(bytes, table, 1, 8, 'committed_seq'));
      const clientIdPosition = fieldPosition(bytes, table, 2, 4);
      this.clientId = clientIdPosition === 0 ? 0 : readUint32(bytes, clientIdPosition);
      const clientSeqPosition = fieldPosition(bytes, table, 3, 8);
      this.committedClientSeq = clientSeqPosition === 0 ? 0 : readUint64AsNumber(bytes, clientSeqPosition);
      const reportedPosition = fieldPosition(bytes, table, 4, 8);
      this.reportedFrom = reportedPosition === 0 ? 0 : readUint64AsNumber(bytes, reportedPosition);
      const failuresField = fieldPosition(bytes, table, 5, 4);
      this.failureCount = 0;
      if (failuresField !== 0) {
        const vector = followOffset(bytes, failuresField);
        this.failureCount = verifyVector(bytes, vector, CONDITION_FAILURE_BYTES, 'failures');
        if (((vector + 4) & 7) !== 0) throw new MalformedFrame('failures are not 8-byte aligned');
        this.failuresPosition = vector + 4;
        this.failureWords = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        if (this.failureCount > 0 && this.reportedFrom === 0) throw new MalformedFrame('an ack lists failures without reported_from');
        let previous = this.reportedFrom - 1;
        for (let index = 0; index < this.failureCount; index++) {
          const clientSeq = this.failureClientSeqAt(index);
          const version = this.failureVersionAt(index);
          if (!Number.isSafeInteger(clientSeq) || clientSeq <= previous || clientSeq > this.committedClientSeq) {
            throw new MalformedFrame(`failure ${index} is for client seq ${clientSeq}, not in order within ${this.reportedFrom}..${this.committedClientSeq}`);
          }
          if (!Number.isSafeInteger(version) || version < 0) throw new MalformedFrame(`failure ${index} has version ${version}`);
          previous = clientSeq;
        }
      }
      this.rejections.length = 0;
      const rejectionsField = fieldPosition(bytes, table, 6, 4);
      if (rejectionsField !== 0) this.readRejections(bytes, followOffset(bytes, rejectionsField));
    });
  }

  /** The rejections vector (tables: client_seq, reason), verified as the other fields are. */
  private readRejections(bytes: Uint8Array, vector: number): void {
    const count = verifyVector(bytes, vector, 4, 'rejections');
    if (count > ACK_FAILURES_MAX) throw new MalformedFrame(`${count} rejections in one ack`);
    if (count > 0 && this.reportedFrom === 0) throw new MalformedFrame('an ack lists rejections without reported_from');
    const rejection = new TableLocation();
    let previous = this.reportedFrom - 1;
    for (let index = 0; index < count; index++) {
      verifyTable(bytes, followOffset(bytes, vector + 4 + index * 4), rejection);
      const clientSeq = readUint64AsNumber(bytes, requiredFieldPosition(bytes, rejection, 0, 8, 'client_seq'));
      if (clientSeq <= previous || clientSeq > this.committedClientSeq) throw new MalformedFrame(`rejection ${index} is for client seq ${clientSeq}, not in order within ${this.reportedFrom}..${this.committedClientSeq}`);
      const reasonVector = followOffset(bytes, requiredFieldPosition(bytes, rejection, 1, 4, 'reason'));
      const length = verifyVector(bytes, reasonVector, 1, 'reason');
      if (length > REJECTION_REASON_BYTES_MAX) throw new MalformedFrame(`rejection ${index} has a reason of ${length} bytes`);
      this.rejections.push({ clientSeq, reason: utf8.decode(bytes.subarray(reasonVector + 4, reasonVector + 4 + length)) });
      previous = clientSeq;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ReadBatch (client to tail)

export interface ReadBatchLimits {
  readsMax: number;
  keyBytesMax: number;
}

export class ReadBatchEncoder {
  readonly readsMax: number;
  readonly payloadBytesMax: number;
  readonly payload: Uint8Array;
  payloadLength = 0;
  count = 0;
  firstRequestId = 0;
  private readonly recordWords: Uint32Array;
  private readonly builder: flatbuffers.Builder;

  constructor(limits: ReadBatchLimits) {
    assert(limits.readsMax >= 1 && limits.keyBytesMax >= 1, 'read batch limits must be positive');
    this.readsMax = limits.readsMax;
    this.payloadBytesMax = limits.readsMax * limits.keyBytesMax;
    this.payload = new Uint8Array(this.payloadBytesMax);
    this.recordWords = new Uint32Array(limits.readsMax * 2);
    this.builder = newBuilder(FRAME_OVERHEAD_BYTES + limits.readsMax * READ_RECORD_BYTES + this.payloadBytesMax);
  }

  begin(firstRequestId: number): void {
    this.firstRequestId = firstRequestId;
    this.count = 0;
    this.payloadLength = 0;
  }

  fits(keyLength: number): boolean {
    return this.count < this.readsMax && this.payloadLength + keyLength <= this.payloadBytesMax;
  }

  /** Records a read whose key the caller already wrote at payload[payloadLength...]. */
  addRecord(keyLength: number): void {
    assert(this.fits(keyLength) && keyLength >= 1 && keyLength <= KEY_BYTES_LIMIT, 'addRecord: bad read record');
    const base = this.count * 2;
    this.recordWords[base] = this.payloadLength;
    this.recordWords[base + 1] = keyLength;
    this.payloadLength += keyLength;
    this.count++;
  }

  addRead(keySource: Uint8Array, keyStart: number, keyLength: number): void {
    assert(this.fits(keyLength), 'addRead: batch is full');
    copyBytes(keySource, keyStart, this.payload, this.payloadLength, keyLength);
    this.addRecord(keyLength);
  }

  /** The client's read lane this batch goes out on (echoed in its replies). */
  finish(epoch: number, lane = 0): Uint8Array {
    assert(this.count > 0, 'finish: empty read batch');
    assert(Number.isInteger(lane) && lane >= 0 && lane <= READ_LANE_MAX, 'finish: lane out of range');
    const builder = this.builder;
    builder.clear();
    builder.forceDefaults(true);
    const payloadOffset = builder.createByteVector(this.payload.subarray(0, this.payloadLength));
    builder.startVector(READ_RECORD_BYTES, this.count, 4);
    for (let index = this.count - 1; index >= 0; index--) {
      ReadRecord.createReadRecord(builder, this.recordWords[index * 2]!, this.recordWords[index * 2 + 1]!, 0);
    }
    const recordsOffset = builder.endVector();
    ReadBatch.startReadBatch(builder);
    ReadBatch.addEpoch(builder, epoch);
    ReadBatch.addFirstRequestId(builder, BigInt(this.firstRequestId));
    ReadBatch.addCount(builder, this.count);
    ReadBatch.addRecords(builder, recordsOffset);
    ReadBatch.addPayload(builder, payloadOffset);
    // Lane 0 is left out: a client with one lane sends the bytes it always sent.
    if (lane !== 0) ReadBatch.addLane(builder, lane);
    const batchOffset = ReadBatch.endReadBatch(builder);
    builder.finish(Frame.createFrame(builder, Message.ReadBatch, batchOffset));
    return builder.asUint8Array();
  }
}

export class ReadBatchView {
  bytes: Uint8Array = new Uint8Array(0);
  epoch = 0;
  firstRequestId = 0;
  count = 0;
  /** The client's read lane (0 when absent), echoed in the replies. */
  lane = 0;
  payloadPosition = 0;
  payloadLength = 0;
  private byteBuffer = new flatbuffers.ByteBuffer(new Uint8Array(0));
  private readonly envelope = new FrameEnvelope();
  private readonly table = new TableLocation();
  private readonly record = new ReadRecord();
  private recordsPosition = 0;
  /** Where first_request_id lies (a host rewrites it: see request-ids.ts). */
  firstRequestIdPosition = 0;

  /** Keys longer than `keyBytesMax` make a frame malformed (nobody could have written them). */
  constructor(private readonly keyBytesMax: number = KEY_BYTES_LIMIT) {}

  open(bytes: Uint8Array): string | null {
    return reasonIfMalformed(() => {
      const { envelope, table } = this;
      openMessage(envelope, bytes, Message.ReadBatch, 'ReadBatch', table);
      const epochPosition = fieldPosition(bytes, table, 0, 4);
      this.epoch = epochPosition === 0 ? 0 : readUint32(bytes, epochPosition);
      this.firstRequestIdPosition = requiredFieldPosition(bytes, table, 1, 8, 'first_request_id');
      this.firstRequestId = readUint64AsNumber(bytes, this.firstRequestIdPosition);
      const countPosition = requiredFieldPosition(bytes, table, 2, 4, 'count');
      this.count = readUint32(bytes, countPosition);
      const recordsField = requiredFieldPosition(bytes, table, 3, 4, 'records');
      const recordsVector = followOffset(bytes, recordsField);
      const recordCount = verifyVector(bytes, recordsVector, READ_RECORD_BYTES, 'records');
      if (recordCount !== this.count) throw new MalformedFrame(`count ${this.count} does not match ${recordCount} records`);
      if (recordCount === 0) throw new MalformedFrame('a read batch holds no records');
      // Request ids are consecutive from first_request_id: the last must stay below 2^53 too, or
      // the tail would answer with ids no client reads back (compared without adding, see WriteBatchView).
      if (this.firstRequestId > Number.MAX_SAFE_INTEGER - (recordCount - 1)) {
        throw new MalformedFrame(`${recordCount} reads from request id ${this.firstRequestId} pass 2^53`);
      }
      this.recordsPosition = recordsVector + 4;
      const payloadField = fieldPosition(bytes, table, 4, 4);
      if (payloadField === 0) throw new MalformedFrame('a read batch has no payload');
      const payloadVector = followOffset(bytes, payloadField);
      this.payloadLength = verifyVector(bytes, payloadVector, 1, 'payload');
      this.payloadPosition = payloadVector + 4;
      const lanePosition = fieldPosition(bytes, table, 5, 1);
      this.lane = lanePosition === 0 ? 0 : bytes[lanePosition]!;
      checkRewrittenFieldAlone('first_request_id', this.firstRequestIdPosition, 8, envelope, table, [
        epochPosition, epochPosition === 0 ? 0 : 4,
        countPosition, 4,
        lanePosition, lanePosition === 0 ? 0 : 1,
        recordsField, 4,
        payloadField, 4,
        recordsVector, 4 + recordCount * READ_RECORD_BYTES,
        payloadVector, 4 + this.payloadLength,
      ]);
      this.bytes = bytes;
      this.byteBuffer = new flatbuffers.ByteBuffer(bytes);
      for (let index = 0; index < recordCount; index++) {
        const record = this.recordAt(index);
        const keyLength = record.keyLength();
        if (keyLength === 0) throw new MalformedFrame(`read ${index} has an empty key`);
        if (keyLength > this.keyBytesMax) throw new MalformedFrame(`read ${index} has a ${keyLength}-byte key, above keyBytesMax ${this.keyBytesMax}`);
        if (record.keyOffset() + keyLength > this.payloadLength) throw new MalformedFrame(`read ${index} overruns the payload`);
      }
    });
  }

  recordAt(index: number): ReadRecord {
    return this.record.__init(this.recordsPosition + index * READ_RECORD_BYTES, this.byteBuffer);
  }
}

// ---------------------------------------------------------------------------------------------
// ReadReplyBatch (tail to client)

/**
 * Builds replies for a run of consecutive read requests. Values are copied into the payload as
 * they are looked up; the caller starts a new reply when `fits()` says a value would not fit.
 */
export class ReadReplyEncoder {
  readonly resultsMax: number;
  readonly payloadBytesMax: number;
  readonly payload: Uint8Array;
  payloadLength = 0;
  count = 0;
  firstRequestId = 0;
  private readonly statuses: Uint8Array;
  private readonly versions: Float64Array;
  private readonly valueWords: Uint32Array;
  private readonly builder: flatbuffers.Builder;

  constructor(resultsMax: number, payloadBytesMax: number) {
    assert(resultsMax >= 1 && payloadBytesMax >= 1, 'reply limits must be positive');
    this.resultsMax = resultsMax;
    this.payloadBytesMax = payloadBytesMax;
    this.payload = new Uint8Array(payloadBytesMax);
    this.statuses = new Uint8Array(resultsMax);
    this.versions = new Float64Array(resultsMax);
    this.valueWords = new Uint32Array(resultsMax * 2);
    this.builder = newBuilder(FRAME_OVERHEAD_BYTES + resultsMax * (READ_RESULT_BYTES + 1) + payloadBytesMax);
  }

  /** Largest frame finish() can produce. */
  get frameBytesMax(): number {
    return FRAME_OVERHEAD_BYTES + this.resultsMax * (READ_RESULT_BYTES + 1) + this.payloadBytesMax;
  }

  begin(firstRequestId: number): void {
    this.firstRequestId = firstRequestId;
    this.count = 0;
    this.payloadLength = 0;
  }

  fits(valueLength: number): boolean {
    return this.count < this.resultsMax && this.payloadLength + valueLength <= this.payloadBytesMax;
  }

  addFound(valueSource: Uint8Array, valueStart: number, valueLength: number, version: number): void {
    assert(this.fits(valueLength), 'addFound: reply is full');
    const index = this.count++;
    this.statuses[index] = ReadStatus.Found;
    this.versions[index] = version;
    this.valueWords[index * 2] = this.payloadLength;
    this.valueWords[index * 2 + 1] = valueLength;
    copyBytes(valueSource, valueStart, this.payload, this.payloadLength, valueLength);
    this.payloadLength += valueLength;
  }

  addNotFound(): void {
    assert(this.fits(0), 'addNotFound: reply is full');
    const index = this.count++;
    this.statuses[index] = ReadStatus.NotFound;
    this.versions[index] = 0;
    this.valueWords[index * 2] = 0;
    this.valueWords[index * 2 + 1] = 0;
  }

  finish(epoch: number, appliedSeq: number, lane = 0): Uint8Array {
    assert(this.count > 0, 'finish: empty reply');
    const builder = this.builder;
    builder.clear();
    builder.forceDefaults(true);
    const payloadOffset = builder.createByteVector(this.payload.subarray(0, this.payloadLength));
    const statusesOffset = builder.createByteVector(this.statuses.subarray(0, this.count));
    builder.startVector(READ_RESULT_BYTES, this.count, 8);
    for (let index = this.count - 1; index >= 0; index--) {
      ReadResult.createReadResult(builder, this.versions[index]!, this.valueWords[index * 2]!, this.valueWords[index * 2 + 1]!);
    }
    const resultsOffset = builder.endVector();
    ReadReplyBatch.startReadReplyBatch(builder);
    ReadReplyBatch.addEpoch(builder, epoch);
    ReadReplyBatch.addFirstRequestId(builder, BigInt(this.firstRequestId));
    ReadReplyBatch.addCount(builder, this.count);
    ReadReplyBatch.addAppliedSeq(builder, BigInt(appliedSeq));
    ReadReplyBatch.addStatuses(builder, statusesOffset);
    ReadReplyBatch.addResults(builder, resultsOffset);
    ReadReplyBatch.addPayload(builder, payloadOffset);
    if (lane !== 0) ReadReplyBatch.addLane(builder, lane);
    const replyOffset = ReadReplyBatch.endReadReplyBatch(builder);
    builder.finish(Frame.createFrame(builder, Message.ReadReplyBatch, replyOffset));
    return builder.asUint8Array();
  }
}

export class ReadReplyView {
  bytes: Uint8Array = new Uint8Array(0);
  epoch = 0;
  firstRequestId = 0;
  count = 0;
  appliedSeq = 0;
  /** The lane of the reads it answers (0 when absent). */
  lane = 0;
  payloadPosition = 0;
  payloadLength = 0;
  private statusesPosition = 0;
  private resultsPosition = 0;
  private byteBuffer = new flatbuffers.ByteBuffer(new Uint8Array(0));
  private readonly envelope = new FrameEnvelope();
  private readonly table = new TableLocation();
  private readonly result = new ReadResult();
  /** Where first_request_id lies (a host rewrites it: see request-ids.ts). */
  firstRequestIdPosition = 0;

  open(bytes: Uint8Array): string | null {
    return reasonIfMalformed(() => {
      const { envelope, table } = this;
      openMessage(envelope, bytes, Message.ReadReplyBatch, 'ReadReplyBatch', table);
      const epochPosition = fieldPosition(bytes, table, 0, 4);
      this.epoch = epochPosition === 0 ? 0 : readUint32(bytes, epochPosition);
      this.firstRequestIdPosition = requiredFieldPosition(bytes, table, 1, 8, 'first_request_id');
      this.firstRequestId = readUint64AsNumber(bytes, this.firstRequestIdPosition);
      const countPosition = requiredFieldPosition(bytes, table, 2, 4, 'count');
      this.count = readUint32(bytes, countPosition);
      const appliedPosition = fieldPosition(bytes, table, 3, 8);
      this.appliedSeq = appliedPosition === 0 ? 0 : readUint64AsNumber(bytes, appliedPosition);
      const statusesField = requiredFieldPosition(bytes, table, 4, 4, 'statuses');
      const resultsField = requiredFieldPosition(bytes, table, 5, 4, 'results');
      const payloadField = requiredFieldPosition(bytes, table, 6, 4, 'payload');
      const statusesVector = followOffset(bytes, statusesField);
      const resultsVector = followOffset(bytes, resultsField);
      const payloadVector = followOffset(bytes, payloadField);
      if (verifyVector(bytes, statusesVector, 1, 'statuses') !== this.count) throw new MalformedFrame('statuses length mismatch');
      if (verifyVector(bytes, resultsVector, READ_RESULT_BYTES, 'results') !== this.count) {
        throw new MalformedFrame('results length mismatch');
      }
      this.payloadLength = verifyVector(bytes, payloadVector, 1, 'payload');
      const lanePosition = fieldPosition(bytes, table, 7, 1);
      this.lane = lanePosition === 0 ? 0 : bytes[lanePosition]!;
      checkRewrittenFieldAlone('first_request_id', this.firstRequestIdPosition, 8, envelope, table, [
        epochPosition, epochPosition === 0 ? 0 : 4,
        countPosition, 4,
        appliedPosition, appliedPosition === 0 ? 0 : 8,
        lanePosition, lanePosition === 0 ? 0 : 1,
        statusesField, 4,
        resultsField, 4,
        payloadField, 4,
        statusesVector, 4 + this.count,
        resultsVector, 4 + this.count * READ_RESULT_BYTES,
        payloadVector, 4 + this.payloadLength,
      ]);
      this.payloadPosition = payloadVector + 4;
      this.statusesPosition = statusesVector + 4;
      this.resultsPosition = resultsVector + 4;
      this.bytes = bytes;
      this.byteBuffer = new flatbuffers.ByteBuffer(bytes);
      for (let index = 0; index < this.count; index++) {
        const status = this.statusAt(index);
        if (status !== ReadStatus.Found && status !== ReadStatus.NotFound) throw new MalformedFrame(`unknown read status ${status}`);
        const result = this.resultAt(index);
        if (result.valueOffset() + result.valueLength() > this.payloadLength) {
          throw new MalformedFrame(`result ${index} overruns the payload`);
        }
      }
    });
  }

  statusAt(index: number): ReadStatus {
    return this.bytes[this.statusesPosition + index]!;
  }

  resultAt(index: number): ReadResult {
    return this.result.__init(this.resultsPosition + index * READ_RESULT_BYTES, this.byteBuffer);
  }
}

// ---------------------------------------------------------------------------------------------
// Hello (successor to predecessor, after a reconfiguration)

export interface HelloFields {
  epoch: number;
  replicaId: number;
  appliedSeq: number;
  /** The epoch stamped on the batch ending at appliedSeq, when a joiner offers its log (else 0, sent as absent). */
  appliedEpoch?: number;
}

export class HelloEncoder {
  private readonly builder = newBuilder(128);

  /** The returned view is valid until the next encode(). */
  encode(hello: HelloFields): Uint8Array {
    const builder = this.builder;
    builder.clear();
    builder.forceDefaults(true);
    Hello.startHello(builder);
    Hello.addEpoch(builder, hello.epoch);
    Hello.addReplicaId(builder, hello.replicaId);
    Hello.addAppliedSeq(builder, BigInt(hello.appliedSeq));
    // Absent when 0, so a member's Hello keeps the bytes it always had.
    builder.forceDefaults(false);
    Hello.addAppliedEpoch(builder, hello.appliedEpoch ?? 0);
    const helloOffset = Hello.endHello(builder);
    builder.finish(Frame.createFrame(builder, Message.Hello, helloOffset));
    return builder.asUint8Array();
  }
}

export class HelloView implements HelloFields {
  epoch = 0;
  replicaId = 0;
  appliedSeq = 0;
  appliedEpoch = 0;
  private readonly envelope = new FrameEnvelope();
  private readonly table = new TableLocation();

  open(bytes: Uint8Array): string | null {
    return reasonIfMalformed(() => {
      const { envelope, table } = this;
      openMessage(envelope, bytes, Message.Hello, 'Hello', table);
      this.epoch = readUint32(bytes, requiredFieldPosition(bytes, table, 0, 4, 'epoch'));
      this.replicaId = readUint32(bytes, requiredFieldPosition(bytes, table, 1, 4, 'replica_id'));
      this.appliedSeq = readUint64AsNumber(bytes, requiredFieldPosition(bytes, table, 2, 8, 'applied_seq'));
      const appliedEpoch = fieldPosition(bytes, table, 3, 4);
      this.appliedEpoch = appliedEpoch === 0 ? 0 : readUint32(bytes, appliedEpoch);
    });
  }
}
