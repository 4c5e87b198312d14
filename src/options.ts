/**
 * createChain() options: validated once at the boundary with precise TypeError/RangeError (coded),
 * then turned into the fixed limits every ring, log and buffer is allocated from.
 */
import { argumentTypeError, DabbaError, ErrorCode, rangeError } from '../native-free-core/errors.js';

export { argumentTypeError, rangeError };
import { existsSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { availableParallelism } from 'node:os';
import { deriveLimits, type Limits } from '../native-free-core/limits.js';
import { FAIL_SLOW_DEFAULTS, type FailSlowSettings } from '../native-free-core/master/fail-slow.js';
import { KEY_BYTES_LIMIT } from '../native-free-core/wire/codec.js';

/** The `sealing` option of createChain() and connect() (see ./sealing.ts). */
export interface SealingOptions {
  /** Each key version (an integer, 1 .. 2^32-1) and its 32-byte AES-256 key. */
  keys: { [version: number]: Uint8Array };
  /** The version new writes are sealed with; must be one of `keys`. */
  current: number;
}

export interface BatchOptions {
  /** Most writes coalesced into one batch (default 1024). */
  maxWrites?: number;
  /** Most key + value bytes in one batch (default 1 MiB). */
  maxBytes?: number;
  /**
   * How long a batch may wait for more writes after its first one, in microseconds (default 0:
   * a batch closes at the end of the current event-loop turn, so writes issued together travel
   * together without adding latency).
   */
  lingerUs?: number;
  /**
   * Adaptive batching: while this many batches are unacknowledged, a partial batch keeps filling
   * instead of leaving (default 4). Full batches always leave. Low load sends each write at once;
   * high load grows batches by itself.
   */
  maxInFlight?: number;
  /**
   * Batching to a latency target, in microseconds (default 0: off). The client's cap on writes per
   * batch then adapts at run time: while the p99 of its acknowledged batches is above the target it
   * steps the cap down or up, whichever lowered the p99; it keeps the cap while the target is met,
   * and returns to `maxWrites` when the client is saturated (src/latency-controller.ts). `lingerUs`
   * is held to a quarter of the target.
   */
  latencyTargetUs?: number;
}

export interface ChainOptions {
  /** Replicas of each chain, each on a node of its own (default 3, 1..16). */
  replicas?: number;
  /**
   * Chains the keyspace is split into (default 1, 1..1024). Each key belongs to one chain by a
   * stable hash of its bytes; chains are placed over the nodes with roles balanced.
   */
  chains?: number;
  /**
   * Nodes: worker threads, each holding one replica of each of several chains (default `replicas`,
   * `replicas`..16). The thread count is the node count, whatever the chain count.
   */
  nodes?: number;
  batch?: BatchOptions;
  /** Capacity of each batch ring between threads, in bytes; a power of two (default 8 MiB). */
  ringBytes?: number;
  /** Largest key in bytes (default 1024, at most 65535). */
  keyBytesMax?: number;
  /** Largest value in bytes (default 512 KiB). */
  valueBytesMax?: number;
  /** Writes accepted but not yet acknowledged before put() reports overload (default 131072; per chain). */
  pendingWritesMax?: number;
  /** Reads sent but not yet answered before get() reports overload (default 65536; per chain). */
  pendingReadsMax?: number;
  /**
   * Bytes of in-flight (applied, unacknowledged) batches a node keeps for its chains (default 32 MiB):
   * each of its replicas keeps an equal share, and at least one full batch.
   */
  inflightBytesMax?: number;
  /**
   * Most polls a node thread spins before it sleeps on Atomics.wait; the thread adapts within it at
   * run time (workers/spin-budget.ts). Default 2000 when the machine has a core to spare beyond
   * the node threads and the main thread, else 0: a spinning thread would take the core from the
   * thread that has the work.
   */
  spinIterations?: number;
  /** How long close() waits for pending writes to be acknowledged, in ms (default 10000). */
  closeTimeoutMs?: number;
  /**
   * A replica whose worker makes no progress for this long, in ms, is declared failed and removed
   * (default 1000). Crashes are detected at once; this catches hangs.
   */
  suspectAfterMs?: number;
  /**
   * Fail-slow demotion (native-free-core/master/fail-slow.ts): a node whose time per write stays
   * above `factor` times its peers' median (default 4) for `forMs` (default 2000) is moved out of
   * every chain for a quarantine (`quarantineMs`, default 30000, doubled each time it is found slow
   * again soon after), then joins again at the tails. Needs three nodes holding replicas; never
   * leaves fewer than two planned. `false` turns it off.
   */
  failSlow?: false | { factor?: number; forMs?: number; quarantineMs?: number };
  /**
   * Node.js flags for the replicas' worker threads (default: this process's, process.execArgv).
   * `[]` keeps a main-thread profiler such as clinic, which preloads itself with `-r`, out of the
   * workers, where its instrumentation would write into the main thread's files.
   */
  workerExecArgv?: string[];
  /**
   * Seal every value with AES-256-GCM in this process before it leaves it, under versioned keys
   * (src/sealing.ts): replicas only ever hold sealed values. Values may then be at most
   * valueBytesMax - SEAL_OVERHEAD_BYTES (33) bytes. createChain() only: connect() takes it at the
   * top of its options, and a host (`dabba serve`) refuses it, since hosts never hold keys. Not
   * part of ResolvedOptions, so the keys never travel to the replicas' threads.
   */
  sealing?: SealingOptions;
  /**
   * A directory for the replicas' logs (made if missing). With it the chains are durable (see
   * `durability`), and a later createChain() with the same directory recovers every acknowledged
   * write. One process at a time may use it.
   */
  dataDir?: string;
  /**
   * What an acknowledged write survives: 'memory' (default without dataDir) nothing beyond the
   * process; 'async' a crash of the process (each replica writes its batches to its log before it
   * forwards them, and fdatasyncs every syncIntervalMs); 'fsync' (default with dataDir) a crash of
   * the machine too (each replica fdatasyncs before it forwards or acknowledges: a write is
   * acknowledged once every replica has it on disk).
   */
  durability?: Durability;
  /** 'async' mode: the longest written data waits for an fdatasync, in ms (default 100). */
  syncIntervalMs?: number;
  /**
   * Free bytes each replica's disk keeps: below them its chain refuses writes with
   * DABBA_ERR_DISK_FULL until space is freed (default 64 MiB, one log segment; 0: only when a write fails).
   */
  diskReserveBytes?: number;
  /**
   * Which replicas answer reads: 'any' (default; CRAQ) every member of a chain, the client's reads
   * spread over them; 'tail' the tail alone. Linearizable either way.
   */
  reads?: ReadMode;
  /**
   * An admission hook: the absolute path of a JavaScript module whose default export
   * `(write) => true | string` the head runs on every write before ordering it (write: `{ op,
   * key, value, clientId }`, key and value Buffers). A string refuses the write with
   * DABBA_ERR_REJECTED and that reason; a hook that throws or runs past `admitBudgetUs` refuses it
   * too, and is counted and logged (workers/admission.ts).
   */
  admit?: string;
  /**
   * Longest one admission hook call may take, in microseconds (default 50000). Measured by the
   * clock, so a garbage collection or a preemption of the head's thread during the call counts:
   * keep it well above what the hook itself costs, or writes are refused for the machine's noise.
   */
  admitBudgetUs?: number;
  /**
   * Bytes of recent batches a node keeps for watches to be served from (default 4 MiB): each of
   * its replicas keeps an equal share, and at least one full batch. A watch that falls further
   * behind than its replica's history reaches gets DABBA_ERR_WATCH_LAGGED. Every batch is copied
   * into it as it is applied: a larger history keeps slow watchers going longer, and costs memory
   * and page faults while it first fills (a short run of a new process feels them: the default
   * is small for that); once filled, the copies cost nothing measurable (bench/watches-bench.ts).
   */
  watchHistoryBytes?: number;
}

export type ReadMode = 'any' | 'tail';
export const READ_MODES: readonly ReadMode[] = ['any', 'tail'];
export type Durability = 'memory' | 'async' | 'fsync';
/** One log segment's room (native-free-core/limits.ts): a replica stops taking batches before a write can fail. */
const DISK_RESERVE_BYTES_DEFAULT = 64 * 1024 * 1024;
const DURABILITIES: readonly Durability[] = ['memory', 'async', 'fsync'];

/** The options with defaults filled in, and every size limit derived from them (see Limits). */
export interface ResolvedOptions extends Limits {
  replicas: number;
  chains: number;
  nodes: number;
  lingerUs: number;
  /** Batching to a latency target (µs), 0 when off. */
  latencyTargetUs: number;
  batchInFlightMax: number;
  pendingWritesMax: number;
  inflightBatchesMax: number;
  spinIterations: number;
  sleepTimeoutMs: number;
  closeTimeoutMs: number;
  suspectAfterMs: number;
  /** Fail-slow detection's settings, or null when off. */
  failSlow: FailSlowSettings | null;
  workerExecArgv: string[] | undefined;
  /** Where the replicas' logs are, or null in memory. */
  dataDir: string | null;
  durability: Durability;
  syncIntervalMs: number;
  diskReserveBytes: number;
  reads: ReadMode;
  /** The admission hook's module, or null (see ChainOptions.admit). */
  admit: string | null;
  admitBudgetUs: number;
  watchHistoryBytes: number;
}

const MiB = 1024 * 1024;
/** Worker threads in one process at most (and so replicas of a chain). */
export const NODES_MAX = 16;
export const CHAINS_MAX = 1024;
/** Capacity of each ring that carries acks and Hellos (they are tiny). */
const CONTROL_RING_BYTES = 64 * 1024;

function integer(value: unknown, name: string, fallback: number, minimum: number, maximum: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw Object.assign(new TypeError(`${name} must be an integer, got ${describe(value)}`), { code: ErrorCode.invalidArgument });
  }
  if (value < minimum || value > maximum) {
    throw Object.assign(new RangeError(`${name} must be between ${minimum} and ${maximum}, got ${value}`), {
      code: ErrorCode.outOfRange,
    });
  }
  return value;
}

