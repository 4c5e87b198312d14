/**
 * A replica's worker thread: a thin driver that feeds ring contents to the pure ChainNode and
 * performs its Ready. Hosted by piscina as a long-running task (the task resolves when the replica
 * is stopped, and rejects if it fails, which is how a crash surfaces to the main thread).
 *
 * One loop iteration: control messages, acks (they free in-flight space), batches, reads, then the
 * node's Ready. When nothing moved, the thread spins briefly and then sleeps on its doorbell.
 */
import { readFileSync } from 'node:fs';
import { receiveMessageOnPort } from 'node:worker_threads';
import { ChainNode, type Ready } from '../native-free-core/chain/node.js';
import { SpscRing } from '../native-free-core/ring.js';
import { Store } from '../native-free-core/store.js';
import { AckEncoder } from '../native-free-core/wire/codec.js';
import { Doorbell } from './doorbell.js';
import { ReplicaStat, type ControlReply, type ControlRequest, type ReplicaTask } from './replica-task.js';

class ReplicaDriver {
  private readonly node: ChainNode;
  private readonly batchesIn: SpscRing;
  private readonly batchesOut: SpscRing | null;
  private readonly acksIn: SpscRing | null;
  private readonly acksOut: SpscRing | null;
  private readonly clientAcksOut: SpscRing | null;
  private readonly readsIn: SpscRing | null;
  private readonly readRepliesOut: SpscRing | null;
  private readonly doorbell: Doorbell;
  private readonly upstreamDoorbell: Doorbell;
  private readonly downstreamDoorbell: Doorbell | null;
  private readonly clientDoorbell: Doorbell;
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
    this.batchesIn = new SpscRing(links.batchesIn);
    this.batchesOut = links.batchesOut && new SpscRing(links.batchesOut);
    this.acksIn = links.acksIn && new SpscRing(links.acksIn);
    this.acksOut = links.acksOut && new SpscRing(links.acksOut);
    this.clientAcksOut = links.clientAcksOut && new SpscRing(links.clientAcksOut);
    this.readsIn = links.readsIn && new SpscRing(links.readsIn);
    this.readRepliesOut = links.readRepliesOut && new SpscRing(links.readRepliesOut);
    this.doorbell = new Doorbell(links.doorbell);
    this.upstreamDoorbell = new Doorbell(links.upstreamDoorbell);
    this.downstreamDoorbell = links.downstreamDoorbell && new Doorbell(links.downstreamDoorbell);
    this.clientDoorbell = new Doorbell(links.clientDoorbell);
    this.stats = new Float64Array(task.stats);
    this.controlSignal = new Int32Array(task.controlSignal);
    this.node = new ChainNode({
      id: task.id,
      epoch: task.epoch,
      role: task.role,
      store: new Store(),
      inflightBytesMax: task.limits.inflightBytesMax,
      inflightBatchesMax: task.limits.inflightBatchesMax,
      readReplyPayloadBytesMax: task.limits.readReplyPayloadBytesMax,
      readReplyResultsMax: task.limits.readReplyResultsMax,
    });
  }

  run(): void {
    this.stats[ReplicaStat.osThreadId] = osThreadId();
    const { spinIterations, sleepTimeoutMs } = this.task.limits;
    while (!this.stopped) {
      const moved = this.iterate();
      if (!moved && !this.stopped) {
        this.stats[ReplicaStat.sleeps]!++;
        this.doorbell.waitBlocking(this.hasWork, spinIterations, sleepTimeoutMs);
      }
    }
    this.reply({ type: 'stopped', replicaId: this.node.id });
  }

  private computeHasWork(): boolean {
    if (Atomics.load(this.controlSignal, 0) !== 0) return true;
    if (this.acksIn !== null && !this.acksIn.isEmpty()) return true;
    if (this.readsIn !== null && !this.readsIn.isEmpty()) return true;
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
    if (Atomics.load(this.controlSignal, 0) !== 0) moved = this.handleControl() || moved;
    moved = this.drainAcks() || moved;
    moved = this.drainBatches() || moved;
    moved = this.drainReads() || moved;
    if (this.node.hasReady()) moved = this.performReady() || moved;
    this.publishStats();
    return moved;
  }

  private handleControl(): boolean {
    Atomics.store(this.controlSignal, 0, 0);
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
      const result = this.node.receiveAck(ring.bytes.subarray(offset, offset + ring.recordLength));
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
      const result = this.node.receiveBatch(ring.bytes.subarray(offset, offset + length));
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
    if (ring === null || !ring.claim()) return false;
    for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
      const result = this.node.receiveReads(ring.bytes.subarray(offset, offset + ring.recordLength));
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
    if (out !== null && ready.forward.length > 0) {
      for (const batch of ready.forward) {
        if (!this.tryWrite(out, batch)) break;
        forwarded++;
      }
      if (forwarded > 0 && out.publish()) this.downstreamDoorbell!.ring();
    }
    let acksSent = true;
    if (ready.ackUpstream !== null) {
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
    this.node.advance(ready, { forwarded, acksSent, repliesSent });
    const hadAcks = ready.ackUpstream !== null || ready.clientAcks.length > 0;
    return forwarded > 0 || (hadAcks && acksSent) || repliesSent > 0;
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
    stats[ReplicaStat.appliedSeq] = this.node.appliedSeq;
    stats[ReplicaStat.committedSeq] = this.node.committedSeq;
    stats[ReplicaStat.inflightBytes] = this.node.inflightBytes;
    stats[ReplicaStat.inflightBatches] = this.node.inflightBatches;
    stats[ReplicaStat.storeKeys] = this.node.store.size;
    stats[ReplicaStat.storeHeapBytes] = this.node.store.heapBytes;
  }
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
