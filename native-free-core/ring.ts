import { assert } from './assert.js';
import { copyBytes } from './bytes.js';
import { ErrorCode } from './errors.js';

/*
 * A single-producer/single-consumer ring of variable-length binary records over a SharedArrayBuffer.
 *
 * Buffer layout:
 *
 *   bytes 0..127    header, an Int32Array of RING_HEADER_INT32S cells (field indices below)
 *   bytes 128..     data region of `capacityBytes` bytes (a power of two)
 *
 * The write and read indices are free-running 32-bit byte counters: they only ever grow (modulo 2^32),
 * the data offset of a counter is `counter & (capacityBytes - 1)`, and the bytes in use are
 * `(write - read) >>> 0`. Because the capacity divides 2^32, offsets stay consistent when a counter
 * wraps past 2^32. Both counters are held as int32 values (what Atomics.load returns) and advanced
 * with `| 0`.
 *
 * A record is a 4-byte little-endian length, then the payload, padded so the next record starts
 * 8-byte aligned: its footprint is `(4 + length + 7) & ~7` bytes. A record never straddles the end
 * of the data region: when it does not fit contiguously, the producer writes a wrap marker (length
 * 0xFFFFFFFF) where it would have started and places the record at offset 0; the skipped bytes
 * count as used until the consumer releases the record after the marker. Since every record starts
 * 8-byte aligned and the capacity is a multiple of 8, at least 8 bytes remain before the end, so
 * there is always room for the 4-byte marker.
 *
 * The largest payload is `capacityBytes / 2 - 8`, whose footprint is exactly `capacityBytes / 2`.
 * This guarantees that an empty ring accepts a maximal record whatever the position: either the
 * footprint fits before the end, or fewer than `capacityBytes / 2` bytes are skipped by a wrap
 * marker and the record then fits at offset 0, for a total of at most `capacityBytes`.
 */

/**
 * Int32 index of the write counter: the end of the published records.
 * Written only by the producer, with ONE Atomics.store per publish(), and only AFTER the record
 * headers, payloads and wrap markers of the batch were written with plain stores. Atomics are
 * sequentially consistent in the JavaScript memory model, so a consumer whose Atomics.load observes
 * the new value also observes every byte written before the store: plain reads of the records after
 * that load cannot see stale bytes.
 */
export const RING_WRITE_INDEX = 0;
/**
 * Int32 index of the read counter: the end of the records the consumer has released.
 * It lives in its own 64-byte cache line (bytes 64..127; the write counter is in bytes 0..63), so
 * each counter's line is written by one side only: a publish does not invalidate the line holding
 * the read counter, and a release does not invalidate the line holding the write counter.
 * Written only by the consumer, with ONE Atomics.store per release(), and only AFTER it finished
 * reading the released records: the producer overwrites that space only after its own Atomics.load
 * observed the new value, so it can never overwrite bytes the consumer is still reading.
 */
export const RING_READ_INDEX = 16;
/**
 * Int32 index of the producer-waiting flag: 1 after the producer found the ring full and asked to be
 * woken (markProducerWaiting(), or canWrite() answering false), until the consumer takes it
 * (takeProducerWaiting()) after a release and rings the producer's doorbell.
 * It shares the read counter's cache line because the consumer loads it right after every release,
 * when that line is already in its cache; the producer writes it only when it is blocked anyway.
 * Dekker ordering, like the doorbell's: the producer stores 1 BEFORE its last Atomics.load of the
 * read counter (the re-check before sleeping), and the consumer stores the read counter BEFORE it
 * loads the flag. In the single total order of atomics, either the consumer's load sees the 1 (and
 * it rings), or the producer's re-check comes after the consumer's store of the read counter (and
 * sees the freed space), so a blocked producer cannot miss the release it waits for.
 */
