/**
 * A node's worker thread: one replica of each of several chains, driven by one loop. A thin driver
 * that feeds ring contents to each replica's pure ChainNode and performs its Ready. Hosted by
 * piscina as a long-running task (the task resolves when the node is stopped, and rejects if it
 * fails, which is how a crash surfaces to the main thread).
 *
 * Rings are shared: one ring from a thread to this one carries the frames of every chain the two
 * have in common, each record tagged with its chain (wire/chain-tag.ts); the loop dispatches on the
 * tag. A record for a chain this node holds no replica of is dropped and counted.
 *
 * Why a shared ring cannot deadlock: a replica refuses a batch only when its in-flight log is full,
 * and a successor's in-flight log is never fuller than its predecessor's (it holds a suffix of what
 * its predecessor held when it forwarded, and learns of commits first), so only a head refuses,
 * and only on its ring from the client. A head's full log drains by acks, which never wait on
 * batches. A batch that cannot be taken stays in its ring and holds back the ones behind it, on
 * that one ring, until acks arrive.
 *
 * One loop iteration: control messages, acks (they free in-flight space), batches, reads, then each
 * replica's Ready. When nothing moved, the thread spins briefly and then sleeps on its doorbell.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { receiveMessageOnPort, threadId } from 'node:worker_threads';
import { ChainNode, type Ready, type RecoveredState } from '../native-free-core/chain/node.js';
import { ErrorCode } from '../native-free-core/errors.js';
import { SpscRing } from '../native-free-core/ring.js';
import { openCatchUp } from '../native-free-core/log/catch-up.js';
import { Store } from '../native-free-core/store.js';
import { CHAIN_TAG_BYTES, chainTagAt, taggedFrame, tryWriteTagged } from '../native-free-core/wire/chain-tag.js';
import { AckEncoder, HelloEncoder, WriteBatchView } from '../native-free-core/wire/codec.js';
import { Admission, loadAdmissionFunction, type AdmissionFunction } from './admission.js';
import { DiskRoom, isOutOfSpace } from './disk-room.js';
import { CommitLatency } from './commit-latency.js';
import { Doorbell } from './doorbell.js';
import { SpinBudget } from './spin-budget.js';
import { nativeCrc32 } from './native-crc32.js';
import { readCommittedMark, ReplicaLog, type Recovered } from './replica-log.js';
import {
  CONTROL_CRASH,
  CONTROL_FREEZE,
  CONTROL_MESSAGES,
  NodeStat,
  ReplicaStat,
  type ControlReply,
  type ControlRequest,
  type LogSettings,
  type NodeTask,
  type ReplicaLimits,
  type ReplicaLinks,
  type ReplicaSpec,
  type RingLink,
} from './replica-task.js';

/** One replica on this node: its protocol state, and the (shared) rings it reads and writes. */
class Replica {
  readonly chain: number;
  readonly node: ChainNode;
  readonly stats: Float64Array;
  /** Something happened to it since its statistics were last published. */
  touched = true;
  batchesIn!: SpscRing;
  batchesOut: SpscRing | null = null;
  acksIn: SpscRing | null = null;
  acksOut: SpscRing | null = null;
  clientAcksOut: SpscRing | null = null;
  readsIn: SpscRing | null = null;
  readRepliesOut: SpscRing | null = null;
  upstreamDoorbell!: Doorbell;
  downstreamDoorbell: Doorbell | null = null;
  clientDoorbell!: Doorbell;

  /** Its log on disk, or null in memory; `logging` once it appends (a joiner: after its snapshot's checkpoint). */
  readonly log: ReplicaLog | null = null;
  logging = false;
  /** Whether its disk has room to go on logging (with a log only). */
  readonly room: DiskRoom | null = null;
  /** A free-space check ran since a write last failed for want of space: one retry may go. */
  private retryDue = false;
  /** Whether its chain was last told its disk is full. */
  reportedFull = false;
  /** As the head: how long its batches take to commit. */
  readonly commits: CommitLatency;

