/**
 * createChain(): replicated chains inside one process. The keyspace is split into `chains` chains
 * (one by default), each with `replicas` replicas placed over `nodes` worker threads (long-running
 * piscina tasks); a node holds one replica of each of several chains, and is head of some, middle
 * of others and tail of the rest. Adjacent threads exchange batches and acks through
 * SharedArrayBuffer rings, one ring per pair of threads and direction whatever the chain count
 * (records carry their chain); the main thread encodes each chain's writes into batches for its
 * head, receives its tail's cumulative acks, and sends its reads to its tail.
 *
 *   client --batches--> head --batches--> middle --batches--> tail      (per chain)
 *          <-----------acks------------- <-------acks-------- |
 *   client <----------------------- cumulative client acks ---+
 *   client --reads/replies----------------------------------> tail
 *
 * Each chain has its own master (the one cluster policy, cluster-decisions.ts), and a table master
 * (native-free-core/master/table-master.ts) keeps them with the placement of the chains over the
 * nodes, which the chains reach by joins at the tail and removals, a few at a time. This module
 * runs the node threads and carries out the table master's decisions; each chain's client session
 * and the client's ends of the rings are in ./chain-clients.ts.
 */
import { Piscina } from 'piscina';
import type { Role } from '../native-free-core/chain/node.js';
import { DabbaError, ErrorCode } from '../native-free-core/errors.js';
import { roleIn, type Configuration, type MasterEvent } from '../native-free-core/master/chain-master.js';
import type { LiveHostStatus } from '../native-free-core/master/cluster-decisions.js';
import type { InProcessDecision } from '../native-free-core/master/in-process-master.js';
import { TableMaster } from '../native-free-core/master/table-master.js';
import type { NodeLoad } from '../native-free-core/master/fail-slow.js';
import { SpscRing } from '../native-free-core/ring.js';
import { Doorbell } from '../workers/doorbell.js';
import type { NodeTask, ReplicaLogPlacement } from '../workers/replica-task.js';
import { ChainClients, type ChainClient } from './chain-clients.js';
import { DataDir } from './data-dir.js';
import { logEnd } from '../workers/replica-log.js';
import { clientSample } from './metrics/client-sample.js';
import { commitLatencyOf } from './metrics/commit-latency.js';
import { StatusReport, type InProcessStatus } from './status-report.js';
import { DabbaMetrics, METRICS_CONTENT_TYPE, type ClientSample, type MetricsSnapshot, type ReplicaSample } from './metrics/registry.js';
import { closedError, NODES_MAX, resolveOptions, type ChainOptions, type ResolvedOptions } from './options.js';
import type { VersionedValue } from './read-pipeline.js';
import { replicaLimits, replicaWorkerFilename } from './replica-worker.js';
import { NodeHandle, type DiskReport, type ReplicaCounters } from './runtime/node-handle.js';
import { sealerFor, type ResealReport, type SealingOptions } from './sealing.js';
import { RoutedSession } from './session/routed-session.js';
import { SessionApi } from './session/session-api.js';
import type { KeyInput, ValueInput } from './write-pipeline.js';
import { addLinkNames, LinkTable, linksFor } from './topology.js';

export type { ChainOptions, KeyInput, ResealReport, SealingOptions, ValueInput, VersionedValue };

/** A replica's counters as stats() reports them: its node's id and its role in the chain, and what it publishes. */
export type ReplicaStats = { id: number; role: Role } & ReplicaCounters;

export interface ChainStats {
  /** Chain 0's replicas (the chain, with `chains: 1`); layout() has every chain. */
  replicas: ReplicaStats[];
  /** Chain 0's epoch. */
  epoch: number;
  chains: number;
  nodes: number;
  reconfigurations: number;
  /** Nodes moved out of their chains for being slow (fail-slow demotions) so far. */
  demotions: number;
  writesAccepted: number;
  writesAcknowledged: number;
  writesPending: number;
  readsAnswered: number;
  readsPending: number;
  batchesSent: number;
  bytesSent: number;
  /** Batches sealed but waiting for room in a head's ring (client-side backpressure). */
  batchesWaiting: number;
}

/** A member of chain 0 as its master sees it; `id` is its node. */
export interface ReplicaInfo {
  id: number;
  role: Role;
  epoch: number;
  appliedSeq: number;
  committedSeq: number;
}

/** One chain of the table: its epoch and its members (node ids) in order, head first, a joiner last. */
export interface ChainLayout {
  chain: number;
  epoch: number;
  members: Array<{ node: number; role: Role }>;
}

/** Emitted as 'reconfigured' after every membership change of any chain. */
/** A replica's disk filled up (its chain refuses writes with DABBA_ERR_DISK_FULL) or has room again. */
export interface DiskEvent {
  chain: number;
  replicaId: number;
  node: number;
  full: boolean;
  /** Free bytes on its log's file system when it changed (Infinity if a write failed before any was read). */
  freeBytes: number;
  reserveBytes: number;
}

