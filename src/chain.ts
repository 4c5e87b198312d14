/**
 * createChain(): a replicated chain inside one process. Each replica runs pinned on its own worker
 * thread (a long-running piscina task); adjacent threads exchange batches and acks through
 * SharedArrayBuffer rings; the main thread encodes writes into batches for the head, receives the
 * tail's cumulative acks, and sends reads to the tail.
 *
 *   client --batches--> head --batches--> middle --batches--> tail
 *          <-----------acks------------- <-------acks-------- |
 *   client <----------------------- cumulative client acks ---+
 *   client --reads/replies----------------------------------> tail
 */
import { Piscina } from 'piscina';
import type { Role } from '../native-free-core/chain/node.js';
import { DabbaError, ErrorCode } from '../native-free-core/errors.js';
import { roleIn, type Configuration, type MasterEvent } from '../native-free-core/master/chain-master.js';
import { removalRefusal, type LiveHostStatus } from '../native-free-core/master/cluster-decisions.js';
import { InProcessMaster, type InProcessDecision } from '../native-free-core/master/in-process-master.js';
import { SpscRing } from '../native-free-core/ring.js';
import { Doorbell } from '../workers/doorbell.js';
import type { ReplicaTask } from '../workers/replica-task.js';
import { closedError, resolveOptions, type ChainOptions, type ResolvedOptions } from './options.js';
import type { VersionedValue } from './read-pipeline.js';
import { replicaLimits, replicaWorkerFilename } from './replica-worker.js';
import { ReplicaHandle, type ReplicaCounters } from './runtime/replica-handle.js';
import { sealerFor, type ResealReport, type SealingOptions } from './sealing.js';
import { ClientSession } from './session/client-session.js';
import { SessionApi } from './session/session-api.js';
import type { KeyInput, ValueInput } from './write-pipeline.js';
import { batchesLink, clientAcksLink, CLIENT_END, LinkTable, linkNames, linksFor, readsLink, repliesLink } from './topology.js';

export type { ChainOptions, KeyInput, ResealReport, SealingOptions, ValueInput, VersionedValue };

/** A replica's counters as stats() reports them: its id and role in the chain, and what it publishes. */
export type ReplicaStats = { id: number; role: Role } & ReplicaCounters;

export interface ChainStats {
  replicas: ReplicaStats[];
  epoch: number;
  reconfigurations: number;
  writesAccepted: number;
  writesAcknowledged: number;
  writesPending: number;
  readsAnswered: number;
  readsPending: number;
  batchesSent: number;
  bytesSent: number;
  /** Batches sealed but waiting for room in the head's ring (client-side backpressure). */
  batchesWaiting: number;
}

/** A member of the chain as the master sees it. */
export interface ReplicaInfo {
  id: number;
  role: Role;
  epoch: number;
  appliedSeq: number;
  committedSeq: number;
}

/** Emitted as 'reconfigured' after every membership change. */
export interface ReconfigurationEvent {
  epoch: number;
  members: number[];
  removed: number | null;
  reason: 'failed' | 'requested';
  cause?: unknown;
}

export interface ReplicaDigest {
  id: number;
  digest: string;
  keys: number;
  appliedSeq: number;
}

const CLIENT_ID = 1;
const INITIAL_EPOCH = 1;
/** How often the main thread reads the replicas' heartbeat counters and asks the master what to do. */
const HEARTBEAT_CHECK_MS = 25;
const JOIN_THREADS_SPARE = 2;
const REPLICAS_MAX = 16;

