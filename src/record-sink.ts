/**
 * Where a client pipeline sends its frames: the head's (or tail's) ring in one process, a socket to
 * a remote host otherwise. Doorbell satisfies Wakeable as it is; a ring shared by several chains
 * takes one chain's frames through a TaggedRingSink.
 */
import type { SpscRing } from '../native-free-core/ring.js';
import { canWriteTagged, tryWriteTagged } from '../native-free-core/wire/chain-tag.js';

export interface RecordSink {
  /** Stages one record; false if there is no room now (call markProducerWaiting and retry later). */
  tryWrite(bytes: Uint8Array): boolean;
  canWrite(length: number): boolean;
  /** Asks to be woken when room frees up. */
  markProducerWaiting(): void;
  /** Makes staged records visible; true if the consumer must be woken. */
  publish(): boolean;
}

/** Wakes the consumer of a RecordSink. */
export interface Wakeable {
  ring(): void;
}

/** One chain's frames into a ring that several chains share: each record carries the chain's tag. */
export class TaggedRingSink implements RecordSink {
  constructor(
    private readonly ring: SpscRing,
    private readonly chain: number,
  ) {}

  tryWrite(bytes: Uint8Array): boolean {
    return tryWriteTagged(this.ring, this.chain, bytes);
  }

  canWrite(length: number): boolean {
    return canWriteTagged(this.ring, length);
  }

  markProducerWaiting(): void {
    this.ring.markProducerWaiting();
  }

  publish(): boolean {
    return this.ring.publish();
  }
}
