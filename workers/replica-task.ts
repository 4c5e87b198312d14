/**
 * What the main thread hands a replica worker, and the control messages they exchange. Data
 * (batches, acks, reads) never uses these: it travels through SharedArrayBuffer rings. Control
 * messages travel over a MessagePort that the worker polls with receiveMessageOnPort between ring
 * drains, because a worker asleep in Atomics.wait cannot run message handlers.
 */
import { LATENCY_BUCKETS_SECONDS } from './latency-buckets.js';
import type { MessagePort } from 'node:worker_threads';
import type { Role } from '../native-free-core/chain/node.js';

export interface ReplicaLimits {
  inflightBytesMax: number;
  inflightBatchesMax: number;
  readReplyPayloadBytesMax: number;
  readReplyResultsMax: number;
  /** Empty polls before the worker sleeps on its doorbell. */
  spinIterations: number;
  /** Longest sleep before the worker re-checks everything (a safety net, not a clock). */
  sleepTimeoutMs: number;
  /** Largest Snapshot frame sent to a joining replica (fits one ring record). */
  snapshotFrameBytesMax: number;
  /** Largest key and value a frame may carry: larger ones are refused (native-free-core/limits.ts). */
  keyBytesMax: number;
  valueBytesMax: number;
  /** CRAQ: every member answers reads, not only the tail (native-free-core/chain/node.ts). */
  readsAtAnyReplica: boolean;
  /** The admission hook's module (an absolute path), run by a head on every client write (./admission.ts); null: none. */
  admit: string | null;
  /** Longest a hook call may take, in ms, before the write is refused. */
  admitBudgetMs: number;
  /** Each replica's change history for watches: its bytes and batches (native-free-core/chain/change-history.ts). */
  watchHistoryBytesMax: number;
  watchHistoryBatchesMax: number;
  /** Content one watch reply carries at most (native-free-core/limits.ts). */
  watchReplyContentBytesMax: number;
  /** Largest write batch frame (what a ring record and an in-flight list hold). */
  writeFrameBytesMax: number;
  /** How replicas with a log directory keep it (null: every replica is in memory only). */
  log: LogSettings | null;
}

/** A durable replica's log settings (workers/replica-log.ts), the same for every replica of a runtime. */
export interface LogSettings {
  durability: 'async' | 'fsync';
  /** `async`: the longest written data waits for an fdatasync, in ms. */
  syncIntervalMs: number;
  /** Largest segment file (native-free-core/limits.ts derives it from the largest batch). */
  segmentBytesMax: number;
  /** Largest batch frame. */
  frameBytesMax: number;
  /** A checkpoint is written once this many log bytes (or the store's size, if larger) came after the last. */
  checkpointBytesMin: number;
  /** Free bytes the disk keeps: below them the replica takes no new batches (workers/disk-room.ts). */
  diskReserveBytes: number;
}

/** Where a durable replica keeps its log, and whether it starts from it. */
export interface ReplicaLogPlacement {
  directory: string;
  /**
   * Start empty, removing whatever the directory holds: a joiner (it copies a snapshot, then
   * checkpoints it) or a replica new to its chain. Otherwise the replica recovers from the log.
   */
  fresh: boolean;
  /** Where the longest log of its restarted chain ends (see RecoveredState.readsWaitFor). */
  readsWaitFor?: number;
  /**
   * A joiner (not fresh): the log directory of a replica this host ran before in the chain, which
   * is moved to `directory` and continued: the tail sends only the batches after it, if it can.
   */
  adoptFrom?: string;
}

/**
 * One ring between two threads. The id names the link (its two ends and direction) for the life of
 * the chain, so after a reconfiguration a worker keeps the rings whose ids it already has (with
 * their read positions) and opens the new ones.
 */
export interface RingLink {
  id: number;
  buffer: SharedArrayBuffer;
}

/** The rings around one replica. A ring's producer and consumer each wrap the same buffer. */
export interface ReplicaLinks {
  /** Batches in: from the client (head) or the predecessor. */
  batchesIn: RingLink;
  /** Batches out to the successor; null at the tail. */
  batchesOut: RingLink | null;
  /** Acks and Hellos in from the successor; null at the tail. */
  acksIn: RingLink | null;
  /** Acks and Hellos out to the predecessor; null at the head. */
  acksOut: RingLink | null;
  /** Tail only: cumulative acks to the client, read requests in, read replies out. */
  clientAcksOut: RingLink | null;
  readsIn: RingLink | null;
  readRepliesOut: RingLink | null;
  /** Doorbells: this replica's own, and those of the threads it feeds or frees space for. */
  doorbell: SharedArrayBuffer;
  upstreamDoorbell: SharedArrayBuffer;
  downstreamDoorbell: SharedArrayBuffer | null;
  clientDoorbell: SharedArrayBuffer;
}

/** One replica a node worker holds: its chain, its id in that chain, where it stands, and its rings. */
export interface ReplicaSpec {
  chain: number;
  id: number;
  epoch: number;
  role: Role;
  links: ReplicaLinks;
  /** Float64 statistics the worker publishes for this replica; see ReplicaStat. */
  stats: SharedArrayBuffer;
  /** Its log on disk; absent: in memory only. */
  log?: ReplicaLogPlacement;
  /** A tail restarted from its log while a replica joins behind it: that joiner (see ChainNodeOptions.joiner). */
  joiner?: number | null;
}

/**
 * A node: one worker thread holding one replica of each of several chains. Rings between two
 * threads are shared by every chain the two have in common (each record is tagged with its chain,
 * native-free-core/wire/chain-tag.ts), so the thread and ring counts never grow with the chains.
 */
