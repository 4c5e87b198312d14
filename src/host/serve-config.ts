/**
 * The settings of `dabba serve`, from (highest first) command-line flags, DABBA_* environment
 * variables and a JSON config file. Every setting has all three spellings:
 *
 *   flag             environment          config file      meaning
 *   --id             DABBA_HOST_ID        hostId           this host's name in the cluster (required)
 *   --listen         DABBA_LISTEN         listen           host:port to listen on (127.0.0.1:7400)
 *   --advertise      DABBA_ADVERTISE      advertise        ws://host:port others reach us at (wss:// with TLS)
 *   --tls-cert       DABBA_TLS_CERT       tlsCert          PEM certificate file: serve TLS on the whole port
 *   --tls-key        DABBA_TLS_KEY        tlsKey           its private key file
 *   --tls-ca         DABBA_TLS_CA         tlsCa            CA file: hosts' and clients' certificates chain to it
 *   --etcd           DABBA_ETCD           etcd             etcd client URLs, comma-separated (required)
 *   --etcd-ca, --etcd-cert, --etcd-key, --etcd-user, DABBA_ETCD_PASSWORD: etcd's TLS and auth (./etcd-access.ts)
 *   --etcd-prefix    DABBA_ETCD_PREFIX    etcdPrefix       key prefix of this cluster (/dabba/default/)
 *   --peer-secret-file DABBA_PEER_SECRET_FILE peerSecretFile file holding the peer secret (hosts only)
 *                    DABBA_PEER_SECRET                     the peer secret itself (at least 16 bytes)
 *   --client-secret-file DABBA_CLIENT_SECRET_FILE clientSecretFile  file holding the client secret
 *                    DABBA_CLIENT_SECRET                   the client secret itself (at least 16 bytes)
 *   --lease-ttl      DABBA_LEASE_TTL      leaseTtlSeconds  seconds a silent host stays a member (2)
 *   --http-token-file DABBA_HTTP_TOKEN_FILE httpTokenFile  the HTTP API then needs "Bearer <token>"
 *                    DABBA_HTTP_TOKEN                      the token itself
 *   --http-insecure  DABBA_HTTP_INSECURE=1 httpInsecure: true  serve HTTP with no token beyond loopback
 *   --metrics-token-file DABBA_METRICS_TOKEN_FILE metricsTokenFile  GET /metrics then needs "Bearer <token>" (this one, not the HTTP token)
 *   --metrics-token  DABBA_METRICS_TOKEN                   the metrics token itself (the file keeps it out of `ps`)
 *   --no-master      DABBA_NO_MASTER=1    master: false    do not stand for master on this host
 *   --chains         DABBA_CHAINS         chains           chains the keyspace is split over (the cluster's; 1 when first started)
 *   --replicas       DABBA_REPLICAS       replicas         replicas per chain (the cluster's; 3 when first started)
 *   --zone           DABBA_ZONE           zone             this host's zone: a chain's replicas go to distinct zones (default)
 *   --reads          DABBA_READS          reads            any | tail: which replicas answer reads (any: every member, CRAQ)
 *   --admit          DABBA_ADMIT          admit            a JavaScript module: the head's admission hook on every write (workers/admission.ts)
 *   --data-dir       DABBA_DATA_DIR       dataDir          keep the replicas' logs here: restarted, the host recovers them
 *   --durability     DABBA_DURABILITY     durability       memory | async | fsync (memory; fsync with --data-dir)
 *   --sync-interval-ms DABBA_SYNC_INTERVAL_MS syncIntervalMs  async mode: the longest data waits for fdatasync (100)
 *   --disk-reserve-bytes DABBA_DISK_RESERVE_BYTES diskReserveBytes  free bytes a replica's disk keeps: below, writes are refused (64 MiB)
 *   --no-fail-slow   DABBA_NO_FAIL_SLOW=1 failSlow: false  the master does not demote slow hosts (fail-slow demotion is on by default)
 *   --latency-target-us DABBA_LATENCY_TARGET_US latencyTargetUs  batching to a p99 target (µs) for this host's own client sessions (off)
 *   --repair         DABBA_REPAIR=1       repair: true     cut a damaged replica log at the damage (it rejoins from what is left) instead of refusing to start
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { readTlsFiles, type TlsFiles } from '../transport/tls.js';
import { ServeConfigError } from './config-error.js';
import { ETCD_ACCESS_FLAGS, parseEtcdAccess, type EtcdAccessFile } from './etcd-access.js';
import type { HostOptions } from './host.js';

export { ServeConfigError };

interface FileConfig extends EtcdAccessFile {
  hostId?: string;
  listen?: string;
  advertise?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  etcdPrefix?: string;
  peerSecretFile?: string;
  clientSecretFile?: string;
  leaseTtlSeconds?: number;
  master?: boolean;
  httpTokenFile?: string;
  httpInsecure?: boolean;
  metricsTokenFile?: string;
  chains?: number;
  replicas?: number;
  zone?: string;
  reads?: string;
  admit?: string;
  dataDir?: string;
  durability?: string;
  syncIntervalMs?: number;
  diskReserveBytes?: number;
  latencyTargetUs?: number;
  failSlow?: boolean;
  repair?: boolean;
}

export function parseServeConfig(args: string[], env: NodeJS.ProcessEnv = process.env): HostOptions {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string' },
      id: { type: 'string' },
      listen: { type: 'string' },
      advertise: { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-ca': { type: 'string' },
      ...ETCD_ACCESS_FLAGS,
      'etcd-prefix': { type: 'string' },
      'peer-secret-file': { type: 'string' },
      'client-secret-file': { type: 'string' },
      // Replaced by the two above: refused with a message that says so.
      'secret-file': { type: 'string' },
      'lease-ttl': { type: 'string' },
      'http-token-file': { type: 'string' },
      'metrics-token-file': { type: 'string' },
      'metrics-token': { type: 'string' },
      'no-master': { type: 'boolean' },
      'http-insecure': { type: 'boolean' },
      chains: { type: 'string' },
      replicas: { type: 'string' },
      zone: { type: 'string' },
      reads: { type: 'string' },
      admit: { type: 'string' },
      'data-dir': { type: 'string' },
      durability: { type: 'string' },
      'sync-interval-ms': { type: 'string' },
      'disk-reserve-bytes': { type: 'string' },
      'latency-target-us': { type: 'string' },
      'no-fail-slow': { type: 'boolean' },
      repair: { type: 'boolean' },
    },
  });
  const file = values.config === undefined ? {} : readConfigFile(values.config);
  const hostId = values.id ?? env.DABBA_HOST_ID ?? file.hostId;
  if (hostId === undefined) throw new ServeConfigError('a host id is required: --id, DABBA_HOST_ID or "hostId" in --config');
  const listen = values.listen ?? env.DABBA_LISTEN ?? file.listen ?? '127.0.0.1:7400';
  const match = /^(.+):(\d{1,5})$/.exec(listen);
  if (match === null || Number(match[2]) > 65535) throw new ServeConfigError(`--listen must be host:port, got ${listen}`);
  const etcdAccess = parseEtcdAccess(values, env, file);
  const { peerSecret, clientSecret } = readSecrets(values, env, file);
  const ttlText = values['lease-ttl'] ?? env.DABBA_LEASE_TTL ?? file.leaseTtlSeconds;
  const leaseTtlSeconds = ttlText === undefined ? 2 : Number(ttlText);
  if (!Number.isInteger(leaseTtlSeconds) || leaseTtlSeconds < 1 || leaseTtlSeconds > 60) throw new ServeConfigError(`--lease-ttl must be 1-60 seconds, got ${ttlText}`);
  const advertise = values.advertise ?? env.DABBA_ADVERTISE ?? file.advertise;
  if (advertise !== undefined && !/^wss?:\/\/[^/]+$/.test(advertise)) throw new ServeConfigError(`--advertise must be ws://host:port (wss:// with TLS), got ${advertise}`);
  const tls = readServeTls(values['tls-cert'] ?? env.DABBA_TLS_CERT ?? file.tlsCert, values['tls-key'] ?? env.DABBA_TLS_KEY ?? file.tlsKey, values['tls-ca'] ?? env.DABBA_TLS_CA ?? file.tlsCa);
  if (advertise?.startsWith('wss://') === true && tls === null) throw new ServeConfigError(`--advertise ${advertise} is wss://, but no TLS is set up: --tls-cert, --tls-key and --tls-ca`);
  if (advertise?.startsWith('ws://') === true && tls !== null) throw new ServeConfigError(`this host serves TLS, so --advertise must be wss://, got ${advertise}`);
  const master = values['no-master'] === true || env.DABBA_NO_MASTER === '1' ? false : (file.master ?? true);
  const prefix = values['etcd-prefix'] ?? env.DABBA_ETCD_PREFIX ?? file.etcdPrefix;
  const tokenFile = values['http-token-file'] ?? env.DABBA_HTTP_TOKEN_FILE ?? file.httpTokenFile;
  const httpToken = tokenFile === undefined && env.DABBA_HTTP_TOKEN === undefined ? undefined : readSecret(tokenFile, env.DABBA_HTTP_TOKEN, 'HTTP token', '--http-token-file, DABBA_HTTP_TOKEN_FILE or DABBA_HTTP_TOKEN');
  const metricsTokenFile = values['metrics-token-file'] ?? env.DABBA_METRICS_TOKEN_FILE ?? file.metricsTokenFile;
  const metricsTokenInline = values['metrics-token'] ?? env.DABBA_METRICS_TOKEN;
  const metricsToken =
    metricsTokenFile === undefined && metricsTokenInline === undefined ? undefined : readSecret(metricsTokenFile, metricsTokenInline, 'metrics token', '--metrics-token-file, DABBA_METRICS_TOKEN_FILE, --metrics-token or DABBA_METRICS_TOKEN');
  const chains = optionalInteger(values.chains ?? env.DABBA_CHAINS ?? file.chains, '--chains', 1, 1024);
  const replicas = optionalInteger(values.replicas ?? env.DABBA_REPLICAS ?? file.replicas, '--replicas', 1, 16);
  const zone = values.zone ?? env.DABBA_ZONE ?? file.zone;
  if (zone !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(zone)) throw new ServeConfigError(`--zone must be 1-64 letters, digits, '-', '_' or '.', got ${JSON.stringify(zone)}`);
  const reads = values.reads ?? env.DABBA_READS ?? file.reads;
  if (reads !== undefined && reads !== 'any' && reads !== 'tail') throw new ServeConfigError(`--reads must be any or tail, got ${JSON.stringify(reads)}`);
  const admitFile = values.admit ?? env.DABBA_ADMIT ?? file.admit;
  if (admitFile === '') throw new ServeConfigError('--admit must name a JavaScript module');
  const admit = admitFile === undefined ? undefined : resolve(admitFile);
  if (admit !== undefined && !existsSync(admit)) throw new ServeConfigError(`--admit: no module at ${admit}`);
  const durability = durabilityOf(values, env, file);
  const latencyTargetUs = optionalInteger(values['latency-target-us'] ?? env.DABBA_LATENCY_TARGET_US ?? file.latencyTargetUs, '--latency-target-us', 1, 10_000_000);
  const extra = {
    ...(reads === undefined ? {} : { reads: reads as 'any' | 'tail' }),
    ...(admit === undefined ? {} : { admit }),
    ...(latencyTargetUs === undefined ? {} : { batch: { latencyTargetUs } }),
    ...(values['no-fail-slow'] === true || env.DABBA_NO_FAIL_SLOW === '1' || file.failSlow === false ? { failSlow: false as const } : {}),
  };
  const chain = durability === null && Object.keys(extra).length === 0 ? null : { ...durability, ...extra };
  return {
    hostId,
    ...(chain === null ? {} : { chain }),
    ...(chains === undefined ? {} : { chains }),
    ...(replicas === undefined ? {} : { replicas }),
    ...(zone === undefined ? {} : { zone }),
    listenHost: match[1]!,
    port: Number(match[2]),
    ...(advertise === undefined ? {} : { advertiseUrl: advertise }),
    ...(tls === null ? {} : { tls }),
    ...etcdAccess,
    ...(prefix === undefined ? {} : { etcdPrefix: prefix }),
    peerSecret,
    clientSecret,
    leaseTtlSeconds,
    master,
    ...(httpToken === undefined ? {} : { httpToken }),
    ...(metricsToken === undefined ? {} : { metricsToken }),
    httpInsecure: values['http-insecure'] === true || env.DABBA_HTTP_INSECURE === '1' || file.httpInsecure === true,
    ...(values.repair === true || env.DABBA_REPAIR === '1' || file.repair === true ? { repair: true } : {}),
  };
}

/** --data-dir, --durability and --sync-interval-ms, as createChain() takes them; null when none is given. */
function durabilityOf(
  values: { 'data-dir'?: string; durability?: string; 'sync-interval-ms'?: string; 'disk-reserve-bytes'?: string },
  env: NodeJS.ProcessEnv,
  file: FileConfig,
): { dataDir?: string; durability?: 'memory' | 'async' | 'fsync'; syncIntervalMs?: number; diskReserveBytes?: number } | null {
  const dataDir = values['data-dir'] ?? env.DABBA_DATA_DIR ?? file.dataDir;
  const durability = values.durability ?? env.DABBA_DURABILITY ?? file.durability;
  const syncIntervalMs = optionalInteger(values['sync-interval-ms'] ?? env.DABBA_SYNC_INTERVAL_MS ?? file.syncIntervalMs, '--sync-interval-ms', 1, 60_000);
  const diskReserveBytes = optionalInteger(values['disk-reserve-bytes'] ?? env.DABBA_DISK_RESERVE_BYTES ?? file.diskReserveBytes, '--disk-reserve-bytes', 0, Number.MAX_SAFE_INTEGER);
  if (dataDir === undefined && durability === undefined && syncIntervalMs === undefined && diskReserveBytes === undefined) return null;
  if (dataDir === '') throw new ServeConfigError('--data-dir must name a directory');
  if (durability !== undefined && !['memory', 'async', 'fsync'].includes(durability)) throw new ServeConfigError(`--durability must be memory, async or fsync, got ${durability}`);
  if (durability !== undefined && durability !== 'memory' && dataDir === undefined) throw new ServeConfigError(`--durability ${durability} needs --data-dir to keep the logs in`);
  if (durability === 'memory' && dataDir !== undefined) throw new ServeConfigError('--durability memory keeps nothing on disk: leave --data-dir out, or ask for async or fsync');
  return {
    ...(dataDir === undefined ? {} : { dataDir }),
    ...(durability === undefined ? {} : { durability: durability as 'memory' | 'async' | 'fsync' }),
    ...(syncIntervalMs === undefined ? {} : { syncIntervalMs }),
    ...(diskReserveBytes === undefined ? {} : { diskReserveBytes }),
  };
}