  constructor(spec: ReplicaSpec, task: NodeTask) {
    this.chain = spec.chain;
    this.stats = new Float64Array(spec.stats);
    this.commits = new CommitLatency(this.stats);
    const { limits } = task;
    const store = new Store({ hashKey: randomHashKey() });
    let recovered: RecoveredState | undefined;
    if (spec.log !== undefined && limits.log !== null) {
      const opened = openReplicaLog(spec, limits, store);
      this.log = opened.log;
      // A joiner restarted from a log continues it; a new one logs from its snapshot's checkpoint on.
      const resumed = opened.recovered.appliedSeq > 0;
      this.logging = spec.role !== 'joining' || resumed;
      this.room = new DiskRoom(spec.log.directory, limits.log.diskReserveBytes);
      if (resumed) {
        recovered = {
          appliedSeq: opened.recovered.appliedSeq,
          clientHighWater: opened.recovered.clientHighWater,
          inflight: opened.recovered.recent,
          readsWaitFor: spec.log.readsWaitFor ?? 0,
        };
      }
      this.stats[ReplicaStat.recoveredSeq] = opened.recovered.appliedSeq;
    }
    const log = this.log;
    const catchUpOptions = { crc: nativeCrc32, frameBytesMax: limits.log?.frameBytesMax ?? 0, limits: { keyBytesMax: limits.keyBytesMax, valueBytesMax: limits.valueBytesMax } };
    this.node = new ChainNode({
      id: spec.id,
      epoch: spec.epoch,
      role: spec.role,
      store,
      ...(recovered === undefined ? {} : { recovered }),
      joiner: spec.joiner ?? null,
      ...(log === null ? {} : { openCatchUp: (afterSeq: number, afterEpoch: number, throughSeq: number) => openCatchUp(log.catchUpFiles(), afterSeq, afterEpoch, throughSeq, catchUpOptions) }),
      inflightBytesMax: limits.inflightBytesMax,
      inflightBatchesMax: limits.inflightBatchesMax,
      readReplyPayloadBytesMax: limits.readReplyPayloadBytesMax,
      readReplyResultsMax: limits.readReplyResultsMax,
      snapshotFrameBytesMax: limits.snapshotFrameBytesMax,
      keyBytesMax: limits.keyBytesMax,
      valueBytesMax: limits.valueBytesMax,
      checksum: nativeCrc32,
      readsAtAnyReplica: limits.readsAtAnyReplica,
      watchHistoryBytesMax: limits.watchHistoryBytesMax,
      watchHistoryBatchesMax: limits.watchHistoryBatchesMax,
      watchReplyContentBytesMax: limits.watchReplyContentBytesMax,
    });
  }

  publishStats(): void {
    const stats = this.stats;
    const node = this.node;
    stats[ReplicaStat.epoch] = node.epoch;
    stats[ReplicaStat.joinCaughtUp] = node.joinCaughtUp ? 1 : 0;
    stats[ReplicaStat.handoffReadyEpoch] = node.handoffReady ? node.epoch : 0;
    stats[ReplicaStat.appliedSeq] = node.appliedSeq;
    stats[ReplicaStat.committedSeq] = node.committedSeq;
    stats[ReplicaStat.inflightBytes] = node.inflightBytes;
    stats[ReplicaStat.inflightBatches] = node.inflightBatches;
    stats[ReplicaStat.storeKeys] = node.store.size;
    stats[ReplicaStat.storeHeapBytes] = node.store.heapBytes;
    stats[ReplicaStat.dirtyReads] = node.dirtyReads;
    stats[ReplicaStat.inboundRingBytes] = this.batchesIn === undefined ? 0 : this.batchesIn.usedBytes();
    const log = this.log;
    if (log !== null) {
      stats[ReplicaStat.logSyncs] = log.syncs;
      stats[ReplicaStat.logBytesWritten] = log.bytesWritten;
      stats[ReplicaStat.logCheckpoints] = log.checkpoints;
      stats[ReplicaStat.logSyncedSeq] = log.syncedSeq;
      stats[ReplicaStat.diskFull] = this.diskFull ? 1 : 0;
      stats[ReplicaStat.diskFreeBytes] = Number.isFinite(this.room!.freeBytes) ? this.room!.freeBytes : 0;
    }
  }

  /** No room for its log: it takes no new batches (its chain refuses writes) until space is freed. */
  get diskFull(): boolean {
    return this.room !== null && (this.room.full || this.log!.hasPending);
  }

  /** Reads its free space if a check is due (after which a failed write may be retried). */
  checkDisk(): void {
    if (this.room!.check()) this.retryDue = true;
  }

  /**
   * Makes what it applied durable before anything of it leaves (performReady). False while its disk
   * is out of space: nothing goes out, and the write is retried after the next free-space check.
   */
  commitLog(snapshotFrameBytesMax: number): boolean {
    const room = this.room!;
    if (room.writeFailing && !this.retryDue) return false;
    this.retryDue = false;
    // A joiner whose first checkpoint found no room has nothing durable to stand on yet: it tries again.
    const written = this.withRoom(() => (this.logging || !this.node.joinCaughtUp || this.startLogging(snapshotFrameBytesMax)) && this.log!.commit());
    if (written) room.writeSucceeded();
    return written;
  }

  /** Runs a write to the log; false, with the disk marked out of space, if it found no room. */
  private withRoom(write: () => boolean): boolean {
    try {
      if (write()) return true;
    } catch (error) {
      if (!isOutOfSpace(error)) throw error;
    }
    this.room!.writeFailed();
    this.touched = true;
    return false;
  }

