/**
 * `connect()`: a client of the chains that span hosts (`dabba serve`), with the API of createChain()
 * — put, delete, putMany, get, getVersioned — over authenticated WebSocket links.
 *
 * Each key belongs to one chain (the same stable hash as in one process); the client runs one
 * RemoteChain per chain, each with its own client id, session and links, and routes every call by
 * key (src/session/routed-session.ts). Per chain, the client holds a link to every member. Writes are batched exactly as in one process (the same
 * WritePipeline) and go to the head; the tail's cumulative acks resolve them in bulk; reads are
 * spread over every member when the hosts answer reads at any replica (their view says so; members
 * in the client's `zone` first), else they go to the tail. Any host tells the client when the chain changes (a ClusterView frame): unacknowledged
 * batches are then sent again to the head, which drops the ones it already has by client sequence,
 * so a write is applied once however often it is resent (exactly-once). With `sealing`, values are
 * sealed here, before they leave the process, and opened here (the same layer as createChain()'s).
 *
 *   const client = await connect({ hosts: ['ws://10.0.0.1:7400'], secret });
 *   await client.put('k', 'v'); (await client.get('k'))?.toString();
 *
 * Hosts serving TLS (`dabba serve --tls-*`) are wss:// URLs, and need `tls`: the CA their
 * certificates chain to, and this client's certificate and key, which they ask for.
 */
import { clientSample } from '../metrics/client-sample.js';
import { DabbaMetrics, type MetricsSnapshot } from '../metrics/registry.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { clientNodeId, NEW_CLIENT_NODE_ID } from '../../native-free-core/wire/client-node-id.js';
import { clientPath, decodeClusterView, type ClusterViewFields } from '../../native-free-core/wire/cluster-view.js';
import { EventEmitter } from 'node:events';
import { frameKind, MessageKind, READ_LANE_MAX } from '../../native-free-core/wire/codec.js';
import { argumentTypeError, closedError, resolveOptions, type ChainOptions, type ResolvedOptions } from '../options.js';
import type { RecordSink, Wakeable } from '../record-sink.js';
import { refuseSealingIn, sealerFor, type Sealer, type SealingOptions } from '../sealing.js';
import type { ReadTarget } from '../read-lanes.js';
import { ClientSession } from '../session/client-session.js';
import { RoutedSession } from '../session/routed-session.js';
import { SessionApi } from '../session/session-api.js';
import { connectPeerLink, frameEnvelopeValidator, type PeerLink } from '../transport/peer-link.js';
import { tlsCredentials, type TlsCredentials, type TlsOptions } from '../transport/tls.js';

export interface ConnectOptions {
  /** Base URLs of one or more hosts, e.g. ['ws://10.0.0.1:7400']; the rest are learned. */
  hosts: string[];
  /** The client secret (at least 16 bytes): what hosts ask clients for (not the peer secret). */
  secret: Buffer | string;
  /** Batching and limits, as for createChain() (replica settings are ignored; `sealing` goes below). */
  chain?: Omit<ChainOptions, 'sealing'>;
  /** Seal every value in this process with AES-256-GCM before it leaves it (see createChain()'s option). */
  sealing?: SealingOptions;
  /** How long connect() tries before it gives up. Default 10 s. */
  connectTimeoutMs?: number;
  /**
   * This client's zone (as hosts take `--zone`): with reads at any replica, reads go to the chain's
   * members in this zone when it has any, else to every member.
   */
  zone?: string;
  /**
   * For hosts that serve TLS (wss:// URLs): the CA their certificates chain to, and this client's
   * certificate and key (PEM), which such hosts require (they refuse a client without one).
   */
  tls?: TlsOptions;
}

export interface RemoteClientStats {
  /** Chain 0's client id (each chain's part of the client has its own: see `chains`). */
  clientId: number;
  /** Chain 0's epoch, head and tail. */
  epoch: number;
  head: string | null;
  tail: string | null;
  /** Chains the keyspace is split over. */
  chains: number;
  writesAccepted: number;
  writesAcknowledged: number;
  writesPending: number;
  readsAnswered: number;
  readsPending: number;
  connectedHosts: number;
  reconfigurations: number;
  /** Times unanswered writes and reads were sent again after waiting with no answer at all. */
  resends: number;
  /** Per chain: its client id, epoch, head and tail (the figures above are sums over them). */
  perChain: Array<{ chain: number; clientId: number; epoch: number; head: string; tail: string }>;
}

