/**
 * Applying a verified batch to a store: each write at its sequence number (the batch's first plus
 * its index). One function for a replica taking a batch from its predecessor and for a replica
 * replaying its log after a restart, so both build the same store from the same bytes.
 */
import type { Store } from '../store.js';
import { CONDITIONAL_FLAG, Op, type WriteBatchView } from '../wire/codec.js';

/**
 * A write that was not applied: its index in the batch, and the key's version then (0: absent) for
 * a failed condition, or -1 for a write the head's admission hook refused (Op.Rejected).
 */
export type ConditionFailed = (index: number, currentVersion: number) => void;

/**
 * Applies `batch`; returns the sequence number of its last delete (0 if it has none). A
 * conditional write applies only if its key's version (the seq of its last write; 0 when absent)
 * is the one it expects; otherwise it is skipped and `failed` hears of it. Every replica applies
 * the same batches to the same state in the same order, so all skip the same writes. A write the
 * head's admission hook refused is skipped by every replica alike.
 */
export function applyBatch(store: Store, batch: WriteBatchView, failed?: ConditionFailed): number {
  const bytes = batch.bytes;
  let seq = batch.firstSeq;
  let lastDeleteSeq = 0;
  let conditional = 0;
  for (let index = 0; index < batch.count; index++, seq++) {
    const record = batch.recordAt(index);
    const keyPosition = batch.keyPosition(record);
    const keyLength = record.keyLength();
    const op = record.op();
    if (op === Op.Rejected) {
      failed?.(index, -1);
      continue;
    }
    if (record.flags() === CONDITIONAL_FLAG) {
      const handle = store.find(bytes, keyPosition, keyLength);
      const currentVersion = handle < 0 ? 0 : store.version(handle);
      if (currentVersion !== batch.expectedVersionAt(conditional++)) {
        failed?.(index, currentVersion);
        continue;
      }
    }
    if (op === Op.Put) {
      store.put(bytes, keyPosition, keyLength, bytes, keyPosition + keyLength, record.valueLength(), seq);
    } else {
      store.delete(bytes, keyPosition, keyLength);
      lastDeleteSeq = seq;
    }
  }
  return lastDeleteSeq;
}
