import { assert } from '../assert.js';
import { copyBytes } from '../bytes.js';

/**
 * The in-flight list of a non-tail chain node: every batch it has applied and not yet seen
 * acknowledged by the tail, in sequence order, as the exact bytes it forwards. It is bounded in
 * bytes and in batches; when it is full the node stops accepting batches from upstream, which is
 * how backpressure travels from a slow tail to the client.
 *
 * It doubles as the forwarding queue: batches after `forwardedSeq` still have to be sent downstream
 * (the ring to the successor may have been full), and after a middle node fails the predecessor
 * rewinds `forwardedSeq` to the new successor's applied sequence and resends the rest.
 *
 * Bytes live in one circular arena; a batch that does not fit before the arena's end starts at 0
 * and the skipped tail is accounted for until that batch is trimmed.
 */
export class InflightLog {
  readonly bytesMax: number;
  readonly batchesMax: number;

  private readonly arena: Uint8Array;
  /** Free-running byte counters: arena offset = counter % bytesMax. */
  private startCounter = 0;
  private endCounter = 0;
  /** Metadata ring of batches, oldest at `oldest`. */
  private readonly allocationStarts: Float64Array;
  private readonly lengths: Uint32Array;
  private readonly firstSeqs: Float64Array;
  private readonly counts: Uint32Array;
  /** Who wrote each batch, and its last client sequence: a tail that waits for a joiner acks clients from these. */
  private readonly clientIds: Uint32Array;
  private readonly lastClientSeqs: Float64Array;
  private oldest = 0;
  private size = 0;
  /** Last sequence number handed to the successor (batches after it are pending). */
  private forwardedSeqValue = 0;
  /**
   * The most this successor can have: the highest forwardedSeq since it reported where it stood. A
   * rewind to resend lowers forwardedSeq, not this, and acks up to it stay believable.
   */
  private sentSeqValue = 0;
  private lastSeqValue = 0;

