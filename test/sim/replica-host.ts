/**
 * One simulated host (`dabba serve`, src/host/host.ts and client-sessions.ts, in miniature): it
 * runs one ChainNode at a time through its one door (step / ready / advance), follows the
 * configuration the master publishes, keeps a lease alive with heartbeats, and serves clients.
 *
 * What it does as the real host does:
 * - it adopts a newer configuration: reconfigures its node, or starts one as a joiner, or (removed,
 *   or a member it has no state for) leaves and comes back as a new, empty replica with a new id;
 * - writes are taken only while it is the head (else the client gets the view); reads only while it
 *   is the tail and its lease holds (else the client's link is closed and it dials again);
 * - the tail's client acks go to the client, and the newest one per client is kept and sent again
 *   when that client reconnects; every new configuration is sent to connected clients as a view;
 * - the tail begins a handoff when the master asks in the tail's current epoch.
 * A crash loses everything: the node, the links, the acks kept. A restart is a new replica, unless
 * the host has a disk (`fsync` mode, ./disk.ts): then, as a durable host restarted in its
 * incarnation does, it registers again as the same replica and, if the master still lists it as a
 * member, restarts it from its log in the current epoch, sent only what it missed. A replica the
 * chain went on without leaves its log on the disk, and the next joiner the host runs starts from
 * it: the tail sends it what it lacks from the tail's own log, or, if it cannot continue that log,
 * a snapshot, which the joiner refuses (DABBA_ERR_LOG_DIVERGED), and the host starts over empty.
 */
import { ChainNode, type ReceiveResult, type RecoveredState, type Role } from '../../native-free-core/chain/node.js';
import { snapshotFrameBytesFor } from '../../native-free-core/chain/snapshot.js';
import { answersReads, ordersWrites, roleIn, servesReads, type Configuration } from '../../native-free-core/master/chain-master.js';
import type { HandoffRequest, LiveHostStatus } from '../../native-free-core/master/cluster-decisions.js';
import { ErrorCode } from '../../native-free-core/errors.js';
import { openCatchUp } from '../../native-free-core/log/catch-up.js';
import { crc32 } from '../../native-free-core/checksum.js';
import { Store } from '../../native-free-core/store.js';
import { AckEncoder, FORMAT_RECORD_LIMITS, frameKind, HelloEncoder, MessageKind, ReadBatchView, ReadReplyView, WriteBatchView, type AckFields, type HelloFields } from '../../native-free-core/wire/codec.js';
import { replicaLimits } from '../../src/replica-worker.js';
import { SimulatedDisk } from './disk.js';
import type { Connection, Endpoint } from './network.js';
import { PeerLinks } from './peer-links.js';
import { APPLY_COST_PER_WRITE, KEY_BYTES_MAX, MASTER, TIMING, VALUE_BYTES_MAX, type World } from './world.js';
import { rewriteWatchRequestId, WatchReplyView, WatchRequestView } from '../../native-free-core/wire/watch-frames.js';

/**
 * A simulated log is checkpointed past this many batches, keeping the newest DISK_RETAINED_BATCHES
 * (the worker: past max(256 MiB, its store), keeping its newest 256 MiB).
 */
const DISK_CHECKPOINT_BATCHES = 48;
const DISK_RETAINED_BATCHES = 24;

/** What a host tells clients of the chain: its epoch and members' hosts, head first (a ClusterView). */
export interface SimulatedView {
  epoch: number;
  members: readonly Endpoint[];
}