export interface ReconfigurationEvent {
  chain: number;
  epoch: number;
  /** The chain's members, by node, head first. */
  members: number[];
  /** The node whose replica left the chain, if one did. */
  removed: number | null;
  reason: 'failed' | 'requested';
  cause?: unknown;
}

/** A node found persistently slower than its peers, moved out of its chains for a while ('demoted'). */
export interface DemotionEvent {
  node: number;
  /** Its time per write over its peers' median, when it was found slow. */
  timesMedian: number;
  /** How long it is kept out before it joins again, at the tails. */
  quarantineMs: number;
}

export interface ReplicaDigest {
  chain: number;
  /** The node. */
  id: number;
  digest: string;
  keys: number;
  appliedSeq: number;
}

const INITIAL_EPOCH = 1;
/** How long a node's worker may take to start its loop before its silence counts as a hang. */
const NODE_START_GRACE_MS = 10_000;
/** How often the main thread reads the nodes' heartbeat counters and asks the masters what to do. */
const HEARTBEAT_CHECK_MS = 25;
/** Chains joining a node at once while a placement is carried out: copying snapshots must not starve writes. */
const JOINS_AT_ONCE = 2;

export class Chain extends SessionApi {
  readonly options: ResolvedOptions;
  private readonly pool: Piscina<NodeTask, string>;
  private readonly links: LinkTable;
  /** Each chain's client session, and the client's ends of the rings (./chain-clients.ts). */
  private readonly clients: ChainClients;
  private readonly nodes = new Map<number, NodeHandle>();
  private readonly doorbellBuffers = new Map<number, SharedArrayBuffer>();
  /** Every chain's master, the placement and the steps towards it (native-free-core/master/table-master.ts). */
  private readonly table: TableMaster;
  /** The client's ends of rings, by link id (a ring end keeps its position: one object per link). */
  private readonly clientEnds = new Map<number, SpscRing>();
  private readonly clientDoorbellBuffer: SharedArrayBuffer;
  private readonly clientDoorbell: Doorbell;
  /** Writes, reads, sealing, idle waits: each chain's session, behind a router by key. */
  protected readonly session: RoutedSession;
  private readonly heartbeatTimer: NodeJS.Timeout;
  private reconfigurations = 0;
  /** Frames the nodes refused (and writes the admission hook refused), by error code: the 'warning' events, counted. */
  private readonly refusals: Record<string, number> = {};
  private metricsRegistry: DabbaMetrics | null = null;
  private readonly statusReport = new StatusReport();
  private nextNodeId: number;
  /** The node an addReplica() call waits for, until every chain placed on it has it, or it fails. */
  private join: null | { node: number; attempts: Set<number>; resolve: (id: number) => void; reject: (error: unknown) => void } = null;
  /** removeReplica() calls waiting for their node to leave every chain, by node. */
  private readonly removals = new Map<number, (error: unknown) => void>();
  private state: 'open' | 'closing' | 'closed' = 'open';
  private closePromise: Promise<void> | null = null;
  private readonly serviceDone: Promise<void>;
  /** A durable runtime's data directory (null in memory). */
  private readonly dataDir: DataDir | null;
  /** Restarted from a data directory: where each chain's longest log ended. */
  private readonly longestLogEnds: number[] = [];
  /** Replicas whose disk is full, by chain: why their chain refuses writes (workers/disk-room.ts). */
  private readonly fullDisks = new Map<number, Map<number, DabbaError>>();

