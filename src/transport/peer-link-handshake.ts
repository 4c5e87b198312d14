/**
 * The mutual challenge-response that opens a peer link, before any record is read.
 *
 *   server -> client  challenge  MAGIC | serverNonce(32)
 *   client -> server  response   MAGIC | HMAC(secret, CLIENT_LABEL | serverNonce | clientNonce | clientNodeId) | clientNonce(32)
 *                                      | signatureLength(1) | signature | clientNodeId
 *                     or, with a certificate proof (./certificate-proof.ts), under its own magic:
 *                                  MAGIC_CERTIFIED | HMAC(...) | clientNonce(32) | signatureLength(1) | signature
 *                                      | certificateLength(2) | certificate (DER) | proofLength(2) | proof | clientNodeId
 *   server -> client  proof      MAGIC | HMAC(secret, SERVER_LABEL | clientNonce | serverNonce | serverNodeId)
 *                                      | signatureLength(1) | signature | serverNodeId
 *
 * Fresh nonces on both sides make a recorded answer useless on another connection; the role labels
 * keep a client's MAC from ever being replayed as a server's (and the reverse); the node ids are
 * inside the MACs so a peer cannot claim another node's name among those who hold the secret.
 *
 * The MAC proves the peer holds the route's secret (the peer secret between hosts, the client secret
 * on /client). Between hosts that is not enough to tell hosts apart, so each side may also sign the
 * same transcript with its own Ed25519 key (signatureLength 64), whose public key its host
 * registered in etcd: a link then proves which host, and so which replica, is at the other end.
 *
 * Over TLS the dialer also proves a certificate from the accepting side's CA (the certificate
 * proof), which uWS cannot require of a TLS client itself. A response without one keeps the
 * original magic and layout, so plain links are unchanged.
 */
import { createHmac, randomBytes, sign, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { CERTIFICATE_BYTES_MAX, CERTIFICATE_SIGNATURE_BYTES_MAX, type CertificateProof } from './certificate-proof.js';

export const NONCE_BYTES = 32;
const MAC_BYTES = 32;
export const NODE_ID_BYTES_MAX = 255;
/** Shortest secret accepted: an HMAC key shorter than this is guessable. */
export const SECRET_BYTES_MIN = 16;

const MAGIC_CHALLENGE = Buffer.from('DBL2C', 'latin1');
const MAGIC_RESPONSE = Buffer.from('DBL2R', 'latin1');
const MAGIC_RESPONSE_CERTIFIED = Buffer.from('DBL2X', 'latin1');
const MAGIC_PROOF = Buffer.from('DBL2P', 'latin1');
const MAGIC_BYTES = 5;
const CLIENT_LABEL = Buffer.from('dabba peer link v2 client', 'latin1');
const SERVER_LABEL = Buffer.from('dabba peer link v2 server', 'latin1');
const CLIENT_SIGNATURE_LABEL = Buffer.from('dabba peer link v2 client identity', 'latin1');
const SERVER_SIGNATURE_LABEL = Buffer.from('dabba peer link v2 server identity', 'latin1');
/** An Ed25519 signature. */
export const SIGNATURE_BYTES = 64;

/** Largest handshake message; the receive limit must allow it even when records are smaller. */
export const HANDSHAKE_BYTES_MAX =
  MAGIC_BYTES + MAC_BYTES + NONCE_BYTES + 1 + SIGNATURE_BYTES + 2 + CERTIFICATE_BYTES_MAX + 2 + CERTIFICATE_SIGNATURE_BYTES_MAX + NODE_ID_BYTES_MAX;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

/** Throws a DabbaError for a node id that cannot travel in a handshake. */
export function checkNodeId(nodeId: string): void {
  const length = typeof nodeId === 'string' ? Buffer.byteLength(nodeId, 'utf8') : 0;
  if (length === 0 || length > NODE_ID_BYTES_MAX) {
    throw new DabbaError(ErrorCode.invalidArgument, `nodeId must be a string of 1 to ${NODE_ID_BYTES_MAX} UTF-8 bytes`);
  }
}

export function checkSecret(secret: Buffer): void {
  if (!Buffer.isBuffer(secret) || secret.length < SECRET_BYTES_MIN) {
    throw new DabbaError(ErrorCode.invalidArgument, `secret must be a Buffer of at least ${SECRET_BYTES_MIN} bytes`);
  }
}

function mac(secret: Buffer, label: Buffer, firstNonce: Buffer, secondNonce: Buffer, nodeId: string): Buffer {
  return createHmac('sha256', secret).update(label).update(firstNonce).update(secondNonce).update(nodeId, 'utf8').digest();
}

export function clientMac(secret: Buffer, serverNonce: Buffer, clientNonce: Buffer, clientNodeId: string): Buffer {
  return mac(secret, CLIENT_LABEL, serverNonce, clientNonce, clientNodeId);
}

export function serverMac(secret: Buffer, clientNonce: Buffer, serverNonce: Buffer, serverNodeId: string): Buffer {
  return mac(secret, SERVER_LABEL, clientNonce, serverNonce, serverNodeId);
}

/** Constant-time comparison (timingSafeEqual needs equal lengths, which decoding guarantees). */
export function macMatches(expected: Buffer, received: Buffer): boolean {
  return expected.length === received.length && timingSafeEqual(expected, received);
}

/** What a side signs with its identity key: the same transcript as its MAC, under its own label. */
export function identityTranscript(role: 'client' | 'server', firstNonce: Buffer, secondNonce: Buffer, nodeId: string): Buffer {
  const label = role === 'client' ? CLIENT_SIGNATURE_LABEL : SERVER_SIGNATURE_LABEL;
  return Buffer.concat([label, firstNonce, secondNonce, Buffer.from(nodeId, 'utf8')]);
}

/** Signs a transcript with an Ed25519 private key. */
export function signIdentity(privateKey: KeyObject, transcript: Buffer): Buffer {
  return sign(null, transcript, privateKey);
}

/** Whether `signature` is `publicKey`'s Ed25519 signature of `transcript` (never throws). */
export function identityMatches(publicKey: KeyObject, transcript: Buffer, signature: Buffer | null): boolean {
  if (signature === null || signature.length !== SIGNATURE_BYTES) return false;
  try {
    return verify(null, transcript, publicKey, signature);
  } catch {
    return false;
  }
}

function startsWith(bytes: Uint8Array, magic: Buffer): boolean {
  return bytes.length >= magic.length && magic.equals(bytes.subarray(0, magic.length));
}

function decodeNodeId(bytes: Uint8Array): string | null {
  if (bytes.length === 0 || bytes.length > NODE_ID_BYTES_MAX) return null;
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return null;
  }
}

