/**
 * A chain replica as a pure state machine (the etcd raft shape): events go in through `receive*`
 * methods, and what the runtime must do comes out as plain data in `ready()`; the runtime performs
 * it and reports back with `advance()`. No I/O, timers or clocks live here, so a simulator can run a
 * whole chain in one thread, and the worker runtime can drive the same code over rings.
 *
 * Roles (van Renesse & Schneider, OSDI 2004):
 * - head: receives client batches, stamps epoch and sequence numbers, applies, logs, forwards;
 * - middle: applies a batch that continues its prefix, logs, forwards;
 * - tail: applies and acknowledges cumulatively; serves reads.
 * A single-node chain is head and tail at once.
 */
import { assert } from '../assert.js';
import { ErrorCode } from '../errors.js';
import type { Store } from '../store.js';
import {
  AckView,
  HelloView,
  Op,
  ReadBatchView,
  ReadReplyEncoder,
  WriteBatchView,
  type AckFields,
  type HelloFields,
} from '../wire/codec.js';
import { InflightLog } from './inflight-log.js';

export type Role = 'head' | 'middle' | 'tail' | 'solo';

export interface ChainNodeOptions {
  id: number;
  epoch: number;
  role: Role;
  store: Store;
  /** Bytes of applied-but-unacknowledged batches a non-tail node keeps (its in-flight list). */
  inflightBytesMax: number;
  /** Batches a non-tail node keeps in flight. */
  inflightBatchesMax: number;
  /** Largest read reply frame's payload (values), so a reply fits in one ring record. */
  readReplyPayloadBytesMax: number;
  /** Most results in one read reply frame. */
  readReplyResultsMax: number;
  /** Where the node says why it ignores a message ("ignoring (stale epoch)"). */
  log?: (message: string) => void;
}

/** Outcome of offering a batch or ack to the node. Expected conditions, never exceptions. */
export type ReceiveResult =
  | { status: 'applied'; firstSeq: number; count: number }
  | { status: 'duplicate' }
  | { status: 'full' }
  | { status: 'ignored'; code: ErrorCode; reason: string }
  | { status: 'rejected'; code: ErrorCode; reason: string };

const APPLIED_PLACEHOLDER = { status: 'full' } as const;
const DUPLICATE = { status: 'duplicate' } as const;

/**
 * What the runtime must do next, as plain data. Ordering rules:
 * - Every batch in `forward` is already applied to this node's store (apply BEFORE forwarding,
 *   invariant I1) and must be sent in order; send a prefix if the link is full, and report how
 *   many went with advance().
 * - `ackUpstream` is sent to the predecessor; the tail produces it only AFTER applying (I2).
 * - `clientAcks` (tail only) go to the clients; a client resolves every write with client seq
 *   <= committedClientSeq. Same rule: produced only after apply.
 * - `readReplies` (tail only) answer read batches in the order they arrived.
 */
export interface Ready {
  forward: Uint8Array[];
  forwardSeqs: number[];
  ackUpstream: AckFields | null;
  /**
   * After a reconfiguration: tell the predecessor how far this node has applied, so it resends the
   * rest. Send it BEFORE ackUpstream (both go upstream in order).
   */
  helloUpstream: HelloFields | null;
  clientAcks: AckFields[];
  readReplies: Uint8Array[];
}

export interface AdvanceReport {
  /** How many of ready().forward were handed to the successor (a prefix). */
  forwarded: number;
  /** Whether helloUpstream, ackUpstream and every clientAck were sent (unsent ones are retried). */
  acksSent: boolean;
  /** How many of ready().readReplies were sent (a prefix). */
  repliesSent: number;
}

export class ChainNode {
  readonly id: number;
  private epochValue: number;
  private roleValue: Role;
  readonly store: Store;
  private readonly inflight: InflightLog;
  private readonly log: (message: string) => void;

