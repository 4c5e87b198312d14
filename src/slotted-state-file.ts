/**
 * A small state file that can be saved again when the disk is full: two fixed-size slots written in
 * turn, in place, each with its save count, length and CRC-32, so that a crash in the middle of a
 * save leaves the other slot whole (bbolt's two meta pages do the same). Its bytes are allocated
 * once, when it is made; a save overwrites them and never needs more room.
 *
 *   slot: magic u32 | save count u32 | length u32 | crc32(save count, length, text) u32 | text | zeros
 */
import { closeSync, fdatasyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { DabbaError, ErrorCode } from '../native-free-core/errors.js';
import { nativeCrc32 } from '../workers/native-crc32.js';
import { writeFileDurably } from '../workers/durable-files.js';

const MAGIC = 0x44_42_53_54; // "DBST"
const HEADER_BYTES = 16;
const PAGE_BYTES = 4096;

export class SlottedStateFile {
  private constructor(
    readonly path: string,
    private readonly slotBytes: number,
    /** How many saves the file holds; the newest is in slot `saves % 2`. */
    private saves: number,
  ) {}

  /** The slot size for texts of at most `textBytesMax` bytes. */
  static slotBytesFor(textBytesMax: number): number {
    return Math.ceil((HEADER_BYTES + textBytesMax) / PAGE_BYTES) * PAGE_BYTES;
  }

  /** Makes the file at `path` (replacing any), its slots sized for `textBytesMax`, holding `text`. */
  static create(path: string, textBytesMax: number, text: string): SlottedStateFile {
    const slotBytes = SlottedStateFile.slotBytesFor(textBytesMax);
    const bytes = Buffer.alloc(2 * slotBytes);
    const saves = 1;
    writeSlot(bytes.subarray(0, slotBytes), saves, encodeText(path, text, slotBytes));
    writeFileDurably(path, bytes);
    return new SlottedStateFile(path, slotBytes, saves);
  }

  /** Opens the file at `path`, with the text of its newest whole slot. */
  static open(path: string): { file: SlottedStateFile; text: string } {
    const bytes = readFileSync(path);
    const slotBytes = bytes.length / 2;
    if (bytes.length === 0 || slotBytes % PAGE_BYTES !== 0) throw corrupt(path, `its size, ${bytes.length} bytes, is not two slots`);
    const slots = [readSlot(bytes.subarray(0, slotBytes)), readSlot(bytes.subarray(slotBytes))];
    const newest = slots.reduce((best, slot) => (slot !== null && (best === null || slot.saves > best.saves) ? slot : best), null);
    if (newest === null) throw corrupt(path, 'neither of its slots is whole');
    return { file: new SlottedStateFile(path, slotBytes, newest.saves), text: newest.text };
  }

  /** Saves `text` durably over the older slot; throws (saving nothing) if it does not fit. */
  save(text: string): void {
    const saves = this.saves + 1;
    const slot = Buffer.alloc(this.slotBytes);
    const used = writeSlot(slot, saves, encodeText(this.path, text, this.slotBytes));
    const fd = openSync(this.path, 'r+');
    try {
      const position = (saves % 2) * this.slotBytes;
      for (let written = 0; written < used; ) written += writeSync(fd, slot, written, used - written, position + written);
      fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
    this.saves = saves;
  }
}

function encodeText(path: string, text: string, slotBytes: number): Buffer {
  const bytes = Buffer.from(text);
  if (HEADER_BYTES + bytes.length > slotBytes) throw new DabbaError(ErrorCode.outOfRange, `${path}: a state of ${bytes.length} bytes does not fit its ${slotBytes}-byte slots`);
  return bytes;
}

/** Writes a slot's header and text into `slot`; returns the bytes used. */
function writeSlot(slot: Buffer, saves: number, text: Buffer): number {
  slot.writeUInt32LE(MAGIC, 0);
  slot.writeUInt32LE(saves, 4);
  slot.writeUInt32LE(text.length, 8);
  text.copy(slot, HEADER_BYTES);
  slot.writeUInt32LE(slotCrc(slot, text.length), 12);
  return HEADER_BYTES + text.length;
}

function readSlot(slot: Buffer): { saves: number; text: string } | null {
  if (slot.readUInt32LE(0) !== MAGIC) return null;
  const length = slot.readUInt32LE(8);
  if (HEADER_BYTES + length > slot.length) return null;
  if (slotCrc(slot, length) !== slot.readUInt32LE(12)) return null;
  return { saves: slot.readUInt32LE(4), text: slot.toString('utf8', HEADER_BYTES, HEADER_BYTES + length) };
}

/** The CRC-32 of a slot's save count, length and text. */
function slotCrc(slot: Buffer, length: number): number {
  return nativeCrc32(slot, HEADER_BYTES, HEADER_BYTES + length, nativeCrc32(slot, 4, 12, 0));
}

function corrupt(path: string, why: string): DabbaError {
  return new DabbaError(ErrorCode.corrupt, `${path} is not a dabba state file: ${why}`);
}
