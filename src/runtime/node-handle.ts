/**
 * One node's worker, seen from the thread that runs it: the piscina task it runs as (its rejection
 * is how a crash surfaces), the control port and signal that reach it between two ring drains, the
 * statistics it publishes in shared memory (the thread's, its heartbeat among them, and each of its
 * replicas'), and what can be done to it: add or drop a replica of a chain, reconfigure one, begin
 * a handoff, ask for a digest, stop it, crash or freeze it. The in-process engine
 * (`createChain()`) holds one per node on a shared pool; a host (`dabba serve`) holds one, behind
 * the rings to its network thread.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import type { Piscina } from 'piscina';
import type { Role } from '../../native-free-core/chain/node.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import type { NodeLoad } from '../../native-free-core/master/fail-slow.js';
import { Doorbell } from '../../workers/doorbell.js';
import {
  CONTROL_CRASH,
  CONTROL_FREEZE,
  CONTROL_MESSAGES,
  NODE_STAT_COUNT,
  NodeStat,
  REPLICA_STAT_COUNT,
  ReplicaStat,
  type ControlReply,
  type ControlRequest,
  type NodeTask,
  type ReplicaLimits,
  type ReplicaLinks,
  type ReplicaLogPlacement,
  type ReplicaSpec,
} from '../../workers/replica-task.js';

/** A replica to place on a node: its chain, its id there, and where it stands. */
export interface ReplicaPlacement {
  chain: number;
  id: number;
  epoch: number;
  role: Role;
  links: ReplicaLinks;
  /** Its log on disk (durable runtimes only). */
  log?: ReplicaLogPlacement;
  /** A tail restarted from its log while a replica joins behind it: that joiner. */
  joiner?: number | null;
}

export interface NodeHandleOptions {
  pool: Piscina<NodeTask, string>;
  id: number;
  /** The replicas it starts with (more come with addReplica). */
  replicas: ReplicaPlacement[];
  /** The node's doorbell (its replicas' links name it too). */
  doorbell: SharedArrayBuffer;
  limits: ReplicaLimits;
  /** A replica refused a frame it was given. */
  onRejected?(chain: number, code: string, reason: string, replicaId: number): void;
  /** A replica's disk became full, or has room again (workers/disk-room.ts). */
  onDisk?(report: DiskReport): void;
}

/** What a replica says of its disk when it fills up or has room again. */
export interface DiskReport {
  chain: number;
  replicaId: number;
  full: boolean;
  freeBytes: number;
  reserveBytes: number;
}

/** What a replica reports of itself, read from its (and its thread's) shared statistics. */
export interface ReplicaCounters {
  epoch: number;
  appliedSeq: number;
  committedSeq: number;
  batchesApplied: number;
  writesApplied: number;
  readsServed: number;
  /** Reads it answered only once the write they return was committed (CRAQ's dirty reads; 0 at a tail). */
  dirtyReads: number;
  inflightBytes: number;
  inflightBatches: number;
  storeKeys: number;
  storeHeapBytes: number;
  sleeps: number;
  backpressureStalls: number;
  rejectedFrames: number;
  /** Frames of an earlier epoch it dropped (the wake of a reconfiguration). */
  staleFrames: number;
  joinCaughtUp: boolean;
  handoffReadyEpoch: number;
  /** Its log on disk (all 0 in memory): fdatasyncs, bytes written, checkpoints, the last seq surely on disk. */
  logSyncs: number;
  logBytesWritten: number;
  logCheckpoints: number;
  logSyncedSeq: number;
  /** The seq its log recovered when it started (0: it started empty). */
  recoveredSeq: number;
  /** Whether its disk is full (its chain refuses writes), and the free bytes last read (0 in memory). */
  diskFull: boolean;
  diskFreeBytes: number;
  /** Wall ms it spent applying batches and sending on what they made ready (its time per write: busyMs / writesApplied). */
  busyMs: number;
  /** Bytes waiting in the ring it takes its batches from, when it last published its figures. */
  inboundRingBytes: number;
  heartbeats: number;
  /** The thread's operating-system id (Linux; 0 elsewhere), for per-thread CPU accounting. */
  osThreadId: number;
  /** The thread's Node.js id (worker_threads.threadId): names its `--cpu-prof` file. */
  threadId: number;
  /** Its thread's admission hook (a head's): writes it refused, and writes refused because it threw or ran late. */
  admissionRefused: number;
  admissionFailures: number;
}

export interface ReplicaDigest {
  digest: string;
  keys: number;
  appliedSeq: number;
}

/** A replica the node holds, as its owner sees it. */
export interface HeldReplica {
  chain: number;
  id: number;
  /** The epoch it was started in. */
  startEpoch: number;
  statistics: Float64Array;
}

