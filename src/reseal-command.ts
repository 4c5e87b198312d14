/**
 * `dabba reseal`: after a sealing key rotation, rewrites the values still sealed under older key
 * versions under the current one, through a remote client of a `dabba serve` cluster.
 *
 *   dabba reseal --hosts wss://10.0.0.1:7400 --sealing-keys keys.json --keys-file keys.txt
 *                [--tls-ca ca.pem --tls-cert client.pem --tls-key client-key.pem]
 *
 * The client secret comes from DABBA_CLIENT_SECRET (never a flag). The sealing keys file is JSON,
 * `{ "current": 2, "keys": { "1": "<32 bytes, base64>", "2": "…" } }`; the keys file names the
 * records to reseal, one UTF-8 key per line (the chain cannot list its keys). Prints what it did
 * as JSON: { examined, resealed, current, absent }.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { connect } from './client/remote-client.js';
import type { SealingOptions } from './sealing.js';

export async function runResealCommand(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      hosts: { type: 'string' },
      'sealing-keys': { type: 'string' },
      'keys-file': { type: 'string' },
      'tls-ca': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
    },
  });
  const hosts = (values.hosts ?? '').split(',').map((url) => url.trim()).filter((url) => url !== '');
  if (hosts.length === 0) throw new RangeError('--hosts ws://host:port,... is required');
  if (values['sealing-keys'] === undefined) throw new RangeError('--sealing-keys FILE is required (JSON: {"current": N, "keys": {"N": "<base64>"}})');
  if (values['keys-file'] === undefined) throw new RangeError('--keys-file FILE is required (one key per line)');
  const secret = env.DABBA_CLIENT_SECRET;
  if (secret === undefined) throw new RangeError('the client secret is required in DABBA_CLIENT_SECRET');
  const sealing = readSealingKeys(values['sealing-keys']);
  const keys = readFileSync(values['keys-file'], 'utf8').split('\n').filter((line) => line !== '');
  const tls = values['tls-ca'] === undefined ? undefined : {
    ca: readFileSync(values['tls-ca']),
    ...(values['tls-cert'] === undefined ? {} : { cert: readFileSync(values['tls-cert']) }),
    ...(values['tls-key'] === undefined ? {} : { key: readFileSync(values['tls-key']) }),
  };
  const client = await connect({ hosts, secret, sealing, ...(tls === undefined ? {} : { tls }) });
  try {
    const report = await client.reseal(keys);
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return 0;
  } finally {
    await client.close();
  }
}

/** Reads the sealing keys file; the sealing layer validates what it holds (versions, key lengths). */
export function readSealingKeys(path: string): SealingOptions {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new RangeError(`cannot read the sealing keys file ${path}: ${(error as Error).message}`);
  }
  const { current, keys } = (parsed ?? {}) as { current?: unknown; keys?: unknown };
  if (typeof current !== 'number' || typeof keys !== 'object' || keys === null) {
    throw new RangeError(`${path} must hold {"current": <version>, "keys": {"<version>": "<32 bytes, base64>"}}`);
  }
  const decoded: { [version: number]: Uint8Array } = {};
  for (const [version, text] of Object.entries(keys)) {
    if (typeof text !== 'string') throw new RangeError(`${path}: key ${version} must be a base64 string`);
    decoded[Number(version)] = Buffer.from(text, 'base64');
  }
  return { current, keys: decoded };
}
