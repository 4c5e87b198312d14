/**
 * Refusals (malformed frames, failed handshakes, frames a replica refused, connections over a cap)
 * are counted by code, and logged at most a few times a second per code: a peer that sends garbage
 * in a loop must not be able to fill the disk with log lines. When lines were held back, the next
 * line for that code says how many. The counts appear in the host's /status.
 */
const LINES_PER_WINDOW_MAX = 10;
const WINDOW_MS = 1000;

interface CodeWindow {
  windowStartedAt: number;
  linesInWindow: number;
  suppressed: number;
}

export class RefusalLog {
  private readonly counts = new Map<string, number>();
  private readonly windows = new Map<string, CodeWindow>();

  constructor(private readonly now: () => number = () => performance.now()) {}

  /**
   * Counts one refusal of `code`; returns whether to log it now, and how many earlier ones of this
   * code were held back since the last line (so the line can say so), or null to stay quiet.
   */
  note(code: string): { suppressed: number } | null {
    this.counts.set(code, (this.counts.get(code) ?? 0) + 1);
    const now = this.now();
    let window = this.windows.get(code);
    if (window === undefined) this.windows.set(code, (window = { windowStartedAt: now, linesInWindow: 0, suppressed: 0 }));
    if (now - window.windowStartedAt >= WINDOW_MS) {
      window.windowStartedAt = now;
      window.linesInWindow = 0;
    }
    if (window.linesInWindow >= LINES_PER_WINDOW_MAX) {
      window.suppressed++;
      return null;
    }
    window.linesInWindow++;
    const suppressed = window.suppressed;
    window.suppressed = 0;
    return { suppressed };
  }

  /** Refusals so far, by code. */
  totals(): Record<string, number> {
    return Object.fromEntries([...this.counts].sort(([a], [b]) => a.localeCompare(b)));
  }
}