const RECONNECT_DELAY_MS_MIN = 50;
const RECONNECT_DELAY_MS_MAX = 1000;
const NO_WAKE: Wakeable = { ring: () => undefined };
const RETAINED = { retained: true } as const;
/**
 * Bytes of write batches a client sends ahead of the tail's acks. A host cannot pause a socket, so
 * this window is the flow control: a head that falls behind stops receiving once every client's
 * window is in its queue (16 clients fill a host's 256 MiB inbound queue; more get cut off, 4004,
 * and resend after reconnecting).
 */
const UNACKED_BYTES_MAX = 16 * 1024 * 1024;
/**
 * Batches across hosts are 4x those in one process by default: every batch costs each host a few
 * wake-ups and socket writes, which on a small machine is what limits throughput (measured: +3-6 %
 * writes/s over 1024-write batches, three hosts on 2 cores; `npm run bench -- --suite hosts-batch`). Adaptive batching still sends a lone
 * write at once when the chain is idle, so latency at low load does not change.
 */
/** Writes or reads waiting this long without any answer are sent again (see checkProgress). */
const STALL_RESEND_MS = 3000;
const REMOTE_BATCH_DEFAULTS = { maxWrites: 4096, maxBytes: 2 * 1024 * 1024 };
/**
 * A chain none of whose members' hosts has been reachable this long is unavailable: longer than a
 * host takes to restart and the master to move the chain onto live hosts (a lease TTL or two).
 */
const CHAIN_UNREACHABLE_MS = 10_000;

/** One host link, kept open and redialed while its host is a member. */
class HostConnection implements RecordSink {
  link: PeerLink | null = null;
  private waiting = false;
  private dialing = false;
  private attempts = 0;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    readonly url: string,
    private readonly client: RemoteChain,
  ) {}

  dial(): void {
    if (this.dialing || this.closed || this.link !== null) return;
    this.dialing = true;
    this.client.dialLink(this).then(
      (link) => {
        this.dialing = false;
        this.attempts = 0;
        if (this.closed) return link.close(1000, 'client closing');
        // Closed between its handshake and here: its onClose found no link to drop, so keeping
        // it would leave a dead link that blocks every later dial.
        if (!link.isOpen) return this.retry();
        this.link = link;
        this.client.connected(this);
      },
      () => {
        this.dialing = false;
        this.retry();
      },
    );
  }

  /** The link closed: dial again after a pause that grows with failures. */
  lost(): void {
    this.link = null;
    this.retry();
  }

  private retry(): void {
    if (this.closed || this.timer !== null) return;
    const delay = Math.min(RECONNECT_DELAY_MS_MAX, RECONNECT_DELAY_MS_MIN * 2 ** this.attempts++);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.dial();
    }, delay);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.link?.close(1000, 'client closing');
    this.link = null;
  }

  // RecordSink: frames go straight into the socket; a full socket refuses like a full ring. The
  // pipelines keep every frame until it is answered, so the socket may hold it by reference.
  tryWrite(bytes: Uint8Array): boolean {
    return this.link !== null && this.link.trySend(bytes, RETAINED);
  }
  canWrite(): boolean {
    return this.link !== null && this.link.isOpen;
  }
  markProducerWaiting(): void {
    this.waiting = true;
  }
  publish(): boolean {
    return false;
  }
  takeWaiting(): boolean {
    const waiting = this.waiting;
    this.waiting = false;
    return waiting;
  }
}

