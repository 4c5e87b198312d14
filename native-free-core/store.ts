/**
 * The replicated key-value state machine's store: byte keys to byte values with a version each.
 *
 * Every replica applies every write here, so `put` has a budget of roughly 100 ns and must not
 * allocate. Keys and values arrive as byte ranges inside a received batch buffer, so the store
 * never converts them to strings or slices them; it hashes and compares the bytes in place and
 * copies them into its own heap.
 *
 * Layout (chosen so that a put or find in a large store touches few cache lines: one slot, one
 * entry record, the key's bytes and, usually on the same line, the value's):
 * - A slot table (open addressing, linear probing, capacity a power of two, load at most 1/2) maps a
 *   key's hash to an entry number. Keys come from clients, so the hash is keyed (HalfSipHash-1-3
 *   under `StoreOptions.hashKey`): with a fixed public hash, an attacker can compute keys that all
 *   land in one probe run and make every insert walk it (MurmurHash3 has such multicollisions
 *   whatever its seed; 32k crafted keys made inserts 166x slower). Each slot is a pair of int32
 *   words, [hash, entry], so a probe run is one sequential read. Hash 0 marks an empty slot, so
 *   stored hashes are forced non-zero.
 *   Deletion shifts the rest of the probe run backward: there are no tombstones, and every lookup
 *   stops at the first empty slot.
 * - Dense entry records, numbered `0 .. size - 1`, of eight 32-bit words each (32 bytes, half a cache
 *   line): the hash, the key's and the value's place in the heap, the value's capacity and the
 *   version (a float64 over the last two words). Deleting an entry moves the last record into the
 *   hole, so records stay dense. There is room for exactly half the slot capacity, the most entries
 *   the load limit allows.
 * - The heap is one Uint8Array into which key and value bytes are bump-allocated, a key immediately
 *   followed by its value. A value no longer than its capacity is overwritten in place; a longer one
 *   is placed at the end and its old bytes become garbage. When garbage plus unused value capacity
 *   (together: "waste") exceeds both half of the used heap and a minimum, the live bytes are copied
 *   into a fresh, right-sized heap, so memory stays proportional to the live data.
 *
 * Growth, shrinking and compaction allocate; each is paid for by at least as many earlier
 * operations (or bytes written) as it copies, so the cost per write is constant when amortised.
 * Entry handles and heap views are valid only until the next mutation.
 *
 * Layout is deterministic given the hash key and the sequence of operations, but `digest()` depends
 * on neither: two stores with equal contents have equal digests whatever their keys and history.
 */
import { assert } from './assert.js';
import { copyBytes as copyBulk } from './bytes.js';
import { DabbaError, ErrorCode } from './errors.js';
import { FNV1A32_OFFSET_BASIS, fmix32, fnv1a32, halfSipHash13, murmur3x32 } from './hash.js';

export interface StoreOptions {
  /** Keys the store can hold before its slot table first grows. Default 1024. */
  initialKeys?: number;
  /** Heap capacity in bytes before it first grows, rounded up to a power of two. Default 64 KiB. */
  initialHeapBytes?: number;
  /**
   * The secret 64-bit key of the slot hash, as two uint32 words. Production callers must pass a
   * random key, one per store (the runtime draws 8 bytes from node:crypto): without it, clients
   * that learn the default can flood one probe run. The default is a fixed, public key, so that the
   * core stays deterministic for the simulator and tests. It shapes only the slot table: contents,
   * entry order and `digest()` do not depend on it.
   */
  hashKey?: readonly [number, number];
}

/** What `checkInvariants()` found, for tests that want to know which cases they reached. */
export interface StoreShape {
  slotCapacity: number;
  /** The longest distance, in slots, from a key's home slot to the slot it is in. */
  probeDistanceMax: number;
  /** Whether some probe run wraps from the last slot to the first. */
  wrappedRun: boolean;
  /** Entries whose full 32-bit slot hash equals another entry's (distinct keys, equal hashes). */
  hashCollisions: number;
  heapUsedBytes: number;
  /** Garbage plus unused value capacity: what a compaction would reclaim. */
  wasteBytes: number;
}

/** Most keys a store holds (the slot table's capacity limit is twice this). */
export const STORE_KEYS_LIMIT = 2 ** 29;
/** Largest heap, in bytes; live keys plus values must fit in it. Offsets are kept as uint32. */
export const STORE_HEAP_BYTES_LIMIT = 2 ** 31;

const INITIAL_KEYS_DEFAULT = 1024;
const INITIAL_HEAP_BYTES_DEFAULT = 64 * 1024;
const SLOT_CAPACITY_MIN = 16;
const SLOT_CAPACITY_LIMIT = STORE_KEYS_LIMIT * 2;
const HEAP_BYTES_MIN = 64;
/** Waste below this is never worth a compaction, however small the store. */
const COMPACTION_WASTE_BYTES_MIN = 64 * 1024;
/**
 * Byte ranges shorter than this are copied with a loop unrolled by eight, longer ones with
 * `set(subarray)`. Measured on Node 20 (x64, 2-core AMD EPYC VM): the loop costs ~0.68 ns per byte
 * from any source; `set` costs ~37 ns flat from a plain ArrayBuffer, and ~40 ns + 0.3 ns per byte
 * from a SharedArrayBuffer (copies out of shared memory take a slower path). The crossover is near
 * 56 bytes for plain sources and near 110 for shared ones. Replicas apply batches straight out of
 * SharedArrayBuffer rings, so the shared crossover is the one that matters; it also keeps `put`
 * allocation-free for values under this size, since `subarray` allocates a view.
 */
const COPY_LOOP_BYTES_MAX = 112;
/**
 * The slot hash key when none is given: fixed and public, so it protects nothing (see
 * StoreOptions.hashKey). The digest's seeds are fixed on purpose: they must match on all replicas.
 */
