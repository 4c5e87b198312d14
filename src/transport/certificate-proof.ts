/**
 * The certificate proof: inside the peer-link handshake, the dialing side shows its certificate
 * and signs the handshake's nonces with that certificate's private key; an accepting side with a
 * CA admits only a dialer whose certificate that CA issued.
 *
 * Why it exists: uWebSockets.js (v20.30, BoringSSL) given `ca_file_name` asks TLS clients for a
 * certificate and refuses one that does not verify against the CA, but it accepts a client that
 * presents none, and it gives the application no way to tell the two apart (test/tls.test.ts pins
 * both). TLS alone therefore cannot keep out a dialer without a certificate; this proof, carried by
 * the handshake every link already runs, does. HTTP requests have no handshake of ours and are
 * not covered: they rely on the HTTP token.
 *
 * The signature covers both nonces and the dialer's node id under its own label, so it is useless
 * on any other connection and cannot pass for the identity signature; the dialer verified the
 * host's TLS certificate, so no one in between can relay it either.
 */
import { verify, sign, X509Certificate, type KeyObject } from 'node:crypto';

/** Largest DER certificate a dialer may show (RSA-4096 certificates are ~1.5 KiB). */
export const CERTIFICATE_BYTES_MAX = 8192;
/** Largest signature (RSA-8192: 1024 bytes; ECDSA and Ed25519 are far smaller). */
export const CERTIFICATE_SIGNATURE_BYTES_MAX = 1024;

const LABEL = Buffer.from('dabba peer link v2 client certificate', 'latin1');
/** extendedKeyUsage values that allow a certificate to authenticate a client. */
const CLIENT_AUTH_USAGES = ['1.3.6.1.5.5.7.3.2', '2.5.29.37.0'];

export interface CertificateProof {
  /** The dialer's certificate, DER. */
  certificate: Buffer;
  /** Its key's signature of certificateTranscript(). */
  signature: Buffer;
}

export function certificateTranscript(serverNonce: Buffer, clientNonce: Buffer, nodeId: string): Buffer {
  return Buffer.concat([LABEL, serverNonce, clientNonce, Buffer.from(nodeId, 'utf8')]);
}

export function proveCertificate(certificate: X509Certificate, privateKey: KeyObject, transcript: Buffer): CertificateProof {
  return { certificate: certificate.raw, signature: sign(digestFor(privateKey), transcript, privateKey) };
}

/**
 * Null when `proof` shows a certificate issued by one of `authorities`, valid at `nowMs` (Unix ms),
 * usable for client authentication, whose key signed `transcript`; otherwise why not. Never throws.
 */
export function checkCertificateProof(authorities: readonly X509Certificate[], proof: CertificateProof | null, transcript: Buffer, nowMs: number): string | null {
  if (proof === null) return 'no client certificate: this host admits only dialers with a certificate from its CA';
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(proof.certificate);
  } catch {
    return 'the client certificate does not parse';
  }
  const subject = leaf.subject.replace(/\n/g, ', ');
  const issuer = authorities.find((authority) => leaf.checkIssued(authority) && leaf.verify(authority.publicKey));
  if (issuer === undefined) return `the client certificate (${subject}) is not issued by this host's CA`;
  for (const certificate of [leaf, issuer]) {
    if (nowMs < Date.parse(certificate.validFrom) || nowMs > Date.parse(certificate.validTo)) {
      return `the certificate ${certificate.subject.replace(/\n/g, ', ')} is not valid now (valid from ${certificate.validFrom} to ${certificate.validTo})`;
    }
  }
  // Node gives undefined when the certificate has no extendedKeyUsage, which allows any use.
  const usages = leaf.keyUsage as string[] | undefined;
  if (usages !== undefined && !usages.some((usage) => CLIENT_AUTH_USAGES.includes(usage))) {
    return `the client certificate (${subject}) is not for client authentication (its extendedKeyUsage lacks clientAuth)`;
  }
  try {
    if (verify(digestFor(leaf.publicKey), transcript, leaf.publicKey, proof.signature)) return null;
  } catch {
    // A malformed signature: refused below.
  }
  return `the client certificate's key (${subject}) did not sign this handshake`;
}

/** Ed25519 and Ed448 sign the message itself; RSA and ECDSA sign its SHA-256. */
function digestFor(key: KeyObject): string | null {
  return key.asymmetricKeyType === 'ed25519' || key.asymmetricKeyType === 'ed448' ? null : 'sha256';
}
