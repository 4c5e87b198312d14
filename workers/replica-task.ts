/**
 * What the main thread hands a replica worker, and the control messages they exchange. Data
 * (batches, acks, reads) never uses these: it travels through SharedArrayBuffer rings. Control
 * messages travel over a MessagePort that the worker polls with receiveMessageOnPort between ring
 * drains, because a worker asleep in Atomics.wait cannot run message handlers.
 */
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

export interface ReplicaTask {
  id: number;
  epoch: number;
  role: Role;
  links: ReplicaLinks;
  limits: ReplicaLimits;
  /** Float64 statistics the worker publishes for stats(); see ReplicaStat. */
  stats: SharedArrayBuffer;
  /** Control channel (transferred). */
  port: MessagePort;
  /**
   * Int32[1]: CONTROL_MESSAGES when the main thread has posted control messages, CONTROL_CRASH to
   * make the replica stop dead (crashReplica). Checked without a syscall.
   */
  controlSignal: SharedArrayBuffer;
}

export const CONTROL_MESSAGES = 1;
export const CONTROL_CRASH = 2;
/** freezeReplica(): block forever without exiting, like a hung process (no heartbeats). */
export const CONTROL_FREEZE = 3;

/** Indices into a replica's Float64 statistics array. */
export const ReplicaStat = {
  appliedSeq: 0,
  committedSeq: 1,
  batchesApplied: 2,
  writesApplied: 3,
  readsServed: 4,
  inflightBytes: 5,
  inflightBatches: 6,
  sleeps: 7,
  rejectedFrames: 8,
  storeKeys: 9,
  storeHeapBytes: 10,
  backpressureStalls: 11,
  /** The worker's operating-system thread id (Linux), so tools can attribute CPU time per replica. */
  osThreadId: 12,
  /** Loop iterations: it keeps moving while the replica is alive (the master's heartbeat). */
  heartbeats: 13,
  epoch: 14,
  /** 1 once a joining replica has loaded its snapshot. */
  joinCaughtUp: 15,
  /** The epoch in which a tail handing over to its joiner has had everything acknowledged by it (else 0). */
  handoffReadyEpoch: 16,
  /** The worker's Node.js thread id (worker_threads.threadId). */
  threadId: 17,
} as const;
export const REPLICA_STAT_COUNT = 18;

export type ControlRequest =
  | { type: 'digest'; requestId: number }
  | { type: 'reconfigure'; epoch: number; role: Role; joiner: number | null; links: ReplicaLinks }
  | { type: 'begin-handoff' }
  | { type: 'stop' };

export type ControlReply =
  | { type: 'digest'; requestId: number; replicaId: number; digest: string; keys: number; appliedSeq: number }
  | { type: 'rejected'; replicaId: number; code: string; reason: string }
  | { type: 'stopped'; replicaId: number };
