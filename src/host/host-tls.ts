/**
 * A host's TLS (`dabba serve --tls-cert --tls-key --tls-ca`). One certificate serves every role of
 * the host: uWS presents it to whoever dials the host's port, and the host presents it when it
 * dials its predecessor and when its HTTP API's client dials the host itself. So it must allow
 * both serverAuth and clientAuth, and name the address the host advertises; both are checked here
 * at start-up rather than found out as refused links.
 */
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { readTlsFiles, type TlsCredentials, type TlsFiles, type TlsOptions } from '../transport/tls.js';

export interface HostTls {
  /** What uWS reads (it takes file names). */
  files: TlsFiles;
  /** The same files, checked and parsed: for links to predecessors and for admitting dialers. */
  credentials: TlsCredentials;
  /** connect()'s form, for the HTTP API's client. */
  clientOptions: TlsOptions;
}

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const ANY_EXTENDED_KEY_USAGE = '2.5.29.37.0';

/** The host's TLS, or null without; throws a coded error when the settings cannot work. */
export function resolveHostTls(files: TlsFiles | undefined, advertiseUrl: string | undefined): HostTls | null {
  if (advertiseUrl?.startsWith('wss://') === true && files === undefined) {
    throw new DabbaError(ErrorCode.invalidArgument, `the advertised URL ${advertiseUrl} is wss://, but this host serves no TLS (give it a certificate, a key and a CA)`);
  }
  if (advertiseUrl?.startsWith('ws://') === true && files !== undefined) {
    throw new DabbaError(ErrorCode.invalidArgument, `this host serves TLS, so the URL it advertises must be wss://, got ${advertiseUrl}`);
  }
  if (files === undefined) return null;
  const credentials = readTlsFiles(files);
  const certificate = credentials.certificate!;
  // Node gives undefined for a certificate without extendedKeyUsage, which allows every use.
  const usages = certificate.keyUsage as string[] | undefined;
  for (const [usage, why] of [[SERVER_AUTH, 'serverAuth: it serves the port'], [CLIENT_AUTH, 'clientAuth: the host dials other hosts with it']]) {
    if (usages !== undefined && !usages.includes(usage!) && !usages.includes(ANY_EXTENDED_KEY_USAGE)) {
      throw new DabbaError(ErrorCode.invalidArgument, `the host certificate ${files.certFile} must allow ${why} (extendedKeyUsage = serverAuth, clientAuth)`);
    }
  }
  return { files, credentials, clientOptions: { ca: credentials.ca, cert: credentials.cert!, key: credentials.key! } };
}

/**
 * Throws unless the host certificate names the address in `url` (an IP subjectAltName for an IP
 * address, a DNS name otherwise): every dialer checks it, so a host it does not name is unreachable.
 */
export function checkCertificateNames(tls: HostTls, url: string): void {
  const host = new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
  const certificate = tls.credentials.certificate!;
  const named = /^[\d.]+$/.test(host) || host.includes(':') ? certificate.checkIP(host) !== undefined : certificate.checkHost(host) !== undefined;
  if (!named) {
    throw new DabbaError(ErrorCode.invalidArgument, `the host certificate ${tls.files.certFile} does not name ${host}, the address this host advertises (${url}): add it as a subjectAltName, or --advertise a name it holds`);
  }
}