/** One chain's part of a remote client: its view, its links to the chain's members, its session. */
class RemoteChain {
  readonly clientId: number;
  /** Proves this client's id when it links to a host (issued with the id). */
  private readonly clientToken: string;
  view: ClusterViewFields;
  private readonly connections = new Map<string, HostConnection>();
  /** Writes, reads, sealing, idle waits and resends: the same session createChain() runs. */
  readonly session: ClientSession;
  head: HostConnection;
  tail: HostConnection;
  state: 'open' | 'closing' | 'closed' = 'open';
  reconfigurations = 0;
  /** While the latest view says a replica's disk is full: writes are refused with it. */
  private diskFull: DabbaError | null = null;
  /** Set once the chain is unavailable (lost, or no member reachable for long): every call is refused with it. */
  failure: DabbaError | null = null;
  /** Since when no member's host has had a link up (performance.now()), or null. */
  private unreachableSince: number | null = null;
  private readonly validate = frameEnvelopeValidator();
  constructor(
    readonly chain: number,
    private readonly secret: Buffer,
    private readonly options: ResolvedOptions,
    clientId: number,
    clientToken: string,
    view: ClusterViewFields,
    sealer: Sealer | null,
    private readonly tls: TlsCredentials | null,
    private readonly events: EventEmitter,
    private readonly zone: string | null,
  ) {
    this.clientId = clientId;
    this.clientToken = clientToken;
    this.view = view;
    this.noteDisk(view);
    this.head = this.connection(view.members[0]!.url);
    this.tail = this.connection(view.members.at(-1)!.url);
    const readTargets = this.readTargets();
    this.session = new ClientSession(
      options,
      {
        clientId,
        chain,
        head: this.head,
        headDoorbell: NO_WAKE,
        tail: this.tail,
        tailDoorbell: NO_WAKE,
        // A lane per member it reads from, as the first view has them (later views re-point them).
        readTargets,
        readLanes: Math.min(READ_LANE_MAX + 1, readTargets.length),
        epoch: () => this.view.epoch,
        unackedBytesMax: UNACKED_BYTES_MAX,
        sealer,
      },
      () => (this.state === 'open' ? this.failure : closedError()),
      () => this.diskFull,
    );
    this.session.writes.admissionReported = view.admits === true;
    for (const member of view.members) this.connection(member.url).dial();
  }

  /**
   * The chain is unavailable: writes sent and not acknowledged have an unknown outcome, the rest
   * and every later call fail with DABBA_ERR_UNAVAILABLE (the chain's replicas held its only copy).
   */
  private fail(reason: string): void {
    if (this.failure !== null || this.state === 'closed') return;
    this.failure = new DabbaError(ErrorCode.unavailable, `chain ${this.chain} is unavailable: ${reason}`);
    this.session.fail(this.failure, { outcomeKnown: false });
    this.events.emit('unavailable', { chain: this.chain, error: this.failure });
  }

  /**
   * Where the read lanes go: with reads at any replica (the view says so, and this client did not
   * ask for the tail), the members in this client's zone if it has any there, else every member
   * (head first); else the tail.
   */
  private readTargets(): ReadTarget[] {
    // The client may keep to the tail (`chain: { reads: 'tail' }`) even where every member answers.
    if (this.view.readsAnyReplica !== true || this.options.reads === 'tail') return [{ key: this.tail.url, sink: this.tail, doorbell: NO_WAKE }];
    const local = this.zone === null ? [] : this.view.members.filter((member) => member.zone === this.zone);
    const members = local.length > 0 ? local : this.view.members;
    return members.map((member) => ({ key: member.url, sink: this.connection(member.url), doorbell: NO_WAKE }));
  }

  private connection(url: string): HostConnection {
    let connection = this.connections.get(url);
    if (connection === undefined) this.connections.set(url, (connection = new HostConnection(url, this)));
    return connection;
  }

  /** @internal Opens one authenticated link as this client. */
  dialLink(connection: HostConnection): Promise<PeerLink> {
    return connectPeerLink({
      url: `${connection.url}${clientPath(this.chain)}`,
      secret: this.secret,
      tls: this.tls,
      nodeId: clientNodeId(this.clientId, this.clientToken),
      maxRecordBytes: this.options.linkRecordBytesMax,
      validate: this.validate,
      highWaterBytes: 8 * 1024 * 1024,
      onRecord: (bytes) => this.onRecord(bytes),
      onWritable: () => this.pumpTo(connection),
      onClose: () => {
        if (this.state !== 'closed') connection.lost();
      },
    });
  }

  /** @internal A link (re)opened: whatever was sent on the old one may be lost, so send it again. */
  connected(connection: HostConnection): void {
    connection.takeWaiting();
    if (connection === this.head) this.session.switchHead(connection, NO_WAKE);
    this.session.resendReadsOn({ key: connection.url, sink: connection, doorbell: NO_WAKE });
  }

  private pumpTo(connection: HostConnection): void {
    if (!connection.takeWaiting()) return;
    if (connection === this.head) this.session.pumpWrites();
    this.session.pumpReads();
  }