  private startLogging(snapshotFrameBytesMax: number): true {
    this.log!.checkpoint(this.node.checkpointSource(), snapshotFrameBytesMax);
    this.logging = true;
    return true;
  }

  /**
   * After a batch was applied: stage it in the log. A joiner's log starts with a checkpoint of the
   * snapshot it loaded, before the first batch after it.
   */
  logApplied(frame: Uint8Array, firstSeq: number, count: number, snapshotFrameBytesMax: number): void {
    const log = this.log!;
    if (this.logging) {
      if (count > 0) log.append(frame, firstSeq, count);
      return;
    }
    if (!this.node.joinCaughtUp) return;
    // No room for it: commitLog() tries again, and nothing leaves the joiner until it is written.
    this.withRoom(() => this.startLogging(snapshotFrameBytesMax));
  }

  /** A checkpoint once the log since the last one outgrew the store (or checkpointBytesMin): disk use follows live data. */
  checkpointIfDue(settings: LogSettings, snapshotFrameBytesMax: number): void {
    const log = this.log!;
    if (!this.logging || this.diskFull || log.bytesSinceCheckpoint < Math.max(settings.checkpointBytesMin, this.node.store.heapBytes)) return;
    // Its joiner is being sent batches from its log: they stay until the catch-up is done.
    if (this.node.joinCatchingUp) return;
    // It keeps the segments of its unacknowledged batches: a successor may have to be sent them
    // after a restart. With no room for it, the log stays as it was (the file is removed), and grows.
    this.withRoom(() => {
      log.checkpoint(this.node.checkpointSource(), snapshotFrameBytesMax, this.node.committedSeq);
      return true;
    });
  }
}

/**
 * Opens (or, for a fresh replica, empties and opens) a replica's log, loading it into `store`. A
 * joiner that is not fresh first takes over the log it adopts (ReplicaLogPlacement.adoptFrom); if
 * that holds nothing, it starts empty like any joiner.
 */
function openReplicaLog(spec: ReplicaSpec, limits: ReplicaLimits, store: Store): { log: ReplicaLog; recovered: Recovered } {
  const placement = spec.log!;
  if (placement.fresh) rmSync(placement.directory, { recursive: true, force: true });
  else if (placement.adoptFrom !== undefined && existsSync(placement.adoptFrom)) renameSync(placement.adoptFrom, placement.directory);
  // An adopted log counts only as far as its replica knew it committed: after that, it may hold
  // writes the chain never took (a head that failed before forwarding them), which no tail continues.
  const opened = openLogAt(placement.directory, limits, store, spec.role === 'joining' ? readCommittedMark(placement.directory) : undefined);
  if (spec.role !== 'joining' || opened.recovered.appliedSeq > 0) return opened;
  opened.log.close();
  rmSync(placement.directory, { recursive: true, force: true });
  return openLogAt(placement.directory, limits, store);
}

function openLogAt(directory: string, limits: ReplicaLimits, store: Store, stopAfterSeq?: number): { log: ReplicaLog; recovered: Recovered } {
  const settings = limits.log!;
  return ReplicaLog.open(
    {
      directory,
      durability: settings.durability,
      segmentBytesMax: settings.segmentBytesMax,
      frameBytesMax: settings.frameBytesMax,
      limits: { keyBytesMax: limits.keyBytesMax, valueBytesMax: limits.valueBytesMax },
      syncIntervalMs: settings.syncIntervalMs,
      keepRecent: { bytesMax: limits.inflightBytesMax, batchesMax: limits.inflightBatchesMax },
      // A replica that was away catches up from the newest part of this log (log/catch-up.ts).
      retainBytes: settings.checkpointBytesMin,
      ...(stopAfterSeq === undefined ? {} : { stopAfterSeq }),
    },
    store,
    limits.snapshotFrameBytesMax,
  );
}

type Source = 'upstream' | 'downstream' | 'client';

