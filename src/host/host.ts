/**
 * One host of a chain table that spans hosts (`dabba serve`): a uWebSockets.js server for peer
 * links (/peer), remote clients (/client, /client/<chain>) and the HTTP API, one node thread
 * holding this host's replica of each chain placed on it, behind SharedArrayBuffer rings
 * (./node-port.ts), and the host's place in etcd: the cluster's settings, a lease-bound
 * registration (its incarnation, zone and URL), a status it refreshes, the chain table it follows,
 * and a master candidate.
 *
 * Each chain's part (its entry, replica, links and clients) is a ChainSlot (./chain-slot.ts); this
 * module runs what they share. A host's incarnation is one run of its node: when the node fails or
 * the lease is lost, every replica goes with it, and the host registers again as a new incarnation
 * (the master then places new replicas on it, which copy their chains). Links to the neighbours are
 * in ./chain-links.ts, remote clients in ./client-sessions.ts, HTTP in ./http-api.ts.
 */
import { DabbaMetrics, type MetricsSnapshot, type ReplicaSample } from '../metrics/registry.js';
import { LATENCY_BUCKETS_SECONDS, WeightedHistogram } from '../metrics/weighted-histogram.js';
import { RecentHistogram } from '../metrics/recent-histogram.js';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Role } from '../../native-free-core/chain/node.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { participants, roleIn, servesReads, type Configuration } from '../../native-free-core/master/chain-master.js';
import { chainOf } from '../../native-free-core/master/key-routing.js';
import type { ChainEntry, ReplicaHome } from '../../native-free-core/master/table-round.js';
import { EtcdMaster } from '../master/etcd-master.js';
import {
  DEFAULT_PREFIX,
  EtcdConfigurationStore,
  FAILED_REPLICAS_MAX,
  reportedStatus,
  ZONE,
  type ClusterSettings,
  type EtcdAuth,
  type EtcdTls,
  type HostInfo,
  type HostRegistration,
  type HostStatus,
  type StopWatching,
  type StoredTable,
} from '../master/etcd-store.js';
import { CHAINS_MAX, NODES_MAX, resolveOptions, type ChainOptions, type ResolvedOptions } from '../options.js';
import { refuseSealingIn } from '../sealing.js';
import { LinkCloseCode, type PeerLinkLogEntry } from '../transport/peer-link.js';
import { checkSecret } from '../transport/peer-link-handshake.js';
import { attachPeerLinkRoute, type PeerLinkRoute } from '../transport/peer-link-server.js';
import type { TlsFiles } from '../transport/tls.js';
import { createUwsApp, loadUws } from '../transport/uws.js';
import { HOST_PREFIX, LINK_HIGH_WATER_BYTES } from './chain-links.js';
import { HostLinks } from './host-links.js';
import { ChainSlot, type SlotHost } from './chain-slot.js';
import { ClientTokens } from './client-tokens.js';
import { HostIdentity, publicKeyFromText } from './host-identity.js';
import { RefusalLog } from './refusal-log.js';
import { attachHttpApi, type HttpApi } from './http-api.js';
import { checkCertificateNames, resolveHostTls, type HostTls } from './host-tls.js';
import { InboundQueue } from './inbound-queue.js';
import { NodePort, type ReplicaSnapshotStats } from './node-port.js';
import { HostDataDir } from './host-data-dir.js';
import { logDamage } from '../../workers/replica-log.js';

export interface HostOptions {
  /** This host's name in the cluster (etcd key hosts/<hostId>): letters, digits, '-', '_', '.'. */
  hostId: string;
  /** Address to listen on. Default 127.0.0.1. */
  listenHost?: string;
  /** Port to listen on; 0 lets the kernel choose. */
  port: number;
  /** The base URL other hosts and clients reach this host at. Default ws://<listenHost>:<port> (wss:// with `tls`). */
  advertiseUrl?: string;
  /**
   * Serve TLS on the whole port (wss:// links and clients, https:// HTTP) from these PEM files; the
   * certificate is also what this host shows when it dials (./host-tls.ts), and dialers must prove
   * a certificate from the CA.
   */
  tls?: TlsFiles;
  /** etcd client URLs. */
  etcd: string[];
  /** For https:// etcd endpoints: the CA, and a client certificate if etcd asks for one. */
  etcdTls?: EtcdTls;
  /** etcd's own user/password authentication. */
  etcdAuth?: EtcdAuth;
  /** etcd key prefix of this cluster. Default /dabba/default/. */
  etcdPrefix?: string;
  /** The peer secret (at least 16 bytes), held by hosts only: links between replicas prove it. */
  peerSecret: Buffer;
  /** The client secret (at least 16 bytes, not the peer secret): remote clients prove it. */
  clientSecret: Buffer;
  /** When set, the HTTP API requires `Authorization: Bearer <httpToken>`. */
  httpToken?: Buffer;
  /** When set, GET /metrics requires `Authorization: Bearer <metricsToken>` (and not the HTTP token). */
  metricsToken?: Buffer;
  /**
   * Serve the HTTP API without a token on a non-loopback address. Without a token and without this,
   * a host that listens beyond loopback refuses to start.
   */
  httpInsecure?: boolean;
  /** Lease TTL in seconds: how long a silent host stays a member. Default 2. */
  leaseTtlSeconds?: number;
  /**
   * The cluster's settings: how many chains its keyspace is split over, and replicas per chain.
   * Fixed by the cluster's first host (defaults 1 and 3); a host given other values is refused,
   * one given none takes the cluster's.
   */
  chains?: number;
  replicas?: number;
  /** This host's zone: replicas of one chain go to distinct zones when there are enough. Default 'default'. */
  zone?: string;
  /** Run a master candidate on this host. Default true. */
  master?: boolean;
  /** Ring, batch and limit settings, as for createChain() (not `sealing`: clients seal, hosts hold no keys). */
  chain?: Omit<ChainOptions, 'sealing'>;
  /** With a data directory: cut a replica log found damaged at the damage (its replica rejoins from what is left) instead of refusing to start. */
  repair?: boolean;
  /** Where log lines go (one JSON object each). Default stderr. */
  log?: (entry: HostLogEntry) => void;
}