export class Chain extends SessionApi {
  readonly options: ResolvedOptions;
  private readonly pool: Piscina<ReplicaTask, string>;
  private readonly master: InProcessMaster;
  private readonly links: LinkTable;
  private readonly handles = new Map<number, ReplicaHandle>();
  private readonly doorbellBuffers = new Map<number, SharedArrayBuffer>();
  private readonly clientDoorbellBuffer: SharedArrayBuffer;
  private readonly clientDoorbell: Doorbell;
  // The tail's rings to the client change when the tail does.
  private clientAcks: SpscRing;
  private readReplies: SpscRing;
  private tailDoorbell: Doorbell;
  /** Writes, reads, sealing, idle waits: the same session connect() runs, over rings here. */
  protected readonly session: ClientSession;
  private readonly heartbeatTimer: NodeJS.Timeout;
  private reconfigurations = 0;
  private nextReplicaId: number;
  /** The replica an addReplica() call waits for, until it is the tail or its join is abandoned. */
  private join: null | { id: number; resolve: (id: number) => void; reject: (error: unknown) => void } = null;
  private headId: number;
  private tailId: number;
  private state: 'open' | 'closing' | 'closed' | 'failed' = 'open';
  private closePromise: Promise<void> | null = null;
  private readonly serviceDone: Promise<void>;
  private readonly hasClientWork = (): boolean =>
    !this.clientAcks.isEmpty() || !this.readReplies.isEmpty() || this.session.writes.canPump() || this.session.reads.canPump();

  constructor(options: ChainOptions = {}) {
    super();
    const resolved = resolveOptions(options);
    this.options = resolved;
    // Validated before any thread starts; the keys stay on this thread.
    const sealer = sealerFor(options.sealing, resolved);
    const count = resolved.replicas;

    this.links = new LinkTable({ dataBytes: resolved.ringBytes, controlBytes: resolved.controlRingBytes });
    const memberIds = Array.from({ length: count }, (_, index) => index + 1);
    this.nextReplicaId = count + 1;
    this.master = new InProcessMaster({
      configuration: { epoch: INITIAL_EPOCH, members: memberIds, joining: null },
      suspectAfter: resolved.suspectAfterMs,
      now: performance.now(),
    });
    const configuration = this.master.configuration;
    this.clientDoorbellBuffer = Doorbell.allocate();
    this.clientDoorbell = new Doorbell(this.clientDoorbellBuffer);
    for (const id of memberIds) this.doorbellBuffers.set(id, Doorbell.allocate());
    const head = configuration.members[0]!;
    const tail = configuration.members.at(-1)!;
    this.headId = head;
    this.tailId = tail;
    this.clientAcks = new SpscRing(this.links.link(clientAcksLink(tail), true).buffer);
    this.readReplies = new SpscRing(this.links.link(repliesLink(tail), false).buffer);
    this.tailDoorbell = new Doorbell(this.doorbellBuffers.get(tail)!);
    this.session = new ClientSession(
      resolved,
      {
        clientId: CLIENT_ID,
        head: new SpscRing(this.links.link(batchesLink(CLIENT_END, head), false).buffer),
        headDoorbell: new Doorbell(this.doorbellBuffers.get(head)!),
        tail: new SpscRing(this.links.link(readsLink(tail), false).buffer),
        tailDoorbell: this.tailDoorbell,
        epoch: () => this.master.configuration.epoch,
        sealer,
      },
      () => (this.state === 'open' ? null : this.unavailableError()),
    );

    this.pool = new Piscina<ReplicaTask, string>({
      filename: replicaWorkerFilename(),
      // One thread more than the replicas, started and idle: a joining or replacement replica takes
      // it at once instead of paying for a thread's start (a few hundred ms of CPU on a busy host).
      minThreads: count + 1,
      // Room for a joining replica and one more while a replaced one stops.
      maxThreads: count + JOIN_THREADS_SPARE,
      concurrentTasksPerWorker: 1,
      ...(resolved.workerExecArgv === undefined ? {} : { execArgv: resolved.workerExecArgv }),
      idleTimeout: Number.POSITIVE_INFINITY,
      maxQueue: count + JOIN_THREADS_SPARE,
      name: 'default',
    });
    for (const id of memberIds) this.startReplica(id, configuration);
    this.links.prefaultNewRings = false;
    this.heartbeatTimer = setInterval(() => this.checkHeartbeats(), HEARTBEAT_CHECK_MS);
    this.heartbeatTimer.unref();
    this.serviceDone = this.serviceLoop();
  }