  private onRecord(bytes: Uint8Array): void {
    switch (frameKind(bytes)) {
      case MessageKind.ack: {
        const refused = this.session.receiveAck(bytes);
        if (refused !== null) this.warn(`ack refused: ${refused}`);
        return;
      }
      case MessageKind.watchReply: {
        const refused = this.session.receiveWatchReply(bytes);
        if (refused !== null) this.warn(`watch reply refused: ${refused}`);
        return;
      }
      case MessageKind.readReplyBatch: {
        const refused = this.session.receiveReply(bytes);
        if (refused !== null) this.warn(`read reply refused: ${refused}`);
        return;
      }
      case MessageKind.clusterView: {
        const view = decodeClusterView(bytes);
        if (typeof view === 'string') return this.warn(`cluster view refused: ${view}`);
        if (view.lost === true) return this.fail('every one of its replicas is gone');
        if (view.epoch >= this.view.epoch) this.noteDisk(view);
        if (view.epoch > this.view.epoch) this.adopt(view);
        this.session.progressed();
        return;
      }
      default:
        return;
    }
  }

  /** A view of the current epoch or newer says whether writes are refused for a full disk ('disk' when that changes). */
  private noteDisk(view: ClusterViewFields): void {
    const full = view.diskFull === true;
    if (full === (this.diskFull !== null)) return;
    this.diskFull = full ? new DabbaError(ErrorCode.diskFull, `chain ${this.chain}: a replica's disk is full: writes are refused until space is freed`) : null;
    this.events.emit('disk', { chain: this.chain, full });
  }

  private warn(message: string): void {
    this.events.emit('warning', new DabbaError(ErrorCode.malformedFrame, `chain ${this.chain}: ${message}`));
  }

  /** A newer configuration: dial new members, re-point writes and reads, resend what is unanswered. */
  private adopt(view: ClusterViewFields): void {
    this.view = view;
    this.session.writes.admissionReported = view.admits === true;
    this.reconfigurations++;
    const urls = new Set(view.members.map((member) => member.url));
    for (const url of urls) this.connection(url).dial();
    for (const [url, connection] of this.connections) {
      if (!urls.has(url)) {
        connection.close();
        this.connections.delete(url);
      }
    }
    // Resend everything unanswered even when the head or tail is the same host as before: this
    // client may have skipped epochs in which that host was not head or tail (and dropped what it
    // got). Resends are harmless: the head drops batches it has by client sequence, and a read
    // answered twice counts once.
    this.head = this.connection(view.members[0]!.url);
    this.tail = this.connection(view.members.at(-1)!.url);
    this.session.resendTo(this.head, NO_WAKE, this.tail, NO_WAKE, this.readTargets());
    this.events.emit('reconfigured', { chain: this.chain, epoch: view.epoch, members: view.members.map((member) => member.url) });
  }

  /**
   * A safety net for liveness: a host may drop what it cannot serve (it stopped being head or tail
   * in an epoch this client never heard of, or its replica was being replaced), and nothing would
   * otherwise send it again. When writes or reads have waited without any answer for a while,
   * send them again; duplicates are harmless (see adopt).
   */
  checkProgress(): void {
    if (this.state === 'closed' || this.failure !== null) return;
    // No member reachable for long (their hosts are gone and none came back): never a hang.
    const now = performance.now();
    if (this.connectedHosts > 0) this.unreachableSince = null;
    else if (this.unreachableSince === null) this.unreachableSince = now;
    else if (now - this.unreachableSince >= CHAIN_UNREACHABLE_MS) return this.fail(`none of its members' hosts (${[...this.connections.keys()].join(', ')}) has been reachable for ${Math.round(now - this.unreachableSince)} ms`);
    if (!this.session.stalledFor(STALL_RESEND_MS)) return;
    this.session.resendTo(this.head, NO_WAKE, this.tail, NO_WAKE, this.readTargets());
  }

  get connectedHosts(): number {
    let connected = 0;
    for (const connection of this.connections.values()) if (connection.link !== null) connected++;
    return connected;
  }

  closeLinks(): void {
    for (const connection of this.connections.values()) connection.close();
    this.connections.clear();
  }
}

export class RemoteClient extends SessionApi {
  /** Chain 0's client id. */
  readonly clientId: number;
  private readonly chains: RemoteChain[];
  protected readonly session: RoutedSession;
  private readonly options: ResolvedOptions;
  private state: 'open' | 'closing' | 'closed' = 'open';
  private readonly progressTimer: NodeJS.Timeout;
  private metricsRegistry: DabbaMetrics | null = null;

