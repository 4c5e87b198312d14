/**
 * What every replica worker is started with, wherever it runs (createChain's pool or a host's
 * ReplicaPort): the worker's module, and its limits from the resolved options.
 */
import type { ReplicaLimits } from '../workers/replica-task.js';
import type { ResolvedOptions } from './options.js';

/** The node worker's module: under tsx (tests, development) the .ts source, in dist the .js. */
export function replicaWorkerFilename(): string {
  const extension = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`../workers/node${extension}`, import.meta.url).href;
}

export function replicaLimits(resolved: ResolvedOptions): ReplicaLimits {
  return {
    inflightBytesMax: resolved.inflightBytesMax,
    inflightBatchesMax: resolved.inflightBatchesMax,
    readReplyPayloadBytesMax: resolved.readReplyPayloadBytesMax,
    readReplyResultsMax: resolved.readReplyResultsMax,
    spinIterations: resolved.spinIterations,
    sleepTimeoutMs: resolved.sleepTimeoutMs,
    snapshotFrameBytesMax: resolved.snapshotFrameBytesMax,
    keyBytesMax: resolved.keyBytesMax,
    valueBytesMax: resolved.valueBytesMax,
  };
}