  private startReplica(id: number, configuration: Configuration): void {
    const handle = new ReplicaHandle({
      pool: this.pool,
      id,
      epoch: configuration.epoch,
      role: roleIn(configuration, id) as Role,
      links: linksFor(this.links, configuration, id, this.doorbellBuffers, this.clientDoorbellBuffer),
      limits: replicaLimits(this.options),
      onRejected: (code, reason) => this.emit('warning', new DabbaError(code as ErrorCode, `replica ${id} rejected a frame: ${reason}`)),
    });
    handle.done.catch((error: unknown) => this.onReplicaFailure(handle, error));
    this.handles.set(id, handle);
  }

  /** Replicas in the chain now (head first). */
  get replicas(): number {
    return this.master.configuration.members.length;
  }

  /** The chain's members as the master sees them, head first. */
  members(): ReplicaInfo[] {
    const configuration = this.master.configuration;
    const ids = [...configuration.members, ...(configuration.joining === null ? [] : [configuration.joining])];
    return ids.map((id) => {
      const counters = this.handles.get(id)!.counters();
      return {
        id,
        role: roleIn(configuration, id) as Role,
        epoch: counters.epoch || INITIAL_EPOCH,
        appliedSeq: counters.appliedSeq,
        committedSeq: counters.committedSeq,
      };
    });
  }

  /**
   * Adds a replica online: it copies a snapshot from the tail, takes every later write from it, and
   * becomes the new tail once it has caught up (the tail briefly stops taking batches for the
   * handoff). Resolves with the new replica's id. Writes keep flowing meanwhile.
   */
  addReplica(): Promise<number> {
    if (this.state !== 'open') return Promise.reject(this.unavailableError());
    if (this.join !== null) return Promise.reject(new DabbaError(ErrorCode.outOfRange, `replica ${this.join.id} is already joining`));
    if (this.master.configuration.members.length >= REPLICAS_MAX) {
      return Promise.reject(new DabbaError(ErrorCode.outOfRange, `a chain has at most ${REPLICAS_MAX} replicas`));
    }
    const id = this.nextReplicaId++;
    this.doorbellBuffers.set(id, Doorbell.allocate());
    const joined = new Promise<number>((resolve, reject) => {
      this.join = { id, resolve, reject };
    });
    // The master starts the join (its worker starts then), asks for the handoff and completes it.
    this.master.requestJoin(id);
    this.settle();
    return joined;
  }

  /** Removes replica `id` from the chain (it stops after the chain has moved on without it). */
  removeReplica(id: number): Promise<void> {
    if (this.state !== 'open') return Promise.reject(this.unavailableError());
    let handle: ReplicaHandle;
    try {
      handle = this.liveMember(id);
      this.master.requestRemoval(id);
    } catch (error) {
      return Promise.reject(error);
    }
    this.settle();
    // A failure handled first can leave it the last replica, which the policy refuses to remove.
    if (this.master.configuration.members.includes(id)) return Promise.reject(new DabbaError(ErrorCode.outOfRange, removalRefusal(this.master.configuration, id)!));
    return handle.done.then(() => undefined);
  }

  /** Replaces replica `id` by a new one: join the new replica, then remove the old. */
  async replaceReplica(id: number): Promise<number> {
    this.liveMember(id);
    const added = await this.addReplica();
    await this.removeReplica(id);
    return added;
  }

  /**
   * Makes replica `id` hang: its thread blocks for good without exiting, so nothing but missing
   * heartbeats gives it away. The master removes it after suspectAfterMs. For chaos testing.
   */
  freezeReplica(id: number): void {
    this.liveMember(id, { joiner: true }).freeze();
  }

