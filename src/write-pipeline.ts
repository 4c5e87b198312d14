/**
 * The client side of writes: coalesces put/delete calls into WriteBatch frames, pushes them into
 * the head's ring, and resolves their promises in bulk from the tail's cumulative acks.
 *
 * Keys and values are encoded straight into the open batch's payload (no intermediate copy), each
 * write costs one promise and a few typed-array stores, and nothing here grows without bound:
 * pending writes are capped by the future ring, and batches waiting for ring space by the pool of
 * encoders. Past those caps put() rejects with DABBA_ERR_OVERLOADED instead of queueing.
 */
import { Buffer } from 'node:buffer';
import { assert } from '../native-free-core/assert.js';
import { DabbaError, ErrorCode } from '../native-free-core/errors.js';
import type { SpscRing } from '../native-free-core/ring.js';
import type { RecordSink, Wakeable } from './record-sink.js';
import { AckView, frameKind, MessageKind, Op, WriteBatchEncoder } from '../native-free-core/wire/codec.js';
import { FutureRing } from './futures.js';
import { nativeCrc32 } from '../workers/native-crc32.js';
import { systemClock, type Clock } from './runtime/clock.js';
import { BATCH_WRITES_BUCKETS, LATENCY_BUCKETS_SECONDS, WeightedHistogram } from './metrics/weighted-histogram.js';
import type { ResolvedOptions } from './options.js';
import { LatencyController } from './latency-controller.js';

export type KeyInput = string | Uint8Array;
export type ValueInput = string | Uint8Array;

interface StagedBatch {
  encoder: WriteBatchEncoder;
  /** A Buffer over the encoder's payload, for writing UTF-8 in place. */
  payload: Buffer;
  /** The encoded frame once sealed; valid until the encoder is reused (after its ack). */
  frame: Uint8Array | null;
  /** Client sequence of its last write, once sealed. */
  lastClientSeq: number;
  /** When it got its first write (clock time, ms): its writes' latency is measured from there. */
  openedAtMs: number;
}

export class WritePipeline {
  private readonly futures: FutureRing<void>;
  private readonly freeBatches: StagedBatch[] = [];
  /**
   * Sealed batches, oldest first, kept until acknowledged so they can be resent unchanged to a new
   * head (the head drops the ones it already has by client sequence: exactly-once). Indices are
   * absolute into `outstanding`: [ackedIndex, pushedIndex) are in the ring or the chain,
   * [pushedIndex, length) wait for ring space.
   */
  private readonly outstanding: StagedBatch[] = [];
  private ackedIndex = 0;
  private pushedIndex = 0;
  /** Bytes of the batches in [ackedIndex, pushedIndex): sent and not yet acknowledged. */
  private unackedBytes = 0;
  private open: StagedBatch | null = null;
  private allocatedBatches = 0;
  private readonly batchesMax: number;
  private flushScheduled = false;
  /** A partial batch is due but held back because enough batches are in flight (see sealIfDue). */
  private flushHeld = false;
  private readonly ackView = new AckView();
  private failure: DabbaError | null = null;
  /**
   * One error object for every refused write: under overload a client may be refused hundreds of
   * thousands of times a second, and capturing a stack trace for each would take the CPU the
   * chain needs to catch up (measured: an open loop at 75% of the maximum collapsed to 46 k/s).
   */
  private readonly overloadedError: DabbaError;
  /** The highest client seq ever handed to a head: writes after it never left this thread. */
  private sentThroughClientSeq = 0;
  /** The highest client seq the tail has acknowledged: committed. */
  private committedThroughClientSeq = 0;
  /**
   * The client seqs of conditional writes not yet acknowledged, oldest first: an ack settles each
   * as its report says (failed, applied, or unknown when the report does not reach back to it).
   */
  private readonly conditionalSeqs: number[] = [];
  private conditionalHead = 0;
  /**
   * The chain's head runs an admission hook, so any write may be refused: one that an ack's report
   * does not reach back to has an unknown outcome, not a success.
   */
  admissionReported = false;
  /** chain.outcome() calls waiting for a write's ack, settled on acks or on failure. */
  private readonly outcomeWaiters: Array<{ clientSeq: number; resolve: (committed: boolean) => void; reject: (error: unknown) => void }> = [];

