/**
 * State transfer for a joining replica: the tail's store, each key's version and each client's
 * high-water mark, cut into Snapshot frames that each fit in one ring record. The joiner loads them
 * in order and then takes batches from appliedSeq + 1, like any replica.
 */
import * as flatbuffers from 'flatbuffers';
import { assert } from '../assert.js';
import type { Store, StoreScan } from '../store.js';
import { ClientMark, Frame, Message, Snapshot, WriteRecord } from '../wire/generated/schema_generated.js';
import { FrameEnvelope, KEY_BYTES_LIMIT, openMessage, reasonIfMalformed } from '../wire/codec.js';
import {
  MalformedFrame,
  TableLocation,
  fieldPosition,
  followOffset,
  readUint32,
  readUint64AsNumber,
  requiredFieldPosition,
  verifyVector,
} from '../wire/verify.js';

export interface SnapshotSource {
  store: Store;
  epoch: number;
  /** The store's applied seq when the snapshot starts: the joiner replays every batch after it. */
  appliedSeq: number;
  /** Each client's high-water mark as of appliedSeq (copied: the writer keeps it). */
  clientHighWater: ReadonlyMap<number, number>;
}

const RECORD_BYTES = 12;
/** A frame's envelope, header fields, vtables and vector lengths, with slack for alignment. */
const FRAME_OVERHEAD_BYTES = 512;
/** Per entry in a frame: its record, its version, and slack for alignment. */
const ENTRY_OVERHEAD_BYTES = RECORD_BYTES + 8 + 8;
/** Per client mark in a frame (a ClientMark struct). */
const MARK_BYTES = 16;

/** The smallest frame that holds one entry of `entryBytes` key and value bytes (see ../limits.ts). */
export function snapshotFrameBytesFor(entryBytes: number): number {
  return FRAME_OVERHEAD_BYTES + entryBytes + ENTRY_OVERHEAD_BYTES;
}

/** What a joiner checks every snapshot entry against: the same limits as a write's. */
export interface SnapshotEntryLimits {
  keyBytesMax: number;
  valueBytesMax: number;
}

/**
 * Cuts a store into Snapshot frames of at most `frameBytesMax` bytes, one per next() call, so a
 * tail can go on applying writes while it sends them. The frames come from a fuzzy scan
 * (Store.scan()): each entry as it is when its frame is cut, which may be newer than appliedSeq.
 * The tail sends the batches it applies after appliedSeq on the same link, and cuts a frame only
 * when every batch it has applied is already on the link, so the joiner sees each frame after
 * exactly the batches that preceded its cut. Applying frames and batches in link order then yields
 * the tail's state once the last frame is in: entries the scan reached are as of their frame and
 * rewritten by later batches; entries it did not reach yet were written only by batches (or not
 * since appliedSeq, and the scan reaches them). The joiner serves nothing until it becomes the tail.
 * The first frames carry the client marks as of appliedSeq, as many per frame as fit (a joiner
 * raises its marks to a frame's, so marks and later batches may arrive in any order); the last
 * frame has last=true. Every frame is at most `frameBytesMax` bytes, and one entry of any size the
 * limits allow fits an empty frame (../limits.ts), so a frame always makes progress.
 *
 * One builder and one payload buffer are reused: on a VM, fresh pages cost milliseconds per MiB.
 */
export class SnapshotWriter {
  private readonly scan: StoreScan;
  private finished = false;
  /** Bytes of marks, records, versions and payload one frame may hold. */
  private readonly contentBytesMax: number;
  private readonly builder: flatbuffers.Builder;
  private readonly payload: Uint8Array;
  /** Each client's high-water mark as of appliedSeq, sent a frame's worth at a time. */
  private readonly marks: Array<[number, number]>;
  private marksSent = 0;

  constructor(
    private readonly source: SnapshotSource,
    private readonly frameBytesMax: number,
  ) {
    this.contentBytesMax = frameBytesMax - FRAME_OVERHEAD_BYTES;
    assert(this.contentBytesMax >= MARK_BYTES + ENTRY_OVERHEAD_BYTES, 'SnapshotWriter: frames too small for an entry or a mark');
    this.builder = new flatbuffers.Builder(Math.ceil(frameBytesMax / 8) * 8);
    this.payload = new Uint8Array(this.contentBytesMax);
    this.marks = [...source.clientHighWater.entries()];
    this.scan = source.store.scan();
  }

  /** Whether every frame has been produced. */
  get done(): boolean {
    return this.finished;
  }

  /** Stops early (the join was abandoned): the store stops informing the scan. */
  close(): void {
    this.scan.close();
  }

