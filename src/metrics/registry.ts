/**
 * dabba's Prometheus metrics, in the text format through prom-client: one registry per runtime (a
 * createChain() or a `dabba serve` host), whose every figure is read at scrape time from one
 * MetricsSnapshot the runtime takes (nothing is counted twice, and nothing costs anything between
 * scrapes). The names, their labels and what they mean are in the README ("Metrics").
 */
import { collectDefaultMetrics, Registry, type Metric } from 'prom-client';
import type { WeightedHistogram } from './weighted-histogram.js';

/** One replica's figures, as its node (in one process) or its host reported them. */
export interface ReplicaSample {
  chain: number;
  replicaId: number;
  /** Where it runs: its node's id in one process, its host's id across hosts. */
  place: string;
  role: string;
  epoch: number;
  appliedSeq: number;
  committedSeq: number;
  /** Writes behind its chain's tail; null when not known. */
  lag: number | null;
  writesApplied: number;
  readsServed: number;
  dirtyReads: number;
  inflightBytes: number;
  /** Bytes waiting in the ring it takes its batches from (shared by the chains between the same two nodes). */
  inboundRingBytes: number;
  storeKeys: number;
  joinCaughtUp: boolean;
  logSyncs: number;
  logBytesWritten: number;
  logSyncedSeq: number;
  diskFull: boolean;
  diskFreeBytes: number;
  /** As its chain's head: from applying a batch to learning it committed, per write (null: not known). */
  commitLatency: WeightedHistogram | null;
}

/** One chain's client side in this process: what it sent and what was answered. */
export interface ClientSample {
  chain: number;
  writesAccepted: number;
  writesAcknowledged: number;
  writesPending: number;
  readsAnswered: number;
  readsPending: number;
  batchesSent: number;
  bytesSent: number;
  batchesWaiting: number;
  writeLatency: WeightedHistogram;
  readLatency: WeightedHistogram;
  batchWrites: WeightedHistogram;
  /** The most writes a batch takes now: the latency controller's cap, or maxWrites without a target. */
  batchWritesCap: number;
}

export interface MetricsSnapshot {
  chains: Array<{ chain: number; epoch: number }>;
  replicas: ReplicaSample[];
  clients: ClientSample[];
  reconfigurations: number;
  /** Nodes moved out of their chains for being slow (across hosts: those this host's master benched). */
  demotions?: number;
  /** Frames and requests refused, by error code. */
  refusals: Record<string, number>;
  /** Figures only hosts have (HTTP requests, client connections, peer links); absent in one process. */
  host?: {
    clients: number;
    peerLinks: number;
    httpRequests: Record<string, WeightedHistogram>;
  };
}

export interface MetricsOptions {
  /** The label that says where a replica runs: 'node' in one process, 'host' across hosts. */
  placeLabel: 'node' | 'host';
  /** Also the process's own figures (CPU, memory, event-loop delay, GC): for a process of its own (a host). */
  processMetrics: boolean;
}

/** The Prometheus text format's content type (version 0.0.4), as prom-client writes it. */
export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

type Labels = Record<string, string | number>;
type Sample = { labels: Labels; value: number };

/** A registry whose metrics read `snapshot()`, taken once per scrape. */
export class DabbaMetrics {
  readonly registry = new Registry();
  private current: MetricsSnapshot | null = null;