export class SimulatedHost {
  replicaId: number;
  alive = true;
  node: ChainNode | null = null;
  configuration: Configuration | null = null;
  readonly links: PeerLinks;
  private leaseValidUntil = 0;
  /** The epoch of the last configuration the host's watch delivered. */
  private watchedEpoch = 0;
  private handoffRequest: HandoffRequest | null = null;
  private handoffBegun = '';
  /** The newest client ack per client, sent again when that client reconnects. */
  private readonly lastAcks = new Map<number, Uint8Array>();
  /** Per client: the epoch of the last view sent on its current link. */
  private readonly viewEpochSent = new Map<number, number>();
  /** When the node's work loop runs next (Infinity: when a frame arrives). */
  private wakeAt = Number.POSITIVE_INFINITY;
  private readonly ackEncoder = new AckEncoder();
  private readonly helloEncoder = new HelloEncoder();
  private readonly peekView = new WriteBatchView();
  private readonly readsView = new ReadBatchView();
  private readonly replyView = new ReadReplyView();
  /**
   * The read batches its node took, oldest first, and whose they are (client-sessions.ts's read
   * routes): the node answers them in order, some only once the commit point reaches the write a
   * read returns, so replies go to the client at the front, not to whoever sent the last batch.
   */
  private readRoutes: Array<{ clientId: number; lastRequestId: number }> = [];
  /** Watch polls on their way through the replica, by the id this host gave them (as host.ts's ClientSessions does). */
  private watchRoutes = new Map<number, { clientId: number; clientRequestId: number }>();
  private nextWatchPollId = 1;
  private readonly watchRequestView = new WatchRequestView();
  private readonly watchReplyView = new WatchReplyView();
  /** Its replica's log in `fsync` mode, or null (memory: a restart comes back empty). */
  readonly disk: SimulatedDisk | null;
  /** Restarted from its disk as the same replica: waits for the configuration to say what it is. */
  private recovering = false;
  /** Registers again at its next heartbeat (a new lease for the same replica). */
  private registering = false;
  /** How many times as long this host takes over each batch (a slow, not dead, host: faults.ts). */
  slowFactor = 1;
  /** Its busy time (ticks) and writes applied, over every replica it ran: what a host reports for fail-slow detection. */
  readonly load = { busyMs: 0, writesApplied: 0 };
  /** The node the crash took (the checker carries its record of writes over to the recovered one). */
  private crashedNode: ChainNode | null = null;
  /** The node whose log the disk holds after it left the chain (a resumed joiner's checker record starts from it). */
  private logWriter: ChainNode | null = null;
  /** Its node is a joiner that started from the disk's log. */
  private resumedJoin = false;

  constructor(
    private readonly world: World,
    readonly hostId: Endpoint,
  ) {
    this.replicaId = world.allocateReplicaId(this);
    this.links = new PeerLinks(world, this);
    this.disk = world.durable ? new SimulatedDisk(world.random) : null;
  }

  runs(replicaId: number): boolean {
    return this.alive && this.replicaId === replicaId;
  }

  role(): Role | null {
    return this.configuration === null ? null : (roleIn(this.configuration, this.replicaId) as Role | null);
  }

  // ---------------------------------------------------------------------------------------------
  // Life: start, crash, restart, leave and join again

  /** One of the chain's first replicas, in the first configuration. */
  startAsMember(configuration: Configuration): void {
    this.configuration = configuration;
    this.watchedEpoch = configuration.epoch;
    this.leaseValidUntil = TIMING.suspectAfter;
    this.startNode(configuration.epoch, this.role()!);
    this.links.update();
    this.world.scheduler.at(this.world.between(1, TIMING.heartbeatEvery), () => this.heartbeat());
  }

  private startNode(epoch: number, role: Role): void {
    this.resumedJoin = false;
    if (role === 'joining' && this.disk?.holdsLog === true && this.startJoinerFromDisk(epoch)) return;
    this.disk?.startFresh(this.replicaId, role === 'joining');
    this.createNode(epoch, role, null);
  }

  /** A joiner from the log a replica this host ran before left on the disk; false if it holds nothing. */
  private startJoinerFromDisk(epoch: number): boolean {
    const limits = replicaLimits(this.world.options);
    const store = this.newStore();
    const recovered = this.disk!.recover(store, { bytesMax: limits.inflightBytesMax, batchesMax: limits.inflightBatchesMax }, true);
    if (typeof recovered === 'string') {
      this.world.trace.fail(`${this.hostId}: the log kept for replica ${this.replicaId}: ${recovered}`);
      return true;
    }
    if (recovered.appliedSeq === 0) return false;
    this.disk!.resume(this.replicaId);
    this.world.counts.resumedJoins++;
    this.resumedJoin = true;
    this.world.trace.note(`${this.hostId}: joiner ${this.replicaId} starts from the log on its disk, through seq ${recovered.appliedSeq}`);
    this.createNode(epoch, 'joining', { store, recovered });
    this.world.checker.nodeRecovered(this.node!, this.logWriter);
    return true;
  }