class NodeDriver {
  private readonly replicas = new Map<number, Replica>();
  /** The same replicas as an array: the loop walks it every pass, with no iterator to allocate. */
  private replicaList: Replica[] = [];
  /** Open rings by link id, shared by the replicas that use them; kept across reconfigurations. */
  private rings = new Map<number, SpscRing>();
  /** Who to wake when this node frees room in an inbound ring: its producer's doorbell. */
  private readonly producers = new Map<SpscRing, Doorbell>();
  /** The distinct inbound rings, by what they carry (recomputed when replicas or links change). */
  private acksRings: SpscRing[] = [];
  private batchRings: SpscRing[] = [];
  private readRings: SpscRing[] = [];
  /** Batch rings whose first record waits for room in its replica's in-flight log (acks clear it). */
  private readonly blockedInbound = new Set<SpscRing>();
  /** Read rings whose first record waits for room for its replies (retried once a reply ring drains). */
  private readonly blockedReads = new Set<SpscRing>();
  private readonly doorbell: Doorbell;
  private readonly helloEncoder = new HelloEncoder();
  private readonly ackEncoder = new AckEncoder();
  private readonly stats: Float64Array;
  private readonly controlSignal: Int32Array;
  private stopped = false;
  /** slowReplica(): how many times as long each batch applied takes (1: as long as it takes). */
  private slowdown = 1;
  /** Outbound rings that were too full for a record, and the record's length: retried when they drain. */
  private readonly blockedRings: SpscRing[] = [];
  private readonly blockedLengths: number[] = [];
  private readonly hasWork = (): boolean => this.computeHasWork();

  /** The head's admission hook (./admission.ts), or null. */
  private readonly admission: Admission | null;
  /** Reads a client batch's client seqs before it is screened (any record limits: the core checks them). */
  private readonly peekView = new WriteBatchView();
  /** The replica whose batch the hook is screening (its failures are reported as that replica's). */
  private screening: Replica | null = null;

  constructor(
    private readonly task: NodeTask,
    admit: AdmissionFunction | null = null,
  ) {
    this.admission =
      admit === null
        ? null
        : new Admission(admit, task.limits.admitBudgetMs, { keyBytesMax: task.limits.keyBytesMax, valueBytesMax: task.limits.valueBytesMax }, task.limits.writeFrameBytesMax, (reason) => {
            const replica = this.screening;
            if (replica !== null) this.reply({ type: 'rejected', chain: replica.chain, replicaId: replica.node.id, code: ErrorCode.rejected, reason });
          });
    this.stats = new Float64Array(task.stats);
    this.controlSignal = new Int32Array(task.controlSignal);
    this.doorbell = new Doorbell(task.doorbell);
    for (const spec of task.replicas) this.addReplica(spec);
  }

  private addReplica(spec: ReplicaSpec): void {
    const replica = new Replica(spec, this.task);
    this.replicas.set(spec.chain, replica);
    this.replicaList = [...this.replicas.values()];
    this.applyLinks(replica, spec.links);
  }

  /** Points `replica` at the rings of `links` (opening new ones), then recounts the inbound rings. */
  private applyLinks(replica: Replica, links: ReplicaLinks): void {
    const open = (link: RingLink | null): SpscRing | null => {
      if (link === null) return null;
      let ring = this.rings.get(link.id);
      if (ring === undefined) {
        ring = new SpscRing(link.buffer);
        this.rings.set(link.id, ring);
      }
      return ring;
    };
    replica.batchesIn = open(links.batchesIn)!;
    replica.batchesOut = open(links.batchesOut);
    replica.acksIn = open(links.acksIn);
    replica.acksOut = open(links.acksOut);
    replica.clientAcksOut = open(links.clientAcksOut);
    replica.readsIn = open(links.readsIn);
    replica.readRepliesOut = open(links.readRepliesOut);
    replica.upstreamDoorbell = new Doorbell(links.upstreamDoorbell);
    replica.downstreamDoorbell = links.downstreamDoorbell && new Doorbell(links.downstreamDoorbell);
    replica.clientDoorbell = new Doorbell(links.clientDoorbell);
    this.recountRings();
  }

  /** The inbound rings the replicas use now; rings no replica uses are closed. */
  private recountRings(): void {
    const acks = new Set<SpscRing>();
    const batches = new Set<SpscRing>();
    const reads = new Set<SpscRing>();
    const used = new Set<SpscRing>();
    this.producers.clear();
    for (const replica of this.replicas.values()) {
      batches.add(replica.batchesIn);
      this.producers.set(replica.batchesIn, replica.upstreamDoorbell);
      if (replica.acksIn !== null) {
        acks.add(replica.acksIn);
        this.producers.set(replica.acksIn, replica.downstreamDoorbell!);
      }
      if (replica.readsIn !== null) {
        reads.add(replica.readsIn);
        this.producers.set(replica.readsIn, replica.clientDoorbell);
      }
      for (const ring of [replica.batchesIn, replica.batchesOut, replica.acksIn, replica.acksOut, replica.clientAcksOut, replica.readsIn, replica.readRepliesOut]) {
        if (ring !== null) used.add(ring);
      }
    }
    this.acksRings = [...acks];
    this.batchRings = [...batches];
    this.readRings = [...reads];
    for (const [id, ring] of this.rings) if (!used.has(ring)) this.rings.delete(id);
    this.blockedInbound.clear();
    this.blockedReads.clear();
    this.blockedRings.length = 0;
    this.blockedLengths.length = 0;
  }