  constructor(options: ChainOptions = {}) {
    super();
    const resolved = resolveOptions(options);
    this.options = resolved;
    // Validated before any thread starts; the keys stay on this thread.
    const sealer = sealerFor(options.sealing, resolved);
    this.links = new LinkTable({ dataBytes: resolved.ringBytes, controlBytes: resolved.controlRingBytes });
    this.clientDoorbellBuffer = Doorbell.allocate();
    this.clientDoorbell = new Doorbell(this.clientDoorbellBuffer);

    // Durable: the directory's lock, and the members the chains had, to restart them in that order.
    this.dataDir = resolved.dataDir === null ? null : DataDir.open(resolved.dataDir, resolved.chains);
    const recovered = this.dataDir === null ? null : this.longestLogFirst(this.dataDir, resolved);
    const nodeIds =
      recovered === null ? Array.from({ length: resolved.nodes }, (_, index) => index + 1) : [...new Set(recovered.flat())].sort((a, b) => a - b);
    this.nextNodeId = Math.max(...nodeIds) + 1;
    for (const id of nodeIds) this.doorbellBuffers.set(id, Doorbell.allocate());
    this.table = new TableMaster({
      chains: resolved.chains,
      replicas: recovered === null ? resolved.replicas : Math.max(...recovered.map((members) => members.length)),
      nodes: nodeIds.map(placementNode),
      suspectAfter: resolved.suspectAfterMs,
      now: performance.now(),
      joinsAtOnce: JOINS_AT_ONCE,
      ...(recovered === null ? {} : { members: recovered.map((members) => members.map(String)) }),
      failSlow: resolved.failSlow,
    });
    if (this.dataDir !== null) {
      this.saveMembers();
      this.dataDir.removeStrays(this.currentMembers());
    }

    const ends = Array.from({ length: resolved.chains }, (_, chain) => {
      const { members } = this.table.configuration(chain);
      return { headNode: this.nodeOf(members[0]!), tailNode: this.nodeOf(members.at(-1)!), memberNodes: members.map(this.nodeOf) };
    });
    this.clients = new ChainClients(
      {
        options: resolved,
        sealer,
        ringEnd: (name, control) => this.clientEnd(name, control),
        doorbellOf: (node) => this.doorbellBuffers.get(node)!,
        epochOf: (chain) => this.table.configuration(chain).epoch,
        refusal: () => (this.state !== 'open' ? closedError() : null),
        writeRefusal: (chain) => this.diskRefusal(chain),
        clientIdBase: this.dataDir?.clientIdBase() ?? 0,
      },
      ends,
    );
    this.session = new RoutedSession(
      this.clients.chains.map((client) => client.session),
      resolved.keyBytesMax,
    );

    this.pool = new Piscina<NodeTask, string>({
      filename: replicaWorkerFilename(),
      // One thread more than the nodes, started and idle: a node added takes it at once instead of
      // paying for a thread's start (a few hundred ms of CPU on a busy host).
      minThreads: resolved.nodes + 1,
      // Room for every node there may be, and one more while a replaced one stops.
      maxThreads: NODES_MAX + 1,
      concurrentTasksPerWorker: 1,
      ...(resolved.workerExecArgv === undefined ? {} : { execArgv: resolved.workerExecArgv }),
      idleTimeout: Number.POSITIVE_INFINITY,
      maxQueue: NODES_MAX + 1,
      name: 'default',
    });
    for (const id of nodeIds) this.startNode(id, { recover: recovered !== null });
    this.links.prefaultNewRings = false;
    this.heartbeatTimer = setInterval(() => this.checkHeartbeats(), HEARTBEAT_CHECK_MS);
    this.heartbeatTimer.unref();
    this.serviceDone = this.serviceLoop();
  }

  /**
   * The members each chain had in `dataDir`, longest log first: in `fsync` mode, and after a crash
   * of the process in `async` mode, that is their order (a replica writes before it forwards); after
   * a machine crash in `async` mode a successor's log may reach further than its predecessor's, and
   * the chain must start from the longest.
   */
  private longestLogFirst(dataDir: DataDir, resolved: ResolvedOptions): number[][] | null {
    return (
      dataDir.recovered?.map((members, chain) => {
        const ends = new Map(members.map((node) => [node, logEnd(dataDir.replicaDirectory(chain, node), resolved.writeFrameBytesMax)]));
        this.longestLogEnds[chain] = Math.max(...ends.values());
        return [...members].sort((a, b) => ends.get(b)! - ends.get(a)!);
      }) ?? null
    );
  }

  /** The node (thread) a replica of any chain runs on. */
  private readonly nodeOf = (replicaId: number): number => Number(this.table.nodeOf(replicaId));

  /** The client's end of a link's ring (one object per link: it keeps the read or write position). */
  private clientEnd(name: string, control: boolean): SpscRing {
    const link = this.links.link(name, control);
    let ring = this.clientEnds.get(link.id);
    if (ring === undefined) {
      ring = new SpscRing(link.buffer);
      this.clientEnds.set(link.id, ring);
    }
    return ring;
  }

  /** Starts node `id` with the replicas the chains have on it now; `recover`: from their logs. */
  private startNode(id: number, { recover }: { recover: boolean }): void {
    const replicas = [];
    for (let chain = 0; chain < this.table.chains; chain++) {
      const configuration = this.table.configuration(chain);
      const replicaId = this.table.replicaOn(chain, String(id));
      if (replicaId === null) continue;
      replicas.push({
        chain,
        id: replicaId,
        epoch: configuration.epoch,
        role: roleIn(configuration, replicaId) as Role,
        links: this.linksOf(configuration, replicaId),
        ...this.logPlacement(chain, id, { fresh: !recover }),
      });
    }
    const node = new NodeHandle({
      pool: this.pool,
      id,
      replicas,
      doorbell: this.doorbellBuffers.get(id)!,
      limits: replicaLimits(this.options),
      onRejected: (chain, code, reason) => {
        this.refusals[code] = (this.refusals[code] ?? 0) + 1;
        this.emit('warning', new DabbaError(code as ErrorCode, code === ErrorCode.rejected ? `node ${id}, head of chain ${chain}: ${reason}` : `node ${id} rejected a frame of chain ${chain}: ${reason}`));
      },
      onDisk: (report) => this.onDisk(id, report),
    });
    node.done.catch((error: unknown) => this.onNodeFailure(node, error));
    this.nodes.set(id, node);
  }

