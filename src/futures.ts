/**
 * Pending promises indexed by a consecutive sequence number, in a ring (no Map, no per-write
 * closure): acknowledgements are cumulative, so settling is a sweep over a range of slots. The ring
 * starts small and doubles while more are pending, up to its capacity (the limit the caller checks
 * with isFull), so a client that never has many writes pending never pays for the largest ring.
 *
 * A promise's resolve/reject pair is captured by one shared executor function instead of a closure
 * per promise, which saves an allocation on the hottest path of the client.
 */
import { assert } from '../native-free-core/assert.js';

type Resolve<T> = (value: T) => void;
type Reject = (reason: unknown) => void;

let capturedResolve: Resolve<never> | null = null;
let capturedReject: Reject | null = null;
function captureExecutor(resolve: Resolve<never>, reject: Reject): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/** Slots a ring starts with (or its capacity, if smaller). */
const INITIAL_SLOTS = 1024;

export class FutureRing<T> {
  /** Pending promises at most. */
  readonly capacity: number;
  private mask: number;
  private resolvers: Array<Resolve<T> | null>;
  private rejecters: Array<Reject | null>;
  /** Sequence numbers [settledThrough + 1, nextSeq) are pending. */
  private nextSeq: number;
  private settledThrough: number;

  constructor(capacityAtLeast: number, firstSeq = 1) {
    let capacity = 1;
    while (capacity < capacityAtLeast) capacity *= 2;
    this.capacity = capacity;
    const slots = Math.min(capacity, INITIAL_SLOTS);
    this.mask = slots - 1;
    this.resolvers = new Array<Resolve<T> | null>(slots).fill(null);
    this.rejecters = new Array<Reject | null>(slots).fill(null);
    this.nextSeq = firstSeq;
    this.settledThrough = firstSeq - 1;
  }

  get pending(): number {
    return this.nextSeq - 1 - this.settledThrough;
  }

  get isFull(): boolean {
    return this.pending >= this.capacity;
  }

  /** The sequence number the next add() will get. */
  get next(): number {
    return this.nextSeq;
  }

  get settled(): number {
    return this.settledThrough;
  }

  /** Registers a promise for sequence number `next` and returns it. The caller checks isFull first. */
  add(): Promise<T> {
    assert(!this.isFull, 'FutureRing.add: ring is full');
    if (this.pending > this.mask) this.grow();
    const promise = new Promise<T>(captureExecutor);
    const slot = this.nextSeq & this.mask;
    this.resolvers[slot] = capturedResolve as Resolve<T>;
    this.rejecters[slot] = capturedReject;
    this.nextSeq++;
    return promise;
  }

  /**
   * Registers sequence number `next` without a promise of its own, for a caller that settles many
   * writes with one promise: `reject` is called if this write fails, and a resolver may be set later
   * with setResolver(). Returns the sequence number. The caller checks isFull first.
   */
  addSettlers(reject: Reject): number {
    assert(!this.isFull, 'FutureRing.addSettlers: ring is full');
    if (this.pending > this.mask) this.grow();
    const seq = this.nextSeq;
    const slot = seq & this.mask;
    this.resolvers[slot] = null;
    this.rejecters[slot] = reject;
    this.nextSeq++;
    return seq;
  }

  /** Every slot holds a pending promise: twice the slots, each pending one moved to its new slot. */
  private grow(): void {
    const slots = (this.mask + 1) * 2;
    assert(slots <= this.capacity, 'FutureRing.grow: beyond capacity');
    const mask = slots - 1;
    const resolvers = new Array<Resolve<T> | null>(slots).fill(null);
    const rejecters = new Array<Reject | null>(slots).fill(null);
    for (let seq = this.settledThrough + 1; seq < this.nextSeq; seq++) {
      resolvers[seq & mask] = this.resolvers[seq & this.mask] ?? null;
      rejecters[seq & mask] = this.rejecters[seq & this.mask] ?? null;
    }
    this.mask = mask;
    this.resolvers = resolvers;
    this.rejecters = rejecters;
  }

  /** Sets the resolver of pending `seq` (from addSettlers); false if `seq` is already settled. */
  setResolver(seq: number, resolve: Resolve<T>): boolean {
    assert(seq < this.nextSeq, `FutureRing.setResolver: ${seq} was never added`);
    if (seq <= this.settledThrough) return false;
    this.resolvers[seq & this.mask] = resolve;
    return true;
  }

  /** Resolves every pending sequence number <= seq with `value` (a cumulative acknowledgement). */
  resolveThrough(seq: number, value: T): number {
    const last = Math.min(seq, this.nextSeq - 1);
    let settled = 0;
    for (let current = this.settledThrough + 1; current <= last; current++) {
      const slot = current & this.mask;
      const resolve = this.resolvers[slot];
      this.resolvers[slot] = null;
      this.rejecters[slot] = null;
      if (resolve) resolve(value); // null for writes settled by a shared promise (addSettlers)
      settled++;
    }
    if (last > this.settledThrough) this.settledThrough = last;
    return settled;
  }

  /**
   * Rejects pending sequence number `seq` now, ahead of the ones before it; a later resolveThrough
   * passes over it. False if it is not pending (settled already, or never added).
   */
  rejectOne(seq: number, reason: unknown): boolean {
    if (seq <= this.settledThrough || seq >= this.nextSeq) return false;
    const slot = seq & this.mask;
    const reject = this.rejecters[slot];
    if (reject === null || reject === undefined) return false;
    this.resolvers[slot] = null;
    this.rejecters[slot] = null;
    reject(reason);
    return true;
  }

  /** Resolves exactly sequence number `seq`, which must be the oldest pending one. */
  resolveOne(seq: number, value: T): void {
    assert(seq === this.settledThrough + 1 && seq < this.nextSeq, `FutureRing.resolveOne: ${seq} is not the oldest pending`);
    const slot = seq & this.mask;
    const resolve = this.resolvers[slot];
    this.resolvers[slot] = null;
    this.rejecters[slot] = null;
    this.settledThrough = seq;
    if (resolve) resolve(value); // null for writes settled by a shared promise (addSettlers)
  }

  /** Rejects each pending sequence number <= seq with reasonFor(seq). */
  rejectThrough(seq: number, reasonFor: (seq: number) => unknown): number {
    const last = Math.min(seq, this.nextSeq - 1);
    let settled = 0;
    for (let current = this.settledThrough + 1; current <= last; current++) {
      const slot = current & this.mask;
      const reject = this.rejecters[slot]!;
      this.resolvers[slot] = null;
      this.rejecters[slot] = null;
      reject(reasonFor(current));
      settled++;
    }
    if (last > this.settledThrough) this.settledThrough = last;
    return settled;
  }

  /** Rejects everything pending (close, failure). */
  rejectAll(reason: unknown): number {
    return this.rejectThrough(this.nextSeq - 1, () => reason);
  }
}