  run(): void {
    this.stats[NodeStat.osThreadId] = osThreadId();
    this.stats[NodeStat.threadId] = threadId;
    const { spinIterations, sleepTimeoutMs } = this.task.limits;
    const spin = new SpinBudget(spinIterations);
    while (!this.stopped) {
      const moved = this.iterate();
      if (!moved && !this.stopped) {
        this.stats[NodeStat.sleeps]!++;
        const waitStart = performance.now();
        this.doorbell.waitBlocking(this.hasWork, spin.iterations, this.sleepMs(sleepTimeoutMs));
        spin.record(this.doorbell.lastWaitSlept, performance.now() - waitStart);
      }
    }
    // A clean stop sends the last acks: the client can then tell every write it was not
    // acknowledged is not committed (see Chain.close).
    for (const replica of this.replicas.values()) if (replica.node.hasReady()) this.performReady(replica);
    for (const replica of this.replicas.values()) replica.log?.close();
    this.reply({ type: 'stopped', nodeId: this.task.nodeId });
  }

  /** How long to sleep at most: until the next log sync falls due (`async` mode), within sleepTimeoutMs. */
  private sleepMs(sleepTimeoutMs: number): number {
    let sleep = sleepTimeoutMs;
    for (const replica of this.replicaList) if (replica.log !== null) sleep = Math.min(sleep, replica.log.msUntilSyncDue());
    return Math.max(1, Math.ceil(sleep));
  }

  /** A crash: every log let go as it is, with nothing staged written (what a power cut leaves). */
  abandonLogs(): void {
    for (const replica of this.replicas.values()) replica.log?.abandon();
  }

  private computeHasWork(): boolean {
    if (Atomics.load(this.controlSignal, 0) !== 0) return true;
    for (const ring of this.acksRings) if (!ring.isEmpty()) return true;
    for (const ring of this.readRings) if (!this.blockedReads.has(ring) && !ring.isEmpty()) return true;
    for (const ring of this.batchRings) if (!this.blockedInbound.has(ring) && !ring.isEmpty()) return true;
    // A consumer released space we were waiting for: retry sending.
    for (let index = 0; index < this.blockedRings.length; index++) {
      if (this.blockedRings[index]!.canWrite(this.blockedLengths[index]!)) return true;
    }
    return false;
  }

  /** One pass over every input; returns whether anything moved. */
  private iterate(): boolean {
    let moved = false;
    this.crashIfAsked();
    if (Atomics.load(this.controlSignal, 0) !== 0) moved = this.handleControl() || moved;
    this.blockedReads.clear();
    for (const ring of this.acksRings) moved = this.drainAcks(ring) || moved;
    for (const ring of this.batchRings) moved = this.drainBatches(ring) || moved;
    for (const ring of this.readRings) moved = this.drainReads(ring) || moved;
    this.blockedRings.length = 0;
    this.blockedLengths.length = 0;
    for (const replica of this.replicaList) {
      if (replica.node.hasReady()) moved = this.performReady(replica) || moved;
      if (replica.commits.isDue(replica.node.committedSeq)) replica.commits.committed(replica.node.committedSeq, performance.now());
      if (replica.log !== null) {
        replica.log.syncIfDue();
        replica.log.markCommitted(replica.node.committedSeq);
        replica.checkpointIfDue(this.task.limits.log!, this.task.limits.snapshotFrameBytesMax);
        replica.checkDisk();
        this.reportDisk(replica);
      }
      // Only what changed: a node may hold many replicas, most idle in any one pass.
      if (!replica.touched) continue;
      replica.touched = false;
      replica.publishStats();
    }
    this.stats[NodeStat.heartbeats]!++;
    return moved;
  }

  /** If a replica's disk filled up or has room again: its chain hears of it; with room, its batches flow again. */
  private reportDisk(replica: Replica): void {
    const full = replica.diskFull;
    if (full === replica.reportedFull) return;
    replica.reportedFull = full;
    // Its statistics first: whoever hears of the change reads them consistent with it.
    replica.publishStats();
    const room = replica.room!;
    this.reply({ type: 'disk', chain: replica.chain, replicaId: replica.node.id, full, freeBytes: room.freeBytes, reserveBytes: room.reserveBytes });
    if (!full) this.blockedInbound.clear();
  }

