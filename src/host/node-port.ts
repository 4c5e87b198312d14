/**
 * The network thread's side of the node a host runs: one worker thread (a long-running piscina
 * task, the same worker as in createChain()) holding this host's replica of each chain placed on
 * it. Every byte the replicas exchange with the world passes through SharedArrayBuffer rings to
 * and from this thread, which carries them over the host's sockets. The rings are shared by every
 * chain (each record is tagged with its chain, native-free-core/wire/chain-tag.ts) and live as
 * long as the node; a replica's role (set by reconfigure) decides which of them it uses, and
 * epochs make anything stale harmless.
 *
 *   socket --> batchesIn --> replica --> batchesOut --> socket (successor or joiner)
 *   socket --> acksIn ------^       \--> acksOut ----> socket (predecessor)
 *   socket --> readsIn -----^        \-> clientAcksOut, readRepliesOut --> client sockets
 */
import { commitLatencyOf } from '../metrics/commit-latency.js';
import type { WeightedHistogram } from '../metrics/weighted-histogram.js';
import { Piscina } from 'piscina';
import type { Role } from '../../native-free-core/chain/node.js';
import { assert } from '../../native-free-core/assert.js';
import { SpscRing } from '../../native-free-core/ring.js';
import type { NodeLoad } from '../../native-free-core/master/fail-slow.js';
import { Doorbell } from '../../workers/doorbell.js';
import { CHAIN_TAG_BYTES, chainTagAt, taggedFrame, tryWriteTagged } from '../../native-free-core/wire/chain-tag.js';
import type { ReplicaLogPlacement, NodeTask, ReplicaLinks } from '../../workers/replica-task.js';
import type { ResolvedOptions } from '../options.js';
import { replicaLimits, replicaWorkerFilename } from '../replica-worker.js';
import { NodeHandle, type DiskReport, type ReplicaDigest } from '../runtime/node-handle.js';

/** What the port does with the replicas' output, by chain; each returns false if the socket is full. */
export interface NodeOutputs {
  /** A batch or snapshot frame for the successor (or the joiner behind this tail). */
  downstream(chain: number, frame: Uint8Array): boolean;
  /** An Ack or Hello for the predecessor. */
  upstream(chain: number, frame: Uint8Array): boolean;
  /** A cumulative client Ack (tail): route by its client id. */
  clientAck(chain: number, frame: Uint8Array): boolean;
  /** A ReadReplyBatch (tail), answering read batches in the order they went in. */
  readReply(chain: number, frame: Uint8Array): boolean;
  /** The replica refused a frame it was given (stale epoch and the like). */
  rejected?(chain: number, code: string, reason: string, replicaId: number): void;
  /** A replica's disk filled up, or has room again. */
  disk?(report: DiskReport): void;
  /** Called after every service pass: the replica may have freed room in its inbound rings. */
  inboundRoom?(): void;
}

export interface ReplicaSnapshotStats {
  epoch: number;
  appliedSeq: number;
  committedSeq: number;
  writesApplied: number;
  /** Reads it answered, and those of them held until the commit point reached the write they return (reads at any replica). */
  readsServed: number;
  dirtyReads: number;
  joinCaughtUp: boolean;
  handoffReadyEpoch: number;
  heartbeats: number;
  storeKeys: number;
  inflightBytes: number;
  /** Bytes waiting in the ring it takes its batches from. */
  inboundRingBytes: number;
  /** With --data-dir: where its log ended when it started (0: it started empty), the last seq surely on disk, fdatasyncs, log bytes written. */
  recoveredSeq: number;
  logSyncedSeq: number;
  logSyncs: number;
  logBytesWritten: number;
  /** Whether its disk is full (its chain refuses writes), and its free bytes as last read (0 in memory). */
  diskFull: boolean;
  diskFreeBytes: number;
}

/** Records of one ring handed out per service pass, at most: the event loop stays responsive. */
const RECORDS_PER_PASS_MAX = 4096;

