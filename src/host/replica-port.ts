/**
 * The network thread's side of the one replica a host runs: the replica is pinned on its own
 * worker thread (a long-running piscina task, the same worker as in createChain), and every byte
 * it exchanges with the world passes through SharedArrayBuffer rings to and from this thread, which
 * carries them over the host's sockets. The rings live as long as the replica; the replica's role
 * (set by reconfigure) decides which of them it uses, and epochs make anything stale harmless.
 *
 *   socket --> batchesIn --> replica --> batchesOut --> socket (successor or joiner)
 *   socket --> acksIn ------^       \--> acksOut ----> socket (predecessor)
 *   socket --> readsIn -----^        \-> clientAcksOut, readRepliesOut --> client sockets
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { Role } from '../../native-free-core/chain/node.js';
import { assert } from '../../native-free-core/assert.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { SpscRing } from '../../native-free-core/ring.js';
import { Doorbell } from '../../workers/doorbell.js';
import {
  CONTROL_CRASH,
  CONTROL_MESSAGES,
  REPLICA_STAT_COUNT,
  ReplicaStat,
  type ControlReply,
  type ControlRequest,
  type ReplicaLinks,
  type ReplicaTask,
} from '../../workers/replica-task.js';
import type { ResolvedOptions } from '../options.js';
import { replicaLimits, replicaWorkerFilename } from '../replica-worker.js';

/** What the port does with the replica's output; each returns false if the socket is full. */
export interface ReplicaOutputs {
  /** A batch or snapshot frame for the successor (or the joiner behind this tail). */
  downstream(frame: Uint8Array): boolean;
  /** An Ack or Hello for the predecessor. */
  upstream(frame: Uint8Array): boolean;
  /** A cumulative client Ack (tail): route by its client id. */
  clientAck(frame: Uint8Array): boolean;
  /** A ReadReplyBatch (tail), answering read batches in the order they went in. */
  readReply(frame: Uint8Array): boolean;
  /** The replica refused a frame it was given (stale epoch and the like). */
  rejected?(code: string, reason: string): void;
  /** Called after every service pass: the replica may have freed room in its inbound rings. */
  inboundRoom?(): void;
}

export interface ReplicaSnapshotStats {
  epoch: number;
  appliedSeq: number;
  committedSeq: number;
  writesApplied: number;
  joinCaughtUp: boolean;
  handoffReadyEpoch: number;
  heartbeats: number;
  storeKeys: number;
  inflightBytes: number;
}

/** Records of one ring handed out per service pass, at most: the event loop stays responsive. */
const RECORDS_PER_PASS_MAX = 4096;

export class ReplicaPort {
  readonly replicaId: number;
  private readonly pool: Piscina<ReplicaTask, string>;
  private readonly doorbell: Doorbell;
  private readonly netDoorbellBuffer = Doorbell.allocate();
  private readonly netDoorbell = new Doorbell(this.netDoorbellBuffer);
  private readonly links: ReplicaLinks;
  private readonly batchesIn: SpscRing;
  private readonly acksIn: SpscRing;
  private readonly readsIn: SpscRing;
  private readonly outRings: Array<[SpscRing, 'downstream' | 'upstream' | 'clientAck' | 'readReply']>;
  private readonly controlPort: MessagePort;
  private readonly controlSignal: Int32Array;
  private readonly statsArray: Float64Array;
  private readonly abort = new AbortController();
  /** Out-rings whose consumer (a socket) refused a record: retried on kick(). */
  private readonly blocked = new Set<SpscRing>();
  private running = true;
  readonly done: Promise<unknown>;
  private readonly serviceDone: Promise<void>;
  private readonly hasWork = (): boolean => {
    if (!this.running) return true;
    for (const [ring] of this.outRings) if (!this.blocked.has(ring) && !ring.isEmpty()) return true;
    return false;
  };