  /** Its replica again after a crash, from its log, in the configuration's epoch and role. */
  private startFromDisk(epoch: number, role: Role): void {
    const limits = replicaLimits(this.world.options);
    const store = this.newStore();
    const recovered = this.disk!.recover(store, { bytesMax: limits.inflightBytesMax, batchesMax: limits.inflightBatchesMax });
    if (typeof recovered === 'string') return this.world.trace.fail(`${this.hostId}: replica ${this.replicaId}'s log: ${recovered}`);
    this.world.counts.recoveredFromDisk++;
    this.world.trace.note(`${this.hostId}: replica ${this.replicaId} recovers ${recovered.appliedSeq} from its log`);
    // As the worker does: a log that holds nothing starts an empty replica.
    this.createNode(epoch, role, recovered.appliedSeq > 0 ? { store, recovered } : null);
    this.world.checker.nodeRecovered(this.node!, this.crashedNode);
  }

  private newStore(): Store {
    // A slot hash key per replica, as in production, derived from the seed (not drawn from the PRNG).
    return new Store({ hashKey: [this.world.seed >>> 0, this.replicaId], initialKeys: 16, initialHeapBytes: 4096 });
  }

  private createNode(epoch: number, role: Role, from: { store: Store; recovered: RecoveredState } | null): void {
    const limits = replicaLimits(this.world.options);
    const replicaId = this.replicaId;
    this.readRoutes = [];
    this.watchRoutes = new Map();
    this.node = new ChainNode({
      readsAtAnyReplica: this.world.options.reads === 'any',
      id: replicaId,
      epoch,
      role,
      store: from?.store ?? this.newStore(),
      ...(from === null ? {} : { recovered: from.recovered }),
      joiner: servesReads(role) ? (this.configuration?.joining ?? null) : null,
      inflightBytesMax: limits.inflightBytesMax,
      inflightBatchesMax: limits.inflightBatchesMax,
      readReplyPayloadBytesMax: limits.readReplyPayloadBytesMax,
      readReplyResultsMax: limits.readReplyResultsMax,
      keyBytesMax: limits.keyBytesMax,
      valueBytesMax: limits.valueBytesMax,
      // Frames of about one entry: a snapshot takes several, interleaved with new batches.
      snapshotFrameBytesMax: snapshotFrameBytesFor(KEY_BYTES_MAX + VALUE_BYTES_MAX),
      ...(this.disk === null ? {} : { openCatchUp: (afterSeq: number, afterEpoch: number, throughSeq: number) => this.openCatchUp(afterSeq, afterEpoch, throughSeq) }),
      // Its stores hold a handful of keys: the size rule would turn every catch-up into a snapshot.
      catchUpOnlyIfSmaller: false,
      // In half the seeds a held watch poll is answered after a few quiet versions, not thousands.
      watchIdleReplyVersions: this.world.seed % 2 === 0 ? 3 : 4096,
      log: (line) => this.world.trace.note(`replica ${replicaId} ${line}`),
    });
    this.links.replicaStarted(epoch, role, from !== null);
    if (from === null) this.world.checker.nodeStarted(this.node);
    this.world.trace.note(`${this.hostId}: replica ${replicaId} starts as ${role} in epoch ${epoch}`);
    // Its first pass, as the worker runs one for a replica it adds (a joiner has a Hello to send).
    this.kick();
  }

  private openCatchUp(afterSeq: number, afterEpoch: number, throughSeq: number) {
    return openCatchUp(this.disk!.catchUpFiles(), afterSeq, afterEpoch, throughSeq, { crc: crc32, frameBytesMax: 1 << 20, limits: FORMAT_RECORD_LIMITS });
  }