export const STORE_HASH_KEY_DEFAULT: readonly [number, number] = Object.freeze([0x9747b28c, 0x6a09e667] as const);
const DIGEST_MURMUR_SEED = 0x2545f491;
const UINT32_MAX = 0xffffffff;
const TWO_TO_THE_32 = 2 ** 32;

/** A slot is two int32 words: the key's hash (0 = empty) and its entry number (-1 when empty). */
const SLOT_WORDS = 2;
const SLOT_HASH = 0;
const SLOT_ENTRY = 1;
const ENTRY_NONE = -1;

/** An entry record is eight 32-bit words; the word indices of its fields follow. */
const RECORD_WORDS = 8;
const RECORD_BYTES = RECORD_WORDS * 4;
/** Read through the Int32Array view, to compare with slot hashes. */
const RECORD_HASH = 0;
const RECORD_KEY_OFFSET = 1;
const RECORD_KEY_LENGTH = 2;
const RECORD_VALUE_OFFSET = 3;
const RECORD_VALUE_LENGTH = 4;
const RECORD_VALUE_CAPACITY = 5;
/** The version is the float64 over words 6 and 7: element `entry * 4 + 3` of the Float64Array view. */
const RECORD_DOUBLES = RECORD_WORDS / 2;
const RECORD_VERSION_DOUBLE = 3;

export class Store {
  private readonly slotCapacityInitial: number;
  private readonly heapBytesInitial: number;
  /** The slot hash key's two words (StoreOptions.hashKey), kept apart so reads need no array. */
  private readonly hashKey0: number;
  private readonly hashKey1: number;

  // The slot table: `slotMask + 1` slots of SLOT_WORDS int32 words.
  private slotMask: number;
  private slots: Int32Array;

  // Entry records: three views over one ArrayBuffer of (slotMask + 1) / 2 records.
  private entryCount = 0;
  private records: Uint32Array;
  private recordHashes: Int32Array;
  private recordVersions: Float64Array;

  // The heap. Invariant: heapUsedBytes === keyBytesTotal + valueCapacityBytesTotal + garbageBytes.
  private heapStorage: Uint8Array;
  private heapUsedBytes = 0;
  private garbageBytes = 0;
  private keyBytesTotal = 0;
  private valueBytesTotal = 0;
  private valueCapacityBytesTotal = 0;

  /** True while `forEach` runs: its views would be invalidated by a mutation, so mutations assert. */
  private visiting = false;
  /** Scans in progress (usually none): a delete that renumbers an entry tells them. */
  private readonly openScans: StoreScan[] = [];
  /** Reused by `digest()` to hash the lengths and version of an entry as bytes. */
  private readonly digestScratch = new Uint8Array(16);

  constructor(options?: StoreOptions) {
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      throw new DabbaError(ErrorCode.invalidArgument, 'Store options must be an object');
    }
    const initialKeys = optionCount('initialKeys', options?.initialKeys, INITIAL_KEYS_DEFAULT, STORE_KEYS_LIMIT);
    const initialHeapBytes = optionCount(
      'initialHeapBytes',
      options?.initialHeapBytes,
      INITIAL_HEAP_BYTES_DEFAULT,
      STORE_HEAP_BYTES_LIMIT,
    );
    [this.hashKey0, this.hashKey1] = optionHashKey(options?.hashKey);
    this.slotCapacityInitial = Math.max(SLOT_CAPACITY_MIN, powerOfTwoAtLeast(initialKeys * 2));
    this.heapBytesInitial = Math.max(HEAP_BYTES_MIN, powerOfTwoAtLeast(initialHeapBytes));
    assert(this.slotCapacityInitial <= SLOT_CAPACITY_LIMIT, 'Store: initial slot capacity over its limit');
    assert(this.heapBytesInitial <= STORE_HEAP_BYTES_LIMIT, 'Store: initial heap over its limit');