let nextRequestId = 1;

export class NodeHandle {
  readonly id: number;
  /** Settles when the task ends: fulfilled after stop(), rejected if the worker failed or was ended. */
  readonly done: Promise<unknown>;
  /**
   * False once its owner has written it off (it failed, hung, or was asked to stop): a failure
   * reported after that is old news. The owner sets it; crash() leaves it, since a crash is to be
   * noticed as a failure.
   */
  alive = true;
  /** Why its task was rejected (it crashed, threw or was terminated); undefined while it runs. */
  failure: unknown = undefined;
  /** The replicas it holds, by chain. */
  readonly replicas = new Map<number, HeldReplica>();
  /** When its task was started (performance.now()). */
  readonly createdAt: number;
  /** The heartbeat counter when heartbeatMoved() last looked. */
  private lastHeartbeat = -1;
  private readonly port: MessagePort;
  private readonly controlSignal: Int32Array;
  private readonly statistics: Float64Array;
  private readonly doorbell: Doorbell;
  private readonly abort = new AbortController();
  /** digest() calls waiting for their reply, by request id. */
  private readonly digestWaiters = new Map<number, (digest: ReplicaDigest) => void>();

  constructor(options: NodeHandleOptions) {
    this.id = options.id;
    this.createdAt = performance.now();
    const channel = new MessageChannel();
    this.port = channel.port1;
    const controlSignal = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
    this.controlSignal = new Int32Array(controlSignal);
    const stats = new SharedArrayBuffer(NODE_STAT_COUNT * Float64Array.BYTES_PER_ELEMENT);
    this.statistics = new Float64Array(stats);
    this.doorbell = new Doorbell(options.doorbell);
    const task: NodeTask = {
      nodeId: options.id,
      replicas: options.replicas.map((placement) => this.hold(placement)),
      limits: options.limits,
      doorbell: options.doorbell,
      stats,
      port: channel.port2,
      controlSignal,
    };
    this.port.on('message', (message: ControlReply) => {
      if (message.type === 'rejected') options.onRejected?.(message.chain, message.code, message.reason, message.replicaId);
      if (message.type === 'disk') options.onDisk?.(message);
      if (message.type !== 'digest') return;
      const resolve = this.digestWaiters.get(message.requestId);
      this.digestWaiters.delete(message.requestId);
      resolve?.({ digest: message.digest, keys: message.keys, appliedSeq: message.appliedSeq });
    });
    this.done = options.pool.run(task, { transferList: [channel.port2], signal: this.abort.signal });
    this.done.catch((error: unknown) => {
      this.failure = error;
    });
  }

  /** Notes a replica as held and gives it its statistics. */
  private hold(placement: ReplicaPlacement): ReplicaSpec {
    const stats = new SharedArrayBuffer(REPLICA_STAT_COUNT * Float64Array.BYTES_PER_ELEMENT);
    this.replicas.set(placement.chain, { chain: placement.chain, id: placement.id, startEpoch: placement.epoch, statistics: new Float64Array(stats) });
    return { ...placement, stats };
  }

  /** Starts a replica of another chain on this node (a joiner, or a chain placed here). */
  addReplica(placement: ReplicaPlacement): void {
    this.sendControl({ type: 'add-replica', replica: this.hold(placement) });
  }

  /**
   * The node stops its replica of `chain` and forgets its state (the chain went on without it);
   * `keepLog`: its log stays, closed whole, for a joiner this host may run next (see ReplicaLogPlacement.adoptFrom).
   */
  dropReplica(chain: number, keepLog = false): void {
    this.replicas.delete(chain);
    this.sendControl({ type: 'drop-replica', chain, keepLog });
  }

  /** Whether the node's loop went round since the last call (it is alive and not hung). */
  heartbeatMoved(): boolean {
    const beats = this.statistics[NodeStat.heartbeats]!;
    if (beats === this.lastHeartbeat) return false;
    this.lastHeartbeat = beats;
    return true;
  }

  /** Whether the worker has started its loop yet (loading and compiling modules is not a hang). */
  get started(): boolean {
    return this.statistics[NodeStat.heartbeats]! > 0;
  }

  /** The counters of the node's replica of `chain` (zeros for a chain it does not hold). */
  /** Its busy time and writes applied over the replicas it holds: what fail-slow detection compares. */
  load(): NodeLoad {
    let busyMs = 0;
    let writesApplied = 0;
    for (const chain of this.replicas.keys()) {
      const counters = this.counters(chain);
      busyMs += counters.busyMs;
      writesApplied += counters.writesApplied;
    }
    return { busyMs, writesApplied };
  }

