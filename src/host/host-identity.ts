/**
 * A host's identity on peer links: an Ed25519 key pair made when the process starts. The private
 * key signs every peer-link handshake this host takes part in and never leaves the process; the
 * public key is registered in etcd with the host's entry (HostInfo.publicKey), where its neighbours
 * look it up. A link thus proves which host, and so which replica, is at the other end: holding the
 * peer secret alone is not enough to pose as another replica.
 */
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';

export class HostIdentity {
  readonly privateKey: KeyObject;
  /** The 32-byte public key in base64url, as registered in etcd. */
  readonly publicKeyText: string;

  constructor() {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    this.privateKey = privateKey;
    this.publicKeyText = (publicKey.export({ format: 'jwk' }) as { x: string }).x;
  }
}

const parsedKeys = new Map<string, KeyObject>();
const PARSED_KEYS_MAX = 1024;

/** The public key registered as `text` (base64url of 32 bytes), parsed once; null if malformed. */
export function publicKeyFromText(text: string): KeyObject | null {
  let key = parsedKeys.get(text);
  if (key !== undefined) return key;
  try {
    key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: text }, format: 'jwk' });
  } catch {
    return null;
  }
  if (parsedKeys.size >= PARSED_KEYS_MAX) parsedKeys.delete(parsedKeys.keys().next().value!);
  parsedKeys.set(text, key);
  return key;
}
