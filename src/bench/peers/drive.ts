/**
 * The timed write loop both peers run: `workers` concurrent loops for a duration, each reporting
 * the writes it completed and when it issued them; the result is writes/s and latency percentiles.
 */
import { createHistogram, performance } from 'node:perf_hooks';

export interface PeerReport {
  writesPerSecond: number;
  p50Us: number;
  p99Us: number;
}

export interface DriveSession {
  /** False once the duration has passed: a loop finishes its current step and returns. */
  readonly running: boolean;
  /** `writes` completed by one step issued at `issuedAt` (performance.now()). */
  completed(writes: number, issuedAt: number): void;
}

export async function driveFor(durationMs: number, workers: number, loop: (workerIndex: number, session: DriveSession) => Promise<void>): Promise<PeerReport> {
  const histogram = createHistogram();
  let writes = 0;
  const session = {
    running: true,
    completed(count: number, issuedAt: number): void {
      histogram.record(Math.max(1, Math.round((performance.now() - issuedAt) * 1000)));
      writes += count;
    },
  };
  const started = performance.now();
  const stopTimer = setTimeout(() => (session.running = false), durationMs);
  try {
    await Promise.all(Array.from({ length: workers }, (_, index) => loop(index, session)));
  } finally {
    session.running = false;
    clearTimeout(stopTimer);
  }
  const seconds = (performance.now() - started) / 1000;
  return { writesPerSecond: writes / seconds, p50Us: histogram.percentile(50), p99Us: histogram.percentile(99) };
}