export interface NodeTask {
  nodeId: number;
  replicas: ReplicaSpec[];
  limits: ReplicaLimits;
  /** The thread's doorbell: every thread that gives it work rings it. */
  doorbell: SharedArrayBuffer;
  /** Float64 statistics of the thread itself; see NodeStat. */
  stats: SharedArrayBuffer;
  /** Control channel (transferred). */
  port: MessagePort;
  /**
   * Int32[1]: CONTROL_MESSAGES when the main thread has posted control messages, CONTROL_CRASH to
   * make the node stop dead (crashReplica). Checked without a syscall.
   */
  controlSignal: SharedArrayBuffer;
}

export const CONTROL_MESSAGES = 1;
export const CONTROL_CRASH = 2;
/** freezeReplica(): block forever without exiting, like a hung process (no heartbeats). */
export const CONTROL_FREEZE = 3;

/** Indices into a replica's Float64 statistics array (the thread's own are in NodeStat). */
export const ReplicaStat = {
  appliedSeq: 0,
  committedSeq: 1,
  batchesApplied: 2,
  writesApplied: 3,
  readsServed: 4,
  inflightBytes: 5,
  inflightBatches: 6,
  rejectedFrames: 7,
  storeKeys: 8,
  storeHeapBytes: 9,
  backpressureStalls: 10,
  epoch: 11,
  /** 1 once a joining replica has loaded its snapshot. */
  joinCaughtUp: 12,
  /** The epoch in which a tail handing over to its joiner has had everything acknowledged by it (else 0). */
  handoffReadyEpoch: 13,
  /** Frames of an earlier epoch, dropped: the normal wake of a reconfiguration, so counted, not reported. */
  staleFrames: 14,
  /** Its log (0 without one): fdatasyncs, bytes written, checkpoints written, the last seq on disk for sure. */
  logSyncs: 15,
  logBytesWritten: 16,
  logCheckpoints: 17,
  logSyncedSeq: 18,
  /** Where its log began when the replica started: the seq it recovered (0: none or empty). */
  recoveredSeq: 19,
  /** 1 while its disk is below its reserve or a write failed for want of space (workers/disk-room.ts). */
  diskFull: 20,
  /** Free bytes on its log's file system, as last read (0 without a log). */
  diskFreeBytes: 21,
  /** Reads whose newest write here was not committed yet: answered once it was (CRAQ's dirty reads). */
  dirtyReads: 22,
  /**
   * A head's commit latency: from applying a batch to learning the tail committed it (its ack back
   * up the chain), once for each write of the batch; the sum in seconds, the count, and from
   * commitLatencyBuckets on a count per bucket of LATENCY_BUCKETS_SECONDS (./latency-buckets.ts),
   * not cumulative, the last one above every bound.
   */
  commitLatencySum: 23,
  commitLatencyCount: 24,
  /**
   * Wall milliseconds it spent applying batches and sending on what they made ready (forwarding,
   * acking, logging): over writesApplied, its time per write, which the master compares with its
   * peers' to find a replica slower than the rest (native-free-core/master/fail-slow.ts).
   */
  busyMs: 25,
  /** Bytes waiting in the ring it takes its batches from (shared by the chains between the same two nodes), when last published. */
  inboundRingBytes: 26,
  commitLatencyBuckets: 27,
} as const;
export const REPLICA_STAT_COUNT = ReplicaStat.commitLatencyBuckets + LATENCY_BUCKETS_SECONDS.length + 1;

/** Indices into a node's Float64 statistics array (the thread's own, beside each replica's). */
export const NodeStat = {
  /** Loop iterations: it keeps moving while the node is alive (the master's heartbeat). */
  heartbeats: 0,
  /** Times the thread slept on its doorbell. */
  sleeps: 1,
  /** Frames for a chain this node holds no replica of: dropped and counted. */
  framesForOtherChains: 2,
  /** The thread's operating-system id (Linux), so tools can attribute CPU time per node. */
  osThreadId: 3,
  /** The thread's Node.js id (worker_threads.threadId): names its `--cpu-prof` file. */
  threadId: 4,
  /** Writes its admission hook refused, and those refused because the hook threw or ran late (./admission.ts). */
  admissionRefused: 5,
  admissionFailures: 6,
} as const;
export const NODE_STAT_COUNT = 7;

export type ControlRequest =
  | { type: 'add-replica'; replica: ReplicaSpec }
  /** The replica's chain went on without it: it stops and its state is dropped (its log too, unless `keepLog`). */
  | { type: 'drop-replica'; chain: number; keepLog: boolean }
  | { type: 'digest'; chain: number; requestId: number }
  | { type: 'reconfigure'; chain: number; epoch: number; role: Role; joiner: number | null; links: ReplicaLinks }
  | { type: 'begin-handoff'; chain: number }
  /** slowReplica(): take `factor` times as long over every batch applied (spinning the difference), as a throttled CPU would (chaos testing). */
  | { type: 'slow-down'; factor: number }
  | { type: 'stop' };

export type ControlReply =
  | { type: 'digest'; requestId: number; chain: number; replicaId: number; digest: string; keys: number; appliedSeq: number }
  | { type: 'rejected'; chain: number; replicaId: number; code: string; reason: string }
  /** A replica's disk became full, or has room again (workers/disk-room.ts). */
  | { type: 'disk'; chain: number; replicaId: number; full: boolean; freeBytes: number; reserveBytes: number }
  | { type: 'stopped'; nodeId: number };