  /** The next frame: a view valid until the next call (copy it out, into a ring say, before). */
  next(): Uint8Array {
    assert(!this.finished, 'SnapshotWriter.next: the snapshot is complete');
    const { store, epoch, appliedSeq } = this.source;
    const scan = this.scan;
    const builder = this.builder;
    const payload = this.payload;
    const heap = store.heap;
    builder.clear();
    builder.forceDefaults(true);
    // Client marks first, as many as fit; then entries in the room they leave.
    const marksEnd = Math.min(this.marks.length, this.marksSent + Math.floor(this.contentBytesMax / MARK_BYTES));
    const marks = this.marks.slice(this.marksSent, marksEnd);
    this.marksSent = marksEnd;
    const entryBytesMax = this.contentBytesMax - marks.length * MARK_BYTES;
    // The entries of this frame, read now: their bytes into the payload, the rest into the builder.
    const keyLengths: number[] = [];
    const valueLengths: number[] = [];
    const versions: number[] = [];
    let payloadLength = 0;
    for (let entry = scan.peek(); entry >= 0; entry = scan.peek()) {
      const keyLength = store.keyLength(entry);
      const valueLength = store.valueLength(entry);
      // The limits make any entry fit an empty frame; one that does not fit beside marks waits.
      assert(keyLength + valueLength + ENTRY_OVERHEAD_BYTES <= this.contentBytesMax, 'SnapshotWriter: one entry exceeds a frame');
      if (payloadLength + keyLength + valueLength + (keyLengths.length + 1) * ENTRY_OVERHEAD_BYTES > entryBytesMax) break;
      // A value that outgrew its first place lives apart from its key: copy each on its own.
      const keyOffset = store.keyOffset(entry);
      payload.set(heap.subarray(keyOffset, keyOffset + keyLength), payloadLength);
      const valueOffset = store.valueOffset(entry);
      payload.set(heap.subarray(valueOffset, valueOffset + valueLength), payloadLength + keyLength);
      payloadLength += keyLength + valueLength;
      keyLengths.push(keyLength);
      valueLengths.push(valueLength);
      versions.push(store.version(entry));
      scan.advance();
    }
    this.finished = scan.peek() < 0 && this.marksSent === this.marks.length;
    if (this.finished) scan.close();
    assert(keyLengths.length > 0 || marks.length > 0 || this.finished, 'SnapshotWriter: a frame must make progress');

    const count = keyLengths.length;
    const payloadOffset = builder.createByteVector(payload.subarray(0, payloadLength));
    const versionsOffset = Snapshot.createVersionsVector(builder, versions);
    Snapshot.startRecordsVector(builder, count);
    // Records are prepended: walk backwards, each with its entry's place in the payload.
    let position = payloadLength;
    for (let index = count - 1; index >= 0; index--) {
      position -= keyLengths[index]! + valueLengths[index]!;
      WriteRecord.createWriteRecord(builder, 0, 0, keyLengths[index]!, valueLengths[index]!, position);
    }
    const recordsOffset = builder.endVector();
    Snapshot.startClientsVector(builder, marks.length);
    for (let index = marks.length - 1; index >= 0; index--) ClientMark.createClientMark(builder, marks[index]![0], 0, marks[index]![1]);
    const clientsOffset = builder.endVector();
    // Built field by field so catch_up_end stays absent (false): a copy's bytes are as they always were.
    Snapshot.startSnapshot(builder);
    Snapshot.addEpoch(builder, epoch);
    Snapshot.addAppliedSeq(builder, BigInt(appliedSeq));
    Snapshot.addLast(builder, this.finished);
    Snapshot.addRecords(builder, recordsOffset);
    Snapshot.addVersions(builder, versionsOffset);
    Snapshot.addPayload(builder, payloadOffset);
    Snapshot.addClients(builder, clientsOffset);
    const snapshot = Snapshot.endSnapshot(builder);
    builder.finish(Frame.createFrame(builder, Message.Snapshot, snapshot));
    const frame = builder.asUint8Array();
    assert(frame.length <= this.frameBytesMax, `SnapshotWriter: a frame of ${frame.length} bytes exceeds ${this.frameBytesMax}`);
    return frame;
  }
}

/**
 * The frame that ends a catch-up join (./join-source.ts): a last Snapshot frame with no entries at
 * `appliedSeq`, which the joiner, having applied every batch through it, takes as "caught up".
 */
export function encodeCatchUpEnd(epoch: number, appliedSeq: number): Uint8Array {
  const builder = new flatbuffers.Builder(256);
  builder.forceDefaults(true);
  const payloadOffset = builder.createByteVector(new Uint8Array(0));
  const versionsOffset = Snapshot.createVersionsVector(builder, []);
  Snapshot.startRecordsVector(builder, 0);
  const recordsOffset = builder.endVector();
  Snapshot.startClientsVector(builder, 0);
  const clientsOffset = builder.endVector();
  const snapshot = Snapshot.createSnapshot(builder, epoch, BigInt(appliedSeq), true, recordsOffset, versionsOffset, payloadOffset, clientsOffset, true);
  builder.finish(Frame.createFrame(builder, Message.Snapshot, snapshot));
  return builder.asUint8Array().slice();
}

/** A verified Snapshot frame, read in place. */
export class SnapshotView {
  epoch = 0;
  appliedSeq = 0;
  last = false;
  /** The end of a catch-up, not part of a copy of the store (see encodeCatchUpEnd). */
  catchUpEnd = false;
  count = 0;
  clientCount = 0;
  private bytes: Uint8Array = new Uint8Array(0);
  private recordsPosition = 0;
  private versionsPosition = 0;
  private payloadPosition = 0;
  private clientsPosition = 0;
  private readonly envelope = new FrameEnvelope();
  private readonly table = new TableLocation();

