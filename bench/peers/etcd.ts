/**
 * etcd as a peer: a 3-member cluster on loopback, driven through the etcd3 client with a fixed
 * number of puts in flight. A put counts when the client has its response, i.e. a quorum has
 * committed it.
 *
 * Not like for like: etcd fsyncs its write-ahead log for every batch it commits (on each member),
 * while dabba keeps its replicas in memory and never fsyncs. The figure shows what a durable,
 * consensus-based store costs on the same machine, not a fault of either design.
 */
import { createHistogram, performance } from 'node:perf_hooks';
import { Etcd3 } from 'etcd3';
import { makeKeys, makeValue } from '../../src/load.js';
import type { PeerReport } from './redis.js';
import { startEtcdCluster } from './etcd-cluster.js';
import { LocalServers } from './servers.js';

const WARMUP_MS = 500;
/** On SIGTERM a leader tries to hand over for up to ~5 s; the data is thrown away, so cut that short. */
const STOP_GRACE_MS = 1000;

export interface EtcdClusterOptions {
  seconds: number;
  valueBytes?: number;
  keySpace?: number;
  /** Puts kept in flight (default 256). */
  concurrency?: number;
}

export async function etcdCluster(options: EtcdClusterOptions): Promise<PeerReport> {
  const valueBytes = options.valueBytes ?? 100;
  const keySpace = options.keySpace ?? 100_000;
  const concurrency = options.concurrency ?? 256;
  const servers = new LocalServers('etcd');
  let client: Etcd3 | undefined;
  try {
    const { clientUrls } = await startEtcdCluster(servers);
    client = new Etcd3({ hosts: clientUrls });
    const etcd = client;
    const keys = makeKeys(keySpace, 16);
    const value = Buffer.from(makeValue(valueBytes));

    const drive = async (durationMs: number): Promise<PeerReport> => {
      const histogram = createHistogram();
      let writes = 0;
      let running = true;
      const putter = async (putterIndex: number): Promise<void> => {
        let cursor = (putterIndex * 7919) % keySpace;
        while (running) {
          const issued = performance.now();
          await etcd.put(keys[cursor]!).value(value).exec();
          histogram.record(Math.max(1, Math.round((performance.now() - issued) * 1000)));
          writes++;
          if (++cursor === keySpace) cursor = 0;
        }
      };
      const started = performance.now();
      const stopTimer = setTimeout(() => (running = false), durationMs);
      try {
        await Promise.all(Array.from({ length: concurrency }, (_, index) => putter(index)));
      } finally {
        running = false;
        clearTimeout(stopTimer);
      }
      const seconds = (performance.now() - started) / 1000;
      return { writesPerSecond: writes / seconds, p50Us: histogram.percentile(50), p99Us: histogram.percentile(99) };
    };

    await drive(WARMUP_MS);
    return await drive(options.seconds * 1000);
  } finally {
    client?.close();
    await servers.stop(STOP_GRACE_MS);
  }
}
