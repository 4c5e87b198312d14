import { ErrorCode } from '../native-free-core/errors.js';

/*
 * A thread's wake-up cell. One owner thread sleeps on it while it waits for work on SEVERAL rings
 * (records to consume in its inbound rings, or space in its outbound rings); every thread that can
 * give it work rings it after making the work visible (after ring.publish() or ring.release()).
 *
 * Layout: an Int32Array of DOORBELL_INT32S cells over a small SharedArrayBuffer.
 *
 * Why a wake-up cannot be missed. JavaScript atomics are sequentially consistent: all Atomics
 * operations on all threads fall into one total order that agrees with each thread's program order.
 *
 *   producer (any thread)                    owner
 *   P1 Atomics.store ring write/read index   O1 Atomics.store SLEEPING = 1
 *   P2 Atomics.load SLEEPING                 O2 s = Atomics.load SEQUENCE
 *   P3 if 1: Atomics.add SEQUENCE, notify    O3 hasWork(): Atomics.load ring index
 *                                            O4 if no work: Atomics.wait(SEQUENCE, s)
 *
 * Either P2 comes before O1 in the total order, or after it.
 * - P2 before O1: then P1 < P2 < O1 < O3, so O3 observes the new index, hasWork() is true and the
 *   owner does not sleep. (P2 read 0 and the producer did not ring, which is fine.)
 * - P2 after O1: P2 reads 1 and the producer bumps SEQUENCE (P3). If the bump comes before O2, then
 *   P1 < P3 < O2 < O3 and hasWork() is true as above. If it comes after O2, SEQUENCE no longer holds
 *   `s` when the owner calls Atomics.wait, which returns 'not-equal' at once, or the owner is already
 *   waiting and the notify wakes it: Atomics.wait compares and blocks atomically with respect to
 *   Atomics.notify.
 * This is Dekker's pattern (each side stores its own flag, then loads the other's), which is why every
 * access here must be an Atomics operation: a plain load or store would fall outside the total order.
 *
 * The common path stays cheap: a producer pays one Atomics.load of SLEEPING per ring() and only
 * touches SEQUENCE (and makes a system call) when the owner is actually sleeping.
 */

/**
 * Int32 index of the owner's flag: 1 from just before its last check for work until it wakes up.
 * Written only by the owner; loaded by producers on every ring(). The owner stores 1 BEFORE it
 * reads SEQUENCE and re-checks for work, and producers load it AFTER they published (see above).
 */
export const DOORBELL_SLEEPING_INDEX = 0;
/**
 * Int32 index of the wake-up sequence, in its own 64-byte cache line so producers bumping it do not
 * disturb the line of SLEEPING. Bumped (Atomics.add, any number of producers) only when SLEEPING was
 * seen set, then Atomics.notify; the owner reads it BEFORE its re-check and waits on that value, so a
 * bump between its re-check and its Atomics.wait makes the wait return at once.
 */
export const DOORBELL_SEQUENCE_INDEX = 16;
/** Int32 cells in a doorbell (two 64-byte cache lines). */
export const DOORBELL_INT32S = 32;

interface AtomicsWaitAsync {
  waitAsync(
    typedArray: Int32Array,
    index: number,
    value: number,
    timeout?: number,
  ): { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
}

function outOfRange(message: string): RangeError & { code: ErrorCode } {
  return Object.assign(new RangeError(message), { code: ErrorCode.outOfRange });
}

function validateTimeout(timeoutMs: number): void {
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0) {
    throw outOfRange(`doorbell timeoutMs must be a non-negative number (or Infinity), got ${timeoutMs}`);
  }
}

export class Doorbell {
  static allocate(): SharedArrayBuffer {
    return new SharedArrayBuffer(DOORBELL_INT32S * Int32Array.BYTES_PER_ELEMENT);
  }

  private readonly cells: Int32Array;

