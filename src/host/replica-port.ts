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
import { Piscina } from 'piscina';
import type { Role } from '../../native-free-core/chain/node.js';
import { assert } from '../../native-free-core/assert.js';
import { SpscRing } from '../../native-free-core/ring.js';
import { Doorbell } from '../../workers/doorbell.js';
import { CHAIN_TAG_BYTES, chainTagAt, taggedFrame, tryWriteTagged } from '../../native-free-core/wire/chain-tag.js';
import type { NodeTask, ReplicaLinks } from '../../workers/replica-task.js';
import type { ResolvedOptions } from '../options.js';
import { replicaLimits, replicaWorkerFilename } from '../replica-worker.js';
import { NodeHandle, type ReplicaDigest } from '../runtime/node-handle.js';

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
  private readonly pool: Piscina<NodeTask, string>;
  /** The replica's worker: a node holding this one replica (as in createChain()). */
  private readonly handle: NodeHandle;
  private readonly doorbell: Doorbell;
  private readonly netDoorbellBuffer = Doorbell.allocate();
  private readonly netDoorbell = new Doorbell(this.netDoorbellBuffer);
  private readonly links: ReplicaLinks;
  private readonly batchesIn: SpscRing;
  private readonly acksIn: SpscRing;
  private readonly readsIn: SpscRing;
  private readonly outRings: Array<[SpscRing, 'downstream' | 'upstream' | 'clientAck' | 'readReply']>;
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
    this.pool = new Piscina<NodeTask, string>({
      filename: replicaWorkerFilename(),
      minThreads: 1,
      maxThreads: 1,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.POSITIVE_INFINITY,
      maxQueue: 1,
      ...(resolved.workerExecArgv === undefined ? {} : { execArgv: resolved.workerExecArgv }),
    });
    this.handle = new NodeHandle({
      pool: this.pool,
      id: options.replicaId,
      replicas: [{ chain: HOST_CHAIN, id: options.replicaId, epoch: options.epoch, role: options.role, links: this.links }],
      doorbell: doorbellBuffer,
      limits: replicaLimits(resolved),
      onRejected: (_chain, code, reason) => this.outputs.rejected?.(code, reason),
    });
    this.done = this.handle.done;
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
    assert(
      CHAIN_TAG_BYTES + frame.length <= ring.recordBytesMax,
      `ReplicaPort: a ${frame.length}-byte frame reached a ring of ${ring.recordBytesMax}-byte records`,
    );
    if (!tryWriteTagged(ring, HOST_CHAIN, frame)) {
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
    this.handle.reconfigure(HOST_CHAIN, epoch, role, joiner, this.links);
  }

  beginHandoff(): void {
    this.handle.beginHandoff(HOST_CHAIN);
  }

  stats(): ReplicaSnapshotStats {
    const counters = this.handle.counters(HOST_CHAIN);
    return {
      epoch: counters.epoch,
      appliedSeq: counters.appliedSeq,
      committedSeq: counters.committedSeq,
      writesApplied: counters.writesApplied,
      joinCaughtUp: counters.joinCaughtUp,
      handoffReadyEpoch: counters.handoffReadyEpoch,
      heartbeats: counters.heartbeats,
      storeKeys: counters.storeKeys,
      inflightBytes: counters.inflightBytes,
    };
  }

  /** The replica's store digest, as in Chain.digests(). */
  digest(): Promise<ReplicaDigest> {
    return this.handle.digest(HOST_CHAIN);
  }

  /** Stops the replica (it sends its last acks first) and its thread. */
  async stop(): Promise<void> {
    if (this.running) this.handle.stop();
    await this.done.catch(() => undefined);
    this.running = false;
    this.netDoorbell.ring();
    await this.serviceDone;
    this.handle.closePort();
    await this.pool.destroy();
  }

  /** Ends the replica at once, as a crash would (its thread is terminated). */
  async kill(): Promise<void> {
    this.handle.crash(`replica ${this.replicaId} was killed`);
    this.handle.terminate(`replica ${this.replicaId} was killed`);
    await this.stop();
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
        // The replica's rings carry its one chain; a tag for another is a bug in the worker.
        assert(chainTagAt(ring.bytes, offset) === HOST_CHAIN, 'ReplicaPort: a record for another chain');
        if (!send(taggedFrame(ring.bytes, offset, ring.recordLength))) {
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

/** A host runs one chain today: its frames are tagged chain 0. */
const HOST_CHAIN = 0;