  private appliedSeqValue = 0;
  private committedSeqValue = 0;
  /** Highest client sequence applied, per client (exactly-once at the head; carried by all). */
  private readonly clientHighWater = new Map<number, number>();
  /** Clients whose writes were committed since the last ready() (tail only). */
  private readonly clientsToAck = new Set<number>();
  private ackPending = false;
  private helloPending = false;
  /** After a reconfiguration, forwarding waits for the successor's Hello (its applied seq). */
  private awaitingSuccessorHello = false;
  private readonly readReplies: Uint8Array[] = [];
  private readonly helloView = new HelloView();
  /** A Hello from a successor already in a newer epoch than ours, applied when we get there. */
  private helloFromNextEpoch: HelloFields | null = null;

  private readonly batchView = new WriteBatchView();
  private readonly ackView = new AckView();
  private readonly readView = new ReadBatchView();
  private readonly replyEncoder: ReadReplyEncoder;

  constructor(options: ChainNodeOptions) {
    assert(Number.isInteger(options.id) && options.id >= 0, 'ChainNode: id must be a non-negative integer');
    assert(Number.isInteger(options.epoch) && options.epoch >= 1, 'ChainNode: epoch must be >= 1');
    this.id = options.id;
    this.epochValue = options.epoch;
    this.roleValue = options.role;
    this.store = options.store;
    this.inflight = new InflightLog(options.inflightBytesMax, options.inflightBatchesMax);
    this.replyEncoder = new ReadReplyEncoder(options.readReplyResultsMax, options.readReplyPayloadBytesMax);
    this.log = options.log ?? (() => {});
  }

  get role(): Role {
    return this.roleValue;
  }
  get epoch(): number {
    return this.epochValue;
  }
  get appliedSeq(): number {
    return this.appliedSeqValue;
  }
  /** Highest sequence number known to be applied at the tail. */
  get committedSeq(): number {
    return this.committedSeqValue;
  }
  get isHead(): boolean {
    return this.roleValue === 'head' || this.roleValue === 'solo';
  }
  get isTail(): boolean {
    return this.roleValue === 'tail' || this.roleValue === 'solo';
  }
  get inflightBatches(): number {
    return this.inflight.batchCount;
  }
  get inflightBytes(): number {
    return this.inflight.bytesUsed;
  }
  clientHighWaterMark(clientId: number): number {
    return this.clientHighWater.get(clientId) ?? 0;
  }

  /**
   * Whether a batch of `length` bytes can be taken now. When false, the runtime leaves the batch
   * where it is (in its inbound ring) until acks free in-flight space: that is backpressure.
   */
  canAccept(length: number): boolean {
    return this.isTail || this.inflight.hasRoomFor(length);
  }

  /** A write batch from upstream: from the client at the head, from the predecessor elsewhere. */
  receiveBatch(bytes: Uint8Array): ReceiveResult {
    if (!this.isTail && !this.inflight.canEverHold(bytes.length)) {
      return { status: 'rejected', code: ErrorCode.outOfRange, reason: `batch of ${bytes.length} bytes exceeds the in-flight log` };
    }
    if (!this.canAccept(bytes.length)) return APPLIED_PLACEHOLDER;
    const malformed = this.batchView.open(bytes);
    if (malformed !== null) return { status: 'rejected', code: ErrorCode.malformedFrame, reason: malformed };
    return this.isHead ? this.stepHead(this.batchView) : this.stepReplica(this.batchView);
  }

  private stepHead(batch: WriteBatchView): ReceiveResult {
    assert(this.isHead, 'stepHead on a non-head');
    const highWater = this.clientHighWater.get(batch.clientId) ?? 0;
    const lastClientSeq = batch.firstClientSeq + batch.count - 1;
    if (lastClientSeq <= highWater) {
      // A retry of writes already ordered: exactly-once means not applying them again.
      this.log(`ignoring (duplicate client batch ${batch.clientId}:${batch.firstClientSeq})`);
      return DUPLICATE;
    }
    if (batch.firstClientSeq !== highWater + 1) {
      return {
        status: 'rejected',
        code: ErrorCode.sequenceGap,
        reason: `client ${batch.clientId} batch starts at ${batch.firstClientSeq}, expected ${highWater + 1}`,
      };
    }
    batch.stamp(this.epochValue, this.appliedSeqValue + 1);
    return this.applyAndRecord(batch);
  }