  batchesSent = 0;
  bytesSent = 0;
  writesAcked = 0;
  /**
   * Acknowledged writes' latency: each batch's, from its first write to its ack, once for each write
   * in it (so an upper bound for each: one clock read per batch, not per write).
   */
  readonly latency = new WeightedHistogram(LATENCY_BUCKETS_SECONDS);
  /** Writes per batch sealed. */
  readonly batchWrites = new WeightedHistogram(BATCH_WRITES_BUCKETS);
  /** Batching to a latency target (`batch.latencyTargetUs`), null when off. */
  readonly latencyController: LatencyController | null;

  constructor(
    private readonly options: ResolvedOptions,
    private readonly clientId: number,
    private ring: RecordSink,
    private headDoorbell: Wakeable,
    /**
     * At most this many bytes of batches sent and not acknowledged (the window: a remote head
     * cannot pause its socket, so the client must not send past what it agreed to buffer). In one
     * process the head's ring bounds this already.
     */
    private readonly unackedBytesMax = Number.POSITIVE_INFINITY,
    private readonly clock: Clock = systemClock,
  ) {
    this.futures = new FutureRing<void>(options.pendingWritesMax);
    this.overloadedError = overloaded(this.futures.capacity);
    // Enough staged batches for every pending write in full batches, the partial batches adaptive
    // batching lets fly, and the open one.
    this.batchesMax = Math.ceil(this.futures.capacity / options.batchWritesMax) + options.batchInFlightMax + 2;
    this.latencyController = options.latencyTargetUs > 0 ? new LatencyController(options.latencyTargetUs, options.batchWritesMax, clock.nowMs()) : null;
    // Room for smaller batches under a latency target (each staged batch is allocated when first used).
    if (this.latencyController !== null) this.batchesMax += SMALL_BATCHES_MAX;
  }

  /**
   * The most writes the open batch takes before it leaves: maxWrites, or the latency controller's
   * cap while a staged batch is free to follow it (else it fills to maxWrites: the cap never
   * makes a write wait for a batch, nor costs one more batch's memory).
   */
  private get writesCap(): number {
    const controller = this.latencyController;
    if (controller === null || controller.writesCap === this.options.batchWritesMax) return this.options.batchWritesMax;
    // Staged batches not in use must still carry every write the futures can take, in full batches.
    const inUse = this.outstanding.length - this.ackedIndex + 1;
    const neededInFullBatches = Math.ceil((this.futures.capacity - this.futures.pending) / this.options.batchWritesMax) + 1;
    if (this.batchesMax - inUse > neededInFullBatches) return controller.writesCap;
    controller.noteSaturated();
    return this.options.batchWritesMax;
  }

  get batchWritesMax(): number {
    return this.options.batchWritesMax;
  }

  get pending(): number {
    return this.futures.pending;
  }

  /** Writes accepted so far (the next client sequence number minus one). */
  get accepted(): number {
    return this.futures.next - 1;
  }

  /** With `expectedVersion` (>= 0; 0: absent) the write applies only if the key is at that version then. */
  put(key: KeyInput, value: ValueInput, expectedVersion = -1): Promise<void> {
    return this.write(Op.Put, key, value, expectedVersion);
  }

  delete(key: KeyInput, expectedVersion = -1): Promise<void> {
    return this.write(Op.Delete, key, EMPTY, expectedVersion);
  }