function describe(value: unknown): string {
  return value === null ? 'null' : typeof value === 'object' ? 'an object' : `${typeof value} ${String(value)}`;
}

function isPowerOfTwo(value: number): boolean {
  return value > 0 && (value & (value - 1)) === 0;
}

export function resolveOptions(options: ChainOptions = {}): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw Object.assign(new TypeError('createChain options must be an object'), { code: ErrorCode.invalidArgument });
  }
  const batch = options.batch ?? {};
  if (typeof batch !== 'object' || batch === null) {
    throw Object.assign(new TypeError('batch must be an object'), { code: ErrorCode.invalidArgument });
  }
  const replicas = integer(options.replicas, 'replicas', 3, 1, NODES_MAX);
  const chains = integer(options.chains, 'chains', 1, 1, CHAINS_MAX);
  const nodes = integer(options.nodes, 'nodes', replicas, replicas, NODES_MAX);
  const batchWritesMax = integer(batch.maxWrites, 'batch.maxWrites', 1024, 1, 65536);
  const batchBytesMax = integer(batch.maxBytes, 'batch.maxBytes', MiB, 1024, 64 * MiB);
  const latencyTargetUs = integer(batch.latencyTargetUs, 'batch.latencyTargetUs', 0, 0, 10_000_000);
  const lingerAsked = integer(batch.lingerUs, 'batch.lingerUs', 0, 0, 1_000_000);
  // A linger only adds latency: with a target, it may take a quarter of it at most.
  const lingerUs = latencyTargetUs > 0 ? Math.min(lingerAsked, Math.floor(latencyTargetUs / 4)) : lingerAsked;
  const batchInFlightMax = integer(batch.maxInFlight, 'batch.maxInFlight', 4, 1, 1_000_000);
  const ringBytes = integer(options.ringBytes, 'ringBytes', 8 * MiB, 4096, 1024 * MiB);
  if (!isPowerOfTwo(ringBytes)) throw rangeError(`ringBytes must be a power of two, got ${ringBytes}`);
  const keyBytesMax = integer(options.keyBytesMax, 'keyBytesMax', 1024, 1, KEY_BYTES_LIMIT);
  const valueBytesMax = integer(options.valueBytesMax, 'valueBytesMax', Math.min(512 * 1024, batchBytesMax - keyBytesMax), 0, 64 * MiB);
  const pendingWritesMax = integer(options.pendingWritesMax, 'pendingWritesMax', 131072, 1, 1 << 24);
  const pendingReadsMax = integer(options.pendingReadsMax, 'pendingReadsMax', 65536, 1, 1 << 24);
  const inflightBytesMax = integer(options.inflightBytesMax, 'inflightBytesMax', 32 * MiB, 4096, 4096 * MiB);
  const spinIterations = integer(options.spinIterations, 'spinIterations', availableParallelism() > nodes + 1 ? 2000 : 0, 0, 10_000_000);
  const closeTimeoutMs = integer(options.closeTimeoutMs, 'closeTimeoutMs', 10_000, 0, 3_600_000);
  const suspectAfterMs = integer(options.suspectAfterMs, 'suspectAfterMs', 1000, 100, 3_600_000);
  // Every size limit follows from these settings (native-free-core/limits.ts says how).
  const limits = deriveLimits({
    ringBytes,
    controlRingBytes: CONTROL_RING_BYTES,
    keyBytesMax,
    valueBytesMax,
    batchWritesMax,
    batchBytesMax,
    pendingReadsMax,
    inflightBytesMax,
  });
  if (typeof limits === 'string') throw rangeError(limits);
  return {
    ...limits,
    replicas,
    chains,
    nodes,
    lingerUs,
    latencyTargetUs,
    batchInFlightMax,
    pendingWritesMax,
    inflightBatchesMax: Math.max(16, Math.ceil(inflightBytesMax / 4096)),
    spinIterations,
    sleepTimeoutMs: 50,
    closeTimeoutMs,
    suspectAfterMs,
    failSlow: failSlowOf(options.failSlow),
    workerExecArgv: stringList(options.workerExecArgv, 'workerExecArgv'),
    reads: readModeOf(options.reads),
    admit: admitPathOf(options.admit),
    admitBudgetUs: integer(options.admitBudgetUs, 'admitBudgetUs', 50_000, 1, 10_000_000),
    watchHistoryBytes: integer(options.watchHistoryBytes, 'watchHistoryBytes', 4 * MiB, 4096, 4096 * MiB),
    ...durabilityOf(options),
  };
}

