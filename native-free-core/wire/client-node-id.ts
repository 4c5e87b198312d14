/**
 * The node id a remote client proves in its link's handshake (inside the MAC):
 *
 *   client                       a new client: the host assigns it an id and a token
 *   client:<id>:<token>          a client resuming its id, with the token it was given
 *
 * A token is 16 bytes in base64url (22 characters); hosts check it (src/host/client-tokens.ts).
 */
const RESUME = /^client:([1-9][0-9]{0,9}):([A-Za-z0-9_-]{22})$/;
const CLIENT_ID_MAX = 0xffffffff;

export type ClientNodeId = { kind: 'new' } | { kind: 'resume'; clientId: number; token: string } | { kind: 'invalid' };

export const NEW_CLIENT_NODE_ID = 'client';

/** What a client's node id asks for. */
export function parseClientNodeId(nodeId: string): ClientNodeId {
  if (nodeId === NEW_CLIENT_NODE_ID) return { kind: 'new' };
  const match = RESUME.exec(nodeId);
  if (match === null) return { kind: 'invalid' };
  const clientId = Number(match[1]);
  if (clientId > CLIENT_ID_MAX) return { kind: 'invalid' };
  return { kind: 'resume', clientId, token: match[2]! };
}

export function clientNodeId(clientId: number, token: string): string {
  return `client:${clientId}:${token}`;
}
