/**
 * How `dabba serve` and `dabba status` reach etcd: its endpoints, TLS and authentication. Each
 * setting is a flag, a DABBA_* environment variable, or (serve only) a key of the --config file:
 *
 *   flag          environment          config file   meaning
 *   --etcd        DABBA_ETCD           etcd          client URLs, comma-separated, all http:// or all https://
 *   --etcd-ca     DABBA_ETCD_CA        etcdCa        CA file for https:// endpoints (else the system's CAs)
 *   --etcd-cert   DABBA_ETCD_CERT      etcdCert      client certificate file, for etcd --client-cert-auth
 *   --etcd-key    DABBA_ETCD_KEY       etcdKey       its private key file
 *   --etcd-user   DABBA_ETCD_USER      etcdUser      an etcd user (etcd's own authentication)
 *                 DABBA_ETCD_PASSWORD                that user's password (never a flag: it would show in ps)
 */
import type { EtcdAuth, EtcdTls } from '../master/etcd-store.js';
import { readTlsFiles } from '../transport/tls.js';
import { ServeConfigError } from './config-error.js';

/** parseArgs options for the flags above. */
export const ETCD_ACCESS_FLAGS = {
  etcd: { type: 'string' },
  'etcd-ca': { type: 'string' },
  'etcd-cert': { type: 'string' },
  'etcd-key': { type: 'string' },
  'etcd-user': { type: 'string' },
} as const;

export interface EtcdAccessFile {
  etcd?: string[] | string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
}

export interface EtcdAccess {
  etcd: string[];
  etcdTls?: EtcdTls;
  etcdAuth?: EtcdAuth;
}

type Flags = Partial<Record<keyof typeof ETCD_ACCESS_FLAGS, string>>;

/** `file` is the --config file's settings, or null where there is no --config (dabba status). */
export function parseEtcdAccess(values: Flags, env: NodeJS.ProcessEnv, file: EtcdAccessFile | null): EtcdAccess {
  const text = values.etcd ?? env.DABBA_ETCD ?? file?.etcd;
  const etcd = (Array.isArray(text) ? text : (text ?? '').split(',')).map((url) => url.trim()).filter((url) => url !== '');
  if (etcd.length === 0) throw new ServeConfigError(`etcd endpoints are required: --etcd http://127.0.0.1:2379,..., DABBA_ETCD${file === null ? '' : ' or "etcd" in --config'}`);
  for (const url of etcd) if (!/^https?:\/\/[^/]+$/.test(url)) throw new ServeConfigError(`an etcd endpoint is http(s)://host:port, got ${url}`);
  const secure = etcd[0]!.startsWith('https://');
  if (etcd.some((url) => url.startsWith('https://') !== secure)) throw new ServeConfigError(`etcd endpoints must all be http:// or all https://, got ${etcd.join(',')}`);
  const access: EtcdAccess = { etcd };
  const tls = readEtcdTls(values['etcd-ca'] ?? env.DABBA_ETCD_CA ?? file?.etcdCa, values['etcd-cert'] ?? env.DABBA_ETCD_CERT ?? file?.etcdCert, values['etcd-key'] ?? env.DABBA_ETCD_KEY ?? file?.etcdKey, secure);
  if (tls !== null) access.etcdTls = tls;
  const username = values['etcd-user'] ?? env.DABBA_ETCD_USER ?? file?.etcdUser;
  const password = env.DABBA_ETCD_PASSWORD;
  if (username !== undefined && password === undefined) throw new ServeConfigError(`--etcd-user ${username} needs its password in DABBA_ETCD_PASSWORD`);
  if (username === undefined && password !== undefined) throw new ServeConfigError('DABBA_ETCD_PASSWORD is set, but no etcd user is: --etcd-user, DABBA_ETCD_USER or "etcdUser" in --config');
  if (username !== undefined && password !== undefined) access.etcdAuth = { username, password };
  return access;
}

function readEtcdTls(caFile: string | undefined, certFile: string | undefined, keyFile: string | undefined, secure: boolean): EtcdTls | null {
  if (caFile === undefined && certFile === undefined && keyFile === undefined) return null;
  if (!secure) throw new ServeConfigError('--etcd-ca, --etcd-cert and --etcd-key are for https:// etcd endpoints; the ones given are http://');
  if ((certFile === undefined) !== (keyFile === undefined)) throw new ServeConfigError('--etcd-cert and --etcd-key go together: give both or neither');
  if (caFile === undefined) throw new ServeConfigError('--etcd-cert needs --etcd-ca too: the CA the etcd members\' certificates chain to');
  try {
    const credentials = readTlsFiles({ caFile, ...(certFile === undefined ? {} : { certFile }), ...(keyFile === undefined ? {} : { keyFile }) }, 'etcd');
    return { ca: credentials.ca, ...(credentials.cert === null || credentials.key === null ? {} : { cert: credentials.cert, key: credentials.key }) };
  } catch (error) {
    throw new ServeConfigError((error as Error).message, { cause: error });
  }
}