export function encodeChallenge(serverNonce: Buffer): Buffer {
  return Buffer.concat([MAGIC_CHALLENGE, serverNonce]);
}

/** The server's nonce, or a reason the message is not a challenge. */
export function decodeChallenge(bytes: Uint8Array): Buffer | string {
  if (!startsWith(bytes, MAGIC_CHALLENGE) || bytes.length !== MAGIC_BYTES + NONCE_BYTES) return 'expected a handshake challenge';
  return Buffer.from(bytes.subarray(MAGIC_BYTES));
}

/** A signature field: its length in one byte (0: none, or SIGNATURE_BYTES), then its bytes. */
function encodeSignature(signature: Buffer | null): Buffer {
  if (signature === null) return Buffer.from([0]);
  return Buffer.concat([Buffer.from([signature.length]), signature]);
}

/** Reads a signature field at `offset`: the signature (or null) and where the node id starts, or a reason. */
function decodeSignature(bytes: Uint8Array, offset: number): { signature: Buffer | null; end: number } | string {
  if (bytes.length <= offset) return 'handshake message ends before its signature field';
  const length = bytes[offset]!;
  if (length !== 0 && length !== SIGNATURE_BYTES) return `handshake signature of ${length} bytes`;
  const end = offset + 1 + length;
  if (bytes.length <= end) return 'handshake message ends before its node id';
  return { signature: length === 0 ? null : Buffer.from(bytes.subarray(offset + 1, end)), end };
}