  /**
   * Writes every entry, in order, with one promise for them all instead of one per write: it
   * resolves once the last is acknowledged (acks are cumulative, so then all are) and rejects with
   * the first error of any of them, as Promise.all over their puts would. An entry refused at once
   * (bad type, size, overload) rejects the call, and the entries around it are still written.
   */
  putMany(entries: Iterable<readonly [KeyInput, ValueInput]>): Promise<void> {
    let resolveAll!: () => void;
    let rejectAll!: (reason: unknown) => void;
    const all = new Promise<void>((resolve, reject) => {
      resolveAll = resolve;
      rejectAll = reject;
    });
    let refused: unknown = null;
    let lastSeq = 0;
    for (const [key, value] of entries) {
      const problem = this.stage(Op.Put, key, value);
      if (problem !== null) {
        refused ??= problem;
        continue;
      }
      lastSeq = this.futures.addSettlers(rejectAll);
      this.staged();
    }
    if (refused !== null) rejectAll(refused);
    else if (lastSeq === 0 || !this.futures.setResolver(lastSeq, resolveAll)) resolveAll();
    return all;
  }

  private write(op: Op, key: KeyInput, value: ValueInput, expectedVersion = -1): Promise<void> {
    const problem = this.stage(op, key, value, expectedVersion);
    if (problem !== null) return Promise.reject(problem);
    if (expectedVersion >= 0) this.conditionalSeqs.push(this.futures.next);
    const promise = this.futures.add();
    this.staged();
    return promise;
  }

  /**
   * Encodes one write into the open batch; the caller then registers its future and calls
   * staged(). Returns why the write was refused instead, having staged nothing.
   */
  private stage(op: Op, key: KeyInput, value: ValueInput, expectedVersion = -1): Error | null {
    if (this.failure !== null) return this.failure;
    const keyIsString = typeof key === 'string';
    const valueIsString = typeof value === 'string';
    if (!keyIsString && !(key instanceof Uint8Array)) return typeError('key', key);
    if (!valueIsString && !(value instanceof Uint8Array)) return typeError('value', value);
    if (this.futures.isFull) return this.overloadedError;

    let batch = this.open ?? this.openBatch();
    if (batch === null) return this.overloadedError;
    // UTF-8 needs at most 3 bytes per UTF-16 unit; if even that fits, encode in place directly.
    const keyBound = keyIsString ? key.length * 3 : key.length;
    const valueBound = valueIsString ? value.length * 3 : value.length;
    if (!batch.encoder.fits(keyBound, valueBound)) {
      const keyBytes = keyIsString ? Buffer.byteLength(key) : key.length;
      const valueBytes = valueIsString ? Buffer.byteLength(value) : value.length;
      const invalid = this.checkSizes(keyBytes, valueBytes);
      if (invalid !== null) return invalid;
      if (!batch.encoder.fits(keyBytes, valueBytes)) {
        this.seal(batch);
        batch = this.openBatch();
        if (batch === null) return this.overloadedError;
      }
    }
    const encoder = batch.encoder;
    const keyStart = encoder.payloadLength;
    const keyLength = keyIsString ? writeUtf8(batch.payload, key, keyStart) : copyInto(batch.payload, key, keyStart);
    const valueLength = valueIsString
      ? writeUtf8(batch.payload, value, keyStart + keyLength)
      : copyInto(batch.payload, value, keyStart + keyLength);
    const invalid = this.checkSizes(keyLength, valueLength);
    if (invalid !== null) return invalid;

    encoder.addRecord(op, keyLength, valueLength, expectedVersion);
    return null;
  }

  /** After a write was staged and its future registered: send a full batch, or schedule a flush. */
  private staged(): void {
    const batch = this.open!;
    if (batch.encoder.count >= this.writesCap) {
      this.seal(batch);
      this.pump();
    } else if (!this.flushScheduled) {
      this.scheduleFlush();
    }
  }

  private checkSizes(keyLength: number, valueLength: number): DabbaError | null {
    if (keyLength === 0) return new DabbaError(ErrorCode.keyEmpty, 'key must not be empty');
    if (keyLength > this.options.keyBytesMax) {
      return new DabbaError(ErrorCode.keyTooLarge, `key of ${keyLength} bytes exceeds keyBytesMax (${this.options.keyBytesMax})`);
    }
    if (valueLength > this.options.valueBytesMax) {
      return new DabbaError(
        ErrorCode.valueTooLarge,
        `value of ${valueLength} bytes exceeds valueBytesMax (${this.options.valueBytesMax})`,
      );
    }
    return null;
  }