  counters(chain: number): ReplicaCounters {
    const stat = this.replicas.get(chain)?.statistics ?? EMPTY_REPLICA_STATS;
    const node = this.statistics;
    return {
      epoch: stat[ReplicaStat.epoch]!,
      appliedSeq: stat[ReplicaStat.appliedSeq]!,
      committedSeq: stat[ReplicaStat.committedSeq]!,
      batchesApplied: stat[ReplicaStat.batchesApplied]!,
      writesApplied: stat[ReplicaStat.writesApplied]!,
      readsServed: stat[ReplicaStat.readsServed]!,
      dirtyReads: stat[ReplicaStat.dirtyReads]!,
      inflightBytes: stat[ReplicaStat.inflightBytes]!,
      inflightBatches: stat[ReplicaStat.inflightBatches]!,
      storeKeys: stat[ReplicaStat.storeKeys]!,
      storeHeapBytes: stat[ReplicaStat.storeHeapBytes]!,
      sleeps: node[NodeStat.sleeps]!,
      backpressureStalls: stat[ReplicaStat.backpressureStalls]!,
      rejectedFrames: stat[ReplicaStat.rejectedFrames]!,
      staleFrames: stat[ReplicaStat.staleFrames]!,
      joinCaughtUp: stat[ReplicaStat.joinCaughtUp] === 1,
      handoffReadyEpoch: stat[ReplicaStat.handoffReadyEpoch]!,
      logSyncs: stat[ReplicaStat.logSyncs]!,
      logBytesWritten: stat[ReplicaStat.logBytesWritten]!,
      logCheckpoints: stat[ReplicaStat.logCheckpoints]!,
      logSyncedSeq: stat[ReplicaStat.logSyncedSeq]!,
      recoveredSeq: stat[ReplicaStat.recoveredSeq]!,
      diskFull: stat[ReplicaStat.diskFull] === 1,
      diskFreeBytes: stat[ReplicaStat.diskFreeBytes]!,
      busyMs: stat[ReplicaStat.busyMs]!,
      inboundRingBytes: stat[ReplicaStat.inboundRingBytes]!,
      heartbeats: node[NodeStat.heartbeats]!,
      osThreadId: node[NodeStat.osThreadId]!,
      threadId: node[NodeStat.threadId]!,
      admissionRefused: node[NodeStat.admissionRefused]!,
      admissionFailures: node[NodeStat.admissionFailures]!,
    };
  }

  reconfigure(chain: number, epoch: number, role: Role, joiner: number | null, links: ReplicaLinks): void {
    this.sendControl({ type: 'reconfigure', chain, epoch, role, joiner, links });
  }

  beginHandoff(chain: number): void {
    this.sendControl({ type: 'begin-handoff', chain });
  }

  /** The store digest of the node's replica of `chain`; rejects if its task ends first. */
  digest(chain: number): Promise<ReplicaDigest> {
    const requestId = nextRequestId++;
    return new Promise((resolve, reject) => {
      this.digestWaiters.set(requestId, resolve);
      this.done.then(
        () => reject(new DabbaError(ErrorCode.closed, `node ${this.id} stopped`)),
        (error: unknown) => reject(error),
      );
      this.sendControl({ type: 'digest', chain, requestId });
    });
  }

  /** Asks the node to stop (it sends its last acks first); `done` then fulfils. */
  stop(): void {
    this.sendControl({ type: 'stop' });
  }

  /**
   * Ends the node as a crash would: it stops dead at its next batch boundary (nothing it has
   * not already sent leaves it), then its thread is terminated. `done` rejects.
   */
  crash(reason: string): void {
    Atomics.store(this.controlSignal, 0, CONTROL_CRASH);
    this.doorbell.ring();
    setImmediate(() => this.terminate(reason));
  }

  /** Terminates the thread at once (a hung node that must never act again). */
  terminate(reason: string): void {
    this.abort.abort(new DabbaError(ErrorCode.replicaFailed, reason));
  }

  /** Makes every batch the node applies take `factor` times as long (1: as long as it takes), as a throttled CPU would: slowReplica(). */
  slowDown(factor: number): void {
    this.sendControl({ type: 'slow-down', factor });
  }

  /** Makes the node hang: its thread blocks for good, so only its missing heartbeats give it away. */
  freeze(): void {
    Atomics.store(this.controlSignal, 0, CONTROL_FREEZE);
    this.doorbell.ring();
  }

  closePort(): void {
    this.port.close();
  }

  private sendControl(request: ControlRequest): void {
    this.port.postMessage(request);
    // Never overwrite a crash request with a message notice.
    Atomics.compareExchange(this.controlSignal, 0, 0, CONTROL_MESSAGES);
    this.doorbell.ring();
  }
}

const EMPTY_REPLICA_STATS = new Float64Array(REPLICA_STAT_COUNT);
