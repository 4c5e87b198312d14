/**
 * One replica's worker, seen from the thread that runs it: the piscina task it runs as (its
 * rejection is how a crash surfaces), the control port and signal that reach it between two ring
 * drains, the statistics it publishes in shared memory (its heartbeat among them), and what can be
 * done to it: reconfigure, begin a handoff, ask for its digest, stop it, crash or freeze it. The
 * in-process engine (`createChain()`) holds one per replica on a shared pool; a host
 * (`dabba serve`) holds one for its single replica, behind the rings to its network thread.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import type { Piscina } from 'piscina';
import type { Role } from '../../native-free-core/chain/node.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { Doorbell } from '../../workers/doorbell.js';
import {
  CONTROL_CRASH,
  CONTROL_FREEZE,
  CONTROL_MESSAGES,
  REPLICA_STAT_COUNT,
  ReplicaStat,
  type ControlReply,
  type ControlRequest,
  type ReplicaLimits,
  type ReplicaLinks,
  type ReplicaTask,
} from '../../workers/replica-task.js';

export interface ReplicaHandleOptions {
  pool: Piscina<ReplicaTask, string>;
  id: number;
  epoch: number;
  role: Role;
  links: ReplicaLinks;
  limits: ReplicaLimits;
  /** The replica refused a frame it was given. */
  onRejected?(code: string, reason: string): void;
}

/** What a replica reports of itself, read from its shared statistics. */
export interface ReplicaCounters {
  epoch: number;
  appliedSeq: number;
  committedSeq: number;
  batchesApplied: number;
  writesApplied: number;
  readsServed: number;
  inflightBytes: number;
  inflightBatches: number;
  storeKeys: number;
  storeHeapBytes: number;
  sleeps: number;
  backpressureStalls: number;
  rejectedFrames: number;
  joinCaughtUp: boolean;
  handoffReadyEpoch: number;
  heartbeats: number;
  /** The replica's operating-system thread id (Linux; 0 elsewhere), for per-thread CPU accounting. */
  osThreadId: number;
  /** The replica's Node.js thread id (worker_threads.threadId): names its `--cpu-prof` file. */
  threadId: number;
}

export interface ReplicaDigest {
  digest: string;
  keys: number;
  appliedSeq: number;
}

let nextRequestId = 1;

export class ReplicaHandle {
  readonly id: number;
  /** The epoch the replica was started in. */
  readonly startEpoch: number;
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
  /** The heartbeat counter when heartbeatMoved() last looked. */
  private lastHeartbeat = -1;
  private readonly port: MessagePort;
  private readonly controlSignal: Int32Array;
  private readonly statistics: Float64Array;
  private readonly doorbell: Doorbell;
  private readonly abort = new AbortController();

  constructor(options: ReplicaHandleOptions) {
    this.id = options.id;
    this.startEpoch = options.epoch;
    const channel = new MessageChannel();
    this.port = channel.port1;
    const controlSignal = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
    this.controlSignal = new Int32Array(controlSignal);
    const stats = new SharedArrayBuffer(REPLICA_STAT_COUNT * Float64Array.BYTES_PER_ELEMENT);
    this.statistics = new Float64Array(stats);
    this.doorbell = new Doorbell(options.links.doorbell);
    const task: ReplicaTask = {
      id: options.id,
      epoch: options.epoch,
      role: options.role,
      links: options.links,
      limits: options.limits,
      stats,
      port: channel.port2,
      controlSignal,
    };
    this.port.on('message', (message: ControlReply) => {
      if (message.type === 'rejected') options.onRejected?.(message.code, message.reason);
    });
    this.done = options.pool.run(task, { transferList: [channel.port2], signal: this.abort.signal });
    this.done.catch((error: unknown) => {
      this.failure = error;
    });
  }

  /** Whether the replica's loop went round since the last call (it is alive and not hung). */
  heartbeatMoved(): boolean {
    const beats = this.statistics[ReplicaStat.heartbeats]!;
    if (beats === this.lastHeartbeat) return false;
    this.lastHeartbeat = beats;
    return true;
  }

  /** Whether the worker has started its loop yet (loading and compiling modules is not a hang). */
  get started(): boolean {
    return this.statistics[ReplicaStat.heartbeats]! > 0;
  }

  /** One published statistic (see ReplicaStat). */
  stat(index: number): number {
    return this.statistics[index]!;
  }

  counters(): ReplicaCounters {
    const stat = this.statistics;
    return {
      epoch: stat[ReplicaStat.epoch]!,
      appliedSeq: stat[ReplicaStat.appliedSeq]!,
      committedSeq: stat[ReplicaStat.committedSeq]!,
      batchesApplied: stat[ReplicaStat.batchesApplied]!,
      writesApplied: stat[ReplicaStat.writesApplied]!,
      readsServed: stat[ReplicaStat.readsServed]!,
      inflightBytes: stat[ReplicaStat.inflightBytes]!,
      inflightBatches: stat[ReplicaStat.inflightBatches]!,
      storeKeys: stat[ReplicaStat.storeKeys]!,
      storeHeapBytes: stat[ReplicaStat.storeHeapBytes]!,
      sleeps: stat[ReplicaStat.sleeps]!,
      backpressureStalls: stat[ReplicaStat.backpressureStalls]!,
      rejectedFrames: stat[ReplicaStat.rejectedFrames]!,
      joinCaughtUp: stat[ReplicaStat.joinCaughtUp] === 1,
      handoffReadyEpoch: stat[ReplicaStat.handoffReadyEpoch]!,
      heartbeats: stat[ReplicaStat.heartbeats]!,
      osThreadId: stat[ReplicaStat.osThreadId]!,
      threadId: stat[ReplicaStat.threadId]!,
    };
  }

  reconfigure(epoch: number, role: Role, joiner: number | null, links: ReplicaLinks): void {
    this.sendControl({ type: 'reconfigure', epoch, role, joiner, links });
  }

  beginHandoff(): void {
    this.sendControl({ type: 'begin-handoff' });
  }

  /** The replica's store digest; rejects if its task ends first. */
  digest(): Promise<ReplicaDigest> {
    const requestId = nextRequestId++;
    return new Promise((resolve, reject) => {
      const onMessage = (message: ControlReply): void => {
        if (message.type !== 'digest' || message.requestId !== requestId) return;
        this.port.off('message', onMessage);
        resolve({ digest: message.digest, keys: message.keys, appliedSeq: message.appliedSeq });
      };
      this.port.on('message', onMessage);
      this.done.then(
        () => reject(new DabbaError(ErrorCode.closed, `replica ${this.id} stopped`)),
        (error: unknown) => reject(error),
      );
      this.sendControl({ type: 'digest', requestId });
    });
  }

  /** Asks the replica to stop (it sends its last acks first); `done` then fulfils. */
  stop(): void {
    this.sendControl({ type: 'stop' });
  }

  /**
   * Ends the replica as a crash would: it stops dead at its next batch boundary (nothing it has
   * not already sent leaves it), then its thread is terminated. `done` rejects.
   */
  crash(reason: string): void {
    Atomics.store(this.controlSignal, 0, CONTROL_CRASH);
    this.doorbell.ring();
    setImmediate(() => this.terminate(reason));
  }

  /** Terminates the thread at once (a hung replica that must never act again). */
  terminate(reason: string): void {
    this.abort.abort(new DabbaError(ErrorCode.replicaFailed, reason));
  }

  /** Makes the replica hang: its thread blocks for good, so only its missing heartbeats give it away. */
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