export class NodePort {
  readonly nodeId: number;
  private readonly pool: Piscina<NodeTask, string>;
  /** The node's worker (as in createChain()). */
  private readonly handle: NodeHandle;
  private readonly doorbell: Doorbell;
  private readonly netDoorbellBuffer = Doorbell.allocate();
  private readonly netDoorbell = new Doorbell(this.netDoorbellBuffer);
  private readonly links: ReplicaLinks;
  private readonly batchesIn: SpscRing;
  private readonly acksIn: SpscRing;
  private readonly readsIn: SpscRing;
  private readonly outRings: Array<[SpscRing, OutputName]>;
  /** Out-rings whose consumer (a socket) refused a record and whose parking is full: retried on kick(). */
  private readonly blocked = new Set<SpscRing>();
  /**
   * Frames a socket refused, by output and chain, in order: the rings are shared by every chain,
   * so one chain's missing or full link must not hold up the others' frames behind it. Each queue
   * is bounded (parkedBytesMax); past that the ring itself waits, as with one chain.
   */
  private readonly parked = new Map<string, { output: OutputName; chain: number; frames: Uint8Array[]; bytes: number }>();
  private readonly parkedBytesMax: number;
  private running = true;
  readonly done: Promise<unknown>;
  private readonly serviceDone: Promise<void>;
  private readonly hasWork = (): boolean => {
    if (!this.running) return true;
    for (const [ring] of this.outRings) if (!this.blocked.has(ring) && !ring.isEmpty()) return true;
    return false;
  };