    this.slotMask = this.slotCapacityInitial - 1;
    this.slots = emptySlots(this.slotCapacityInitial);
    const recordBuffer = new ArrayBuffer((this.slotCapacityInitial >>> 1) * RECORD_BYTES);
    this.records = new Uint32Array(recordBuffer);
    this.recordHashes = new Int32Array(recordBuffer);
    this.recordVersions = new Float64Array(recordBuffer);
    this.heapStorage = new Uint8Array(this.heapBytesInitial);
  }

  /** Live keys. */
  get size(): number {
    return this.entryCount;
  }

  /** The heap's capacity in bytes (for stats; includes free space, garbage and value slack). */
  get heapBytes(): number {
    return this.heapStorage.length;
  }

  /** Bytes of live keys plus live values. */
  get liveBytes(): number {
    return this.keyBytesTotal + this.valueBytesTotal;
  }

  /**
   * The heap: with `valueOffset`/`valueLength` it locates a found value without copying. The object
   * changes when the heap grows or is compacted, so re-read it after every mutation.
   */
  get heap(): Uint8Array {
    return this.heapStorage;
  }

  /**
   * Inserts or overwrites key -> value with `version`. Copies the bytes and never keeps a reference
   * to either source. A source may be `store.heap` itself (the copy handles overlap), but must not be
   * another view over the heap's buffer. Throws DABBA_ERR_OUT_OF_RANGE, leaving the contents
   * unchanged, if the store would exceed STORE_KEYS_LIMIT or STORE_HEAP_BYTES_LIMIT.
   */
  put(
    keySource: Uint8Array,
    keyStart: number,
    keyLength: number,
    valueSource: Uint8Array,
    valueStart: number,
    valueLength: number,
    version: number,
  ): void {
    // Constant messages only: a template literal here would allocate on every call.
    assert(!this.visiting, 'Store.put: called from inside forEach');
    assert(isRange(keySource, keyStart, keyLength), 'Store.put: key range outside its source');
    assert(isRange(valueSource, valueStart, valueLength), 'Store.put: value range outside its source');
    assert(Number.isSafeInteger(version) && version >= 0, 'Store.put: version is not a safe integer >= 0');

    const hash = this.slotHash(keySource, keyStart, keyLength);
    const slot = this.findSlot(hash, keySource, keyStart, keyLength);
    if (slot >= 0) {
      const entry = this.slots[slot * SLOT_WORDS + SLOT_ENTRY]!;
      this.overwriteValue(entry, valueSource, valueStart, valueLength);
      this.recordVersions[entry * RECORD_DOUBLES + RECORD_VERSION_DOUBLE] = version;
    } else {
      this.insert(-1 - slot, hash, keySource, keyStart, keyLength, valueSource, valueStart, valueLength, version);
    }
    this.compactIfWasteful();
  }

  /** Removes key; returns whether it existed. */
  delete(keySource: Uint8Array, keyStart: number, keyLength: number): boolean {
    assert(!this.visiting, 'Store.delete: called from inside forEach');
    assert(isRange(keySource, keyStart, keyLength), 'Store.delete: key range outside its source');

    const hash = this.slotHash(keySource, keyStart, keyLength);
    const slot = this.findSlot(hash, keySource, keyStart, keyLength);
    if (slot < 0) return false;

    const entry = this.slots[slot * SLOT_WORDS + SLOT_ENTRY]!;
    this.removeSlot(slot);

    const records = this.records;
    const record = entry * RECORD_WORDS;
    const keyBytes = records[record + RECORD_KEY_LENGTH]!;
    const valueCapacity = records[record + RECORD_VALUE_CAPACITY]!;
    this.garbageBytes += keyBytes + valueCapacity;
    this.keyBytesTotal -= keyBytes;
    this.valueBytesTotal -= records[record + RECORD_VALUE_LENGTH]!;
    this.valueCapacityBytesTotal -= valueCapacity;

    // Keep the records dense: move the last record into the hole and repoint its slot.
    const last = this.entryCount - 1;
    if (entry !== last) {
      records.copyWithin(record, last * RECORD_WORDS, (last + 1) * RECORD_WORDS);
      this.slots[this.slotOfEntry(last) * SLOT_WORDS + SLOT_ENTRY] = entry;
      for (let index = 0; index < this.openScans.length; index++) this.openScans[index]!.entryMoved(last, entry);
    }
    this.entryCount = last;

    // Shrink at 1/8 load to 1/4 load, so that growing back or shrinking again takes as many
    // operations as the resize copies.
    const slotCapacity = this.slotMask + 1;
    if (slotCapacity > this.slotCapacityInitial && this.entryCount * 8 <= slotCapacity) {
      this.resizeSlots(slotCapacity >>> 1);
    }
    this.compactIfWasteful();
    return true;
  }

  /** Entry handle for key, or -1. A handle is valid until the next mutation. */
  find(keySource: Uint8Array, keyStart: number, keyLength: number): number {
    assert(isRange(keySource, keyStart, keyLength), 'Store.find: key range outside its source');
    const slot = this.findSlot(this.slotHash(keySource, keyStart, keyLength), keySource, keyStart, keyLength);
    return slot < 0 ? -1 : this.slots[slot * SLOT_WORDS + SLOT_ENTRY]!;
  }

  valueOffset(handle: number): number {
    assert(this.isHandle(handle), 'Store.valueOffset: invalid handle');
    return this.records[handle * RECORD_WORDS + RECORD_VALUE_OFFSET]!;
  }

  valueLength(handle: number): number {
    assert(this.isHandle(handle), 'Store.valueLength: invalid handle');
    return this.records[handle * RECORD_WORDS + RECORD_VALUE_LENGTH]!;
  }

  version(handle: number): number {
    assert(this.isHandle(handle), 'Store.version: invalid handle');
    return this.recordVersions[handle * RECORD_DOUBLES + RECORD_VERSION_DOUBLE]!;
  }

  /** Copies the value of a handle into a new Uint8Array (for callers that keep it). */
  valueCopy(handle: number): Uint8Array {
    assert(this.isHandle(handle), 'Store.valueCopy: invalid handle');
    const offset = this.records[handle * RECORD_WORDS + RECORD_VALUE_OFFSET]!;
    return this.heapStorage.slice(offset, offset + this.records[handle * RECORD_WORDS + RECORD_VALUE_LENGTH]!);
  }

  /**
   * Order-independent 64-bit digest of (key, value, version) of every entry, as 16 lowercase hex
   * characters: the sum modulo 2^64 of one 64-bit hash per entry, whose high half is FNV-1a and low
   * half MurmurHash3 (two independent functions) over the same injective encoding of the entry:
   * key length, value length and version as little-endian words, then key bytes, then value bytes.
   * A sum does not depend on order, and one changed entry changes one term. The empty store's digest
   * is "0000000000000000". Not a cryptographic commitment: it detects divergence, not tampering.
   */
  digest(): string {
    const heap = this.heapStorage;
    const records = this.records;
    const scratch = this.digestScratch;
    let sumLow = 0;
    let sumHigh = 0;
    for (let entry = 0; entry < this.entryCount; entry++) {
      const record = entry * RECORD_WORDS;
      const keyOffset = records[record + RECORD_KEY_OFFSET]!;
      const keyLength = records[record + RECORD_KEY_LENGTH]!;
      const valueOffset = records[record + RECORD_VALUE_OFFSET]!;
      const valueLength = records[record + RECORD_VALUE_LENGTH]!;
      const version = this.recordVersions[entry * RECORD_DOUBLES + RECORD_VERSION_DOUBLE]!;
      writeWord(scratch, 0, keyLength);
      writeWord(scratch, 4, valueLength);
      writeWord(scratch, 8, version >>> 0);
      writeWord(scratch, 12, Math.floor(version / TWO_TO_THE_32));

      let low = murmur3x32(scratch, 0, 16, DIGEST_MURMUR_SEED);
      low = murmur3x32(heap, keyOffset, keyLength, low);
      low = murmur3x32(heap, valueOffset, valueLength, low);

      let high = fnv1a32(scratch, 0, 16, FNV1A32_OFFSET_BASIS);
      high = fnv1a32(heap, keyOffset, keyLength, high);
      high = fnv1a32(heap, valueOffset, valueLength, high);
      high = fmix32(high);

      sumLow += low;
      let carry = 0;
      if (sumLow >= TWO_TO_THE_32) {
        sumLow -= TWO_TO_THE_32;
        carry = 1;
      }
      sumHigh = (sumHigh + high + carry) % TWO_TO_THE_32;
    }
    return hex32(sumHigh) + hex32(sumLow);
  }

  /**
   * Visits every entry in entry order (deterministic for a given history, but not sorted). The views
   * point into the heap and are valid only during the callback; `visit` must not mutate the store.
   */
  forEach(visit: (key: Uint8Array, value: Uint8Array, version: number) => void): void {
    const visitingBefore = this.visiting;
    this.visiting = true;
    try {
      const heap = this.heapStorage;
      const records = this.records;
      const count = this.entryCount;
      for (let entry = 0; entry < count; entry++) {
        const record = entry * RECORD_WORDS;
        const keyOffset = records[record + RECORD_KEY_OFFSET]!;
        const valueOffset = records[record + RECORD_VALUE_OFFSET]!;
        visit(
          heap.subarray(keyOffset, keyOffset + records[record + RECORD_KEY_LENGTH]!),
          heap.subarray(valueOffset, valueOffset + records[record + RECORD_VALUE_LENGTH]!),
          this.recordVersions[entry * RECORD_DOUBLES + RECORD_VERSION_DOUBLE]!,
        );
      }
      assert(this.entryCount === count && this.heapStorage === heap, 'Store.forEach: store mutated during visit');
    } finally {
      this.visiting = visitingBefore;
    }
  }

  /**
   * Starts a scan that visits, a few at a time, every entry present now that is still present when
   * the scan reaches it, while the store goes on taking writes. A value is read as it is when
   * visited, so a scan is "fuzzy": replaying every write made since the scan began, in order, over
   * what it visited yields the store's exact state. Entries created after the start may be visited
   * too; an entry may be visited twice. Close it when done (a store keeps its open scans informed).
   */
  scan(): StoreScan {
    const scan = new StoreScan(this, this.entryCount);
    this.openScans.push(scan);
    return scan;
  }

  /** Called by StoreScan.close(). */
  closeScan(scan: StoreScan): void {
    const index = this.openScans.indexOf(scan);
    if (index >= 0) this.openScans.splice(index, 1);
  }

  keyOffset(handle: number): number {
    assert(this.isHandle(handle), 'Store.keyOffset: invalid handle');
    return this.records[handle * RECORD_WORDS + RECORD_KEY_OFFSET]!;
  }

  keyLength(handle: number): number {
    assert(this.isHandle(handle), 'Store.keyLength: invalid handle');
    return this.records[handle * RECORD_WORDS + RECORD_KEY_LENGTH]!;
  }

  /**
   * Checks every structural invariant and throws an AssertionError naming the first that fails, then
   * describes the table's shape so tests can tell which cases they exercised. Costs
   * O(capacity + size log size) and allocates: for tests and debugging, not for the hot path.
   */
  checkInvariants(): StoreShape {
    this.checkTableSizes();
    const slots = this.checkSlots();
    const hashes = this.checkEntries(slots.slotOfEntry);
    hashes.sort((a, b) => a - b);
    let hashCollisions = 0;
    for (let index = 1; index < hashes.length; index++) {
      if (hashes[index] === hashes[index - 1]) hashCollisions++;
    }
    return {
      slotCapacity: this.slotMask + 1,
      probeDistanceMax: slots.probeDistanceMax,
      wrappedRun: slots.wrappedRun,
      hashCollisions,
      heapUsedBytes: this.heapUsedBytes,
      wasteBytes: this.wasteBytes(),
    };
  }

  /** The slot table and the records are sized for each other and for the entries they hold. */
  private checkTableSizes(): void {
    const slotCapacity = this.slotMask + 1;
    const count = this.entryCount;
    assert(isPowerOfTwo(slotCapacity), 'slot capacity is not a power of two');
    assert(
      slotCapacity >= this.slotCapacityInitial && slotCapacity <= SLOT_CAPACITY_LIMIT,
      'slot capacity out of bounds',
    );
    assert(this.slots.length === slotCapacity * SLOT_WORDS, 'slot array length');
    const entryCapacity = slotCapacity >>> 1;
    assert(this.records.length === entryCapacity * RECORD_WORDS, 'records are not sized for half the slot capacity');
    assert(
      this.recordHashes.buffer === this.records.buffer && this.recordVersions.buffer === this.records.buffer,
      'record views over different buffers',
    );
    assert(count >= 0 && count <= entryCapacity, `size ${count} over the load limit of ${entryCapacity}`);
    assert(
      slotCapacity === this.slotCapacityInitial || count * 8 > slotCapacity,
      `slot capacity ${slotCapacity} not shrunk for ${count} entries`,
    );
  }

  /**
   * Slots: occupied ones point at distinct live entries with matching hashes, are reachable from
   * their home slot without crossing an empty slot, and there are exactly `size` of them.
   */
  private checkSlots(): { slotOfEntry: Int32Array; probeDistanceMax: number; wrappedRun: boolean } {
    const slotCapacity = this.slotMask + 1;
    const mask = this.slotMask;
    const count = this.entryCount;
    const slots = this.slots;
    const slotOfEntry = new Int32Array(count).fill(-1);
    let occupied = 0;
    let probeDistanceMax = 0;
    let wrappedRun = false;
    for (let slot = 0; slot < slotCapacity; slot++) {
      const hash = slots[slot * SLOT_WORDS + SLOT_HASH]!;
      const entry = slots[slot * SLOT_WORDS + SLOT_ENTRY]!;
      if (hash === 0) {
        assert(entry === ENTRY_NONE, `empty slot ${slot} names entry ${entry}`);
        continue;
      }
      occupied++;
      assert(entry >= 0 && entry < count, `slot ${slot} names entry ${entry} outside 0..${count - 1}`);
      assert(slotOfEntry[entry] === -1, `entry ${entry} is in two slots`);
      slotOfEntry[entry] = slot;
      assert(
        this.recordHashes[entry * RECORD_WORDS + RECORD_HASH] === hash,
        `slot ${slot} hash differs from entry ${entry}`,
      );
      for (let between = hash & mask; between !== slot; between = (between + 1) & mask) {
        assert(
          slots[between * SLOT_WORDS + SLOT_HASH] !== 0,
          `entry ${entry} in slot ${slot} unreachable: slot ${between} is empty`,
        );
      }
      probeDistanceMax = Math.max(probeDistanceMax, (slot - (hash & mask)) & mask);
      if (slot < (hash & mask)) wrappedRun = true;
    }
    assert(occupied === count, `${occupied} occupied slots for ${count} entries`);
    return { slotOfEntry, probeDistanceMax, wrappedRun };
  }

  /**
   * Entries: the stored hash is the key's hash, the key finds its own entry (so no two entries
   * have equal keys), every range lies inside the used heap without overlapping another, and the
   * byte totals match. Returns the entries' hashes.
   */
  private checkEntries(slotOfEntry: Int32Array): number[] {
    const count = this.entryCount;
    const records = this.records;
    const heap = this.heapStorage;
    const used = this.heapUsedBytes;
    assert(used <= heap.length && heap.length <= STORE_HEAP_BYTES_LIMIT, 'heap used beyond its capacity');
    assert(isPowerOfTwo(heap.length) && heap.length >= HEAP_BYTES_MIN, 'heap capacity is not a power of two');
    let keyBytes = 0;
    let valueBytes = 0;
    let valueCapacityBytes = 0;
    const ranges: Array<[number, number]> = [];
    const hashes: number[] = [];
    for (let entry = 0; entry < count; entry++) {
      const record = entry * RECORD_WORDS;
      const keyOffset = records[record + RECORD_KEY_OFFSET]!;
      const keyLength = records[record + RECORD_KEY_LENGTH]!;
      const valueOffset = records[record + RECORD_VALUE_OFFSET]!;
      const valueLength = records[record + RECORD_VALUE_LENGTH]!;
      const valueCapacity = records[record + RECORD_VALUE_CAPACITY]!;
      const hash = this.recordHashes[record + RECORD_HASH]!;
      assert(slotOfEntry[entry]! >= 0, `entry ${entry} is in no slot`);
      assert(keyOffset + keyLength <= used, `entry ${entry} key beyond the used heap`);
      assert(valueLength <= valueCapacity, `entry ${entry} value longer than its capacity`);
      assert(valueOffset + valueCapacity <= used, `entry ${entry} value beyond the used heap`);
      assert(this.slotHash(heap, keyOffset, keyLength) === hash, `entry ${entry} hash is stale`);
      assert(this.find(heap, keyOffset, keyLength) === entry, `entry ${entry} key finds another entry`);
      const version = this.recordVersions[entry * RECORD_DOUBLES + RECORD_VERSION_DOUBLE]!;
      assert(Number.isSafeInteger(version) && version >= 0, `entry ${entry} version ${version} invalid`);
      keyBytes += keyLength;
      valueBytes += valueLength;
      valueCapacityBytes += valueCapacity;
      if (keyLength > 0) ranges.push([keyOffset, keyOffset + keyLength]);
      if (valueCapacity > 0) ranges.push([valueOffset, valueOffset + valueCapacity]);
      hashes.push(hash);
    }
    assert(keyBytes === this.keyBytesTotal, `key bytes ${keyBytes} != accounted ${this.keyBytesTotal}`);
    assert(valueBytes === this.valueBytesTotal, `value bytes ${valueBytes} != accounted ${this.valueBytesTotal}`);
    assert(
      valueCapacityBytes === this.valueCapacityBytesTotal,
      `value capacity ${valueCapacityBytes} != accounted ${this.valueCapacityBytesTotal}`,
    );
    assert(this.garbageBytes >= 0, 'garbage is negative');
    assert(
      used === keyBytes + valueCapacityBytes + this.garbageBytes,
      `heap used ${used} != keys ${keyBytes} + value capacity ${valueCapacityBytes} + garbage ${this.garbageBytes}`,
    );
    ranges.sort((a, b) => a[0] - b[0]);
    for (let index = 1; index < ranges.length; index++) {
      assert(ranges[index - 1]![1] <= ranges[index]![0], `heap ranges overlap at ${ranges[index]![0]}`);
    }
    // Compaction runs after every mutation that adds waste, so waste is always within its bound.
    assert(!this.isWasteful(), 'waste over its bound after a mutation');
    return hashes;
  }

  // --- Internals -------------------------------------------------------------------------------

  /** The slot-table hash of a key, as stored in an Int32Array, never 0 (0 marks an empty slot). */
  private slotHash(source: Uint8Array, start: number, length: number): number {
    const hash = halfSipHash13(source, start, length, this.hashKey0, this.hashKey1) | 0;
    return hash === 0 ? 1 : hash;
  }

  private isHandle(handle: number): boolean {
    return Number.isInteger(handle) && handle >= 0 && handle < this.entryCount;
  }

  /** The slot holding the key, or `-1 - slot` for the empty slot where it would be inserted. */
  private findSlot(hash: number, keySource: Uint8Array, keyStart: number, keyLength: number): number {
    const mask = this.slotMask;
    const slots = this.slots;
    let slot = hash & mask;
    // Terminates: the load limit keeps at least half the slots empty.
    for (;;) {
      const stored = slots[slot * SLOT_WORDS + SLOT_HASH]!;
      if (stored === 0) return -1 - slot;
      if (stored === hash && this.keyEquals(slots[slot * SLOT_WORDS + SLOT_ENTRY]!, keySource, keyStart, keyLength)) {
        return slot;
      }
      slot = (slot + 1) & mask;
    }
  }

  private keyEquals(entry: number, keySource: Uint8Array, keyStart: number, keyLength: number): boolean {
    const record = entry * RECORD_WORDS;
    if (this.records[record + RECORD_KEY_LENGTH] !== keyLength) return false;
    const heap = this.heapStorage;
    const keyEnd = keyStart + keyLength;
    let target = this.records[record + RECORD_KEY_OFFSET]!;
    for (let source = keyStart; source < keyEnd; source++, target++) {
      if (heap[target] !== keySource[source]) return false;
    }
    return true;
  }

  /** The slot that points at `entry` (which must be live and in the table). */
  private slotOfEntry(entry: number): number {
    const mask = this.slotMask;
    let slot = this.recordHashes[entry * RECORD_WORDS + RECORD_HASH]! & mask;
    for (let probes = 0; probes <= mask; probes++) {
      if (this.slots[slot * SLOT_WORDS + SLOT_ENTRY] === entry) return slot;
      slot = (slot + 1) & mask;
    }
    assert(false, 'Store: entry is in no slot');
  }

  private insert(
    slot: number,
    hash: number,
    keySource: Uint8Array,
    keyStart: number,
    keyLength: number,
    valueSource: Uint8Array,
    valueStart: number,
    valueLength: number,
    version: number,
  ): void {
    if (this.entryCount >= STORE_KEYS_LIMIT) {
      throw new DabbaError(ErrorCode.outOfRange, `Store is full: ${STORE_KEYS_LIMIT} keys`);
    }
    if ((this.entryCount + 1) * 2 > this.slotMask + 1) {
      this.resizeSlots((this.slotMask + 1) * 2);
      slot = this.emptySlotFor(hash);
    }
    // May replace the heap; slots and records do not depend on the heap object.
    this.reserveHeap(keyLength + valueLength);

    const heap = this.heapStorage;
    const keyOffset = this.heapUsedBytes;
    const valueOffset = keyOffset + keyLength;
    copyBytes(keySource, keyStart, heap, keyOffset, keyLength);
    copyBytes(valueSource, valueStart, heap, valueOffset, valueLength);
    this.heapUsedBytes = valueOffset + valueLength;
    this.keyBytesTotal += keyLength;
    this.valueBytesTotal += valueLength;
    this.valueCapacityBytesTotal += valueLength;

    const entry = this.entryCount;
    const record = entry * RECORD_WORDS;
    const records = this.records;
    this.recordHashes[record + RECORD_HASH] = hash;
    records[record + RECORD_KEY_OFFSET] = keyOffset;
    records[record + RECORD_KEY_LENGTH] = keyLength;
    records[record + RECORD_VALUE_OFFSET] = valueOffset;
    records[record + RECORD_VALUE_LENGTH] = valueLength;
    records[record + RECORD_VALUE_CAPACITY] = valueLength;
    this.recordVersions[entry * RECORD_DOUBLES + RECORD_VERSION_DOUBLE] = version;
    this.slots[slot * SLOT_WORDS + SLOT_HASH] = hash;
    this.slots[slot * SLOT_WORDS + SLOT_ENTRY] = entry;
    this.entryCount = entry + 1;
  }

  private overwriteValue(entry: number, valueSource: Uint8Array, valueStart: number, valueLength: number): void {
    const record = entry * RECORD_WORDS;
    const lengthBefore = this.records[record + RECORD_VALUE_LENGTH]!;
    if (valueLength <= this.records[record + RECORD_VALUE_CAPACITY]!) {
      copyBytes(valueSource, valueStart, this.heapStorage, this.records[record + RECORD_VALUE_OFFSET]!, valueLength);
      this.records[record + RECORD_VALUE_LENGTH] = valueLength;
      this.valueBytesTotal += valueLength - lengthBefore;
      return;
    }
    // Reserve first: a compaction here still copies the old value, and also trims its capacity to
    // its length, so the garbage is accounted from the capacity read afterwards.
    this.reserveHeap(valueLength);
    const records = this.records;
    const capacityBefore = records[record + RECORD_VALUE_CAPACITY]!;
    const offset = this.heapUsedBytes;
    copyBytes(valueSource, valueStart, this.heapStorage, offset, valueLength);
    this.heapUsedBytes = offset + valueLength;
    this.garbageBytes += capacityBefore;
    this.valueCapacityBytesTotal += valueLength - capacityBefore;
    this.valueBytesTotal += valueLength - lengthBefore;
    records[record + RECORD_VALUE_OFFSET] = offset;
    records[record + RECORD_VALUE_LENGTH] = valueLength;
    records[record + RECORD_VALUE_CAPACITY] = valueLength;
  }

  /** Backward-shift deletion: empties `slot` and pulls later members of its probe run into holes. */
  private removeSlot(slot: number): void {
    const mask = this.slotMask;
    const slots = this.slots;
    let hole = slot;
    let probe = slot;
    for (;;) {
      probe = (probe + 1) & mask;
      const hash = slots[probe * SLOT_WORDS + SLOT_HASH]!;
      if (hash === 0) break;
      // The key at `probe` may fill the hole only if the hole lies on its path from its home slot,
      // i.e. the home is at least as far behind `probe` as the hole is (distances wrap around).
      const homeDistance = (probe - (hash & mask)) & mask;
      const holeDistance = (probe - hole) & mask;
      if (homeDistance >= holeDistance) {
        slots[hole * SLOT_WORDS + SLOT_HASH] = hash;
        slots[hole * SLOT_WORDS + SLOT_ENTRY] = slots[probe * SLOT_WORDS + SLOT_ENTRY]!;
        hole = probe;
      }
    }
    slots[hole * SLOT_WORDS + SLOT_HASH] = 0;
    slots[hole * SLOT_WORDS + SLOT_ENTRY] = ENTRY_NONE;
  }

  private emptySlotFor(hash: number): number {
    const mask = this.slotMask;
    let slot = hash & mask;
    while (this.slots[slot * SLOT_WORDS + SLOT_HASH] !== 0) slot = (slot + 1) & mask;
    return slot;
  }

  /** Rebuilds the slot table at `slotCapacity` and moves the records to room for half of it. */
  private resizeSlots(slotCapacity: number): void {
    assert(isPowerOfTwo(slotCapacity), 'Store.resizeSlots: capacity not a power of two');
    assert(slotCapacity <= SLOT_CAPACITY_LIMIT, 'Store.resizeSlots: capacity over its limit');
    const count = this.entryCount;
    assert(count <= slotCapacity >>> 1, 'Store.resizeSlots: entries would exceed the load limit');

    const recordBuffer = new ArrayBuffer((slotCapacity >>> 1) * RECORD_BYTES);
    const records = new Uint32Array(recordBuffer);
    records.set(this.records.subarray(0, count * RECORD_WORDS));
    this.records = records;
    this.recordHashes = new Int32Array(recordBuffer);
    this.recordVersions = new Float64Array(recordBuffer);

    this.slotMask = slotCapacity - 1;
    this.slots = emptySlots(slotCapacity);
    for (let entry = 0; entry < count; entry++) {
      const hash = this.recordHashes[entry * RECORD_WORDS + RECORD_HASH]!;
      const slot = this.emptySlotFor(hash);
      this.slots[slot * SLOT_WORDS + SLOT_HASH] = hash;
      this.slots[slot * SLOT_WORDS + SLOT_ENTRY] = entry;
    }
  }

  private wasteBytes(): number {
    return this.garbageBytes + this.valueCapacityBytesTotal - this.valueBytesTotal;
  }

  private isWasteful(): boolean {
    const waste = this.wasteBytes();
    return waste > COMPACTION_WASTE_BYTES_MIN && waste * 2 > this.heapUsedBytes;
  }

  private compactIfWasteful(): void {
    if (this.isWasteful()) this.compact(0);
  }

  /** Makes room for `bytes` more at the end of the heap, compacting or growing it if needed. */
  private reserveHeap(bytes: number): void {
    if (this.heapUsedBytes + bytes <= this.heapStorage.length) return;
    // A new heap is needed either way. Compact if at least half the used heap is waste (the copy is
    // then paid for by the waste), otherwise double: copying one range is cheaper than per entry.
    const liveAndNew = this.keyBytesTotal + this.valueBytesTotal + bytes;
    if (liveAndNew > STORE_HEAP_BYTES_LIMIT) {
      throw new DabbaError(ErrorCode.outOfRange, `Store heap is full: ${STORE_HEAP_BYTES_LIMIT} bytes`);
    }
    const required = this.heapUsedBytes + bytes;
    if (this.wasteBytes() * 2 > this.heapUsedBytes || required > STORE_HEAP_BYTES_LIMIT) {
      this.compact(bytes);
      return;
    }
    const heap = new Uint8Array(powerOfTwoAtLeast(required));
    heap.set(this.heapStorage.subarray(0, this.heapUsedBytes));
    this.heapStorage = heap;
  }

  /**
   * Copies every live key and value, in entry order, into a fresh heap with room for `bytesExtra`
   * more, and trims each value's capacity to its length. The old heap object is left intact, so a
   * caller's source range inside it stays readable for the rest of the operation.
   */
  private compact(bytesExtra: number): void {
    const live = this.keyBytesTotal + this.valueBytesTotal;
    // Twice the live data (when it fits) leaves headroom, so the next compaction waits for at least
    // as many bytes of waste as it will copy.
    const capacity = Math.max(
      this.heapBytesInitial,
      powerOfTwoAtLeast(Math.min(STORE_HEAP_BYTES_LIMIT, Math.max(live * 2, live + bytesExtra))),
    );
    assert(live + bytesExtra <= capacity && capacity <= STORE_HEAP_BYTES_LIMIT, 'Store.compact: heap too small');
    const source = this.heapStorage;
    const target = new Uint8Array(capacity);
    const records = this.records;
    let offset = 0;
    for (let entry = 0; entry < this.entryCount; entry++) {
      const record = entry * RECORD_WORDS;
      const keyLength = records[record + RECORD_KEY_LENGTH]!;
      copyBytes(source, records[record + RECORD_KEY_OFFSET]!, target, offset, keyLength);
      records[record + RECORD_KEY_OFFSET] = offset;
      offset += keyLength;
      const valueLength = records[record + RECORD_VALUE_LENGTH]!;
      copyBytes(source, records[record + RECORD_VALUE_OFFSET]!, target, offset, valueLength);
      records[record + RECORD_VALUE_OFFSET] = offset;
      records[record + RECORD_VALUE_CAPACITY] = valueLength;
      offset += valueLength;
    }
    assert(offset === live, 'Store.compact: copied bytes differ from live bytes');
    this.heapStorage = target;
    this.heapUsedBytes = offset;
    this.garbageBytes = 0;
    this.valueCapacityBytesTotal = this.valueBytesTotal;
  }
}