  /**
   * crashReplica(): stop dead, between two batches, with no goodbye and nothing flushed, the way a
   * power cut would. Throwing rejects the piscina task, which is how the main thread learns of it.
   */
  private crashIfAsked(): void {
    const signal = Atomics.load(this.controlSignal, 0);
    if (signal === CONTROL_CRASH) throw new Error(`node ${this.task.nodeId} crashed on request`);
    if (signal === CONTROL_FREEZE) {
      // Hang: block this thread for good. Only the master's heartbeat detector notices.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    }
  }

  private handleControl(): boolean {
    Atomics.compareExchange(this.controlSignal, 0, CONTROL_MESSAGES, 0);
    for (;;) {
      const envelope = receiveMessageOnPort(this.task.port);
      if (envelope === undefined) return true;
      this.control(envelope.message as ControlRequest);
    }
  }

  private control(request: ControlRequest): void {
    if (request.type === 'stop') {
      this.stopped = true;
      return;
    }
    if (request.type === 'add-replica') {
      this.addReplica(request.replica);
      return;
    }
    if (request.type === 'slow-down') {
      this.slowdown = request.factor;
      return;
    }
    const replica = this.replicas.get(request.chain);
    if (replica === undefined) return;
    switch (request.type) {
      case 'digest':
        this.reply({
          type: 'digest',
          requestId: request.requestId,
          chain: replica.chain,
          replicaId: replica.node.id,
          digest: replica.node.store.digest(),
          keys: replica.node.store.size,
          appliedSeq: replica.node.appliedSeq,
        });
        break;
      case 'reconfigure':
        replica.touched = true;
        replica.node.reconfigure(request.epoch, request.role, { joiner: request.joiner });
        this.applyLinks(replica, request.links);
        break;
      case 'begin-handoff':
        replica.touched = true;
        if (replica.node.forwardsDownstream && replica.node.isTail) replica.node.beginHandoff();
        break;
      case 'drop-replica':
        // Its chain went on without it. Its log is of use only to a joiner its host may run next.
        if (replica.log !== null && request.keepLog) {
          replica.log.markCommitted(replica.node.committedSeq, true);
          replica.log.close();
        } else if (replica.log !== null) {
          replica.log.abandon();
          rmSync(replica.log.directory, { recursive: true, force: true });
        }
        this.replicas.delete(request.chain);
        this.replicaList = [...this.replicas.values()];
        this.recountRings();
        break;
    }
  }

  /**
   * After a claim, before any record of it is stepped: the control messages posted so far. The
   * main thread posts a chain's reconfiguration before it sends that chain anything for the new
   * configuration (a client's batches for a new head, its reads for a new tail), and a ring here is
   * shared with other chains, so it may be read mid-pass: a record claimed now was published after
   * any message already signalled, and must meet its replica reconfigured.
   */
  private controlFirst(): void {
    if (Atomics.load(this.controlSignal, 0) === CONTROL_MESSAGES) this.handleControl();
  }

  /**
   * The replica a record is for, or undefined (the record is dropped and counted) for a chain this
   * node holds none of. A joiner's replica is there already: controlFirst() read the message that
   * adds it before any record that could follow it.
   */
  private replicaFor(chain: number): Replica | undefined {
    const replica = this.replicas.get(chain);
    if (replica === undefined) this.stats[NodeStat.framesForOtherChains]!++;
    return replica;
  }

  private drainAcks(ring: SpscRing): boolean {
    if (!ring.claim()) return false;
    this.controlFirst();
    for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
      const replica = this.replicaFor(chainTagAt(ring.bytes, offset));
      if (replica === undefined) continue;
      // The successor sends cumulative Acks, and a Hello after each reconfiguration.
      this.step(replica, 'downstream', taggedFrame(ring.bytes, offset, ring.recordLength));
    }
    ring.release();
    // Acks trimmed in-flight logs: inbound batches may fit again.
    this.blockedInbound.clear();
    this.notifyIfProducerWaits(ring);
    return true;
  }