  private openBatch(): StagedBatch | null {
    let batch = this.freeBatches.pop();
    if (batch === undefined) {
      if (this.allocatedBatches >= this.batchesMax) return null;
      const encoder = new WriteBatchEncoder({ writesMax: this.options.batchWritesMax, payloadBytesMax: this.options.batchBytesMax }, nativeCrc32);
      batch = {
        encoder,
        payload: Buffer.from(encoder.payload.buffer, encoder.payload.byteOffset, encoder.payload.length),
        frame: null,
        lastClientSeq: 0,
        openedAtMs: 0,
      };
      this.allocatedBatches++;
    }
    batch.encoder.begin(this.clientId, this.futures.next);
    batch.frame = null;
    this.open = batch;
    batch.openedAtMs = this.clock.nowMs();
    return batch;
  }

  private seal(batch: StagedBatch): void {
    assert(batch === this.open, 'seal: only the open batch is sealed');
    this.open = null;
    this.flushHeld = false;
    batch.lastClientSeq = batch.encoder.firstClientSeq + batch.encoder.count - 1;
    this.batchWrites.record(batch.encoder.count);
    const frame = batch.encoder.finish();
    // Paired assertion: the frame's envelope is checked here, before it enters the ring, and the
    // whole frame again by the head. (A full verify here would cost ~30 ns per write.)
    assert(frameKind(frame) === MessageKind.writeBatch, 'seal: the encoder produced a malformed frame');
    batch.frame = frame;
    this.outstanding.push(batch);
  }

  private scheduleFlush(): void {
    this.flushScheduled = true;
    this.clock.soon(this.flushTimer);
  }

  private readonly flushTimer = (): void => {
    this.flushScheduled = false;
    const batch = this.open;
    if (batch === null || batch.encoder.count === 0) return;
    if (this.options.lingerUs > 0) {
      const waitedUs = (this.clock.nowMs() - batch.openedAtMs) * 1000;
      if (waitedUs < this.options.lingerUs) {
        this.flushScheduled = true;
        const remainingMs = (this.options.lingerUs - waitedUs) / 1000;
        if (remainingMs >= 1) this.clock.after(Math.floor(remainingMs), this.flushTimer);
        else this.clock.soon(this.flushTimer);
        return;
      }
    }
    this.sealIfDue();
  };

  /** Batches sealed and not yet acknowledged (waiting for ring space, or in the chain). */
  get batchesInFlight(): number {
    return this.outstanding.length - this.ackedIndex;
  }

  /**
   * Adaptive batching: a partial batch whose linger has passed is sent at once while fewer than
   * `maxInFlight` batches are unacknowledged; otherwise it keeps filling until an ack arrives (or it
   * is full). At low load every write leaves immediately; under load batches grow by themselves, so
   * a chain never drowns in tiny batches whose fixed costs exceed their writes'.
   */
  private sealIfDue(): void {
    const batch = this.open;
    if (batch === null || batch.encoder.count === 0) return;
    if (this.batchesInFlight >= this.options.batchInFlightMax) {
      this.flushHeld = true;
      return;
    }
    this.seal(batch);
    this.pump();
  }

  /** Closes the open batch now (close(), or callers that want no linger). */
  flush(): void {
    if (this.open !== null && this.open.encoder.count > 0) this.seal(this.open);
    this.pump();
  }

  /** Moves sealed batches into the head's ring while it has space. */
  pump(): void {
    let pushed = 0;
    while (this.pushedIndex < this.outstanding.length) {
      const frame = this.outstanding[this.pushedIndex]!.frame!;
      // The window is full: acks reopen it (afterAcks pumps again). One batch always may go.
      if (this.unackedBytes > 0 && this.unackedBytes + frame.length > this.unackedBytesMax) break;
      if (!this.ring.tryWrite(frame)) {
        // Backpressure: the head will ring our doorbell when it frees space.
        this.ring.markProducerWaiting();
        this.latencyController?.noteSaturated();
        break;
      }
      this.batchesSent++;
      this.bytesSent += frame.length;
      const lastClientSeq = this.outstanding[this.pushedIndex]!.lastClientSeq;
      if (lastClientSeq > this.sentThroughClientSeq) this.sentThroughClientSeq = lastClientSeq;
      this.pushedIndex++;
      this.unackedBytes += frame.length;
      pushed++;
    }
    if (pushed > 0 && this.ring.publish()) this.headDoorbell.ring();
  }

