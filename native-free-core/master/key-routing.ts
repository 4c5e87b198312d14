/**
 * Which chain a key belongs to: a stable hash of its bytes modulo the chain count, fixed when the
 * cluster is first made (the count never changes, so keys never move between chains; chains move
 * between nodes instead). Stable means the same in every process, every version and every client:
 * MurmurHash3 under a fixed, public seed. That is not the store's keyed slot hash, and need not be:
 * a client choosing keys that all land in one chain loads that chain, which it could do anyway by
 * writing one key often.
 */
import { assert } from '../assert.js';
import { murmur3x32 } from '../hash.js';

const ROUTING_SEED = 0x64616262; // "dabb"

/** The chain (0 .. chains - 1) of the key in `bytes[start, start + length)`. */
export function chainOf(bytes: Uint8Array, start: number, length: number, chains: number): number {
  assert(Number.isInteger(chains) && chains >= 1, 'chainOf: chains must be a positive integer');
  if (chains === 1) return 0;
  return murmur3x32(bytes, start, length, ROUTING_SEED) % chains;
}