  /** Middle and tail: apply a batch that continues the prefix (I1, I3). */
  private stepReplica(batch: WriteBatchView): ReceiveResult {
    assert(!this.isHead, 'stepReplica on the head');
    if (batch.epoch !== this.epochValue) {
      this.log(`ignoring (stale epoch ${batch.epoch}, node is at ${this.epochValue})`);
      return { status: 'ignored', code: ErrorCode.staleEpoch, reason: `batch epoch ${batch.epoch} != ${this.epochValue}` };
    }
    const lastSeq = batch.firstSeq + batch.count - 1;
    if (lastSeq <= this.appliedSeqValue) {
      // A resend after reconfiguration of writes this node already has.
      this.log(`ignoring (duplicate batch ${batch.firstSeq}..${lastSeq})`);
      return DUPLICATE;
    }
    if (batch.firstSeq !== this.appliedSeqValue + 1) {
      return {
        status: 'rejected',
        code: ErrorCode.sequenceGap,
        reason: `batch starts at ${batch.firstSeq}, node has applied through ${this.appliedSeqValue}`,
      };
    }
    return this.applyAndRecord(batch);
  }

  private applyAndRecord(batch: WriteBatchView): ReceiveResult {
    const firstSeq = batch.firstSeq;
    const count = batch.count;
    assert(firstSeq === this.appliedSeqValue + 1, 'I3: sequence numbers must be contiguous');
    assert(batch.epoch === this.epochValue, 'a batch is applied only in its own epoch');
    this.apply(batch);
    this.appliedSeqValue = firstSeq + count - 1;
    const lastClientSeq = batch.firstClientSeq + count - 1;
    if (lastClientSeq > (this.clientHighWater.get(batch.clientId) ?? 0)) this.clientHighWater.set(batch.clientId, lastClientSeq);
    if (this.isTail) {
      // The tail commits what it has applied (I2: acknowledgements only after apply).
      this.committedSeqValue = this.appliedSeqValue;
      this.clientsToAck.add(batch.clientId);
      this.ackPending = true;
    } else {
      this.inflight.append(batch.bytes, firstSeq, count);
    }
    assert(this.committedSeqValue <= this.appliedSeqValue, 'committed never exceeds applied');
    return { status: 'applied', firstSeq, count };
  }

  private apply(batch: WriteBatchView): void {
    const store = this.store;
    const bytes = batch.bytes;
    let seq = batch.firstSeq;
    for (let index = 0; index < batch.count; index++, seq++) {
      const record = batch.recordAt(index);
      const keyPosition = batch.keyPosition(record);
      const keyLength = record.keyLength();
      if (record.op() === Op.Put) {
        store.put(bytes, keyPosition, keyLength, bytes, keyPosition + keyLength, record.valueLength(), seq);
      } else {
        store.delete(bytes, keyPosition, keyLength);
      }
    }
  }

  /** A cumulative ack from the successor: everything through committedSeq is at the tail. */
  receiveAck(bytes: Uint8Array): ReceiveResult {
    const malformed = this.ackView.open(bytes);
    if (malformed !== null) return { status: 'rejected', code: ErrorCode.malformedFrame, reason: malformed };
    return this.receiveAckFields(this.ackView);
  }

  receiveAckFields(ack: AckFields): ReceiveResult {
    assert(!this.isTail, 'the tail receives no acks');
    if (ack.epoch !== this.epochValue) {
      this.log(`ignoring (stale epoch ${ack.epoch} ack, node is at ${this.epochValue})`);
      return { status: 'ignored', code: ErrorCode.staleEpoch, reason: `ack epoch ${ack.epoch} != ${this.epochValue}` };
    }
    if (ack.committedSeq <= this.committedSeqValue) return DUPLICATE;
    // I1: the tail's applied writes are a prefix of ours, and we forwarded them.
    assert(ack.committedSeq <= this.inflight.forwardedSeq, `ack ${ack.committedSeq} beyond forwarded ${this.inflight.forwardedSeq}`);
    this.inflight.trimThrough(ack.committedSeq);
    this.committedSeqValue = ack.committedSeq;
    this.ackPending = !this.isHead;
    return { status: 'applied', firstSeq: ack.committedSeq, count: 0 };
  }

