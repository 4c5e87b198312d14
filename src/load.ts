/**
 * A closed-loop load generator for a chain: writers each keep a window of puts in flight and
 * issue the next window as soon as the previous one is acknowledged; readers do the same with gets.
 * Used by `npm start` and by the benchmarks.
 *
 * Latency is sampled: every `sampleEvery`-th write gets its own completion callback and is
 * recorded from its put() call to its acknowledgement. Acks are cumulative and resolve writes in
 * bulk, so sampling one write in N is an unbiased view of per-write latency without adding a
 * callback to every write.
 *
 * A window ends when every operation in it is answered. Acks arrive in order per chain, so awaiting
 * the last write of each chain the window touched is enough (with many chains, the window's last
 * write alone would leave the other chains' writes pending and the loop would not be closed).
 * Replies do not: reads are spread over replicas (read lanes), each answering in its own time, so
 * every read of the window is awaited.
 */
import { createHistogram, performance, type RecordableHistogram } from 'node:perf_hooks';
import type { WriteConditions } from './conditions.js';
import { Pacer } from './bench/pacer.js';

/** What the load generator drives: the engine, or a baseline with the same put/get signatures. */
export interface LoadTarget {
  put(key: string, value: Uint8Array, conditions?: WriteConditions): Promise<void>;
  get?(key: string): Promise<Buffer | undefined>;
  putMany?(entries: Iterable<readonly [string, Uint8Array]>): Promise<void>;
  /** The chain a key belongs to, for a target with many chains (answers arrive in order per chain). */
  chainOf?(key: string): number;
}

export interface LoadOptions {
  durationMs: number;
  /** Distinct keys written and read (default 100k). */
  keySpace?: number;
  /** Key length in bytes (default 16). */
  keyBytes?: number;
  /** Value length in bytes (default 100). */
  valueBytes?: number;
  /** Writes a writer issues before awaiting the last of them (default 2048). */
  writeWindow?: number;
  /** Concurrent writers (default 2, so one window is acknowledged while the next is encoded). */
  writers?: number;
  /**
   * Fraction of each writer's window that is reads instead, spread evenly through it (default 0);
   * the sampled latencies then cover both kinds. Needs a target with get().
   */
  readRatio?: number;
  /** Concurrent readers, each with a window of `readWindow` gets (default 0). */
  readers?: number;
  readWindow?: number;
  /**
   * Each writer sends its window as one putMany() instead of a put() per write (no reads then):
   * one promise per window, as a pipelining client waits once per window. Latency is recorded per
   * window, from the call to its resolution (its last write's latency).
   */
  putMany?: boolean;
  /** Record the latency of one operation in this many (default 64). */
  sampleEvery?: number;
  /** Every put() is conditional on these (conditional writes' cost: bench/conditions-bench.ts). */
  writeConditions?: WriteConditions;
  /** Called about once a second with progress so far. */
  onProgress?: (progress: LoadProgress) => void;
  /** Stops the load early (it then ends as at durationMs: windows in flight finish first). */
  signal?: AbortSignal;
}

export interface LoadProgress {
  elapsedMs: number;
  writes: number;
  reads: number;
  /** Rates over the last progress interval (about a second). */
  writesPerSecond: number;
  readsPerSecond: number;
}

export interface LoadReport {
  seconds: number;
  writes: number;
  reads: number;
  writesPerSecond: number;
  readsPerSecond: number;
  /** Key + value megabytes per second acknowledged (1 MB = 10^6 bytes). */
  writeMegabytesPerSecond: number;
  writeLatencyUs: { p50: number; p99: number; p999: number; max: number; samples: number };
  rssStartMiB: number;
  rssEndMiB: number;
  /** A hash of the values read, printed so the work cannot be optimised away. */
  resultHash: number;
  /** With writeConditions: puts whose condition failed (counted among the writes). */
  conditionFailures: number;
}

export function makeKeys(count: number, keyBytes: number): string[] {
  const keys = new Array<string>(count);
  for (let index = 0; index < count; index++) {
    const digits = index.toString(36);
    keys[index] = 'k'.padEnd(Math.max(1, keyBytes - digits.length), '-') + digits;
  }
  return keys;
}

export function makeValue(valueBytes: number): Uint8Array {
  const value = new Uint8Array(valueBytes);
  for (let index = 0; index < valueBytes; index++) value[index] = 97 + (index % 26);
  return value;
}

