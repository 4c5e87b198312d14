/**
 * Binary links between hosts that carry opaque ring records (FlatBuffers frames, forwarded byte
 * for byte). The accepting side is uWebSockets.js, the connecting side `ws`. Both ends prove they
 * hold the cluster secret before any record is read (./peer-link-handshake.ts); each WebSocket
 * binary message is then one record, validated before it is handed on; trySend() refuses above a
 * high-water mark of buffered bytes and onWritable says when to retry.
 *
 *   const server = await listenPeerLinks({ port: 0, secret, nodeId: 'b', maxRecordBytes, validate,
 *     onLink: (link) => ({ onRecord: (bytes) => ring.tryWrite(bytes) }) });
 *   const link = await connectPeerLink({ url: `ws://127.0.0.1:${server.port}/peer`, secret,
 *     nodeId: 'a', maxRecordBytes, validate, onRecord, onWritable: pump, onClose });
 */
import { FrameEnvelope, reasonIfMalformed } from '../../native-free-core/wire/codec.js';

export { LinkCloseCode, closeReason } from './peer-link-endpoint.js';
export type { PeerLink, PeerLinkHandlers, PeerLinkLogEntry, PeerLinkOptions } from './peer-link-endpoint.js';
export { listenPeerLinks } from './peer-link-server.js';
export type { PeerLinkListenOptions, PeerLinkServer } from './peer-link-server.js';
export { connectPeerLink } from './peer-link-client.js';
export type { PeerLinkConnectOptions } from './peer-link-client.js';

/**
 * A `validate` for links that carry dabba frames: the Frame envelope must verify. The chain node
 * behind the link verifies the message itself when it opens it; this only keeps garbage out.
 */
export function frameEnvelopeValidator(): (bytes: Uint8Array) => string | null {
  const envelope = new FrameEnvelope();
  return (bytes) => reasonIfMalformed(() => envelope.open(bytes));
}
