/**
 * State transfer for a joining replica: the tail's store, each key's version and each client's
 * high-water mark, cut into Snapshot frames that each fit in one ring record. The joiner loads them
 * in order and then takes batches from appliedSeq + 1, like any replica.
 */
import * as flatbuffers from 'flatbuffers';
import { assert } from '../assert.js';
import type { Store } from '../store.js';
import { ClientMark, Frame, Message, Snapshot, WriteRecord } from '../wire/generated/schema_generated.js';
import { FrameEnvelope, openMessage, reasonIfMalformed } from '../wire/codec.js';
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
  appliedSeq: number;
  clientHighWater: ReadonlyMap<number, number>;
}

const RECORD_BYTES = 12;
const CHUNK_OVERHEAD_BYTES = 512;

/** Encodes `source` as Snapshot frames of at most `frameBytesMax` bytes each (the last has last=true). */
export function encodeSnapshot(source: SnapshotSource, frameBytesMax: number): Uint8Array[] {
  const clientsBytes = source.clientHighWater.size * 16 + 16;
  assert(frameBytesMax > CHUNK_OVERHEAD_BYTES + clientsBytes, 'encodeSnapshot: frames too small for the client marks');
  const frames: Uint8Array[] = [];
  let keys: Uint8Array[] = [];
  let values: Uint8Array[] = [];
  let versions: number[] = [];
  let chunkBytes = 0;
  const flush = (last: boolean): void => {
    frames.push(encodeChunk(source, keys, values, versions, last));
    keys = [];
    values = [];
    versions = [];
    chunkBytes = 0;
  };
  const budget = frameBytesMax - CHUNK_OVERHEAD_BYTES - clientsBytes;
  source.store.forEach((key, value, version) => {
    const bytes = key.length + value.length + RECORD_BYTES + 8;
    assert(bytes <= budget, 'encodeSnapshot: one entry exceeds a frame');
    if (chunkBytes + bytes > budget) flush(false);
    keys.push(key.slice());
    values.push(value.slice());
    versions.push(version);
    chunkBytes += bytes;
  });
  flush(true);
  return frames;
}

function encodeChunk(source: SnapshotSource, keys: Uint8Array[], values: Uint8Array[], versions: number[], last: boolean): Uint8Array {
  const payloadLength = keys.reduce((sum, key, index) => sum + key.length + values[index]!.length, 0);
  const builder = new flatbuffers.Builder(Math.ceil((payloadLength + keys.length * 20 + 1024) / 8) * 8);
  builder.forceDefaults(true);
  const payload = new Uint8Array(payloadLength);
  const offsets: number[] = [];
  let position = 0;
  keys.forEach((key, index) => {
    offsets.push(position);
    payload.set(key, position);
    payload.set(values[index]!, position + key.length);
    position += key.length + values[index]!.length;
  });
  const payloadOffset = builder.createByteVector(payload);
  const versionsOffset = Snapshot.createVersionsVector(builder, versions);
  Snapshot.startRecordsVector(builder, keys.length);
  for (let index = keys.length - 1; index >= 0; index--) {
    WriteRecord.createWriteRecord(builder, 0, 0, keys[index]!.length, values[index]!.length, offsets[index]!);
  }
  const recordsOffset = builder.endVector();
  const marks = last ? [...source.clientHighWater.entries()] : [];
  Snapshot.startClientsVector(builder, marks.length);
  for (let index = marks.length - 1; index >= 0; index--) ClientMark.createClientMark(builder, marks[index]![0], 0, marks[index]![1]);
  const clientsOffset = builder.endVector();
  const snapshot = Snapshot.createSnapshot(
    builder,
    source.epoch,
    BigInt(source.appliedSeq),
    last,
    recordsOffset,
    versionsOffset,
    payloadOffset,
    clientsOffset,
  );
  builder.finish(Frame.createFrame(builder, Message.Snapshot, snapshot));
  return builder.asUint8Array().slice();
}

/** A verified Snapshot frame, read in place. */
export class SnapshotView {
  epoch = 0;
  appliedSeq = 0;
  last = false;
  count = 0;
  clientCount = 0;
  private bytes: Uint8Array = new Uint8Array(0);
  private recordsPosition = 0;
  private versionsPosition = 0;
  private payloadPosition = 0;
  private clientsPosition = 0;
  private readonly envelope = new FrameEnvelope();
  private readonly table = new TableLocation();

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
      this.bytes = bytes;
      this.recordsPosition = records + 4;
      this.versionsPosition = versions + 4;
      this.payloadPosition = payload + 4;
      this.clientsPosition = clients + 4;
      for (let index = 0; index < this.count; index++) {
        const base = this.recordsPosition + index * RECORD_BYTES;
        const keyLength = bytes[base + 2]! | (bytes[base + 3]! << 8);
        if (keyLength === 0 || readUint32(bytes, base + 8) + keyLength + readUint32(bytes, base + 4) > payloadLength) {
          throw new MalformedFrame(`snapshot record ${index} overruns the payload`);
        }
      }
    });
  }

  /** Puts every record into `store` with its version; returns the client marks of the last chunk. */
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
      clientHighWater.set(readUint32(bytes, base), view.getFloat64(base + 8, true));
    }
  }
}
