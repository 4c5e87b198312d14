/**
 * Fail-slow detection: chain replication's weak spot is a replica that is slow, not dead (a
 * throttled CPU, a dying disk): every write waits for it, and no failure detector notices. Each
 * node reports how long it was busy applying and sending on batches (wall time: a throttled or
 * stalled thread counts the time it was held up) and how many writes it applied; over the last
 * `windowMs` that is its time per write. A node whose time per write stays above `factor` times the
 * median of its peers' (the other nodes holding replicas) for `forMs` is slow: the master moves it
 * out of the data path (its replicas are removed; the chains go on without it, or on a spare) and
 * keeps it out for a quarantine, after which it joins again, at the tail. A node found slow again
 * within twice its last quarantine is kept out twice as long (up to `quarantineMaxMs`): hysteresis,
 * so a node that stays slow cannot flap in and out.
 *
 * Pure: time comes in as numbers (ms), and nothing here acts; the master asks and carries out.
 */
import { assert } from '../assert.js';

export interface FailSlowSettings {
  /** Slower than this many times the median of its peers' time per write... */
  factor: number;
  /** ...for this long (ms). */
  forMs: number;
  /** Time per write is measured over this long (ms). */
  windowMs: number;
  /** Fewer writes than this in the window, for the node or its peers' median: no verdict (an idle chain is not slow). */
  writesMin: number;
  /** How long a slow node is kept out at first (ms), doubled each time it is found slow again, up to quarantineMaxMs. */
  quarantineMs: number;
  quarantineMaxMs: number;
}

export const FAIL_SLOW_DEFAULTS: FailSlowSettings = { factor: 4, forMs: 2000, windowMs: 1000, writesMin: 500, quarantineMs: 30_000, quarantineMaxMs: 600_000 };

/** What a node reported: cumulative busy ms and writes applied over its replicas. */
export interface NodeLoad {
  busyMs: number;
  writesApplied: number;
}

interface Sample extends NodeLoad {
  at: number;
}

export class FailSlowDetector {
  private readonly samples = new Map<string, Sample[]>();
  private readonly slowSince = new Map<string, number>();
  private readonly quarantines = new Map<string, { until: number; lengthMs: number }>();

  constructor(readonly settings: FailSlowSettings = FAIL_SLOW_DEFAULTS) {
    assert(settings.factor > 1, 'FailSlowDetector: factor must be > 1');
    assert(settings.forMs >= 0 && settings.windowMs > 0 && settings.writesMin >= 1, 'FailSlowDetector: bad window');
    assert(settings.quarantineMs > 0 && settings.quarantineMaxMs >= settings.quarantineMs, 'FailSlowDetector: bad quarantine');
  }

  /**
   * Takes every node's report at `now` (those holding replicas; a node missing is forgotten) and
   * returns the node persistently slower than its peers, the slowest if several, or null. Needs
   * three nodes at least: with two, which of them is the slow one is a guess.
   */
  observe(loads: ReadonlyMap<string, NodeLoad>, now: number): { node: string; timesMedian: number } | null {
    for (const node of this.samples.keys()) {
      if (!loads.has(node)) {
        this.samples.delete(node);
        this.slowSince.delete(node);
      }
    }
    const perWrite = new Map<string, number>();
    for (const [node, load] of loads) {
      const samples = this.samples.get(node) ?? [];
      this.samples.set(node, samples);
      samples.push({ at: now, ...load });
      // Keep one sample at or before the window's start, and what came after it.
      while (samples.length > 2 && samples[1]!.at <= now - this.settings.windowMs) samples.shift();
      const oldest = samples[0]!;
      const writes = load.writesApplied - oldest.writesApplied;
      if (now - oldest.at >= this.settings.windowMs / 2 && writes >= this.settings.writesMin) perWrite.set(node, (load.busyMs - oldest.busyMs) / writes);
    }
    let verdict: { node: string; timesMedian: number } | null = null;
    for (const node of loads.keys()) {
      const own = perWrite.get(node);
      const peers = [...perWrite].filter(([other]) => other !== node).map(([, value]) => value);
      const median = peers.length >= 2 ? medianOf(peers) : null;
      if (own === undefined || median === null || median <= 0 || own <= this.settings.factor * median) {
        this.slowSince.delete(node);
        continue;
      }
      const since = this.slowSince.get(node) ?? now;
      this.slowSince.set(node, since);
      const timesMedian = own / median;
      if (now - since >= this.settings.forMs && (verdict === null || timesMedian > verdict.timesMedian)) verdict = { node, timesMedian };
    }
    return verdict;
  }