/** The last write a window sent to each chain, and every read it sent: once they are answered, all are. */
class WindowEnds {
  readonly lastWrite: Array<Promise<unknown> | undefined>;
  readonly reads: Array<Promise<unknown>> = [];

  constructor(chains: number) {
    this.lastWrite = new Array<Promise<unknown> | undefined>(chains).fill(undefined);
  }

  async answered(): Promise<void> {
    const ends = this.lastWrite;
    for (let chain = 0; chain < ends.length; chain++) {
      const last = ends[chain];
      ends[chain] = undefined;
      if (last !== undefined) await last;
    }
    if (this.reads.length > 0) await Promise.all(this.reads);
    this.reads.length = 0;
  }
}

export async function runClosedLoop(chain: LoadTarget, options: LoadOptions): Promise<LoadReport> {
  return new ClosedLoop(chain, options).run();
}

/**
 * A closed-loop load: writers (and readers) each keep a window of operations in flight, and issue
 * the next window when the last of the previous one is answered, until the duration is up.
 */
class ClosedLoop {
  private readonly keySpace: number;
  private readonly keyBytes: number;
  private readonly valueBytes: number;
  private readonly writeWindow: number;
  private readonly readRatio: number;
  private readonly sampleEvery: number;
  private readonly keys: string[];
  /** Each key's chain (all 0 for a target with one chain or none). */
  private readonly keyChains: Uint16Array;
  private readonly chainCount: number;
  private readonly value: Uint8Array;
  private readonly histogram: RecordableHistogram = createHistogram();
  private writes = 0;
  private reads = 0;
  private conditionFailures = 0;
  /** A conditional put whose condition failed (anything else is rethrown). */
  private readonly countConditionFailed = (error: unknown): void => {
    if ((error as { code?: string }).code !== 'DABBA_ERR_CONDITION_FAILED') throw error;
    this.conditionFailures++;
  };
  private resultHash = 0;
  private running = true;

  constructor(
    private readonly chain: LoadTarget,
    private readonly options: LoadOptions,
  ) {
    this.keySpace = options.keySpace ?? 100_000;
    this.keyBytes = options.keyBytes ?? 16;
    this.valueBytes = options.valueBytes ?? 100;
    this.writeWindow = options.writeWindow ?? 2048;
    this.readRatio = options.readRatio ?? 0;
    this.sampleEvery = options.sampleEvery ?? 64;
    this.keys = makeKeys(this.keySpace, this.keyBytes);
    this.keyChains = Uint16Array.from(this.keys, (key) => chain.chainOf?.(key) ?? 0);
    this.chainCount = this.keyChains.reduce((most, chainOfKey) => Math.max(most, chainOfKey), 0) + 1;
    this.value = makeValue(this.valueBytes);
    if (this.readRatio > 0 && chain.get === undefined) throw new RangeError('a read ratio needs a target that serves reads');
    if (options.putMany === true && (chain.putMany === undefined || this.readRatio > 0)) {
      throw new RangeError('putMany windows need a target with putMany() and no read ratio');
    }
  }

  async run(): Promise<LoadReport> {
    const { options } = this;
    const writers = options.writers ?? 2;
    const readers = this.chain.get === undefined ? 0 : (options.readers ?? 0);
    const rssStart = process.memoryUsage().rss;
    const started = performance.now();
    const progressTimer = options.onProgress === undefined ? undefined : this.reportProgress(started, options.onProgress);
    const stop = (): void => {
      this.running = false;
    };
    const stopTimer = setTimeout(stop, options.durationMs);
    options.signal?.addEventListener('abort', stop, { once: true });
    const loops = [
      ...Array.from({ length: writers }, (_, index) => (options.putMany === true ? this.windowWriter(index) : this.writer(index))),
      ...Array.from({ length: readers }, (_, index) => this.reader(index)),
    ];
    await Promise.all(loops);
    const seconds = (performance.now() - started) / 1000;
    clearTimeout(stopTimer);
    options.signal?.removeEventListener('abort', stop);
    if (progressTimer !== undefined) clearInterval(progressTimer);
    return this.report(seconds, rssStart);
  }

