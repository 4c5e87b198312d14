/**
 * Applying a verified batch to a store: each write at its sequence number (the batch's first plus
 * its index). One function for a replica taking a batch from its predecessor and for a replica
 * replaying its log after a restart, so both build the same store from the same bytes.
 */
import type { Store } from '../store.js';
import { Op, type WriteBatchView } from '../wire/codec.js';

/** Applies `batch`; returns the sequence number of its last delete (0 if it has none). */
export function applyBatch(store: Store, batch: WriteBatchView): number {
  const bytes = batch.bytes;
  let seq = batch.firstSeq;
  let lastDeleteSeq = 0;
  for (let index = 0; index < batch.count; index++, seq++) {
    const record = batch.recordAt(index);
    const keyPosition = batch.keyPosition(record);
    const keyLength = record.keyLength();
    if (record.op() === Op.Put) {
      store.put(bytes, keyPosition, keyLength, bytes, keyPosition + keyLength, record.valueLength(), seq);
    } else {
      store.delete(bytes, keyPosition, keyLength);
      lastDeleteSeq = seq;
    }
  }
  return lastDeleteSeq;
}