  /** The process dies: its node, its links and everything it kept are gone. */
  crash(): void {
    this.world.trace.note(`crash ${this.hostId} (replica ${this.replicaId}, ${this.role() ?? 'not a member'})`);
    this.alive = false;
    this.links.breakAll();
    this.disk?.crash();
    if (this.node !== null) this.crashedNode = this.logWriter = this.node;
    this.node = null;
    this.configuration = null;
    this.lastAcks.clear();
    this.handoffRequest = null;
    // Its peers' and clients' sockets, whatever the replica was (or was about to be).
    this.world.network.breakEvery(this.hostId);
  }

  /**
   * Back after a crash. With its replica's log on disk: the same replica, registered again, whose
   * part the next configuration says. Without: an empty replica with a new id, which joins through
   * the policy.
   */
  restart(): void {
    this.alive = true;
    if (this.disk === null || this.disk.replicaId !== this.replicaId) return this.rejoin('restarted after a crash', false);
    this.world.trace.note(`${this.hostId}: restarts with replica ${this.replicaId}'s log`);
    this.recovering = true;
    this.registering = true;
    this.watchedEpoch = 0;
    this.leaseValidUntil = 0;
    this.handoffBegun = '';
  }

  /**
   * Leaves the chain for good as this replica id and registers again as a new, empty replica
   * (as host.ts's startOver registers a new incarnation, whose replicas are new): the master sees a
   * newcomer in its next heartbeat.
   */
  rejoin(why: string, counted = true): void {
    this.links.breakAll();
    // Its log stays on the disk, whole, for the next joiner this host runs.
    if (this.node !== null) {
      this.disk?.closeCleanly();
      this.logWriter = this.node;
    }
    this.node = null;
    const known = this.configuration;
    this.configuration = null;
    this.leaseValidUntil = 0;
    this.handoffBegun = '';
    const previous = this.replicaId;
    this.recovering = false;
    this.replicaId = this.world.allocateReplicaId(this);
    this.world.trace.note(`${this.hostId}: replica ${previous} leaves (${why}); registers as replica ${this.replicaId}`);
    if (counted) this.world.counts.rejoins++;
    if (known !== null) this.adopt(known);
  }

  // ---------------------------------------------------------------------------------------------
  // The master: heartbeats out, leases and configurations in

  private heartbeat(): void {
    this.world.scheduler.after(TIMING.heartbeatEvery, () => this.heartbeat());
    if (!this.alive) return;
    // The etcd client reports a lease lost by itself about two TTLs after its last renewal.
    if (this.leaseValidUntil > 0 && this.world.now >= this.leaseValidUntil + TIMING.suspectAfter) this.rejoin('its lease ran out (the master is out of reach)');
    const replicaId = this.replicaId;
    const status = this.status();
    const sentAt = this.world.now;
    const registering = this.registering;
    const load = { ...this.load };
    this.world.network.sendControl(this.hostId, MASTER, () => this.world.master.heartbeat(this, replicaId, status, sentAt, registering, load));
  }

  private status(): LiveHostStatus | null {
    const node = this.node;
    if (node === null) return null;
    return { epoch: node.epoch, appliedSeq: node.appliedSeq, joinCaughtUp: node.joinCaughtUp, handoffReadyEpoch: node.handoffReady ? node.epoch : 0 };
  }

  /**
   * The master's answer to a heartbeat sent at `sentAt`: the lease renewed, or lost (the host then
   * registers again as a new replica, as host.ts does on `lost`). The master is reachable again:
   * the watches catch up.
   */
  lease(replicaId: number, sentAt: number, granted: boolean): void {
    if (!this.runs(replicaId)) return;
    if (granted) this.registering = false;
    if (!granted) this.rejoin('its lease expired');
    // The master measures silence from when it heard us, which is after we sent: safe for us to count from then.
    else this.leaseValidUntil = Math.max(this.leaseValidUntil, sentAt + TIMING.suspectAfter);
    this.watch();
  }