  /** The handle of live member `id` (or, with `joiner`, of the replica joining). */
  private liveMember(id: number, options: { joiner?: boolean } = {}): ReplicaHandle {
    const handle = this.handles.get(id);
    const { members, joining } = this.master.configuration;
    const isPart = members.includes(id) || (options.joiner === true && joining === id);
    if (handle === undefined || !handle.alive || !isPart) {
      throw new DabbaError(ErrorCode.outOfRange, `replica ${id} is not a live member of the chain`);
    }
    return handle;
  }

  /**
   * Terminates replica `id`'s worker at once, with no goodbye, exactly as a crash would; the chain
   * detects it and reconfigures by itself. For chaos testing.
   */
  crashReplica(id: number): void {
    const handle = this.liveMember(id, { joiner: true });
    // The failure is noticed when its task is rejected (onReplicaFailure), as a real crash would be.
    handle.crash(`replica ${id} crashed on request`);
  }

  stats(): ChainStats {
    return {
      replicas: this.master.configuration.members.map((id) => ({
        id,
        role: roleIn(this.master.configuration, id) as Role,
        ...this.handles.get(id)!.counters(),
      })),
      epoch: this.master.configuration.epoch,
      reconfigurations: this.reconfigurations,
      writesAccepted: this.session.writes.accepted,
      writesAcknowledged: this.session.writes.writesAcked,
      writesPending: this.session.writes.pending,
      readsAnswered: this.session.reads.readsAnswered,
      readsPending: this.session.reads.pending,
      batchesSent: this.session.writes.batchesSent,
      bytesSent: this.session.writes.bytesSent,
      batchesWaiting: this.session.writes.waitingBatches,
    };
  }

  /** Each replica's store digest; equal digests mean identical state. Call when no writes are pending. */
  async digests(): Promise<ReplicaDigest[]> {
    if (this.state !== 'open' && this.state !== 'closing') throw this.unavailableError();
    const members = this.master.configuration.members;
    const digests = await Promise.all(members.map((id) => this.handles.get(id)!.digest()));
    return digests.map((digest, index) => ({ id: members[index]!, ...digest }));
  }

  /**
   * Waits (up to closeTimeoutMs) for pending writes and reads to be answered, stops the replicas
   * and settles anything still pending with DABBA_ERR_CLOSED. Idempotent.
   */
  close(): Promise<void> {
    if (this.closePromise === null) this.closePromise = this.shutdown();
    return this.closePromise;
  }

  private async shutdown(): Promise<void> {
    if (this.state === 'open') {
      this.state = 'closing';
      await this.session.drain(this.options.closeTimeoutMs);
    }
    const wasFailed = this.state === 'failed';
    this.state = 'closed';
    this.session.reads.fail(closedError());
    clearInterval(this.heartbeatTimer);
    const live = [...this.handles.values()].filter((handle) => handle.alive);
    let tailStopped = false;
    if (!wasFailed) {
      // Replicas send their last acks as they stop. Once the tail has stopped and its acks are
      // drained, a write not acknowledged is not committed and never will be: it fails plainly.
      const tail = this.handles.get(this.master.configuration.members.at(-1)!)!;
      for (const handle of live) handle.stop();
      const stopped = await Promise.allSettled(live.map((handle) => handle.done));
      tailStopped = stopped[live.indexOf(tail)]?.status === 'fulfilled';
      this.service();
    }
    this.session.fail(closedError(), { outcomeKnown: tailStopped });
    this.clientDoorbell.ring();
    await this.serviceDone;
    for (const handle of this.handles.values()) handle.closePort();
    await this.pool.destroy();
  }

  private unavailableError(): DabbaError {
    return this.state === 'failed'
      ? new DabbaError(ErrorCode.replicaFailed, 'a replica of this chain failed')
      : closedError();
  }

  /** The main thread's side of the rings: acks, replies, and batches waiting for ring space. */
  private async serviceLoop(): Promise<void> {
    while (this.state !== 'closed') {
      await this.clientDoorbell.waitAsync(this.hasClientWork, 20);
      this.service();
    }
  }

