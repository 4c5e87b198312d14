/**
 * The client side of reads: get() calls are coalesced into ReadBatch frames for the tail, and
 * answered from its ReadReplyBatch frames. A read is sent after every acknowledgement the client
 * had already received, and the tail serves it after applying those writes, so a get sees every
 * write acknowledged before it was issued (linearizable reads at the tail).
 */
import { Buffer } from 'node:buffer';
import { DabbaError, ErrorCode } from '../native-free-core/errors.js';
import { ReadBatchEncoder, ReadReplyView, ReadStatus } from '../native-free-core/wire/codec.js';
import type { RecordSink, Wakeable } from './record-sink.js';
import { FutureRing } from './futures.js';
import type { ResolvedOptions } from './options.js';
import type { KeyInput } from './write-pipeline.js';
import { systemClock, type Clock } from './runtime/clock.js';
import { LATENCY_BUCKETS_SECONDS, WeightedHistogram } from './metrics/weighted-histogram.js';

/** A value read from the chain, with the sequence number of the write that produced it. */
export interface VersionedValue {
  value: Buffer;
  version: number;
}

export class ReadPipeline {
  private readonly futures: FutureRing<VersionedValue | undefined>;
  private readonly encoder: ReadBatchEncoder;
  private readonly payload: Buffer;
  /**
   * Encoded read batches not yet fully answered, oldest first (bounded by pendingReadsMax): kept so
   * they can be sent again to a new tail. [answeredIndex, pushedIndex) are with the tail,
   * [pushedIndex, length) wait for ring space.
   */
  private readonly unanswered: Array<{ frame: Uint8Array; lastRequestId: number; openedAtMs: number; count: number }> = [];
  /** When the batch being filled got its first read (clock time, ms). */
  private openedAtMs = 0;
  private answeredIndex = 0;
  private pushedIndex = 0;
  private flushScheduled = false;
  private readonly replyView = new ReadReplyView();
  private failure: DabbaError | null = null;
  readsAnswered = 0;

  constructor(
    private readonly options: ResolvedOptions,
    private ring: RecordSink,
    private tailDoorbell: Wakeable,
    private readonly epoch: () => number,
    private readonly clock: Clock = systemClock,
    /** This pipeline's lane among its client's (./read-lanes.ts): stamped on its batches, echoed in replies. */
    readonly lane = 0,
    pendingReadsMax = options.pendingReadsMax,
    /** Where answered reads' latency goes: each batch's, from its first read to its last answer, once for each read in it. */
    private readonly latency = new WeightedHistogram(LATENCY_BUCKETS_SECONDS),
  ) {
    this.futures = new FutureRing(pendingReadsMax);
    this.encoder = new ReadBatchEncoder({ readsMax: options.readBatchReadsMax, keyBytesMax: options.keyBytesMax });
    this.payload = Buffer.from(this.encoder.payload.buffer, this.encoder.payload.byteOffset, this.encoder.payload.length);
    this.encoder.begin(this.futures.next);
  }

  get pending(): number {
    return this.futures.pending;
  }

  /** Reads in the batch being filled (0: the next get() starts a batch). */
  get openReads(): number {
    return this.encoder.count;
  }

  /** The request id of the newest read, and through which every read is settled (ids count from 1). */
  get lastRequestId(): number {
    return this.futures.next - 1;
  }
  get settledRequestId(): number {
    return this.futures.settled;
  }

