/**
 * How long a node thread polls for work before it sleeps on its doorbell, adapted at run time.
 * Spinning pays when work comes back within the spin (the thread skips a sleep and a wake-up, tens
 * of microseconds each); it costs when the work is far off, and on a machine with no spare core it
 * takes the core from the very thread that would produce the work. So the budget doubles when a
 * wait ended while spinning, or was so short (spin and sleep together) that spinning would have
 * caught its work, and halves when the thread spun in vain and then slept long. `max` 0 (no spare core: see
 * src/options.ts) never spins.
 */

/** A wait shorter than this would have been caught by spinning (a spin of ~2000 polls takes ~50 us here). */
export const SHORT_SLEEP_MS = 0.05;
/** Where the budget restarts when short sleeps show spinning would pay again. */
const SPIN_RESTART = 64;

export class SpinBudget {
  /** Polls before the next sleep. */
  iterations: number;

  constructor(readonly max: number) {
    this.iterations = max;
  }

  /** After a wait: whether it went to sleep, and how long the whole wait took (ms). */
  record(slept: boolean, waitedMs: number): void {
    if (this.max === 0) return;
    if (!slept || waitedMs < SHORT_SLEEP_MS) this.iterations = Math.min(this.max, Math.max(SPIN_RESTART, this.iterations * 2));
    else this.iterations >>= 1;
  }
}