  /** Whether sealed batches wait and the ring now has room for the first. */
  canPump(): boolean {
    const batch = this.outstanding[this.pushedIndex];
    if (batch === undefined) return false;
    const length = batch.frame!.length;
    return (this.unackedBytes === 0 || this.unackedBytes + length <= this.unackedBytesMax) && this.ring.canWrite(length);
  }

  get waitingBatches(): number {
    return this.outstanding.length - this.pushedIndex + (this.open !== null && this.open.encoder.count > 0 ? 1 : 0);
  }

  /**
   * The chain has a new head: send it every unacknowledged batch again, in order, through its ring.
   * Batches it already has (forwarded by the failed head) are dropped by client sequence.
   */
  switchHead(ring: RecordSink, headDoorbell: Wakeable): void {
    this.ring = ring;
    this.headDoorbell = headDoorbell;
    this.pushedIndex = this.ackedIndex;
    this.unackedBytes = 0;
    this.pump();
  }

  /** Applies the tail's acks from the client-ack ring; returns how many writes were settled. */
  drainAcks(acks: SpscRing): number {
    if (!acks.claim()) return 0;
    let settled = 0;
    for (let offset = acks.next(); offset >= 0; offset = acks.next()) {
      const outcome = this.receiveAck(acks.bytes.subarray(offset, offset + acks.recordLength));
      assert(typeof outcome === 'number', `client ack is malformed: ${outcome}`);
      settled += outcome as number;
    }
    acks.release();
    this.afterAcks();
    return settled;
  }

  /**
   * One cumulative client Ack from the tail: settles every write through its client seq. Returns
   * how many were settled, or why the frame cannot be an ack for this client (then nothing changed).
   */
  receiveAck(frame: Uint8Array): number | string {
    const malformed = this.ackView.open(frame);
    if (malformed !== null) return malformed;
    if (this.ackView.clientId !== this.clientId) return `ack for client ${this.ackView.clientId}, this is client ${this.clientId}`;
    if (this.ackView.committedClientSeq >= this.futures.next) return `ack for write ${this.ackView.committedClientSeq}, never sent (I2)`;
    let settled = 0;
    if (this.conditionalHead < this.conditionalSeqs.length || this.admissionReported || this.ackView.failureCount > 0 || this.ackView.rejections.length > 0) settled += this.settleReported(this.ackView);
    settled += this.futures.resolveThrough(this.ackView.committedClientSeq, undefined);
    if (this.ackView.committedClientSeq > this.committedThroughClientSeq) this.committedThroughClientSeq = this.ackView.committedClientSeq;
    this.writesAcked += settled;
    return settled;
  }