export const RING_PRODUCER_WAITING_INDEX = 17;
/** Int32 cells in the header (two 64-byte cache lines). */
export const RING_HEADER_INT32S = 32;
/** Bytes before the data region. */
export const RING_HEADER_BYTES = RING_HEADER_INT32S * Int32Array.BYTES_PER_ELEMENT;
/** Smallest data region. */
export const RING_CAPACITY_BYTES_MIN = 1024;
/** Largest data region: keeps `write - read` far below 2^32 so the unsigned distance is unambiguous. */
export const RING_CAPACITY_BYTES_MAX = 1024 * 1024 * 1024;
/** Length written where a record would have started when it does not fit before the end of the region. */
export const RING_WRAP_MARKER = 0xffffffff;
/**
 * Bytes in front of each record's payload: a little-endian uint32 length and 4 reserved bytes, so
 * payloads start 8-byte aligned. V8 copies to or from a SharedArrayBuffer word by word only when
 * both ends are 8-byte aligned, and byte by byte (about 7x slower) otherwise.
 */
export const RING_RECORD_HEADER_BYTES = 8;
/** Every record (and wrap marker) starts at a multiple of this in the data region. */
export const RING_RECORD_ALIGNMENT_BYTES = 8;

/** Bytes a record of `length` payload bytes takes in the data region (without any wrap skip). */
export function ringRecordFootprint(length: number): number {
  return (length + RING_RECORD_HEADER_BYTES + RING_RECORD_ALIGNMENT_BYTES - 1) & -RING_RECORD_ALIGNMENT_BYTES;
}


function outOfRange(message: string): RangeError & { code: ErrorCode } {
  return Object.assign(new RangeError(message), { code: ErrorCode.outOfRange });
}

function invalidArgument(message: string): TypeError & { code: ErrorCode } {
  return Object.assign(new TypeError(message), { code: ErrorCode.invalidArgument });
}

function validateCapacity(capacityBytes: number): void {
  if (
    !Number.isInteger(capacityBytes) ||
    capacityBytes < RING_CAPACITY_BYTES_MIN ||
    capacityBytes > RING_CAPACITY_BYTES_MAX ||
    (capacityBytes & (capacityBytes - 1)) !== 0
  ) {
    throw outOfRange(
      `ring capacity must be a power of two between ${RING_CAPACITY_BYTES_MIN} and ` +
        `${RING_CAPACITY_BYTES_MAX} bytes, got ${capacityBytes}`,
    );
  }
}

export class SpscRing {
  /** Bytes of SharedArrayBuffer needed for a ring of `capacityBytes` data bytes. */
  static byteLengthFor(capacityBytes: number): number {
    validateCapacity(capacityBytes);
    return RING_HEADER_BYTES + capacityBytes;
  }

  /**
   * Allocates a SharedArrayBuffer for a new ring (zeroed). With `prefault` (the default) every page
   * is touched now: the first pass of writes through fresh memory otherwise pays a page fault per
   * 4 KiB on the hot path (~16 us each on this VM, 4 ms per MiB). That is the right trade for rings
   * made before a chain takes load, and the wrong one for rings made while it does.
   */
  static allocate(capacityBytes: number, options: { prefault?: boolean } = {}): SharedArrayBuffer {
    const buffer = new SharedArrayBuffer(SpscRing.byteLengthFor(capacityBytes));
    if (options.prefault ?? true) new Uint8Array(buffer).fill(0);
    return buffer;
  }

  readonly capacityBytes: number;
  /** Largest payload a record may have; longer ones are a RangeError. */
  readonly recordBytesMax: number;
  /** The data region; record offsets returned by tryReserve() and next() index into it. */
  readonly bytes: Uint8Array;

  private readonly header: Int32Array;
  /** Little-endian access to record lengths in the data region. */
  private readonly view: DataView;
  private readonly mask: number;

  // Producer state (touched only by the producer thread).
  /** End of the staged records: the write counter publish() will store. */
  private stagedWrite: number;
  /** Write counter last stored by publish(). */
  private publishedWrite: number;
  /** Read counter as last loaded: never ahead of the real one, so free space computed from it is never overstated. */
  private cachedRead: number;

