/**
 * Small, pure hash functions over byte ranges, for the store's slot table and its digest.
 *
 * Two independent 32-bit families are provided so that a 64-bit digest can be built from one of
 * each: MurmurHash3 (x86, 32-bit; reads four bytes per step) and FNV-1a (one byte per step,
 * naturally streaming). Neither is safe where an adversary picks the input and the result decides
 * where it goes: their seeds are public, and MurmurHash3 has multicollisions whatever the seed. For
 * that there is HalfSipHash, a keyed pseudorandom function, used for the store's slot table. Every
 * function returns an unsigned 32-bit integer; callers that store hashes in an Int32Array convert
 * with `| 0` first so that comparisons against stored values agree.
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

/** HalfSipHash's initial state words v2 and v3 (v0 and v1 start at 0): "lyge" and "tedb" in ASCII. */
const HALF_SIP_HASH_V2_INITIAL = 0x6c796765;
const HALF_SIP_HASH_V3_INITIAL = 0x74656462;
/** XORed into v2 before the finalisation rounds when the output is one 32-bit word. */
const HALF_SIP_HASH_FINALISATION_MARK = 0xff;
const HALF_SIP_HASH_13_FINALISATION_ROUNDS = 3;

/*
 * HalfSipHash (Aumasson; github.com/veorq/SipHash) is SipHash on 32-bit words: a 64-bit key, four
 * words of state, and SipRound with rotations 5, 16, 8, 7, 13, 16. Each four-byte block of input,
 * read little-endian, is XORed into v3, stirred by the compression rounds and XORed into v0; the last
 * block holds the remaining zero to three bytes and, in its top byte, the length modulo 256. Then
 * 0xff goes into v2, the finalisation rounds run, and the output is v1 ^ v3.
 *
 * The round is written out wherever it runs rather than called: the state is four words, which a
 * helper could only hand back through an object or a shared array. For the same reason the fast
 * variant below is not the general one called with constant round counts: measured on Node 20,
 * loops over a round count cost about 10 ns more per 16-byte key (37 against 27 ns), because V8 does
 * not unroll them.
 */

/**
 * HalfSipHash-1-3 with 32-bit output of `bytes[start, start + length)` under the 64-bit key
 * (key0, key1): one compression round per block, three finalisation rounds. This is the Linux
 * kernel's `hsiphash` on 32-bit machines, made for hash tables: not a MAC, but without the key an
 * attacker cannot tell which inputs collide, so keys chosen by a client cannot be made to pile up in
 * one probe run. The key words are uint32 (an 8-byte key's bytes 0..3, little-endian, are key0).
 * Equal to `halfSipHash(..., 1, 3)`, and faster.
 */
export function halfSipHash13(bytes: Uint8Array, start: number, length: number, key0: number, key1: number): number {
  let v0 = key0 | 0;
  let v1 = key1 | 0;
  let v2 = HALF_SIP_HASH_V2_INITIAL ^ key0;
  let v3 = HALF_SIP_HASH_V3_INITIAL ^ key1;
  const blocksEnd = start + (length & ~3);
  let index = start;
  for (; index < blocksEnd; index += 4) {
    const block = wordLittleEndian(bytes, index);
    v3 ^= block;
    v0 = (v0 + v1) | 0;
    v1 = (v1 << 5) | (v1 >>> 27);
    v1 ^= v0;
    v0 = (v0 << 16) | (v0 >>> 16);
    v2 = (v2 + v3) | 0;
    v3 = (v3 << 8) | (v3 >>> 24);
    v3 ^= v2;
    v0 = (v0 + v3) | 0;
    v3 = (v3 << 7) | (v3 >>> 25);
    v3 ^= v0;
    v2 = (v2 + v1) | 0;
    v1 = (v1 << 13) | (v1 >>> 19);
    v1 ^= v2;
    v2 = (v2 << 16) | (v2 >>> 16);
    v0 ^= block;
  }
  const last = lastBlock(bytes, index, length);
  v3 ^= last;
  v0 = (v0 + v1) | 0;
  v1 = (v1 << 5) | (v1 >>> 27);
  v1 ^= v0;
  v0 = (v0 << 16) | (v0 >>> 16);
  v2 = (v2 + v3) | 0;
  v3 = (v3 << 8) | (v3 >>> 24);
  v3 ^= v2;
  v0 = (v0 + v3) | 0;
  v3 = (v3 << 7) | (v3 >>> 25);
  v3 ^= v0;
  v2 = (v2 + v1) | 0;
  v1 = (v1 << 13) | (v1 >>> 19);
  v1 ^= v2;
  v2 = (v2 << 16) | (v2 >>> 16);
  v0 ^= last;
  v2 ^= HALF_SIP_HASH_FINALISATION_MARK;
  for (let round = 0; round < HALF_SIP_HASH_13_FINALISATION_ROUNDS; round++) {
    v0 = (v0 + v1) | 0;
    v1 = (v1 << 5) | (v1 >>> 27);
    v1 ^= v0;
    v0 = (v0 << 16) | (v0 >>> 16);
    v2 = (v2 + v3) | 0;
    v3 = (v3 << 8) | (v3 >>> 24);
    v3 ^= v2;
    v0 = (v0 + v3) | 0;
    v3 = (v3 << 7) | (v3 >>> 25);
    v3 ^= v0;
    v2 = (v2 + v1) | 0;
    v1 = (v1 << 13) | (v1 >>> 19);
    v1 ^= v2;
    v2 = (v2 << 16) | (v2 >>> 16);
  }
  return (v1 ^ v3) >>> 0;
}