  /**
   * The configuration watch (etcd's, which the host keeps across its replicas' lives): every
   * configuration after the last one seen, in order; then the handoff request last written.
   */
  watch(): void {
    if (!this.alive) return;
    // Restarted: it reads the chain's entry as it is now, then watches from there.
    if (this.recovering) this.watchedEpoch = Math.max(this.watchedEpoch, this.world.master.configuration.epoch - 1);
    for (const configuration of this.world.master.configurationsAfter(this.watchedEpoch)) {
      this.watchedEpoch = configuration.epoch;
      this.adopt(configuration);
    }
    const handoff = this.world.master.handoffRequest;
    if (handoff !== null) this.requestHandoff(handoff);
  }

  /** A configuration from the watch: adopted if newer (host.ts onConfiguration). */
  private adopt(configuration: Configuration): void {
    if (!this.alive || (this.configuration !== null && configuration.epoch <= this.configuration.epoch)) return;
    const previousRole = this.role();
    this.configuration = configuration;
    const role = this.role();
    const node = this.node;
    const recovering = this.recovering;
    this.recovering = false;
    if (role === null) {
      if (node !== null || recovering) return this.rejoin(`not in epoch ${configuration.epoch}`);
    } else if (node === null) {
      // A joiner's transfer cannot resume after a restart (host.ts gives it up, as when its join link breaks).
      if (role === 'joining' && recovering) return this.rejoin('it was joining when its host restarted');
      if (role === 'joining') this.startNode(configuration.epoch, role);
      else if (recovering) this.startFromDisk(configuration.epoch, role);
      else if (previousRole === null) return this.rejoin('a member with no state');
    } else if (configuration.epoch > node.epoch) {
      node.reconfigure(configuration.epoch, role, { joiner: servesReads(role) ? configuration.joining : null });
      this.world.trace.note(`${this.hostId}: replica ${this.replicaId} is ${role} in epoch ${configuration.epoch}`);
    }
    this.links.update();
    this.maybeBeginHandoff();
    this.broadcastView();
    this.kick();
  }

  /** The master asks the tail to hand over (pushed, or replayed by the watch). */
  requestHandoff(request: HandoffRequest): void {
    this.handoffRequest = request;
    this.maybeBeginHandoff();
  }

  private maybeBeginHandoff(): void {
    const { handoffRequest: request, configuration, node } = this;
    if (request === null || configuration === null || node === null || !servesReads(this.role())) return;
    if (configuration.epoch !== request.epoch || configuration.joining !== request.joiner) return;
    const key = `${request.epoch}:${request.joiner}`;
    if (this.handoffBegun === key) return;
    this.handoffBegun = key;
    // As the worker does: only a tail with a joiner behind it hands over.
    if (node.forwardsDownstream && node.isTail) node.beginHandoff();
  }

  // ---------------------------------------------------------------------------------------------
  // The node's door

  /** A batch (or a joiner's snapshot frame) from upstream; false to hold it (backpressure). */
  stepUpstream(bytes: Uint8Array): boolean {
    const node = this.node!;
    const isBatch = frameKind(bytes) === MessageKind.writeBatch;
    if (isBatch && this.peekView.open(bytes) !== null) this.world.trace.fail(`${this.hostId} got a malformed batch`);
    const { clientId, firstClientSeq, count } = this.peekView;
    const appliedBefore = node.appliedSeq;
    const result = node.step('upstream', bytes);
    if (result.status === 'full') return false;
    if (result.status === 'rejected' && result.code === ErrorCode.logDiverged) {
      // The host starts that replica over, empty (host.ts gives it up and drops its log).
      this.world.counts.logsDiverged++;
      this.disk!.startFresh(0, false);
      this.rejoin(`its log does not continue the chain's (${result.reason})`);
      return true;
    }
    if (result.status === 'applied' && !isBatch && this.resumedJoin && node.joinCaughtUp) this.world.counts.catchUpsCompleted++;
    if (result.status === 'applied') {
      if (isBatch) {
        this.world.checker.appliedBatch(node, appliedBefore, result, { clientId, firstClientSeq, count });
        this.load.busyMs += result.count * APPLY_COST_PER_WRITE * this.slowFactor;
        this.load.writesApplied += result.count;
      }
      this.disk?.applied(node, bytes, isBatch);
    }
    this.refusal(result, isBatch ? 'a batch' : 'a snapshot frame');
    // With a log, batches are forwarded once per drain (group commit): a crash may come between.
    // A slow host takes slowFactor ticks before what it applied goes on.
    if (isBatch && this.slowFactor > 1) this.kick(Math.ceil(this.slowFactor));
    else if (this.disk !== null && isBatch) this.kick();
    else this.performReady();
    return true;
  }

