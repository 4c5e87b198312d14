/**
 * One host of a chain that spans hosts (`dabba serve`): a uWebSockets.js server for peer links
 * (/peer), remote clients (/client) and the HTTP API, one replica pinned on a worker thread behind
 * SharedArrayBuffer rings (./replica-port.ts), and the host's place in etcd: a lease-bound
 * registration, a status it refreshes, the configuration it follows, and a master candidate.
 *
 * This module follows the configuration and runs the replica's life: started as the chain's first
 * replica or as a joiner, reconfigured with every epoch, and replaced by a new, empty replica (a
 * new replica id) when it was removed, failed, or lost its lease. Links to the neighbours are in
 * ./chain-links.ts, remote clients in ./client-sessions.ts, HTTP in ./http-api.ts.
 */
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Role } from '../../native-free-core/chain/node.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { ordersWrites, roleIn, servesReads, type Configuration } from '../../native-free-core/master/chain-master.js';
import type { ClusterMember } from '../../native-free-core/wire/cluster-view.js';
import { EtcdMaster } from '../master/etcd-master.js';
import { EtcdConfigurationStore, type EtcdAuth, type EtcdTls, type HostInfo, type HostRegistration, type HostStatus, type StopWatching } from '../master/etcd-store.js';
import { resolveOptions, type ChainOptions, type ResolvedOptions } from '../options.js';
import { refuseSealingIn } from '../sealing.js';
import { frameEnvelopeValidator, LinkCloseCode, type PeerLinkLogEntry } from '../transport/peer-link.js';
import { checkSecret } from '../transport/peer-link-handshake.js';
import { attachPeerLinkRoute, type PeerLinkRoute } from '../transport/peer-link-server.js';
import type { TlsFiles } from '../transport/tls.js';
import { createUwsApp, loadUws } from '../transport/uws.js';
import { ChainLinks, HOST_PREFIX, LINK_HIGH_WATER_BYTES, type ReplicaIdentity } from './chain-links.js';
import { ClientSessions } from './client-sessions.js';
import { ClientTokens } from './client-tokens.js';
import { HostIdentity, publicKeyFromText } from './host-identity.js';
import { RefusalLog } from './refusal-log.js';
import { attachHttpApi, type HttpApi } from './http-api.js';
import { checkCertificateNames, resolveHostTls, type HostTls } from './host-tls.js';
import { InboundQueue } from './inbound-queue.js';
import { ReplicaPort } from './replica-port.js';

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
  /**
   * Serve the HTTP API without a token on a non-loopback address. Without a token and without this,
   * a host that listens beyond loopback refuses to start.
   */
  httpInsecure?: boolean;
  /** Lease TTL in seconds: how long a silent host stays a member. Default 2. */
  leaseTtlSeconds?: number;
  /** Run a master candidate on this host. Default true. */
  master?: boolean;
  /** Ring, batch and limit settings, as for createChain() (not `sealing`: clients seal, hosts hold no keys). */
  chain?: Omit<ChainOptions, 'sealing'>;
  /** Where log lines go (one JSON object each). Default stderr. */
  log?: (entry: HostLogEntry) => void;
}

export interface HostLogEntry {
  level: 'info' | 'warn' | 'error';
  event: string;
  message: string;
  [field: string]: unknown;
}

export interface HostStatusReport {
  hostId: string;
  url: string;
  replicaId: number;
  role: Role | null;
  epoch: number;
  servingReads: boolean;
  isMaster: boolean;
  configuration: Configuration | null;
  members: Array<ClusterMember & { hostId: string | null; role: string; status: HostStatus | null }>;
  replica: ReturnType<ReplicaPort['stats']> | null;
  writesPerSecond: number;
  clients: number;
  /** Inputs refused since the host started, by error code (malformed frames, failed handshakes, ...). */
  refusals: Record<string, number>;
}