  constructor(
    options: { nodeId: number; resolved: ResolvedOptions },
    private readonly outputs: NodeOutputs,
  ) {
    const { resolved } = options;
    this.nodeId = options.nodeId;
    // A replica sends at most its in-flight log ahead of its successor's acks.
    this.parkedBytesMax = resolved.inflightBytesMax + resolved.linkRecordBytesMax;
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
      id: options.nodeId,
      replicas: [],
      doorbell: doorbellBuffer,
      limits: replicaLimits(resolved),
      onRejected: (chain, code, reason, replicaId) => this.outputs.rejected?.(chain, code, reason, replicaId),
      onDisk: (report) => this.outputs.disk?.(report),
    });
    this.done = this.handle.done;
    this.done.catch(() => undefined).finally(() => {
      this.running = false;
      this.netDoorbell.ring();
    });
    this.serviceDone = this.serviceLoop();
  }

  /** Hands a frame to the replica of `chain`; false if its ring is full (the caller keeps the frame). */
  pushBatch(chain: number, frame: Uint8Array): boolean {
    return this.push(this.batchesIn, chain, frame);
  }
  pushAck(chain: number, frame: Uint8Array): boolean {
    return this.push(this.acksIn, chain, frame);
  }
  pushReads(chain: number, frame: Uint8Array): boolean {
    return this.push(this.readsIn, chain, frame);
  }

  private push(ring: SpscRing, chain: number, frame: Uint8Array): boolean {
    // Paired with the checks where frames enter (link record limits, the control frame limit).
    assert(
      CHAIN_TAG_BYTES + frame.length <= ring.recordBytesMax,
      `NodePort: a ${frame.length}-byte frame reached a ring of ${ring.recordBytesMax}-byte records`,
    );
    if (!tryWriteTagged(ring, chain, frame)) {
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
    this.flushParked();
    this.netDoorbell.ring();
  }

  /** Starts this node's replica of `chain` (a joiner, or a member of a chain just placed). */
  addReplica(chain: number, replicaId: number, epoch: number, role: Role, joiner: number | null, log?: ReplicaLogPlacement): void {
    this.handle.addReplica({ chain, id: replicaId, epoch, role, joiner, links: this.links, ...(log === undefined ? {} : { log }) });
  }

  /** Stops and forgets this node's replica of `chain` (and whatever of its output waits for a socket). */
  dropReplica(chain: number, keepLog = false): void {
    if (this.handle.replicas.has(chain)) this.handle.dropReplica(chain, keepLog);
    for (const [key, queue] of this.parked) if (queue.chain === chain) this.parked.delete(key);
  }

  /** The replica id this node runs in `chain`, or null. */
  replicaOf(chain: number): number | null {
    return this.handle.replicas.get(chain)?.id ?? null;
  }

  reconfigure(chain: number, epoch: number, role: Role, joiner: number | null): void {
    this.handle.reconfigure(chain, epoch, role, joiner, this.links);
  }

  beginHandoff(chain: number): void {
    this.handle.beginHandoff(chain);
  }

  /** The replica of `chain`'s commit latency as its head (empty if it never headed), or null if this node holds none. */
  commitLatency(chain: number): WeightedHistogram | null {
    const statistics = this.handle.replicas.get(chain)?.statistics;
    return statistics === undefined ? null : commitLatencyOf(statistics);
  }

  /** The replica of `chain`'s figures, or null if this node holds none. */
  stats(chain: number): ReplicaSnapshotStats | null {
    if (!this.handle.replicas.has(chain)) return null;
    const counters = this.handle.counters(chain);
    return {
      epoch: counters.epoch,
      appliedSeq: counters.appliedSeq,
      committedSeq: counters.committedSeq,
      writesApplied: counters.writesApplied,
      readsServed: counters.readsServed,
      dirtyReads: counters.dirtyReads,
      joinCaughtUp: counters.joinCaughtUp,
      handoffReadyEpoch: counters.handoffReadyEpoch,
      heartbeats: counters.heartbeats,
      storeKeys: counters.storeKeys,
      inflightBytes: counters.inflightBytes,
      inboundRingBytes: counters.inboundRingBytes,
      recoveredSeq: counters.recoveredSeq,
      logSyncedSeq: counters.logSyncedSeq,
      logSyncs: counters.logSyncs,
      logBytesWritten: counters.logBytesWritten,
      diskFull: counters.diskFull,
      diskFreeBytes: counters.diskFreeBytes,
    };
  }

  /** Busy ms and writes applied over its replicas (fail-slow detection: ../../native-free-core/master/fail-slow.ts). */
  load(): NodeLoad {
    return this.handle.load();
  }

  /** The replica of `chain`'s store digest, as in Chain.digests(). */
  digest(chain: number): Promise<ReplicaDigest> {
    return this.handle.digest(chain);
  }

  /** Stops the replicas (they send their last acks first) and the thread. */
  async stop(): Promise<void> {
    if (this.running) this.handle.stop();
    await this.done.catch(() => undefined);
    this.running = false;
    this.netDoorbell.ring();
    await this.serviceDone;
    this.handle.closePort();
    await this.pool.destroy();
  }

  /** Ends the node at once, as a crash would (its thread is terminated). */
  async kill(): Promise<void> {
    this.handle.crash(`node ${this.nodeId} was killed`);
    this.handle.terminate(`node ${this.nodeId} was killed`);
    await this.stop();
  }

  private async serviceLoop(): Promise<void> {
    while (this.running) {
      await this.netDoorbell.waitAsync(this.hasWork, 20);
      this.service();
    }
    this.service();
  }

  /**
   * Hands every record the replicas published to its socket, in order per chain. A record a socket
   * refuses waits in its chain's parking (its later records queue behind it); the ring stops only
   * when that is full.
   */
  private service(): void {
    this.flushParked();
    for (const [ring, output] of this.outRings) {
      if (this.blocked.has(ring) || !ring.claim()) continue;
      const send = this.outputs[output];
      let taken = 0;
      for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
        const chain = chainTagAt(ring.bytes, offset);
        const frame = taggedFrame(ring.bytes, offset, ring.recordLength);
        // Only while something is parked: no key is built per record otherwise.
        const waiting = this.parked.size > 0 && this.parked.has(parkingKey(output, chain));
        if ((waiting || !send(chain, frame)) && !this.park(output, chain, frame)) {
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

  /** Keeps a copy of a refused frame for later; false if its chain's parking is full. */
  private park(output: OutputName, chain: number, frame: Uint8Array): boolean {
    // Output of a replica no longer here has no one to go to.
    if (!this.handle.replicas.has(chain)) return true;
    const key = parkingKey(output, chain);
    let queue = this.parked.get(key);
    if (queue === undefined) this.parked.set(key, (queue = { output, chain, frames: [], bytes: 0 }));
    if (queue.bytes + frame.length > this.parkedBytesMax) return false;
    queue.frames.push(frame.slice());
    queue.bytes += frame.length;
    return true;
  }

  /** Sends what waits in each parking, in order, until its socket refuses again. */
  private flushParked(): void {
    for (const [key, queue] of this.parked) {
      const send = this.outputs[queue.output];
      let sent = 0;
      while (sent < queue.frames.length && send(queue.chain, queue.frames[sent]!)) queue.bytes -= queue.frames[sent++]!.length;
      if (sent === queue.frames.length) this.parked.delete(key);
      else if (sent > 0) queue.frames.splice(0, sent);
    }
  }
}

type OutputName = 'downstream' | 'upstream' | 'clientAck' | 'readReply';

function parkingKey(output: OutputName, chain: number): string {
  return `${output}:${chain}`;
}

let nextLinkId = 1;
