/**
 * Watch polls and their replies (schema: ./schema.fbs, WatchRequest and WatchReply). A watch is a
 * client's series of polls, each asking a replica for the committed changes to keys under a prefix
 * from a version on; the replica keeps nothing of a watch but a held poll (../chain/watch-polls.ts).
 * Readers verify a frame in full in `open()` and return a reason for malformed bytes, never throw.
 */
import * as flatbuffers from 'flatbuffers';
import { assert } from '../assert.js';
import { copyBytes } from '../bytes.js';
import { checkRewrittenFieldAlone, FrameEnvelope, KEY_BYTES_LIMIT, newBuilder, openMessage, reasonIfMalformed } from './codec.js';
import { Frame, Message, Op, WatchReply, WatchRequest, WatchStatus, WriteRecord } from './generated/schema_generated.js';
import { MalformedFrame, TableLocation, followOffset, readUint32, readUint64AsNumber, requiredFieldPosition, verifyVector } from './verify.js';

export { WatchStatus };

const RECORD_BYTES = WriteRecord.sizeOf();
/** A reply's envelope, header fields, vtables and vector lengths, with slack for alignment. */
const FRAME_OVERHEAD_BYTES = 256;
/** Per change in a reply beside its key and value: its record and its version, with alignment slack. */
export const WATCH_CHANGE_OVERHEAD_BYTES = RECORD_BYTES + 8 + 8;

/** The largest reply frame carrying `contentBytes` of changes (keys, values and their overheads). */
export function watchReplyFrameBytesFor(contentBytes: number): number {
  return FRAME_OVERHEAD_BYTES + contentBytes;
}

/** The bytes a change of this key and value takes in a reply's content. */
export function watchChangeBytes(keyLength: number, valueLength: number): number {
  return keyLength + valueLength + WATCH_CHANGE_OVERHEAD_BYTES;
}

export interface WatchRequestFields {
  requestId: number;
  /** 0: from now. */
  fromVersion: number;
  bytesMax: number;
  prefix: Uint8Array;
}

export function encodeWatchRequest(request: WatchRequestFields): Uint8Array {
  const builder = newBuilder(FRAME_OVERHEAD_BYTES + request.prefix.length);
  builder.forceDefaults(true);
  const prefix = builder.createByteVector(request.prefix);
  WatchRequest.startWatchRequest(builder);
  WatchRequest.addRequestId(builder, BigInt(request.requestId));
  WatchRequest.addFromVersion(builder, BigInt(request.fromVersion));
  WatchRequest.addBytesMax(builder, request.bytesMax);
  WatchRequest.addPrefix(builder, prefix);
  builder.finish(Frame.createFrame(builder, Message.WatchRequest, WatchRequest.endWatchRequest(builder)));
  return builder.asUint8Array().slice();
}

export class WatchRequestView implements WatchRequestFields {
  bytes: Uint8Array = new Uint8Array(0);
  requestId = 0;
  fromVersion = 0;
  bytesMax = 0;
  prefixPosition = 0;
  prefixLength = 0;
  /** Where request_id lies (a host rewrites it, see rewriteWatchRequestId). */
  requestIdPosition = 0;
  private readonly envelope = new FrameEnvelope();
  private readonly table = new TableLocation();

  /** A prefix longer than a key can be is malformed. */
  constructor(private readonly keyBytesMax: number = KEY_BYTES_LIMIT) {}

  get prefix(): Uint8Array {
    return this.bytes.subarray(this.prefixPosition, this.prefixPosition + this.prefixLength);
  }

  open(bytes: Uint8Array): string | null {
    return reasonIfMalformed(() => {
      const { envelope, table } = this;
      openMessage(envelope, bytes, Message.WatchRequest, 'WatchRequest', table);
      this.requestIdPosition = requiredFieldPosition(bytes, table, 0, 8, 'request_id');
      this.requestId = readUint64AsNumber(bytes, this.requestIdPosition);
      const fromPosition = requiredFieldPosition(bytes, table, 1, 8, 'from_version');
      this.fromVersion = readUint64AsNumber(bytes, fromPosition);
      const bytesMaxPosition = requiredFieldPosition(bytes, table, 2, 4, 'bytes_max');
      this.bytesMax = readUint32(bytes, bytesMaxPosition);
      const prefixField = requiredFieldPosition(bytes, table, 3, 4, 'prefix');
      const prefixVector = followOffset(bytes, prefixField);
      this.prefixLength = verifyVector(bytes, prefixVector, 1, 'prefix');
      this.prefixPosition = prefixVector + 4;
      if (this.prefixLength > this.keyBytesMax) throw new MalformedFrame(`a ${this.prefixLength}-byte prefix, above keyBytesMax ${this.keyBytesMax}`);
      if (this.bytesMax === 0) throw new MalformedFrame('a watch poll with bytes_max 0');
      checkRewrittenFieldAlone('request_id', this.requestIdPosition, 8, envelope, table, [
        fromPosition, 8,
        bytesMaxPosition, 4,
        prefixField, 4,
        prefixVector, 4 + this.prefixLength,
      ]);
      this.bytes = bytes;
    });
  }
}

