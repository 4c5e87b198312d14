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
import { EventEmitter } from 'node:events';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { Role } from '../native-free-core/chain/node.js';
import { DabbaError, ErrorCode } from '../native-free-core/errors.js';
import { SpscRing } from '../native-free-core/ring.js';
import { Doorbell } from '../workers/doorbell.js';
import {
  REPLICA_STAT_COUNT,
  ReplicaStat,
  type ControlReply,
  type ControlRequest,
  type ReplicaLinks,
  type ReplicaTask,
} from '../workers/replica-task.js';
import { closedError, resolveOptions, type ChainOptions, type ResolvedOptions } from './options.js';
import { ReadPipeline, type VersionedValue } from './read-pipeline.js';
import { WritePipeline, type KeyInput, type ValueInput } from './write-pipeline.js';

export type { ChainOptions, KeyInput, ValueInput, VersionedValue };

export interface ReplicaStats {
  id: number;
  role: Role;
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
  /** The replica's operating-system thread id (Linux; 0 elsewhere), for per-thread CPU accounting. */
  osThreadId: number;
}

export interface ChainStats {
  replicas: ReplicaStats[];
  epoch: number;
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

export interface ReplicaDigest {
  id: number;
  digest: string;
  keys: number;
  appliedSeq: number;
}

interface ReplicaHandle {
  id: number;
  role: Role;
  port: MessagePort;
  doorbell: Doorbell;
  controlSignal: Int32Array;
  stats: Float64Array;
  done: Promise<unknown>;
}

const CLIENT_ID = 1;
const INITIAL_EPOCH = 1;

function roleOf(index: number, count: number): Role {
  if (count === 1) return 'solo';
  if (index === 0) return 'head';
  return index === count - 1 ? 'tail' : 'middle';
}

function workerFilename(): string {
  // Under tsx (tests, development) this module is .ts and so is the worker; in dist both are .js.
  const extension = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`../workers/replica${extension}`, import.meta.url).href;
}

export class Chain extends EventEmitter {
  readonly options: ResolvedOptions;
  private readonly pool: Piscina<ReplicaTask, string>;
  private readonly replicaHandles: ReplicaHandle[] = [];
  private readonly clientDoorbell: Doorbell;
  private readonly clientAcks: SpscRing;
  private readonly readReplies: SpscRing;
  private readonly writes: WritePipeline;
  private readonly reads: ReadPipeline;
  private readonly tailDoorbell: Doorbell;
  private readonly epoch = INITIAL_EPOCH;
  private state: 'open' | 'closing' | 'closed' | 'failed' = 'open';
  private closePromise: Promise<void> | null = null;
  private readonly idleWaiters: Array<() => void> = [];
  private nextControlRequest = 1;
  private readonly digestWaiters = new Map<number, { replies: ReplicaDigest[]; resolve: (digests: ReplicaDigest[]) => void }>();
  private readonly serviceDone: Promise<void>;
  private readonly hasClientWork = (): boolean =>
    !this.clientAcks.isEmpty() || !this.readReplies.isEmpty() || this.writes.canPump() || this.reads.canPump();

