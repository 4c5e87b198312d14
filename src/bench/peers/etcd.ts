/**
 * etcd as a peer: a 3-member cluster on loopback, driven through the etcd3 client with a fixed
 * number of puts in flight. A put counts when the client has its response, i.e. a quorum has
 * committed it.
 *
 * Not like for like: etcd fsyncs its write-ahead log for every batch it commits (on each member),
 * while dabba keeps its replicas in memory and never fsyncs. The figure shows what a durable,
 * consensus-based store costs on the same machine, not a fault of either design.
 */
import { performance } from 'node:perf_hooks';
import { Etcd3 } from 'etcd3';
import { makeKeys, makeValue } from '../../load.js';
import { driveFor, type PeerReport } from './drive.js';
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

    const drive = (durationMs: number): Promise<PeerReport> =>
      driveFor(durationMs, concurrency, async (putterIndex, session) => {
        let cursor = (putterIndex * 7919) % keySpace;
        while (session.running) {
          const issued = performance.now();
          await etcd.put(keys[cursor]!).value(value).exec();
          session.completed(1, issued);
          if (++cursor === keySpace) cursor = 0;
        }
      });

    await drive(WARMUP_MS);
    return await drive(options.seconds * 1000);
  } finally {
    client?.close();
    await servers.stop(STOP_GRACE_MS);
  }
}
