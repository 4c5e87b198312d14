/**
 * Where a client pipeline sends its frames: the head's (or tail's) ring in one process, a socket to
 * a remote host otherwise. SpscRing and Doorbell satisfy these as they are.
 */
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
