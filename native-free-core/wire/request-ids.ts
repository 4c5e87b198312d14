/**
 * Rewrites the first request id of a ReadBatch or ReadReplyBatch in place. A host that serves many
 * remote clients from one replica gives each read batch an id range of its own on the way in (the
 * clients' ranges overlap), and puts the client's ids back on the replies on the way out, so a
 * reply can only ever reach the client whose reads it answers.
 */
import { ReadBatchView, ReadReplyView } from './codec.js';

const readsView = new ReadBatchView();
const repliesView = new ReadReplyView();

/** Returns the frame's previous first request id, or a reason string if it is not such a frame. */
export function restampFirstRequestId(bytes: Uint8Array, kind: 'reads' | 'replies', firstRequestId: number): number | string {
  const view = kind === 'reads' ? readsView : repliesView;
  const reason = view.open(bytes);
  if (reason !== null) return reason;
  const previous = view.firstRequestId;
  rewriteFirstRequestId(bytes, view, firstRequestId);
  return previous;
}

/**
 * The rewrite alone, for a caller whose view has just opened `bytes` (and so verified them in
 * full): a frame whose first_request_id shares bytes with anything else a reader trusts is refused
 * by the views, so rewriting the field changes nothing else.
 */
export function rewriteFirstRequestId(bytes: Uint8Array, openedView: ReadBatchView | ReadReplyView, firstRequestId: number): void {
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setBigUint64(openedView.firstRequestIdPosition, BigInt(firstRequestId), true);
}