  /** Times the owner actually went to sleep (for stats and tests). */
  sleepCount = 0;
  /** Times a sleep ended by its timeout rather than by ring(). */
  timeoutCount = 0;
  /** Whether the last waitBlocking() went to sleep (false: work came while it spun or re-checked). */
  lastWaitSlept = false;

  constructor(buffer: SharedArrayBuffer) {
    if (!(buffer instanceof SharedArrayBuffer)) {
      throw Object.assign(new TypeError('doorbell buffer must be a SharedArrayBuffer'), {
        code: ErrorCode.invalidArgument,
      });
    }
    if (buffer.byteLength !== DOORBELL_INT32S * Int32Array.BYTES_PER_ELEMENT) {
      throw outOfRange(
        `doorbell buffer must be ${DOORBELL_INT32S * Int32Array.BYTES_PER_ELEMENT} bytes, got ${buffer.byteLength}`,
      );
    }
    this.cells = new Int32Array(buffer);
  }

  /**
   * Producer side, AFTER the work is visible (ring.publish() or ring.release()): wakes the owner
   * only if it is sleeping or about to.
   */
  ring(): void {
    if (Atomics.load(this.cells, DOORBELL_SLEEPING_INDEX) === 0) return;
    Atomics.add(this.cells, DOORBELL_SEQUENCE_INDEX, 1);
    Atomics.notify(this.cells, DOORBELL_SEQUENCE_INDEX);
  }

  /**
   * Owner side, blocking (worker threads only: it would stall the main thread's event loop).
   * Spins `spinIterations` times calling hasWork(), then announces it is sleeping, re-checks
   * hasWork() and sleeps until rung or until `timeoutMs` passed. Returns true if hasWork() became
   * true; false means a timeout or a ring for work the owner does not count yet: call again.
   */
  waitBlocking(hasWork: () => boolean, spinIterations: number, timeoutMs: number): boolean {
    if (!Number.isInteger(spinIterations) || spinIterations < 0) {
      throw outOfRange(`doorbell spinIterations must be a non-negative integer, got ${spinIterations}`);
    }
    validateTimeout(timeoutMs);
    this.lastWaitSlept = false;
    for (let iteration = 0; iteration < spinIterations; iteration++) {
      if (hasWork()) return true;
    }
    Atomics.store(this.cells, DOORBELL_SLEEPING_INDEX, 1);
    const sequence = Atomics.load(this.cells, DOORBELL_SEQUENCE_INDEX);
    if (hasWork()) {
      Atomics.store(this.cells, DOORBELL_SLEEPING_INDEX, 0);
      return true;
    }
    this.sleepCount++;
    this.lastWaitSlept = true;
    const outcome = Atomics.wait(this.cells, DOORBELL_SEQUENCE_INDEX, sequence, timeoutMs);
    if (outcome === 'timed-out') this.timeoutCount++;
    Atomics.store(this.cells, DOORBELL_SLEEPING_INDEX, 0);
    return hasWork();
  }

  /**
   * Owner side for the main thread (never blocks): the same protocol with Atomics.waitAsync, without
   * spinning. Resolves when rung or timed out; the caller re-checks its rings.
   */
  async waitAsync(hasWork: () => boolean, timeoutMs: number): Promise<void> {
    validateTimeout(timeoutMs);
    Atomics.store(this.cells, DOORBELL_SLEEPING_INDEX, 1);
    const sequence = Atomics.load(this.cells, DOORBELL_SEQUENCE_INDEX);
    if (hasWork()) {
      Atomics.store(this.cells, DOORBELL_SLEEPING_INDEX, 0);
      return;
    }
    this.sleepCount++;
    const result = (Atomics as unknown as AtomicsWaitAsync).waitAsync(
      this.cells,
      DOORBELL_SEQUENCE_INDEX,
      sequence,
      timeoutMs,
    );
    const outcome = result.async ? await result.value : result.value;
    if (outcome === 'timed-out') this.timeoutCount++;
    Atomics.store(this.cells, DOORBELL_SLEEPING_INDEX, 0);
  }
}