  private service(): void {
    const session = this.session;
    if (session.drainAcks(this.clientAcks) > 0 || !this.clientAcks.isEmpty()) {
      if (this.clientAcks.takeProducerWaiting()) this.tailDoorbell.ring();
    }
    if (session.drainReplies(this.readReplies) > 0) {
      if (this.readReplies.takeProducerWaiting()) this.tailDoorbell.ring();
    }
    if (session.writes.canPump()) session.pumpWrites();
    if (session.reads.canPump()) session.pumpReads();
    session.progressed();
  }

  /** A replica's task ended with an error: its worker crashed, threw, or was terminated. */
  private onReplicaFailure(handle: ReplicaHandle, error: unknown): void {
    if (this.state === 'closed' || !handle.alive) return;
    handle.alive = false;
    handle.failure ??= error;
    this.master.taskFailed(handle.id);
    this.settle();
    // The policy never removes the last member: its state was the only copy of every acknowledged write.
    if (this.master.configuration.members.includes(handle.id)) this.failLastReplica(handle.id, error);
  }

  /** Runs every HEARTBEAT_CHECK_MS: the master hears who is moving and decides (hangs, joins, handoffs). */
  private checkHeartbeats(): void {
    if (this.state !== 'open' && this.state !== 'closing') return;
    this.settle();
  }

  /**
   * Tells the master what the replicas' counters say, then carries out what it decides until it has
   * nothing left to do. Every change to the chain goes through here.
   */
  private settle(): void {
    const now = performance.now();
    let allStarted = true;
    const { members, joining } = this.master.configuration;
    for (const id of [...members, ...(joining === null ? [] : [joining])]) {
      const handle = this.handles.get(id)!;
      if (handle.heartbeatMoved()) this.master.heartbeat(id, now);
      if (!handle.started) allStarted = false;
    }
    // Worker start-up (loading and compiling modules) is not a hang: silence counts once all have started.
    this.master.settle({ now, statusOf: this.statusOf, silenceCounts: allStarted }, this.execute);
  }

  /** A replica's progress as its worker last published it; null before its first heartbeat. */
  private readonly statusOf = (id: number): LiveHostStatus | null => {
    const handle = this.handles.get(id);
    if (handle === undefined || !handle.started) return null;
    const counters = handle.counters();
    return { epoch: counters.epoch, appliedSeq: counters.appliedSeq, joinCaughtUp: counters.joinCaughtUp, handoffReadyEpoch: counters.handoffReadyEpoch };
  };

  /** Carries out one decision of the master. */
  private readonly execute = (decision: InProcessDecision): void => {
    if (decision.kind === 'request-handoff') {
      // The tail stops taking writes until the joiner has everything.
      this.handles.get(this.master.configuration.members.at(-1)!)!.beginHandoff();
      return;
    }
    const { event } = decision;
    if (event.kind === 'joining') this.startReplica(event.replicaId, event.configuration);
    if (event.kind !== 'removed') {
      this.applyConfiguration(event, null);
    } else {
      const removed = this.handles.get(event.replicaId)!;
      this.applyConfiguration(event, this.removalCause(removed, event.reason));
      // Removed as failed while its task still runs: it hangs.
      this.retire(removed, { hung: event.reason === 'failed' });
    }
    this.followJoin();
  };

  /** Why `handle` was removed: its task's error, or its silence if it still runs (a hang); null when asked to. */
  private removalCause(handle: ReplicaHandle, reason: 'failed' | 'requested'): unknown {
    if (reason === 'requested') return null;
    return handle.alive ? new DabbaError(ErrorCode.timeout, `replica ${handle.id} missed its heartbeats`) : handle.failure;
  }