  constructor(
    private readonly snapshot: () => MetricsSnapshot,
    options: MetricsOptions,
  ) {
    const place = options.placeLabel;
    const replicaLabels = (replica: ReplicaSample): Labels => ({ chain: replica.chain, replica: replica.replicaId, [place]: replica.place });
    const perReplica = (value: (replica: ReplicaSample) => number | null) => (snapshot: MetricsSnapshot): Sample[] =>
      snapshot.replicas.flatMap((replica) => {
        const figure = value(replica);
        return figure === null ? [] : [{ labels: replicaLabels(replica), value: figure }];
      });
    const perClient = (value: (client: ClientSample) => number) => (snapshot: MetricsSnapshot): Sample[] =>
      snapshot.clients.map((client) => ({ labels: { chain: client.chain }, value: value(client) }));

    this.gauge('dabba_chain_epoch', 'Each chain\'s configuration epoch (it rises with every reconfiguration).', (snapshot) =>
      snapshot.chains.map(({ chain, epoch }) => ({ labels: { chain }, value: epoch })),
    );
    this.counter('dabba_reconfigurations_total', 'Reconfigurations carried out (a replica removed, a joiner in, roles rotated).', (snapshot) => [{ labels: {}, value: snapshot.reconfigurations }]);
    this.counter('dabba_demotions_total', 'Nodes (hosts: by the master on this host) moved out of their chains for being persistently slower than their peers (fail-slow).', (snapshot) => [{ labels: {}, value: snapshot.demotions ?? 0 }]);
    this.counter('dabba_refused_total', 'Frames and requests refused, by error code (malformed, unauthenticated, wrong epoch, ...).', (snapshot) =>
      Object.entries(snapshot.refusals).map(([code, value]) => ({ labels: { code }, value })),
    );
    this.gauge('dabba_replica_info', 'Each replica, with its role (head, middle, tail, solo, joining) as the value 1.', (snapshot) =>
      snapshot.replicas.map((replica) => ({ labels: { ...replicaLabels(replica), role: replica.role }, value: 1 })),
    );
    this.gauge('dabba_replica_applied_seq', 'The last sequence number the replica applied.', perReplica((replica) => replica.appliedSeq));
    this.gauge('dabba_replica_committed_seq', 'The last sequence number the replica knows the tail committed.', perReplica((replica) => replica.committedSeq));
    this.gauge('dabba_replica_lag_writes', 'Writes the replica is behind its chain\'s tail (a joiner copying its snapshot counts as far behind).', perReplica((replica) => replica.lag));
    this.gauge('dabba_replica_join_caught_up', 'A joining replica: 1 once it loaded its snapshot, else 0 (other replicas are not listed).', (snapshot) =>
      snapshot.replicas.filter((replica) => replica.role === 'joining').map((replica) => ({ labels: replicaLabels(replica), value: replica.joinCaughtUp ? 1 : 0 })),
    );
    this.counter('dabba_replica_writes_applied_total', 'Writes the replica applied.', perReplica((replica) => replica.writesApplied));
    this.counter('dabba_replica_reads_served_total', 'Reads the replica answered.', perReplica((replica) => replica.readsServed));
    this.counter('dabba_replica_dirty_reads_total', 'Reads of a key with an uncommitted write at the replica, answered once it committed (CRAQ).', perReplica((replica) => replica.dirtyReads));
    this.gauge('dabba_replica_inflight_bytes', 'Bytes of batches the replica applied and keeps until the tail acknowledges them.', perReplica((replica) => replica.inflightBytes));
    this.gauge('dabba_replica_inbound_ring_bytes', 'Bytes waiting in the ring the replica takes its batches from (shared by the chains between the same two nodes).', perReplica((replica) => replica.inboundRingBytes));
    this.gauge('dabba_replica_store_keys', 'Keys in the replica\'s store.', perReplica((replica) => replica.storeKeys));
    this.counter('dabba_replica_log_syncs_total', 'fdatasyncs of the replica\'s log (0 in memory).', perReplica((replica) => replica.logSyncs));
    this.counter('dabba_replica_log_bytes_written_total', 'Bytes written to the replica\'s log (0 in memory).', perReplica((replica) => replica.logBytesWritten));
    this.gauge('dabba_replica_log_synced_seq', 'The last sequence number surely on the replica\'s disk (0 in memory).', perReplica((replica) => replica.logSyncedSeq));
    this.gauge('dabba_replica_disk_full', '1 while the replica\'s disk is full (its chain refuses writes), else 0.', perReplica((replica) => (replica.diskFull ? 1 : 0)));
    this.gauge('dabba_replica_disk_free_bytes', 'Free bytes on the replica\'s log\'s file system, as last read (0 in memory).', perReplica((replica) => replica.diskFreeBytes));

    this.histogram('dabba_replica_commit_latency_seconds', 'A head\'s commit latency: from applying a batch to learning the tail committed it, once per write (replicas that headed their chain).', (snapshot) =>
      snapshot.replicas.filter((replica) => replica.commitLatency !== null && replica.commitLatency.count > 0).map((replica) => ({ labels: replicaLabels(replica), histogram: replica.commitLatency! })),
    );
    this.counter('dabba_writes_accepted_total', 'Writes this process\'s clients accepted.', perClient((client) => client.writesAccepted));
    this.counter('dabba_writes_acknowledged_total', 'Writes the tail acknowledged to this process\'s clients.', perClient((client) => client.writesAcknowledged));
    this.gauge('dabba_writes_pending', 'Writes accepted and not yet acknowledged.', perClient((client) => client.writesPending));
    this.counter('dabba_reads_answered_total', 'Reads answered to this process\'s clients.', perClient((client) => client.readsAnswered));
    this.gauge('dabba_reads_pending', 'Reads sent and not yet answered.', perClient((client) => client.readsPending));
    this.counter('dabba_batches_sent_total', 'Write batches sent to a head.', perClient((client) => client.batchesSent));
    this.counter('dabba_batch_bytes_sent_total', 'Bytes of write batches sent to a head.', perClient((client) => client.bytesSent));
    this.gauge('dabba_batches_waiting', 'Write batches waiting for room in the head\'s ring or window.', perClient((client) => client.batchesWaiting));
    this.histogram('dabba_write_latency_seconds', 'Acknowledged writes\' latency: from the first write of their batch to the tail\'s ack.', (snapshot) =>
      snapshot.clients.map((client) => ({ labels: { chain: client.chain }, histogram: client.writeLatency })),
    );
    this.histogram('dabba_read_latency_seconds', 'Answered reads\' latency: from the first read of their batch to its last answer.', (snapshot) =>
      snapshot.clients.map((client) => ({ labels: { chain: client.chain }, histogram: client.readLatency })),
    );
    this.histogram('dabba_batch_writes', 'Writes per batch sent.', (snapshot) => snapshot.clients.map((client) => ({ labels: { chain: client.chain }, histogram: client.batchWrites })));
    this.gauge('dabba_batch_writes_cap', 'The most writes a batch takes now: set by the latency controller under batch.latencyTargetUs, else maxWrites.', perClient((client) => client.batchWritesCap));

    if (place === 'host') {
      this.gauge('dabba_host_clients', 'Client connections to this host.', (snapshot) => [{ labels: {}, value: snapshot.host?.clients ?? 0 }]);
      this.gauge('dabba_host_peer_links', 'Links up now to and from other hosts.', (snapshot) => [{ labels: {}, value: snapshot.host?.peerLinks ?? 0 }]);
      this.histogram('dabba_http_request_seconds', 'HTTP API requests (/kv), by method: from the request to its answer.', (snapshot) =>
        Object.entries(snapshot.host?.httpRequests ?? {}).map(([method, histogram]) => ({ labels: { method }, histogram })),
      );
    }
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** The text exposition of every metric, as of now. */
  async text(): Promise<string> {
    this.current = this.snapshot();
    try {
      return await this.registry.metrics();
    } finally {
      this.current = null;
    }
  }

  private counter(name: string, help: string, values: (snapshot: MetricsSnapshot) => Sample[]): void {
    this.register(name, help, 'counter', values);
  }

  private gauge(name: string, help: string, values: (snapshot: MetricsSnapshot) => Sample[]): void {
    this.register(name, help, 'gauge', values);
  }

  private register(name: string, help: string, type: 'counter' | 'gauge', values: (snapshot: MetricsSnapshot) => Sample[]): void {
    this.registry.registerMetric({
      name,
      get: () => ({ name, help, type, aggregator: 'sum', values: this.current === null ? [] : values(this.current) }),
    } as unknown as Metric);
  }

  private histogram(name: string, help: string, series: (snapshot: MetricsSnapshot) => Array<{ labels: Labels; histogram: WeightedHistogram }>): void {
    this.registry.registerMetric({
      name,
      get: () => ({ name, help, type: 'histogram', aggregator: 'sum', values: this.current === null ? [] : series(this.current).flatMap(histogramValues(name)) }),
    } as unknown as Metric);
  }
}

/** A histogram's series in the text format's shape: cumulative buckets by `le`, then _sum and _count. */
function histogramValues(name: string) {
  return ({ labels, histogram }: { labels: Labels; histogram: WeightedHistogram }): Array<Sample & { metricName: string }> => {
    const values: Array<Sample & { metricName: string }> = [];
    let cumulative = 0;
    histogram.bounds.forEach((bound, index) => {
      cumulative += histogram.counts[index]!;
      values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: bound }, value: cumulative });
    });
    values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: histogram.count });
    values.push({ metricName: `${name}_sum`, labels, value: histogram.sum });
    values.push({ metricName: `${name}_count`, labels, value: histogram.count });
    return values;
  };
}