  /**
   * The writes an ack covers that were not applied: those it lists as failed conditions reject with
   * DABBA_ERR_CONDITION_FAILED (and the key's version then), those the head's admission hook refused
   * with DABBA_ERR_REJECTED (and its reason). A conditional write (or, under an admission hook, any
   * write) before the client seq the report starts from that no earlier ack settled rejects with
   * DABBA_ERR_OUTCOME_UNKNOWN (a tail that took over after the one that knew, or acks lost with a
   * link); the rest were applied, and resolve with the writes around them.
   */
  private settleReported(ack: AckView): number {
    let settled = 0;
    for (const { clientSeq, reason } of ack.rejections) {
      if (this.futures.rejectOne(clientSeq, new DabbaError(ErrorCode.rejected, `write ${clientSeq} was refused by the admission hook: ${reason}`))) settled++;
    }
    if (this.admissionReported) {
      const reportedThrough = ack.reportedFrom === 0 ? ack.committedClientSeq : Math.min(ack.reportedFrom - 1, ack.committedClientSeq);
      for (let clientSeq = this.committedThroughClientSeq + 1; clientSeq <= reportedThrough; clientSeq++) {
        const error = new DabbaError(ErrorCode.outcomeUnknown, `whether write ${clientSeq} was admitted is unknown: the tail that reported it is gone; read the key to find out`, { write: { clientId: this.clientId, clientSeq } });
        if (this.futures.rejectOne(clientSeq, error)) settled++;
      }
    }
    for (let index = 0; index < ack.failureCount; index++) {
      const clientSeq = ack.failureClientSeqAt(index);
      const currentVersion = ack.failureVersionAt(index);
      const error = new DabbaError(ErrorCode.conditionFailed, `the condition of write ${clientSeq} failed: the key's version was ${currentVersion}`, { currentVersion });
      if (this.futures.rejectOne(clientSeq, error)) settled++;
    }
    const seqs = this.conditionalSeqs;
    const reportedFrom = ack.reportedFrom === 0 ? Number.POSITIVE_INFINITY : ack.reportedFrom;
    while (this.conditionalHead < seqs.length && seqs[this.conditionalHead]! <= ack.committedClientSeq) {
      const clientSeq = seqs[this.conditionalHead++]!;
      if (clientSeq >= reportedFrom) continue;
      const write = { clientId: this.clientId, clientSeq };
      const error = new DabbaError(ErrorCode.outcomeUnknown, `whether the condition of write ${clientSeq} held is unknown: the tail that reported it is gone; read the key to find out`, { write });
      if (this.futures.rejectOne(clientSeq, error)) settled++;
    }
    if (this.conditionalHead > 1024 && this.conditionalHead * 2 > seqs.length) {
      seqs.splice(0, this.conditionalHead);
      this.conditionalHead = 0;
    }
    return settled;
  }

  /** After a run of receiveAck(): recycle acknowledged batches, settle outcome() waiters, send held writes. */
  afterAcks(): void {
    if (this.outcomeWaiters.length > 0) this.settleOutcomeWaiters();
    const acked = this.futures.settled;
    // Batches past pushedIndex can be acknowledged too: after switchHead() rewound it, the new head
    // may not have taken them yet when the tail's ack for the old head's copies arrives. Left here,
    // they would be sent again (and dropped by the head as duplicates, with no new ack) and count as
    // in flight forever, holding back every partial batch (sealIfDue).
    let nowMs = 0;
    while (this.ackedIndex < this.outstanding.length && this.outstanding[this.ackedIndex]!.lastClientSeq <= acked) {
      const batch = this.outstanding[this.ackedIndex]!;
      if (nowMs === 0) {
        nowMs = this.clock.nowMs();
        // More writes pending than half the in-flight window carries at the current cap: the
        // latency is the client's own queue (a closed loop, a burst), which smaller batches
        // would only lengthen.
        const controller = this.latencyController;
        if (controller !== null && this.futures.pending > (controller.writesCap * this.options.batchInFlightMax) / 2) controller.noteSaturated();
      }
      this.latency.record((nowMs - batch.openedAtMs) / 1000, batch.encoder.count);
      this.latencyController?.observe(nowMs - batch.openedAtMs, nowMs);
      if (this.ackedIndex < this.pushedIndex) this.unackedBytes -= batch.frame!.length;
      this.ackedIndex++;
      batch.frame = null;
      this.freeBatches.push(batch);
    }
    if (this.pushedIndex < this.ackedIndex) this.pushedIndex = this.ackedIndex;
    if (this.ackedIndex > 64 && this.ackedIndex * 2 > this.outstanding.length) {
      this.outstanding.splice(0, this.ackedIndex);
      this.pushedIndex -= this.ackedIndex;
      this.ackedIndex = 0;
    }
    if (this.flushHeld) this.sealIfDue();
    if (this.pushedIndex < this.outstanding.length && this.unackedBytesMax !== Number.POSITIVE_INFINITY) this.pump();
  }

