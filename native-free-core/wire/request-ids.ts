/**
 * Rewrites the first request id of a ReadBatch or ReadReplyBatch in place. A host that serves many
 * remote clients from one replica gives each read batch an id range of its own on the way in (the
 * clients' ranges overlap), and puts the client's ids back on the replies on the way out, so a
 * reply can only ever reach the client whose reads it answers.
 */
import { Message } from './generated/schema_generated.js';
import { FrameEnvelope, openMessage, reasonIfMalformed } from './codec.js';
import { TableLocation, readUint64AsNumber, requiredFieldPosition } from './verify.js';

const FIRST_REQUEST_ID_FIELD = 1;

/** Returns the frame's previous first request id, or a reason string if it is not such a frame. */
export function restampFirstRequestId(bytes: Uint8Array, kind: 'reads' | 'replies', firstRequestId: number): number | string {
  let previous = 0;
  const reason = reasonIfMalformed(() => {
    const table = new TableLocation();
    const message = kind === 'reads' ? Message.ReadBatch : Message.ReadReplyBatch;
    openMessage(new FrameEnvelope(), bytes, message, kind === 'reads' ? 'ReadBatch' : 'ReadReplyBatch', table);
    const position = requiredFieldPosition(bytes, table, FIRST_REQUEST_ID_FIELD, 8, 'first_request_id');
    previous = readUint64AsNumber(bytes, position);
    new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setBigUint64(position, BigInt(firstRequestId), true);
  });
  return reason ?? previous;
}
