/**
 * Which chain a key belongs to: a stable hash of its bytes modulo the chain count, fixed when the
 * cluster is first made (the count never changes, so keys never move between chains; chains move
 * between nodes instead). Stable means the same in every process, every version and every client:
 * MurmurHash3 under a fixed, public seed. That is not the store's keyed slot hash, and need not be:
 * a client choosing keys that all land in one chain loads that chain, which it could do anyway by
 * writing one key often.
 */
import { assert } from '../assert.js';
import { fmix32, murmur3x32 } from '../hash.js';

const ROUTING_SEED = 0x64616262; // "dabb"

/** The chain (0 .. chains - 1) of the key in `bytes[start, start + length)`. */
export function chainOf(bytes: Uint8Array, start: number, length: number, chains: number): number {
  assert(Number.isInteger(chains) && chains >= 1, 'chainOf: chains must be a positive integer');
  if (chains === 1) return 0;
  return murmur3x32(bytes, start, length, ROUTING_SEED) % chains;
}

/**
 * The chain of a string key whose characters are all ASCII (then its UTF-8 bytes are its char
 * codes), without encoding it: the same MurmurHash3 as chainOf() over those bytes. Returns -1 for a
 * key with any other character: the caller encodes it and calls chainOf(). Most keys are ASCII,
 * and encoding a short string costs more than hashing it.
 */
export function chainOfAscii(key: string, chains: number): number {
  if (chains === 1) return 0;
  const length = key.length;
  let hash = ROUTING_SEED | 0;
  let index = 0;
  for (const blocksEnd = length & ~3; index < blocksEnd; index += 4) {
    const c0 = key.charCodeAt(index);
    const c1 = key.charCodeAt(index + 1);
    const c2 = key.charCodeAt(index + 2);
    const c3 = key.charCodeAt(index + 3);
    if ((c0 | c1 | c2 | c3) > 0x7f) return -1;
    hash = murmur3Round(hash, c0 | (c1 << 8) | (c2 << 16) | (c3 << 24));
  }
  let block = 0;
  for (let shift = 0; index < length; index++, shift += 8) {
    const code = key.charCodeAt(index);
    if (code > 0x7f) return -1;
    block |= code << shift;
  }
  if ((length & 3) !== 0) hash ^= murmur3Scramble(block);
  return fmix32(hash ^ length) % chains;
}

/** One block of MurmurHash3_x86_32 (as in hash.ts murmur3x32). */
function murmur3Round(hash: number, block: number): number {
  let mixed = hash ^ murmur3Scramble(block);
  mixed = (mixed << 13) | (mixed >>> 19);
  return (Math.imul(mixed, 5) + 0xe6546b64) | 0;
}

function murmur3Scramble(block: number): number {
  let scrambled = Math.imul(block, 0xcc9e2d51);
  scrambled = (scrambled << 15) | (scrambled >>> 17);
  return Math.imul(scrambled, 0x1b873593);
}
