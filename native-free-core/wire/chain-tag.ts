/**
 * One ring between two threads carries the frames of every chain those two threads share, so each
 * ring record starts with the chain it belongs to: a little-endian uint32 chain id, then four zero
 * bytes, so the frame after it keeps the record's 8-byte alignment (FlatBuffers reads in place).
 *
 *   record = [chain id: u32][0: u32][frame bytes ...]
 *
 * The frame itself is untouched: it is written once by its encoder and copied into the ring
 * behind its tag. A consumer dispatches on the tag and hands the frame to that chain's replica.
 */
import { copyBytes } from '../bytes.js';
import type { SpscRing } from '../ring.js';

export const CHAIN_TAG_BYTES = 8;

/**
 * Stages `frame` behind the tag of `chain` in `ring`; false if the ring lacks room now (nothing
 * staged). The caller publishes, as with SpscRing.tryWrite.
 */
export function tryWriteTagged(ring: SpscRing, chain: number, frame: Uint8Array): boolean {
  const offset = ring.tryReserve(CHAIN_TAG_BYTES + frame.length);
  if (offset < 0) return false;
  const bytes = ring.bytes;
  bytes[offset] = chain & 0xff;
  bytes[offset + 1] = (chain >>> 8) & 0xff;
  bytes[offset + 2] = (chain >>> 16) & 0xff;
  bytes[offset + 3] = chain >>> 24;
  bytes[offset + 4] = 0;
  bytes[offset + 5] = 0;
  bytes[offset + 6] = 0;
  bytes[offset + 7] = 0;
  // Word-wise into shared memory (bytes.ts): the frame stays 8-byte aligned behind its tag.
  copyBytes(frame, 0, bytes, offset + CHAIN_TAG_BYTES, frame.length);
  return true;
}

/** Whether a frame of `frameLength` bytes fits `ring` behind its tag now (see SpscRing.canWrite). */
export function canWriteTagged(ring: SpscRing, frameLength: number): boolean {
  return ring.canWrite(CHAIN_TAG_BYTES + frameLength);
}

/** The chain a record read at `offset` of `bytes` belongs to. */
export function chainTagAt(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24)) >>> 0;
}

/** The frame of a record read at `offset` with `recordLength` bytes (it must hold a tag). */
export function taggedFrame(bytes: Uint8Array, offset: number, recordLength: number): Uint8Array {
  return bytes.subarray(offset + CHAIN_TAG_BYTES, offset + recordLength);
}