  constructor(options: ChainOptions = {}) {
    super();
    const resolved = resolveOptions(options);
    this.options = resolved;
    const count = resolved.replicas;

    const clientDoorbellBuffer = Doorbell.allocate();
    const doorbells = Array.from({ length: count }, () => Doorbell.allocate());
    const batchRings = Array.from({ length: count }, () => SpscRing.allocate(resolved.ringBytes));
    const ackRings = Array.from({ length: count }, () => SpscRing.allocate(resolved.controlRingBytes));
    const clientAcks = SpscRing.allocate(resolved.controlRingBytes);
    const readRequests = SpscRing.allocate(resolved.ringBytes);
    const readReplies = SpscRing.allocate(resolved.ringBytes);

    this.clientDoorbell = new Doorbell(clientDoorbellBuffer);
    this.clientAcks = new SpscRing(clientAcks);
    this.readReplies = new SpscRing(readReplies);
    this.tailDoorbell = new Doorbell(doorbells[count - 1]!);
    this.writes = new WritePipeline(resolved, CLIENT_ID, new SpscRing(batchRings[0]!), new Doorbell(doorbells[0]!));
    this.reads = new ReadPipeline(resolved, new SpscRing(readRequests), this.tailDoorbell, () => this.epoch);

    this.pool = new Piscina<ReplicaTask, string>({
      filename: workerFilename(),
      minThreads: count,
      maxThreads: count,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.POSITIVE_INFINITY,
      maxQueue: count,
      name: 'default',
    });

    for (let index = 0; index < count; index++) {
      const role = roleOf(index, count);
      const isTail = index === count - 1;
      // batchRings[i] carries batches INTO replica i; ackRings[i] carries acks INTO replica i from i+1.
      const links: ReplicaLinks = {
        batchesIn: batchRings[index]!,
        batchesOut: isTail ? null : batchRings[index + 1]!,
        acksIn: isTail ? null : ackRings[index]!,
        acksOut: index === 0 ? null : ackRings[index - 1]!,
        clientAcksOut: isTail ? clientAcks : null,
        readsIn: isTail ? readRequests : null,
        readRepliesOut: isTail ? readReplies : null,
        doorbell: doorbells[index]!,
        upstreamDoorbell: index === 0 ? clientDoorbellBuffer : doorbells[index - 1]!,
        downstreamDoorbell: isTail ? null : doorbells[index + 1]!,
        clientDoorbell: clientDoorbellBuffer,
      };
      const channel = new MessageChannel();
      const stats = new SharedArrayBuffer(REPLICA_STAT_COUNT * Float64Array.BYTES_PER_ELEMENT);
      const controlSignal = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
      const task: ReplicaTask = {
        id: index + 1,
        epoch: this.epoch,
        role,
        links,
        limits: {
          inflightBytesMax: resolved.inflightBytesMax,
          inflightBatchesMax: resolved.inflightBatchesMax,
          readReplyPayloadBytesMax: resolved.readReplyPayloadBytesMax,
          readReplyResultsMax: resolved.readReplyResultsMax,
          spinIterations: resolved.spinIterations,
          sleepTimeoutMs: resolved.sleepTimeoutMs,
        },
        stats,
        port: channel.port2,
        controlSignal,
      };
      const handle: ReplicaHandle = {
        id: task.id,
        role,
        port: channel.port1,
        doorbell: new Doorbell(doorbells[index]!),
        controlSignal: new Int32Array(controlSignal),
        stats: new Float64Array(stats),
        done: this.pool.run(task, { transferList: [channel.port2] }),
      };
      handle.port.on('message', (message: ControlReply) => this.onControlReply(message));
      handle.done.catch((error: unknown) => this.onReplicaFailure(handle, error));
      this.replicaHandles.push(handle);
    }
    this.serviceDone = this.serviceLoop();
  }

  get replicas(): number {
    return this.replicaHandles.length;
  }

  put(key: KeyInput, value: ValueInput): Promise<void> {
    if (this.state !== 'open') return Promise.reject(this.unavailableError());
    return this.writes.put(key, value);
  }

  delete(key: KeyInput): Promise<void> {
    if (this.state !== 'open') return Promise.reject(this.unavailableError());
    return this.writes.delete(key);
  }

  /** Writes every entry (in order) and resolves when all are acknowledged. */
  putMany(entries: Iterable<readonly [KeyInput, ValueInput]>): Promise<void> {
    if (this.state !== 'open') return Promise.reject(this.unavailableError());
    const promises: Promise<void>[] = [];
    for (const [key, value] of entries) promises.push(this.writes.put(key, value));
    return Promise.all(promises).then(() => undefined);
  }

  /** The value of `key` at the tail, or undefined if it has none. */
  async get(key: KeyInput): Promise<Buffer | undefined> {
    const entry = await this.getVersioned(key);
    return entry?.value;
  }

  /** The value and version (the sequence number of the write that produced it). */
  getVersioned(key: KeyInput): Promise<VersionedValue | undefined> {
    if (this.state !== 'open') return Promise.reject(this.unavailableError());
    return this.reads.get(key);
  }

  /** Sends the open batch now instead of at the end of the event-loop turn. */
  flush(): void {
    this.writes.flush();
    this.reads.flush();
  }

  stats(): ChainStats {
    return {
      replicas: this.replicaHandles.map((handle) => {
        const stat = handle.stats;
        return {
          id: handle.id,
          role: handle.role,
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
          osThreadId: stat[ReplicaStat.osThreadId]!,
        };
      }),
      epoch: this.epoch,
      writesAccepted: this.writes.accepted,
      writesAcknowledged: this.writes.writesAcked,
      writesPending: this.writes.pending,
      readsAnswered: this.reads.readsAnswered,
      readsPending: this.reads.pending,
      batchesSent: this.writes.batchesSent,
      bytesSent: this.writes.bytesSent,
      batchesWaiting: this.writes.waitingBatches,
    };
  }

