/**
 * The master of a chain whose replicas all run in one process: createChain()'s, and the
 * simulator's. It decides nothing itself. It keeps what the cluster policy (cluster-decisions.ts)
 * is to be told (which replicas are gone, the replica addReplica() asked for, the removals asked
 * for, the handoff last requested, the catch-up clock), asks the policy until it has nothing left
 * to do, and hands each decision to the runtime to carry out.
 *
 * In one process a replica is gone as soon as its task is rejected (the runtime reports it), or
 * once it has been silent for suspectAfter (a hang: heartbeats go to a FailureDetector, with time
 * passed in). Nothing can overtake a decision here, so each one holds once made.
 */
import { assert } from '../assert.js';
import { DabbaError, ErrorCode } from '../errors.js';
import { assertWellFormed, participants, type Configuration } from './chain-master.js';
import {
  decide,
  HANDOFF_CATCH_UP_MS_MAX,
  HANDOFF_LAG_WRITES_MAX,
  removalRefusal,
  watchCatchUp,
  type CatchUpWatch,
  type Decision,
  type DecisionInput,
  type HandoffRequest,
  type LiveHost,
  type LiveHostStatus,
} from './cluster-decisions.js';
import { FailureDetector } from './failure-detector.js';

/** What a runtime in one process carries out: a reconfiguration, or a handoff request to the tail. */
export type InProcessDecision = Extract<Decision, { kind: 'reconfigure' | 'request-handoff' }>;
export type NoDecision = Extract<Decision, { kind: 'none' }>;

export interface InProcessMasterOptions {
  configuration: Configuration;
  /** Silence after which a replica is gone, in the caller's time unit. */
  suspectAfter: number;
  now: number;
  /** Rule 5's limits (cluster-decisions.ts); the policy's defaults unless given. */
  handoffLagWritesMax?: number;
  handoffCatchUpMsMax?: number;
}

/** What the runtime sees when it asks for decisions. */
export interface Observation {
  now: number;
  /** A replica's last reported progress; null before it has reported. */
  statusOf: (replicaId: number) => LiveHostStatus | null;
  /** Whether silence counts now (a runtime may say no while a worker is still starting: loading modules is not a hang). */
  silenceCounts: boolean;
}

/**
 * More rounds than this in one settle() is a loop: every decision but a handoff request moves the
 * epoch, and a chain has a few members, a joiner and a removal or two to go through at most.
 */
const SETTLE_ROUNDS_MAX = 64;

export class InProcessMaster {
  private current: Configuration;
  private readonly detector: FailureDetector;
  private readonly tasksFailed = new Set<number>();
  private requestedNewcomer: number | null = null;
  private readonly removalsRequested: number[] = [];
  private handoffRequested: HandoffRequest | null = null;
  private catchUp: CatchUpWatch | null = null;
  private readonly handoffLagWritesMax: number;
  private readonly handoffCatchUpMsMax: number;

  constructor(options: InProcessMasterOptions) {
    assertWellFormed(options.configuration);
    this.current = options.configuration;
    this.detector = new FailureDetector(options.suspectAfter);
    for (const replicaId of participants(this.current)) this.detector.register(replicaId, options.now);
    this.handoffLagWritesMax = options.handoffLagWritesMax ?? HANDOFF_LAG_WRITES_MAX;
    this.handoffCatchUpMsMax = options.handoffCatchUpMsMax ?? HANDOFF_CATCH_UP_MS_MAX;
  }

  get configuration(): Configuration {
    return this.current;
  }

  /** The replica addReplica() asked for, until it begins to join; null if none. */
  get newcomer(): number | null {
    return this.requestedNewcomer;
  }

  heartbeat(replicaId: number, now: number): void {
    this.detector.heartbeat(replicaId, now);
  }

  /** A replica's task ended (it crashed, threw or was terminated): it is gone now, silent or not. */
  taskFailed(replicaId: number): void {
    if (participants(this.current).includes(replicaId)) this.tasksFailed.add(replicaId);
  }