  constructor(
    options: { replicaId: number; epoch: number; role: Role; resolved: ResolvedOptions },
    private readonly outputs: ReplicaOutputs,
  ) {
    const { resolved } = options;
    this.replicaId = options.replicaId;
    const data = (): { id: number; buffer: SharedArrayBuffer } => ({ id: nextLinkId++, buffer: SpscRing.allocate(resolved.ringBytes) });
    const control = (): { id: number; buffer: SharedArrayBuffer } => ({ id: nextLinkId++, buffer: SpscRing.allocate(resolved.controlRingBytes) });
    const doorbellBuffer = Doorbell.allocate();
    this.doorbell = new Doorbell(doorbellBuffer);
    this.links = {
      batchesIn: data(),
      batchesOut: data(),
      acksIn: control(),
      acksOut: control(),
      clientAcksOut: control(),
      readsIn: data(),
      readRepliesOut: data(),
      doorbell: doorbellBuffer,
      upstreamDoorbell: this.netDoorbellBuffer,
      downstreamDoorbell: this.netDoorbellBuffer,
      clientDoorbell: this.netDoorbellBuffer,
    };
    this.batchesIn = new SpscRing(this.links.batchesIn.buffer);
    this.acksIn = new SpscRing(this.links.acksIn!.buffer);
    this.readsIn = new SpscRing(this.links.readsIn!.buffer);
    this.outRings = [
      [new SpscRing(this.links.acksOut!.buffer), 'upstream'],
      [new SpscRing(this.links.clientAcksOut!.buffer), 'clientAck'],
      [new SpscRing(this.links.readRepliesOut!.buffer), 'readReply'],
      [new SpscRing(this.links.batchesOut!.buffer), 'downstream'],
    ];
    const channel = new MessageChannel();
    this.controlPort = channel.port1;
    const controlSignal = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
    this.controlSignal = new Int32Array(controlSignal);
    const stats = new SharedArrayBuffer(REPLICA_STAT_COUNT * Float64Array.BYTES_PER_ELEMENT);
    this.statsArray = new Float64Array(stats);
    this.pool = new Piscina<ReplicaTask, string>({
      filename: replicaWorkerFilename(),
      minThreads: 1,
      maxThreads: 1,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.POSITIVE_INFINITY,
      maxQueue: 1,
      ...(resolved.workerExecArgv === undefined ? {} : { execArgv: resolved.workerExecArgv }),
    });
    const task: ReplicaTask = {
      id: options.replicaId,
      epoch: options.epoch,
      role: options.role,
      links: this.links,
      limits: replicaLimits(resolved),
      stats,
      port: channel.port2,
      controlSignal,
    };
    this.controlPort.on('message', (message: ControlReply) => {
      if (message.type === 'rejected') this.outputs.rejected?.(message.code, message.reason);
    });
    this.done = this.pool.run(task, { transferList: [channel.port2], signal: this.abort.signal });
    this.done.catch(() => undefined).finally(() => {
      this.running = false;
      this.netDoorbell.ring();
    });
    this.serviceDone = this.serviceLoop();
  }

  /** Hands a frame to the replica; false if its ring is full (the caller keeps the frame). */
  pushBatch(frame: Uint8Array): boolean {
    return this.push(this.batchesIn, frame);
  }
  pushAck(frame: Uint8Array): boolean {
    return this.push(this.acksIn, frame);
  }
  pushReads(frame: Uint8Array): boolean {
    return this.push(this.readsIn, frame);
  }

  private push(ring: SpscRing, frame: Uint8Array): boolean {
    // Paired with the checks where frames enter (link record limits, the control frame limit).
    assert(frame.length <= ring.recordBytesMax, `ReplicaPort: a ${frame.length}-byte frame reached a ring of ${ring.recordBytesMax}-byte records`);
    if (!ring.tryWrite(frame)) {
      ring.markProducerWaiting();
      return false;
    }
    if (ring.publish()) this.doorbell.ring();
    return true;
  }