  private drainBatches(ring: SpscRing): boolean {
    if (this.blockedInbound.has(ring) || !ring.claim()) return false;
    this.controlFirst();
    let taken = 0;
    for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
      const length = ring.recordLength;
      const replica = this.replicaFor(chainTagAt(ring.bytes, offset));
      taken++;
      if (replica === undefined) continue;
      const frame = taggedFrame(ring.bytes, offset, length);
      if (replica.diskFull) {
        // No room for its log: the batch waits in its ring until space is freed (see DiskRoom).
        ring.unread();
        taken--;
        this.blockedInbound.add(ring);
        break;
      }
      if (!replica.node.canAccept(frame.length)) {
        // In-flight log full: leave the batch in the ring until acks free space (backpressure).
        ring.unread();
        taken--;
        this.blockedInbound.add(ring);
        replica.stats[ReplicaStat.backpressureStalls]!++;
        break;
      }
      this.crashIfAsked();
      // Batches, and a joiner's snapshot frames before them, on the same link. The admission hook's
      // time is the user's, not the replica's: it is not counted as busy (a costly hook would make
      // every head look slow to fail-slow detection).
      const input = this.admission !== null && replica.node.isHead ? this.screen(replica, frame) : frame;
      const startedAt = performance.now();
      const result = this.step(replica, 'upstream', input);
      if (this.slowdown > 1 && result === 'applied') spinFor((performance.now() - startedAt) * (this.slowdown - 1));
      replica.stats[ReplicaStat.busyMs]! += performance.now() - startedAt;
      if (result === 'applied' && !replica.node.isTail && replica.log === null) {
        // Forward each batch as soon as it is applied, so the next replica works on it while this
        // one applies the next: the chain is a pipeline, not a relay of bursts. The tail instead
        // acknowledges once per drain: acks are cumulative, and waking the main thread (a
        // waitAsync waiter) costs tens of microseconds each time. A replica with a log forwards
        // once per drain too: one write (and in `fsync` mode one fdatasync) covers the drain's
        // batches, before any of them leaves (group commit).
        this.performReady(replica);
      }
    }
    ring.release();
    if (taken > 0) this.notifyIfProducerWaits(ring);
    return taken > 0;
  }

  /**
   * A client batch at a head with an admission hook: screened (./admission.ts), unless the head has
   * ordered it already (a resend: the first copy's decision stands, and the head drops this one).
   */
  private screen(replica: Replica, frame: Uint8Array): Uint8Array {
    const view = this.peekView;
    if (view.open(frame) !== null || view.firstClientSeq + view.count - 1 <= replica.node.clientHighWaterMark(view.clientId)) return frame;
    this.screening = replica;
    const screened = this.admission!.screen(frame);
    this.screening = null;
    this.stats[NodeStat.admissionRefused] = this.admission!.refused;
    this.stats[NodeStat.admissionFailures] = this.admission!.failures;
    return screened;
  }

  private drainReads(ring: SpscRing): boolean {
    if (!ring.claim()) return false;
    this.controlFirst();
    let taken = 0;
    for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
      const replica = this.replicaFor(chainTagAt(ring.bytes, offset));
      if (replica !== undefined && !replica.node.canAcceptReads()) {
        // Replies that cannot leave (a full ring) hold further reads back in theirs.
        ring.unread();
        this.blockedReads.add(ring);
        break;
      }
      taken++;
      if (replica !== undefined) this.step(replica, 'client', taggedFrame(ring.bytes, offset, ring.recordLength));
    }
    ring.release();
    this.notifyIfProducerWaits(ring);
    return taken > 0;
  }

  /** Hands one frame to a replica and counts what came of it; returns its status. */
  private step(replica: Replica, source: Source, frame: Uint8Array): string {
    replica.touched = true;
    const result = replica.node.step(source, frame);
    if (result.status === 'applied') {
      if (source === 'upstream') {
        // Before it is forwarded or acknowledged: performReady() commits the log first.
        if (replica.log !== null) replica.logApplied(frame, result.firstSeq, result.count, this.task.limits.snapshotFrameBytesMax);
        replica.stats[ReplicaStat.batchesApplied]!++;
        replica.stats[ReplicaStat.writesApplied]! += result.count;
        if (replica.node.isHead) replica.commits.applied(result.firstSeq + result.count - 1, result.count, performance.now());
      } else if (source === 'client') {
        replica.stats[ReplicaStat.readsServed]! += result.count;
      }
    } else if (result.status === 'ignored' && result.code === ErrorCode.staleEpoch) {
      replica.stats[ReplicaStat.staleFrames]!++;
    } else if (result.status === 'rejected' || result.status === 'ignored') {
      replica.stats[ReplicaStat.rejectedFrames]!++;
      this.reply({ type: 'rejected', chain: replica.chain, replicaId: replica.node.id, code: result.code, reason: result.reason });
    }
    return result.status;
  }

  private performReady(replica: Replica): boolean {
    // Serving watchers is not work on writes: it is left out of the busy time (as reads are).
    replica.node.serveDueWatches();
    const startedAt = performance.now();
    try {
      return this.sendReady(replica);
    } finally {
      replica.stats[ReplicaStat.busyMs]! += performance.now() - startedAt;
    }
  }

  private sendReady(replica: Replica): boolean {
    const node = replica.node;
    const chain = replica.chain;
    replica.touched = true;
    // What it applied is in its log (on disk in `fsync` mode) before it forwards or acknowledges it.
    if (replica.log !== null && !replica.commitLog(this.task.limits.snapshotFrameBytesMax)) {
      this.reportDisk(replica);
      return this.answerReadsOnly(replica);
    }
    const ready: Ready = node.ready();
    let forwarded = 0;
    const out = replica.batchesOut;
    // A joiner's snapshot comes a frame at a time, and no batch goes before its last frame (the core
    // leaves `forward` empty until then).
    let snapshotSent = false;
    if (out !== null && ready.snapshot !== null) {
      snapshotSent = this.tryWrite(out, chain, ready.snapshot);
      if (snapshotSent && out.publish()) replica.downstreamDoorbell!.ring();
    }
    if (out !== null && ready.forward.length > 0) {
      for (const batch of ready.forward) {
        if (!this.tryWrite(out, chain, batch)) break;
        forwarded++;
      }
      if (forwarded > 0 && out.publish()) replica.downstreamDoorbell!.ring();
    }
    let acksSent = true;
    if (ready.helloUpstream !== null) {
      acksSent = this.send(replica.acksOut!, chain, this.helloEncoder.encode(ready.helloUpstream), replica.upstreamDoorbell);
    }
    if (ready.ackUpstream !== null && acksSent) {
      acksSent = this.send(replica.acksOut!, chain, this.ackEncoder.encode(ready.ackUpstream), replica.upstreamDoorbell);
    }
    for (const clientAck of ready.clientAcks) {
      acksSent = this.send(replica.clientAcksOut!, chain, this.ackEncoder.encode(clientAck), replica.clientDoorbell) && acksSent;
    }
    let repliesSent = 0;
    for (const reply of ready.readReplies) {
      if (!this.send(replica.readRepliesOut!, chain, reply, replica.clientDoorbell)) break;
      repliesSent++;
    }
    node.advance(ready, { forwarded, acksSent, repliesSent, snapshotSent });
    const hadAcks = ready.ackUpstream !== null || ready.clientAcks.length > 0;
    return forwarded > 0 || snapshotSent || (hadAcks && acksSent) || repliesSent > 0;
  }

  /**
   * Out of space for its log: nothing it applied since its last commit may be forwarded or
   * acknowledged, but a tail still answers reads. What it applied and could not log, each
   * predecessor logged before forwarding it, so no crash can take away a write a read has seen
   * (a solo replica has no predecessor: it answers nothing until its log is written).
   */
  private answerReadsOnly(replica: Replica): boolean {
    if (replica.node.isHead) return false;
    const ready = replica.node.ready();
    let repliesSent = 0;
    for (const reply of ready.readReplies) {
      if (!this.send(replica.readRepliesOut!, replica.chain, reply, replica.clientDoorbell)) break;
      repliesSent++;
    }
    replica.node.advance(ready, { forwarded: 0, acksSent: false, repliesSent, snapshotSent: false });
    return repliesSent > 0;
  }

  /** Stages one tagged record; if the ring is full, asks its consumer to wake us when it frees space. */
  private tryWrite(ring: SpscRing, chain: number, frame: Uint8Array): boolean {
    if (tryWriteTagged(ring, chain, frame)) return true;
    this.blockedRings.push(ring);
    this.blockedLengths.push(CHAIN_TAG_BYTES + frame.length);
    ring.markProducerWaiting();
    return false;
  }

  /** Writes and publishes one record, ringing its consumer; false if the ring is full. */
  private send(ring: SpscRing, chain: number, frame: Uint8Array, consumer: Doorbell): boolean {
    if (!this.tryWrite(ring, chain, frame)) return false;
    if (ring.publish()) consumer.ring();
    return true;
  }

  /** After freeing ring space: wake the producer if it is waiting for space. */
  private notifyIfProducerWaits(ring: SpscRing): void {
    if (ring.takeProducerWaiting()) this.producers.get(ring)?.ring();
  }

  private reply(message: ControlReply): void {
    this.task.port.postMessage(message);
  }
}

/**
 * A fresh secret key for a store's slot hash, one per replica: keys come from clients, and a key
 * they cannot learn keeps them from crafting keys that pile up in one probe run (see StoreOptions).
 */
function randomHashKey(): [number, number] {
  const bytes = randomBytes(8);
  return [bytes.readUInt32LE(0), bytes.readUInt32LE(4)];
}

/** This thread's id in the operating system (Linux /proc), or 0 where there is no such file. */
function osThreadId(): number {
  try {
    const stat = readFileSync('/proc/thread-self/stat', 'utf8');
    return Number(stat.slice(0, stat.indexOf(' ')));
  } catch {
    return 0;
  }
}

/** Piscina task entry: runs the node until it is told to stop (first loading its admission hook, if any). */
export default async function runNode(task: NodeTask): Promise<string> {
  const admit = task.limits.admit === null ? null : await loadAdmissionFunction(task.limits.admit);
  const driver = new NodeDriver(task, admit);
  try {
    driver.run();
  } catch (error) {
    driver.abandonLogs();
    throw error;
  }
  task.port.close();
  return 'stopped';
}

/** Keeps the thread busy for `ms`, as work that took that long would (slowReplica()). */
function spinFor(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}
