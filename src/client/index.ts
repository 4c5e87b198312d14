/**
 * dabba/client: talk to a chain served by `dabba serve` hosts, with the same API as createChain().
 *
 *   import { connect } from 'dabba/client';
 *   const client = await connect({ hosts: ['ws://10.0.0.1:7400'], secret: process.env.DABBA_CLIENT_SECRET! });
 *   await client.put('user:1', 'Asha');
 *   (await client.get('user:1'))?.toString(); // 'Asha'
 *   await client.close();
 *
 * Hosts serving TLS: hosts: ['wss://10.0.0.1:7400'] and tls: { ca, cert, key } (PEM strings or Buffers).
 */
export { connect, RemoteClient, type ConnectOptions, type RemoteClientStats } from './remote-client.js';
export { DabbaError, ErrorCode, isDabbaError, type WriteId } from '../../native-free-core/errors.js';
export type { VersionedValue } from '../read-pipeline.js';
export type { TlsOptions } from '../transport/tls.js';
export { SEAL_OVERHEAD_BYTES, SEALED_FORMAT, Sealer, type ResealReport, type SealingOptions } from '../sealing.js';
export type { Watch, WatchChange, WatchOptions } from '../watch.js';