  /** Entries beyond `limits` are refused, as a write of that size would be. */
  constructor(private readonly limits: SnapshotEntryLimits = { keyBytesMax: KEY_BYTES_LIMIT, valueBytesMax: 0xffffffff }) {}

  open(bytes: Uint8Array): string | null {
    return reasonIfMalformed(() => {
      const table = this.table;
      openMessage(this.envelope, bytes, Message.Snapshot, 'Snapshot', table);
      this.epoch = readUint32(bytes, requiredFieldPosition(bytes, table, 0, 4, 'epoch'));
      this.appliedSeq = readUint64AsNumber(bytes, requiredFieldPosition(bytes, table, 1, 8, 'applied_seq'));
      const lastPosition = fieldPosition(bytes, table, 2, 1);
      this.last = lastPosition !== 0 && bytes[lastPosition] !== 0;
      const records = followOffset(bytes, requiredFieldPosition(bytes, table, 3, 4, 'records'));
      const versions = followOffset(bytes, requiredFieldPosition(bytes, table, 4, 4, 'versions'));
      const payload = followOffset(bytes, requiredFieldPosition(bytes, table, 5, 4, 'payload'));
      const clients = followOffset(bytes, requiredFieldPosition(bytes, table, 6, 4, 'clients'));
      this.count = verifyVector(bytes, records, RECORD_BYTES, 'records');
      if (verifyVector(bytes, versions, 8, 'versions') !== this.count) throw new MalformedFrame('versions length mismatch');
      const payloadLength = verifyVector(bytes, payload, 1, 'payload');
      this.clientCount = verifyVector(bytes, clients, 16, 'clients');
      const catchUpEndPosition = fieldPosition(bytes, table, 7, 1);
      this.catchUpEnd = catchUpEndPosition !== 0 && bytes[catchUpEndPosition] !== 0;
      if (this.catchUpEnd && (!this.last || this.count > 0 || this.clientCount > 0)) throw new MalformedFrame('a catch-up end holds entries or marks, or is not last');
      this.bytes = bytes;
      this.recordsPosition = records + 4;
      this.versionsPosition = versions + 4;
      this.payloadPosition = payload + 4;
      this.clientsPosition = clients + 4;
      this.verifyEntries(payloadLength);
      this.verifyMarks();
    });
  }

  /** Every entry lies inside the payload, within the write limits, with a version a write could have. */
  private verifyEntries(payloadLength: number): void {
    const bytes = this.bytes;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let index = 0; index < this.count; index++) {
      const base = this.recordsPosition + index * RECORD_BYTES;
      const keyLength = bytes[base + 2]! | (bytes[base + 3]! << 8);
      const valueLength = readUint32(bytes, base + 4);
      if (keyLength === 0 || readUint32(bytes, base + 8) + keyLength + valueLength > payloadLength) {
        throw new MalformedFrame(`snapshot record ${index} overruns the payload`);
      }
      if (keyLength > this.limits.keyBytesMax) throw new MalformedFrame(`snapshot record ${index} has a ${keyLength}-byte key, above keyBytesMax`);
      if (valueLength > this.limits.valueBytesMax) {
        throw new MalformedFrame(`snapshot record ${index} has a ${valueLength}-byte value, above valueBytesMax`);
      }
      // A version is the sequence number of the write that made the value: a positive safe integer.
      const version = view.getFloat64(this.versionsPosition + index * 8, true);
      if (!Number.isSafeInteger(version) || version < 1) throw new MalformedFrame(`snapshot record ${index} has version ${version}`);
    }
  }

  /** Every client mark is a client sequence number: a safe integer, 0 or more. */
  private verifyMarks(): void {
    const bytes = this.bytes;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let index = 0; index < this.clientCount; index++) {
      const mark = view.getFloat64(this.clientsPosition + index * 16 + 8, true);
      if (!Number.isSafeInteger(mark) || mark < 0) throw new MalformedFrame(`snapshot client mark ${index} is ${mark}`);
    }
  }

  /** Puts every record into `store` with its version, and raises client marks to the frame's. */
  applyTo(store: Store, clientHighWater: Map<number, number>): void {
    const bytes = this.bytes;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let index = 0; index < this.count; index++) {
      const base = this.recordsPosition + index * RECORD_BYTES;
      const keyLength = bytes[base + 2]! | (bytes[base + 3]! << 8);
      const valueLength = readUint32(bytes, base + 4);
      const keyPosition = this.payloadPosition + readUint32(bytes, base + 8);
      const version = view.getFloat64(this.versionsPosition + index * 8, true);
      store.put(bytes, keyPosition, keyLength, bytes, keyPosition + keyLength, valueLength, version);
    }
    for (let index = 0; index < this.clientCount; index++) {
      const base = this.clientsPosition + index * 16;
      const clientId = readUint32(bytes, base);
      const mark = view.getFloat64(base + 8, true);
      if (mark > (clientHighWater.get(clientId) ?? 0)) clientHighWater.set(clientId, mark);
    }
  }
}
