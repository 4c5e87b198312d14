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
  KEY_BYTES_LIMIT,
  Op,
  ReadBatchView,
  ReadReplyEncoder,
  WriteBatchView,
  type AckFields,
  type HelloFields,
} from '../wire/codec.js';
import { InflightLog } from './inflight-log.js';
import { snapshotFrameBytesFor, SnapshotView, SnapshotWriter } from './snapshot.js';

export type Role = 'head' | 'middle' | 'tail' | 'solo' | 'joining';

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
  /** Largest Snapshot frame this node sends a joining replica (default 1 MiB; must fit a ring record). */
  snapshotFrameBytesMax?: number;
  /** Largest key a write, a read or a snapshot entry may carry (default: the format's 65535). */
  keyBytesMax?: number;
  /**
   * Largest value a write or a snapshot entry may carry (default: what one read reply holds). A
   * frame with a larger one is refused, so the store only holds values a reply can carry.
   */
  valueBytesMax?: number;
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
 * Read replies waiting to be sent before the node stops taking read batches: a client that sends
 * reads and never takes the replies fills its own ring, not this node's memory.
 */
const READ_REPLIES_WAITING_MAX = 64;

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
  /**
   * A tail with a new joiner: the next frame of the joiner's starting state, on the link `forward`
   * uses, interleaved with batches: when there is a frame, `forward` is empty, and no batch may be
   * sent before it. Report with snapshotSent in advance() whether it went; an unsent frame comes
   * back next time.
   */
  snapshot: Uint8Array | null;
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
  /** Whether ready().snapshot was sent (default: it was, if there was one). */
  snapshotSent?: boolean;
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
  private readonly snapshotView: SnapshotView;
  /** The replica joining behind this tail, if any (see reconfigure). */
  private joinerId: number | null = null;
  /** A tail's snapshot for its joiner, cut a frame at a time (Ready.snapshot), until all is sent. */
  private snapshotWriter: SnapshotWriter | null = null;
  /** The writer's current frame, kept until the runtime reports it sent. */
  private snapshotFrame: Uint8Array | null = null;
  /** Whether the next frame goes before the batches pending now (else they go first). */
  private snapshotTurn = true;
  /** A joining replica has loaded its whole snapshot. */
  private snapshotLoaded = false;
  /** A joining replica has had the first snapshot frame: it applies batches from its seq on. */
  private snapshotStarted = false;
  private snapshotStartSeq = 0;
  /** Highest client sequence committed (at the end of the line), per client: what clients are told. */
  private readonly committedClientHighWater = new Map<number, number>();
  private readonly snapshotFrameBytesMax: number;
  /** A tail with a joiner that stopped taking batches so the joiner can catch up (beginHandoff). */
  private handingOff = false;
  /** A Hello from a successor already in a newer epoch than ours, applied when we get there. */
  private helloFromNextEpoch: HelloFields | null = null;

  private readonly batchView: WriteBatchView;
  private readonly ackView = new AckView();
  private readonly readView: ReadBatchView;
  private readonly replyEncoder: ReadReplyEncoder;

  constructor(options: ChainNodeOptions) {
    assert(Number.isInteger(options.id) && options.id >= 0, 'ChainNode: id must be a non-negative integer');
    assert(Number.isInteger(options.epoch) && options.epoch >= 1, 'ChainNode: epoch must be >= 1');
    this.id = options.id;
    this.epochValue = options.epoch;
    this.roleValue = options.role;
    this.store = options.store;
    // A joiner does not forward for a while, and should start fast: it touches its in-flight arena
    // page by page when it first forwards, if ever, instead of all of it up front.
    this.inflight = new InflightLog(options.inflightBytesMax, options.inflightBatchesMax, { prefault: options.role !== 'joining' });
    this.replyEncoder = new ReadReplyEncoder(options.readReplyResultsMax, options.readReplyPayloadBytesMax);
    this.snapshotFrameBytesMax = options.snapshotFrameBytesMax ?? 1024 * 1024;
    const limits = { keyBytesMax: options.keyBytesMax ?? KEY_BYTES_LIMIT, valueBytesMax: options.valueBytesMax ?? options.readReplyPayloadBytesMax };
    // What the node accepts, it must be able to serve and to copy to a joiner (../limits.ts).
    assert(limits.valueBytesMax <= options.readReplyPayloadBytesMax, 'ChainNode: a value of valueBytesMax must fit one read reply');
    assert(
      snapshotFrameBytesFor(limits.keyBytesMax + limits.valueBytesMax) <= this.snapshotFrameBytesMax,
      'ChainNode: an entry of keyBytesMax and valueBytesMax must fit one snapshot frame',
    );
    this.batchView = new WriteBatchView(limits);
    this.readView = new ReadBatchView(limits.keyBytesMax);
    this.snapshotView = new SnapshotView(limits);
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
  /** Serves reads and acknowledges clients (the tail, or a chain of one). */
  get isTail(): boolean {
    return this.roleValue === 'tail' || this.roleValue === 'solo';
  }
  /**
   * The last replica in line: it commits what it applies and has no one to forward to. A tail with a
   * joining replica behind it is not: it forwards to the joiner and commits on the joiner's acks.
   */
  get isEndOfLine(): boolean {
    return this.isTail || this.roleValue === 'joining';
  }
  /** Forwards what it applies: heads and middles, and a tail with a replica joining behind it. */
  private get hasJoiner(): boolean {
    return this.joinerId !== null;
  }
  get forwardsDownstream(): boolean {
    return (!this.isTail && this.roleValue !== 'joining') || this.hasJoiner;
  }
  /**
   * A tail handing over to its joiner has stopped taking batches and the joiner has acknowledged
   * everything it applied: the master can now make the joiner the tail.
   */
  get handoffReady(): boolean {
    return this.hasJoiner && this.handingOff && this.inflight.batchCount === 0 && this.inflight.forwardedSeq === this.appliedSeqValue;
  }
  /** A joining replica that has loaded its snapshot and is applying the stream after it. */
  get joinCaughtUp(): boolean {
    return this.roleValue === 'joining' && this.snapshotLoaded;
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
    if (this.handingOff) return false;
    return !this.forwardsDownstream || this.inflight.hasRoomFor(length);
  }

  /** A write batch from upstream: from the client at the head, from the predecessor elsewhere. */
  receiveBatch(bytes: Uint8Array): ReceiveResult {
    if (this.forwardsDownstream && !this.inflight.canEverHold(bytes.length)) {
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
    // A joining replica hears only from the tail it copies, in order, and takes whatever epoch its
    // batches were stamped in (that tail applied them in their epoch); everyone else takes batches
    // of its own epoch only. Its first frame is a snapshot frame: a batch before it is not its own.
    if (this.roleValue === 'joining' && !this.snapshotStarted) {
      this.log('ignoring (a batch before the first snapshot frame)');
      return { status: 'ignored', code: ErrorCode.protocolViolation, reason: 'a joining replica takes batches only after its first snapshot frame' };
    }
    if (batch.epoch !== this.epochValue && this.roleValue !== 'joining') {
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
    assert(batch.epoch === this.epochValue || this.roleValue === 'joining', 'a batch is applied only in its own epoch');
    this.apply(batch);
    this.appliedSeqValue = firstSeq + count - 1;
    const lastClientSeq = batch.firstClientSeq + count - 1;
    if (lastClientSeq > (this.clientHighWater.get(batch.clientId) ?? 0)) this.clientHighWater.set(batch.clientId, lastClientSeq);
    if (this.isEndOfLine) {
      // The end of the line commits what it has applied (I2: acknowledgements only after apply).
      this.committedSeqValue = this.appliedSeqValue;
      if (this.isTail) {
        this.committedClientHighWater.set(batch.clientId, this.clientHighWater.get(batch.clientId)!);
        this.clientsToAck.add(batch.clientId);
      }
      this.ackPending = true;
    }
    if (this.forwardsDownstream) this.inflight.append(batch.bytes, firstSeq, count, batch.clientId, lastClientSeq);
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
    if (!this.forwardsDownstream) {
      // A late ack from a successor this node no longer has (it became the tail meanwhile): stale.
      this.log(`ignoring (ack ${ack.committedSeq} of epoch ${ack.epoch}: this node forwards to no one)`);
      return { status: 'ignored', code: ErrorCode.staleEpoch, reason: 'an ack reaches only a node that forwards' };
    }
    if (this.hasJoiner) {
      // From the joiner, whatever the epoch each of us is at: it only ever hears from this tail,
      // and its cumulative ack only trims what this tail keeps for it (all of it committed here).
      if (ack.committedSeq > this.inflight.forwardedSeq || ack.committedSeq < this.inflight.firstSeq - 1) return DUPLICATE;
      this.inflight.trimThrough(ack.committedSeq);
      return { status: 'applied', firstSeq: ack.committedSeq, count: 0 };
    }
    if (ack.epoch !== this.epochValue) {
      this.log(`ignoring (stale epoch ${ack.epoch} ack, node is at ${this.epochValue})`);
      return { status: 'ignored', code: ErrorCode.staleEpoch, reason: `ack epoch ${ack.epoch} != ${this.epochValue}` };
    }
    if (ack.committedSeq <= this.committedSeqValue) return DUPLICATE;
    // I1: the successor's applied writes are a prefix of ours, and we forwarded them. A correct
    // successor never acks more; one that does is refused (the master decides about it).
    if (ack.committedSeq > this.inflight.forwardedSeq) {
      this.log(`ignoring (ack ${ack.committedSeq} beyond forwarded ${this.inflight.forwardedSeq})`);
      return { status: 'rejected', code: ErrorCode.protocolViolation, reason: `ack ${ack.committedSeq} beyond forwarded ${this.inflight.forwardedSeq}` };
    }
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
  reconfigure(epoch: number, role: Role, options: { joiner?: number | null } = {}): void {
    assert(epoch > this.epochValue, `reconfigure: epoch ${epoch} does not move past ${this.epochValue}`);
    if (role === 'joining') {
      // Still joining, in a newer configuration: only the epoch moves; re-acknowledge in it.
      assert(this.roleValue === 'joining', 'reconfigure: a replica becomes joining only when it is created');
      this.epochValue = epoch;
      this.ackPending = this.snapshotStarted;
      return;
    }
    const forwardedBefore = this.forwardsDownstream;
    const previousJoiner = this.joinerId;
    this.epochValue = epoch;
    this.roleValue = role;
    this.joinerId = this.isTail ? (options.joiner ?? null) : null;
    // The same join carries on across epochs (say, the head failed meanwhile); anything else ends it.
    const sameJoin = this.joinerId !== null && this.joinerId === previousJoiner;
    if (!sameJoin) {
      this.handingOff = false;
      this.snapshotWriter?.close();
      this.snapshotWriter = null;
      this.snapshotFrame = null;
    }
    if (this.isTail) {
      if (forwardedBefore && !sameJoin) {
        // No successor any more (it failed), or the joiner went away: everything applied here is
        // committed now (I2 by definition), and nothing is left to forward.
        this.inflight.markForwardedThrough(this.inflight.lastSeq);
        this.inflight.trimThrough(this.inflight.lastSeq);
      }
      if (this.joinerId !== null && !sameJoin) {
        // A replica joins behind this tail: it starts from a snapshot of everything applied so far,
        // then takes every later batch from the in-flight list. The snapshot is cut a frame at a
        // time from a fuzzy scan, so this tail goes on applying writes while it is sent.
        this.inflight.resetAfter(this.appliedSeqValue);
        this.snapshotWriter = new SnapshotWriter(
          {
            store: this.store,
            epoch,
            appliedSeq: this.appliedSeqValue,
            clientHighWater: new Map(this.clientHighWater),
          },
          this.snapshotFrameBytesMax,
        );
        this.snapshotFrame = null;
        this.snapshotTurn = true;
      }
      this.committedSeqValue = this.appliedSeqValue;
      for (const [clientId, clientSeq] of this.clientHighWater) {
        this.committedClientHighWater.set(clientId, clientSeq);
        this.clientsToAck.add(clientId);
      }
      this.ackPending = true;
      this.awaitingSuccessorHello = false;
    } else {
      this.awaitingSuccessorHello = true;
      this.restampInflight();
    }
    this.helloPending = !this.isHead;
    assert(this.committedSeqValue <= this.appliedSeqValue, 'committed never exceeds applied');
    // A Hello that overtook our own reconfiguration: apply it now if it is for this epoch, keep it if
    // it is for a later one (we may be passing through several epochs), drop it if it is older.
    const early = this.helloFromNextEpoch;
    if (early !== null && early.epoch <= epoch) {
      this.helloFromNextEpoch = null;
      if (early.epoch === epoch && this.forwardsDownstream && !this.hasJoiner) this.receiveHelloFields(early);
    }
  }

  /**
   * A joining replica's starting state, in frames from the tail it joins behind, with the batches
   * that tail applied meanwhile in between them (see SnapshotWriter). The first frame says from
   * which seq on batches follow; each frame holds entries as they were when it was cut, after every
   * batch before it on the link, so applying both in link order converges on the tail's state.
   */
  receiveSnapshot(bytes: Uint8Array): ReceiveResult {
    const view = this.snapshotView;
    const malformed = view.open(bytes);
    if (malformed !== null) return { status: 'rejected', code: ErrorCode.malformedFrame, reason: malformed };
    if (this.roleValue !== 'joining' || this.snapshotLoaded) {
      return { status: 'ignored', code: ErrorCode.staleEpoch, reason: 'a snapshot reaches only a replica that is joining' };
    }
    if (!this.snapshotStarted) {
      assert(this.appliedSeqValue === 0, 'a joining replica starts empty');
      this.snapshotStarted = true;
      this.snapshotStartSeq = view.appliedSeq;
      this.appliedSeqValue = view.appliedSeq;
      this.committedSeqValue = view.appliedSeq;
      this.ackPending = true;
    } else if (view.appliedSeq !== this.snapshotStartSeq) {
      return { status: 'rejected', code: ErrorCode.sequenceGap, reason: `snapshot frame from seq ${view.appliedSeq}, this snapshot started at ${this.snapshotStartSeq}` };
    }
    view.applyTo(this.store, this.clientHighWater);
    if (view.last) this.snapshotLoaded = true;
    return { status: 'applied', firstSeq: view.appliedSeq, count: view.count };
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
      // The successor heard of the new configuration before we did: keep it for when we do (the
      // newest one wins; older epochs' Hellos are moot once a newer one has been sent).
      if (this.helloFromNextEpoch === null || hello.epoch >= this.helloFromNextEpoch.epoch) {
        this.helloFromNextEpoch = { epoch: hello.epoch, replicaId: hello.replicaId, appliedSeq: hello.appliedSeq };
      }
      return { status: 'ignored', code: ErrorCode.staleEpoch, reason: `hello from epoch ${hello.epoch}, kept for later` };
    }
    if (hello.epoch !== this.epochValue) {
      this.log(`ignoring (stale epoch ${hello.epoch} hello, node is at ${this.epochValue})`);
      return { status: 'ignored', code: ErrorCode.staleEpoch, reason: `hello epoch ${hello.epoch} != ${this.epochValue}` };
    }
    if (!this.forwardsDownstream || this.hasJoiner) {
      // Only a node with a successor that was just (re)configured hears a Hello: the tail and a
      // joiner have no successor, and a tail's joiner sends none (it acknowledges from its snapshot on).
      this.log(`ignoring (hello from replica ${hello.replicaId}: no successor of this node sends one)`);
      return { status: 'ignored', code: ErrorCode.protocolViolation, reason: 'a Hello reaches only a node with a successor' };
    }
    // I1: the successor's applied writes are a prefix of ours, and it has everything the tail has,
    // so everything after its applied seq is still in our in-flight list. A Hello claiming more is
    // not from a correct successor: refused.
    if (hello.appliedSeq > this.appliedSeqValue) {
      this.log(`ignoring (a Hello claiming seq ${hello.appliedSeq}, beyond ${this.appliedSeqValue})`);
      return { status: 'rejected', code: ErrorCode.protocolViolation, reason: `I1: successor claims seq ${hello.appliedSeq}, beyond ${this.appliedSeqValue}` };
    }
    if (hello.appliedSeq < this.inflight.firstSeq - 1) {
      return {
        status: 'rejected',
        code: ErrorCode.sequenceGap,
        reason: `successor applied through ${hello.appliedSeq}, but the in-flight list starts at ${this.inflight.firstSeq}`,
      };
    }
    // Batches are applied whole: a successor stops between two of them, never inside one.
    if (!this.inflight.isBatchBoundary(hello.appliedSeq)) {
      this.log(`ignoring (a Hello claiming seq ${hello.appliedSeq}, inside a batch)`);
      return { status: 'rejected', code: ErrorCode.protocolViolation, reason: `successor claims seq ${hello.appliedSeq}, inside a logged batch` };
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

  /**
   * The master is about to make this tail's joiner the tail: stop taking batches, so the joiner can
   * acknowledge everything applied here (handoffReady) before roles change. Reads and client acks
   * go on meanwhile; a write waits at most until the handoff completes.
   */
  beginHandoff(): void {
    assert(this.hasJoiner, 'beginHandoff: no replica is joining behind this one');
    this.handingOff = true;
  }

  /** Whether a read batch can be taken now (else it waits in its ring until replies are sent). */
  canAcceptReads(): boolean {
    return this.readReplies.length < READ_REPLIES_WAITING_MAX;
  }

  /** Whether ready() has anything for the runtime. */
  hasReady(): boolean {
    return (
      this.ackPending ||
      this.helloPending ||
      this.snapshotWriter !== null ||
      this.readReplies.length > 0 ||
      (this.forwardsDownstream && !this.awaitingSuccessorHello && this.inflight.pendingCount > 0)
    );
  }

  ready(): Ready {
    const forward: Uint8Array[] = [];
    const forwardSeqs: number[] = [];
    // Nothing passes a frame, so every batch applied after a frame's cut reaches the joiner after
    // it (SnapshotWriter says why that is enough). Frames and batches take turns, so the joiner
    // keeps applying batches, which lets this tail trim them, and the transfer keeps moving.
    const writer = this.snapshotWriter;
    if (writer !== null && this.snapshotFrame === null && this.snapshotTurn) this.snapshotFrame = writer.next();
    const snapshot = this.snapshotFrame;
    if (this.forwardsDownstream && !this.awaitingSuccessorHello && snapshot === null) {
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
          committedClientSeq: this.committedClientHighWater.get(clientId) ?? 0,
        });
      }
    }
    const helloUpstream = this.helloPending ? { epoch: this.epochValue, replicaId: this.id, appliedSeq: this.appliedSeqValue } : null;
    return { snapshot, forward, forwardSeqs, ackUpstream, helloUpstream, clientAcks, readReplies: this.readReplies.slice() };
  }

  /** The runtime performed `ready`: forwarded a prefix of `forward` and sent every ack and reply. */
  advance(ready: Ready, report: AdvanceReport): void {
    assert(report.forwarded >= 0 && report.forwarded <= ready.forward.length, 'advance: forwarded out of range');
    if (report.forwarded > 0) this.inflight.markForwardedThrough(ready.forwardSeqs[report.forwarded - 1]!);
    assert(report.repliesSent >= 0 && report.repliesSent <= ready.readReplies.length, 'advance: repliesSent out of range');
    if (ready.snapshot !== null && ready.snapshot === this.snapshotFrame && (report.snapshotSent ?? true)) {
      this.snapshotFrame = null;
      this.snapshotTurn = false;
      if (this.snapshotWriter!.done) this.snapshotWriter = null;
    } else if (report.forwarded === ready.forward.length) {
      this.snapshotTurn = true;
    }
    if (report.acksSent && ready.helloUpstream !== null) this.helloPending = false;
    if (report.acksSent && (ready.ackUpstream !== null || ready.clientAcks.length > 0)) {
      this.ackPending = false;
      this.clientsToAck.clear();
    }
    this.readReplies.splice(0, report.repliesSent);
  }
}
