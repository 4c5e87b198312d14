/**
 * A metronome for open-loop load. A worker thread sleeps `tickUs` at a time in Atomics.wait (which
 * has microsecond resolution and costs no CPU while it sleeps) and then bumps a shared counter; the
 * main thread awaits the bump with Atomics.waitAsync. The event loop's own timers tick in whole
 * milliseconds, and yielding with setImmediate instead keeps the main thread spinning: on a small
 * machine that spinning takes most of a core from the chain it measures (measured: ~90 % of one of
 * two cores, against ~30 % for a 250 us metronome).
 */
import { Worker } from 'node:worker_threads';

interface AtomicsWaitAsync {
  waitAsync(typedArray: Int32Array, index: number, value: number, timeout: number): { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
}

const TICKS = 0;
const STOP = 1;
const TICK_WAIT_MS_MAX = 1000;

/** The worker's whole program: a few lines of plain JavaScript, so it needs no build step. */
const METRONOME_SOURCE = `
const { workerData } = require('node:worker_threads');
const cells = new Int32Array(workerData.cells);
const sleeper = new Int32Array(new SharedArrayBuffer(4));
while (Atomics.load(cells, ${STOP}) === 0) {
  Atomics.wait(sleeper, 0, 0, workerData.tickMs);
  Atomics.add(cells, ${TICKS}, 1);
  Atomics.notify(cells, ${TICKS});
}
`;

export class Pacer {
  private readonly cells = new Int32Array(new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT));
  private readonly worker: Worker;

  /** A running pacer: resolves once it ticks, so a thread's start is not counted as a late tick. */
  static async start(tickUs: number): Promise<Pacer> {
    const pacer = new Pacer(tickUs);
    await pacer.tick();
    return pacer;
  }

  private constructor(readonly tickUs: number) {
    if (!(tickUs >= 10 && tickUs <= 1_000_000)) throw new RangeError(`pacer tick must be 10 us to 1 s, got ${tickUs}`);
    this.worker = new Worker(METRONOME_SOURCE, { eval: true, workerData: { cells: this.cells.buffer, tickMs: tickUs / 1000 } });
    // Not unref'd: a waitAsync holds no handle, so while a load awaits its ticks the thread is what
    // keeps the process alive. stop() ends it.
  }

  /**
   * Resolves at the next tick (or at once if one came since the last call returned); after a
   * second at most, should the metronome thread be gone, so a load never hangs on it.
   */
  async tick(): Promise<void> {
    const seen = Atomics.load(this.cells, TICKS);
    const wait = (Atomics as unknown as AtomicsWaitAsync).waitAsync(this.cells, TICKS, seen, TICK_WAIT_MS_MAX);
    if (wait.async) await wait.value;
  }

  async stop(): Promise<void> {
    Atomics.store(this.cells, STOP, 1);
    await this.worker.terminate();
  }
}