// --- Helpers -------------------------------------------------------------------------------------

function emptySlots(slotCapacity: number): Int32Array {
  const slots = new Int32Array(slotCapacity * SLOT_WORDS);
  for (let slot = 0; slot < slotCapacity; slot++) slots[slot * SLOT_WORDS + SLOT_ENTRY] = ENTRY_NONE;
  return slots;
}

function isRange(source: Uint8Array, start: number, length: number): boolean {
  return (
    Number.isInteger(start) && Number.isInteger(length) && start >= 0 && length >= 0 && start + length <= source.length
  );
}

/**
 * Copies `length` bytes. Short ranges use a loop unrolled by eight because `set(subarray)` has a
 * fixed cost (see COPY_LOOP_BYTES_MAX); copying within one array uses `copyWithin`, which is correct
 * for overlapping ranges.
 */
function copyBytes(
  source: Uint8Array,
  sourceStart: number,
  target: Uint8Array,
  targetStart: number,
  length: number,
): void {
  if (source === target) {
    target.copyWithin(targetStart, sourceStart, sourceStart + length);
  } else if (length < COPY_LOOP_BYTES_MAX) {
    let from = sourceStart;
    let to = targetStart;
    const unrolledEnd = sourceStart + (length & ~7);
    while (from < unrolledEnd) {
      target[to] = source[from]!;
      target[to + 1] = source[from + 1]!;
      target[to + 2] = source[from + 2]!;
      target[to + 3] = source[from + 3]!;
      target[to + 4] = source[from + 4]!;
      target[to + 5] = source[from + 5]!;
      target[to + 6] = source[from + 6]!;
      target[to + 7] = source[from + 7]!;
      from += 8;
      to += 8;
    }
    const end = sourceStart + length;
    while (from < end) target[to++] = source[from++]!;
  } else {
    // Long ranges: the shared bulk copy, word-wise when both ends line up (fast from shared memory).
    copyBulk(source, sourceStart, target, targetStart, length);
  }
}

