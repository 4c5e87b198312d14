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
import { ensureBinary, freePorts, LocalServers, waitUntilReady } from './servers.js';

const HOST = '127.0.0.1';
const MEMBERS = 3;
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

/** Starts 3 members and returns their client URLs once each reports a healthy cluster (a leader elected). */
async function startCluster(servers: LocalServers): Promise<string[]> {
  const binary = await ensureBinary('etcd', 'etcd-server');
  const ports = await freePorts(2 * MEMBERS);
  const members = Array.from({ length: MEMBERS }, (_, index) => ({
    name: `member-${index + 1}`,
    clientUrl: `http://${HOST}:${ports[2 * index]}`,
    peerUrl: `http://${HOST}:${ports[2 * index + 1]}`,
  }));
  const initialCluster = members.map((member) => `${member.name}=${member.peerUrl}`).join(',');
  const started = members.map((member) =>
    servers.start(member.name, binary, [
      '--name', member.name,
      '--data-dir', servers.dataDir(member.name),
      '--listen-client-urls', member.clientUrl,
      '--advertise-client-urls', member.clientUrl,
      '--listen-peer-urls', member.peerUrl,
      '--initial-advertise-peer-urls', member.peerUrl,
      '--initial-cluster', initialCluster,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', `dabba-bench-${ports[0]}`,
      '--heartbeat-interval', '50',
      '--election-timeout', '500',
      '--logger', 'zap',
      '--log-level', 'warn',
    ]),
  );
  // /health is true once the member sees a leader (and no alarm is raised).
  const healthy = async (clientUrl: string): Promise<boolean> => {
    const response = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
    return response.ok && ((await response.json()) as { health?: string }).health === 'true';
  };
  await waitUntilReady(
    'the etcd cluster to elect a leader',
    async () => (await Promise.all(members.map((member) => healthy(member.clientUrl)))).every(Boolean),
    started,
  );
  return members.map((member) => member.clientUrl);
}

export async function etcdCluster(options: EtcdClusterOptions): Promise<PeerReport> {
  const valueBytes = options.valueBytes ?? 100;
  const keySpace = options.keySpace ?? 100_000;
  const concurrency = options.concurrency ?? 256;
  const servers = new LocalServers('etcd');
  let client: Etcd3 | undefined;
  try {
    const hosts = await startCluster(servers);
    client = new Etcd3({ hosts });
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