/**
 * HalfSipHash-c-d with 32-bit output, bit-for-bit equal to the reference `halfsiphash` (outlen 4)
 * built with cROUNDS = `compressionRounds` and dROUNDS = `finalisationRounds`: (2, 4) is the
 * reference's default. The general form, kept so the round can be checked against the reference
 * vectors (which are for 2-4) and `halfSipHash13` against it; slower than `halfSipHash13`.
 */
export function halfSipHash(
  bytes: Uint8Array,
  start: number,
  length: number,
  key0: number,
  key1: number,
  compressionRounds: number,
  finalisationRounds: number,
): number {
  let v0 = key0 | 0;
  let v1 = key1 | 0;
  let v2 = HALF_SIP_HASH_V2_INITIAL ^ key0;
  let v3 = HALF_SIP_HASH_V3_INITIAL ^ key1;
  // One loop over every block, the last one included, so the compression round is written once.
  const lastBlockNumber = length >>> 2;
  for (let blockNumber = 0; blockNumber <= lastBlockNumber; blockNumber++) {
    const index = start + blockNumber * 4;
    const block = blockNumber < lastBlockNumber ? wordLittleEndian(bytes, index) : lastBlock(bytes, index, length);
    v3 ^= block;
    for (let round = 0; round < compressionRounds; round++) {
      v0 = (v0 + v1) | 0;
      v1 = (v1 << 5) | (v1 >>> 27);
      v1 ^= v0;
      v0 = (v0 << 16) | (v0 >>> 16);
      v2 = (v2 + v3) | 0;
      v3 = (v3 << 8) | (v3 >>> 24);
      v3 ^= v2;
      v0 = (v0 + v3) | 0;
      v3 = (v3 << 7) | (v3 >>> 25);
      v3 ^= v0;
      v2 = (v2 + v1) | 0;
      v1 = (v1 << 13) | (v1 >>> 19);
      v1 ^= v2;
      v2 = (v2 << 16) | (v2 >>> 16);
    }
    v0 ^= block;
  }
  v2 ^= HALF_SIP_HASH_FINALISATION_MARK;
  for (let round = 0; round < finalisationRounds; round++) {
    v0 = (v0 + v1) | 0;
    v1 = (v1 << 5) | (v1 >>> 27);
    v1 ^= v0;
    v0 = (v0 << 16) | (v0 >>> 16);
    v2 = (v2 + v3) | 0;
    v3 = (v3 << 8) | (v3 >>> 24);
    v3 ^= v2;
    v0 = (v0 + v3) | 0;
    v3 = (v3 << 7) | (v3 >>> 25);
    v3 ^= v0;
    v2 = (v2 + v1) | 0;
    v1 = (v1 << 13) | (v1 >>> 19);
    v1 ^= v2;
    v2 = (v2 << 16) | (v2 >>> 16);
  }
  return (v1 ^ v3) >>> 0;
}

/** The four bytes at `index` as a little-endian word (an int32). */
function wordLittleEndian(bytes: Uint8Array, index: number): number {
  return bytes[index]! | (bytes[index + 1]! << 8) | (bytes[index + 2]! << 16) | (bytes[index + 3]! << 24);
}

/**
 * HalfSipHash's last block: the `length & 3` bytes left at `index`, little-endian, under the length
 * modulo 256 in the top byte (`<< 24` drops the rest), so inputs that differ only by trailing zero
 * bytes hash apart.
 */
function lastBlock(bytes: Uint8Array, index: number, length: number): number {
  let block = length << 24;
  const tailLength = length & 3;
  if (tailLength === 3) block |= bytes[index + 2]! << 16;
  if (tailLength >= 2) block |= bytes[index + 1]! << 8;
  if (tailLength >= 1) block |= bytes[index]!;
  return block;
}