export interface HostLogEntry {
  level: 'info' | 'warn' | 'error';
  event: string;
  message: string;
  [field: string]: unknown;
}

/** One chain of the table, as this host sees it (GET /status). */
export interface ChainReport {
  chain: number;
  epoch: number;
  /** Head first, tail last, then the joiner (role 'joining'). */
  members: Array<{ replicaId: number; hostId: string | null; role: string; appliedSeq: number | null; lag: number | null }>;
}

export interface HostStatusReport {
  hostId: string;
  url: string;
  zone: string;
  /** This run of the host (a restarted host is a new incarnation, with new replicas). */
  incarnation: string;
  isMaster: boolean;
  /** The cluster's settings (fixed when it was first started); null before this host read them. */
  settings: ClusterSettings | null;
  /** The chain table: every chain placed so far. */
  chains: ChainReport[];
  /** This host's replicas, by chain. */
  replicas: Array<{ chain: number; replicaId: number; role: Role | null; epoch: number; servingReads: boolean; stats: ReplicaSnapshotStats | null }>;
  /** Every live host, with how many chains it heads, is a middle of, tails and joins (from the chain table). */
  hosts: Array<{ hostId: string; zone: string | null; url: string | null; heads: number; middles: number; tails: number; joining: number; writesPerSecond: number; commitP99Ms: number }>;
  /**
   * The peer links up now: one to each host that holds a predecessor of one of ours, one from each
   * that holds a successor, each carrying every chain between the two (`chains`: channels on it).
   */
  peerLinks: { dialed: Array<{ hostId: string; chains: number }>; accepted: Array<{ hostId: string; chains: number }> };
  writesPerSecond: number;
  /** The 99th percentile of this host's heads' commit latency over the last second, in ms (a bucket's bound). */
  commitP99Ms: number;
  clients: number;
  /** Inputs refused since the host started, by error code (malformed frames, failed handshakes, ...). */
  refusals: Record<string, number>;
  /** The reconfigurations this host saw since it started, newest first. */
  reconfigurations: ReconfigurationReport[];
}

/** A chain's new configuration, as a host saw it in the chain table. */
export interface ReconfigurationReport {
  /** When this host saw it (ISO 8601). */
  time: string;
  chain: number;
  epoch: number;
  /** Its members' hosts, head first, then a joiner's. */
  hosts: Array<string | null>;
}

/** Reconfigurations a host's status lists, at most. */
const RECENT_RECONFIGURATIONS = 20;

/** How often the host refreshes its status in etcd (the master drives joins from it). */
const STATUS_INTERVAL_MS = 200;
/** A host whose status has not changed for this long may be dead: the master does not move to it. */
const STATUS_SILENCE_MS = 3 * STATUS_INTERVAL_MS;
/** How long close() waits, in all, for the steps that need etcd (resign, revoke, watches). */
const CLOSE_ETCD_WAIT_MS = 2000;
/** Reads stop this long before the lease could have expired: time for a read in flight to finish. */
const LEASE_READ_MARGIN_MS = 300;
/** Frames waiting for room in one inbound ring, from all its senders (see InboundQueue). */
const INBOUND_QUEUE_BYTES_MAX = 256 * 1024 * 1024;
/** Links on /peer at most, and of those still in their handshake. */
const PEER_CONNECTIONS_MAX = 64;
const PEER_HANDSHAKES_MAX = 16;
/** Addresses that only this machine can reach: the HTTP API may listen there without a token. */
const LOOPBACK_HOSTS = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|\[::1\]|localhost)$/;

export class DabbaHost extends EventEmitter {
  readonly hostId: string;
  readonly options: ResolvedOptions;
  /** Largest frame on any link: what fits a data ring record (native-free-core/limits.ts). */
  private readonly recordBytesMax: number;
  url = '';
  port = 0;
  readonly zone: string;
  private readonly settings: Required<Pick<HostOptions, 'leaseTtlSeconds' | 'listenHost'>> & HostOptions;
  /** The cluster's settings, once read from etcd (start()). */
  private cluster: ClusterSettings | null = null;
  private readonly store: EtcdConfigurationStore;
  private master: EtcdMaster | null = null;
  private registration: HostRegistration | null = null;
  /** This run's incarnation (see the module comment); a new one with every registration (a durable host restarts in its own). */
  private incarnation = newIncarnation();
  /** A durable host's data directory (null in memory). */
  private readonly dataDir: HostDataDir | null;
  private node: NodePort | null = null;
  private slots: ChainSlot[] = [];
  /** Where every replica of the table runs (from the chain entries). */
  private homes = new Map<number, ReplicaHome>();
  private hostTable = new Map<string, { info: HostInfo | null; status: HostStatus | null }>();
  /** When each host's status last changed here (a live host publishes one every STATUS_INTERVAL_MS). */
  private readonly statusHeardAt = new Map<string, number>();
  /** The host table watch has delivered (before that, every replica's host looks gone). */
  private hostTableLoaded = false;
  /** This node's replicas whose disk is full, as the node last said (workers/disk-room.ts). */
  private readonly fullDisks = new Set<number>();
  /** Replicas this incarnation gave up, newest last (reported in the status). */
  private failed: number[] = [];
  private readonly batchesQueue: InboundQueue;
  private readonly acksQueue: InboundQueue;
  private readonly readsQueue: InboundQueue;
  private peerRoute: PeerLinkRoute | null = null;
  private http: HttpApi | null = null;
  private metricsRegistry: DabbaMetrics | null = null;
  /** /kv requests' time to their answer, by method. */
  private readonly httpRequests = { GET: httpLatency(), PUT: httpLatency(), DELETE: httpLatency() };
  private listenSocket: unknown = null;
  private readonly stops: StopWatching[] = [];
  private statusTimer: NodeJS.Timeout | null = null;
  private lastWritesApplied = 0;
  private lastStatusAt = performance.now();
  private writesPerSecond = 0;
  /** Its heads' commit latency over the last second (for the status page's p99). */
  private readonly recentCommits = new RecentHistogram(LATENCY_BUCKETS_SECONDS, 1000);
  private commitP99Ms = 0;
  /** Reconfigurations this host saw in the chain table, newest first (RECENT_RECONFIGURATIONS at most). */
  private readonly reconfigurations: ReconfigurationReport[] = [];
  /** The epoch each chain had when the table was last seen (0: not seen yet). */
  private readonly seenEpochs: number[] = [];
  private closed = false;
  private reregistering: Promise<void> | null = null;
  /** This host's Ed25519 key pair: it signs peer-link handshakes (see ./host-identity.ts). */
  private readonly identity = new HostIdentity();
  private readonly tokens: ClientTokens;
  /** Refusals by code (in /status), and the rate limit on their log lines. */
  private readonly refusals = new RefusalLog();
  /** The rate limit on links' other log lines (opened, closed). */
  private readonly linkEvents = new RefusalLog();
  private readonly tls: HostTls | null;
  /** One link to each host that holds a predecessor of ours, and one from each that holds a successor. */
  private readonly hostLinks: HostLinks;