  /**
   * A replica's disk filled up (its chain refuses writes from now on, and a 'warning' says why) or
   * has room again: a 'disk' event either way.
   */
  private onDisk(node: number, { chain, replicaId, full, freeBytes, reserveBytes }: DiskReport): void {
    let disks = this.fullDisks.get(chain);
    const event: DiskEvent = { chain, replicaId, node, full, freeBytes, reserveBytes };
    if (!full) {
      disks?.delete(replicaId);
      this.emit('disk', event);
      return;
    }
    const free = Number.isFinite(freeBytes) ? `${freeBytes} bytes free` : 'no room';
    const error = new DabbaError(
      ErrorCode.diskFull,
      `chain ${chain}: the disk of replica ${replicaId} (node ${node}) is full (${free}, reserve ${reserveBytes}): writes are refused until space is freed`,
    );
    if (disks === undefined) this.fullDisks.set(chain, (disks = new Map()));
    disks.set(replicaId, error);
    this.emit('warning', error);
    this.emit('disk', event);
  }

  /** Why chain `chain` refuses writes now: one of its replicas (still in it) has a full disk. */
  private diskRefusal(chain: number): DabbaError | null {
    const disks = this.fullDisks.get(chain);
    if (disks === undefined || disks.size === 0) return null;
    for (const [replicaId, error] of disks) {
      if (this.table.participants(chain).includes(replicaId)) return error;
      disks.delete(replicaId);
    }
    return null;
  }

  /** Where a replica on `node` keeps its log, for a durable runtime. */
  private logPlacement(chain: number, node: number, { fresh }: { fresh: boolean }): { log?: ReplicaLogPlacement } {
    if (this.dataDir === null) return {};
    const directory = this.dataDir.replicaDirectory(chain, node);
    return { log: fresh ? { directory, fresh } : { directory, fresh, readsWaitFor: this.longestLogEnds[chain] ?? 0 } };
  }

  /** Each chain's members now, by node, head first. */
  private currentMembers(): number[][] {
    return Array.from({ length: this.table.chains }, (_, chain) => this.table.configuration(chain).members.map(this.nodeOf));
  }

  /** Durable runtimes: the members, on disk before any replica acts on them (src/data-dir.ts). */
  private saveMembers(): void {
    this.dataDir?.saveMembers(this.currentMembers());
  }

  private linksOf(configuration: Configuration, replicaId: number) {
    return linksFor(this.links, configuration, replicaId, this.nodeOf, this.doorbellBuffers, this.clientDoorbellBuffer, this.options.reads === 'any');
  }

  /** Replicas in chain 0 now (the chain, with `chains: 1`). */
  get replicas(): number {
    return this.table.configuration(0).members.length;
  }

  /** The chain `key` belongs to (0 .. chains - 1): a stable hash of its bytes. */
  chainOf(key: KeyInput): number {
    return this.session.chainOf(key);
  }

  /** Chain 0's members as its master sees them, head first, then a joiner (`id` is the node). */
  members(): ReplicaInfo[] {
    const configuration = this.table.configuration(0);
    return this.table.participants(0).map((replicaId) => {
      const counters = this.nodes.get(this.nodeOf(replicaId))!.counters(0);
      return {
        id: this.nodeOf(replicaId),
        role: roleIn(configuration, replicaId) as Role,
        epoch: counters.epoch || INITIAL_EPOCH,
        appliedSeq: counters.appliedSeq,
        committedSeq: counters.committedSeq,
      };
    });
  }

  /** The chain table: every chain's epoch and members (by node), head first, a joiner last. */
  layout(): ChainLayout[] {
    return this.clients.chains.map(({ chain }) => {
      const configuration = this.table.configuration(chain);
      return {
        chain,
        epoch: configuration.epoch,
        members: this.table.participants(chain).map((replicaId) => ({ node: this.nodeOf(replicaId), role: roleIn(configuration, replicaId) as Role })),
      };
    });
  }

  /**
   * Adds a node online and resolves with its id once it holds its share. With one chain it joins
   * the chain (which grows by a replica): it copies a snapshot from the tail, takes every later
   * write from it, and becomes the new tail once it has caught up. With many chains the
   * replication factor stays, and chains move to the new node (each a join at its tail, then the
   * removal of the replica it replaces), a few at a time. Writes keep flowing meanwhile. Rejects
   * with DABBA_ERR_REPLICA_FAILED if the node fails or a chain it joins changes under it (the node
   * is then let go).
   */
  addReplica(): Promise<number> {
    if (this.state !== 'open') return Promise.reject(closedError());
    const failure = this.clients.chains.every((client) => client.failure !== null) ? this.clients.chains[0]!.failure : null;
    if (failure !== null) return Promise.reject(failure);
    if (this.join !== null) return Promise.reject(new DabbaError(ErrorCode.outOfRange, `replica ${this.join.node} is already joining`));
    const live = this.liveNodeIds();
    if (live.length >= NODES_MAX) {
      const what = this.clients.chains.length === 1 ? 'a chain has at most 16 replicas' : `at most ${NODES_MAX} nodes`;
      return Promise.reject(new DabbaError(ErrorCode.outOfRange, what));
    }
    // One chain grows by the node; many keep their replication factor and move to it.
    if (this.clients.chains.length === 1) this.table.replicas = Math.min(this.table.replicas, live.length) + 1;
    const id = this.nextNodeId++;
    this.doorbellBuffers.set(id, Doorbell.allocate());
    const joined = new Promise<number>((resolve, reject) => {
      this.join = { node: id, attempts: new Set(), resolve, reject };
    });
    this.table.addNode(placementNode(id));
    this.startNode(id, { recover: false });
    this.settle();
    return joined;
  }