  // Consumer state (touched only by the consumer thread).
  /** Write counter loaded by the last claim(): next() never reads past it. */
  private claimedWrite: number;
  /** Start of the next record next() returns. */
  private cursor: number;
  /** Read counter last stored by release(). */
  private releasedRead: number;
  /** Start of the record last returned by next() (after any wrap marker), for unread(). */
  private recordStart = 0;
  private unreadAllowed = false;

  /** Length in bytes of the record last returned by next(). */
  recordLength = 0;

  /**
   * Wraps an existing buffer (shared or, for single-thread tests and simulators, a plain
   * ArrayBuffer). The producer and the consumer each construct their own SpscRing over the same buffer.
   */
  constructor(buffer: SharedArrayBuffer | ArrayBuffer) {
    if (!(buffer instanceof SharedArrayBuffer) && !(buffer instanceof ArrayBuffer)) {
      throw invalidArgument('ring buffer must be a SharedArrayBuffer or an ArrayBuffer');
    }
    const capacityBytes = buffer.byteLength - RING_HEADER_BYTES;
    validateCapacity(capacityBytes);
    this.capacityBytes = capacityBytes;
    this.recordBytesMax = capacityBytes / 2 - RING_RECORD_ALIGNMENT_BYTES;
    this.mask = capacityBytes - 1;
    this.header = new Int32Array(buffer, 0, RING_HEADER_INT32S);
    this.bytes = new Uint8Array(buffer, RING_HEADER_BYTES, capacityBytes);
    this.view = new DataView(buffer, RING_HEADER_BYTES, capacityBytes);

    // Load the read counter first: whichever side is constructing, the counter it owns is stable,
    // and the other side's counter only moves toward it, so `write - read` read in this order is a
    // consistent (if stale) distance even when the peer is already running.
    const read = Atomics.load(this.header, RING_READ_INDEX);
    const write = Atomics.load(this.header, RING_WRITE_INDEX);
    assert((write - read) >>> 0 <= capacityBytes, 'ring: header holds a write index more than capacity ahead of read');
    assert((write & (RING_RECORD_ALIGNMENT_BYTES - 1)) === 0, 'ring: header write index is not record-aligned');
    assert((read & (RING_RECORD_ALIGNMENT_BYTES - 1)) === 0, 'ring: header read index is not record-aligned');
    this.stagedWrite = write;
    this.publishedWrite = write;
    this.cachedRead = read;
    this.claimedWrite = read;
    this.cursor = read;
    this.releasedRead = read;
  }

  // Producer side (exactly one thread).

