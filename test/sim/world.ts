/**
 * What every part of one simulated run shares: simulated time, the PRNG, the network, the trace,
 * the chain's options, and the directory of who is who (the hosts, the clients, the master, and
 * which host runs which replica id, as etcd's host table says). Each part keeps its own state; this
 * only lets them find each other.
 */
import { resolveOptions, type ResolvedOptions } from '../../src/options.js';
import { FORMAT_RECORD_LIMITS } from '../../native-free-core/wire/codec.js';
import { Admission } from '../../workers/admission.js';
import type { HistoryEntry } from './linearizability.js';
import { Scheduler, SimulatedClock } from './clock.js';
import { Network, type Endpoint, type NetworkFaults } from './network.js';
import { Trace } from './trace.js';
import type { Checker } from './checkers.js';
import type { SimulatedClient } from './client-driver.js';
import type { SimulatedHost } from './replica-host.js';
import type { SimulatedMaster } from './master-driver.js';
import { mulberry32 } from '../helpers/prng.js';

/** Simulated time is in milliseconds (ticks). Every timeout of the simulated runtime, in one place. */
export const TIMING = {
  /** A host sends the master a heartbeat (its lease keep-alive and status) this often. */
  heartbeatEvery: 5,
  /** The master removes a replica silent this long; a tail serves reads only within its lease. */
  suspectAfter: 40,
  /** A tail stops serving reads this long before its lease could run out (host.ts LEASE_READ_MARGIN_MS). */
  leaseReadMargin: 5,
  /** A replica's worker with nothing to do sleeps at most this long before it looks again (sleepTimeoutMs). */
  workerSleepTimeout: 3,
  /** The master asks the policy what to do this often. */
  masterTickEvery: 2,
  /** A client resends everything when nothing was answered for this long (RemoteClient's STALL_RESEND_MS). */
  stallResendAfter: 60,
  /** A successor redials a broken peer link after this long (chain-links RECONNECT_DELAY_MS), more after failures. */
  peerRedialAfter: 5,
  peerRedialAfterMax: 20,
  /** A client redials a host after this long, doubling after each failure (RemoteClient's HostConnection). */
  clientRedialAfter: 3,
  clientRedialAfterMax: 40,
} as const;

/**
 * Fail-slow demotion in simulated time (ticks are ms). The sim's load is light (a few writes a
 * tick), so the window is longer and the minimum lower than a runtime's, and quarantines are short
 * enough for a demoted host to be back before the quiet phase ends.
 */
export const SIM_FAIL_SLOW = { factor: 4, forMs: 60, windowMs: 60, writesMin: 3, quarantineMs: 200, quarantineMaxMs: 800 } as const;
/** Simulated busy time per write applied, in ticks, at normal speed (a slow host's is `slowFactor` times it). */
export const APPLY_COST_PER_WRITE = 0.01;

/** Keys are "k<n>" and values "c<client>.<lane>.<n>": small, so a snapshot takes many frames. */
export const KEY_BYTES_MAX = 8;
export const VALUE_BYTES_MAX = 24;

export const MASTER: Endpoint = 'master';

/** The simulated admission hook's verdict: puts of a value ending in 3 are refused (deletes never). */
export function refusedByHook(value: Uint8Array | string | undefined): boolean {
  if (value === undefined) return false;
  return typeof value === 'string' ? value.endsWith('3') : value.length > 0 && value[value.length - 1] === 0x33;
}

/** The client's options: small batches, windows and rings, so batching, flow control and resends all happen. */
export function simulatedChainOptions(reads: 'any' | 'tail' = 'any'): ResolvedOptions {
  return resolveOptions({
    reads,
    keyBytesMax: KEY_BYTES_MAX,
    valueBytesMax: VALUE_BYTES_MAX,
    batch: { maxWrites: 6, maxBytes: 1024, maxInFlight: 2 },
    ringBytes: 8192,
    inflightBytesMax: 256 * 1024,
    pendingWritesMax: 64,
    pendingReadsMax: 32,
  });
}