  /**
   * Removes node `id`: every chain goes on without its replica (with one chain, the chain is one
   * replica shorter; with many, each is repaired on another node when there is one), then the node
   * stops. Refused if it holds the last replica of a chain.
   */
  removeReplica(id: number): Promise<void> {
    if (this.state !== 'open') return Promise.reject(closedError());
    let node: NodeHandle;
    try {
      node = this.liveNode(id);
      // With one chain its last replica cannot go; with many, it may move first (refused later if not).
      const refusal = this.clients.chains.length === 1 ? this.table.leaveRefusal(String(id)) : null;
      if (refusal !== null) throw new DabbaError(ErrorCode.outOfRange, refusal);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.clients.chains.length === 1) this.table.replicas = Math.max(1, Math.min(this.table.replicas, this.liveNodeIds().length) - 1);
    this.table.leave(String(id));
    const removed = new Promise<void>((resolve, reject) => {
      this.removals.set(id, reject);
      node.done.then(() => resolve(), reject);
    });
    this.settle();
    return removed;
  }

  /** Replaces node `id` by a new one: add the new node, then remove the old. */
  async replaceReplica(id: number): Promise<number> {
    this.liveNode(id);
    const added = await this.addReplica();
    await this.removeReplica(id);
    return added;
  }

  /**
   * Makes every batch node `id` applies take `factor` times as long (1: back to normal), spinning the
   * difference, as a node whose CPU is throttled to 1/factor would: fail-slow detection (the
   * `failSlow` option) then moves it out of its chains. For chaos testing.
   */
  slowReplica(id: number, factor: number): void {
    if (typeof factor !== 'number' || !Number.isFinite(factor) || factor < 1 || factor > 1000) throw new DabbaError(ErrorCode.outOfRange, `factor must be 1..1000, got ${String(factor)}`);
    // Any running node, in a chain or not (one moved out for being slow may be sped up again).
    const node = this.nodes.get(id);
    if (node === undefined || !node.alive) throw new DabbaError(ErrorCode.outOfRange, `node ${id} does not run`);
    node.slowDown(factor);
  }

  /**
   * Makes node `id` hang: its thread blocks for good without exiting, so nothing but missing
   * heartbeats gives it away. Every chain removes it after suspectAfterMs. For chaos testing.
   */
  freezeReplica(id: number): void {
    this.liveNode(id).freeze();
  }

  /**
   * Terminates node `id`'s worker at once, with no goodbye, exactly as a crash would; every chain
   * it was in detects it and reconfigures by itself. For chaos testing.
   */
  crashReplica(id: number): void {
    // The failure is noticed when its task is rejected (onNodeFailure), as a real crash would be.
    this.liveNode(id).crash(`node ${id} crashed on request`);
  }

  /** Node `id`, if it runs and is part of some chain (a member or a joiner). */
  private liveNode(id: number): NodeHandle {
    const node = this.nodes.get(id);
    const isPart = this.clients.chains.some(({ chain }) => this.table.replicaOn(chain, String(id)) !== null);
    if (node === undefined || !node.alive || !isPart) throw new DabbaError(ErrorCode.outOfRange, `replica ${id} is not a live member of the chain`);
    return node;
  }

  private liveNodeIds(): number[] {
    return [...this.nodes.values()].filter((node) => node.alive).map((node) => node.id);
  }

  stats(): ChainStats {
    const configuration = this.table.configuration(0);
    // Each chain's client figures, as the metrics read them, summed over the chains.
    const clients = this.clients.chains.map(({ chain, session }) => clientSample(chain, session));
    const sum = (figure: (client: ClientSample) => number): number => clients.reduce((total, client) => total + figure(client), 0);
    return {
      replicas: configuration.members.map((replicaId) => ({
        id: this.nodeOf(replicaId),
        role: roleIn(configuration, replicaId) as Role,
        ...this.nodes.get(this.nodeOf(replicaId))!.counters(0),
      })),
      epoch: configuration.epoch,
      chains: this.clients.chains.length,
      nodes: this.liveNodeIds().length,
      reconfigurations: this.reconfigurations,
      demotions: this.table.demotions,
      writesAccepted: sum((client) => client.writesAccepted),
      writesAcknowledged: sum((client) => client.writesAcknowledged),
      writesPending: sum((client) => client.writesPending),
      readsAnswered: sum((client) => client.readsAnswered),
      readsPending: sum((client) => client.readsPending),
      batchesSent: sum((client) => client.batchesSent),
      bytesSent: sum((client) => client.bytesSent),
      batchesWaiting: sum((client) => client.batchesWaiting),
    };
  }

  /**
   * Every figure of this runtime in the Prometheus text format (what a host serves at GET
   * /metrics; names and labels in the README's "Metrics"). Costs nothing between calls.
   */
  metrics(): Promise<string> {
    this.metricsRegistry ??= new DabbaMetrics(() => this.metricsSnapshot(), { placeLabel: 'node', processMetrics: false });
    return this.metricsRegistry.text();
  }

