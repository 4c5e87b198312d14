/**
 * Simulated time: one queue of events ordered by (time, order of scheduling), and the Clock the
 * client code runs on (src/runtime/clock.ts). Nothing here reads a real clock, so a run is a pure
 * function of its seed: the same events in the same order every time.
 *
 * Time is in milliseconds, whole ones: every delay in the simulator is a whole number of ticks.
 * `soon()` runs at the current time after every event already due then (the end of the current
 * turn, as setImmediate would); `after()` at a later time.
 */
import { assert } from '../../native-free-core/assert.js';
import type { Clock, Timer } from '../../src/runtime/clock.js';

interface Event {
  at: number;
  /** Scheduling order: events due at the same time run in the order they were scheduled. */
  order: number;
  run: () => void;
  cancelled: boolean;
}

export class Scheduler {
  private nowValue = 0;
  private nextOrder = 0;
  /** A binary min-heap on (at, order). */
  private readonly heap: Event[] = [];
  eventsRun = 0;

  get now(): number {
    return this.nowValue;
  }

  get size(): number {
    return this.heap.length;
  }

  /** Runs `run` at time `at` (not before now). Returns a handle whose cancel() drops it. */
  at(at: number, run: () => void): Timer {
    assert(Number.isInteger(at) && at >= this.nowValue, `Scheduler.at: ${at} is not a whole time from now (${this.nowValue}) on`);
    const event: Event = { at, order: this.nextOrder++, run, cancelled: false };
    this.push(event);
    return { cancel: () => (event.cancelled = true) };
  }

  after(delay: number, run: () => void): Timer {
    return this.at(this.nowValue + delay, run);
  }

  /** Runs the next event if it is due by `until`; false when there is none. */
  runNext(until: number): boolean {
    const event = this.heap[0];
    if (event === undefined || event.at > until) return false;
    this.pop();
    if (event.cancelled) return true;
    this.nowValue = event.at;
    this.eventsRun++;
    event.run();
    return true;
  }

  /** Moves time forward to `until` when no event is due before it. */
  advanceTo(until: number): void {
    assert(until >= this.nowValue && (this.heap.length === 0 || this.heap[0]!.at >= until), 'Scheduler.advanceTo: events are due before');
    this.nowValue = until;
  }

  private push(event: Event): void {
    const heap = this.heap;
    heap.push(event);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!before(event, heap[parent]!)) break;
      heap[index] = heap[parent]!;
      index = parent;
    }
    heap[index] = event;
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    let index = 0;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && before(heap[right]!, heap[left]!) ? right : left;
      if (!before(heap[child]!, last)) break;
      heap[index] = heap[child]!;
      index = child;
    }
    heap[index] = last;
  }
}

function before(a: Event, b: Event): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

/** The Clock the real client session runs on, driven by the scheduler. */
export class SimulatedClock implements Clock {
  constructor(private readonly scheduler: Scheduler) {}

  nowMs(): number {
    return this.scheduler.now;
  }

  soon(callback: () => void): void {
    this.scheduler.at(this.scheduler.now, callback);
  }

  after(delayMs: number, callback: () => void): Timer {
    // Client code may ask for fractions of a millisecond (a linger); simulated time is whole ticks.
    return this.scheduler.after(Math.max(1, Math.ceil(delayMs)), callback);
  }
}