/** How often the host refreshes its status in etcd (the master drives joins from it). */
const STATUS_INTERVAL_MS = 200;
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
  private readonly settings: Required<Pick<HostOptions, 'leaseTtlSeconds' | 'listenHost'>> & HostOptions;
  private readonly store: EtcdConfigurationStore;
  private master: EtcdMaster | null = null;
  private registration: HostRegistration | null = null;
  private replicaId = 0;
  private replica: ReplicaPort | null = null;
  /** The epoch the replica was started in (a joiner) or last reconfigured to. */
  private replicaEpoch = 0;
  private configuration: Configuration | null = null;
  /** The newest configuration the watch delivered, even while this host was re-registering. */
  private latestConfiguration: Configuration | null = null;
  private hostTable = new Map<string, { info: HostInfo | null; status: HostStatus | null }>();
  private readonly links: ChainLinks;
  private readonly batchesQueue: InboundQueue;
  private readonly acksQueue: InboundQueue;
  private readonly readsQueue: InboundQueue;
  private readonly sessions: ClientSessions;
  private peerRoute: PeerLinkRoute | null = null;
  private http: HttpApi | null = null;
  private listenSocket: unknown = null;
  private readonly stops: StopWatching[] = [];
  private statusTimer: NodeJS.Timeout | null = null;
  private handoffRequest: { epoch: number; joiner: number } | null = null;
  /** Our predecessor whose host refused a connection (see ChainLinks); 0 when none. */
  private predecessorDown = 0;
  private handoffBegun = '';
  private lastWritesApplied = 0;
  private lastStatusAt = performance.now();
  private writesPerSecond = 0;
  private closed = false;
  private reregistering: Promise<void> | null = null;
  private readonly validate = frameEnvelopeValidator();
  /** This host's Ed25519 key pair: it signs peer-link handshakes (see ./host-identity.ts). */
  private readonly identity = new HostIdentity();
  /** Refusals by code (in /status), and the rate limit on their log lines. */
  private readonly refusals = new RefusalLog();
  /** The rate limit on links' other log lines (opened, closed). */
  private readonly linkEvents = new RefusalLog();
  private readonly tls: HostTls | null;

  constructor(options: HostOptions) {
    super();
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(options.hostId ?? '')) {
      throw new DabbaError(ErrorCode.invalidArgument, `hostId must be 1-64 letters, digits, '-', '_' or '.' (got ${JSON.stringify(options.hostId)})`);
    }
    this.hostId = options.hostId;
    checkSecrets(options.peerSecret, options.clientSecret);
    checkHttpExposure(options);
    refuseSealingIn(options.chain, 'a host: values are sealed by clients, and hosts never hold the keys');
    this.settings = { leaseTtlSeconds: 2, listenHost: '127.0.0.1', ...options };
    this.options = resolveOptions(options.chain ?? {});
    this.recordBytesMax = this.options.linkRecordBytesMax;
    this.tls = resolveHostTls(options.tls, options.advertiseUrl);
    this.store = new EtcdConfigurationStore({ hosts: options.etcd, ...(options.etcdPrefix === undefined ? {} : { prefix: options.etcdPrefix }), tls: options.etcdTls, auth: options.etcdAuth });
    const push = (kind: 'batch' | 'ack' | 'reads') => (frame: Uint8Array): boolean => {
      const replica = this.replica;
      if (replica === null) return true; // No replica: nothing to deliver to; the sender will resend.
      return kind === 'batch' ? replica.pushBatch(frame) : kind === 'ack' ? replica.pushAck(frame) : replica.pushReads(frame);
    };
    this.batchesQueue = new InboundQueue(push('batch'), INBOUND_QUEUE_BYTES_MAX);
    this.acksQueue = new InboundQueue(push('ack'), INBOUND_QUEUE_BYTES_MAX);
    this.readsQueue = new InboundQueue(push('reads'), INBOUND_QUEUE_BYTES_MAX);
    this.links = new ChainLinks({
      secret: options.peerSecret,
      identityKey: this.identity.privateKey,
      identityOf: (replicaId) => this.identityOf(replicaId),
      recordBytesMax: this.recordBytesMax,
      controlFrameBytesMax: this.options.controlFrameBytesMax,
      urlOf: (replicaId) => this.urlOf(replicaId),
      tls: this.tls?.credentials ?? null,
      replicaProgress: () => {
        const stats = this.replica?.stats();
        return stats === undefined ? null : { epoch: stats.epoch, appliedSeq: stats.appliedSeq };
      },
      connectionInboundBytesMax: this.connectionInboundBytesMax(),
      offerBatch: (frame, budget) => this.batchesQueue.offer(frame, budget),
      offerAck: (frame, budget) => this.acksQueue.offer(frame, budget),
      kick: () => this.replica?.kick(),
      joinLinkLost: (predecessor) => void this.onJoinLinkLost(predecessor),
      predecessorRefused: (predecessor) => {
        const down = predecessor ?? 0;
        if (down === this.predecessorDown) return;
        this.predecessorDown = down;
        if (predecessor === null) return;
        this.log('warn', 'predecessor-down', `replica ${predecessor}'s host refuses connections: reporting it, so the master need not wait for its lease`);
        void this.publishStatus();
      },
      log: (entry) => {
        if ('nodeId' in entry) this.logLink(entry);
        else if (entry.code.startsWith('DABBA_ERR_')) this.logRefusal(entry.code, entry.code, entry.message);
        else this.log(entry.level, entry.code, entry.message);
      },
    });
    this.sessions = new ClientSessions({
      secret: options.clientSecret,
      tokens: new ClientTokens(options.peerSecret),
      nodeId: `host:${this.hostId}`,
      maxRecordBytes: this.recordBytesMax,
      recordLimits: { keyBytesMax: this.options.keyBytesMax, valueBytesMax: this.options.valueBytesMax },
      allocateClientId: () => this.store.allocateId('client'),
      view: () => this.clusterView(),
      isHead: () => ordersWrites(this.role()),
      isServingReads: () => this.isServingReads(),
      connectionInboundBytesMax: this.connectionInboundBytesMax(),
      offerBatch: (frame, budget) => this.batchesQueue.offer(frame, budget),
      offerReads: (frame, budget) => this.readsQueue.offer(frame, budget),
      tls: this.tls?.credentials ?? null,
      log: (entry) => this.logLink(entry),
    });
  }

  /**
   * What one connection's frames may take of the inbound queues: a predecessor runs at most its
   * in-flight log ahead of our acks, a client at most its window of unacknowledged bytes (16 MiB),
   * each plus the frame in hand.
   */
  private connectionInboundBytesMax(): number {
    return this.options.inflightBytesMax + this.options.linkRecordBytesMax;
  }

  /** Listens, registers in etcd, follows the configuration. Resolves once the host is registered. */
  async start(): Promise<void> {
    await this.listen();
    if (this.tls !== null) checkCertificateNames(this.tls, this.url);
    if (this.tls !== null && this.settings.httpToken === undefined) this.log('warn', 'http-without-token', 'uWS does not require a client certificate of HTTP requests (links prove one in their handshake): without an HTTP token, anyone who reaches this port can use /kv');
    this.replicaId = await this.store.allocateId('replica');
    this.stops.push(await this.store.watchHostTable((table) => this.onHostTable(table), (error) => this.log('warn', 'etcd-watch', error.message)));
    await this.register();
    this.stops.push(
      await this.store.watch(
        (configuration) => {
          if (this.latestConfiguration === null || configuration.epoch > this.latestConfiguration.epoch) this.latestConfiguration = configuration;
          // While re-registering as a new replica, configurations about the old one are moot; the
          // newest is applied once the new registration is in place.
          if (this.reregistering === null) this.onConfiguration(configuration);
        },
        (error) => this.log('warn', 'etcd-watch', error.message),
      ),
    );
    this.stops.push(await this.store.watchHandoff((request) => this.onHandoffRequest(request)));
    this.statusTimer = setInterval(() => void this.publishStatus(), STATUS_INTERVAL_MS);
    if (this.settings.master !== false) {
      this.master = new EtcdMaster({ store: this.store, candidateId: this.hostId, log: (line) => this.log('info', 'master', line) });
      this.master.on('decision', (decision) => this.log('info', 'master-decision', JSON.stringify(decision)));
      this.master.on('elected', () => this.placeMaster());
      this.master.start();
    }
    this.log('info', 'host-started', `host ${this.hostId} serves at ${this.url} as replica ${this.replicaId}`);
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
      peerIdentity: (nodeId) => this.links.peerIdentity(nodeId),
      maxRecordBytes: this.recordBytesMax,
      validate: this.validate,
      highWaterBytes: LINK_HIGH_WATER_BYTES,
      // A host links to a few neighbours (and a few waiting to be named): no crowd is legitimate.
      connectionsMax: PEER_CONNECTIONS_MAX,
      handshakesMax: PEER_HANDSHAKES_MAX,
      log: (entry) => this.logLink(entry),
      onLink: (link) => this.links.acceptDownstream(link),
    });
    this.sessions.attach(app, native, uws);
    this.http = attachHttpApi(app, {
      status: () => this.status(),
      unavailable: () => (this.configuration === null ? 'no chain is configured yet: no host has started one in etcd' : null),
      digest: () => this.digest(),
      secret: this.settings.clientSecret,
      hostUrl: () => this.url,
      ...(this.settings.chain === undefined ? {} : { chain: this.settings.chain }),
      keyBytesMax: this.options.keyBytesMax,
      valueBytesMax: this.options.valueBytesMax,
      ...(this.settings.httpToken === undefined ? {} : { token: this.settings.httpToken }),
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

  private async register(): Promise<void> {
    const registration = await this.store.registerHost(this.hostId, this.settings.leaseTtlSeconds, {
      replicaId: this.replicaId,
      url: this.url,
      publicKey: this.identity.publicKeyText,
    });
    this.registration = registration;
    registration.lost.addEventListener('abort', () => {
      if (this.registration !== registration || this.closed) return;
      this.log('warn', 'lease-lost', `lost the etcd lease of replica ${this.replicaId}: leaving the chain, will join again`);
      void this.rejoinAsNewReplica();
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Following the configuration

  private onHostTable(table: ReadonlyMap<string, { info: HostInfo | null; status: HostStatus | null }>): void {
    this.hostTable = new Map(table);
    // A member's URL may have just become known: dial it if it is our predecessor.
    this.updateLinks();
    this.placeMaster();
    this.sessions.broadcastView();
  }

  private urlOf(replicaId: number): string | null {
    for (const { info } of this.hostTable.values()) if (info !== null && info.replicaId === replicaId) return info.url;
    return null;
  }

  /** Replica `replicaId`'s host and the identity key that host registered, or null while unknown. */
  private identityOf(replicaId: number): ReplicaIdentity | null {
    for (const [hostId, { info }] of this.hostTable) {
      if (info === null || info.replicaId !== replicaId || info.publicKey === undefined) continue;
      const publicKey = publicKeyFromText(info.publicKey);
      return publicKey === null ? null : { hostId, publicKey };
    }
    return null;
  }

  private hostOf(replicaId: number): string | null {
    for (const [hostId, { info }] of this.hostTable) if (info !== null && info.replicaId === replicaId) return hostId;
    return null;
  }

  private role(): Role | null {
    return this.configuration === null ? null : (roleIn(this.configuration, this.replicaId) as Role | null);
  }

  private onConfiguration(configuration: Configuration): void {
    if (this.closed || (this.configuration !== null && configuration.epoch <= this.configuration.epoch)) return;
    const previousRole = this.role();
    this.configuration = configuration;
    const role = this.role();
    this.log('info', 'configuration', `epoch ${configuration.epoch}: members ${configuration.members.join(',')}${configuration.joining === null ? '' : ` joining ${configuration.joining}`}; this replica (${this.replicaId}) is ${role ?? 'not in the chain'}`);
    if (role === null) {
      // Removed (our lease expired while we were cut off, or the replica failed), or not picked yet.
      if (this.replica !== null) void this.rejoinAsNewReplica();
    } else if (this.replica === null) {
      if (role === 'joining' || (role === 'solo' && configuration.epoch === 1)) this.startReplica(configuration.epoch, role);
      else if (previousRole === null) void this.rejoinAsNewReplica(); // A member we have no state for.
    } else if (configuration.epoch > this.replicaEpoch) {
      const isTail = servesReads(role);
      this.replica.reconfigure(configuration.epoch, role, isTail ? configuration.joining : null);
      this.replicaEpoch = configuration.epoch;
    }
    this.updateLinks();
    this.maybeBeginHandoff();
    if (!servesReads(role)) this.sessions.forgetReads();
    this.placeMaster();
    this.sessions.broadcastView();
    this.emit('configured', configuration, role);
  }

  /**
   * The master is best placed on the tail's host. A head or middle that dies is evicted at once on
   * its successor's report (rule 2b), but only by a live master: if the master died with it, a new
   * one is elected only when its lease runs out. The tail's death waits for its lease anyway, which
   * a new election then overlaps. So a leader elsewhere steps down, and the next in line takes over.
   */
  private placeMaster(): void {
    const role = this.role();
    const configuration = this.configuration;
    if (this.master?.isLeader !== true || configuration === null || configuration.members.length < 2) return;
    if (servesReads(role)) return;
    // Only if the tail's host stands for master (and is registered, so campaigning) right now.
    const tailHost = this.hostOf(configuration.members.at(-1)!);
    if (tailHost === null || this.hostTable.get(tailHost)?.status?.candidate !== true) return;
    this.master.stepDown(`this host's replica is ${role ?? 'not a member'}: the master moves towards the tail's host`);
  }

  private startReplica(epoch: number, role: Role): void {
    this.replicaEpoch = epoch;
    this.links.replicaStarted(epoch, role);
    const replica = new ReplicaPort(
      { replicaId: this.replicaId, epoch, role, resolved: this.options },
      {
        downstream: (frame) => this.links.sendDownstream(frame),
        upstream: (frame) => this.links.sendUpstream(frame),
        clientAck: (frame) => this.sessions.deliverAck(frame),
        readReply: (frame) => this.sessions.deliverReadReply(frame),
        rejected: (code, reason) => this.logRefusal(code, 'replica-rejected', `${code}: ${reason}`),
        inboundRoom: () => {
          this.batchesQueue.drain();
          this.acksQueue.drain();
          this.readsQueue.drain();
        },
      },
    );
    this.replica = replica;
    replica.done.then(
      () => undefined,
      (error: unknown) => {
        if (this.replica !== replica || this.closed) return;
        this.log('error', 'replica-failed', `replica ${this.replicaId} failed: ${(error as Error)?.message ?? error}`);
        void this.rejoinAsNewReplica();
      },
    );
    this.log('info', 'replica-started', `replica ${this.replicaId} started as ${role} in epoch ${epoch}`);
  }

  /**
   * The link a joiner copies through broke. Snapshot frames were lost with it, and a transfer cannot
   * resume: start over as a new replica (the master abandons this join when our registration
   * changes). Unless the handoff already made this replica a member, in a configuration this host
   * has not heard of yet: then its state is a full copy of the chain's, perhaps the only one left
   * soon, and starting over would throw it away. So ask etcd first.
   */
  private async onJoinLinkLost(predecessor: number): Promise<void> {
    let current: Configuration | null = null;
    try {
      current = await this.store.load();
    } catch (error) {
      this.log('warn', 'etcd', `cannot read the configuration after losing the join link: ${(error as Error).message}`);
    }
    if (current !== null && current.members.includes(this.replicaId)) {
      this.log('info', 'join-link-lost', `lost the link to replica ${predecessor}, but the join is complete (epoch ${current.epoch}): following it`);
      this.onConfiguration(current);
      return;
    }
    this.log('warn', 'join-link-lost', `lost the link to replica ${predecessor} while joining: joining again`);
    await this.rejoinAsNewReplica();
  }

  /**
   * Leaves the chain for good as this replica id (its state may be stale or gone) and comes back
   * as a new, empty replica that joins from the tail: a replica id never returns once removed.
   */
  private rejoinAsNewReplica(): Promise<void> {
    if (this.reregistering !== null) return this.reregistering;
    this.reregistering = (async () => {
      const replica = this.replica;
      this.replica = null;
      this.links.closeAll();
      await replica?.kill();
      const old = this.registration;
      this.registration = null;
      await old?.revoke().catch(() => undefined);
      for (let attempt = 0; !this.closed; attempt++) {
        try {
          this.replicaId = await this.store.allocateId('replica');
          this.configuration = null;
          await this.register();
          const loaded = await this.store.load();
          const latest = this.latestConfiguration;
          const current = loaded === null || (latest !== null && latest.epoch > loaded.epoch) ? latest : loaded;
          if (current !== null) this.onConfiguration(current);
          this.log('info', 'rejoining', `registered again as replica ${this.replicaId}`);
          return;
        } catch (error) {
          this.log('warn', 'rejoin-retry', `cannot register yet: ${(error as Error).message}`);
          await delay(Math.min(2000, 100 * 2 ** attempt));
        }
      }
    })().finally(() => {
      this.reregistering = null;
    });
    return this.reregistering;
  }

  private updateLinks(): void {
    this.links.update(this.replica === null ? null : this.configuration, this.replicaId, this.replica === null ? null : this.role());
  }

  // ---------------------------------------------------------------------------------------------
  // Handoff, status, reads

  private onHandoffRequest(request: { epoch: number; joiner: number }): void {
    this.handoffRequest = request;
    this.maybeBeginHandoff();
  }

  private maybeBeginHandoff(): void {
    const request = this.handoffRequest;
    const configuration = this.configuration;
    if (request === null || configuration === null || this.replica === null) return;
    const role = this.role();
    if (!servesReads(role) || configuration.epoch !== request.epoch || configuration.joining !== request.joiner) return;
    const key = `${request.epoch}:${request.joiner}`;
    if (this.handoffBegun === key) return;
    this.handoffBegun = key;
    this.replica.beginHandoff();
  }

  private isServingReads(): boolean {
    const role = this.role();
    if (this.replica === null || !servesReads(role) || this.registration === null) return false;
    if (this.replicaEpoch !== this.configuration?.epoch) return false;
    return performance.now() < this.registration.leaseValidUntil() - LEASE_READ_MARGIN_MS;
  }

  private async publishStatus(): Promise<void> {
    const registration = this.registration;
    if (registration === null || this.closed) return;
    const stats = this.replica?.stats() ?? null;
    const now = performance.now();
    if (stats !== null) {
      const elapsed = (now - this.lastStatusAt) / 1000;
      if (elapsed > 0) this.writesPerSecond = Math.max(0, (stats.writesApplied - this.lastWritesApplied) / elapsed);
      this.lastWritesApplied = stats.writesApplied;
    }
    this.lastStatusAt = now;
    const status: HostStatus = {
      replicaId: this.replicaId,
      epoch: stats?.epoch || this.replicaEpoch,
      role: this.role() ?? 'none',
      appliedSeq: stats?.appliedSeq ?? 0,
      committedSeq: stats?.committedSeq ?? 0,
      joinCaughtUp: stats?.joinCaughtUp ?? false,
      handoffReadyEpoch: stats?.handoffReadyEpoch ?? 0,
      writesPerSecond: Math.round(this.writesPerSecond),
      predecessorDown: this.predecessorDown,
      candidate: this.settings.master !== false,
    };
    try {
      await registration.putStatus(status);
    } catch (error) {
      // etcd unreachable: the lease decides what happens; keep trying.
      this.log('warn', 'status-failed', (error as Error).message);
    }
  }

  private clusterView(): { epoch: number; members: ClusterMember[]; joining: ClusterMember | null } | null {
    const configuration = this.configuration;
    if (configuration === null) return null;
    const members: ClusterMember[] = [];
    for (const replicaId of configuration.members) {
      const url = this.urlOf(replicaId);
      // A member whose host entry is gone (its lease expired) is about to be removed: list it with
      // its last URL unknown as this host's own, so clients never get an unusable view.
      members.push({ replicaId, url: url ?? this.url });
    }
    const joiningUrl = configuration.joining === null ? null : this.urlOf(configuration.joining);
    return {
      epoch: configuration.epoch,
      members,
      joining: configuration.joining === null || joiningUrl === null ? null : { replicaId: configuration.joining, url: joiningUrl },
    };
  }

  status(): HostStatusReport {
    const configuration = this.configuration;
    const view = this.clusterView();
    return {
      hostId: this.hostId,
      url: this.url,
      replicaId: this.replicaId,
      role: this.role(),
      epoch: configuration?.epoch ?? 0,
      servingReads: this.isServingReads(),
      isMaster: this.master?.isLeader ?? false,
      configuration,
      members: (view?.members ?? []).map((member) => {
        const hostId = this.hostOf(member.replicaId);
        return {
          ...member,
          hostId,
          role: configuration === null ? 'none' : String(roleIn(configuration, member.replicaId)),
          status: hostId === null ? null : (this.hostTable.get(hostId)?.status ?? null),
        };
      }),
      replica: this.replica?.stats() ?? null,
      writesPerSecond: Math.round(this.writesPerSecond),
      clients: this.sessions.count,
      refusals: this.refusals.totals(),
    };
  }

  /** Each replica's digest (tests): this host's replica. */
  digest(): Promise<{ digest: string; keys: number; appliedSeq: number }> {
    if (this.replica === null) return Promise.reject(new DabbaError(ErrorCode.closed, 'no replica runs on this host'));
    return this.replica.digest();
  }

  /** Leaves cleanly: revokes the lease (the master removes this replica at once), stops everything. */
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
    this.links.closeAll(LinkCloseCode.goingAway, 'host closing');
    this.peerRoute?.closeAll();
    this.sessions.closeAll();
    this.http?.close();
    if (this.listenSocket !== null) loadUws().uws.us_listen_socket_close(this.listenSocket as never);
    await this.replica?.stop();
    this.replica = null;
    // Stopping the replica may have used up the deadline: closing the etcd client still gets a moment.
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
