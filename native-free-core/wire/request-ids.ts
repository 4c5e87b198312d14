/**
 * Rewrites the first request id of a ReadBatch or ReadReplyBatch in place. A host that serves many
 * remote clients from one replica gives each read batch an id range of its own on the way in (the
 * clients' ranges overlap), and puts the client's ids back on the replies on the way out, so a
 * reply can only ever reach the client whose reads it answers.
 */
import { ReadBatchView, ReadReplyView } from './codec.js';

// Verified in full before the rewrite: a frame whose first_request_id shares bytes with anything
// else a reader trusts is refused (the views check it), so rewriting the field changes nothing else.
const readsView = new ReadBatchView();
const repliesView = new ReadReplyView();

/** Returns the frame's previous first request id, or a reason string if it is not such a frame. */
export function restampFirstRequestId(bytes: Uint8Array, kind: 'reads' | 'replies', firstRequestId: number): number | string {
  const view = kind === 'reads' ? readsView : repliesView;
  const reason = view.open(bytes);
  if (reason !== null) return reason;
  new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setBigUint64(view.firstRequestIdPosition, BigInt(firstRequestId), true);
  return view.firstRequestId;
}