  get(key: KeyInput): Promise<VersionedValue | undefined> {
    if (this.failure !== null) return Promise.reject(this.failure);
    const isString = typeof key === 'string';
    if (!isString && !(key instanceof Uint8Array)) {
      return Promise.reject(
        Object.assign(new TypeError(`key must be a string or a Uint8Array, got ${key === null ? 'null' : typeof key}`), {
          code: ErrorCode.invalidArgument,
        }),
      );
    }
    if (this.futures.isFull) {
      return Promise.reject(new DabbaError(ErrorCode.overloaded, `too many reads are waiting (pendingReadsMax ${this.options.pendingReadsMax})`));
    }
    const keyLength = isString ? Buffer.byteLength(key) : key.length;
    if (keyLength === 0) return Promise.reject(new DabbaError(ErrorCode.keyEmpty, 'key must not be empty'));
    if (keyLength > this.options.keyBytesMax) {
      return Promise.reject(
        new DabbaError(ErrorCode.keyTooLarge, `key of ${keyLength} bytes exceeds keyBytesMax (${this.options.keyBytesMax})`),
      );
    }
    if (!this.encoder.fits(keyLength)) this.seal();
    if (this.encoder.count === 0) this.openedAtMs = this.clock.nowMs();
    const start = this.encoder.payloadLength;
    if (isString) this.payload.write(key, start, 'utf8');
    else this.payload.set(key, start);
    this.encoder.addRecord(keyLength);
    const promise = this.futures.add();
    if (this.encoder.count === this.encoder.readsMax) this.seal();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      this.clock.soon(this.flushTimer);
    }
    return promise;
  }

  private readonly flushTimer = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  flush(): void {
    if (this.encoder.count > 0) this.seal();
  }

  private seal(): void {
    const frame = this.encoder.finish(this.epoch(), this.lane).slice();
    this.unanswered.push({ frame, lastRequestId: this.futures.next - 1, openedAtMs: this.openedAtMs, count: this.encoder.count });
    this.encoder.begin(this.futures.next);
    this.pump();
  }

  canPump(): boolean {
    const batch = this.unanswered[this.pushedIndex];
    return batch !== undefined && this.ring.canWrite(batch.frame.length);
  }

  pump(): void {
    let pushed = 0;
    while (this.pushedIndex < this.unanswered.length) {
      if (!this.ring.tryWrite(this.unanswered[this.pushedIndex]!.frame)) {
        this.ring.markProducerWaiting();
        break;
      }
      this.pushedIndex++;
      pushed++;
    }
    if (pushed > 0 && this.ring.publish()) this.tailDoorbell.ring();
  }

  /** The chain has a new tail: ask it again for every read not answered yet. */
  switchTail(ring: RecordSink, tailDoorbell: Wakeable): void {
    this.ring = ring;
    this.tailDoorbell = tailDoorbell;
    this.pushedIndex = this.answeredIndex;
    this.pump();
  }

  /** One ReadReplyBatch from the tail: returns how many reads it answered, or why it is malformed. */
  receiveReply(frame: Uint8Array): number | string {
    const view = this.replyView;
    const malformed = view.open(frame);
    if (malformed !== null) return malformed;
    return this.answer(view);
  }

  /** A reply already opened (and so verified) by `view`, for this lane. */
  answer(view: ReadReplyView): number | string {
    if (view.firstRequestId + view.count - 1 >= this.futures.next) return `reply for read ${view.firstRequestId + view.count - 1}, never sent`;
    let answered = 0;
    for (let index = 0; index < view.count; index++) {
      const requestId = view.firstRequestId + index;
      // After a tail change a read may be answered twice (by the old tail's last replies and the
      // new tail): the first answer counts.
      if (requestId <= this.futures.settled) continue;
      if (view.statusAt(index) === ReadStatus.NotFound) {
        this.futures.resolveOne(requestId, undefined);
      } else {
        const result = view.resultAt(index);
        const start = view.payloadPosition + result.valueOffset();
        const value = Buffer.from(view.bytes.subarray(start, start + result.valueLength()));
        this.futures.resolveOne(requestId, { value, version: result.version() });
      }
      answered++;
    }
    this.readsAnswered += answered;
    return answered;
  }

  /** After a run of receiveReply(): forget answered batches. */
  afterReplies(): void {
    const settled = this.futures.settled;
    let nowMs = 0;
    while (this.answeredIndex < this.pushedIndex && this.unanswered[this.answeredIndex]!.lastRequestId <= settled) {
      const batch = this.unanswered[this.answeredIndex++]!;
      if (nowMs === 0) nowMs = this.clock.nowMs();
      this.latency.record((nowMs - batch.openedAtMs) / 1000, batch.count);
    }
    if (this.answeredIndex > 64 && this.answeredIndex * 2 > this.unanswered.length) {
      this.unanswered.splice(0, this.answeredIndex);
      this.pushedIndex -= this.answeredIndex;
      this.answeredIndex = 0;
    }
  }

  fail(error: DabbaError): void {
    if (this.failure === null) this.failure = error;
    this.unanswered.length = 0;
    this.answeredIndex = 0;
    this.pushedIndex = 0;
    this.futures.rejectAll(error);
  }
}
