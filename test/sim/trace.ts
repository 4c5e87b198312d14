/**
 * The simulator's trace: the last notable events (faults, reconfigurations, client operations,
 * refusals), printed with the seed when a run fails. With `verbose` every frame delivered is noted
 * too (a replay: `npm run test:sim -- --seed N --verbose`).
 */
import type { Scheduler } from './clock.js';

export class SimulationFailure extends Error {
  constructor(seed: number, reason: string, trace: readonly string[]) {
    super(`${reason}\nreproduce with --seed=${seed}\nlast events:\n  ${trace.join('\n  ')}`);
    this.name = 'SimulationFailure';
  }
}

export class Trace {
  private readonly lines: string[] = [];

  constructor(
    private readonly seed: number,
    private readonly scheduler: Scheduler,
    private readonly kept: number,
    readonly verbose: boolean,
  ) {}

  note(line: string): void {
    this.lines.push(`${this.scheduler.now}: ${line}`);
    if (this.lines.length > this.kept) this.lines.shift();
  }

  /** A detail only a verbose replay wants (built only then). */
  detail(line: () => string): void {
    if (this.verbose) this.note(line());
  }

  fail(reason: string): never {
    throw new SimulationFailure(this.seed, reason, this.lines);
  }

  /** Asserts a property of the run: a violation fails it with the seed and the trace. */
  check(condition: boolean, reason: () => string): asserts condition {
    if (!condition) this.fail(reason());
  }
}
