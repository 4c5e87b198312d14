/**
 * What every replica worker is started with, wherever it runs (createChain's pool or a host's
 * NodePort): the worker's module, and its limits from the resolved options.
 */
import type { ReplicaLimits } from '../workers/replica-task.js';
import type { ResolvedOptions } from './options.js';

/** The node worker's module: under tsx (tests, development) the .ts source, in dist the .js. */
export function replicaWorkerFilename(): string {
  const extension = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`../workers/node${extension}`, import.meta.url).href;
}

/** Log bytes after which a replica checkpoints its store, if its store is smaller (see workers/node.ts). */
const CHECKPOINT_BYTES_MIN = 256 * 1024 * 1024;

export function replicaLimits(resolved: ResolvedOptions): ReplicaLimits {
  // A node holds a replica of several chains: their in-flight logs share inflightBytesMax, each
  // keeping at least one full batch (every replica of a chain has the same limit, which the node
  // worker's shared rings rely on: see workers/node.ts).
  const share = Math.ceil(resolved.inflightBytesMax / resolved.chains / 8) * 8;
  const inflightBytesMax = Math.max(Math.ceil(resolved.writeFrameBytesMax / 8) * 8, share);
  // Their change histories share watchHistoryBytes the same way.
  const fullBatch = Math.ceil(resolved.writeFrameBytesMax / 8) * 8;
  const watchHistoryBytesMax = Math.max(fullBatch, Math.ceil(resolved.watchHistoryBytes / resolved.chains / 8) * 8);
  return {
    inflightBytesMax,
    watchHistoryBytesMax,
    // A slot per KiB: a quiet chain's batches of one write each still make a long history.
    watchHistoryBatchesMax: Math.max(16, Math.ceil(watchHistoryBytesMax / 1024)),
    watchReplyContentBytesMax: resolved.watchReplyContentBytesMax,
    inflightBatchesMax: Math.max(16, Math.ceil(resolved.inflightBatchesMax / resolved.chains)),
    readReplyPayloadBytesMax: resolved.readReplyPayloadBytesMax,
    readReplyResultsMax: resolved.readReplyResultsMax,
    spinIterations: resolved.spinIterations,
    sleepTimeoutMs: resolved.sleepTimeoutMs,
    snapshotFrameBytesMax: resolved.snapshotFrameBytesMax,
    keyBytesMax: resolved.keyBytesMax,
    valueBytesMax: resolved.valueBytesMax,
    readsAtAnyReplica: resolved.reads === 'any',
    admit: resolved.admit,
    admitBudgetMs: resolved.admitBudgetUs / 1000,
    writeFrameBytesMax: resolved.writeFrameBytesMax,
    log:
      resolved.durability === 'memory'
        ? null
        : {
            durability: resolved.durability,
            syncIntervalMs: resolved.syncIntervalMs,
            segmentBytesMax: resolved.segmentBytesMax,
            frameBytesMax: resolved.writeFrameBytesMax,
            checkpointBytesMin: CHECKPOINT_BYTES_MIN,
            diskReserveBytes: resolved.diskReserveBytes,
          },
  };
}
