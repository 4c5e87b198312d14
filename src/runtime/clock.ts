/**
 * Time, passed in (STYLE.md, practice 3): the client pipelines and sessions read the time and set
 * their timers only through a Clock, so the real one runs them on Node's timers and the simulator
 * runs the very same code on simulated time, deterministically, from a seed.
 */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Monotonic time, in milliseconds (fractions allowed). */
  nowMs(): number;
  /** Runs `callback` once the current turn is over (Node: setImmediate). */
  soon(callback: () => void): void;
  /** Runs `callback` after `delayMs` milliseconds. A timer the process need not wait for is `unref`. */
  after(delayMs: number, callback: () => void, options?: { unref?: boolean }): Timer;
}

/** Node's timers and performance.now(). */
export const systemClock: Clock = {
  nowMs: () => performance.now(),
  soon: (callback) => {
    setImmediate(callback);
  },
  after: (delayMs, callback, options) => {
    const handle = setTimeout(callback, delayMs);
    if (options?.unref === true) handle.unref();
    return { cancel: () => clearTimeout(handle) };
  },
};
