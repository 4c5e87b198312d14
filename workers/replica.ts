/**
 * A replica's worker thread: a thin driver that feeds ring contents to the pure ChainNode and
 * performs its Ready. Hosted by piscina as a long-running task (the task resolves when the replica
 * is stopped, and rejects if it fails, which is how a crash surfaces to the main thread).
 *
 * One loop iteration: control messages, acks (they free in-flight space), batches, reads, then the
 * node's Ready. When nothing moved, the thread spins briefly and then sleeps on its doorbell.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { receiveMessageOnPort, threadId } from 'node:worker_threads';
import { ChainNode, type Ready } from '../native-free-core/chain/node.js';
import { SpscRing } from '../native-free-core/ring.js';
import { Store } from '../native-free-core/store.js';
import { AckEncoder, HelloEncoder } from '../native-free-core/wire/codec.js';
import { Doorbell } from './doorbell.js';
import {
  CONTROL_CRASH,
  CONTROL_FREEZE,
  CONTROL_MESSAGES,
  ReplicaStat,
  type ControlReply,
  type ControlRequest,
  type ReplicaLinks,
  type ReplicaTask,
  type RingLink,
} from './replica-task.js';

class ReplicaDriver {
  private readonly node: ChainNode;
  // The rings and doorbells change when the chain is reconfigured (see applyLinks).
  private batchesIn!: SpscRing;
  private batchesOut: SpscRing | null = null;
  private acksIn: SpscRing | null = null;
  private acksOut: SpscRing | null = null;
  private clientAcksOut: SpscRing | null = null;
  private readsIn: SpscRing | null = null;
  private readRepliesOut: SpscRing | null = null;
  private readonly doorbell: Doorbell;
  private upstreamDoorbell!: Doorbell;
  private downstreamDoorbell: Doorbell | null = null;
  private readonly clientDoorbell: Doorbell;
  /** Open rings by link id, so a reconfiguration keeps the ones that did not change. */
  private rings = new Map<number, SpscRing>();
  private readonly helloEncoder = new HelloEncoder();
  private readonly stats: Float64Array;
  private readonly controlSignal: Int32Array;
  private readonly ackEncoder = new AckEncoder();
  private stopped = false;
  /** True while the in-flight log is full: inbound batches wait, so they are not "work". */
  private inboundBlocked = false;
  /** Outbound rings that were too full for a record, and the record's length: retried when they drain. */
  private readonly blockedRings: SpscRing[] = [];
  private readonly blockedLengths: number[] = [];
  private readonly hasWork = (): boolean => this.computeHasWork();

  constructor(private readonly task: ReplicaTask) {
    const { links } = task;
    this.doorbell = new Doorbell(links.doorbell);
    this.clientDoorbell = new Doorbell(links.clientDoorbell);
    this.applyLinks(links);
    this.stats = new Float64Array(task.stats);
    this.controlSignal = new Int32Array(task.controlSignal);
    this.node = new ChainNode({
      id: task.id,
      epoch: task.epoch,
      role: task.role,
      store: new Store({ hashKey: randomHashKey() }),
      inflightBytesMax: task.limits.inflightBytesMax,
      inflightBatchesMax: task.limits.inflightBatchesMax,
      readReplyPayloadBytesMax: task.limits.readReplyPayloadBytesMax,
      readReplyResultsMax: task.limits.readReplyResultsMax,
      snapshotFrameBytesMax: task.limits.snapshotFrameBytesMax,
      keyBytesMax: task.limits.keyBytesMax,
      valueBytesMax: task.limits.valueBytesMax,
    });
  }

  /** Opens the rings of `links`, keeping already open ones by id; rings no longer used are dropped. */
  private applyLinks(links: ReplicaLinks): void {
    const previous = this.rings;
    this.rings = new Map();
    const open = (link: RingLink | null): SpscRing | null => {
      if (link === null) return null;
      const ring = previous.get(link.id) ?? new SpscRing(link.buffer);
      this.rings.set(link.id, ring);
      return ring;
    };
    this.batchesIn = open(links.batchesIn)!;
    this.batchesOut = open(links.batchesOut);
    this.acksIn = open(links.acksIn);
    this.acksOut = open(links.acksOut);
    this.clientAcksOut = open(links.clientAcksOut);
    this.readsIn = open(links.readsIn);
    this.readRepliesOut = open(links.readRepliesOut);
    this.upstreamDoorbell = new Doorbell(links.upstreamDoorbell);
    this.downstreamDoorbell = links.downstreamDoorbell && new Doorbell(links.downstreamDoorbell);
    this.inboundBlocked = false;
    this.blockedRings.length = 0;
    this.blockedLengths.length = 0;
  }

  run(): void {
    this.stats[ReplicaStat.osThreadId] = osThreadId();
    this.stats[ReplicaStat.threadId] = threadId;
    const { spinIterations, sleepTimeoutMs } = this.task.limits;
    while (!this.stopped) {
      const moved = this.iterate();
      if (!moved && !this.stopped) {
        this.stats[ReplicaStat.sleeps]!++;
        this.doorbell.waitBlocking(this.hasWork, spinIterations, sleepTimeoutMs);
      }
    }
    // A clean stop sends its last acks: the client can then tell every write it was not
    // acknowledged is not committed (see Chain.close).
    if (this.node.hasReady()) this.performReady();
    this.reply({ type: 'stopped', replicaId: this.node.id });
  }

  private computeHasWork(): boolean {
    if (Atomics.load(this.controlSignal, 0) !== 0) return true;
    if (this.acksIn !== null && !this.acksIn.isEmpty()) return true;
    if (this.readsIn !== null && !this.readsIn.isEmpty() && this.node.canAcceptReads()) return true;
    if (!this.inboundBlocked && !this.batchesIn.isEmpty()) return true;
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
    moved = this.drainAcks() || moved;
    moved = this.drainBatches() || moved;
    moved = this.drainReads() || moved;
    if (this.node.hasReady()) moved = this.performReady() || moved;
    this.publishStats();
    return moved;
  }

  /**
   * crashReplica(): stop dead, between two batches, with no goodbye and nothing flushed, the way a
   * power cut would. Throwing rejects the piscina task, which is how the main thread learns of it.
   */
  private crashIfAsked(): void {
    const signal = Atomics.load(this.controlSignal, 0);
    if (signal === CONTROL_CRASH) throw new Error(`replica ${this.node.id} crashed on request`);
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
      const request = envelope.message as ControlRequest;
      switch (request.type) {
        case 'digest':
          this.reply({
            type: 'digest',
            requestId: request.requestId,
            replicaId: this.node.id,
            digest: this.node.store.digest(),
            keys: this.node.store.size,
            appliedSeq: this.node.appliedSeq,
          });
          break;
        case 'reconfigure':
          this.applyLinks(request.links);
          this.node.reconfigure(request.epoch, request.role, { joiner: request.joiner });
          this.stats[ReplicaStat.epoch] = request.epoch;
          break;
        case 'begin-handoff':
          if (this.node.forwardsDownstream && this.node.isTail) this.node.beginHandoff();
          break;
        case 'stop':
          this.stopped = true;
          break;
      }
    }
  }

  private drainAcks(): boolean {
    const ring = this.acksIn;
    if (ring === null || !ring.claim()) return false;
    for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
      // The successor sends cumulative Acks, and a Hello after each reconfiguration.
      const result = this.node.step('downstream', ring.bytes.subarray(offset, offset + ring.recordLength));
      if (result.status === 'rejected') this.reportRejected(result.code, result.reason);
    }
    ring.release();
    // Acks trimmed the in-flight log: inbound batches may fit again.
    this.inboundBlocked = false;
    this.notifyIfProducerWaits(ring, this.downstreamDoorbell);
    return true;
  }

  private drainBatches(): boolean {
    const ring = this.batchesIn;
    if (!ring.claim()) return false;
    let taken = 0;
    for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
      const length = ring.recordLength;
      if (!this.node.canAccept(length)) {
        // In-flight log full: leave the batch in the ring until acks free space (backpressure).
        ring.unread();
        this.inboundBlocked = true;
        this.stats[ReplicaStat.backpressureStalls]!++;
        break;
      }
      this.crashIfAsked();
      // Batches, and a joiner's snapshot frames before them, on the same link.
      const result = this.node.step('upstream', ring.bytes.subarray(offset, offset + length));
      taken++;
      if (result.status === 'applied') {
        this.stats[ReplicaStat.batchesApplied]!++;
        this.stats[ReplicaStat.writesApplied]! += result.count;
        // Forward each batch as soon as it is applied, so the next replica works on it while this
        // one applies the next: the chain is a pipeline, not a relay of bursts. The tail instead
        // acknowledges once per drain: acks are cumulative, and waking the main thread (a
        // waitAsync waiter) costs tens of microseconds each time.
        if (!this.node.isTail) this.performReady();
      } else if (result.status === 'rejected' || result.status === 'ignored') {
        this.reportRejected(result.code, result.reason);
      }
    }
    ring.release();
    if (taken > 0) this.notifyIfProducerWaits(ring, this.upstreamDoorbell);
    return taken > 0;
  }

  private drainReads(): boolean {
    const ring = this.readsIn;
    // Replies that cannot leave (a full ring) hold further reads back in theirs.
    if (ring === null || !this.node.canAcceptReads() || !ring.claim()) return false;
    for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
      if (!this.node.canAcceptReads()) {
        ring.unread();
        break;
      }
      const result = this.node.step('client', ring.bytes.subarray(offset, offset + ring.recordLength));
      if (result.status === 'applied') this.stats[ReplicaStat.readsServed]! += result.count;
      else if (result.status === 'rejected' || result.status === 'ignored') this.reportRejected(result.code, result.reason);
    }
    ring.release();
    this.notifyIfProducerWaits(ring, this.clientDoorbell);
    return true;
  }

  private performReady(): boolean {
    const ready: Ready = this.node.ready();
    this.blockedRings.length = 0;
    this.blockedLengths.length = 0;
    let forwarded = 0;
    const out = this.batchesOut;
    // A joiner's snapshot comes a frame at a time, and no batch goes before its last frame (the core
    // leaves `forward` empty until then).
    let snapshotSent = false;
    if (out !== null && ready.snapshot !== null) {
      snapshotSent = this.tryWrite(out, ready.snapshot);
      if (snapshotSent && out.publish()) this.downstreamDoorbell!.ring();
    }
    if (out !== null && ready.forward.length > 0) {
      for (const batch of ready.forward) {
        if (!this.tryWrite(out, batch)) break;
        forwarded++;
      }
      if (forwarded > 0 && out.publish()) this.downstreamDoorbell!.ring();
    }
    let acksSent = true;
    if (ready.helloUpstream !== null) {
      acksSent = this.send(this.acksOut!, this.helloEncoder.encode(ready.helloUpstream), this.upstreamDoorbell);
    }
    if (ready.ackUpstream !== null && acksSent) {
      acksSent = this.send(this.acksOut!, this.ackEncoder.encode(ready.ackUpstream), this.upstreamDoorbell);
    }
    for (const clientAck of ready.clientAcks) {
      acksSent = this.send(this.clientAcksOut!, this.ackEncoder.encode(clientAck), this.clientDoorbell) && acksSent;
    }
    let repliesSent = 0;
    for (const reply of ready.readReplies) {
      if (!this.send(this.readRepliesOut!, reply, this.clientDoorbell)) break;
      repliesSent++;
    }
    this.node.advance(ready, { forwarded, acksSent, repliesSent, snapshotSent });
    const hadAcks = ready.ackUpstream !== null || ready.clientAcks.length > 0;
    return forwarded > 0 || snapshotSent || (hadAcks && acksSent) || repliesSent > 0;
  }

  /** Stages one record; if the ring is full, asks its consumer to wake us when it frees space. */
  private tryWrite(ring: SpscRing, bytes: Uint8Array): boolean {
    if (ring.tryWrite(bytes)) return true;
    this.blockedRings.push(ring);
    this.blockedLengths.push(bytes.length);
    ring.markProducerWaiting();
    this.stats[ReplicaStat.backpressureStalls]!++;
    return false;
  }

  /** Writes and publishes one record, ringing its consumer; false if the ring is full. */
  private send(ring: SpscRing, bytes: Uint8Array, consumer: Doorbell): boolean {
    if (!this.tryWrite(ring, bytes)) return false;
    if (ring.publish()) consumer.ring();
    return true;
  }

  /** After freeing ring space: wake the producer if it is waiting for space. */
  private notifyIfProducerWaits(ring: SpscRing, producer: Doorbell | null): void {
    if (producer !== null && ring.takeProducerWaiting()) producer.ring();
  }

  private reportRejected(code: string, reason: string): void {
    this.stats[ReplicaStat.rejectedFrames]!++;
    this.reply({ type: 'rejected', replicaId: this.node.id, code, reason });
  }

  private reply(message: ControlReply): void {
    this.task.port.postMessage(message);
  }

  private publishStats(): void {
    const stats = this.stats;
    stats[ReplicaStat.heartbeats]!++;
    stats[ReplicaStat.epoch] = this.node.epoch;
    stats[ReplicaStat.joinCaughtUp] = this.node.joinCaughtUp ? 1 : 0;
    stats[ReplicaStat.handoffReadyEpoch] = this.node.handoffReady ? this.node.epoch : 0;
    stats[ReplicaStat.appliedSeq] = this.node.appliedSeq;
    stats[ReplicaStat.committedSeq] = this.node.committedSeq;
    stats[ReplicaStat.inflightBytes] = this.node.inflightBytes;
    stats[ReplicaStat.inflightBatches] = this.node.inflightBatches;
    stats[ReplicaStat.storeKeys] = this.node.store.size;
    stats[ReplicaStat.storeHeapBytes] = this.node.store.heapBytes;
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

/** Piscina task entry: runs the replica until it is told to stop. */
export default function runReplica(task: ReplicaTask): string {
  new ReplicaDriver(task).run();
  task.port.close();
  return 'stopped';
}
