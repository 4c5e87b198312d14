/**
 * Small, pure hash functions over byte ranges, for the store's slot table and its digest.
 *
 * Two independent 32-bit families are provided so that a 64-bit digest can be built from one of
 * each: MurmurHash3 (x86, 32-bit; reads four bytes per step, so it is the fast one used on the hot
 * path) and FNV-1a (one byte per step, naturally streaming). Every function returns an unsigned
 * 32-bit integer; callers that store hashes in an Int32Array convert with `| 0` first so that
 * comparisons against stored values agree.
 *
 * None of these functions allocate. Ranges are not bounds-checked here (callers check them once at
 * their boundary); reading outside a Uint8Array yields `undefined`, which would silently hash as 0.
 */

/** FNV-1a 32-bit offset basis: the initial state for `fnv1a32`. */
export const FNV1A32_OFFSET_BASIS = 0x811c9dc5;
const FNV1A32_PRIME = 0x01000193;

/**
 * FNV-1a over `bytes[start, start + length)`, continuing from `state` (pass `FNV1A32_OFFSET_BASIS`
 * to start a new hash). Because the state is the hash, calls chain: hashing A then B from the result
 * equals hashing the concatenation A‖B. Its low bits mix weakly; pass the result through `fmix32`
 * before using it where avalanche matters.
 */
export function fnv1a32(bytes: Uint8Array, start: number, length: number, state: number): number {
  let hash = state | 0;
  const end = start + length;
  for (let index = start; index < end; index++) {
    hash = Math.imul(hash ^ bytes[index]!, FNV1A32_PRIME);
  }
  return hash >>> 0;
}

/** Continues an FNV-1a state with the four little-endian bytes of a 32-bit word. */
export function fnv1a32Word(state: number, word: number): number {
  let hash = state | 0;
  hash = Math.imul(hash ^ (word & 0xff), FNV1A32_PRIME);
  hash = Math.imul(hash ^ ((word >>> 8) & 0xff), FNV1A32_PRIME);
  hash = Math.imul(hash ^ ((word >>> 16) & 0xff), FNV1A32_PRIME);
  hash = Math.imul(hash ^ (word >>> 24), FNV1A32_PRIME);
  return hash >>> 0;
}

/** MurmurHash3's 32-bit finaliser: a bijection on 32-bit words with full avalanche. */
export function fmix32(value: number): number {
  let hash = value | 0;
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}

const MURMUR3_C1 = 0xcc9e2d51;
const MURMUR3_C2 = 0x1b873593;

/**
 * MurmurHash3_x86_32 of `bytes[start, start + length)` with `seed`, bit-for-bit equal to the
 * reference implementation (little-endian blocks). The length is mixed into the result, so chaining
 * (using one result as the next call's seed) keeps concatenations with different split points apart.
 */
export function murmur3x32(bytes: Uint8Array, start: number, length: number, seed: number): number {
  let hash = seed | 0;
  const blocksEnd = start + (length & ~3);
  let index = start;
  while (index < blocksEnd) {
    let block =
      bytes[index]! | (bytes[index + 1]! << 8) | (bytes[index + 2]! << 16) | (bytes[index + 3]! << 24);
    block = Math.imul(block, MURMUR3_C1);
    block = (block << 15) | (block >>> 17);
    block = Math.imul(block, MURMUR3_C2);
    hash ^= block;
    hash = (hash << 13) | (hash >>> 19);
    hash = (Math.imul(hash, 5) + 0xe6546b64) | 0;
    index += 4;
  }
  // The tail: one to three bytes that do not fill a block, mixed like a partial block.
  const tailLength = length & 3;
  if (tailLength !== 0) {
    let block = 0;
    if (tailLength === 3) block ^= bytes[index + 2]! << 16;
    if (tailLength >= 2) block ^= bytes[index + 1]! << 8;
    block ^= bytes[index]!;
    block = Math.imul(block, MURMUR3_C1);
    block = (block << 15) | (block >>> 17);
    block = Math.imul(block, MURMUR3_C2);
    hash ^= block;
  }
  hash ^= length;
  return fmix32(hash);
}