  /** An Ack or Hello from the successor (or joiner). */
  stepDownstream(bytes: Uint8Array): void {
    this.refusal(this.node!.step('downstream', bytes), 'an ack or Hello');
    this.performReady();
  }

  /**
   * A refusal the real runtime logs. A gap is expected in two cases, both repaired by a resend: a
   * predecessor forwards its next batches on a redialed peer link before the successor's Hello has
   * rewound it; and a client's batch reaches a head that dropped the one before (it was not the head
   * yet when that one came). Any other rejection fails the run.
   */
  private refusal(result: ReceiveResult, what: string): void {
    if (result.status === 'ignored' && result.code === ErrorCode.staleEpoch) this.world.counts.staleEpochIgnored++;
    if (result.status !== 'rejected') return;
    if (what === 'a batch' && result.code === ErrorCode.sequenceGap) {
      this.world.counts.gapsRefused++;
      return;
    }
    this.world.trace.fail(`replica ${this.replicaId} rejected ${what}: ${result.code} ${result.reason}`);
  }

  /** Runs the node's work loop again in `ticks` (a link came up; the last pass moved; or its sleep times out). */
  kick(ticks = 1): void {
    const at = this.world.now + ticks;
    if (this.node === null || this.wakeAt <= at) return;
    this.wakeAt = at;
    this.world.scheduler.at(at, () => {
      if (this.wakeAt !== at) return;
      this.wakeAt = Number.POSITIVE_INFINITY;
      if (this.node !== null) this.performReady();
    });
  }

  /**
   * Carries out the node's Ready as the worker does (workers/node.ts performReady): a snapshot
   * frame, then batches, downstream; the Hello before the ack upstream; client acks and read
   * replies (to the client whose read batch each answers) to the clients.
   */
  private performReady(): void {
    const node = this.node!;
    // What it applied is on disk before anything leaves (workers/node.ts performReady).
    this.disk?.commit();
    if (!node.hasReady()) return;
    const ready = node.ready();
    const snapshotSent = ready.snapshot !== null && this.links.sendDownstream(ready.snapshot.slice(), false);
    if (snapshotSent) this.world.counts.snapshotFrames++;
    let forwarded = 0;
    for (const batch of ready.forward) {
      if (!this.links.sendDownstream(batch.slice(), true)) break;
      forwarded++;
    }
    let acksSent = true;
    if (ready.helloUpstream !== null) acksSent = this.links.sendUpstream(this.encodeHello(ready.helloUpstream), false);
    if (ready.ackUpstream !== null && acksSent) acksSent = this.links.sendUpstream(this.ackEncoder.encode(ready.ackUpstream).slice(), true);
    for (const ack of ready.clientAcks) this.deliverAck(node, ack);
    for (const reply of ready.readReplies) this.sendReply(reply);
    node.advance(ready, { forwarded, acksSent, repliesSent: ready.readReplies.length, snapshotSent });
    this.disk?.noteCommitted(node.committedSeq);
    // A tail sending its joiner batches from its log keeps them (as the worker does).
    if (!node.joinCatchingUp) this.disk?.checkpointIfDue(node, DISK_CHECKPOINT_BATCHES, DISK_RETAINED_BATCHES);
    // The worker's loop: a pass that moved anything is followed by another at once; one that moved
    // nothing sleeps until a frame arrives or its sleep times out (sleepTimeoutMs), then looks again.
    const hadAcks = ready.ackUpstream !== null || ready.clientAcks.length > 0;
    const moved = forwarded > 0 || snapshotSent || (hadAcks && acksSent) || ready.readReplies.length > 0;
    if (node.hasReady()) this.kick(moved ? 1 : TIMING.workerSleepTimeout);
  }