function failSlowOf(option: ChainOptions['failSlow']): FailSlowSettings | null {
  if (option === false) return null;
  if (option !== undefined && (typeof option !== 'object' || option === null)) throw argumentTypeError('failSlow must be false or an object { factor, forMs, quarantineMs }');
  const factor = option?.factor ?? FAIL_SLOW_DEFAULTS.factor;
  if (typeof factor !== 'number' || !Number.isFinite(factor) || factor <= 1 || factor > 1000) throw rangeError(`failSlow.factor must be a number above 1 (at most 1000), got ${String(factor)}`);
  const forMs = integer(option?.forMs, 'failSlow.forMs', FAIL_SLOW_DEFAULTS.forMs, 0, 3_600_000);
  const quarantineMs = integer(option?.quarantineMs, 'failSlow.quarantineMs', FAIL_SLOW_DEFAULTS.quarantineMs, 1, 3_600_000);
  return { ...FAIL_SLOW_DEFAULTS, factor, forMs, quarantineMs, quarantineMaxMs: Math.max(quarantineMs, FAIL_SLOW_DEFAULTS.quarantineMaxMs) };
}

/** dataDir, durability and syncIntervalMs, checked against each other. */
function durabilityOf(options: ChainOptions): { dataDir: string | null; durability: Durability; syncIntervalMs: number; diskReserveBytes: number } {
  const { dataDir } = options;
  if (dataDir !== undefined && (typeof dataDir !== 'string' || dataDir.length === 0)) {
    throw Object.assign(new TypeError(`dataDir must be a non-empty string, got ${describe(dataDir)}`), { code: ErrorCode.invalidArgument });
  }
  const durability = options.durability ?? (dataDir === undefined ? 'memory' : 'fsync');
  if (!DURABILITIES.includes(durability)) {
    throw Object.assign(new TypeError(`durability must be one of ${DURABILITIES.join(', ')}, got ${describe(durability)}`), { code: ErrorCode.invalidArgument });
  }
  if (durability === 'memory' && dataDir !== undefined) throw rangeError(`durability 'memory' keeps nothing on disk: leave dataDir out, or ask for 'async' or 'fsync'`);
  if (durability !== 'memory' && dataDir === undefined) throw rangeError(`durability '${durability}' needs a dataDir to keep the logs in`);
  const syncIntervalMs = integer(options.syncIntervalMs, 'syncIntervalMs', 100, 1, 60_000);
  const diskReserveBytes = integer(options.diskReserveBytes, 'diskReserveBytes', DISK_RESERVE_BYTES_DEFAULT, 0, Number.MAX_SAFE_INTEGER);
  return { dataDir: dataDir ?? null, durability, syncIntervalMs, diskReserveBytes };
}

/** An absolute path to a file that exists (its module is loaded and checked by the head's worker). */
function admitPathOf(value: unknown): string | null {
  if (value === undefined) return null;
  if (typeof value !== 'string' || !isAbsolute(value)) {
    throw Object.assign(new TypeError(`admit must be the absolute path of a JavaScript module, got ${describe(value)}`), { code: ErrorCode.invalidArgument });
  }
  if (!existsSync(value)) throw Object.assign(new TypeError(`admit: no module at ${value}`), { code: ErrorCode.invalidArgument });
  return value;
}

function readModeOf(value: unknown): ReadMode {
  if (value === undefined) return 'any';
  if (!READ_MODES.includes(value as ReadMode)) {
    throw Object.assign(new TypeError(`reads must be one of ${READ_MODES.join(', ')}, got ${describe(value)}`), { code: ErrorCode.invalidArgument });
  }
  return value as ReadMode;
}

function stringList(value: unknown, name: string): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) {
    throw Object.assign(new TypeError(`${name} must be an array of strings`), { code: ErrorCode.invalidArgument });
  }
  return [...value];
}

export function closedError(): DabbaError {
  return new DabbaError(ErrorCode.closed, 'the chain is closed');
}