  /**
   * With `prefault`, every page of the arena is touched now, so appends never page-fault later.
   * That costs a few ms per MiB on a VM (~140 ms for 32 MiB here), which a replica that does not
   * forward yet (a tail, a joiner) should not pay while it is starting.
   */
  constructor(bytesMax: number, batchesMax: number, options: { prefault?: boolean } = {}) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax >= 1024 && bytesMax % 8 === 0, 'InflightLog: bytesMax must be a multiple of 8, at least 1 KiB');
    assert(Number.isSafeInteger(batchesMax) && batchesMax >= 1, 'InflightLog: batchesMax must be positive');
    this.bytesMax = bytesMax;
    this.batchesMax = batchesMax;
    this.arena = new Uint8Array(bytesMax);
    if (options.prefault ?? true) this.arena.fill(0);
    this.allocationStarts = new Float64Array(batchesMax);
    this.lengths = new Uint32Array(batchesMax);
    this.firstSeqs = new Float64Array(batchesMax);
    this.counts = new Uint32Array(batchesMax);
    this.clientIds = new Uint32Array(batchesMax);
    this.lastClientSeqs = new Float64Array(batchesMax);
  }

  get batchCount(): number {
    return this.size;
  }

  get bytesUsed(): number {
    return this.endCounter - this.startCounter;
  }

  /** Sequence number of the newest logged write, or of the last trimmed one if the log is empty. */
  get lastSeq(): number {
    return this.lastSeqValue;
  }

  get forwardedSeq(): number {
    return this.forwardedSeqValue;
  }

  get sentSeq(): number {
    return this.sentSeqValue;
  }

  /** Oldest logged sequence number, or lastSeq + 1 when empty. */
  get firstSeq(): number {
    return this.size === 0 ? this.lastSeqValue + 1 : this.firstSeqs[this.oldest]!;
  }

  /** Whether a batch of `length` bytes can be appended now. */
  hasRoomFor(length: number): boolean {
    if (this.size === this.batchesMax) return false;
    return this.allocationFor(length) >= 0;
  }

  /** Whether a batch of `length` bytes could ever fit (once the log is empty). */
  canEverHold(length: number): boolean {
    return length <= this.bytesMax;
  }

  /** Copies a batch in. Its sequence numbers must continue the log (invariant I3). */
  append(source: Uint8Array, firstSeq: number, count: number, clientId = 0, lastClientSeq = 0): void {
    assert(count >= 1, 'InflightLog.append: empty batch');
    assert(firstSeq === this.lastSeqValue + 1, `InflightLog.append: seq ${firstSeq} does not follow ${this.lastSeqValue}`);
    const allocationStart = this.allocationFor(source.length);
    assert(allocationStart >= 0 && this.size < this.batchesMax, 'InflightLog.append: no room (check hasRoomFor first)');
    copyBytes(source, 0, this.arena, allocationStart % this.bytesMax, source.length);
    const slot = (this.oldest + this.size) % this.batchesMax;
    this.allocationStarts[slot] = allocationStart;
    this.lengths[slot] = source.length;
    this.firstSeqs[slot] = firstSeq;
    this.counts[slot] = count;
    this.clientIds[slot] = clientId;
    this.lastClientSeqs[slot] = lastClientSeq;
    this.size++;
    this.endCounter = allocationStart + source.length;
    this.lastSeqValue = firstSeq + count - 1;
    assert(this.bytesUsed <= this.bytesMax, 'InflightLog: arena overflow');
  }

  /** Start counter for `length` new bytes, or -1 if they do not fit. */
  private allocationFor(length: number): number {
    if (length > this.bytesMax) return -1;
    // Batches start 8-byte aligned so copies in and out can use word-sized views.
    const alignedEnd = Math.ceil(this.endCounter / 8) * 8;
    const offset = alignedEnd % this.bytesMax;
    const skipped = alignedEnd - this.endCounter + (offset + length > this.bytesMax ? this.bytesMax - offset : 0);
    if (this.bytesUsed + skipped + length > this.bytesMax) return -1;
    return this.endCounter + skipped;
  }

  /**
   * Drops every batch whose last sequence number is <= committedSeq (a cumulative ack).
   * A batch straddling committedSeq stays: it is trimmed by a later ack.
   */
  trimThrough(committedSeq: number): number {
    assert(committedSeq <= this.forwardedSeqValue, `InflightLog.trimThrough: ack ${committedSeq} beyond forwarded ${this.forwardedSeqValue}`);
    let trimmed = 0;
    while (this.size > 0) {
      const slot = this.oldest;
      const lastSeq = this.firstSeqs[slot]! + this.counts[slot]! - 1;
      if (lastSeq > committedSeq) break;
      this.oldest = (slot + 1) % this.batchesMax;
      this.size--;
      trimmed++;
    }
    this.startCounter = this.size === 0 ? this.endCounter : this.allocationStarts[this.oldest]!;
    return trimmed;
  }

  /** Number of logged batches not yet forwarded. */
  get pendingCount(): number {
    let pending = 0;
    for (let index = this.size - 1; index >= 0; index--) {
      const slot = (this.oldest + index) % this.batchesMax;
      if (this.firstSeqs[slot]! <= this.forwardedSeqValue) break;
      pending++;
    }
    return pending;
  }

  /** The index (0 = oldest) of the first batch not yet forwarded. */
  firstPendingIndex(): number {
    return this.size - this.pendingCount;
  }

  /** A view of logged batch `index` (0 = oldest), valid until the next trim or append. */
  batchAt(index: number): Uint8Array {
    assert(index >= 0 && index < this.size, 'InflightLog.batchAt: index out of range');
    const slot = (this.oldest + index) % this.batchesMax;
    const offset = this.allocationStarts[slot]! % this.bytesMax;
    return this.arena.subarray(offset, offset + this.lengths[slot]!);
  }

  firstSeqAt(index: number): number {
    return this.firstSeqs[(this.oldest + index) % this.batchesMax]!;
  }

  clientIdAt(index: number): number {
    return this.clientIds[(this.oldest + index) % this.batchesMax]!;
  }

  lastClientSeqAt(index: number): number {
    return this.lastClientSeqs[(this.oldest + index) % this.batchesMax]!;
  }

  countAt(index: number): number {
    return this.counts[(this.oldest + index) % this.batchesMax]!;
  }

  /** Marks everything through `seq` as handed to the successor. Batch boundaries only. */
  markForwardedThrough(seq: number): void {
    assert(seq >= this.forwardedSeqValue && seq <= this.lastSeqValue, `markForwardedThrough: ${seq} out of range`);
    this.forwardedSeqValue = seq;
    if (seq > this.sentSeqValue) this.sentSeqValue = seq;
  }

  /** Whether `seq` ends a logged batch (or precedes the first): where a successor can have stopped. */
  isBatchBoundary(seq: number): boolean {
    if (seq === this.firstSeq - 1) return true;
    for (let index = 0; index < this.size; index++) {
      if (this.firstSeqAt(index) + this.countAt(index) - 1 === seq) return true;
    }
    return false;
  }

  /**
   * Rewinds forwarding to resend everything after `seq`: the successor reported (a Hello) that it
   * has applied through `seq`. After a middle failed, that is a new successor (the CR paper's
   * repair), which has nothing else of ours; the same successor may also ask again within an epoch
   * (a link repaired, a batch that arrived damaged), and may have applied more by the time later
   * acks arrive. `seq` is at least the oldest logged seq - 1: the successor has everything the tail
   * acknowledged.
   */
  rewindForwardingTo(seq: number, options: { newSuccessor: boolean }): void {
    assert(seq >= this.firstSeq - 1 && seq <= this.lastSeqValue, `rewindForwardingTo: ${seq} outside the log`);
    this.forwardedSeqValue = seq;
    this.sentSeqValue = options.newSuccessor ? seq : Math.max(this.sentSeqValue, seq);
  }

  /**
   * An ack shows the successor has everything through `seq`, beyond where a Hello it sent earlier
   * rewound forwarding: those batches need not be sent again.
   */
  skipForwardingTo(seq: number): void {
    assert(seq <= this.sentSeqValue, `skipForwardingTo: ${seq} was never sent (sent through ${this.sentSeqValue})`);
    if (seq > this.forwardedSeqValue) this.forwardedSeqValue = seq;
  }

  /** Resets an empty log to continue after `seq` (a node that starts or becomes non-tail). */
  resetAfter(seq: number): void {
    assert(this.size === 0, 'InflightLog.resetAfter: log not empty');
    this.lastSeqValue = seq;
    this.forwardedSeqValue = seq;
    this.sentSeqValue = seq;
    this.startCounter = this.endCounter;
  }
}