function isPowerOfTwo(value: number): boolean {
  return value >= 1 && Number.isInteger(value) && (value & (value - 1)) === 0;
}

/** The smallest power of two >= `value` (1 for values <= 1); exact for values up to 2^53. */
function powerOfTwoAtLeast(value: number): number {
  let power = 1;
  while (power < value) power *= 2;
  return power;
}

function writeWord(target: Uint8Array, offset: number, word: number): void {
  target[offset] = word & 0xff;
  target[offset + 1] = (word >>> 8) & 0xff;
  target[offset + 2] = (word >>> 16) & 0xff;
  target[offset + 3] = (word >>> 24) & 0xff;
}

function hex32(word: number): string {
  return (word >>> 0).toString(16).padStart(8, '0');
}

/** The two words of StoreOptions.hashKey, or the default key when it is absent. */
function optionHashKey(value: unknown): readonly [number, number] {
  if (value === undefined) return STORE_HASH_KEY_DEFAULT;
  if (!Array.isArray(value) || value.length !== 2) {
    throw new DabbaError(ErrorCode.invalidArgument, 'StoreOptions.hashKey must be an array of two uint32 words');
  }
  const words: unknown[] = value;
  for (const word of words) {
    if (typeof word !== 'number' || !Number.isInteger(word)) {
      const message = `StoreOptions.hashKey words must be integers, got ${String(word)}`;
      throw new DabbaError(ErrorCode.invalidArgument, message);
    }
    if (word < 0 || word > UINT32_MAX) {
      throw new DabbaError(ErrorCode.outOfRange, `StoreOptions.hashKey words must be in 0..${UINT32_MAX}, got ${word}`);
    }
  }
  return [words[0] as number, words[1] as number];
}

