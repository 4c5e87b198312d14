/**
 * The tail's side of a join. The joiner first says, with a Hello, what it already holds:
 * - nothing (a new replica), or a log this tail cannot continue: it gets the tail's state as
 *   Snapshot frames cut a few at a time from a fuzzy scan (./snapshot.ts), taking turns with the
 *   batches the tail applies meanwhile on the same link, so the joiner applies both in link order
 *   and converges on the tail's state;
 * - its own log, up to a batch this tail's log also holds (../log/catch-up.ts): it gets the
 *   batches after it, read back from this tail's log up to the seq the join started at, then an
 *   empty last Snapshot frame at that seq (the catch-up is complete), then the batches after it;
 * then, for the handoff, the tail stops taking batches until the joiner has acknowledged
 * everything it applied.
 *
 * The ChainNode owns one while it is a tail with a joiner; this holds only the join's own state.
 */
import type { CatchUp } from '../log/catch-up.js';
import { WriteBatchView } from '../wire/codec.js';
import { encodeCatchUpEnd, SnapshotWriter, type SnapshotSource } from './snapshot.js';

/** The most logged batches one Ready forwards during a catch-up. */
const CATCH_UP_BATCHES_PER_READY = 64;

export class JoinSource {
  private writer: SnapshotWriter | null = null;
  private catchUp: CatchUp | null = null;
  /** A catch-up's batches read and not yet reported sent (views of the log's bytes). */
  private readonly catchUpBatches: Uint8Array[] = [];
  private catchUpBatchBytes = 0;
  /**
   * Catch-up batches sent and not yet acknowledged by the joiner, oldest first. Like a
   * predecessor's in-flight list, they stay within `windowBytes`: what the joiner's host queues
   * for a sender is sized for that much (src/host/inbound-queue.ts).
   */
  private readonly unacked: Array<{ lastSeq: number; bytes: number }> = [];
  private unackedBytes = 0;
  private readonly view = new WriteBatchView();
  /** Where the catch-up ends (the tail's applied seq when it began), and the tail's epoch then. */
  private catchUpSeq = 0;
  private catchUpEpoch = 0;
  /** The writer's current frame (or the catch-up's end), kept until the runtime reports it sent. */
  private frame: Uint8Array | null = null;
  /** Whether the next frame goes before the batches pending now (else they go first). */
  private frameTurn = true;
  /** Until the joiner's Hello says what it holds, nothing goes to it. */
  awaitingOffer = true;
  /** The tail stopped taking batches so the joiner can catch up (see ChainNode.beginHandoff). */
  handingOff = false;

  constructor(
    readonly joinerId: number,
    private readonly frameBytesMax: number,
    private readonly windowBytes: number,
  ) {}

  /** The joiner holds nothing this tail can continue: it gets a snapshot of `source`. */
  startSnapshot(source: SnapshotSource): void {
    this.awaitingOffer = false;
    this.writer = new SnapshotWriter(source, this.frameBytesMax);
  }

  /** The joiner holds this tail's history up to a point: it gets `catchUp`'s batches, then an end at `throughSeq`. */
  startCatchUp(catchUp: CatchUp, epoch: number, throughSeq: number): void {
    this.awaitingOffer = false;
    this.catchUp = catchUp;
    this.catchUpSeq = throughSeq;
    this.catchUpEpoch = epoch;
  }

  /** Whether frames (or catch-up batches) remain to be sent. */
  get sending(): boolean {
    return this.writer !== null || this.catchUp !== null || this.frame !== null;
  }

  /** Whether logged batches go now instead of the in-flight list's (every one of them comes first). */
  get catchingUp(): boolean {
    return this.catchUp !== null;
  }

  /**
   * During a catch-up: the logged batches to forward now (none once all went, or while none is on
   * disk yet). The same ones come back until catchUpSent() says they went.
   */
  catchUpToSend(): Uint8Array[] {
    const catchUp = this.catchUp;
    if (catchUp === null) return [];
    while (this.catchUpBatches.length < CATCH_UP_BATCHES_PER_READY && this.unackedBytes + this.catchUpBatchBytes < this.windowBytes) {
      const batch = catchUp.next();
      if (batch === null) break;
      this.catchUpBatches.push(batch);
      this.catchUpBatchBytes += batch.length;
    }
    this.endCatchUpIfDone();
    return this.catchUpBatches;
  }

  /** How many of catchUpToSend()'s batches went; after the last is acknowledged, the catch-up's end frame is next. */
  catchUpSent(count: number): void {
    for (const batch of this.catchUpBatches.splice(0, count)) {
      this.view.open(batch);
      this.unacked.push({ lastSeq: this.view.firstSeq + this.view.count - 1, bytes: batch.length });
      this.unackedBytes += batch.length;
      this.catchUpBatchBytes -= batch.length;
    }
    this.endCatchUpIfDone();
  }

  /** The joiner has applied everything through `seq` (its cumulative ack). */
  acknowledged(seq: number): void {
    let drop = 0;
    while (drop < this.unacked.length && this.unacked[drop]!.lastSeq <= seq) this.unackedBytes -= this.unacked[drop++]!.bytes;
    if (drop > 0) this.unacked.splice(0, drop);
    this.endCatchUpIfDone();
  }

  /** The end goes once every batch of the catch-up is read, sent and acknowledged (then the in-flight list's batches follow). */
  private endCatchUpIfDone(): void {
    if (this.catchUpBatches.length > 0 || this.unacked.length > 0 || this.catchUp?.done !== true) return;
    this.catchUp = null;
    this.frame = encodeCatchUpEnd(this.catchUpEpoch, this.catchUpSeq);
  }

  /**
   * The frame to send now, before any batch, or null when it is the batches' turn (or every frame
   * is sent). With no batch waiting (`batchesWaiting` false) a frame goes whatever the turn: an idle
   * chain would otherwise send one frame per wake-up of its worker. The same frame comes back until
   * sent() says it went.
   */
  frameToSend(batchesWaiting: boolean): Uint8Array | null {
    if (this.writer !== null && this.frame === null && (this.frameTurn || !batchesWaiting)) this.frame = this.writer.next();
    return this.frame;
  }

  /**
   * What the runtime sent of a Ready: `frame` (the one frameToSend() gave, if any) went or not, and
   * whether every batch offered went. Nothing passes a frame, so every batch applied after a
   * frame's cut reaches the joiner after it; frames and batches take turns, so the joiner keeps
   * applying batches, which lets this tail trim them, and the transfer keeps moving.
   */
  sent(frame: Uint8Array | null, frameSent: boolean, allBatchesSent: boolean): void {
    if (frame !== null && frame === this.frame && frameSent) {
      this.frame = null;
      this.frameTurn = false;
      if (this.writer?.done === true) this.writer = null;
    } else if (allBatchesSent) {
      this.frameTurn = true;
    }
  }

  /** The join ended (the joiner failed, or became the tail): the store stops informing the scan. */
  close(): void {
    this.writer?.close();
    this.writer = null;
    this.catchUp = null;
    this.catchUpBatches.length = 0;
    this.catchUpBatchBytes = 0;
    this.unacked.length = 0;
    this.unackedBytes = 0;
    this.frame = null;
  }
}