/**
 * Builds one reply: changes are copied in as a replica scans its history, while `fits()` says so.
 * One instance per replica, reused (its buffers are sized for the largest reply once).
 */
export class WatchReplyEncoder {
  readonly contentBytesMax: number;
  private readonly payload: Uint8Array;
  private payloadLength = 0;
  private contentBytes = 0;
  private readonly ops: number[] = [];
  private readonly keyLengths: number[] = [];
  private readonly valueLengths: number[] = [];
  private readonly versions: number[] = [];
  private readonly builder: flatbuffers.Builder;
  private limit = 0;

  constructor(contentBytesMax: number) {
    assert(contentBytesMax >= WATCH_CHANGE_OVERHEAD_BYTES, 'WatchReplyEncoder: too small for a change');
    this.contentBytesMax = contentBytesMax;
    this.payload = new Uint8Array(contentBytesMax);
    this.builder = newBuilder(watchReplyFrameBytesFor(contentBytesMax));
  }

  get count(): number {
    return this.ops.length;
  }

  /** Starts a reply whose changes take at most `bytesMax` of content (and at most contentBytesMax). */
  begin(bytesMax: number): void {
    this.limit = Math.min(bytesMax, this.contentBytesMax);
    this.payloadLength = 0;
    this.contentBytes = 0;
    this.ops.length = 0;
    this.keyLengths.length = 0;
    this.valueLengths.length = 0;
    this.versions.length = 0;
  }

  /** Whether a change of these sizes fits; the first change of a reply always does (if the limits allow it at all). */
  fits(keyLength: number, valueLength: number): boolean {
    const bytes = watchChangeBytes(keyLength, valueLength);
    if (this.ops.length === 0) return bytes <= this.contentBytesMax;
    return this.contentBytes + bytes <= this.limit;
  }

  /** A change: `keyLength` key bytes at `keyStart` of `source`, then (a Put's) `valueLength` value bytes. */
  add(op: Op, source: Uint8Array, keyStart: number, keyLength: number, valueLength: number, version: number): void {
    assert(this.fits(keyLength, valueLength), 'WatchReplyEncoder.add: the reply is full');
    copyBytes(source, keyStart, this.payload, this.payloadLength, keyLength + valueLength);
    this.payloadLength += keyLength + valueLength;
    this.contentBytes += watchChangeBytes(keyLength, valueLength);
    this.ops.push(op);
    this.keyLengths.push(keyLength);
    this.valueLengths.push(valueLength);
    this.versions.push(version);
  }

  /** The reply frame (a copy: the encoder's buffers are reused). */
  finish(requestId: number, status: WatchStatus, throughVersion: number, resumeVersion: number): Uint8Array {
    const builder = this.builder;
    const count = this.ops.length;
    builder.clear();
    builder.forceDefaults(true);
    const payloadOffset = builder.createByteVector(this.payload.subarray(0, this.payloadLength));
    const versionsOffset = WatchReply.createVersionsVector(builder, this.versions);
    builder.startVector(RECORD_BYTES, count, 4);
    let offset = this.payloadLength;
    for (let index = count - 1; index >= 0; index--) {
      const length = this.keyLengths[index]! + this.valueLengths[index]!;
      offset -= length;
      WriteRecord.createWriteRecord(builder, this.ops[index]!, 0, this.keyLengths[index]!, this.valueLengths[index]!, offset);
    }
    const recordsOffset = builder.endVector();
    WatchReply.startWatchReply(builder);
    WatchReply.addRequestId(builder, BigInt(requestId));
    WatchReply.addStatus(builder, status);
    WatchReply.addThroughVersion(builder, BigInt(throughVersion));
    WatchReply.addResumeVersion(builder, BigInt(resumeVersion));
    WatchReply.addRecords(builder, recordsOffset);
    WatchReply.addVersions(builder, versionsOffset);
    WatchReply.addPayload(builder, payloadOffset);
    builder.finish(Frame.createFrame(builder, Message.WatchReply, WatchReply.endWatchReply(builder)));
    return builder.asUint8Array().slice();
  }
}

/** One change of a reply, read in place (valid until the view opens another frame). */
export interface WatchChangeLocation {
  op: Op;
  keyStart: number;
  keyLength: number;
  valueLength: number;
  version: number;
}

export class WatchReplyView {
  bytes: Uint8Array = new Uint8Array(0);
  requestId = 0;
  status: WatchStatus = WatchStatus.Changes;
  throughVersion = 0;
  resumeVersion = 0;
  count = 0;
  /** Where request_id lies (a host rewrites it, see rewriteWatchRequestId). */
  requestIdPosition = 0;
  private recordsPosition = 0;
  private versionsPosition = 0;
  private payloadPosition = 0;
  private byteBuffer = new flatbuffers.ByteBuffer(new Uint8Array(0));
  private data: DataView = new DataView(new ArrayBuffer(0)) as DataView;
  private readonly record = new WriteRecord();
  private readonly envelope = new FrameEnvelope();
  private readonly table = new TableLocation();
  private readonly change: WatchChangeLocation = { op: Op.Put, keyStart: 0, keyLength: 0, valueLength: 0, version: 0 };

