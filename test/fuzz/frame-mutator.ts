/**
 * Mutations of valid frames for the codec fuzzer: a seeded PRNG (xoshiro128**, so a failure replays
 * from its seed alone, and no Math.random), blind byte-level operators (flips, interesting values at
 * random offsets, truncation, junk, splices) and structure-aware ones that aim at what a FlatBuffers
 * reader trusts: the root offset, each table's vtable offset, the vtable's entries, each offset
 * field, each vector's length, and each header and struct field. The structure comes from walking
 * the valid frame with the same helpers the readers use (../../native-free-core/wire/verify.ts).
 */
import { MessageKind } from '../../native-free-core/wire/codec.js';
import { TableLocation, fieldPosition, followOffset, readUint32, verifyRoot, verifyTable } from '../../native-free-core/wire/verify.js';

/** xoshiro128** (Blackman and Vigna), seeded through splitmix32: 32-bit words, period 2^128 - 1. */
export class Random {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let state = seed >>> 0;
    const splitmix32 = (): number => {
      state = (state + 0x9e3779b9) | 0;
      let mixed = state ^ (state >>> 16);
      mixed = Math.imul(mixed, 0x21f0aaad);
      mixed ^= mixed >>> 15;
      mixed = Math.imul(mixed, 0x735a2d97);
      return (mixed ^ (mixed >>> 15)) >>> 0;
    };
    this.s0 = splitmix32();
    this.s1 = splitmix32();
    this.s2 = splitmix32();
    this.s3 = splitmix32();
  }

  /** A uniform 32-bit unsigned integer. */
  next(): number {
    const result = Math.imul(rotateLeft(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const shifted = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= shifted;
    this.s3 = rotateLeft(this.s3, 11);
    return result;
  }

  /** A uniform integer in [0, bound) for bound in [1, 2^32]. */
  below(bound: number): number {
    return Math.floor((this.next() / 0x1_0000_0000) * bound);
  }

  /** True with probability `probability`. */
  chance(probability: number): boolean {
    return this.next() < probability * 0x1_0000_0000;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }
}

function rotateLeft(word: number, bits: number): number {
  return (word << bits) | (word >>> (32 - bits));
}

// ---------------------------------------------------------------------------------------------
// The structure of a valid frame

export type ScalarType = 'u8' | 'u16' | 'u32' | 'u64' | 'f64';

interface FieldShape {
  /** Field index in declaration order (the vtable slot). */
  index: number;
  /** A scalar of this type, or (with elementBytes) a vector. */
  type: ScalarType | 'vector';
  /** Vectors: bytes per element. */
  elementBytes?: number;
  /** Vectors of structs or scalars: each element's fields as [offset in the element, type]. */
  elementFields?: ReadonlyArray<readonly [number, ScalarType]>;
}

const WRITE_RECORD_FIELDS = [[0, 'u8'], [1, 'u8'], [2, 'u16'], [4, 'u32'], [8, 'u32']] as const;

/** Each message table's fields, as schema.fbs declares them. */
const MESSAGE_FIELDS: Record<MessageKind, readonly FieldShape[]> = {
  [MessageKind.writeBatch]: [
    { index: 0, type: 'u32' },
    { index: 1, type: 'u64' },
    { index: 2, type: 'u32' },
    { index: 3, type: 'u32' },
    { index: 4, type: 'u64' },
    { index: 5, type: 'vector', elementBytes: 12, elementFields: WRITE_RECORD_FIELDS },
    { index: 6, type: 'vector', elementBytes: 1 },
  ],
  [MessageKind.ack]: [
    { index: 0, type: 'u32' },
    { index: 1, type: 'u64' },
    { index: 2, type: 'u32' },
    { index: 3, type: 'u64' },
  ],
  [MessageKind.readBatch]: [
    { index: 0, type: 'u32' },
    { index: 1, type: 'u64' },
    { index: 2, type: 'u32' },
    { index: 3, type: 'vector', elementBytes: 8, elementFields: [[0, 'u32'], [4, 'u16'], [6, 'u16']] },
    { index: 4, type: 'vector', elementBytes: 1 },
  ],
  [MessageKind.readReplyBatch]: [
    { index: 0, type: 'u32' },
    { index: 1, type: 'u64' },
    { index: 2, type: 'u32' },
    { index: 3, type: 'u64' },
    { index: 4, type: 'vector', elementBytes: 1, elementFields: [[0, 'u8']] },
    { index: 5, type: 'vector', elementBytes: 16, elementFields: [[0, 'f64'], [8, 'u32'], [12, 'u32']] },
    { index: 6, type: 'vector', elementBytes: 1 },
  ],
  [MessageKind.hello]: [
    { index: 0, type: 'u32' },
    { index: 1, type: 'u32' },
    { index: 2, type: 'u64' },
  ],
  [MessageKind.snapshot]: [
    { index: 0, type: 'u32' },
    { index: 1, type: 'u64' },
    { index: 2, type: 'u8' },
    { index: 3, type: 'vector', elementBytes: 12, elementFields: WRITE_RECORD_FIELDS },
    { index: 4, type: 'vector', elementBytes: 8, elementFields: [[0, 'f64']] },
    { index: 5, type: 'vector', elementBytes: 1 },
    { index: 6, type: 'vector', elementBytes: 16, elementFields: [[0, 'u32'], [4, 'u32'], [8, 'f64']] },
  ],
  [MessageKind.clusterView]: [
    { index: 0, type: 'u32' },
    { index: 1, type: 'u32' },
    { index: 2, type: 'vector', elementBytes: 1 },
  ],
  [MessageKind.watchRequest]: [
    { index: 0, type: 'u64' },
    { index: 1, type: 'u64' },
    { index: 2, type: 'u32' },
    { index: 3, type: 'vector', elementBytes: 1 },
  ],
  [MessageKind.watchReply]: [
    { index: 0, type: 'u64' },
    { index: 1, type: 'u8' },
    { index: 2, type: 'u64' },
    { index: 3, type: 'u64' },
    { index: 4, type: 'vector', elementBytes: 12, elementFields: WRITE_RECORD_FIELDS },
    { index: 5, type: 'vector', elementBytes: 8, elementFields: [[0, 'f64']] },
    { index: 6, type: 'vector', elementBytes: 1 },
  ],
};

const SCALAR_BYTES: Record<ScalarType, number> = { u8: 1, u16: 2, u32: 4, u64: 8, f64: 8 };
/** Struct elements whose fields are listed, per vector: enough to reach every kind of element. */
const ELEMENTS_MAPPED_MAX = 32;

export interface ScalarSite {
  position: number;
  type: ScalarType;
}

export interface VectorSite {
  /** Position of the uint32 element count. */
  lengthPosition: number;
  elementBytes: number;
  count: number;
}

/** Where, in one valid frame, each thing a reader trusts lives. */
export interface FrameLayout {
  kind: MessageKind;
  /** uoffset_t fields: the root offset (0), the union's message offset, every vector field. */
  uoffsets: number[];
  /** The soffset_t at each table's start (table to vtable). */
  soffsets: number[];
  /** Each uint16 of each vtable: its size, the table's size, the field offsets. */
  vtableEntries: number[];
  vectors: VectorSite[];
  /** Header fields, the union's type byte, and the fields of the first elements of struct vectors. */
  scalars: ScalarSite[];
  /** The union's type byte and the message table's scalar fields (epochs, seqs, counts, ids). */
  headerScalars: ScalarSite[];
  /** Position of each message field by index (0 if absent): the harness fits headers to a node. */
  messageFields: number[];
}

/** Walks a valid frame of a known kind. Throws (MalformedFrame) if it is not valid. */
export function layoutOf(bytes: Uint8Array): FrameLayout {
  const root = new TableLocation();
  verifyRoot(bytes, root);
  const layout: FrameLayout = {
    kind: MessageKind.ack,
    uoffsets: [0],
    soffsets: [],
    vtableEntries: [],
    vectors: [],
    scalars: [],
    headerScalars: [],
    messageFields: [],
  };
  addTable(layout, root);
  const typePosition = fieldPosition(bytes, root, 0, 1);
  const messageField = fieldPosition(bytes, root, 1, 4);
  layout.kind = bytes[typePosition]! as MessageKind;
  layout.headerScalars.push({ position: typePosition, type: 'u8' });
  layout.uoffsets.push(messageField);
  const message = new TableLocation();
  verifyTable(bytes, followOffset(bytes, messageField), message);
  addTable(layout, message);
  for (const field of MESSAGE_FIELDS[layout.kind]) {
    const position = fieldPosition(bytes, message, field.index, field.type === 'vector' ? 4 : SCALAR_BYTES[field.type]);
    layout.messageFields[field.index] = position;
    if (position === 0) continue;
    if (field.type !== 'vector') {
      layout.headerScalars.push({ position, type: field.type });
      continue;
    }
    layout.uoffsets.push(position);
    const vector = followOffset(bytes, position);
    const count = readUint32(bytes, vector);
    layout.vectors.push({ lengthPosition: vector, elementBytes: field.elementBytes!, count });
    for (let element = 0; element < Math.min(count, ELEMENTS_MAPPED_MAX); element++) {
      for (const [offset, type] of field.elementFields ?? []) {
        layout.scalars.push({ position: vector + 4 + element * field.elementBytes! + offset, type });
      }
    }
  }
  layout.scalars.push(...layout.headerScalars);
  return layout;
}

function addTable(layout: FrameLayout, table: TableLocation): void {
  layout.soffsets.push(table.position);
  for (let entry = 0; entry < table.vtableBytes; entry += 2) layout.vtableEntries.push(table.vtablePosition + entry);
}

// ---------------------------------------------------------------------------------------------
// Writing values

function writeUint16(bytes: Uint8Array, position: number, value: number): void {
  if (position < 0 || position + 2 > bytes.length) return;
  bytes[position] = value & 0xff;
  bytes[position + 1] = (value >>> 8) & 0xff;
}

export function writeUint32(bytes: Uint8Array, position: number, value: number): void {
  if (position < 0 || position + 4 > bytes.length) return;
  bytes[position] = value & 0xff;
  bytes[position + 1] = (value >>> 8) & 0xff;
  bytes[position + 2] = (value >>> 16) & 0xff;
  bytes[position + 3] = (value >>> 24) & 0xff;
}

/** Writes a non-negative integer below 2^64 given as a Number (exact below 2^53). */
export function writeUint64(bytes: Uint8Array, position: number, value: number): void {
  writeUint32(bytes, position, value % 0x1_0000_0000);
  writeUint32(bytes, position + 4, Math.floor(value / 0x1_0000_0000));
}

function writeFloat64(bytes: Uint8Array, position: number, value: number): void {
  if (position < 0 || position + 8 > bytes.length) return;
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setFloat64(position, value, true);
}

const INTERESTING_U8 = [0, 1, 2, 7, 8, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_U16 = [0, 1, 2, 4, 8, 0xff, 0x100, 0x7fff, 0x8000, 0xfffe, 0xffff];
const INTERESTING_U32 = [0, 1, 2, 4, 8, 0xff, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
/** Sequence numbers near the 2^53 limit the readers enforce, and the uint64 extremes. */
const INTERESTING_U64 = [0, 1, 2, 0xffffffff, 0x1_0000_0000, 2 ** 53 - 2, 2 ** 53 - 1, 2 ** 53, 2 ** 63, 2 ** 64 - 1];
const INTERESTING_F64 = [0, -0, 1, 0.5, -1, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2 ** 53 - 1, 2 ** 53, 1e300, Number.MIN_VALUE];

/** A value that means something relative to this frame: its length, or the distance to its end. */
function lengthRelative(random: Random, length: number, position: number): number {
  const base = random.pick([length, length - position, length - position - 4, (length - position) >>> 1]);
  return Math.max(0, base + random.below(9) - 4) >>> 0;
}

function interestingUint32(random: Random, length: number, position: number): number {
  return random.chance(0.3) ? lengthRelative(random, length, position) : random.pick(INTERESTING_U32);
}

// ---------------------------------------------------------------------------------------------
// Operators

/** A frame being mutated: operators may replace `bytes` when they change its length. */
export interface Mutable {
  bytes: Uint8Array;
}

type Operator = (frame: Mutable, layout: FrameLayout, donor: Uint8Array, random: Random) => void;

function randomPosition(random: Random, frame: Mutable, width: number): number {
  return frame.bytes.length < width ? -1 : random.below(frame.bytes.length - width + 1);
}

/** A range [start, start + length) inside `length` bytes, mostly short. */
function randomRange(random: Random, length: number): [number, number] {
  if (length === 0) return [0, 0];
  const start = random.below(length);
  const span = random.chance(0.8) ? 1 + random.below(16) : 1 + random.below(length);
  return [start, Math.min(span, length - start)];
}

function replaceBytes(frame: Mutable, bytes: Uint8Array): void {
  frame.bytes = bytes;
}

const blindOperators: Record<string, Operator> = {
  bitFlip(frame, _layout, _donor, random) {
    const position = randomPosition(random, frame, 1);
    if (position >= 0) frame.bytes[position]! ^= 1 << random.below(8);
  },
  randomByte(frame, _layout, _donor, random) {
    const position = randomPosition(random, frame, 1);
    if (position >= 0) frame.bytes[position] = random.below(256);
  },
  interestingByte(frame, _layout, _donor, random) {
    const position = randomPosition(random, frame, 1);
    if (position >= 0) frame.bytes[position] = random.pick(INTERESTING_U8);
  },
  interestingUint16(frame, _layout, _donor, random) {
    const position = randomPosition(random, frame, 2);
    const value = random.chance(0.3) ? lengthRelative(random, frame.bytes.length, position) : random.pick(INTERESTING_U16);
    writeUint16(frame.bytes, position, value);
  },
  interestingUint32(frame, _layout, _donor, random) {
    const position = randomPosition(random, frame, 4);
    writeUint32(frame.bytes, position, interestingUint32(random, frame.bytes.length, position));
  },
  truncate(frame, _layout, _donor, random) {
    const length = frame.bytes.length;
    // Mostly near the end (cutting the payload, which FlatBuffers writes first and places last).
    const cut = random.chance(0.5) ? Math.max(0, length - 1 - random.below(32)) : random.below(length + 1);
    replaceBytes(frame, frame.bytes.slice(0, cut));
  },
  extendWithJunk(frame, _layout, _donor, random) {
    const junk = 1 + random.below(64);
    const bytes = new Uint8Array(frame.bytes.length + junk);
    bytes.set(frame.bytes);
    const zero = random.chance(0.3);
    for (let index = frame.bytes.length; index < bytes.length; index++) bytes[index] = zero ? 0 : random.below(256);
    replaceBytes(frame, bytes);
  },
  spliceFromDonor(frame, _layout, donor, random) {
    const [start, length] = randomRange(random, donor.length);
    const target = randomPosition(random, frame, 1);
    if (target < 0) return;
    frame.bytes.set(donor.subarray(start, start + Math.min(length, frame.bytes.length - target)), target);
  },
  insertFromDonor(frame, _layout, donor, random) {
    const [start, length] = randomRange(random, donor.length);
    const at = random.below(frame.bytes.length + 1);
    const bytes = new Uint8Array(frame.bytes.length + length);
    bytes.set(frame.bytes.subarray(0, at));
    bytes.set(donor.subarray(start, start + length), at);
    bytes.set(frame.bytes.subarray(at), at + length);
    replaceBytes(frame, bytes);
  },
  duplicateRange(frame, _layout, _donor, random) {
    const [start, length] = randomRange(random, frame.bytes.length);
    const target = randomPosition(random, frame, 1);
    if (target < 0) return;
    frame.bytes.copyWithin(target, start, start + Math.min(length, frame.bytes.length - target));
  },
  deleteRange(frame, _layout, _donor, random) {
    const [start, length] = randomRange(random, frame.bytes.length);
    const bytes = new Uint8Array(frame.bytes.length - length);
    bytes.set(frame.bytes.subarray(0, start));
    bytes.set(frame.bytes.subarray(start + length), start);
    replaceBytes(frame, bytes);
  },
  zeroRange(frame, _layout, _donor, random) {
    const [start, length] = randomRange(random, frame.bytes.length);
    frame.bytes.fill(0, start, start + length);
  },
};

const structureOperators: Record<string, Operator> = {
  rootOffset(frame, _layout, _donor, random) {
    if (frame.bytes.length < 4) return;
    const current = readUint32(frame.bytes, 0);
    const value = random.chance(0.5) ? current + random.pick([-8, -4, -2, -1, 1, 2, 4, 8]) : interestingUint32(random, frame.bytes.length, 0);
    writeUint32(frame.bytes, 0, value >>> 0);
  },
  vtableOffset(frame, layout, _donor, random) {
    const position = random.pick(layout.soffsets);
    if (position + 4 > frame.bytes.length) return;
    const current = readUint32(frame.bytes, position) | 0;
    const value = random.chance(0.5)
      ? current + random.pick([-8, -4, -2, -1, 1, 2, 4, 8])
      : random.pick([0, 2, 4, -4, position, position + 1, position - frame.bytes.length, 0x7fffffff, -0x80000000]);
    writeUint32(frame.bytes, position, value >>> 0);
  },
  vtableEntry(frame, layout, _donor, random) {
    const position = random.pick(layout.vtableEntries);
    if (position + 2 > frame.bytes.length) return;
    const current = frame.bytes[position]! | (frame.bytes[position + 1]! << 8);
    const value = random.chance(0.5) ? current + random.pick([-4, -2, -1, 1, 2, 4, 8]) : random.pick([0, 1, 2, 3, 4, 0x7fff, 0xfffe, 0xffff]);
    writeUint16(frame.bytes, position, value & 0xffff);
  },
  offsetField(frame, layout, _donor, random) {
    const position = random.pick(layout.uoffsets);
    if (position + 4 > frame.bytes.length) return;
    const current = readUint32(frame.bytes, position);
    const value = random.chance(0.5) ? current + random.pick([-8, -4, -1, 1, 4, 8]) : interestingUint32(random, frame.bytes.length, position);
    writeUint32(frame.bytes, position, value >>> 0);
  },
  vectorLength(frame, layout, _donor, random) {
    if (layout.vectors.length === 0) return;
    const vector = random.pick(layout.vectors);
    const fitting = Math.floor(Math.max(0, frame.bytes.length - vector.lengthPosition - 4) / vector.elementBytes);
    const value = random.pick([0, vector.count - 1, vector.count + 1, vector.count * 2, fitting, fitting + 1, 0x7fffffff, 0xffffffff]);
    writeUint32(frame.bytes, vector.lengthPosition, Math.max(0, value) >>> 0);
  },
  scalarField(frame, layout, _donor, random) {
    // Half the time a header field: there are few of them and the readers' guards start there.
    const site = random.pick(random.chance(0.5) ? layout.headerScalars : layout.scalars);
    const { bytes } = frame;
    switch (site.type) {
      case 'u8':
        // The union's type byte included: a frame of one kind read as another.
        if (site.position < bytes.length) bytes[site.position] = random.chance(0.5) ? random.below(9) : random.pick(INTERESTING_U8);
        break;
      case 'u16':
        writeUint16(bytes, site.position, random.pick(INTERESTING_U16));
        break;
      case 'u32':
        writeUint32(bytes, site.position, interestingUint32(random, bytes.length, site.position));
        break;
      case 'u64':
        if (site.position + 8 <= bytes.length) writeUint64(bytes, site.position, random.pick(INTERESTING_U64));
        break;
      case 'f64':
        writeFloat64(bytes, site.position, random.pick(INTERESTING_F64));
        break;
    }
  },
};

const blindNames = Object.keys(blindOperators);
const structureNames = Object.keys(structureOperators);

/**
 * Applies 1 to 8 mutations (mostly few, so some frames stay well-formed and reach deeper code) to
 * a copy of `seed`. Names the operators applied in `trace`, if given.
 */
export function mutate(seed: Uint8Array, layout: FrameLayout, donor: Uint8Array, random: Random, trace?: string[]): Uint8Array {
  const frame: Mutable = { bytes: seed.slice() };
  const roll = random.below(100);
  const mutations = roll < 45 ? 1 : roll < 75 ? 2 : roll < 92 ? 3 + random.below(2) : 5 + random.below(4);
  for (let mutation = 0; mutation < mutations; mutation++) {
    const structural = random.chance(0.5);
    const name = structural ? random.pick(structureNames) : random.pick(blindNames);
    (structural ? structureOperators : blindOperators)[name]!(frame, layout, donor, random);
    trace?.push(name);
  }
  return frame.bytes;
}

export function hexOf(bytes: Uint8Array): string {
  let hex = '';
  for (let index = 0; index < bytes.length; index++) hex += bytes[index]!.toString(16).padStart(2, '0');
  return hex;
}

export function bytesOfHex(hex: string): Uint8Array {
  const clean = hex.replace(/\s+/g, '');
  const bytes = new Uint8Array(clean.length >>> 1);
  for (let index = 0; index < bytes.length; index++) bytes[index] = Number.parseInt(clean.slice(index * 2, index * 2 + 2), 16);
  return bytes;
}