  /** Whether the replica freed room in its inbound rings since a push was refused. */
  takeInboundRoom(): boolean {
    let freed = false;
    for (const ring of [this.batchesIn, this.acksIn, this.readsIn]) if (ring.takeProducerWaiting()) freed = true;
    return freed;
  }

  /** A socket became writable again: retry what the replica had for it. */
  kick(): void {
    this.blocked.clear();
    this.netDoorbell.ring();
  }

  reconfigure(epoch: number, role: Role, joiner: number | null): void {
    this.sendControl({ type: 'reconfigure', epoch, role, joiner, links: this.links });
  }

  beginHandoff(): void {
    this.sendControl({ type: 'begin-handoff' });
  }

  stats(): ReplicaSnapshotStats {
    const stat = this.statsArray;
    return {
      epoch: stat[ReplicaStat.epoch]!,
      appliedSeq: stat[ReplicaStat.appliedSeq]!,
      committedSeq: stat[ReplicaStat.committedSeq]!,
      writesApplied: stat[ReplicaStat.writesApplied]!,
      joinCaughtUp: stat[ReplicaStat.joinCaughtUp] === 1,
      handoffReadyEpoch: stat[ReplicaStat.handoffReadyEpoch]!,
      heartbeats: stat[ReplicaStat.heartbeats]!,
      storeKeys: stat[ReplicaStat.storeKeys]!,
      inflightBytes: stat[ReplicaStat.inflightBytes]!,
    };
  }

  /** Each replica's store digest, as in Chain.digests(). */
  digest(): Promise<{ digest: string; keys: number; appliedSeq: number }> {
    const requestId = nextRequestId++;
    return new Promise((resolve, reject) => {
      const onMessage = (message: ControlReply): void => {
        if (message.type !== 'digest' || message.requestId !== requestId) return;
        this.controlPort.off('message', onMessage);
        resolve({ digest: message.digest, keys: message.keys, appliedSeq: message.appliedSeq });
      };
      this.controlPort.on('message', onMessage);
      this.done.then(
        () => reject(new DabbaError(ErrorCode.closed, 'the replica stopped')),
        (error: unknown) => reject(error),
      );
      this.sendControl({ type: 'digest', requestId });
    });
  }

  /** Stops the replica (it sends its last acks first) and its thread. */
  async stop(): Promise<void> {
    if (this.running) this.sendControl({ type: 'stop' });
    await this.done.catch(() => undefined);
    this.running = false;
    this.netDoorbell.ring();
    await this.serviceDone;
    this.controlPort.close();
    await this.pool.destroy();
  }

  /** Ends the replica at once, as a crash would (its thread is terminated). */
  async kill(): Promise<void> {
    Atomics.store(this.controlSignal, 0, CONTROL_CRASH);
    this.doorbell.ring();
    this.abort.abort(new DabbaError(ErrorCode.replicaFailed, `replica ${this.replicaId} was killed`));
    await this.stop();
  }

  private sendControl(request: ControlRequest): void {
    this.controlPort.postMessage(request);
    Atomics.compareExchange(this.controlSignal, 0, 0, CONTROL_MESSAGES);
    this.doorbell.ring();
  }

  private async serviceLoop(): Promise<void> {
    while (this.running) {
      await this.netDoorbell.waitAsync(this.hasWork, 20);
      this.service();
    }
    this.service();
  }

  /** Hands every record the replica published to its socket, in order, until a socket is full. */
  private service(): void {
    for (const [ring, output] of this.outRings) {
      if (this.blocked.has(ring) || !ring.claim()) continue;
      const send = this.outputs[output];
      let taken = 0;
      for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
        if (!send(ring.bytes.subarray(offset, offset + ring.recordLength))) {
          ring.unread();
          this.blocked.add(ring);
          break;
        }
        if (++taken === RECORDS_PER_PASS_MAX) break;
      }
      ring.release();
      if (ring.takeProducerWaiting()) this.doorbell.ring();
    }
    this.outputs.inboundRoom?.();
  }
}

let nextLinkId = 1;
let nextRequestId = 1;