/** An integer setting in minimum..maximum, or undefined when not given. */
function optionalInteger(text: string | number | undefined, flag: string, minimum: number, maximum: number): number | undefined {
  if (text === undefined) return undefined;
  const value = typeof text === 'number' ? text : /^[0-9]{1,7}$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < minimum || value > maximum) throw new ServeConfigError(`${flag} must be an integer in ${minimum}..${maximum}, got ${text}`);
  return value;
}

/** The three TLS files together, readable and matching (./host-tls.ts checks the rest at start-up), or null for none. */
function readServeTls(certFile: string | undefined, keyFile: string | undefined, caFile: string | undefined): TlsFiles | null {
  if (certFile === undefined && keyFile === undefined && caFile === undefined) return null;
  const missing = [certFile === undefined ? '--tls-cert' : '', keyFile === undefined ? '--tls-key' : '', caFile === undefined ? '--tls-ca' : ''].filter((flag) => flag !== '');
  if (missing.length > 0) {
    throw new ServeConfigError(`TLS needs a certificate, its key and a CA together (--tls-cert, --tls-key, --tls-ca); missing ${missing.join(' and ')} (or DABBA_TLS_* / "tlsCert", "tlsKey", "tlsCa" in --config)`);
  }
  const files = { certFile: certFile!, keyFile: keyFile!, caFile: caFile! };
  try {
    readTlsFiles(files);
  } catch (error) {
    throw new ServeConfigError((error as Error).message, { cause: error });
  }
  return files;
}