  /** A replica out of the chain must never act again: a hung one is terminated, any other told to stop. */
  private retire(handle: ReplicaHandle, options: { hung: boolean }): void {
    if (!handle.alive) return;
    handle.alive = false;
    if (options.hung) handle.terminate(`replica ${handle.id} stopped responding`);
    else handle.stop();
  }

  /** Settles addReplica()'s promise once its replica is the tail, or once the chain has moved on without it. */
  private followJoin(): void {
    const configuration = this.master.configuration;
    const join = this.join;
    const joiner = join === null ? undefined : this.handles.get(join.id);
    if (join === null || joiner === undefined || configuration.joining === join.id) return;
    this.join = null;
    if (configuration.members.includes(join.id)) {
      join.resolve(join.id);
      return;
    }
    // The join was abandoned (the joiner, or the tail it copied from, failed): nothing wants it now.
    this.retire(joiner, { hung: false });
    join.reject(new DabbaError(ErrorCode.replicaFailed, `replica ${join.id} could not join: the chain changed under it`));
  }

  /** The last replica failed: the chain is unavailable, and every write not acknowledged has an unknown outcome. */
  private failLastReplica(id: number, cause: unknown): void {
    this.state = 'failed';
    // Writes it was sent may or may not have been applied: each fails with OUTCOME_UNKNOWN.
    const failure = new DabbaError(ErrorCode.replicaFailed, `the last replica (${id}) failed`, { cause });
    this.session.fail(failure, { outcomeKnown: false }, new DabbaError(ErrorCode.replicaFailed, `the last replica (${id}) failed`, { cause }));
    this.emit('replicaFailed', failure);
  }

  /**
   * Installs a new configuration: new rings between new neighbours, a 'reconfigure' to every
   * member, and the client re-pointed at the new head and tail. Unacknowledged writes and
   * unanswered reads are sent again; the head drops writes it already has (exactly-once).
   */
  private applyConfiguration(event: MasterEvent, cause: unknown): void {
    const configuration = event.configuration;
    this.reconfigurations++;
    // Drain what the old tail already published: it is committed, and its rings are about to go.
    this.service();
    const tail = configuration.members.at(-1)!;
    const joiner = configuration.joining;
    for (const id of [...configuration.members, ...(joiner === null ? [] : [joiner])]) {
      const handle = this.handles.get(id)!;
      // A joiner started at this very epoch needs no reconfigure; later ones it follows.
      if (id === joiner && handle.startEpoch === configuration.epoch) continue;
      const links = linksFor(this.links, configuration, id, this.doorbellBuffers, this.clientDoorbellBuffer);
      handle.reconfigure(configuration.epoch, roleIn(configuration, id) as Role, id === tail ? joiner : null, links);
    }
    this.links.retainOnly(linkNames(configuration));
    const head = configuration.members[0]!;
    if (head !== this.headId) {
      this.headId = head;
      this.session.switchHead(new SpscRing(this.links.link(batchesLink(CLIENT_END, head), false).buffer), new Doorbell(this.doorbellBuffers.get(head)!));
    }
    if (tail !== this.tailId) {
      this.tailId = tail;
      this.clientAcks = new SpscRing(this.links.link(clientAcksLink(tail), true).buffer);
      this.readReplies = new SpscRing(this.links.link(repliesLink(tail), false).buffer);
      this.tailDoorbell = new Doorbell(this.doorbellBuffers.get(tail)!);
      this.session.switchTail(new SpscRing(this.links.link(readsLink(tail), false).buffer), this.tailDoorbell);
    }
    const removed = event.kind === 'removed' ? event.replicaId : null;
    const reconfigured: ReconfigurationEvent = {
      epoch: configuration.epoch,
      members: [...configuration.members],
      removed,
      reason: event.kind === 'removed' ? event.reason : 'requested',
      cause,
    };
    this.emit('reconfigured', reconfigured);
  }
}

/** Starts a replicated chain in this process. See ChainOptions for limits and defaults. */
export function createChain(options: ChainOptions = {}): Chain {
  return new Chain(options);
}