  /** One putMany() per window: one promise for the whole window. */
  private async windowWriter(writerIndex: number): Promise<void> {
    let cursor = (writerIndex * 7919) % this.keySpace;
    // One array of entries per writer, refilled each window: putMany encodes them before it returns.
    const entries = Array.from({ length: this.writeWindow }, (): [string, Uint8Array] => ['', this.value]);
    while (this.running) {
      for (const entry of entries) {
        entry[0] = this.keys[cursor]!;
        if (++cursor === this.keySpace) cursor = 0;
      }
      const issued = performance.now();
      await this.chain.putMany!(entries);
      this.histogram.record(Math.max(1, Math.round((performance.now() - issued) * 1000)));
      this.writes += this.writeWindow;
    }
  }

  /** One put() (or, at the read ratio, one get()) per operation, every sampleEvery-th timed. */
  private async writer(writerIndex: number): Promise<void> {
    const { chain, keys, keyChains, keySpace, writeWindow } = this;
    const window = new WindowEnds(this.chainCount);
    const conditions = this.options.writeConditions;
    let cursor = (writerIndex * 7919) % keySpace;
    let readCredit = 0;
    while (this.running) {
      let windowReads = 0;
      for (let index = 0; index < writeWindow; index++) {
        readCredit += this.readRatio;
        let operation: Promise<unknown>;
        if (readCredit >= 1) {
          readCredit -= 1;
          windowReads++;
          operation = chain.get!(keys[cursor]!);
          window.reads.push(operation);
        } else {
          operation = window.lastWrite[keyChains[cursor]!] =
            conditions === undefined ? chain.put(keys[cursor]!, this.value) : chain.put(keys[cursor]!, this.value, conditions).catch(this.countConditionFailed);
        }
        if (++cursor === keySpace) cursor = 0;
        if (index % this.sampleEvery === 0) {
          const issued = performance.now();
          operation.then(() => this.histogram.record(Math.max(1, Math.round((performance.now() - issued) * 1000))));
        }
      }
      await window.answered();
      this.writes += writeWindow - windowReads;
      this.reads += windowReads;
    }
  }

  private async reader(readerIndex: number): Promise<void> {
    const readWindow = this.options.readWindow ?? 256;
    const window = new WindowEnds(this.chainCount);
    let cursor = (readerIndex * 104729) % this.keySpace;
    while (this.running) {
      let last: Promise<Buffer | undefined> | undefined;
      for (let index = 0; index < readWindow; index++) {
        last = this.chain.get!(this.keys[cursor]!);
        window.reads.push(last);
        if (++cursor === this.keySpace) cursor = 0;
      }
      const found = await last;
      await window.answered();
      this.resultHash = (Math.imul(this.resultHash, 31) + (found?.length ?? 0) + 1) >>> 0;
      this.reads += readWindow;
    }
  }

  private reportProgress(started: number, onProgress: NonNullable<LoadOptions['onProgress']>): NodeJS.Timeout {
    let previous = { at: started, writes: 0, reads: 0 };
    return setInterval(() => {
      const now = performance.now();
      const intervalMs = now - previous.at;
      onProgress({
        elapsedMs: now - started,
        writes: this.writes,
        reads: this.reads,
        writesPerSecond: ((this.writes - previous.writes) * 1000) / intervalMs,
        readsPerSecond: ((this.reads - previous.reads) * 1000) / intervalMs,
      });
      previous = { at: now, writes: this.writes, reads: this.reads };
    }, 1000);
  }

  private report(seconds: number, rssStart: number): LoadReport {
    const { histogram } = this;
    return {
      seconds,
      writes: this.writes,
      reads: this.reads,
      writesPerSecond: this.writes / seconds,
      readsPerSecond: this.reads / seconds,
      writeMegabytesPerSecond: (this.writes * (this.keyBytes + this.valueBytes)) / seconds / 1e6,
      writeLatencyUs: {
        p50: histogram.percentile(50),
        p99: histogram.percentile(99),
        p999: histogram.percentile(99.9),
        max: histogram.max,
        samples: histogram.count,
      },
      rssStartMiB: rssStart / 1048576,
      rssEndMiB: process.memoryUsage().rss / 1048576,
      resultHash: this.resultHash,
      conditionFailures: this.conditionFailures,
    };
  }
}

