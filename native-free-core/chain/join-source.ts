/**
 * The tail's side of a join: the replica joining behind it gets the tail's state as Snapshot
 * frames cut a few at a time from a fuzzy scan (./snapshot.ts), taking turns with the batches the
 * tail applies meanwhile on the same link, so the joiner applies both in link order and converges
 * on the tail's state; then, for the handoff, the tail stops taking batches until the joiner has
 * acknowledged everything it applied.
 *
 * The ChainNode owns one while it is a tail with a joiner; this holds only the join's own state.
 */
import { SnapshotWriter, type SnapshotSource } from './snapshot.js';

export class JoinSource {
  private writer: SnapshotWriter | null;
  /** The writer's current frame, kept until the runtime reports it sent. */
  private frame: Uint8Array | null = null;
  /** Whether the next frame goes before the batches pending now (else they go first). */
  private frameTurn = true;
  /** The tail stopped taking batches so the joiner can catch up (see ChainNode.beginHandoff). */
  handingOff = false;

  constructor(
    readonly joinerId: number,
    source: SnapshotSource,
    frameBytesMax: number,
  ) {
    this.writer = new SnapshotWriter(source, frameBytesMax);
  }

  /** Whether frames remain to be sent. */
  get sending(): boolean {
    return this.writer !== null;
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
      if (this.writer!.done) this.writer = null;
    } else if (allBatchesSent) {
      this.frameTurn = true;
    }
  }

  /** The join ended (the joiner failed, or became the tail): the store stops informing the scan. */
  close(): void {
    this.writer?.close();
    this.writer = null;
    this.frame = null;
  }
}
