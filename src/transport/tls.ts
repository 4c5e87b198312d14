/**
 * TLS material for links and clients: PEM certificates and keys, checked once at the boundary and
 * kept in the forms their users need (PEM bytes for `ws` and uWS, parsed certificates and a key
 * object for the certificate proof of ./certificate-proof.ts).
 *
 * One set serves both ends of a link. Dialing, `ca` is what the host's certificate must chain to,
 * and `cert`/`key` are presented (and proven in the handshake). Accepting, `ca` names who may dial:
 * a dialer must prove a certificate issued by one of its certificates.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { argumentTypeError } from '../../native-free-core/errors.js';

/** PEM text or bytes, as `connect({ tls })` takes them. */
export interface TlsOptions {
  /** The CA certificate(s) hosts' certificates are issued by (one PEM, or several concatenated). */
  ca: string | Buffer;
  /** This side's certificate (PEM); with `key`, or neither. */
  cert?: string | Buffer;
  /** The private key of `cert` (PEM, unencrypted). */
  key?: string | Buffer;
}

/** The files a host serves TLS from (uWS reads files itself, so a host keeps their names). */
export interface TlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface TlsCredentials {
  readonly ca: Buffer;
  readonly cert: Buffer | null;
  readonly key: Buffer | null;
  /** Every certificate in `ca`. */
  readonly authorities: readonly X509Certificate[];
  /** The first certificate in `cert` (the leaf) and its private key; null without `cert`. */
  readonly certificate: X509Certificate | null;
  readonly privateKey: KeyObject | null;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Checks `connect()`-style TLS options: coded TypeErrors for anything missing, malformed or
 * mismatched, so a mistake shows up here and not as a failed handshake later.
 */
export function tlsCredentials(options: unknown, name = 'tls'): TlsCredentials {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw argumentTypeError(`${name} must be an object { ca, cert?, key? } of PEM strings or Buffers`);
  const { ca, cert, key } = options as Partial<Record<'ca' | 'cert' | 'key', unknown>>;
  return credentialsFrom({ ca, cert, key }, { ca: `${name}.ca`, cert: `${name}.cert`, key: `${name}.key` });
}

/**
 * Reads TLS files and checks them as tlsCredentials() does; errors name the file. `what` names
 * the set in messages ("the etcd CA file ..."). A host's set has all three; etcd's may lack a
 * certificate.
 */
export function readTlsFiles(files: { caFile: string; certFile?: string; keyFile?: string }, what = 'TLS'): TlsCredentials {
  const names = { ca: `the ${what} CA file ${files.caFile}`, cert: `the ${what} certificate file ${files.certFile}`, key: `the ${what} key file ${files.keyFile}` };
  const read = (path: string | undefined, name: string): Buffer | undefined => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (error) {
      throw Object.assign(argumentTypeError(`cannot read ${name}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`), { cause: error });
    }
  };
  return credentialsFrom({ ca: read(files.caFile, names.ca), cert: read(files.certFile, names.cert), key: read(files.keyFile, names.key) }, names);
}

function credentialsFrom(given: Record<'ca' | 'cert' | 'key', unknown>, names: Record<'ca' | 'cert' | 'key', string>): TlsCredentials {
  const ca = pemBytes(given.ca, names.ca);
  if (ca === null) throw argumentTypeError(`${names.ca} is required: the CA certificate the hosts' certificates chain to`);
  const cert = pemBytes(given.cert, names.cert);
  const key = pemBytes(given.key, names.key);
  if ((cert === null) !== (key === null)) throw argumentTypeError(`${names.cert} and ${names.key} go together: give both or neither`);
  const authorities = certificatesIn(ca, names.ca);
  for (const authority of authorities) {
    if (!authority.ca) throw argumentTypeError(`${names.ca} holds a certificate that is not a CA (${authority.subject.replace(/\n/g, ', ')})`);
  }
  if (cert === null || key === null) return { ca, cert: null, key: null, authorities, certificate: null, privateKey: null };
  const certificate = certificatesIn(cert, names.cert)[0]!;
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw Object.assign(argumentTypeError(`${names.key} is not an unencrypted PEM private key: ${(error as Error).message}`), { cause: error });
  }
  if (!certificate.checkPrivateKey(privateKey)) throw argumentTypeError(`${names.key} is not the private key of ${names.cert}`);
  return { ca, cert, key, authorities, certificate, privateKey };
}

/** What `ws` (and node:tls) take to dial: the CA to verify the host, and our certificate if any. */
export function dialOptions(credentials: TlsCredentials): { ca: Buffer; cert?: Buffer; key?: Buffer } {
  return { ca: credentials.ca, ...(credentials.cert === null || credentials.key === null ? {} : { cert: credentials.cert, key: credentials.key }) };
}

function pemBytes(value: unknown, name: string): Buffer | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return Buffer.from(value);
  throw argumentTypeError(`${name} must be a PEM string or a Buffer, got ${typeof value}`);
}

function certificatesIn(pem: Buffer, name: string): X509Certificate[] {
  const blocks = pem.toString('utf8').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw argumentTypeError(`${name} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return blocks.map((block) => {
    try {
      return new X509Certificate(block);
    } catch (error) {
      throw Object.assign(argumentTypeError(`${name} holds a certificate that does not parse: ${(error as Error).message}`), { cause: error });
    }
  });
}
