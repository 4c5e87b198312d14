/**
 * A structural verifier for FlatBuffers, because the TypeScript runtime has none: the generated
 * accessors trust every offset they read, so bytes from a ring or a socket are checked here before
 * any field is used. It checks exactly what the accessors will later dereference: the root offset,
 * each table's vtable and size, each present field's extent, and each vector's length against the
 * end of the buffer. All offsets are relative to `bytes` (a view whose index 0 is the buffer start).
 *
 * Failures throw `MalformedFrame`, caught at the message readers' `open()` boundary and returned
 * as a reason string; no exception escapes to callers for bad input.
 */
export class MalformedFrame {
  /**
   * Not an Error: it never escapes the readers' open() (reasonIfMalformed catches it), and an Error
   * would capture a stack trace on every refusal, microseconds each under a flood of garbage.
   */
  constructor(readonly message: string) {}
}

export function readUint16(bytes: Uint8Array, offset: number): number {
  return bytes[offset]! | (bytes[offset + 1]! << 8);
}

export function readInt32(bytes: Uint8Array, offset: number): number {
  return bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24);
}

export function readUint32(bytes: Uint8Array, offset: number): number {
  return readInt32(bytes, offset) >>> 0;
}

/** Reads a little-endian uint64 as a Number, failing if it exceeds 2^53 - 1 (sequence numbers never do). */
export function readUint64AsNumber(bytes: Uint8Array, offset: number): number {
  const low = readUint32(bytes, offset);
  const high = readUint32(bytes, offset + 4);
  if (high > 0x1fffff) throw new MalformedFrame(`uint64 at ${offset} exceeds 2^53`);
  return high * 0x1_0000_0000 + low;
}

/** Where a verified table lives; reused by callers to avoid allocation per frame. */
export class TableLocation {
  position = 0;
  vtablePosition = 0;
  vtableBytes = 0;
  tableBytes = 0;
}

export function verifyRoot(bytes: Uint8Array, table: TableLocation): void {
  if (bytes.length < 8) throw new MalformedFrame(`frame of ${bytes.length} bytes is shorter than a root table`);
  verifyTable(bytes, readUint32(bytes, 0), table);
}

export function verifyTable(bytes: Uint8Array, position: number, table: TableLocation): void {
  const length = bytes.length;
  if (position < 4 || position + 4 > length) throw new MalformedFrame(`table at ${position} is outside ${length} bytes`);
  const vtablePosition = position - readInt32(bytes, position);
  if (vtablePosition < 0 || vtablePosition + 4 > length) {
    throw new MalformedFrame(`vtable at ${vtablePosition} is outside ${length} bytes`);
  }
  const vtableBytes = readUint16(bytes, vtablePosition);
  const tableBytes = readUint16(bytes, vtablePosition + 2);
  if (vtableBytes < 4 || (vtableBytes & 1) !== 0 || vtablePosition + vtableBytes > length) {
    throw new MalformedFrame(`vtable of ${vtableBytes} bytes at ${vtablePosition} is malformed`);
  }
  if (tableBytes < 4 || position + tableBytes > length) {
    throw new MalformedFrame(`table of ${tableBytes} bytes at ${position} overruns ${length} bytes`);
  }
  table.position = position;
  table.vtablePosition = vtablePosition;
  table.vtableBytes = vtableBytes;
  table.tableBytes = tableBytes;
}

/**
 * Absolute position of field `fieldIndex` (declaration order) of `fieldBytes` bytes, or 0 if the
 * field is absent. Throws if the field would extend past its table.
 */
export function fieldPosition(bytes: Uint8Array, table: TableLocation, fieldIndex: number, fieldBytes: number): number {
  const vtableOffset = 4 + 2 * fieldIndex;
  if (vtableOffset + 2 > table.vtableBytes) return 0;
  const fieldOffset = readUint16(bytes, table.vtablePosition + vtableOffset);
  if (fieldOffset === 0) return 0;
  if (fieldOffset < 4 || fieldOffset + fieldBytes > table.tableBytes) {
    throw new MalformedFrame(`field ${fieldIndex} at table offset ${fieldOffset} overruns its table`);
  }
  return table.position + fieldOffset;
}

/** Like fieldPosition, but the field must be present (e.g. header fields the head stamps in place). */
export function requiredFieldPosition(
  bytes: Uint8Array,
  table: TableLocation,
  fieldIndex: number,
  fieldBytes: number,
  name: string,
): number {
  const position = fieldPosition(bytes, table, fieldIndex, fieldBytes);
  if (position === 0) throw new MalformedFrame(`required field ${name} is absent`);
  return position;
}

/** Follows the uoffset stored at `position` and returns the target's absolute position. */
export function followOffset(bytes: Uint8Array, position: number): number {
  const target = position + readUint32(bytes, position);
  if (target + 4 > bytes.length) throw new MalformedFrame(`offset at ${position} points outside the frame`);
  return target;
}

/**
 * Verifies the vector whose uoffset field is at `fieldPositionValue` (0 = absent, treated as empty)
 * and returns its element count; its first element is at `vectorStart(...)`.
 */
export function verifyVector(bytes: Uint8Array, vectorPosition: number, elementBytes: number, name: string): number {
  const count = readUint32(bytes, vectorPosition);
  if (vectorPosition + 4 + count * elementBytes > bytes.length) {
    throw new MalformedFrame(`vector ${name} of ${count} elements overruns the frame`);
  }
  return count;
}