  /**
   * The master installed a new configuration in which this node keeps a place, with `role`. What
   * changes (van Renesse & Schneider, section 3):
   * - a node that becomes the tail (its successor failed) commits everything it has applied and
   *   acknowledges it to the clients and upstream;
   * - a node with a successor stops forwarding until that successor's Hello says how far it got,
   *   then resends the rest from its in-flight list (the middle-failure repair);
   * - every node but the head sends its predecessor a Hello, and the tail re-acknowledges in the
   *   new epoch, because messages of the old epoch are dropped from now on.
   * Batches still in the in-flight list are re-stamped with the new epoch before they are resent.
   */
  reconfigure(epoch: number, role: Role): void {
    assert(epoch > this.epochValue, `reconfigure: epoch ${epoch} does not move past ${this.epochValue}`);
    const wasTail = this.isTail;
    this.epochValue = epoch;
    this.roleValue = role;
    if (this.isTail) {
      if (!wasTail) {
        // Everything applied here is now at the tail: committed (I2 holds by definition).
        this.inflight.markForwardedThrough(this.inflight.lastSeq);
        this.inflight.trimThrough(this.inflight.lastSeq);
      }
      this.committedSeqValue = this.appliedSeqValue;
      for (const clientId of this.clientHighWater.keys()) this.clientsToAck.add(clientId);
      this.ackPending = true;
      this.awaitingSuccessorHello = false;
    } else {
      this.awaitingSuccessorHello = true;
      this.restampInflight();
    }
    this.helloPending = !this.isHead;
    if (!this.isHead && this.isTail) this.ackPending = true;
    assert(this.committedSeqValue <= this.appliedSeqValue, 'committed never exceeds applied');
    const early = this.helloFromNextEpoch;
    this.helloFromNextEpoch = null;
    if (early !== null && early.epoch === epoch && !this.isTail) this.receiveHelloFields(early);
  }

  private restampInflight(): void {
    const view = this.batchView;
    for (let index = 0; index < this.inflight.batchCount; index++) {
      const bytes = this.inflight.batchAt(index);
      assert(view.open(bytes) === null, 'a logged batch is well-formed');
      view.restampEpoch(this.epochValue);
    }
  }

  /** The successor's Hello after a reconfiguration: resend everything after its applied seq. */
  receiveHello(bytes: Uint8Array): ReceiveResult {
    const malformed = this.helloView.open(bytes);
    if (malformed !== null) return { status: 'rejected', code: ErrorCode.malformedFrame, reason: malformed };
    return this.receiveHelloFields(this.helloView);
  }

  receiveHelloFields(hello: HelloFields): ReceiveResult {
    if (hello.epoch > this.epochValue) {
      // The successor heard of the new configuration before we did: keep it for when we do.
      this.helloFromNextEpoch = { epoch: hello.epoch, replicaId: hello.replicaId, appliedSeq: hello.appliedSeq };
      return { status: 'ignored', code: ErrorCode.staleEpoch, reason: `hello from epoch ${hello.epoch}, kept for later` };
    }
    if (hello.epoch !== this.epochValue) {
      this.log(`ignoring (stale epoch ${hello.epoch} hello, node is at ${this.epochValue})`);
      return { status: 'ignored', code: ErrorCode.staleEpoch, reason: `hello epoch ${hello.epoch} != ${this.epochValue}` };
    }
    assert(!this.isTail, 'the tail has no successor to hear from');
    // I1: the successor's applied writes are a prefix of ours, and it has everything the tail has,
    // so everything after its applied seq is still in our in-flight list.
    assert(hello.appliedSeq <= this.appliedSeqValue, `I1: successor applied ${hello.appliedSeq} beyond ${this.appliedSeqValue}`);
    if (hello.appliedSeq < this.inflight.firstSeq - 1) {
      return {
        status: 'rejected',
        code: ErrorCode.sequenceGap,
        reason: `successor applied through ${hello.appliedSeq}, but the in-flight list starts at ${this.inflight.firstSeq}`,
      };
    }
    this.inflight.rewindForwardingTo(hello.appliedSeq);
    this.awaitingSuccessorHello = false;
    return { status: 'applied', firstSeq: hello.appliedSeq, count: 0 };
  }