  /**
   * This runtime in the shape of a host's GET /status, as far as the status page reads it (README,
   * "Status page"): its nodes where a cluster's hosts would be. `dabba demo --http` serves it.
   */
  status(): InProcessStatus {
    return this.statusReport.report(this.metricsSnapshot(), this.liveNodeIds(), this.options.replicas, performance.now());
  }

  /** The content type of metrics()'s text, for serving it over HTTP. */
  get metricsContentType(): string {
    return METRICS_CONTENT_TYPE;
  }

  private metricsSnapshot(): MetricsSnapshot {
    const replicas: ReplicaSample[] = [];
    const chains: MetricsSnapshot['chains'] = [];
    for (const { chain } of this.clients.chains) {
      const configuration = this.table.configuration(chain);
      chains.push({ chain, epoch: configuration.epoch });
      const tail = this.nodes.get(this.nodeOf(configuration.members.at(-1)!))?.counters(chain);
      for (const replicaId of this.table.participants(chain)) {
        const node = this.nodeOf(replicaId);
        const handle = this.nodes.get(node)!;
        const counters = handle.counters(chain);
        const statistics = handle.replicas.get(chain)?.statistics;
        replicas.push({
          chain,
          replicaId,
          place: String(node),
          role: String(roleIn(configuration, replicaId)),
          ...counters,
          lag: tail === undefined ? null : Math.max(0, tail.appliedSeq - counters.appliedSeq),
          commitLatency: statistics === undefined ? null : commitLatencyOf(statistics),
        });
      }
    }
    const clients = this.clients.chains.map(({ chain, session }) => clientSample(chain, session));
    return { chains, replicas, clients, reconfigurations: this.reconfigurations, demotions: this.table.demotions, refusals: { ...this.refusals } };
  }

  /**
   * Each replica's store digest, chain by chain (members in order); equal digests within a chain
   * mean identical state. Call when no writes are pending.
   */
  async digests(): Promise<ReplicaDigest[]> {
    if (this.state === 'closed') throw closedError();
    const wanted = this.clients.chains.flatMap(({ chain }) => this.table.configuration(chain).members.map((replicaId) => ({ chain, node: this.nodeOf(replicaId) })));
    const digests = await Promise.all(wanted.map(({ chain, node }) => this.nodes.get(node)!.digest(chain)));
    return digests.map((digest, index) => ({ chain: wanted[index]!.chain, id: wanted[index]!.node, ...digest }));
  }

  /**
   * Waits (up to closeTimeoutMs) for pending writes and reads to be answered, stops the nodes
   * and settles anything still pending with DABBA_ERR_CLOSED. Idempotent.
   */
  close(): Promise<void> {
    if (this.closePromise === null) this.closePromise = this.shutdown();
    return this.closePromise;
  }

  private async shutdown(): Promise<void> {
    try {
      await this.stopEverything();
    } finally {
      // Even after a broken invariant (reported already, as an unhandled rejection of the service
      // loop, or thrown here), the threads are let go, so a failing process can exit.
      for (const node of this.nodes.values()) node.closePort();
      await this.pool.destroy();
      this.dataDir?.release();
    }
  }

  private async stopEverything(): Promise<void> {
    if (this.state === 'open') {
      this.state = 'closing';
      await Promise.race([
        this.session.whenIdle(),
        new Promise<void>((resolve) => setTimeout(resolve, this.options.closeTimeoutMs).unref()),
      ]);
    }
    this.state = 'closed';
    for (const { session } of this.clients.chains) session.reads.fail(closedError());
    clearInterval(this.heartbeatTimer);
    const live = [...this.nodes.values()].filter((node) => node.alive);
    // Nodes send their last acks as they stop. Once a chain's tail has stopped and its acks are
    // drained, a write not acknowledged is not committed and never will be: it fails plainly.
    for (const node of live) node.stop();
    const stopped = await Promise.allSettled(live.map((node) => node.done));
    const cleanlyStopped = new Set(live.filter((_, index) => stopped[index]!.status === 'fulfilled').map((node) => node.id));
    this.service();
    for (const client of this.clients.chains) {
      if (client.failure !== null) continue;
      const tailStopped = cleanlyStopped.has(this.nodeOf(this.table.configuration(client.chain).members.at(-1)!));
      client.session.fail(closedError(), { outcomeKnown: tailStopped });
    }
    this.clientDoorbell.ring();
    await this.serviceDone;
  }

  /** The main thread's side of the rings: acks, replies, and batches waiting for ring space. */
  private async serviceLoop(): Promise<void> {
    while (this.state !== 'closed') {
      await this.clientDoorbell.waitAsync(this.clients.hasWork, 20);
      this.service();
    }
  }

  private service(): void {
    this.clients.service();
  }

  /** A node's task ended with an error: its worker crashed, threw, or was terminated. */
  private onNodeFailure(node: NodeHandle, error: unknown): void {
    if (this.state === 'closed' || !node.alive) return;
    this.nodeGone(node, error);
    this.settle();
  }

