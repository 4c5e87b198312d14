/**
 * dabba: chain replication for Node.js.
 *
 *   import { createChain } from 'dabba';
 *   const chain = createChain({ replicas: 3 });
 *   await chain.put('user:1', 'Asha');
 *   (await chain.get('user:1'))?.toString(); // 'Asha'
 *   await chain.close();
 */
export { Chain, createChain } from './chain.js';
export type {
  ChainLayout,
  ChainOptions,
  ChainStats,
  KeyInput,
  ReconfigurationEvent,
  DemotionEvent,
  DiskEvent,
  ReplicaDigest,
  ReplicaInfo,
  ReplicaStats,
  ValueInput,
  VersionedValue,
} from './chain.js';
export type { BatchOptions, Durability, ReadMode } from './options.js';
export type { WriteConditions } from './conditions.js';
export type { Watch, WatchChange, WatchOptions } from './watch.js';
export { SEAL_OVERHEAD_BYTES, SEALED_FORMAT, Sealer, type ResealReport, type SealingOptions } from './sealing.js';
export { DabbaError, ErrorCode, isDabbaError, type WriteId } from '../native-free-core/errors.js';