  private validateLength(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.recordBytesMax) {
      throw outOfRange(`ring record length must be an integer in [0, ${this.recordBytesMax}], got ${length}`);
    }
  }

  /**
   * Stages a record of `length` bytes and returns the offset in `bytes` where the caller must write
   * them before publish(); -1 if the ring lacks space (backpressure; nothing staged).
   * A length that is not an integer in [0, recordBytesMax] is a RangeError: callers check
   * `recordBytesMax` before they build a record.
   */
  tryReserve(length: number): number {
    this.validateLength(length);
    const footprint = ringRecordFootprint(length);
    const offset = this.stagedWrite & this.mask;
    const contiguousBytes = this.capacityBytes - offset;
    assert(contiguousBytes >= RING_RECORD_ALIGNMENT_BYTES, 'ring: staged write position is not record-aligned');
    const wraps = footprint > contiguousBytes;
    const neededBytes = wraps ? contiguousBytes + footprint : footprint;
    if (neededBytes > this.capacityBytes - ((this.stagedWrite - this.cachedRead) >>> 0)) {
      // The cached read counter says full: only now pay for a load of the consumer's cache line.
      this.cachedRead = Atomics.load(this.header, RING_READ_INDEX);
      const usedBytes = (this.stagedWrite - this.cachedRead) >>> 0;
      assert(usedBytes <= this.capacityBytes, 'ring: producer sees more bytes in use than the capacity');
      if (neededBytes > this.capacityBytes - usedBytes) return -1;
    }
    let recordOffset = offset;
    if (wraps) {
      this.view.setUint32(offset, RING_WRAP_MARKER, true);
      recordOffset = 0;
    }
    this.view.setUint32(recordOffset, length, true);
    this.stagedWrite = (this.stagedWrite + neededBytes) | 0;
    return recordOffset + RING_RECORD_HEADER_BYTES;
  }

  /**
   * True if a record of `length` bytes fits now (refreshes the read index); stages nothing. This is
   * the wake-up condition of a producer blocked on a full ring. When the answer is false it also
   * marks the producer waiting, before a final load of the read index (see
   * RING_PRODUCER_WAITING_INDEX), so a producer that sleeps after a false answer is woken by the
   * consumer's next release even if an earlier, too small release already took the mark.
   */
  canWrite(length: number): boolean {
    this.validateLength(length);
    const footprint = ringRecordFootprint(length);
    const contiguousBytes = this.capacityBytes - (this.stagedWrite & this.mask);
    const neededBytes = footprint <= contiguousBytes ? footprint : contiguousBytes + footprint;
    if (neededBytes <= this.freeBytes()) return true;
    // canWrite() runs in spin loops: store the mark only if it is not already there, so spinning
    // does not keep writing the consumer's cache line. Seeing 1 is as good as storing it: only the
    // consumer clears the mark, and if it clears it after this load it also rings the doorbell.
    if (Atomics.load(this.header, RING_PRODUCER_WAITING_INDEX) === 0) {
      Atomics.store(this.header, RING_PRODUCER_WAITING_INDEX, 1);
    }
    return neededBytes <= this.freeBytes();
  }

  /**
   * Asks the consumer to report its next release through takeProducerWaiting(), so it can ring the
   * producer's doorbell. Call it after tryReserve()/tryWrite() failed, then sleep only after a
   * re-check of canWrite() (the doorbell's hasWork re-check does this).
   */
  markProducerWaiting(): void {
    Atomics.store(this.header, RING_PRODUCER_WAITING_INDEX, 1);
  }

  /** Copies source[start, end) into a staged record; false if the ring lacks space (nothing staged). */
  tryWrite(source: Uint8Array, start = 0, end: number = source.length): boolean {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || start > end || end > source.length) {
      throw outOfRange(`ring write range [${start}, ${end}) is not within a source of ${source.length} bytes`);
    }
    const length = end - start;
    const offset = this.tryReserve(length);
    if (offset < 0) return false;
    copyBytes(source, start, this.bytes, offset, length);
    return true;
  }

  /**
   * Makes every staged record visible to the consumer with one Atomics.store of the write index.
   * Returns true if anything new was published.
   */
  publish(): boolean {
    if (this.stagedWrite === this.publishedWrite) return false;
    assert(
      (this.stagedWrite - this.cachedRead) >>> 0 <= this.capacityBytes,
      'ring: publishing more bytes than the capacity',
    );
    // Every plain store of the batch's records happened before this store (see RING_WRITE_INDEX).
    Atomics.store(this.header, RING_WRITE_INDEX, this.stagedWrite);
    this.publishedWrite = this.stagedWrite;
    return true;
  }

  /**
   * Free bytes the producer can currently see (refreshes the read index). Staged records count as
   * used. A record whose footprint is at most the free bytes may still not fit when it would wrap:
   * the bytes skipped before the end of the region are lost until the consumer passes them.
   */
  freeBytes(): number {
    this.cachedRead = Atomics.load(this.header, RING_READ_INDEX);
    const usedBytes = (this.stagedWrite - this.cachedRead) >>> 0;
    assert(usedBytes <= this.capacityBytes, 'ring: producer sees more bytes in use than the capacity');
    return this.capacityBytes - usedBytes;
  }

  // Consumer side (exactly one thread).

  /**
   * Loads the write index once (Atomics.load); returns true if any records are readable.
   * Records published after this call are not seen until the next claim().
   */
  claim(): boolean {
    const write = Atomics.load(this.header, RING_WRITE_INDEX);
    assert(
      (write - this.releasedRead) >>> 0 <= this.capacityBytes,
      'ring: write index is more than capacity ahead of the read index',
    );
    assert(
      (write - this.claimedWrite) >>> 0 <= (write - this.releasedRead) >>> 0,
      'ring: write index moved backwards',
    );
    this.claimedWrite = write;
    return write !== this.cursor;
  }

  /**
   * Offset in `bytes` of the next claimed record, or -1 when the claimed range is exhausted; sets
   * `recordLength`. Skips wrap markers itself. A length that cannot have been written by the producer
   * (beyond `recordBytesMax`, past the claimed range or past the end of the region) is an
   * AssertionError: the ring is corrupt and nothing read from it can be trusted.
   */
  next(): number {
    if (this.cursor === this.claimedWrite) return -1;
    let offset = this.cursor & this.mask;
    let length = this.view.getUint32(offset, true);
    if (length === RING_WRAP_MARKER) {
      const skippedBytes = this.capacityBytes - offset;
      // The producer writes a marker and the record after it in one tryReserve(), and a marker never
      // sits at offset 0 (every record fits an empty region), so a record must follow in range.
      assert(
        skippedBytes < ((this.claimedWrite - this.cursor) >>> 0),
        'ring: wrap marker is not followed by a record in the claimed range',
      );
      this.cursor = (this.cursor + skippedBytes) | 0;
      offset = 0;
      length = this.view.getUint32(0, true);
    }
    assert(length <= this.recordBytesMax, 'ring: record length exceeds recordBytesMax');
    const footprint = ringRecordFootprint(length);
    assert(
      footprint <= ((this.claimedWrite - this.cursor) >>> 0),
      'ring: record extends past the claimed range',
    );
    assert(footprint <= this.capacityBytes - offset, 'ring: record extends past the end of the data region');
    this.recordLength = length;
    this.recordStart = this.cursor;
    this.unreadAllowed = true;
    this.cursor = (this.cursor + footprint) | 0;
    return offset + RING_RECORD_HEADER_BYTES;
  }

  /**
   * Gives back the record last returned by next() (for a consumer that cannot take it yet): the next
   * call to next() returns it again and release() does not free it. Allowed once per record, and not
   * after a release(). A wrap marker in front of the record stays consumed: release() frees the
   * bytes it skipped.
   */
  unread(): void {
    assert(this.unreadAllowed, 'ring: unread() without a record from next() since the last release()');
    this.cursor = this.recordStart;
    this.unreadAllowed = false;
  }

  /** Frees the space of every record returned by next() so far with one Atomics.store of the read index. */
  release(): void {
    this.unreadAllowed = false;
    if (this.cursor === this.releasedRead) return;
    assert(
      (this.cursor - this.releasedRead) >>> 0 <= this.capacityBytes,
      'ring: releasing more bytes than the capacity',
    );
    // Every read of the released records happened before this store (see RING_READ_INDEX).
    Atomics.store(this.header, RING_READ_INDEX, this.cursor);
    this.releasedRead = this.cursor;
  }

  /**
   * After release(): true if the producer marked itself waiting for space (the mark is cleared), in
   * which case the caller rings the producer's doorbell. One Atomics.load when nobody waits.
   */
  takeProducerWaiting(): boolean {
    // A load is enough for the Dekker ordering (see RING_PRODUCER_WAITING_INDEX); the exchange only
    // clears the mark, and only when there is one, so the common case writes nothing.
    if (Atomics.load(this.header, RING_PRODUCER_WAITING_INDEX) === 0) return false;
    return Atomics.exchange(this.header, RING_PRODUCER_WAITING_INDEX, 0) === 1;
  }

  /**
   * True if the consumer sees no published records beyond those next() already returned (one
   * Atomics.load; used before sleeping). It does not extend the claimed range.
   */
  isEmpty(): boolean {
    return Atomics.load(this.header, RING_WRITE_INDEX) === this.cursor;
  }

  /** Bytes published but not yet released, including bytes skipped by wrap markers (for stats). */
  usedBytes(): number {
    const usedBytes = (Atomics.load(this.header, RING_WRITE_INDEX) - this.releasedRead) >>> 0;
    assert(usedBytes <= this.capacityBytes, 'ring: consumer sees more bytes in use than the capacity');
    return usedBytes;
  }
}