export interface OpenLoopOptions {
  /** Offered load, writes per second. */
  ratePerSecond: number;
  durationMs: number;
  keySpace?: number;
  keyBytes?: number;
  valueBytes?: number;
  /** Record the latency of one write in this many (default 16). */
  sampleEvery?: number;
  /** The schedule's granularity: writes due are issued every this many microseconds (default 250). */
  tickUs?: number;
}

/**
 * Open-loop writes are issued in ticks of this many microseconds (./bench/pacer.ts). A finer tick
 * adds less to each write's latency (half a tick on average) and costs more wake-ups of the main
 * thread; 250 us asked gives ~0.35 ms between ticks here.
 */
export const OPEN_LOOP_TICK_US = 250;

export interface OpenLoopReport {
  offeredPerSecond: number;
  achievedPerSecond: number;
  writes: number;
  /** Writes the chain refused (e.g. DABBA_ERR_OVERLOADED when it fell too far behind the schedule). */
  refused: number;
  latencyUs: { p50: number; p99: number; p999: number; max: number; samples: number };
}

/**
 * Writes every key of the key space once, a window at a time. Latency measurements start after
 * it: the first pass grows each replica's store through fresh memory (a few ms per MiB here, on
 * every replica in turn), a one-off cost that would otherwise land in the measured tail.
 */
export async function prefill(chain: LoadTarget, options: { keySpace?: number; keyBytes?: number; valueBytes?: number }): Promise<void> {
  const keys = makeKeys(options.keySpace ?? 100_000, options.keyBytes ?? 16);
  const value = makeValue(options.valueBytes ?? 100);
  // Each window is answered in full before the next (answers come in order per chain only).
  const window = new WindowEnds(1 + keys.reduce((most, key) => Math.max(most, chain.chainOf?.(key) ?? 0), 0));
  for (let start = 0; start < keys.length; start += 4096) {
    for (let index = start; index < Math.min(keys.length, start + 4096); index++) {
      window.lastWrite[chain.chainOf?.(keys[index]!) ?? 0] = chain.put(keys[index]!, value);
    }
    await window.answered();
  }
}

/**
 * Open-loop load: writes are issued on a fixed schedule whatever the chain's speed, and each sampled
 * write's latency is measured from its INTENDED start time, so a stall delays the schedule's later
 * writes and shows up in their latency (no coordinated omission).
 */
export async function runOpenLoop(chain: LoadTarget, options: OpenLoopOptions): Promise<OpenLoopReport> {
  const keys = makeKeys(options.keySpace ?? 100_000, options.keyBytes ?? 16);
  const value = makeValue(options.valueBytes ?? 100);
  const sampleEvery = options.sampleEvery ?? 16;
  const histogram = createHistogram();
  const intervalMs = 1000 / options.ratePerSecond;
  const pacer = await Pacer.start(options.tickUs ?? OPEN_LOOP_TICK_US);
  const started = performance.now();
  const end = started + options.durationMs;
  let issued = 0;
  let refused = 0;
  let cursor = 0;
  let last: Promise<void> = Promise.resolve();
  const onRefused = (): void => {
    refused++;
  };
  try {
    while (performance.now() < end) {
      // Issue every write whose intended start time has passed; the schedule does not wait for acks.
      const due = Math.floor((performance.now() - started) / intervalMs);
      for (; issued < due; issued++) {
        last = chain.put(keys[cursor]!, value);
        if (++cursor === keys.length) cursor = 0;
        if (issued % sampleEvery === 0) {
          const intended = started + issued * intervalMs;
          last.then(() => histogram.record(Math.max(1, Math.round((performance.now() - intended) * 1000))), onRefused);
        } else {
          last.catch(onRefused);
        }
      }
      // Sleep to the next tick (acks are processed meanwhile) and issue what has come due since.
      // A write waits at most a tick past its intended start, and that wait counts in its latency.
      await pacer.tick();
    }
  } finally {
    await pacer.stop();
  }
  await last.catch(() => undefined);
  const seconds = (performance.now() - started) / 1000;
  return {
    offeredPerSecond: options.ratePerSecond,
    achievedPerSecond: (issued - refused) / seconds,
    writes: issued,
    refused,
    latencyUs: {
      p50: histogram.percentile(50),
      p99: histogram.percentile(99),
      p999: histogram.percentile(99.9),
      max: histogram.max,
      samples: histogram.count,
    },
  };
}