  /** Use connect(). */
  constructor(
    secret: Buffer,
    options: ResolvedOptions,
    introductions: ReadonlyArray<{ clientId: number; view: ClusterViewFields }>,
    sealer: Sealer | null = null,
    tls: TlsCredentials | null = null,
    zone: string | null = null,
  ) {
    super();
    this.options = options;
    this.chains = introductions.map(({ clientId, view }, chain) => new RemoteChain(chain, secret, options, clientId, view.clientToken, view, sealer, tls, this, zone));
    this.clientId = this.chains[0]!.clientId;
    this.session = new RoutedSession(
      this.chains.map((chain) => chain.session),
      options.keyBytesMax,
    );
    this.progressTimer = setInterval(() => {
      for (const chain of this.chains) chain.checkProgress();
    }, STALL_RESEND_MS / 2);
    this.progressTimer.unref();
  }

  /** The chain `key` belongs to. */
  chainOf(key: Parameters<RoutedSession['chainOf']>[0]): number {
    return this.session.chainOf(key);
  }

  /** Chain 0's epoch. */
  get epoch(): number {
    return this.chains[0]!.view.epoch;
  }

  /**
   * This client's figures in the Prometheus text format: per chain, its writes and reads, their
   * latency histograms and batch sizes, and the epoch it follows (README, "Metrics").
   */
  metrics(): Promise<string> {
    this.metricsRegistry ??= new DabbaMetrics(() => this.metricsSnapshot(), { placeLabel: 'node', processMetrics: false });
    return this.metricsRegistry.text();
  }

  /** Its figures for a registry of its own or its host's (the HTTP API's client). */
  metricsSnapshot(): MetricsSnapshot {
    return {
      chains: this.chains.map((chain) => ({ chain: chain.chain, epoch: chain.view.epoch })),
      replicas: [],
      clients: this.chains.map((chain) => clientSample(chain.chain, chain.session)),
      reconfigurations: this.chains.reduce((total, chain) => total + chain.reconfigurations, 0),
      refusals: {},
    };
  }

  stats(): RemoteClientStats {
    const sum = (figure: (chain: RemoteChain) => number): number => this.chains.reduce((total, chain) => total + figure(chain), 0);
    const first = this.chains[0]!;
    return {
      clientId: this.clientId,
      epoch: first.view.epoch,
      head: first.head.url,
      tail: first.tail.url,
      chains: this.chains.length,
      writesAccepted: sum((chain) => chain.session.writes.accepted),
      writesAcknowledged: sum((chain) => chain.session.writes.writesAcked),
      writesPending: sum((chain) => chain.session.writes.pending),
      readsAnswered: sum((chain) => chain.session.reads.readsAnswered),
      readsPending: sum((chain) => chain.session.reads.pending),
      connectedHosts: sum((chain) => chain.connectedHosts),
      reconfigurations: sum((chain) => chain.reconfigurations),
      resends: sum((chain) => chain.session.stallResends),
      perChain: this.chains.map((chain) => ({ chain: chain.chain, clientId: chain.clientId, epoch: chain.view.epoch, head: chain.head.url, tail: chain.tail.url })),
    };
  }

  /**
   * Waits (up to closeTimeoutMs) for pending writes and reads, then closes the links. Writes still
   * pending fail with DABBA_ERR_OUTCOME_UNKNOWN if they were sent (ask another client's host, or
   * reconnect with the same id... see outcome()), plainly with DABBA_ERR_CLOSED if never sent.
   */
  async close(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'closing';
    for (const chain of this.chains) chain.state = 'closing';
    await Promise.all(this.chains.map((chain) => chain.session.drain(this.options.closeTimeoutMs)));
    this.state = 'closed';
    clearInterval(this.progressTimer);
    for (const chain of this.chains) {
      chain.state = 'closed';
      chain.session.fail(closedError(), { outcomeKnown: false });
      chain.closeLinks();
    }
  }
}

/**
 * Connects to the chains served by `dabba serve` hosts: asks the first reachable host in `hosts`
 * for a client id and chain 0's members (its view says how many chains there are), then for a
 * client id and the members of each other chain, then links to every chain's members.
 */