function optionCount(name: string, value: unknown, fallback: number, limit: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new DabbaError(ErrorCode.invalidArgument, `StoreOptions.${name} must be an integer, got ${String(value)}`);
  }
  if (value < 0 || value > limit) {
    throw new DabbaError(ErrorCode.outOfRange, `StoreOptions.${name} must be in 0..${limit}, got ${value}`);
  }
  return value;
}

/**
 * A fuzzy scan over a store's entries (Store.scan()). Entries are numbered densely, and a number
 * changes only when a delete moves the last entry into the hole it leaves: if that moves an entry
 * the scan has not reached into a place it has passed, the place is queued to be visited again.
 */
export class StoreScan {
  private position = 0;
  private readonly revisits: number[] = [];
  private closed = false;

  constructor(
    private readonly store: Store,
    /** Entries numbered from here on were created after the start; they need no visit. */
    private readonly endAtStart: number,
  ) {}

  /** The next entry to visit (a handle into the store, valid until its next mutation), or -1 when done. */
  peek(): number {
    const size = this.store.size;
    while (this.revisits.length > 0) {
      const entry = this.revisits.at(-1)!;
      if (entry < size) return entry;
      this.revisits.pop();
    }
    return this.position < Math.min(this.endAtStart, size) ? this.position : -1;
  }

  /** Moves past the entry peek() returned. */
  advance(): void {
    if (this.revisits.length > 0) this.revisits.pop();
    else this.position++;
  }

  /** Stops the scan; the store stops informing it. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.store.closeScan(this);
  }

  /**
   * The store moved entry `from` (its last) into `to` (a hole left by a delete). If the entry was
   * still to be visited (at or past the position, or queued for a revisit) and lands where the scan
   * has passed, its new place is queued. (A queued entry can move again: it is the last one when
   * the store shrinks down to it; sim seed 4626 found that.)
   */
  entryMoved(from: number, to: number): void {
    if (to >= this.position) return;
    if (from >= this.position || this.revisits.includes(from)) this.revisits.push(to);
  }
}