  /** addReplica(): a new replica wants to join. One at a time, and never an id seen before. */
  requestJoin(replicaId: number): void {
    assert(this.requestedNewcomer === null, `requestJoin: replica ${this.requestedNewcomer} is already asked for`);
    assert(!participants(this.current).includes(replicaId), `requestJoin: replica ${replicaId} is already in the chain`);
    this.requestedNewcomer = replicaId;
  }

  /** removeReplica(): throws DABBA_ERR_OUT_OF_RANGE, with the policy's reason, for a removal it refuses. */
  requestRemoval(replicaId: number): void {
    const refusal = removalRefusal(this.current, replicaId);
    if (refusal !== null) throw new DabbaError(ErrorCode.outOfRange, refusal);
    this.removalsRequested.push(replicaId);
  }

  /**
   * Asks the policy, and has `execute` carry out each decision, until nothing is left to do; returns
   * why. The master adopts each decision before `execute` runs, so the runtime sees the new
   * configuration. Removals asked for are answered by the end: made, or dropped because the chain
   * changed under them (a failure handled first left the replica the last one).
   */
  settle(observation: Observation, execute: (decision: InProcessDecision) => void): NoDecision {
    for (let round = 1; ; round++) {
      assert(round <= SETTLE_ROUNDS_MAX, `InProcessMaster: still deciding after ${SETTLE_ROUNDS_MAX} rounds`);
      const decision = decide(this.inputFor(observation));
      if (decision.kind === 'none') {
        this.removalsRequested.length = 0;
        return decision;
      }
      // No replica reports a refused connection in one process (a dead one's task is rejected at
      // once), and the chain exists from the start: nothing is evicted or initialized.
      assert(decision.kind === 'reconfigure' || decision.kind === 'request-handoff', `InProcessMaster: no ${decision.kind} in one process`);
      this.adopt(decision, observation.now);
      execute(decision);
    }
  }

  private inputFor(observation: Observation): DecisionInput {
    const hosts = this.liveReplicas(observation);
    this.catchUp = watchCatchUp(this.catchUp, this.current, hosts, observation.now);
    return {
      configuration: this.current,
      hosts,
      removalsRequested: this.removalsRequested,
      now: observation.now,
      joinCaughtUpSince: this.catchUp?.since ?? null,
      handoffRequested: this.handoffRequested,
      handoffLagWritesMax: this.handoffLagWritesMax,
      handoffCatchUpMsMax: this.handoffCatchUpMsMax,
    };
  }

  /** The members, the joiner and the replica asked for, less those gone (task failed, or silent). */
  private liveReplicas(observation: Observation): LiveHost[] {
    const silent = new Set(observation.silenceCounts ? this.detector.suspects(observation.now) : []);
    const candidates = [...participants(this.current), ...(this.requestedNewcomer === null ? [] : [this.requestedNewcomer])];
    return candidates
      .filter((replicaId) => !this.tasksFailed.has(replicaId) && !silent.has(replicaId))
      .map((replicaId) => ({ hostId: workerName(replicaId), replicaId, status: observation.statusOf(replicaId) }));
  }

  private adopt(decision: InProcessDecision, now: number): void {
    if (decision.kind === 'request-handoff') {
      this.handoffRequested = { epoch: decision.epoch, joiner: decision.joiner };
      return;
    }
    const { event } = decision;
    if (event.kind === 'joining' && event.replicaId === this.requestedNewcomer) this.requestedNewcomer = null;
    this.watchSilence(participants(this.current), participants(event.configuration), now);
    this.current = event.configuration;
  }

  /** Silence is measured for members and the joiner, each from when it came in (or last spoke). */
  private watchSilence(before: readonly number[], after: readonly number[], now: number): void {
    for (const replicaId of before) {
      if (after.includes(replicaId)) continue;
      this.detector.forget(replicaId);
      this.tasksFailed.delete(replicaId);
    }
    for (const replicaId of after) if (!before.includes(replicaId)) this.detector.register(replicaId, now);
  }
}

/** The members and the joiner: every replica the chain is waiting on. */
/** In one process each replica runs on a worker of its own, which stands for its host. */
function workerName(replicaId: number): string {
  return `worker-${replicaId}`;
}