  encodeHello(hello: HelloFields): Uint8Array {
    return this.helloEncoder.encode(hello).slice();
  }

  encodeAck(ack: AckFields): Uint8Array {
    return this.ackEncoder.encode(ack).slice();
  }

  // ---------------------------------------------------------------------------------------------
  // Clients (client-sessions.ts)

  clientConnection(clientId: number): Connection {
    return this.world.network.connection(`c${clientId}-${this.hostId}`, `c${clientId}`, this.hostId);
  }

  /** A client's link came up: it gets the view and its newest ack (it may have missed it). */
  clientConnected(clientId: number): void {
    this.viewEpochSent.delete(clientId);
    this.sendView(clientId, true);
    const lastAck = this.lastAcks.get(clientId);
    if (lastAck !== undefined) this.sendToClient(clientId, lastAck);
  }

  /** A client batch through the admission hook, as the worker screens it (unless the head ordered it already). */
  private screen(bytes: Uint8Array): Uint8Array {
    const admission = this.world.admission;
    if (admission === null || this.peekView.open(bytes) !== null) return bytes;
    const { clientId, firstClientSeq, count } = this.peekView;
    if (firstClientSeq + count - 1 <= this.node!.clientHighWaterMark(clientId)) return bytes;
    return admission.screen(bytes);
  }

  /** A write or read batch from client `clientId`; false to hold it (backpressure). */
  fromClient(clientId: number, bytes: Uint8Array): boolean {
    const kind = frameKind(bytes);
    if (kind === MessageKind.writeBatch) {
      // Not the head (any more): the client learns the view and resends there; dropped here.
      if (this.node === null || !ordersWrites(this.role())) {
        this.world.counts.writesRedirected++;
        this.sendView(clientId, true);
        return true;
      }
      return this.stepUpstream(this.screen(bytes));
    }
    this.world.trace.check(kind === MessageKind.readBatch || kind === MessageKind.watchRequest, () => `client ${clientId} sent a frame of kind ${String(kind)}`);
    if (!this.isServingReads()) {
      // Not the tail, or the lease may have lapsed (another tail may exist): the client goes elsewhere.
      this.world.counts.readsRefused++;
      this.world.trace.detail(() => `${this.hostId} is not serving reads: closes client ${clientId}'s link`);
      this.world.network.break(this.clientConnection(clientId));
      return true;
    }
    if (!this.node!.canAcceptReads()) return false;
    if (kind === MessageKind.watchRequest) return this.takeWatchPoll(clientId, bytes);
    const dirtyBefore = this.node!.dirtyReads;
    const result = this.node!.step('client', bytes);
    this.world.counts.dirtyReads += this.node!.dirtyReads - dirtyBefore;
    this.refusal(result, 'a read batch');
    if (result.status === 'applied') {
      if (!servesReads(this.role())) this.world.counts.readsOffTail += result.count;
      this.world.trace.check(this.readsView.open(bytes) === null, () => `${this.hostId} served a malformed read batch`);
      this.readRoutes.push({ clientId, lastRequestId: this.readsView.firstRequestId + this.readsView.count - 1 });
    }
    this.performReady();
    return true;
  }