export async function connect(options: ConnectOptions): Promise<RemoteClient> {
  const secret = typeof options.secret === 'string' ? Buffer.from(options.secret, 'utf8') : options.secret;
  if (!Array.isArray(options.hosts) || options.hosts.length === 0) throw new DabbaError(ErrorCode.invalidArgument, 'connect() needs at least one host URL');
  refuseSealingIn(options.chain, "connect()'s chain options (give it at the top of connect()'s options)");
  const resolved = resolveOptions({ ...options.chain, batch: { ...REMOTE_BATCH_DEFAULTS, ...options.chain?.batch } });
  // Validated before any connection is made.
  const sealer = sealerFor(options.sealing, resolved);
  const tls = options.tls === undefined ? null : tlsCredentials(options.tls);
  for (const url of options.hosts) checkHostUrl(url, tls);
  const zone = options.zone ?? null;
  if (zone !== null && (typeof zone !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(zone))) throw argumentTypeError(`zone must be 1-64 letters, digits, '-', '_' or '.', got ${JSON.stringify(zone)}`);
  const deadline = performance.now() + (options.connectTimeoutMs ?? 10_000);
  const validate = frameEnvelopeValidator();
  let lastError: unknown = null;
  for (let round = 0; performance.now() < deadline; round++) {
    for (const url of options.hosts) {
      try {
        const first = await introduce(url, 0, secret, tls, resolved, validate, deadline);
        const others = await Promise.all(Array.from({ length: first.view.chains - 1 }, (_, index) => introduce(url, index + 1, secret, tls, resolved, validate, deadline)));
        return new RemoteClient(secret, resolved, [first, ...others], sealer, tls, zone);
      } catch (error) {
        lastError = error;
        if (error instanceof DabbaError && error.code === ErrorCode.unauthenticated) throw error;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(RECONNECT_DELAY_MS_MAX, RECONNECT_DELAY_MS_MIN * 2 ** round)));
  }
  throw new DabbaError(ErrorCode.timeout, `no host of ${options.hosts.join(', ')} gave a client id and a chain view in time`, { cause: lastError });
}

/** A host URL this client can dial: wss:// exactly when it has TLS material. */
function checkHostUrl(url: unknown, tls: TlsCredentials | null): void {
  if (typeof url !== 'string' || !/^wss?:\/\/[^/]+$/.test(url)) throw argumentTypeError(`a host URL is ws://host:port or wss://host:port, got ${JSON.stringify(url)}`);
  if (tls === null && url.startsWith('wss://')) throw argumentTypeError(`${url} serves TLS: connect() needs the tls option ({ ca, cert, key })`);
  if (tls !== null && url.startsWith('ws://')) throw argumentTypeError(`with the tls option every host URL is wss://, got ${url}`);
}

/** One connection as a new client: waits for the host's view carrying our assigned id, then hangs up. */
function introduce(
  url: string,
  chain: number,
  secret: Buffer,
  tls: TlsCredentials | null,
  options: ResolvedOptions,
  validate: (bytes: Uint8Array) => string | null,
  deadline: number,
): Promise<{ clientId: number; view: ClusterViewFields }> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let link: PeerLink | null = null;
    const timer = setTimeout(() => finish(new DabbaError(ErrorCode.timeout, `${url} sent no view of chain ${chain} in time`)), Math.max(1, deadline - performance.now()));
    const finish = (outcome: Error | { clientId: number; view: ClusterViewFields }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      link?.close(1000, 'introduced');
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    connectPeerLink({
      url: `${url}${clientPath(chain)}`,
      secret,
      tls,
      nodeId: NEW_CLIENT_NODE_ID,
      maxRecordBytes: options.linkRecordBytesMax,
      validate,
      onRecord: (bytes) => {
        if (frameKind(bytes) !== MessageKind.clusterView) return;
        const view = decodeClusterView(bytes);
        if (typeof view === 'string') return finish(new DabbaError(ErrorCode.malformedFrame, `${url} sent a malformed view: ${view}`));
        if (view.clientId !== 0) finish({ clientId: view.clientId, view });
      },
      onClose: (code, reason) => finish(new DabbaError(ErrorCode.linkClosed, `${url} closed the link (${code} ${reason})`)),
    }).then(
      (opened) => {
        link = opened;
        if (settled) opened.close(1000, 'introduced');
      },
      (error: Error) => finish(error),
    );
  });
}