  /** Each replica's store digest; equal digests mean identical state. Call when no writes are pending. */
  digests(): Promise<ReplicaDigest[]> {
    if (this.state !== 'open' && this.state !== 'closing') return Promise.reject(this.unavailableError());
    const requestId = this.nextControlRequest++;
    return new Promise((resolve) => {
      this.digestWaiters.set(requestId, { replies: [], resolve });
      for (const handle of this.replicaHandles) this.sendControl(handle, { type: 'digest', requestId });
    });
  }

  /** Resolves when every write and read issued so far has been answered. */
  whenIdle(): Promise<void> {
    this.flush();
    if (this.writes.pending === 0 && this.reads.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
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
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.options.closeTimeoutMs);
      });
      await Promise.race([this.whenIdle(), timeout]);
      clearTimeout(timer);
    }
    const wasFailed = this.state === 'failed';
    this.state = 'closed';
    this.writes.fail(closedError());
    this.reads.fail(closedError());
    if (!wasFailed) {
      for (const handle of this.replicaHandles) this.sendControl(handle, { type: 'stop' });
      await Promise.allSettled(this.replicaHandles.map((handle) => handle.done));
    }
    this.clientDoorbell.ring();
    await this.serviceDone;
    for (const handle of this.replicaHandles) handle.port.close();
    await this.pool.destroy();
    for (const waiter of this.digestWaiters.values()) waiter.resolve(waiter.replies);
    this.digestWaiters.clear();
  }

  private unavailableError(): DabbaError {
    return this.state === 'failed'
      ? new DabbaError(ErrorCode.replicaFailed, 'a replica of this chain failed')
      : closedError();
  }

  private sendControl(handle: ReplicaHandle, request: ControlRequest): void {
    handle.port.postMessage(request);
    Atomics.store(handle.controlSignal, 0, 1);
    handle.doorbell.ring();
  }

  /** The main thread's side of the rings: acks, replies, and batches waiting for ring space. */
  private async serviceLoop(): Promise<void> {
    while (this.state !== 'closed') {
      await this.clientDoorbell.waitAsync(this.hasClientWork, 20);
      this.service();
    }
  }

  private service(): void {
    if (this.writes.drainAcks(this.clientAcks) > 0 || !this.clientAcks.isEmpty()) {
      if (this.clientAcks.takeProducerWaiting()) this.tailDoorbell.ring();
    }
    if (this.reads.drainReplies(this.readReplies) > 0) {
      if (this.readReplies.takeProducerWaiting()) this.tailDoorbell.ring();
    }
    if (this.writes.canPump()) this.writes.pump();
    if (this.reads.canPump()) this.reads.pump();
    if (this.idleWaiters.length > 0 && this.writes.pending === 0 && this.reads.pending === 0) {
      for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }

  private onControlReply(message: ControlReply): void {
    switch (message.type) {
      case 'digest': {
        const waiter = this.digestWaiters.get(message.requestId);
        if (waiter === undefined) return;
        waiter.replies.push({ id: message.replicaId, digest: message.digest, keys: message.keys, appliedSeq: message.appliedSeq });
        if (waiter.replies.length === this.replicaHandles.length) {
          this.digestWaiters.delete(message.requestId);
          waiter.resolve(waiter.replies.sort((a, b) => a.id - b.id));
        }
        return;
      }
      case 'rejected':
        this.emit('warning', new DabbaError(message.code as ErrorCode, `replica ${message.replicaId} rejected a frame: ${message.reason}`));
        return;
      case 'stopped':
        return;
    }
  }

  private onReplicaFailure(handle: ReplicaHandle, error: unknown): void {
    if (this.state === 'closed') return;
    this.state = 'failed';
    const failure = new DabbaError(ErrorCode.replicaFailed, `replica ${handle.id} (${handle.role}) failed`, { cause: error });
    this.writes.fail(failure);
    this.reads.fail(failure);
    for (const other of this.replicaHandles) if (other !== handle) this.sendControl(other, { type: 'stop' });
    this.emit('replicaFailed', failure);
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

/** Starts a replicated chain in this process. See ChainOptions for limits and defaults. */
export function createChain(options: ChainOptions = {}): Chain {
  return new Chain(options);
}