  /** A read batch (tail only): answered from the store, which holds every committed write. */
  receiveReads(bytes: Uint8Array): ReceiveResult {
    const malformed = this.readView.open(bytes);
    if (malformed !== null) return { status: 'rejected', code: ErrorCode.malformedFrame, reason: malformed };
    if (!this.isTail) {
      return { status: 'ignored', code: ErrorCode.staleEpoch, reason: 'reads are served by the tail' };
    }
    const reads = this.readView;
    const encoder = this.replyEncoder;
    const store = this.store;
    encoder.begin(reads.firstRequestId);
    for (let index = 0; index < reads.count; index++) {
      const record = reads.recordAt(index);
      const handle = store.find(reads.bytes, reads.payloadPosition + record.keyOffset(), record.keyLength());
      const valueLength = handle < 0 ? 0 : store.valueLength(handle);
      if (!encoder.fits(valueLength)) {
        this.readReplies.push(encoder.finish(this.epochValue, this.appliedSeqValue).slice());
        encoder.begin(reads.firstRequestId + index);
      }
      if (handle < 0) encoder.addNotFound();
      else encoder.addFound(store.heap, store.valueOffset(handle), valueLength, store.version(handle));
    }
    this.readReplies.push(encoder.finish(this.epochValue, this.appliedSeqValue).slice());
    return { status: 'applied', firstSeq: reads.firstRequestId, count: reads.count };
  }

  /** Whether ready() has anything for the runtime. */
  hasReady(): boolean {
    return (
      this.ackPending ||
      this.helloPending ||
      this.readReplies.length > 0 ||
      (!this.isTail && !this.awaitingSuccessorHello && this.inflight.pendingCount > 0)
    );
  }

  ready(): Ready {
    const forward: Uint8Array[] = [];
    const forwardSeqs: number[] = [];
    if (!this.isTail && !this.awaitingSuccessorHello) {
      const log = this.inflight;
      for (let index = log.firstPendingIndex(); index < log.batchCount; index++) {
        forward.push(log.batchAt(index));
        forwardSeqs.push(log.firstSeqAt(index) + log.countAt(index) - 1);
      }
    }
    let ackUpstream: AckFields | null = null;
    const clientAcks: AckFields[] = [];
    if (this.ackPending && !this.isHead) {
      ackUpstream = { epoch: this.epochValue, committedSeq: this.committedSeqValue, clientId: 0, committedClientSeq: 0 };
    }
    if (this.isTail) {
      for (const clientId of this.clientsToAck) {
        clientAcks.push({
          epoch: this.epochValue,
          committedSeq: this.committedSeqValue,
          clientId,
          committedClientSeq: this.clientHighWater.get(clientId) ?? 0,
        });
      }
    }
    const helloUpstream = this.helloPending ? { epoch: this.epochValue, replicaId: this.id, appliedSeq: this.appliedSeqValue } : null;
    return { forward, forwardSeqs, ackUpstream, helloUpstream, clientAcks, readReplies: this.readReplies.slice() };
  }

  /** The runtime performed `ready`: forwarded a prefix of `forward` and sent every ack and reply. */
  advance(ready: Ready, report: AdvanceReport): void {
    assert(report.forwarded >= 0 && report.forwarded <= ready.forward.length, 'advance: forwarded out of range');
    if (report.forwarded > 0) this.inflight.markForwardedThrough(ready.forwardSeqs[report.forwarded - 1]!);
    assert(report.repliesSent >= 0 && report.repliesSent <= ready.readReplies.length, 'advance: repliesSent out of range');
    if (report.acksSent && ready.helloUpstream !== null) this.helloPending = false;
    if (report.acksSent && (ready.ackUpstream !== null || ready.clientAcks.length > 0)) {
      this.ackPending = false;
      this.clientsToAck.clear();
    }
    this.readReplies.splice(0, report.repliesSent);
  }
}