  constructor(options: HostOptions) {
    super();
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(options.hostId ?? '')) {
      throw new DabbaError(ErrorCode.invalidArgument, `hostId must be 1-64 letters, digits, '-', '_' or '.' (got ${JSON.stringify(options.hostId)})`);
    }
    this.hostId = options.hostId;
    checkSecrets(options.peerSecret, options.clientSecret);
    checkHttpExposure(options);
    refuseSealingIn(options.chain, 'a host: values are sealed by clients, and hosts never hold the keys');
    checkClusterSettings(options);
    this.zone = options.zone ?? 'default';
    this.settings = { leaseTtlSeconds: 2, listenHost: '127.0.0.1', ...options };
    this.options = resolveOptions(options.chain ?? {});
    this.recordBytesMax = this.options.linkRecordBytesMax;
    this.tls = resolveHostTls(options.tls, options.advertiseUrl);
    this.tokens = new ClientTokens(options.peerSecret);
    this.store = new EtcdConfigurationStore({ hosts: options.etcd, ...(options.etcdPrefix === undefined ? {} : { prefix: options.etcdPrefix }), tls: options.etcdTls, auth: options.etcdAuth });
    // Durable: its replicas' logs, and the incarnation they were placed on (./host-data-dir.ts).
    const { dataDir, durability } = this.options;
    this.dataDir = dataDir === null || durability === 'memory' ? null : HostDataDir.open(dataDir, this.hostId, options.etcdPrefix ?? DEFAULT_PREFIX, durability, this.incarnation);
    if (this.dataDir !== null) {
      this.incarnation = this.dataDir.incarnation;
      // A damaged log stops the host here (one line naming the file and offset), unless --repair.
      try {
        const limits = { frameBytesMax: this.options.writeFrameBytesMax, snapshotFrameBytesMax: this.options.snapshotFrameBytesMax, limits: this.options };
        for (const line of this.dataDir.checkLogs((directory) => logDamage(directory, limits), options.repair === true)) this.log('warn', 'log-repaired', line);
      } catch (error) {
        this.dataDir.release();
        throw error;
      }
    }
    const push = (kind: 'batch' | 'ack' | 'reads') => (chain: number, frame: Uint8Array): boolean => {
      const node = this.node;
      if (node === null) return true; // No node: nothing to deliver to; the sender will resend.
      return kind === 'batch' ? node.pushBatch(chain, frame) : kind === 'ack' ? node.pushAck(chain, frame) : node.pushReads(chain, frame);
    };
    this.batchesQueue = new InboundQueue(push('batch'), INBOUND_QUEUE_BYTES_MAX);
    this.acksQueue = new InboundQueue(push('ack'), INBOUND_QUEUE_BYTES_MAX);
    this.readsQueue = new InboundQueue(push('reads'), INBOUND_QUEUE_BYTES_MAX);
    this.hostLinks = new HostLinks({
      hostId: this.hostId,
      secret: options.peerSecret,
      identityKey: this.identity.privateKey,
      tls: this.tls?.credentials ?? null,
      frameBytesMax: this.recordBytesMax,
      highWaterBytes: LINK_HIGH_WATER_BYTES,
      damageBatchEvery: Number(process.env.DABBA_TEST_DAMAGE_BATCH_EVERY ?? 0) || 0,
      damageBatchesMax: Number(process.env.DABBA_TEST_DAMAGE_BATCHES ?? Number.POSITIVE_INFINITY),
      hostOf: (hostId) => {
        const info = this.hostTable.get(hostId)?.info ?? null;
        const publicKey = info?.publicKey === undefined ? null : publicKeyFromText(info.publicKey);
        return info === null || publicKey === null ? null : { url: info.url, publicKey };
      },
      homeOf: (replicaId) => this.homeInfo(replicaId)?.hostId ?? null,
      acceptChannel: (chain, channel) => {
        const slot = this.slots[chain];
        if (slot !== undefined) return slot.links.acceptDownstream(channel);
        channel.close(LinkCloseCode.unauthenticated, `chain ${chain} is not one of this cluster's`);
        return { onRecord: () => undefined };
      },
      log: (entry) => {
        if ('nodeId' in entry) this.logLink(entry);
        else if (entry.code.startsWith('DABBA_ERR_')) this.logRefusal(entry.code, entry.code, entry.message);
        else this.log(entry.level, entry.code, entry.message);
      },
    });
  }

  /** The chain slots, once the settings are known. */
  private makeSlots(chains: number): ChainSlot[] {
    const host: SlotHost = {
      hostId: this.hostId,
      chains,
      incarnation: () => this.incarnation,
      logOf: (chain, replicaId, fresh) => {
        const dataDir = this.dataDir;
        if (dataDir === null || (!fresh && !dataDir.hasLog(chain, replicaId))) return undefined;
        return dataDir.logPlacement(chain, replicaId, fresh);
      },
      logDiscarded: (chain, replicaId) => this.dataDir?.discardedLog(chain, replicaId) ?? false,
      adoptableLog: (chain, replicaId, inChain) => this.dataDir?.adoptableLog(chain, replicaId, inChain),
      discardLog: (chain, replicaId, remove) => this.dataDir?.discardLog(chain, replicaId, remove),
      diskRefusal: (chain) => this.diskRefusal(chain),
      node: () => this.node,
      urlOf: (replicaId) => this.urlOf(replicaId),
      zoneOf: (replicaId) => this.homeInfo(replicaId)?.info.zone ?? null,
      readsAtAnyReplica: this.options.reads === 'any',
      admits: this.options.admit !== null,
      ownUrl: () => this.url,
      isGone: (replicaId) => this.hostTableLoaded && this.homes.has(replicaId) && this.homeInfo(replicaId) === null,
      leaseAllowsReads: () => this.registration !== null && performance.now() < this.registration.leaseValidUntil() - LEASE_READ_MARGIN_MS,
      gaveUp: (chain, replicaId, reason) => this.gaveUp(chain, replicaId, reason),
      statusChanged: () => void this.publishStatus(),
      configured: (chain, configuration, role) => this.emit('configured', configuration, role, chain),
      log: (level, event, message) => this.log(level, event, message),
    };
    const slots: ChainSlot[] = [];
    for (let chain = 0; chain < chains; chain++) {
      slots.push(
        new ChainSlot(
          chain,
          host,
          {
            controlFrameBytesMax: this.options.controlFrameBytesMax,
            connectionInboundBytesMax: this.connectionInboundBytesMax(),
            openUpstream: (slotChain, predecessor, from, handlers) => this.hostLinks.open(slotChain, from, predecessor, handlers),
            offerBatch: (slotChain, frame, budget) => this.batchesQueue.offer(slotChain, frame, budget),
            offerAck: (slotChain, frame, budget) => this.acksQueue.offer(slotChain, frame, budget),
            kick: () => this.node?.kick(),
            log: (entry) => {
              if ('nodeId' in entry) this.logLink(entry);
              else if (entry.code.startsWith('DABBA_ERR_')) this.logRefusal(entry.code, entry.code, entry.message);
              else this.log(entry.level, entry.code, entry.message);
            },
          },
          {
            secret: this.settings.clientSecret,
            tokens: this.tokens,
            nodeId: `host:${this.hostId}`,
            maxRecordBytes: this.recordBytesMax,
            recordLimits: { keyBytesMax: this.options.keyBytesMax, valueBytesMax: this.options.valueBytesMax },
            allocateClientId: () => this.store.allocateId('client'),
            connectionInboundBytesMax: this.connectionInboundBytesMax(),
            offerBatch: (slotChain, frame, budget) => this.batchesQueue.offer(slotChain, frame, budget),
            offerReads: (slotChain, frame, budget) => this.readsQueue.offer(slotChain, frame, budget),
            tls: this.tls?.credentials ?? null,
            log: (entry) => this.logLink(entry),
          },
        ),
      );
    }
    return slots;
  }

  /**
   * What one connection's frames may take of the inbound queues: a predecessor runs at most its
   * in-flight log ahead of our acks, a client at most its window of unacknowledged bytes (16 MiB),
   * each plus the frame in hand.
   */
  private connectionInboundBytesMax(): number {
    return this.options.inflightBytesMax + this.options.linkRecordBytesMax;
  }

  /** Reads the cluster's settings, listens, registers in etcd, follows the chain table. Resolves once the host is registered. */
  async start(): Promise<void> {
    this.cluster = await this.store.adoptSettings({
      ...(this.settings.chains === undefined ? {} : { chains: this.settings.chains }),
      ...(this.settings.replicas === undefined ? {} : { replicas: this.settings.replicas }),
    });
    this.slots = this.makeSlots(this.cluster.chains);
    await this.listen();
    if (this.tls !== null) checkCertificateNames(this.tls, this.url);
    if (this.tls !== null && this.settings.httpToken === undefined) this.log('warn', 'http-without-token', 'uWS does not require a client certificate of HTTP requests (links prove one in their handshake): without an HTTP token, anyone who reaches this port can use /kv');
    this.startNode();
    this.stops.push(await this.store.watchHostTable((table) => this.onHostTable(table), (error) => this.log('warn', 'etcd-watch', error.message)));
    await this.register();
    this.stops.push(await this.store.watchTable(this.cluster.chains, (table) => this.onTable(table), (error) => this.log('warn', 'etcd-watch', error.message)));
    this.statusTimer = setInterval(() => void this.publishStatus(), STATUS_INTERVAL_MS);
    if (this.settings.master !== false) {
      this.master = new EtcdMaster({ store: this.store, settings: this.cluster, candidateId: this.hostId, failSlow: this.options.failSlow, log: (line) => this.log('info', 'master', line) });
      this.master.on('demoted', (demotion) => this.log('warn', 'host-demoted', `host ${demotion.hostId} is slow (${demotion.timesMedian.toFixed(1)}x its peers' time per write): moved out of its chains for ${demotion.quarantineMs} ms`));
      this.master.on('decision', (decision) => this.log('info', 'master-decision', JSON.stringify(decision, (_key, value: unknown) => (value instanceof Map ? Object.fromEntries(value) : value))));
      this.master.on('elected', () => this.placeMaster());
      this.master.start();
    }
    this.log('info', 'host-started', `host ${this.hostId} serves at ${this.url} (zone ${this.zone}, incarnation ${this.incarnation}; ${this.cluster.chains} chains of ${this.cluster.replicas} replicas)`);
  }

  private listen(): Promise<void> {
    const load = loadUws();
    const { uws, native } = load;
    const app = createUwsApp(load, this.tls?.files ?? null);
    this.peerRoute = attachPeerLinkRoute(app, native, uws, {
      path: '/peer',
      secret: this.settings.peerSecret,
      tls: this.tls?.credentials ?? null,
      nodeId: HOST_PREFIX + this.hostId,
      identityKey: this.identity.privateKey,
      peerIdentity: (nodeId) => this.hostLinks.peerIdentity(nodeId),
      maxRecordBytes: this.hostLinks.recordBytesMax,
      validate: (bytes) => this.hostLinks.validate(bytes),
      highWaterBytes: LINK_HIGH_WATER_BYTES,
      // One link from each other host at most (and a few replacing one that broke).
      connectionsMax: PEER_CONNECTIONS_MAX,
      handshakesMax: PEER_HANDSHAKES_MAX,
      log: (entry) => this.logLink(entry),
      onLink: (link) => this.hostLinks.acceptLink(link),
    });
    for (const slot of this.slots) slot.sessions.attach(app, native, uws);
    this.http = attachHttpApi(app, {
      status: () => this.status(),
      unavailable: () => (this.slots.every((slot) => slot.entry === null) ? 'no chain is configured yet: no host has started one in etcd' : null),
      digest: async () => ({ hostId: this.hostId, replicas: await this.digests() }),
      secret: this.settings.clientSecret,
      hostUrl: () => this.url,
      ...(this.settings.chain === undefined ? {} : { chain: this.settings.chain }),
      writeRefusal: (key) => this.diskRefusal(chainOf(key, 0, key.length, this.slots.length)),
      keyBytesMax: this.options.keyBytesMax,
      valueBytesMax: this.options.valueBytesMax,
      ...(this.settings.httpToken === undefined ? {} : { token: this.settings.httpToken }),
      metrics: () => this.metrics(),
      ...(this.settings.metricsToken === undefined ? {} : { metricsToken: this.settings.metricsToken }),
      requestServed: (method, seconds) => this.httpRequests[method].record(seconds),
      ...(this.tls === null ? {} : { tls: this.tls.clientOptions }),
      log: (level, event, message) => this.log(level, event, message),
    });
    return new Promise((resolve, reject) => {
      app.listen(this.settings.listenHost, this.settings.port, (socket) => {
        if (socket === false) {
          reject(new DabbaError(ErrorCode.invalidArgument, `cannot listen on ${this.settings.listenHost}:${this.settings.port}`));
          return;
        }
        this.listenSocket = socket;
        this.port = uws.us_socket_local_port(socket as never);
        this.url = this.settings.advertiseUrl ?? `${this.tls === null ? 'ws' : 'wss'}://${this.settings.listenHost === '0.0.0.0' ? hostname() : this.settings.listenHost}:${this.port}`;
        resolve();
      });
    });
  }

  private startNode(): void {
    const node = new NodePort(
      { nodeId: 1, resolved: this.options },
      {
        downstream: (chain, frame) => this.slots[chain]?.links.sendDownstream(frame) ?? true,
        upstream: (chain, frame) => this.slots[chain]?.links.sendUpstream(frame) ?? true,
        clientAck: (chain, frame) => this.slots[chain]?.sessions.deliverAck(frame) ?? true,
        readReply: (chain, frame) => this.slots[chain]?.sessions.deliverReadReply(frame) ?? true,
        rejected: (chain, code, reason, replicaId) => {
          this.logRefusal(code, 'replica-rejected', `chain ${chain}: ${code}: ${reason}`);
          if (code === ErrorCode.corrupt || code === ErrorCode.sequenceGap) this.slots[chain]?.onDamagedBatch(replicaId, code);
          if (code === ErrorCode.logDiverged) this.slots[chain]?.onLogDiverged(replicaId);
        },
        disk: ({ chain, replicaId, full, freeBytes, reserveBytes }) => {
          if (full) this.fullDisks.add(replicaId);
          else this.fullDisks.delete(replicaId);
          // Clients hear of it with the view: their writes to that chain are refused meanwhile.
          this.slots[chain]?.sessions.broadcastView();
          if (full) this.log('warn', 'disk-full', `chain ${chain}: replica ${replicaId}'s disk is full (${freeBytes} bytes free, reserve ${reserveBytes}): the chain refuses writes until space is freed`);
          else this.log('info', 'disk-ok', `chain ${chain}: replica ${replicaId}'s disk has room again (${freeBytes} bytes free)`);
        },
        inboundRoom: () => {
          this.batchesQueue.drain();
          this.acksQueue.drain();
          this.readsQueue.drain();
        },
      },
    );
    this.node = node;
    node.done.then(
      () => undefined,
      (error: unknown) => {
        if (this.node !== node || this.closed) return;
        this.log('error', 'node-failed', `the node thread failed: ${(error as Error)?.message ?? error}`);
        void this.startOver();
      },
    );
  }

  private async register(): Promise<void> {
    const registration = await this.store.registerHost(this.hostId, this.settings.leaseTtlSeconds, {
      incarnation: this.incarnation,
      zone: this.zone,
      url: this.url,
      publicKey: this.identity.publicKeyText,
    });
    this.registration = registration;
    registration.lost.addEventListener('abort', () => {
      if (this.registration !== registration || this.closed) return;
      this.log('warn', 'lease-lost', `lost the etcd lease of incarnation ${this.incarnation}: leaving every chain, will be placed again`);
      void this.startOver();
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Following the table

  private onHostTable(table: ReadonlyMap<string, { info: HostInfo | null; status: HostStatus | null }>): void {
    const now = performance.now();
    for (const [hostId, { status }] of table) if (status !== null && status !== this.hostTable.get(hostId)?.status) this.statusHeardAt.set(hostId, now);
    for (const hostId of this.statusHeardAt.keys()) if (!table.has(hostId)) this.statusHeardAt.delete(hostId);
    this.hostTable = new Map(table);
    this.hostTableLoaded = true;
    this.hostLinks.forgetHostsExcept(new Set(table.keys()));
    // A member's URL may have just become known: dial it if it is a predecessor. (follow() also
    // sends clients the view again if it changed: another host's replica may have filled its disk.)
    for (const slot of this.slots) slot.follow();
    this.placeMaster();
  }

  private onTable(table: StoredTable): void {
    if (this.closed) return;
    table.entries.forEach((entry, chain) => {
      if (entry === null) return;
      for (const [replicaId, home] of entry.homes) this.homes.set(replicaId, home);
      this.noteEpoch(chain, entry);
      // Only while the host is registered: entries about an earlier incarnation are moot meanwhile.
      this.slots[chain]!.onEntry(entry);
    });
    table.handoffs.forEach((request, chain) => {
      if (request !== null) this.slots[chain]!.onHandoff(request);
    });
    this.pruneHomes();
    this.placeMaster();
  }

  /** A chain's configuration changed since the table was last seen: the status lists it (not the first sight of a chain). */
  private noteEpoch(chain: number, entry: ChainEntry): void {
    const { configuration } = entry;
    const seen = this.seenEpochs[chain] ?? 0;
    if (configuration.epoch <= seen) return;
    this.seenEpochs[chain] = configuration.epoch;
    if (seen === 0) return;
    const hosts = participants(configuration).map((replicaId) => entry.homes.get(replicaId)?.host ?? null);
    this.reconfigurations.unshift({ time: new Date().toISOString(), chain, epoch: configuration.epoch, hosts });
    this.reconfigurations.length = Math.min(this.reconfigurations.length, RECENT_RECONFIGURATIONS);
  }

  /** Keeps the homes of the replicas the table names now (ids are never reused, so the map would only grow). */
  private pruneHomes(): void {
    if (this.homes.size <= 4 * this.slots.length * NODES_MAX) return;
    const named = new Set<number>();
    for (const slot of this.slots) for (const replicaId of slot.entry?.homes.keys() ?? []) named.add(replicaId);
    for (const replicaId of this.homes.keys()) if (!named.has(replicaId)) this.homes.delete(replicaId);
  }

  /** The info of the host a replica runs on, if that host is registered in the replica's incarnation. */
  private homeInfo(replicaId: number): { hostId: string; info: HostInfo } | null {
    const home = this.homes.get(replicaId);
    const info = home === undefined ? null : (this.hostTable.get(home.host)?.info ?? null);
    return home === undefined || info === null || info.incarnation !== home.incarnation ? null : { hostId: home.host, info };
  }

  private urlOf(replicaId: number): string | null {
    return this.homeInfo(replicaId)?.info.url ?? null;
  }

  /**
   * With one chain, the master is best placed on the tail's host. A head or middle that dies is
   * evicted at once on its successor's report (rule 2b), but only by a live master: if the master
   * died with it, a new one is elected only when its lease runs out. The tail's death waits for its
   * lease anyway, which a new election then overlaps. So a leader elsewhere steps down, and the
   * next in line takes over. With many chains every host is a tail of some: no host is better.
   * Only towards a tail's host that is alive, as its status refreshed lately shows: one that died
   * keeps its registration until its lease runs out, and stepping down towards it meanwhile would
   * pass leadership round the others, every term ended at once, with no master deciding anything.
   */
  private placeMaster(): void {
    const slot = this.slots[0];
    const configuration = slot?.configuration ?? null;
    if (this.slots.length !== 1 || this.master?.isLeader !== true || configuration === null || configuration.members.length < 2) return;
    if (servesReads(slot!.role())) return;
    const tailHost = this.homeInfo(configuration.members.at(-1)!)?.hostId ?? null;
    if (tailHost === null || this.hostTable.get(tailHost)?.status?.candidate !== true) return;
    if (performance.now() - (this.statusHeardAt.get(tailHost) ?? Number.NEGATIVE_INFINITY) > STATUS_SILENCE_MS) return;
    this.master.stepDown(`this host's replica is ${slot!.role() ?? 'not a member'}: the master moves towards the tail's host`);
  }

  private gaveUp(chain: number, replicaId: number, reason: string): void {
    this.log('warn', 'replica-given-up', `chain ${chain}: gave replica ${replicaId} up (${reason}): the master places another`);
    this.failed.push(replicaId);
    if (this.failed.length > FAILED_REPLICAS_MAX) this.failed.shift();
    void this.publishStatus();
  }

  /**
   * The node failed or the lease was lost: every replica is gone. Start a new node and register as
   * a new incarnation; the master places new replicas on it, which copy their chains.
   */
  private startOver(): Promise<void> {
    if (this.reregistering !== null) return this.reregistering;
    this.reregistering = (async () => {
      const node = this.node;
      this.node = null;
      for (const slot of this.slots) slot.nodeLost();
      await node?.kill();
      const old = this.registration;
      this.registration = null;
      await old?.revoke().catch(() => undefined);
      for (let attempt = 0; !this.closed; attempt++) {
        try {
          this.incarnation = newIncarnation();
          this.dataDir?.startOver(this.incarnation);
          this.failed = [];
          if (this.node === null) this.startNode();
          await this.register();
          for (const slot of this.slots) slot.follow();
          this.log('info', 'registered-again', `registered again as incarnation ${this.incarnation}`);
          return;
        } catch (error) {
          this.log('warn', 'register-retry', `cannot register yet: ${(error as Error).message}`);
          await delay(Math.min(2000, 100 * 2 ** attempt));
        }
      }
    })().finally(() => {
      this.reregistering = null;
    });
    return this.reregistering;
  }

  // ---------------------------------------------------------------------------------------------
  // Status

  private async publishStatus(): Promise<void> {
    const registration = this.registration;
    if (registration === null || this.closed) return;
    const now = performance.now();
    let writesApplied = 0;
    const replicas = [];
    const commits = new WeightedHistogram(LATENCY_BUCKETS_SECONDS);
    for (const slot of this.slots) {
      const status = slot.status();
      if (status !== null) replicas.push(status);
      writesApplied += slot.stats()?.writesApplied ?? 0;
      const latency = slot.commitLatency();
      if (latency !== null) commits.add(latency);
    }
    this.recentCommits.add(now, commits);
    this.commitP99Ms = this.recentCommits.window().quantile(0.99) * 1000;
    const elapsed = (now - this.lastStatusAt) / 1000;
    if (elapsed > 0) this.writesPerSecond = Math.max(0, (writesApplied - this.lastWritesApplied) / elapsed);
    this.lastWritesApplied = writesApplied;
    this.lastStatusAt = now;
    const status: HostStatus = {
      incarnation: this.incarnation,
      candidate: this.settings.master !== false,
      writesPerSecond: Math.round(this.writesPerSecond),
      commitP99Ms: this.commitP99Ms,
      ...(this.node === null ? {} : { load: this.node.load() }),
      replicas,
      failed: [...this.failed],
    };
    try {
      await registration.putStatus(status);
    } catch (error) {
      // etcd unreachable: the lease decides what happens; keep trying.
      this.log('warn', 'status-failed', (error as Error).message);
    }
  }

  status(): HostStatusReport {
    const chains: ChainReport[] = [];
    const roles = new Map<string, { heads: number; middles: number; tails: number; joining: number }>();
    for (const hostId of this.hostTable.keys()) roles.set(hostId, { heads: 0, middles: 0, tails: 0, joining: 0 });
    for (const slot of this.slots) {
      const configuration = slot.configuration;
      if (configuration === null) continue;
      const tailStatus = this.replicaStatus(configuration.members.at(-1)!);
      const members = participants(configuration).map((replicaId) => {
        const role = String(roleIn(configuration, replicaId));
        const hostId = this.homeInfo(replicaId)?.hostId ?? null;
        const count = hostId === null ? undefined : roles.get(hostId);
        if (count !== undefined) {
          if (role === 'head' || role === 'solo') count.heads++;
          if (role === 'middle') count.middles++;
          if (role === 'tail' || role === 'solo') count.tails++;
          if (role === 'joining') count.joining++;
        }
        const appliedSeq = this.replicaStatus(replicaId)?.appliedSeq ?? null;
        // Writes behind the tail (a joiner copying its snapshot reports 0 until it replays).
        const lag = appliedSeq === null || tailStatus === null ? null : Math.max(0, tailStatus.appliedSeq - appliedSeq);
        return { replicaId, hostId, role, appliedSeq, lag };
      });
      chains.push({ chain: slot.chain, epoch: configuration.epoch, members });
    }
    return {
      hostId: this.hostId,
      url: this.url,
      zone: this.zone,
      incarnation: this.incarnation,
      isMaster: this.master?.isLeader ?? false,
      settings: this.cluster,
      chains,
      replicas: this.slots
        .filter((slot) => slot.replicaId !== 0)
        .map((slot) => ({ chain: slot.chain, replicaId: slot.replicaId, role: slot.role(), epoch: slot.configuration?.epoch ?? 0, servingReads: slot.isServingReads(), stats: slot.stats() })),
      hosts: [...roles].map(([hostId, count]) => {
        const { info, status } = this.hostTable.get(hostId) ?? { info: null, status: null };
        // This host's own figures as of now; the others' as they last reported them.
        const own = hostId === this.hostId;
        const writesPerSecond = own ? Math.round(this.writesPerSecond) : (status?.writesPerSecond ?? 0);
        const commitP99Ms = own ? this.commitP99Ms : (status?.commitP99Ms ?? 0);
        return { hostId, zone: info?.zone ?? null, url: info?.url ?? null, ...count, writesPerSecond, commitP99Ms };
      }),
      peerLinks: this.hostLinks.summary(),
      writesPerSecond: Math.round(this.writesPerSecond),
      commitP99Ms: this.commitP99Ms,
      clients: this.slots.reduce((sum, slot) => sum + slot.sessions.count, 0),
      refusals: this.refusals.totals(),
      reconfigurations: [...this.reconfigurations],
    };
  }

  /** This host's figures in the Prometheus text format (GET /metrics; README, "Metrics"). */
  metrics(): Promise<string> {
    this.metricsRegistry ??= new DabbaMetrics(() => this.metricsSnapshot(), { placeLabel: 'host', processMetrics: true });
    return this.metricsRegistry.text();
  }

  /**
   * Its own replicas' figures (each host reports its own; Prometheus sums the cluster), the epochs
   * it follows, and its HTTP API's client's writes and reads.
   */
  private metricsSnapshot(): MetricsSnapshot {
    const status = this.status();
    const replicas: ReplicaSample[] = [];
    const chains = new Map(status.chains.map((chain) => [chain.chain, chain]));
    for (const slot of this.slots) {
      const stats = slot.replicaId === 0 ? null : slot.stats();
      if (stats === null) continue;
      const member = chains.get(slot.chain)?.members.find((entry) => entry.replicaId === slot.replicaId);
      replicas.push({ chain: slot.chain, replicaId: slot.replicaId, place: this.hostId, role: slot.role() ?? 'none', ...stats, lag: member?.lag ?? null, commitLatency: slot.commitLatency() });
    }
    const { dialed, accepted } = status.peerLinks;
    return {
      chains: status.chains.map(({ chain, epoch }) => ({ chain, epoch })),
      replicas,
      clients: this.http?.client()?.metricsSnapshot().clients ?? [],
      // Every reconfiguration raises its chain's epoch by one, from 1.
      reconfigurations: status.chains.reduce((total, { epoch }) => total + epoch - 1, 0),
      refusals: status.refusals,
      demotions: this.master?.demotions ?? 0,
      host: { clients: status.clients, peerLinks: dialed.length + accepted.length, httpRequests: this.httpRequests },
    };
  }

  /** A replica's latest reported progress (its host's status in its incarnation), or null. */
  /** Why `chain` refuses writes now (a member's or its joiner's disk is full, as its host reports), or null. */
  diskRefusal(chain: number): string | null {
    const configuration = this.slots[chain]?.configuration ?? null;
    if (configuration === null) return null;
    for (const replicaId of participants(configuration)) {
      // This host's own replica as its node last said; the others as their hosts last reported.
      const full = this.slots[chain]!.replicaId === replicaId ? this.fullDisks.has(replicaId) : this.replicaStatus(replicaId)?.diskFull === true;
      if (full) {
        return `chain ${chain}: the disk of replica ${replicaId} is full: writes are refused until space is freed`;
      }
    }
    return null;
  }

  private replicaStatus(replicaId: number): { appliedSeq: number; diskFull: boolean } | null {
    const home = this.homes.get(replicaId);
    return home === undefined ? null : reportedStatus(this.hostTable, home, replicaId);
  }

  /** This host's replica's role in `chain` (0 by default), or null when it has none there. */
  roleIn(chain = 0): Role | null {
    return this.slots[chain]?.role() ?? null;
  }

  /** Whether this host's replica of `chain` (0 by default) serves reads now (the tail, with a live lease). */
  servingReads(chain = 0): boolean {
    return this.slots[chain]?.isServingReads() ?? false;
  }

  /** The configuration of `chain` as this host follows it (tests), or null. */
  configurationOf(chain: number): Configuration | null {
    return this.slots[chain]?.configuration ?? null;
  }

  /** Each of this host's replicas' store digest, by chain (GET /digest, and tests). */
  async digests(): Promise<Array<{ chain: number; replicaId: number; digest: string; keys: number; appliedSeq: number }>> {
    const node = this.node;
    if (node === null) throw new DabbaError(ErrorCode.closed, 'no node runs on this host');
    const held = this.slots.filter((slot) => slot.replicaId !== 0 && slot.role() !== 'joining');
    return Promise.all(held.map(async (slot) => ({ chain: slot.chain, replicaId: slot.replicaId, ...(await node.digest(slot.chain)) })));
  }

  /** Leaves cleanly: revokes the lease (the master removes this host's replicas at once), stops everything. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.statusTimer !== null) clearInterval(this.statusTimer);
    // The steps that need etcd share a deadline: with etcd unreachable they would wait forever, and
    // a host must still stop (its lease then runs out on its own, as if it had crashed).
    const etcdDeadline = performance.now() + CLOSE_ETCD_WAIT_MS;
    await settleBy(this.master?.close(), etcdDeadline);
    await settleBy(Promise.allSettled(this.stops.map((stop) => stop())), etcdDeadline);
    await settleBy(this.registration?.revoke(), etcdDeadline);
    for (const slot of this.slots) {
      slot.links.closeAll(LinkCloseCode.goingAway, 'host closing');
      slot.sessions.closeAll();
    }
    this.hostLinks.closeAll(LinkCloseCode.goingAway, 'host closing');
    this.peerRoute?.closeAll();
    this.http?.close();
    if (this.listenSocket !== null) loadUws().uws.us_listen_socket_close(this.listenSocket as never);
    await this.node?.stop();
    this.node = null;
    this.dataDir?.release();
    // Stopping the node may have used up the deadline: closing the etcd client still gets a moment.
    await settleBy(this.store.close(), Math.max(etcdDeadline, performance.now() + CLOSE_ETCD_WAIT_MS / 4));
  }

  private log(level: HostLogEntry['level'], event: string, message: string, fields: Record<string, unknown> = {}): void {
    const entry: HostLogEntry = { level, event, message, host: this.hostId, ...fields };
    if (this.settings.log !== undefined) this.settings.log(entry);
    else process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`);
    this.emit('log', entry);
  }

  /**
   * A link's log line. Refusals (warnings) are counted for /status, and every kind of link line is
   * rate-limited by code: a peer that fails its handshake, sends garbage or reconnects in a loop
   * costs a few lines a second, not one per attempt.
   */
  private logLink(entry: PeerLinkLogEntry): void {
    const fields: Record<string, unknown> = { remote: entry.remoteNodeId, address: entry.remoteAddress, closeCode: entry.closeCode };
    if (entry.level === 'warn') return this.logRefusal(entry.code, entry.code, entry.message, fields);
    const verdict = this.linkEvents.note(entry.code);
    if (verdict === null) return;
    if (verdict.suppressed > 0) fields.suppressed = verdict.suppressed;
    this.log(entry.level, entry.code, entry.message, fields);
  }

  /** An input refused (coded `code`): counted for /status, and logged at a bounded rate. */
  private logRefusal(code: string, event: string, message: string, fields: Record<string, unknown> = {}): void {
    const verdict = this.refusals.note(code);
    if (verdict === null) return;
    this.log('warn', event, message, verdict.suppressed > 0 ? { ...fields, code, suppressed: verdict.suppressed } : { ...fields, code });
  }
}

function newIncarnation(): string {
  return randomBytes(9).toString('base64url');
}

function checkClusterSettings(options: HostOptions): void {
  const { chains, replicas, zone } = options;
  if (chains !== undefined && (!Number.isSafeInteger(chains) || chains < 1 || chains > CHAINS_MAX)) {
    throw new DabbaError(ErrorCode.invalidArgument, `chains must be an integer in 1..${CHAINS_MAX} (got ${chains})`);
  }
  if (replicas !== undefined && (!Number.isSafeInteger(replicas) || replicas < 1 || replicas > NODES_MAX)) {
    throw new DabbaError(ErrorCode.invalidArgument, `replicas must be an integer in 1..${NODES_MAX} (got ${replicas})`);
  }
  if (zone !== undefined && !ZONE.test(zone)) throw new DabbaError(ErrorCode.invalidArgument, `zone must be 1-64 letters, digits, '-', '_' or '.' (got ${JSON.stringify(zone)})`);
}

/**
 * The HTTP API answers anyone who reaches the port: on an address other machines can reach it
 * needs a token, unless the operator says in so many words that it need not (`httpInsecure`).
 */
function checkHttpExposure(options: HostOptions): void {
  const listenHost = options.listenHost ?? '127.0.0.1';
  if (options.httpToken !== undefined || options.httpInsecure === true || LOOPBACK_HOSTS.test(listenHost)) return;
  throw new DabbaError(
    ErrorCode.invalidArgument,
    `the HTTP API would listen on ${listenHost} with no token: give one (--http-token-file, DABBA_HTTP_TOKEN) or, to serve it open, --http-insecure`,
  );
}

/** Two distinct secrets of at least 16 bytes: one for both would let a client link as a replica. */
function checkSecrets(peerSecret: Buffer, clientSecret: Buffer): void {
  checkSecret(peerSecret);
  checkSecret(clientSecret);
  if (peerSecret.equals(clientSecret)) throw new DabbaError(ErrorCode.invalidArgument, 'the peer secret and the client secret must differ');
}

/** Waits for `work` to settle (either way), or until `deadline` (performance.now() time), whichever comes first. */
async function settleBy(work: Promise<unknown> | undefined, deadline: number): Promise<void> {
  if (work === undefined) return;
  let timer: NodeJS.Timeout | undefined;
  const timeUp = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - performance.now()))));
  await Promise.race([work.catch(() => undefined), timeUp]);
  clearTimeout(timer);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

export async function startHost(options: HostOptions): Promise<DabbaHost> {
  const host = new DabbaHost(options);
  try {
    await host.start();
  } catch (error) {
    await host.close().catch(() => undefined);
    throw error;
  }
  return host;
}

function httpLatency(): WeightedHistogram {
  return new WeightedHistogram(LATENCY_BUCKETS_SECONDS);
}