  /** `node` was moved out at `now`: kept out for its quarantine (doubled if it was found slow again soon after the last). */
  quarantine(node: string, now: number): number {
    const last = this.quarantines.get(node);
    const again = last !== undefined && now - last.until < 2 * last.lengthMs;
    const lengthMs = again ? Math.min(this.settings.quarantineMaxMs, 2 * last.lengthMs) : this.settings.quarantineMs;
    this.quarantines.set(node, { until: now + lengthMs, lengthMs });
    this.samples.delete(node);
    this.slowSince.delete(node);
    return now + lengthMs;
  }

  isQuarantined(node: string, now: number): boolean {
    const quarantine = this.quarantines.get(node);
    return quarantine !== undefined && now < quarantine.until;
  }

  /** The nodes kept out now. */
  quarantined(now: number): string[] {
    return [...this.quarantines].filter(([, { until }]) => now < until).map(([node]) => node);
  }
}

/** A node moved out for being slow: how much slower than its peers, and until when it is kept out. */
export interface Demotion {
  node: string;
  timesMedian: number;
  until: number;
}

/**
 * The masters' fail-slow policy, one for the in-process table master and the etcd master: which
 * nodes are benched (kept out of the placement, so the moves take their replicas off them) and
 * until when. A node is benched when the detector finds it slow, one node at a time, and never
 * when that would leave fewer than two planned nodes (a chain of one would hold the only copy of
 * every write); it is planned again once its quarantine is over (it joins at the tails) or when it
 * is down (a failure is the failure detector's).
 */
export class SlowNodeBench {
  private readonly detector: FailSlowDetector;
  private readonly benchedUntil = new Map<string, number>();
  /** Nodes benched so far. */
  demotions = 0;

  constructor(settings: FailSlowSettings) {
    this.detector = new FailSlowDetector(settings);
  }

  isBenched(node: string): boolean {
    return this.benchedUntil.has(node);
  }

  get benched(): ReadonlySet<string> {
    return new Set(this.benchedUntil.keys());
  }

  /** Plans again the benched nodes whose quarantine is over at `now`, and those that are down. */
  release(now: number, isDown: (node: string) => boolean): void {
    for (const [node, until] of this.benchedUntil) if (now >= until || isDown(node)) this.benchedUntil.delete(node);
  }

  /**
   * Takes the loads of the planned nodes that hold replicas; benches the one found slow if the
   * rules allow, and returns it, or null. The rules: the master may move chains now (`canMove`);
   * more than two nodes are planned before this (`plannedNodes`); and every other node that
   * reported is known healthy now (`isHealthy`: heard from lately), at least two of them. Moving a
   * working replica out is a choice, not a repair: it must not happen while another member may be
   * dead and not yet found so, or the chain could be left with no live replica.
   */
  observe(loads: ReadonlyMap<string, NodeLoad>, now: number, situation: { canMove: boolean; plannedNodes: number; isHealthy: (node: string) => boolean }): Demotion | null {
    const verdict = this.detector.observe(loads, now);
    if (verdict === null || !situation.canMove || this.benchedUntil.size > 0 || situation.plannedNodes <= 2) return null;
    const others = [...loads.keys()].filter((node) => node !== verdict.node);
    if (others.length < 2 || !others.every(situation.isHealthy)) return null;
    const until = this.detector.quarantine(verdict.node, now);
    this.benchedUntil.set(verdict.node, until);
    this.demotions++;
    return { ...verdict, until };
  }
}

function medianOf(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}