  open(bytes: Uint8Array): string | null {
    return reasonIfMalformed(() => {
      const { envelope, table } = this;
      openMessage(envelope, bytes, Message.WatchReply, 'WatchReply', table);
      this.requestIdPosition = requiredFieldPosition(bytes, table, 0, 8, 'request_id');
      this.requestId = readUint64AsNumber(bytes, this.requestIdPosition);
      const statusPosition = requiredFieldPosition(bytes, table, 1, 1, 'status');
      const status = bytes[statusPosition]!;
      if (status !== WatchStatus.Changes && status !== WatchStatus.Lagged) throw new MalformedFrame(`unknown watch status ${status}`);
      this.status = status;
      const throughPosition = requiredFieldPosition(bytes, table, 2, 8, 'through_version');
      this.throughVersion = readUint64AsNumber(bytes, throughPosition);
      const resumePosition = requiredFieldPosition(bytes, table, 3, 8, 'resume_version');
      this.resumeVersion = readUint64AsNumber(bytes, resumePosition);
      const recordsField = requiredFieldPosition(bytes, table, 4, 4, 'records');
      const versionsField = requiredFieldPosition(bytes, table, 5, 4, 'versions');
      const payloadField = requiredFieldPosition(bytes, table, 6, 4, 'payload');
      const recordsVector = followOffset(bytes, recordsField);
      const versionsVector = followOffset(bytes, versionsField);
      const payloadVector = followOffset(bytes, payloadField);
      this.count = verifyVector(bytes, recordsVector, RECORD_BYTES, 'records');
      if (verifyVector(bytes, versionsVector, 8, 'versions') !== this.count) throw new MalformedFrame('versions length mismatch');
      const payloadLength = verifyVector(bytes, payloadVector, 1, 'payload');
      checkRewrittenFieldAlone('request_id', this.requestIdPosition, 8, envelope, table, [
        statusPosition, 1,
        throughPosition, 8,
        resumePosition, 8,
        recordsField, 4,
        versionsField, 4,
        payloadField, 4,
        recordsVector, 4 + this.count * RECORD_BYTES,
        versionsVector, 4 + this.count * 8,
        payloadVector, 4 + payloadLength,
      ]);
      this.bytes = bytes;
      this.byteBuffer = new flatbuffers.ByteBuffer(bytes);
      this.recordsPosition = recordsVector + 4;
      this.versionsPosition = versionsVector + 4;
      this.payloadPosition = payloadVector + 4;
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      this.data = view;
      let previous = 0;
      for (let index = 0; index < this.count; index++) {
        const record = this.record.__init(this.recordsPosition + index * RECORD_BYTES, this.byteBuffer);
        const op = record.op();
        if (op !== Op.Put && op !== Op.Delete) throw new MalformedFrame(`change ${index} has op ${op}`);
        if (record.flags() !== 0) throw new MalformedFrame(`change ${index} has flags ${record.flags()}`);
        if (op === Op.Delete && record.valueLength() !== 0) throw new MalformedFrame(`change ${index} deletes with a value`);
        if (record.payloadOffset() + record.keyLength() + record.valueLength() > payloadLength) throw new MalformedFrame(`change ${index} overruns the payload`);
        const version = view.getFloat64(this.versionsPosition + index * 8, true);
        if (!Number.isSafeInteger(version) || version <= previous) throw new MalformedFrame(`change ${index} has version ${version} after ${previous}`);
        if (version > this.throughVersion) throw new MalformedFrame(`change ${index} has version ${version} past through_version ${this.throughVersion}`);
        previous = version;
      }
      if (this.status === WatchStatus.Lagged && (this.count > 0 || this.resumeVersion === 0)) throw new MalformedFrame('a lagged reply carries changes or no resume version');
    });
  }

  /** Change `index`, read in place into one reused object. */
  changeAt(index: number): WatchChangeLocation {
    const record = this.record.__init(this.recordsPosition + index * RECORD_BYTES, this.byteBuffer);
    const change = this.change;
    change.op = record.op();
    change.keyStart = this.payloadPosition + record.payloadOffset();
    change.keyLength = record.keyLength();
    change.valueLength = record.valueLength();
    change.version = this.data.getFloat64(this.versionsPosition + index * 8, true);
    return change;
  }
}

/** Rewrites an opened WatchRequest's or WatchReply's request id in place (a host's, as for reads: ./request-ids.ts). */
export function rewriteWatchRequestId(bytes: Uint8Array, opened: WatchRequestView | WatchReplyView, requestId: number): void {
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setBigUint64(opened.requestIdPosition, BigInt(requestId), true);
}