/** What the simulated hosts did that shows a fault was met (not checks: counts). */
export interface HostCounts {
  /** Hosts the master moved out of the chain for being slow (fail-slow). */
  demotions: number;
  /** Replicas that left and registered again as new ones, for any reason but a restart. */
  rejoins: number;
  /** Peer links redialed and repaired with a Hello. */
  linkRepairs: number;
  /** Snapshot frames a tail sent its joiner (a transfer takes several). */
  snapshotFrames: number;
  /** Batches refused as a sequence gap after a redial (see SimulatedHost.refusal). */
  gapsRefused: number;
  /** Frames a node ignored for their epoch: a fenced replica's, or late ones. */
  staleEpochIgnored: number;
  /** Writes sent to a host that is not the head (the client gets the view). */
  writesRedirected: number;
  /** Read batches refused by a host not serving reads (not the tail, or its lease may have lapsed). */
  readsRefused: number;
  /** Replicas restarted from their logs (hosts with a disk). */
  recoveredFromDisk: number;
  /** Joiners that started from the log a host kept of a replica it ran before, and how many caught up from the tail's log. */
  resumedJoins: number;
  catchUpsCompleted: number;
  /** Resumed joiners a tail could not continue (sent a snapshot: the host starts them over, empty). */
  logsDiverged: number;
  /** Conditional writes the clients had applied, and refused for their condition. */
  conditionalApplied: number;
  conditionsFailed: number;
  /** Writes the heads' admission hook refused, as the clients heard. */
  admissionRefused: number;
  /** Reads a head or middle answered (reads at any replica), and those of them held for the commit point (dirty). */
  readsOffTail: number;
  dirtyReads: number;
  /** Changes client 1's watch took, and times it lagged (a restart emptied the histories it needed). */
  watchedChanges: number;
  watchesLagged: number;
}

export class World {
  readonly scheduler = new Scheduler();
  readonly clock = new SimulatedClock(this.scheduler);
  readonly random: () => number;
  readonly network: Network;
  readonly trace: Trace;
  readonly options: ResolvedOptions;
  /** The heads' admission hook (workers/admission.ts), or null: it refuses puts whose value ends in 3. */
  readonly admission: Admission | null;
  readonly hosts = new Map<Endpoint, SimulatedHost>();
  readonly clients: SimulatedClient[] = [];
  readonly history: HistoryEntry[] = [];
  /** The clients' conditional writes that settled: applied, or refused for their condition. */
  readonly conditionalWrites: Array<{ key: string; expected: number; applied: boolean }> = [];
  readonly counts: HostCounts = { demotions: 0, rejoins: 0, linkRepairs: 0, snapshotFrames: 0, gapsRefused: 0, staleEpochIgnored: 0, writesRedirected: 0, readsRefused: 0, recoveredFromDisk: 0, resumedJoins: 0, catchUpsCompleted: 0, logsDiverged: 0, readsOffTail: 0, dirtyReads: 0, conditionalApplied: 0, conditionsFailed: 0, admissionRefused: 0, watchedChanges: 0, watchesLagged: 0 };
  master!: SimulatedMaster;
  checker!: Checker;
  /** A failure noticed where it cannot throw (a promise callback); the run loop fails with it. */
  failure: string | null = null;
  private readonly hostByReplica = new Map<number, SimulatedHost>();
  private lastReplicaId = 0;

  constructor(
    readonly seed: number,
    /** Whether hosts keep their replica's log on a disk (`fsync` mode): see ./disk.ts. */
    readonly durable: boolean,
    reads: 'any' | 'tail',
    admits: boolean,
    faults: NetworkFaults,
    trace: { kept: number; verbose: boolean },
  ) {
    this.options = simulatedChainOptions(reads);
    this.admission = admits ? new Admission((write) => (refusedByHook(write.value) ? 'values ending in 3 are refused' : true), 1000, FORMAT_RECORD_LIMITS, 1 << 30, () => undefined) : null;
    this.random = mulberry32(seed);
    this.network = new Network(this.scheduler, this.random, faults);
    this.trace = new Trace(seed, this.scheduler, trace.kept, trace.verbose);
  }

  get now(): number {
    return this.scheduler.now;
  }

  /** A whole number of ticks in [min, max]. */
  between(min: number, max: number): number {
    return min + Math.floor(this.random() * (max - min + 1));
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)]!;
  }

  /** A fresh replica id for `host` (ids are never reused: a restarted host is a new replica). */
  allocateReplicaId(host: SimulatedHost): number {
    const replicaId = ++this.lastReplicaId;
    this.hostByReplica.set(replicaId, host);
    return replicaId;
  }

  /** The host that runs or ran replica `replicaId` (the host table keeps old ids' hosts). */
  hostOf(replicaId: number): SimulatedHost {
    const host = this.hostByReplica.get(replicaId);
    if (host === undefined) return this.trace.fail(`no host ever ran replica ${replicaId}`);
    return host;
  }

  /** The host running replica `replicaId` now, or null if it is gone (crashed, restarted, rejoined). */
  running(replicaId: number): SimulatedHost | null {
    const host = this.hostByReplica.get(replicaId);
    return host !== undefined && host.runs(replicaId) ? host : null;
  }

  /** Notes a failure found inside a callback; the run loop throws it. */
  failLater(reason: string): void {
    this.failure ??= reason;
  }
}