  /** Every chain hears that `node` is gone (it failed, or hung and was terminated). */
  private nodeGone(node: NodeHandle, error: unknown): void {
    node.alive = false;
    node.failure ??= error;
    this.table.nodeFailed(String(node.id));
    if (this.join?.node === node.id) this.rejectJoin(`node ${node.id} failed while it joined`, error);
  }

  /** Runs every HEARTBEAT_CHECK_MS: the masters hear who is moving and decide (hangs, joins, handoffs). */
  private checkHeartbeats(): void {
    if (this.state === 'closed') return;
    this.settle();
  }

  /**
   * Tells the chains' masters what the nodes' counters say, and carries out what they decide (the
   * table master moves the chains towards their placement as it goes), until nothing is left to
   * do. Every change to any chain goes through here.
   */
  private settle(): void {
    const now = performance.now();
    for (const node of this.nodes.values()) {
      if (!node.alive) continue;
      // A worker starting (loading modules, touching its rings) is not a hang, for a while: one
      // that never starts its loop is, or it would hold up every other node's failure detection.
      const starting = !node.started && now - node.createdAt < NODE_START_GRACE_MS;
      if (node.heartbeatMoved() || starting) this.table.heartbeat(String(node.id), now);
    }
    const news = this.table.settle({ now, statusOf: this.statusOf, silenceCounts: true, moves: this.state === 'open', loadOf: this.loadOf }, this.execute);
    for (const { node, timesMedian, until } of news.demoted) {
      const event: DemotionEvent = { node: Number(node), timesMedian, quarantineMs: Math.round(until - now) };
      this.emit('warning', new DabbaError(ErrorCode.replicaFailed, `node ${node} is slow (${timesMedian.toFixed(1)}x its peers' time per write for ${this.options.failSlow!.forMs} ms): moved out of its chains for ${event.quarantineMs} ms`));
      this.emit('demoted', event);
    }
    for (const id of news.hung) {
      // It hangs, in every chain: it must never act again.
      const node = this.nodes.get(Number(id))!;
      if (!node.alive) continue;
      node.terminate(`node ${id} stopped responding`);
      this.nodeGone(node, new DabbaError(ErrorCode.timeout, `node ${id} missed its heartbeats`));
    }
    for (const { chain, lastReplica } of news.lost) this.failChain(this.clients.chains[chain]!, lastReplica, this.nodes.get(this.nodeOf(lastReplica))!.failure);
    for (const { node, reason } of news.refused) this.refuseRemoval(Number(node), reason);
    for (const { replicaId, node } of news.joinsAsked) if (this.join?.node === Number(node)) this.join.attempts.add(replicaId);
    this.followJoin();
    for (const id of news.emptied) {
      const node = this.nodes.get(Number(id))!;
      if (!node.alive) continue;
      node.alive = false;
      node.stop();
    }
  }

  /** A node's busy time and writes applied over its replicas, for fail-slow detection; null before it started. */
  private readonly loadOf = (id: string): NodeLoad | null => {
    const node = this.nodes.get(Number(id));
    return node === undefined || !node.alive || !node.started ? null : node.load();
  };

  /** A replica's progress as its node last published it; null before the node's first heartbeat. */
  private readonly statusOf = (chain: number, replicaId: number): LiveHostStatus | null => {
    const node = this.nodes.get(this.nodeOf(replicaId));
    if (node === undefined || !node.started || !node.replicas.has(chain)) return null;
    const counters = node.counters(chain);
    return { epoch: counters.epoch, appliedSeq: counters.appliedSeq, joinCaughtUp: counters.joinCaughtUp, handoffReadyEpoch: counters.handoffReadyEpoch };
  };

  /** Carries out one decision of a chain's master. */
  private readonly execute = (chain: number, decision: InProcessDecision): void => {
    const client = this.clients.chains[chain]!;
    if (decision.kind === 'request-handoff') {
      // The tail stops taking writes until the joiner has everything.
      this.nodes.get(this.nodeOf(this.table.configuration(chain).members.at(-1)!))!.beginHandoff(chain);
      return;
    }
    const { event } = decision;
    if (event.kind === 'joining') {
      const configuration = event.configuration;
      this.nodes.get(this.nodeOf(event.replicaId))!.addReplica({
        chain,
        id: event.replicaId,
        epoch: configuration.epoch,
        role: 'joining',
        links: this.linksOf(configuration, event.replicaId),
        ...this.logPlacement(chain, this.nodeOf(event.replicaId), { fresh: true }),
      });
    }
    if (event.kind !== 'removed') {
      this.applyConfiguration(client, event, null);
      return;
    }
    const removed = this.nodes.get(this.nodeOf(event.replicaId))!;
    this.applyConfiguration(client, event, this.removalCause(removed, event.reason));
    // Removed as failed while its task still runs, it hangs: the table reports it (news.hung).
    if (removed.alive && event.reason === 'requested') removed.dropReplica(chain);
  };

