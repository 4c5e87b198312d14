/**
 * The settings of `dabba serve`, from (highest first) command-line flags, DABBA_* environment
 * variables and a JSON config file. Every setting has all three spellings:
 *
 *   flag             environment          config file      meaning
 *   --id             DABBA_HOST_ID        hostId           this host's name in the cluster (required)
 *   --listen         DABBA_LISTEN         listen           host:port to listen on (127.0.0.1:7400)
 *   --advertise      DABBA_ADVERTISE      advertise        ws://host:port others reach us at
 *   --etcd           DABBA_ETCD           etcd             etcd client URLs, comma-separated (required)
 *   --etcd-prefix    DABBA_ETCD_PREFIX    etcdPrefix       key prefix of this cluster (/dabba/default/)
 *   --secret-file    DABBA_SECRET_FILE    secretFile       file holding the cluster secret
 *                    DABBA_SECRET                          the secret itself (at least 16 bytes)
 *   --lease-ttl      DABBA_LEASE_TTL      leaseTtlSeconds  seconds a silent host stays a member (2)
 *   --http-token-file DABBA_HTTP_TOKEN_FILE httpTokenFile  the HTTP API then needs "Bearer <token>"
 *                    DABBA_HTTP_TOKEN                      the token itself
 *   --no-master      DABBA_NO_MASTER=1    master: false    do not stand for master on this host
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { HostOptions } from './host.js';

export class ServeConfigError extends RangeError {}

interface FileConfig {
  hostId?: string;
  listen?: string;
  advertise?: string;
  etcd?: string[] | string;
  etcdPrefix?: string;
  secretFile?: string;
  leaseTtlSeconds?: number;
  master?: boolean;
  httpTokenFile?: string;
}

export function parseServeConfig(args: string[], env: NodeJS.ProcessEnv = process.env): HostOptions {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string' },
      id: { type: 'string' },
      listen: { type: 'string' },
      advertise: { type: 'string' },
      etcd: { type: 'string' },
      'etcd-prefix': { type: 'string' },
      'secret-file': { type: 'string' },
      'lease-ttl': { type: 'string' },
      'http-token-file': { type: 'string' },
      'no-master': { type: 'boolean' },
    },
  });
  const file = values.config === undefined ? {} : readConfigFile(values.config);
  const hostId = values.id ?? env.DABBA_HOST_ID ?? file.hostId;
  if (hostId === undefined) throw new ServeConfigError('a host id is required: --id, DABBA_HOST_ID or "hostId" in --config');
  const listen = values.listen ?? env.DABBA_LISTEN ?? file.listen ?? '127.0.0.1:7400';
  const match = /^(.+):(\d{1,5})$/.exec(listen);
  if (match === null || Number(match[2]) > 65535) throw new ServeConfigError(`--listen must be host:port, got ${listen}`);
  const etcdText = values.etcd ?? env.DABBA_ETCD ?? file.etcd;
  const etcd = (Array.isArray(etcdText) ? etcdText : (etcdText ?? '').split(',')).map((url) => url.trim()).filter((url) => url !== '');
  if (etcd.length === 0) throw new ServeConfigError('etcd endpoints are required: --etcd http://127.0.0.1:2379,..., DABBA_ETCD or "etcd" in --config');
  for (const url of etcd) if (!/^https?:\/\/[^/]+$/.test(url)) throw new ServeConfigError(`an etcd endpoint is http(s)://host:port, got ${url}`);
  const secret = readSecret(values['secret-file'] ?? env.DABBA_SECRET_FILE ?? file.secretFile, env.DABBA_SECRET);
  const ttlText = values['lease-ttl'] ?? env.DABBA_LEASE_TTL ?? file.leaseTtlSeconds;
  const leaseTtlSeconds = ttlText === undefined ? 2 : Number(ttlText);
  if (!Number.isInteger(leaseTtlSeconds) || leaseTtlSeconds < 1 || leaseTtlSeconds > 60) throw new ServeConfigError(`--lease-ttl must be 1-60 seconds, got ${ttlText}`);
  const advertise = values.advertise ?? env.DABBA_ADVERTISE ?? file.advertise;
  if (advertise !== undefined && !/^wss?:\/\/[^/]+$/.test(advertise)) throw new ServeConfigError(`--advertise must be ws://host:port, got ${advertise}`);
  const master = values['no-master'] === true || env.DABBA_NO_MASTER === '1' ? false : (file.master ?? true);
  const prefix = values['etcd-prefix'] ?? env.DABBA_ETCD_PREFIX ?? file.etcdPrefix;
  const tokenFile = values['http-token-file'] ?? env.DABBA_HTTP_TOKEN_FILE ?? file.httpTokenFile;
  const httpToken = tokenFile === undefined && env.DABBA_HTTP_TOKEN === undefined ? undefined : readSecret(tokenFile, env.DABBA_HTTP_TOKEN, 'HTTP token');
  return {
    hostId,
    listenHost: match[1]!,
    port: Number(match[2]),
    ...(advertise === undefined ? {} : { advertiseUrl: advertise }),
    etcd,
    ...(prefix === undefined ? {} : { etcdPrefix: prefix }),
    secret,
    leaseTtlSeconds,
    master,
    ...(httpToken === undefined ? {} : { httpToken }),
  };
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

function readSecret(path: string | undefined, inline: string | undefined, what = 'cluster secret'): Buffer {
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
    throw new ServeConfigError(`a ${what} is required: --secret-file, DABBA_SECRET_FILE or DABBA_SECRET`);
  }
  if (secret.length < 16) throw new ServeConfigError(`the ${what} must be at least 16 bytes`);
  return secret;
}