  /** A watch poll, under an id of this host's (clients' ids overlap). */
  private takeWatchPoll(clientId: number, frame: Uint8Array): boolean {
    // Rewritten in place: a copy, since the network may deliver the same bytes again (a duplicate).
    const bytes = frame.slice();
    this.world.trace.check(this.watchRequestView.open(bytes) === null, () => `client ${clientId} sent a malformed watch poll`);
    const hostId = this.nextWatchPollId++;
    const clientRequestId = this.watchRequestView.requestId;
    this.world.trace.detail(() => `${this.hostId}: client ${clientId}'s watch poll ${clientRequestId} from ${this.watchRequestView.fromVersion} (as ${hostId})`);
    rewriteWatchRequestId(bytes, this.watchRequestView, hostId);
    const result = this.node!.step('client', bytes);
    this.refusal(result, 'a watch poll');
    if (result.status === 'applied') this.watchRoutes.set(hostId, { clientId, clientRequestId });
    this.performReady();
    return true;
  }

  /** A reply to the client whose read batch is the oldest one unanswered (or whose watch poll it answers). */
  private sendReply(reply: Uint8Array): void {
    if (frameKind(reply) === MessageKind.watchReply) {
      this.world.trace.check(this.watchReplyView.open(reply) === null, () => `replica ${this.replicaId} made a malformed watch reply`);
      const route = this.watchRoutes.get(this.watchReplyView.requestId);
      this.world.trace.check(route !== undefined, () => `replica ${this.replicaId} answered watch poll ${this.watchReplyView.requestId}, which it was never sent`);
      this.watchRoutes.delete(this.watchReplyView.requestId);
      const view = this.watchReplyView;
      this.world.trace.detail(() => `${this.hostId}: answers watch poll ${route!.clientRequestId} of client ${route!.clientId}: ${view.count} changes${view.count > 0 ? ` from ${view.changeAt(0).version}` : ''} through ${view.throughVersion}`);
      const copy = reply.slice();
      rewriteWatchRequestId(copy, this.watchReplyView, route!.clientRequestId);
      return this.sendToClient(route!.clientId, copy);
    }
    const route = this.readRoutes[0];
    this.world.trace.check(route !== undefined, () => `replica ${this.replicaId} has a read reply for no one`);
    this.world.trace.check(this.replyView.open(reply) === null, () => `replica ${this.replicaId} made a malformed read reply`);
    if (this.replyView.firstRequestId + this.replyView.count - 1 >= route!.lastRequestId) this.readRoutes.shift();
    this.sendToClient(route!.clientId, reply);
  }

  /**
   * Whether it may answer reads (host.ts, chain-slot.ts): its replica is the tail, or any member but
   * a joiner with reads at any replica, and its lease holds (else another may be serving in its place).
   */
  private isServingReads(): boolean {
    return this.node !== null && answersReads(this.role(), this.world.options.reads === 'any') && this.world.now < this.leaseValidUntil - TIMING.leaseReadMargin;
  }

  private deliverAck(node: ChainNode, ack: AckFields): void {
    this.world.checker.clientAck(node, ack);
    const bytes = this.ackEncoder.encode(ack).slice();
    this.lastAcks.set(ack.clientId, bytes);
    this.sendToClient(ack.clientId, bytes);
  }

  /** To a connected client; dropped if it is not connected (it gets the newest ack when it is). */
  private sendToClient(clientId: number, bytes: Uint8Array): void {
    const client = this.world.clients[clientId - 1]!;
    this.world.network.send(this.clientConnection(clientId), this.hostId, client.endpoint, () => client.receive(this.hostId, bytes));
  }

  private view(): SimulatedView | null {
    const configuration = this.configuration;
    if (configuration === null) return null;
    return { epoch: configuration.epoch, members: configuration.members.map((member) => this.world.hostOf(member).hostId) };
  }

  private sendView(clientId: number, force: boolean): void {
    const view = this.view();
    if (view === null || (!force && this.viewEpochSent.get(clientId) === view.epoch)) return;
    const client = this.world.clients[clientId - 1]!;
    const connection = this.clientConnection(clientId);
    if (!connection.isUp) return;
    this.viewEpochSent.set(clientId, view.epoch);
    this.world.network.send(connection, this.hostId, client.endpoint, () => client.adoptView(view));
  }

  private broadcastView(): void {
    for (const client of this.world.clients) this.sendView(client.id, false);
  }
}