  /** Why a replica on `node` was removed: its task's error, or its silence if it still runs (a hang); null when asked to. */
  private removalCause(node: NodeHandle, reason: 'failed' | 'requested'): unknown {
    if (reason === 'requested') return null;
    return node.alive ? new DabbaError(ErrorCode.timeout, `replica on node ${node.id} missed its heartbeats`) : node.failure;
  }

  private refuseRemoval(node: number, refusal: string): void {
    const reject = this.removals.get(node);
    this.removals.delete(node);
    reject?.(new DabbaError(ErrorCode.outOfRange, refusal));
  }

  /**
   * Settles addReplica()'s promise once every chain is where the plan says (the node has its share,
   * and roles are rebalanced), or
   * rejects it once a join onto it was abandoned (the chain changed under it): the node then leaves.
   */
  private followJoin(): void {
    const join = this.join;
    if (join === null) return;
    const node = String(join.node);
    for (const replicaId of join.attempts) {
      if (this.clients.chains.some(({ chain }) => this.table.configuration(chain).members.includes(replicaId))) {
        join.attempts.delete(replicaId); // In: a rotation may take it out again later, which is no failure.
        continue;
      }
      const pending = this.clients.chains.some(({ chain }) => this.table.participants(chain).includes(replicaId) || this.table.newcomer(chain) === replicaId);
      if (pending) continue;
      this.rejectJoin(`replica ${join.node} could not join: the chain changed under it`);
      if (this.table.isUp(node)) this.table.leave(node);
      return;
    }
    const placed = this.table.plan.filter(({ members }) => members.includes(node));
    // Done once the table is where the plan says, roles included (rotations come after the moves).
    const done = placed.length > 0 && this.table.atPlan();
    if (done) {
      this.join = null;
      join.resolve(join.node);
    }
  }

  private rejectJoin(message: string, cause?: unknown): void {
    const join = this.join!;
    this.join = null;
    join.reject(new DabbaError(ErrorCode.replicaFailed, message, cause === undefined ? undefined : { cause }));
  }

  /** A chain lost its last replica: it is unavailable, and every write of it not acknowledged has an unknown outcome. */
  private failChain(client: ChainClient, replicaId: number, cause: unknown): void {
    const node = this.nodeOf(replicaId);
    const what = this.clients.chains.length === 1 ? `the last replica (${node})` : `the last replica of chain ${client.chain} (node ${node})`;
    client.failure = new DabbaError(ErrorCode.replicaFailed, `${what} failed`, { cause });
    client.session.fail(client.failure, { outcomeKnown: false }, new DabbaError(ErrorCode.replicaFailed, `${what} failed`, { cause }));
    this.emit('replicaFailed', client.failure);
  }

  /**
   * Installs a chain's new configuration: rings between new neighbours, a 'reconfigure' to every
   * member, and the client re-pointed at the new head and tail. Unacknowledged writes and
   * unanswered reads are sent again; the head drops writes it already has (exactly-once).
   */
  private applyConfiguration(client: ChainClient, event: MasterEvent, cause: unknown): void {
    const configuration = event.configuration;
    const chain = client.chain;
    this.reconfigurations++;
    this.saveMembers();
    // Drain what the old tail already published: it is committed, and its rings may be about to go.
    this.service();
    const tail = configuration.members.at(-1)!;
    const joiner = configuration.joining;
    for (const replicaId of this.table.participants(chain)) {
      const node = this.nodes.get(this.nodeOf(replicaId))!;
      // A joiner started at this very epoch needs no reconfigure; later ones it follows.
      if (replicaId === joiner && node.replicas.get(chain)?.startEpoch === configuration.epoch) continue;
      node.reconfigure(chain, configuration.epoch, roleIn(configuration, replicaId) as Role, replicaId === tail ? joiner : null, this.linksOf(configuration, replicaId));
    }
    this.retainLinks();
    this.clients.follow(chain, configuration.members.map(this.nodeOf));
    const removed = event.kind === 'removed' ? this.nodeOf(event.replicaId) : null;
    const reconfigured: ReconfigurationEvent = {
      chain,
      epoch: configuration.epoch,
      members: configuration.members.map(this.nodeOf),
      removed,
      reason: event.kind === 'removed' ? event.reason : 'requested',
      cause,
    };
    this.statusReport.reconfigured(reconfigured);
    this.emit('reconfigured', reconfigured);
  }

  /** Keeps the links some chain uses, and forgets the client's ends of the rest. */
  private retainLinks(): void {
    const names = new Set<string>();
    for (const { chain } of this.clients.chains) addLinkNames(names, this.table.configuration(chain), this.nodeOf, this.options.reads === 'any');
    for (const id of this.links.retainOnly(names)) this.clientEnds.delete(id);
  }
}

/** Nodes in one process are in one zone; ids as placement wants them (strings, ordered by number). */
function placementNode(id: number): { id: string; zone: string } {
  return { id: String(id), zone: 'local' };
}

/** Starts replicated chains in this process. See ChainOptions for limits and defaults. */
export function createChain(options: ChainOptions = {}): Chain {
  return new Chain(options);
}