function readConfigFile(path: string): FileConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new ServeConfigError(`cannot read --config ${path}: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ServeConfigError(`--config ${path} must hold a JSON object`);
  return parsed as FileConfig;
}

/**
 * Hosts hold two secrets: the peer secret, which only hosts have (a link between replicas proves
 * it), and the client secret, which clients have too. One secret for both would let any client
 * link to a host as a replica.
 */
function readSecrets(values: { 'peer-secret-file'?: string; 'client-secret-file'?: string; 'secret-file'?: string }, env: NodeJS.ProcessEnv, file: FileConfig): { peerSecret: Buffer; clientSecret: Buffer } {
  const peerPath = values['peer-secret-file'] ?? env.DABBA_PEER_SECRET_FILE ?? file.peerSecretFile;
  const clientPath = values['client-secret-file'] ?? env.DABBA_CLIENT_SECRET_FILE ?? file.clientSecretFile;
  const legacy = values['secret-file'] ?? env.DABBA_SECRET_FILE ?? env.DABBA_SECRET ?? (file as { secretFile?: string }).secretFile;
  if (legacy !== undefined && peerPath === undefined && env.DABBA_PEER_SECRET === undefined) {
    throw new ServeConfigError('one cluster secret (--secret-file, DABBA_SECRET) is replaced by two: a peer secret for hosts (--peer-secret-file, DABBA_PEER_SECRET) and a client secret for clients (--client-secret-file, DABBA_CLIENT_SECRET)');
  }
  const peerSecret = readSecret(peerPath, env.DABBA_PEER_SECRET, 'peer secret', '--peer-secret-file, DABBA_PEER_SECRET_FILE or DABBA_PEER_SECRET');
  const clientSecret = readSecret(clientPath, env.DABBA_CLIENT_SECRET, 'client secret', '--client-secret-file, DABBA_CLIENT_SECRET_FILE or DABBA_CLIENT_SECRET');
  if (peerSecret.equals(clientSecret)) throw new ServeConfigError('the peer secret and the client secret must differ: a client would otherwise be able to link as a replica');
  return { peerSecret, clientSecret };
}

function readSecret(path: string | undefined, inline: string | undefined, what: string, where: string): Buffer {
  let secret: Buffer;
  if (path !== undefined) {
    try {
      secret = Buffer.from(readFileSync(path, 'utf8').trim(), 'utf8');
    } catch (error) {
      throw new ServeConfigError(`cannot read the ${what} file ${path}: ${(error as Error).message}`);
    }
  } else if (inline !== undefined) {
    secret = Buffer.from(inline, 'utf8');
  } else {
    throw new ServeConfigError(`a ${what} is required: ${where}`);
  }
  if (secret.length < 16) throw new ServeConfigError(`the ${what} must be at least 16 bytes`);
  return secret;
}