export function encodeResponse(clientMacBytes: Buffer, clientNonce: Buffer, signature: Buffer | null, clientNodeId: string, proof: CertificateProof | null = null): Buffer {
  const nodeId = Buffer.from(clientNodeId, 'utf8');
  if (proof === null) return Buffer.concat([MAGIC_RESPONSE, clientMacBytes, clientNonce, encodeSignature(signature), nodeId]);
  if (proof.certificate.length > CERTIFICATE_BYTES_MAX || proof.signature.length > CERTIFICATE_SIGNATURE_BYTES_MAX) {
    throw new DabbaError(ErrorCode.invalidArgument, `a certificate proof carries at most ${CERTIFICATE_BYTES_MAX} bytes of certificate and ${CERTIFICATE_SIGNATURE_BYTES_MAX} of signature`);
  }
  return Buffer.concat([MAGIC_RESPONSE_CERTIFIED, clientMacBytes, clientNonce, encodeSignature(signature), lengthPrefixed(proof.certificate), lengthPrefixed(proof.signature), nodeId]);
}

export interface HandshakeResponse {
  mac: Buffer;
  clientNonce: Buffer;
  signature: Buffer | null;
  /** The dialer's certificate proof; null in a response without one. */
  certificate: CertificateProof | null;
  nodeId: string;
}

export function decodeResponse(bytes: Uint8Array): HandshakeResponse | string {
  const fixed = MAGIC_BYTES + MAC_BYTES + NONCE_BYTES;
  const certified = startsWith(bytes, MAGIC_RESPONSE_CERTIFIED);
  if ((!certified && !startsWith(bytes, MAGIC_RESPONSE)) || bytes.length <= fixed) return 'expected a handshake response';
  const signature = decodeSignature(bytes, fixed);
  if (typeof signature === 'string') return signature;
  let end = signature.end;
  let certificate: CertificateProof | null = null;
  if (certified) {
    const der = decodeLengthPrefixed(bytes, end, CERTIFICATE_BYTES_MAX, 'certificate');
    if (typeof der === 'string') return der;
    const proof = decodeLengthPrefixed(bytes, der.end, CERTIFICATE_SIGNATURE_BYTES_MAX, 'certificate signature');
    if (typeof proof === 'string') return proof;
    certificate = { certificate: der.field, signature: proof.field };
    end = proof.end;
  }
  const nodeId = decodeNodeId(bytes.subarray(end));
  if (nodeId === null) return 'handshake response carries an invalid node id';
  return {
    mac: Buffer.from(bytes.subarray(MAGIC_BYTES, MAGIC_BYTES + MAC_BYTES)),
    clientNonce: Buffer.from(bytes.subarray(MAGIC_BYTES + MAC_BYTES, fixed)),
    signature: signature.signature,
    certificate,
    nodeId,
  };
}

/** A field of up to 65535 bytes behind its length (2 bytes, big-endian). */
function lengthPrefixed(field: Buffer): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(field.length);
  return Buffer.concat([length, field]);
}

/** Reads a lengthPrefixed() field of 1 to `bytesMax` bytes at `offset`: the field and where it ends, or a reason. */
function decodeLengthPrefixed(bytes: Uint8Array, offset: number, bytesMax: number, what: string): { field: Buffer; end: number } | string {
  if (bytes.length < offset + 2) return `handshake message ends before its ${what}`;
  const length = (bytes[offset]! << 8) | bytes[offset + 1]!;
  if (length === 0 || length > bytesMax) return `handshake ${what} of ${length} bytes (1 to ${bytesMax})`;
  const end = offset + 2 + length;
  if (bytes.length <= end) return `handshake message ends before its node id`;
  return { field: Buffer.from(bytes.subarray(offset + 2, end)), end };
}

export function encodeProof(serverMacBytes: Buffer, signature: Buffer | null, serverNodeId: string): Buffer {
  return Buffer.concat([MAGIC_PROOF, serverMacBytes, encodeSignature(signature), Buffer.from(serverNodeId, 'utf8')]);
}

export interface HandshakeProof {
  mac: Buffer;
  signature: Buffer | null;
  nodeId: string;
}

export function decodeProof(bytes: Uint8Array): HandshakeProof | string {
  const fixed = MAGIC_BYTES + MAC_BYTES;
  if (!startsWith(bytes, MAGIC_PROOF) || bytes.length <= fixed) return 'expected a handshake proof';
  const signature = decodeSignature(bytes, fixed);
  if (typeof signature === 'string') return signature;
  const nodeId = decodeNodeId(bytes.subarray(signature.end));
  if (nodeId === null) return 'handshake proof carries an invalid node id';
  return { mac: Buffer.from(bytes.subarray(MAGIC_BYTES, fixed)), signature: signature.signature, nodeId };
}