  /**
   * Whether write `clientSeq` of this client is committed: resolves true once the tail has
   * acknowledged it, false if it can no longer be (see `fail`), and rejects with
   * DABBA_ERR_OUTCOME_UNKNOWN if nothing is left to ask.
   */
  outcome(clientSeq: number): Promise<boolean> {
    if (clientSeq <= this.committedThroughClientSeq) return Promise.resolve(true);
    if (this.failure !== null) {
      const unknown = this.failure.code === ErrorCode.outcomeUnknown && clientSeq <= this.sentThroughClientSeq;
      return unknown ? Promise.reject(this.unknownOutcome(clientSeq)) : Promise.resolve(false);
    }
    return new Promise((resolve, reject) => this.outcomeWaiters.push({ clientSeq, resolve, reject }));
  }

  get committedClientSeq(): number {
    return this.committedThroughClientSeq;
  }

  /**
   * Settles every pending write and refuses new ones (close, failure). Writes that never left this
   * thread get `error`. Writes handed to a head and not acknowledged get, if `outcomeKnown` (the
   * caller drained the final acks of a tail that has stopped), `error` too: they are not committed
   * and never will be. Otherwise each gets its own DABBA_ERR_OUTCOME_UNKNOWN naming the write.
   */
  fail(error: DabbaError, options: { outcomeKnown: boolean }): void {
    if (this.failure === null) this.failure = options.outcomeKnown ? error : new DabbaError(ErrorCode.outcomeUnknown, error.message, { cause: error });
    this.open = null;
    this.outstanding.length = 0;
    this.ackedIndex = 0;
    this.pushedIndex = 0;
    this.unackedBytes = 0;
    this.flushHeld = false;
    if (!options.outcomeKnown) this.futures.rejectThrough(this.sentThroughClientSeq, (clientSeq) => this.unknownOutcome(clientSeq, error));
    this.futures.rejectAll(error);
    this.settleOutcomeWaiters();
  }

  private unknownOutcome(clientSeq: number, cause: unknown = this.failure): DabbaError {
    return new DabbaError(ErrorCode.outcomeUnknown, `write ${this.clientId}:${clientSeq} reached the chain, which failed before acknowledging it: it may or may not be committed`, {
      cause,
      write: { clientId: this.clientId, clientSeq },
    });
  }

  private settleOutcomeWaiters(): void {
    const waiters = this.outcomeWaiters;
    let kept = 0;
    for (const waiter of waiters) {
      if (waiter.clientSeq <= this.committedThroughClientSeq) waiter.resolve(true);
      else if (this.failure !== null) this.outcome(waiter.clientSeq).then(waiter.resolve, waiter.reject);
      else waiters[kept++] = waiter;
    }
    waiters.length = kept;
  }
}

const EMPTY = new Uint8Array(0);

/** Staged batches a latency target may add for its smaller batches (see writesCap). */
const SMALL_BATCHES_MAX = 64;

/**
 * Encodes `text` as UTF-8 at `offset` (the caller made sure it fits). Short ASCII strings, the
 * common case for keys, are copied in a loop, about twice as fast as a call into Buffer.write.
 */
function writeUtf8(target: Buffer, text: string, offset: number): number {
  const length = text.length;
  if (length <= 64) {
    let index = 0;
    for (; index < length; index++) {
      const code = text.charCodeAt(index);
      if (code > 0x7f) break;
      target[offset + index] = code;
    }
    if (index === length) return length;
  }
  return target.write(text, offset, 'utf8');
}

function copyInto(target: Buffer, source: Uint8Array, offset: number): number {
  target.set(source, offset);
  return source.length;
}

function typeError(name: string, value: unknown): TypeError {
  return Object.assign(new TypeError(`${name} must be a string or a Uint8Array, got ${value === null ? 'null' : typeof value}`), {
    code: ErrorCode.invalidArgument,
  });
}

function overloaded(capacity: number): DabbaError {
  return new DabbaError(
    ErrorCode.overloaded,
    `too many writes are waiting for the chain (pendingWritesMax ${capacity}); await earlier writes before issuing more`,
  );
}
