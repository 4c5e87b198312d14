/**
 * Client ids bound to their holders. A host hands a new client its id (unique in the cluster) with
 * a token, an HMAC of the id under a key derived from the peer secret, which only hosts hold; a
 * client that reconnects, to any host, names its id together with the token. Knowing another
 * client's id is then not enough to take it over (and receive its acks, or burn its sequence
 * numbers); holding the client secret is not enough either.
 * The node ids that carry them are in native-free-core/wire/client-node-id.ts.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

const TOKEN_LABEL = 'dabba client id token v1';
/** 128 bits of the HMAC: far beyond guessing, short enough for a node id. */
const TOKEN_BYTES = 16;
export class ClientTokens {
  private readonly key: Buffer;

  constructor(peerSecret: Buffer) {
    this.key = createHmac('sha256', peerSecret).update(TOKEN_LABEL).digest();
  }

  issue(clientId: number): string {
    return this.mac(clientId).toString('base64url');
  }

  /** Whether `token` is the one issued for `clientId` (constant time). */
  verify(clientId: number, token: string): boolean {
    const given = Buffer.from(token, 'base64url');
    const expected = this.mac(clientId);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  private mac(clientId: number): Buffer {
    return createHmac('sha256', this.key).update(String(clientId)).digest().subarray(0, TOKEN_BYTES);
  }
}
