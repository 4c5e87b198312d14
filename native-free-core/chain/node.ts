/**
 * A chain replica as a pure state machine (the etcd raft shape): every frame goes in through one
 * door, `step(from, frame)`, and what the runtime must do comes out as plain data in `ready()`; the
 * runtime performs it and reports back with `advance()`. Configuration changes come in through
 * `reconfigure()` (and a tail's `beginHandoff()`). No I/O, timers or clocks live here, so a
 * simulator can run a whole chain in one thread, and the worker runtime drives the same code over
 * rings.
 *
 * Roles (van Renesse & Schneider, OSDI 2004), one step function each, swapped on reconfiguration
 * as raft swaps `r.step`:
 * - head: takes client batches, stamps epoch and sequence numbers, applies, logs, forwards;
 * - middle: applies a batch that continues its prefix, logs, forwards;
 * - tail: applies and acknowledges cumulatively; serves reads (with `readsAtAnyReplica`, head and
 *   middles serve them too: see serveReads);
 * - solo: a chain of one, head and tail at once;
 * - joining: loads a snapshot from the tail it joins behind, then that tail's batches.
 * A tail with a replica joining behind it also forwards (./join-source.ts); the joiner's own state
 * is in ./join-target.ts.
 *
 * Each step function takes the frame kinds its role takes from each link and refuses the rest by
 * name: not-tail (reads elsewhere), not-forwarding (acks and Hellos at a node with no successor),
 * unexpected-frame (a kind never sent on that link), stale-epoch, sequence-gap, duplicate.
 */
import { assert } from '../assert.js';
import { crc32, type Crc32 } from '../checksum.js';
import { ErrorCode } from '../errors.js';
import type { Store } from '../store.js';
import {
  AckView,
  FrameEnvelope,
  HelloView,
  KEY_BYTES_LIMIT,
  MessageKind,
  Op,
  ReadBatchView,
  ReadReplyEncoder,
  WriteBatchView,
  reasonIfMalformed,
  ACK_FAILURES_MAX,
  ACK_REPORT_BYTES_MAX,
  reportBytes,
  type AckFields,
  type ConditionFailureFields,
  type HelloFields,
} from '../wire/codec.js';
import { answersReads, ordersWrites, servesReads } from '../master/chain-master.js';
import { InflightLog } from './inflight-log.js';
import { ChangeHistory } from './change-history.js';
import { WatchPolls } from './watch-polls.js';
import { watchChangeBytes, WatchReplyEncoder, WatchRequestView } from '../wire/watch-frames.js';
import { applyBatch } from './apply-batch.js';
import type { CatchUp } from '../log/catch-up.js';
import { JoinSource } from './join-source.js';
import { JoinTarget } from './join-target.js';
import { snapshotFrameBytesFor, type SnapshotSource } from './snapshot.js';

export type Role = 'head' | 'middle' | 'tail' | 'solo' | 'joining';

/**
 * Which link a frame came in on. 'upstream': batches (and, to a joiner, snapshot frames), from
 * the client at the head, from the predecessor elsewhere. 'downstream': Acks and Hellos from the
 * successor (or the joiner behind a tail). 'client': read batches.
 */
export type FrameSource = 'upstream' | 'downstream' | 'client';

export interface ChainNodeOptions {
  id: number;
  epoch: number;
  role: Role;
  store: Store;
  /** Bytes of applied-but-unacknowledged batches a non-tail node keeps (its in-flight list). */
  inflightBytesMax: number;
  /** Batches a non-tail node keeps in flight. */
  inflightBatchesMax: number;
  /** Largest read reply frame's payload (values), so a reply fits in one ring record. */
  readReplyPayloadBytesMax: number;
  /** Most results in one read reply frame. */
  readReplyResultsMax: number;
  /** Where the node says why it ignores a message ("ignoring (stale epoch)"). */
  log?: (message: string) => void;
  /** Largest Snapshot frame this node sends a joining replica (default 1 MiB; must fit a ring record). */
  snapshotFrameBytesMax?: number;
  /** Largest key a write, a read or a snapshot entry may carry (default: the format's 65535). */
  keyBytesMax?: number;
  /**
   * Largest value a write or a snapshot entry may carry (default: what one read reply holds). A
   * frame with a larger one is refused, so the store only holds values a reply can carry.
   */
  valueBytesMax?: number;
  /** The CRC-32 every batch is checked with (default: the core's; a runtime may pass a faster one). */
  checksum?: Crc32;
  /**
   * A member restarted from its own log (issue 13): `store` already holds everything through
   * `appliedSeq` and these are its clients' high-water marks. It tells its predecessor with a Hello
   * how far it got, and the predecessor resends only what comes after (from its in-flight list).
   * A joiner restarted from its own log tells the tail so, with the epoch of its last batch, and is
   * sent what it lacks from the tail's log if the tail can continue it (else it is refused a
   * snapshot: DABBA_ERR_LOG_DIVERGED).
   */
  recovered?: RecoveredState;
  /**
   * The replica joining behind this node, if the configuration it starts in names one (a tail
   * restarted from its log while a join was under way): it starts the join, as reconfigure() would have.
   */
  joiner?: number | null;
  /**
   * A tail with a log: the batches it logged after `afterSeq`, through `throughSeq`, if its log
   * holds the batch ending at afterSeq stamped `afterEpoch` (../log/catch-up.ts), else null. A
   * joiner restarted from its own log is then sent only those, not a snapshot.
   */
  openCatchUp?: (afterSeq: number, afterEpoch: number, throughSeq: number) => CatchUp | null;
  /**
   * Catch up a joiner only if it missed no more writes than the store holds keys (default true):
   * past that, a snapshot is the smaller transfer. The simulator turns it off (its stores hold a
   * handful of keys, so every catch-up would become a snapshot).
   */
  catchUpOnlyIfSmaller?: boolean;
  /**
   * CRAQ (Terrace & Freedman, ATC'09): every member answers reads, not only the tail. A key whose
   * newest write here is committed is answered at once; one with a newer, uncommitted write is
   * answered with that write's value once the commit point reaches it (see serveReads).
   */
  readsAtAnyReplica?: boolean;
  /**
   * The change history watches are served from (./change-history.ts): its bytes (at least one
   * batch of the largest kind this node takes; default 256 KiB) and batches (default 1024).
   */
  watchHistoryBytesMax?: number;
  watchHistoryBatchesMax?: number;
  /** Key, value and per-change bytes one watch reply carries at most (default 64 KiB; must hold the largest key and value). */
  watchReplyContentBytesMax?: number;
  /** Watch polls held at most (default 1024; see ./watch-polls.ts). */
  watchPollsHeldMax?: number;
  /** Versions with no change under a held poll's prefix after which it is answered empty (default WATCH_IDLE_REPLY_VERSIONS). */
  watchIdleReplyVersions?: number;
}

/** What a member restarted from its own log starts with (see ChainNodeOptions.recovered). */
export interface RecoveredState {
  appliedSeq: number;
  clientHighWater: ReadonlyMap<number, number>;
  /**
   * The newest batches of its log, oldest first, ending at appliedSeq: a node with a successor
   * keeps them in flight (those that fit), as if not yet acknowledged, so a successor that stopped
   * with less is sent what it lacks. A tail ignores them.
   */
  inflight?: readonly Uint8Array[];
  /**
   * Where the longest log of the restarted chain ends: this replica answers no read until it has
   * applied through it (or the chain is reconfigured), so a tail that restarted behind the others
   * never answers with less than a write acknowledged before the restart.
   */
  readsWaitFor?: number;
}

/** Outcome of offering a frame to the node. Expected conditions, never exceptions. */
export type ReceiveResult =
  | { status: 'applied'; firstSeq: number; count: number }
  | { status: 'duplicate' }
  | { status: 'full' }
  | { status: 'ignored'; code: ErrorCode; reason: string }
  | { status: 'rejected'; code: ErrorCode; reason: string };

/** A batch that does not fit the in-flight log now: leave it in its ring (backpressure). */
const FULL = { status: 'full' } as const;
const DUPLICATE = { status: 'duplicate' } as const;
/**
 * Read replies waiting to be sent before the node stops taking read batches: a client that sends
 * reads and never takes the replies fills its own ring, not this node's memory.
 */
const READ_REPLIES_WAITING_MAX = 64;

type Refusal = Extract<ReceiveResult, { status: 'ignored' | 'rejected' }>;

function ignored(code: ErrorCode, reason: string): Refusal {
  return { status: 'ignored', code, reason };
}

function rejected(code: ErrorCode, reason: string): Refusal {
  return { status: 'rejected', code, reason };
}

/** A role's step function: one frame of `kind`, from link `from`. */
type StepFunction = (from: FrameSource, kind: MessageKind, bytes: Uint8Array) => ReceiveResult;

/**
 * What the runtime must do next, as plain data. Ordering rules:
 * - Every batch in `forward` is already applied to this node's store (apply BEFORE forwarding,
 *   invariant I1) and must be sent in order; send a prefix if the link is full, and report how
 *   many went with advance().
 * - `ackUpstream` is sent to the predecessor; the tail produces it only AFTER applying (I2).
 * - `clientAcks` (tail only) go to the clients; a client resolves every write with client seq
 *   <= committedClientSeq. Same rule: produced only after apply.
 * - `readReplies` (tail only) answer read batches in the order they arrived.
 */
export interface Ready {
  /**
   * A tail with a new joiner: the next frame of the joiner's starting state, on the link `forward`
   * uses, interleaved with batches: when there is a frame, `forward` is empty, and no batch may be
   * sent before it. Report with snapshotSent in advance() whether it went; an unsent frame comes
   * back next time.
   */
  snapshot: Uint8Array | null;
  forward: Uint8Array[];
  forwardSeqs: number[];
  /**
   * `forward` holds a joiner's catch-up: batches read back from this tail's log, not its in-flight
   * list's (forwardSeqs is empty then). Sent the same way; advance() tells them apart.
   */
  catchUp?: boolean;
  ackUpstream: AckFields | null;
  /**
   * After a reconfiguration: tell the predecessor how far this node has applied, so it resends the
   * rest. Send it BEFORE ackUpstream (both go upstream in order).
   */
  helloUpstream: HelloFields | null;
  clientAcks: AckFields[];
  readReplies: Uint8Array[];
}

export interface AdvanceReport {
  /** How many of ready().forward were handed to the successor (a prefix). */
  forwarded: number;
  /** Whether helloUpstream, ackUpstream and every clientAck were sent (unsent ones are retried). */
  acksSent: boolean;
  /** How many of ready().readReplies were sent (a prefix). */
  repliesSent: number;
  /** Whether ready().snapshot was sent (default: it was, if there was one). */
  snapshotSent?: boolean;
}

export class ChainNode {
  readonly id: number;
  private epochValue: number;
  private roleValue: Role;
  readonly store: Store;
  private readonly inflight: InflightLog;
  private readonly log: (message: string) => void;

  private appliedSeqValue = 0;
  private committedSeqValue = 0;
  /** Highest client sequence applied, per client (exactly-once at the head; carried by all). */
  private readonly clientHighWater = new Map<number, number>();
  /** Clients whose writes were committed since the last ready() (tail only). */
  private readonly clientsToAck = new Set<number>();
  /** Highest client sequence committed (at the end of the line), per client: what clients are told. */
  private readonly committedClientHighWater = new Map<number, number>();
  private ackPending = false;
  private helloPending = false;
  /** After a reconfiguration, forwarding waits for the successor's Hello (its applied seq). */
  private awaitingSuccessorHello = false;
  /** See RecoveredState.readsWaitFor. */
  private readsWaitFor = 0;
  /** A Hello from a successor already in a newer epoch than ours, applied when we get there. */
  private helloFromNextEpoch: HelloFields | null = null;
  /**
   * Its ack, likewise: dropped, the commit point would stay behind here until the next write comes
   * through, and reads held for it (reads at any replica) with it.
   */
  private ackFromNextEpoch: { epoch: number; committedSeq: number } | null = null;
  /** Read replies in the order their batches came, each sent once the commit point reaches its readReleaseAt. */
  private readonly readReplies: Uint8Array[] = [];
  private readonly readReleaseAt: number[] = [];
  private readonly readsAtAnyReplica: boolean;
  /** Watches: the recent batches this replica applied, and the polls it holds (./watch-polls.ts). */
  private readonly history: ChangeHistory;
  private readonly watchPolls: WatchPolls;
  private readonly watchRequestView: WatchRequestView;
  /**
   * The newest delete this node applied: a read of an absent key is clean only once it is
   * committed (a key has no version once deleted, so its absence is dated by the newest delete).
   */
  private newestDeleteSeq = 0;
  /** Reads answered only after the commit point reached the write they return (CRAQ's dirty reads). */
  dirtyReads = 0;
  /**
   * Conditional writes not applied (their condition failed), and what the clients are told of
   * them. A replica that is not the tail keeps those of its writes not yet committed, so that it
   * can report them if it becomes the tail; the tail reports each client's in its next ack, which
   * says from which client seq its report is complete (what a client did not hear before that, it
   * cannot know: such a conditional write's outcome is unknown).
   */
  conditionFailures = 0;
  /** Writes the head's admission hook refused (Op.Rejected records), counted by every replica. */
  admissionRejections = 0;
  private readonly uncommittedFailures: Array<{ seq: number; clientId: number; clientSeq: number; currentVersion: number; reason?: Uint8Array }> = [];
  private readonly failuresToReport = new Map<number, ConditionFailureFields[]>();
  /** Per client, the client seq through which the tail's acks have reported conditional writes. */
  private readonly reportedThrough = new Map<number, number>();
  /** The batch being applied, for onConditionFailed (no closure per batch). */
  private applyingFirstSeq = 0;
  private applyingClientId = 0;
  private applyingFirstClientSeq = 0;
  private applyingBatch: WriteBatchView | null = null;
  /** A tail's join: the replica copying its state (null when none). */
  private joinSource: JoinSource | null = null;
  /** A joining replica's load of its snapshot (null once it is a member). */
  private joinTarget: JoinTarget | null;
  /** A joiner restarted from its log: the epoch stamped on its last batch (0 if unknown). */
  private resumedEpoch = 0;
  private readonly openCatchUp: ChainNodeOptions['openCatchUp'] | null;
  private readonly catchUpOnlyIfSmaller: boolean;
  private readonly snapshotFrameBytesMax: number;
  private readonly limits: { keyBytesMax: number; valueBytesMax: number };

  /** The current role's step function (see the step* methods); swapped by reconfigure(). */
  private stepRole: StepFunction;
  private readonly envelope = new FrameEnvelope();
  private readonly helloView = new HelloView();
  private readonly batchView: WriteBatchView;
  private readonly checksum: Crc32;
  private readonly ackView = new AckView();
  private readonly readView: ReadBatchView;
  private readonly replyEncoder: ReadReplyEncoder;

  constructor(options: ChainNodeOptions) {
    assert(Number.isInteger(options.id) && options.id >= 0, 'ChainNode: id must be a non-negative integer');
    assert(Number.isInteger(options.epoch) && options.epoch >= 1, 'ChainNode: epoch must be >= 1');
    this.id = options.id;
    this.epochValue = options.epoch;
    this.roleValue = options.role;
    this.store = options.store;
    // A joiner does not forward for a while, and should start fast: it touches its in-flight arena
    // page by page when it first forwards, if ever, instead of all of it up front.
    this.inflight = new InflightLog(options.inflightBytesMax, options.inflightBatchesMax, { prefault: options.role !== 'joining' });
    this.replyEncoder = new ReadReplyEncoder(options.readReplyResultsMax, options.readReplyPayloadBytesMax);
    this.snapshotFrameBytesMax = options.snapshotFrameBytesMax ?? 1024 * 1024;
    this.limits = { keyBytesMax: options.keyBytesMax ?? KEY_BYTES_LIMIT, valueBytesMax: options.valueBytesMax ?? options.readReplyPayloadBytesMax };
    // What the node accepts, it must be able to serve and to copy to a joiner (../limits.ts).
    assert(this.limits.valueBytesMax <= options.readReplyPayloadBytesMax, 'ChainNode: a value of valueBytesMax must fit one read reply');
    assert(
      snapshotFrameBytesFor(this.limits.keyBytesMax + this.limits.valueBytesMax) <= this.snapshotFrameBytesMax,
      'ChainNode: an entry of keyBytesMax and valueBytesMax must fit one snapshot frame',
    );
    this.batchView = new WriteBatchView(this.limits);
    this.checksum = options.checksum ?? crc32;
    this.readView = new ReadBatchView(this.limits.keyBytesMax);
    const resumed = options.role === 'joining' && options.recovered !== undefined;
    this.joinTarget = options.role === 'joining' ? new JoinTarget(this.limits, resumed) : null;
    this.openCatchUp = options.openCatchUp ?? null;
    this.catchUpOnlyIfSmaller = options.catchUpOnlyIfSmaller ?? true;
    this.readsAtAnyReplica = options.readsAtAnyReplica ?? false;
    this.history = new ChangeHistory(options.watchHistoryBytesMax ?? 256 * 1024, options.watchHistoryBatchesMax ?? 1024);
    const largestChangeBytes = watchChangeBytes(this.limits.keyBytesMax, this.limits.valueBytesMax);
    const watchReplyContentBytesMax = options.watchReplyContentBytesMax ?? Math.max(64 * 1024, largestChangeBytes);
    assert(watchReplyContentBytesMax >= largestChangeBytes, 'ChainNode: a change of keyBytesMax and valueBytesMax must fit one watch reply');
    this.watchPolls = new WatchPolls(this.history, new WatchReplyEncoder(watchReplyContentBytesMax), options.watchPollsHeldMax ?? 1024, options.watchIdleReplyVersions);
    this.watchRequestView = new WatchRequestView(this.limits.keyBytesMax);
    this.log = options.log ?? (() => {});
    this.stepRole = this.stepFunctionOf(options.role);
    // A joiner first tells the tail what it holds (nothing, or its log: see takeJoinOffer).
    this.helloPending = options.role === 'joining';
    if (resumed) this.resumeJoining(options.recovered!);
    else if (options.recovered !== undefined) this.resume(options.recovered);
    if (this.isTail && options.joiner !== undefined && options.joiner !== null) this.startJoin(options.joiner);
  }

  /** Starts from a recovered state instead of an empty one (see ChainNodeOptions.recovered). */
  private resume(recovered: RecoveredState): void {
    assert(this.roleValue !== 'joining', 'a joining replica starts from a snapshot, not from a log');
    assert(Number.isSafeInteger(recovered.appliedSeq) && recovered.appliedSeq >= 0, 'recovered: appliedSeq must be a safe integer');
    this.appliedSeqValue = recovered.appliedSeq;
    for (const [clientId, clientSeq] of recovered.clientHighWater) this.clientHighWater.set(clientId, clientSeq);
    this.inflight.resetAfter(recovered.appliedSeq);
    // Which logged writes were skipped is not in the log: watches start after the restart.
    this.history.resetAfter(recovered.appliedSeq);
    if (this.forwardsDownstream && recovered.inflight !== undefined) this.preloadInflight(recovered.inflight, recovered.appliedSeq);
    if (this.isTail) {
      // The end of the line commits what it holds, and tells every client it has writes of how far
      // they are committed: a client that outlived the restart (a remote one) may be waiting for an
      // ack lost with the process. (In one process the clients died with it: their acks are dropped.)
      this.committedSeqValue = this.appliedSeqValue;
      for (const [clientId, clientSeq] of this.clientHighWater) {
        this.committedClientHighWater.set(clientId, clientSeq);
        this.clientsToAck.add(clientId);
        // How its conditional writes before the restart ended is not in the log: unknown.
        this.reportedThrough.set(clientId, clientSeq);
      }
      this.ackPending = true;
    }
    this.readsWaitFor = recovered.readsWaitFor ?? 0;
    // Which of the recovered writes were deletes is not kept: absences are dated by the newest write.
    this.newestDeleteSeq = recovered.appliedSeq;
    this.helloPending = !this.isHead;
    // Its successor restarted too: nothing goes to it before it says what it has.
    this.awaitingSuccessorHello = this.forwardsDownstream;
  }

  /** A joiner restarted from its log: what it holds, and the stamp of its last batch for its Hello. */
  private resumeJoining(recovered: RecoveredState): void {
    assert(Number.isSafeInteger(recovered.appliedSeq) && recovered.appliedSeq > 0, 'recovered: a resumed joiner holds writes');
    this.appliedSeqValue = recovered.appliedSeq;
    this.committedSeqValue = recovered.appliedSeq;
    this.history.resetAfter(recovered.appliedSeq);
    for (const [clientId, clientSeq] of recovered.clientHighWater) this.clientHighWater.set(clientId, clientSeq);
    const last = recovered.inflight?.at(-1);
    if (last !== undefined) {
      const view = this.batchView;
      assert(view.open(last) === null, 'recovered: a logged batch is well-formed');
      if (view.firstSeq + view.count - 1 === recovered.appliedSeq) this.resumedEpoch = view.epoch;
    }
  }

  /**
   * Puts the newest of `batches` (logged, so checked on recovery) that fit into the empty in-flight
   * list, ending at `appliedSeq`, stamped with this node's epoch: what is in it counts as not yet
   * acknowledged, and a Hello from a successor that has less rewinds into it.
   */
  private preloadInflight(batches: readonly Uint8Array[], appliedSeq: number): void {
    const view = this.batchView;
    let start = batches.length;
    let bytes = 0;
    // Newest first, while they fit: a new node's list fills its arena from offset 0, each batch
    // 8-byte aligned, so aligned lengths that add up to bytesMax fit.
    while (start > 0 && batches.length - start < this.inflight.batchesMax) {
      const aligned = Math.ceil(batches[start - 1]!.length / 8) * 8;
      if (bytes + aligned > this.inflight.bytesMax) break;
      bytes += aligned;
      start--;
    }
    let firstSeq = -1;
    for (let index = start; index < batches.length; index++) {
      const bytesOf = batches[index]!;
      assert(view.open(bytesOf) === null, 'recovered: a logged batch is well-formed');
      if (firstSeq < 0) {
        firstSeq = view.firstSeq;
        this.inflight.resetAfter(firstSeq - 1);
      }
      this.inflight.append(bytesOf, view.firstSeq, view.count, view.clientId, view.firstClientSeq + view.count - 1);
    }
    assert(this.inflight.batchCount === 0 || this.inflight.lastSeq === appliedSeq, 'recovered: the logged batches end at appliedSeq');
    // As if sent before the restart and not yet acknowledged: the successor's Hello says what it has.
    if (this.inflight.batchCount > 0) this.inflight.markForwardedThrough(appliedSeq);
    this.committedSeqValue = this.inflight.firstSeq - 1;
    this.restampInflight();
  }

  get role(): Role {
    return this.roleValue;
  }
  get epoch(): number {
    return this.epochValue;
  }
  get appliedSeq(): number {
    return this.appliedSeqValue;
  }
  /** Highest sequence number known to be applied at the tail. */
  get committedSeq(): number {
    return this.committedSeqValue;
  }
  get isHead(): boolean {
    return ordersWrites(this.roleValue);
  }
  /** Serves reads and acknowledges clients (the tail, or a chain of one). */
  get isTail(): boolean {
    return servesReads(this.roleValue);
  }
  /**
   * The last replica in line: it commits what it applies and has no one to forward to. A tail with a
   * joining replica behind it is not: it forwards to the joiner and commits on the joiner's acks.
   */
  get isEndOfLine(): boolean {
    return this.isTail || this.roleValue === 'joining';
  }
  /** Forwards what it applies: heads and middles, and a tail with a replica joining behind it. */
  get forwardsDownstream(): boolean {
    return (!this.isTail && this.roleValue !== 'joining') || this.joinSource !== null;
  }
  /**
   * A tail handing over to its joiner has stopped taking batches and the joiner has acknowledged
   * everything it applied: the master can now make the joiner the tail.
   */
  get handoffReady(): boolean {
    return this.joinSource?.handingOff === true && this.inflight.batchCount === 0 && this.inflight.forwardedSeq === this.appliedSeqValue;
  }
  /** A tail sending its joiner batches from its log: its log must keep them (no checkpoint) meanwhile. */
  get joinCatchingUp(): boolean {
    return this.joinSource?.catchingUp === true;
  }
  /** A joining replica that has loaded its snapshot and is applying the stream after it. */
  get joinCaughtUp(): boolean {
    return this.joinTarget?.loaded === true;
  }
  get inflightBatches(): number {
    return this.inflight.batchCount;
  }
  get inflightBytes(): number {
    return this.inflight.bytesUsed;
  }
  clientHighWaterMark(clientId: number): number {
    return this.clientHighWater.get(clientId) ?? 0;
  }

  /** The store as of now, for a checkpoint of the replica's log (taken between two steps). */
  checkpointSource(): SnapshotSource {
    return { store: this.store, epoch: this.epochValue, appliedSeq: this.appliedSeqValue, clientHighWater: new Map(this.clientHighWater) };
  }

  /**
   * Whether a batch of `length` bytes can be taken now. When false, the runtime leaves the batch
   * where it is (in its inbound ring) until acks free in-flight space: that is backpressure.
   */
  canAccept(length: number): boolean {
    if (this.joinSource?.handingOff === true) return false;
    return !this.forwardsDownstream || this.inflight.hasRoomFor(length);
  }

  /** Whether a read batch can be taken now (else it waits in its ring until replies are sent). */
  canAcceptReads(): boolean {
    return this.readReplies.length < READ_REPLIES_WAITING_MAX && this.appliedSeqValue >= this.readsWaitFor;
  }

  // ---------------------------------------------------------------------------------------------
  // The door

  /** One frame from link `from`: the current role's step function decides what it means. */
  step(from: FrameSource, bytes: Uint8Array): ReceiveResult {
    const envelope = this.envelope;
    const malformed = reasonIfMalformed(() => envelope.open(bytes));
    if (malformed !== null) return rejected(ErrorCode.malformedFrame, malformed);
    return this.stepRole(from, envelope.kind as MessageKind, bytes);
  }

  private stepFunctionOf(role: Role): StepFunction {
    switch (role) {
      case 'head':
        return (from, kind, bytes) => this.stepHead(from, kind, bytes);
      case 'middle':
        return (from, kind, bytes) => this.stepMiddle(from, kind, bytes);
      case 'tail':
        return (from, kind, bytes) => this.stepTail(from, kind, bytes);
      case 'solo':
        return (from, kind, bytes) => this.stepSolo(from, kind, bytes);
      case 'joining':
        return (from, kind, bytes) => this.stepJoining(from, kind, bytes);
    }
  }

  /** Head: client batches in, acks and Hellos from the successor. */
  private stepHead(from: FrameSource, kind: MessageKind, bytes: Uint8Array): ReceiveResult {
    if (from === 'upstream' && kind === MessageKind.writeBatch) return this.takeBatch(bytes, true);
    if (from === 'downstream' && kind === MessageKind.ack) return this.takeAck(bytes);
    if (from === 'downstream' && kind === MessageKind.hello) return this.takeHello(bytes);
    if (from === 'client' && kind === MessageKind.readBatch) return this.readsAtAnyReplica ? this.serveReads(bytes) : this.refuseRead();
    if (from === 'client' && kind === MessageKind.watchRequest) return this.readsAtAnyReplica ? this.takeWatchPoll(bytes) : this.refuseRead();
    return this.unexpected(from, kind);
  }

  /** Middle: the predecessor's batches in, acks and Hellos from the successor. */
  private stepMiddle(from: FrameSource, kind: MessageKind, bytes: Uint8Array): ReceiveResult {
    if (from === 'upstream' && kind === MessageKind.writeBatch) return this.takeBatch(bytes, false);
    if (from === 'downstream' && kind === MessageKind.ack) return this.takeAck(bytes);
    if (from === 'downstream' && kind === MessageKind.hello) return this.takeHello(bytes);
    if (from === 'client' && kind === MessageKind.readBatch) return this.readsAtAnyReplica ? this.serveReads(bytes) : this.refuseRead();
    if (from === 'client' && kind === MessageKind.watchRequest) return this.readsAtAnyReplica ? this.takeWatchPoll(bytes) : this.refuseRead();
    return this.unexpected(from, kind);
  }

  /** Tail: the predecessor's batches in, reads served; with a joiner, the joiner's acks. */
  private stepTail(from: FrameSource, kind: MessageKind, bytes: Uint8Array): ReceiveResult {
    if (from === 'upstream' && kind === MessageKind.writeBatch) return this.takeBatch(bytes, false);
    if (from === 'client' && kind === MessageKind.readBatch) return this.serveReads(bytes);
    if (from === 'client' && kind === MessageKind.watchRequest) return this.takeWatchPoll(bytes);
    if (from === 'downstream' && kind === MessageKind.ack) return this.takeAck(bytes);
    if (from === 'downstream' && kind === MessageKind.hello) return this.takeHello(bytes);
    return this.unexpected(from, kind);
  }

  /** Solo: client batches in, reads served; with a joiner, the joiner's acks. */
  private stepSolo(from: FrameSource, kind: MessageKind, bytes: Uint8Array): ReceiveResult {
    if (from === 'upstream' && kind === MessageKind.writeBatch) return this.takeBatch(bytes, true);
    if (from === 'client' && kind === MessageKind.readBatch) return this.serveReads(bytes);
    if (from === 'client' && kind === MessageKind.watchRequest) return this.takeWatchPoll(bytes);
    if (from === 'downstream' && kind === MessageKind.ack) return this.takeAck(bytes);
    if (from === 'downstream' && kind === MessageKind.hello) return this.takeHello(bytes);
    return this.unexpected(from, kind);
  }

  /** Joining: the tail's snapshot frames, then its batches; nothing else. */
  private stepJoining(from: FrameSource, kind: MessageKind, bytes: Uint8Array): ReceiveResult {
    if (from === 'upstream' && kind === MessageKind.snapshot) return this.takeSnapshot(bytes);
    if (from === 'upstream' && kind === MessageKind.writeBatch) return this.takeBatch(bytes, false);
    if (from === 'client' && (kind === MessageKind.readBatch || kind === MessageKind.watchRequest)) return this.refuseRead();
    if (from === 'downstream' && (kind === MessageKind.ack || kind === MessageKind.hello)) return this.refuseNotForwarding(kind);
    return this.unexpected(from, kind);
  }

  private unexpected(from: FrameSource, kind: MessageKind): Refusal {
    this.log(`ignoring (a frame of kind ${kind} from ${from} at a ${this.roleValue})`);
    // Ignored rather than refused as malformed: a frame late for a role this node has left (a
    // duplicated snapshot frame reaching a joiner that became the tail, say) looks just like this.
    return ignored(ErrorCode.unexpectedFrame, `a ${this.roleValue} takes no frame of kind ${kind} from ${from}`);
  }

  private refuseRead(): Refusal {
    if (this.readsAtAnyReplica) return ignored(ErrorCode.notTail, 'a joining replica serves no reads');
    return ignored(ErrorCode.notTail, `reads are served by the tail; this replica is ${this.roleValue}`);
  }

  private refuseNotForwarding(kind: MessageKind): Refusal {
    this.log(`ignoring (${kind === MessageKind.ack ? 'an ack' : 'a Hello'}: this node forwards to no one)`);
    return ignored(ErrorCode.notForwarding, `${kind === MessageKind.ack ? 'an ack' : 'a Hello'} reaches only a node that forwards`);
  }

  // ---------------------------------------------------------------------------------------------
  // Batches

  /** A write batch from upstream: the head orders it (`orders`), every other node continues its prefix. */
  private takeBatch(bytes: Uint8Array, orders: boolean): ReceiveResult {
    if (this.forwardsDownstream && !this.inflight.canEverHold(bytes.length)) {
      return rejected(ErrorCode.outOfRange, `batch of ${bytes.length} bytes exceeds the in-flight log`);
    }
    if (!this.canAccept(bytes.length)) return FULL;
    const malformed = this.batchView.open(bytes);
    if (malformed !== null) return rejected(ErrorCode.malformedFrame, malformed);
    if (!this.batchView.checksumMatches(this.checksum)) return this.refuseCorrupt(this.batchView);
    return orders ? this.orderBatch(this.batchView) : this.continueBatch(this.batchView);
  }

  /**
   * A batch whose bytes are not those its client encoded is never applied nor forwarded. A node
   * with a predecessor asks it, with a Hello, to send again everything after what this node has
   * applied (the batches behind the bad one are refused as gaps until the resend comes); a client's
   * batch is sent again by the client, which resends what stays unacknowledged.
   */
  private refuseCorrupt(batch: WriteBatchView): ReceiveResult {
    if (!this.isHead && this.roleValue !== 'joining') this.helloPending = true;
    return rejected(ErrorCode.corrupt, `batch of client ${batch.clientId} from client seq ${batch.firstClientSeq}: its checksum does not match its bytes`);
  }

  /** Head: give a client's batch its sequence numbers, once per client sequence (exactly-once). */
  private orderBatch(batch: WriteBatchView): ReceiveResult {
    assert(this.isHead, 'orderBatch on a non-head');
    const highWater = this.clientHighWater.get(batch.clientId) ?? 0;
    const lastClientSeq = batch.firstClientSeq + batch.count - 1;
    if (lastClientSeq <= highWater) {
      // A retry of writes already ordered: exactly-once means not applying them again.
      this.log(`ignoring (duplicate client batch ${batch.clientId}:${batch.firstClientSeq})`);
      return DUPLICATE;
    }
    if (batch.firstClientSeq !== highWater + 1) {
      return rejected(ErrorCode.sequenceGap, `client ${batch.clientId} batch starts at ${batch.firstClientSeq}, expected ${highWater + 1}`);
    }
    batch.stamp(this.epochValue, this.appliedSeqValue + 1);
    return this.applyAndRecord(batch);
  }

  /** Middle, tail and joiner: apply a batch that continues the prefix (I1, I3). */
  private continueBatch(batch: WriteBatchView): ReceiveResult {
    assert(!this.isHead, 'continueBatch on the head');
    // A joining replica hears only from the tail it copies, in order, and takes whatever epoch its
    // batches were stamped in (that tail applied them in their epoch); everyone else takes batches
    // of its own epoch only. A joiner's first frame is a snapshot frame: a batch before it is not its own.
    if (this.joinTarget !== null) this.joinTarget.heard = true;
    if (this.joinTarget !== null && !this.joinTarget.started) {
      this.log('ignoring (a batch before the first snapshot frame)');
      return ignored(ErrorCode.protocolViolation, 'a joining replica takes batches only after its first snapshot frame');
    }
    if (batch.epoch !== this.epochValue && this.roleValue !== 'joining') {
      this.log(`ignoring (stale epoch ${batch.epoch}, node is at ${this.epochValue})`);
      return ignored(ErrorCode.staleEpoch, `batch epoch ${batch.epoch} != ${this.epochValue}`);
    }
    const lastSeq = batch.firstSeq + batch.count - 1;
    if (lastSeq <= this.appliedSeqValue) {
      // A resend after reconfiguration of writes this node already has.
      this.log(`ignoring (duplicate batch ${batch.firstSeq}..${lastSeq})`);
      return DUPLICATE;
    }
    if (batch.firstSeq !== this.appliedSeqValue + 1) {
      return rejected(ErrorCode.sequenceGap, `batch starts at ${batch.firstSeq}, node has applied through ${this.appliedSeqValue}`);
    }
    return this.applyAndRecord(batch);
  }

  private applyAndRecord(batch: WriteBatchView): ReceiveResult {
    const firstSeq = batch.firstSeq;
    const count = batch.count;
    assert(firstSeq === this.appliedSeqValue + 1, 'I3: sequence numbers must be contiguous');
    assert(batch.epoch === this.epochValue || this.roleValue === 'joining', 'a batch is applied only in its own epoch');
    this.applyingFirstSeq = firstSeq;
    this.applyingClientId = batch.clientId;
    this.applyingFirstClientSeq = batch.firstClientSeq;
    this.applyingBatch = batch;
    const lastDeleteSeq = applyBatch(this.store, batch, this.onConditionFailed);
    this.applyingBatch = null;
    if (lastDeleteSeq > 0) this.newestDeleteSeq = lastDeleteSeq;
    this.history.append(batch.bytes, firstSeq, count);
    this.appliedSeqValue = firstSeq + count - 1;
    const lastClientSeq = batch.firstClientSeq + count - 1;
    if (lastClientSeq > (this.clientHighWater.get(batch.clientId) ?? 0)) this.clientHighWater.set(batch.clientId, lastClientSeq);
    if (this.isEndOfLine) {
      // The end of the line commits what it has applied (I2: acknowledgements only after apply).
      this.committedSeqValue = this.appliedSeqValue;
      if (this.isTail) {
        this.committedClientHighWater.set(batch.clientId, this.clientHighWater.get(batch.clientId)!);
        this.clientsToAck.add(batch.clientId);
      }
      this.ackPending = true;
    }
    if (!this.isTail) this.forgetCommittedFailures();
    // A joiner that has not said what it holds will be sent everything applied so far another way.
    if (this.forwardsDownstream && this.joinSource?.awaitingOffer !== true) this.inflight.append(batch.bytes, firstSeq, count, batch.clientId, lastClientSeq);
    assert(this.committedSeqValue <= this.appliedSeqValue, 'committed never exceeds applied');
    return { status: 'applied', firstSeq, count };
  }

  /** A conditional write of the batch being applied was skipped (see ./apply-batch.ts). */
  private readonly onConditionFailed = (index: number, currentVersion: number): void => {
    this.history.skip(this.applyingFirstSeq + index);
    const clientId = this.applyingClientId;
    const clientSeq = this.applyingFirstClientSeq + index;
    let failure: ConditionFailureFields;
    if (currentVersion === -1) {
      // Refused by the head's admission hook: the record's value is its reason.
      this.admissionRejections++;
      const batch = this.applyingBatch!;
      const record = batch.recordAt(index);
      const start = batch.keyPosition(record) + record.keyLength();
      failure = { clientSeq, currentVersion, reason: batch.bytes.slice(start, start + record.valueLength()) };
    } else {
      this.conditionFailures++;
      failure = { clientSeq, currentVersion };
    }
    if (this.isTail) this.reportFailure(clientId, failure);
    else this.uncommittedFailures.push({ seq: this.applyingFirstSeq + index, clientId, ...failure });
  };

  private reportFailure(clientId: number, failure: ConditionFailureFields): void {
    let failures = this.failuresToReport.get(clientId);
    if (failures === undefined) this.failuresToReport.set(clientId, (failures = []));
    failures.push(failure);
  }

  /** Not the tail: the failures of writes now committed are the tail's to report. */
  private forgetCommittedFailures(): void {
    const failures = this.uncommittedFailures;
    let committed = 0;
    while (committed < failures.length && failures[committed]!.seq <= this.committedSeqValue) committed++;
    if (committed > 0) failures.splice(0, committed);
  }

  // ---------------------------------------------------------------------------------------------
  // Acks and Hellos from downstream

  /** A cumulative ack from the successor (or the joiner): everything through committedSeq is at the tail. */
  private takeAck(bytes: Uint8Array): ReceiveResult {
    const malformed = this.ackView.open(bytes);
    if (malformed !== null) return rejected(ErrorCode.malformedFrame, malformed);
    const ack = this.ackView;
    // A late ack from a successor this node no longer has (it became the tail meanwhile).
    if (!this.forwardsDownstream) return this.refuseNotForwarding(MessageKind.ack);
    if (this.joinSource !== null) {
      // From the joiner, whatever the epoch each of us is at: it only ever hears from this tail,
      // and its cumulative ack only trims what this tail keeps for it (all of it committed here):
      // its catch-up's window, then its in-flight list.
      this.joinSource.acknowledged(ack.committedSeq);
      if (ack.committedSeq > this.inflight.forwardedSeq || ack.committedSeq < this.inflight.firstSeq - 1) return DUPLICATE;
      this.inflight.trimThrough(ack.committedSeq);
      return { status: 'applied', firstSeq: ack.committedSeq, count: 0 };
    }
    if (ack.epoch > this.epochValue) {
      // The successor heard of the new configuration before we did: kept, as its Hello is.
      if (this.ackFromNextEpoch === null || ack.epoch >= this.ackFromNextEpoch.epoch) this.ackFromNextEpoch = { epoch: ack.epoch, committedSeq: ack.committedSeq };
      return ignored(ErrorCode.staleEpoch, `ack from epoch ${ack.epoch}, kept for later`);
    }
    if (ack.epoch !== this.epochValue) {
      this.log(`ignoring (stale epoch ${ack.epoch} ack, node is at ${this.epochValue})`);
      return ignored(ErrorCode.staleEpoch, `ack epoch ${ack.epoch} != ${this.epochValue}`);
    }
    return this.takeAckOfEpoch(ack.committedSeq);
  }

  /** The successor's cumulative ack, in this node's epoch. */
  private takeAckOfEpoch(committedSeq: number): ReceiveResult {
    if (committedSeq <= this.committedSeqValue) return DUPLICATE;
    // I1: the successor's applied writes are a prefix of ours, and we forwarded them. A correct
    // successor never acks more; one that does is refused (the master decides about it).
    if (committedSeq > this.inflight.sentSeq) {
      this.log(`ignoring (ack ${committedSeq} beyond forwarded ${this.inflight.sentSeq})`);
      return rejected(ErrorCode.protocolViolation, `ack ${committedSeq} beyond forwarded ${this.inflight.sentSeq}`);
    }
    // Its Hello (sent before this ack) rewound forwarding; what the ack covers needs no resend.
    this.inflight.skipForwardingTo(committedSeq);
    this.inflight.trimThrough(committedSeq);
    this.committedSeqValue = committedSeq;
    this.forgetCommittedFailures();
    this.ackPending = !this.isHead;
    return { status: 'applied', firstSeq: committedSeq, count: 0 };
  }


  /** The successor's Hello after a reconfiguration: resend everything after its applied seq. */
  private takeHello(bytes: Uint8Array): ReceiveResult {
    const malformed = this.helloView.open(bytes);
    if (malformed !== null) return rejected(ErrorCode.malformedFrame, malformed);
    return this.takeHelloFields(this.helloView);
  }

  private takeHelloFields(hello: HelloFields): ReceiveResult {
    // The joiner's, whatever its epoch (it takes whatever epoch this tail's batches carry). Once
    // answered, a Hello from it is either a repeat or, after the handoff, its first as a member.
    if (this.joinSource?.awaitingOffer === true && hello.replicaId === this.joinSource.joinerId) return this.takeJoinOffer(hello);
    if (hello.epoch > this.epochValue) {
      // The successor heard of the new configuration before we did: keep it for when we do (the
      // newest one wins; older epochs' Hellos are moot once a newer one has been sent).
      if (this.helloFromNextEpoch === null || hello.epoch >= this.helloFromNextEpoch.epoch) {
        this.helloFromNextEpoch = { epoch: hello.epoch, replicaId: hello.replicaId, appliedSeq: hello.appliedSeq, appliedEpoch: hello.appliedEpoch ?? 0 };
      }
      return ignored(ErrorCode.staleEpoch, `hello from epoch ${hello.epoch}, kept for later`);
    }
    if (hello.epoch !== this.epochValue) {
      this.log(`ignoring (stale epoch ${hello.epoch} hello, node is at ${this.epochValue})`);
      return ignored(ErrorCode.staleEpoch, `hello epoch ${hello.epoch} != ${this.epochValue}`);
    }
    // Only a node with a successor that was just (re)configured hears a Hello (a tail's joiner's is above).
    if (!this.forwardsDownstream || this.joinSource !== null) return this.refuseNotForwarding(MessageKind.hello);
    // I1: the successor's applied writes are a prefix of ours, and it has everything the tail has,
    // so everything after its applied seq is still in our in-flight list. A Hello claiming more is
    // not from a correct successor: refused.
    if (hello.appliedSeq > this.appliedSeqValue) {
      this.log(`ignoring (a Hello claiming seq ${hello.appliedSeq}, beyond ${this.appliedSeqValue})`);
      return rejected(ErrorCode.protocolViolation, `I1: successor claims seq ${hello.appliedSeq}, beyond ${this.appliedSeqValue}`);
    }
    if (hello.appliedSeq < this.inflight.firstSeq - 1) {
      return rejected(ErrorCode.sequenceGap, `successor applied through ${hello.appliedSeq}, but the in-flight list starts at ${this.inflight.firstSeq}`);
    }
    // Batches are applied whole: a successor stops between two of them, never inside one.
    if (!this.inflight.isBatchBoundary(hello.appliedSeq)) {
      this.log(`ignoring (a Hello claiming seq ${hello.appliedSeq}, inside a batch)`);
      return rejected(ErrorCode.protocolViolation, `successor claims seq ${hello.appliedSeq}, inside a logged batch`);
    }
    this.inflight.rewindForwardingTo(hello.appliedSeq, { newSuccessor: this.awaitingSuccessorHello });
    this.awaitingSuccessorHello = false;
    return { status: 'applied', firstSeq: hello.appliedSeq, count: 0 };
  }

  // ---------------------------------------------------------------------------------------------
  // Reads and snapshots

  /**
   * A read batch, answered from the store. At the tail (and at a solo) every write applied is
   * committed, so the answer is the committed state now. At a head or middle (CRAQ) a key is
   * *clean* when its newest write here is committed (version <= committedSeq): no later write to
   * it can be committed anywhere, since the tail applies only what passed through here (I1), so the
   * value is the committed one now. A *dirty* key's value is the newest write here, not committed
   * yet: its reply is held until the commit point reaches that write. That is linearizable too: the
   * write was not committed when the read came (else the key was clean), no write after it exists
   * yet, and the tail commits it before this node hears so, so there is a moment within the read at
   * which it is the committed value. (CRAQ asks the tail for the committed version instead; here a
   * question to the tail travels the chain behind the very write that made the key dirty, so the
   * answer could come no sooner than the ack.) An absent key is dated by the newest delete.
   * Replies leave in the order their batches came.
   */
  private serveReads(bytes: Uint8Array): ReceiveResult {
    const malformed = this.readView.open(bytes);
    if (malformed !== null) return rejected(ErrorCode.malformedFrame, malformed);
    const reads = this.readView;
    const encoder = this.replyEncoder;
    const store = this.store;
    const committed = this.committedSeqValue;
    let releaseAt = 0;
    encoder.begin(reads.firstRequestId);
    for (let index = 0; index < reads.count; index++) {
      const record = reads.recordAt(index);
      const handle = store.find(reads.bytes, reads.payloadPosition + record.keyOffset(), record.keyLength());
      const valueLength = handle < 0 ? 0 : store.valueLength(handle);
      if (!encoder.fits(valueLength)) {
        this.holdReply(encoder.finish(this.epochValue, this.appliedSeqValue, reads.lane).slice(), releaseAt);
        encoder.begin(reads.firstRequestId + index);
        releaseAt = 0;
      }
      const version = handle < 0 ? this.newestDeleteSeq : store.version(handle);
      if (version > committed) {
        this.dirtyReads++;
        if (version > releaseAt) releaseAt = version;
      }
      if (handle < 0) encoder.addNotFound();
      else encoder.addFound(store.heap, store.valueOffset(handle), valueLength, version);
    }
    this.holdReply(encoder.finish(this.epochValue, this.appliedSeqValue, reads.lane).slice(), releaseAt);
    return { status: 'applied', firstSeq: reads.firstRequestId, count: reads.count };
  }

  /**
   * A watch's poll (./watch-polls.ts): answered from the change history with what is committed, or
   * held until the commit point passes a change it asks for. Its reply leaves with the read replies.
   */
  private takeWatchPoll(bytes: Uint8Array): ReceiveResult {
    const request = this.watchRequestView;
    const malformed = request.open(bytes);
    if (malformed !== null) return rejected(ErrorCode.malformedFrame, malformed);
    const evicted: Uint8Array[] = [];
    const reply = this.watchPolls.take(request, this.committedSeqValue, evicted);
    for (const frame of evicted) this.holdReply(frame, 0);
    if (reply !== null) this.holdReply(reply, 0);
    return { status: 'applied', firstSeq: request.requestId, count: 1 };
  }

  /**
   * Answers the held watch polls the commit point has reached, if any (ready() does too): a runtime
   * that times its replica's work on writes calls this first, since serving watchers is not that.
   */
  serveDueWatches(): void {
    if (this.watchPolls.due(this.committedSeqValue)) this.serveWatchPolls();
  }

  private serveWatchPolls(): void {
    const replies: Uint8Array[] = [];
    this.watchPolls.serve(this.committedSeqValue, replies);
    for (const frame of replies) this.holdReply(frame, 0);
  }

  private releaseWatchPolls(): void {
    const replies: Uint8Array[] = [];
    this.watchPolls.release(replies);
    for (const frame of replies) this.holdReply(frame, 0);
  }

  /** Watch polls held for a change (for stats). */
  get watchPollsHeld(): number {
    return this.watchPolls.heldCount;
  }

  /**
   * The committed changes this replica's history holds, oldest first, decoded (for checks and
   * diagnostics: a watch of every key from `startSeq` would be sent exactly these).
   */
  heldChanges(): { startSeq: number; changes: Array<{ op: 'put' | 'delete'; key: string; value?: string; version: number }> } {
    const history = this.history;
    const changes: Array<{ op: 'put' | 'delete'; key: string; value?: string; version: number }> = [];
    const through = Math.min(this.committedSeqValue, history.lastSeq);
    const text = new TextDecoder();
    if (history.startSeq <= through) {
      history.scan(history.startSeq, through, (op, bytes, keyStart, keyLength, valueLength, seq) => {
        const key = text.decode(bytes.subarray(keyStart, keyStart + keyLength));
        if (op === Op.Put) changes.push({ op: 'put', key, value: text.decode(bytes.subarray(keyStart + keyLength, keyStart + keyLength + valueLength)), version: seq });
        else changes.push({ op: 'delete', key, version: seq });
        return true;
      });
    }
    return { startSeq: history.startSeq, changes };
  }

  /** Queues a read reply, to leave once the commit point reaches `releaseAt` (and those before it have left). */
  private holdReply(frame: Uint8Array, releaseAt: number): void {
    assert(releaseAt <= this.appliedSeqValue, 'a read waits only for a write this node applied');
    this.readReplies.push(frame);
    this.readReleaseAt.push(releaseAt);
  }

  /** Read replies at the front of the queue whose writes are committed. */
  private releasableReplies(): number {
    let count = 0;
    while (count < this.readReleaseAt.length && this.readReleaseAt[count]! <= this.committedSeqValue) count++;
    return count;
  }

  /** A joiner's snapshot frame (see ./join-target.ts): the first one sets where batches continue. */
  private takeSnapshot(bytes: Uint8Array): ReceiveResult {
    const target = this.joinTarget;
    assert(target !== null, 'takeSnapshot: a joining node has a join target');
    target.heard = true;
    const result = target.take(bytes, this.store, this.clientHighWater, this.appliedSeqValue);
    if (result.status !== 'first' && result.status !== 'applied') return result;
    if (result.status === 'first') {
      assert(this.appliedSeqValue === 0, 'a joining replica starts empty');
      this.appliedSeqValue = result.appliedSeq;
      this.committedSeqValue = result.appliedSeq;
      this.history.resetAfter(result.appliedSeq);
      this.ackPending = true;
    }
    // Until its last frame is in, its store is a fuzzy copy: a conditional write among the batches
    // meanwhile may be skipped here and applied everywhere else (the frames repair the store, not
    // which writes it skipped). Its history of changes starts once its store is exact.
    if (target.loaded && !target.resumed) this.history.resetAfter(this.appliedSeqValue);
    return { status: 'applied', firstSeq: result.appliedSeq, count: result.count };
  }

  // ---------------------------------------------------------------------------------------------
  // Configuration

  /**
   * The master installed a new configuration in which this node keeps a place, with `role`. What
   * changes (van Renesse & Schneider, section 3):
   * - a node that becomes the tail (its successor failed) commits everything it has applied and
   *   acknowledges it to the clients and upstream;
   * - a node with a successor stops forwarding until that successor's Hello says how far it got,
   *   then resends the rest from its in-flight list (the middle-failure repair);
   * - every node but the head sends its predecessor a Hello, and the tail re-acknowledges in the
   *   new epoch, because messages of the old epoch are dropped from now on.
   * Batches still in the in-flight list are re-stamped with the new epoch before they are resent.
   */
  reconfigure(epoch: number, role: Role, options: { joiner?: number | null } = {}): void {
    assert(epoch > this.epochValue, `reconfigure: epoch ${epoch} does not move past ${this.epochValue}`);
    // The chain went on without the longest log: what the others hold is all there is.
    this.readsWaitFor = 0;
    if (role === 'joining') {
      // Still joining, in a newer configuration: only the epoch moves; re-acknowledge in it.
      assert(this.roleValue === 'joining', 'reconfigure: a replica becomes joining only when it is created');
      this.epochValue = epoch;
      this.ackPending = this.joinTarget!.started;
      // Until the tail has answered, it may not have heard what this joiner holds: say it again.
      if (!this.joinTarget!.heard) this.helloPending = true;
      return;
    }
    const forwardedBefore = this.forwardsDownstream;
    const wasTail = this.isTail;
    // Its watchers poll wherever the new configuration sends them (an empty reply frees each).
    if (!answersReads(role, this.readsAtAnyReplica)) this.releaseWatchPolls();
    this.epochValue = epoch;
    this.roleValue = role;
    this.stepRole = this.stepFunctionOf(role);
    this.joinTarget = null;
    // The same join carries on across epochs (say, the head failed meanwhile); anything else ends it.
    const joiner = this.isTail ? (options.joiner ?? null) : null;
    const sameJoin = joiner !== null && this.joinSource?.joinerId === joiner;
    if (!sameJoin) {
      this.joinSource?.close();
      this.joinSource = null;
    }
    if (wasTail && !this.isTail) {
      // No longer the tail: what it had not reported, the next tail reports (or cannot, and says so).
      this.failuresToReport.clear();
      this.reportedThrough.clear();
    }
    if (this.isTail) {
      if (!wasTail) this.takeOverReports();
      this.becomeTail(forwardedBefore && !sameJoin);
      if (joiner !== null && !sameJoin) this.startJoin(joiner);
    } else {
      this.awaitingSuccessorHello = true;
      this.restampInflight();
    }
    this.helloPending = !this.isHead;
    // And the commit point it knows, again in the new epoch: an ack of the old one may have been
    // dropped by a predecessor that was not there yet (it keeps only the newer epochs' ones).
    if (!this.isHead) this.ackPending = true;
    assert(this.committedSeqValue <= this.appliedSeqValue, 'committed never exceeds applied');
    // A Hello that overtook our own reconfiguration: apply it now if it is for this epoch, keep it if
    // it is for a later one (we may be passing through several epochs), drop it if it is older.
    const early = this.helloFromNextEpoch;
    if (early !== null && early.epoch <= epoch) {
      this.helloFromNextEpoch = null;
      if (this.joinSource?.awaitingOffer === true && early.replicaId === this.joinSource.joinerId) this.takeJoinOffer(early);
      else if (early.epoch === epoch && this.forwardsDownstream && this.joinSource === null) this.takeHelloFields(early);
    }
    // Then the ack that came with it (after its Hello, as it was sent).
    const earlyAck = this.ackFromNextEpoch;
    if (earlyAck !== null && earlyAck.epoch <= epoch) {
      this.ackFromNextEpoch = null;
      if (earlyAck.epoch === epoch && this.forwardsDownstream && this.joinSource === null && !this.awaitingSuccessorHello) {
        const result = this.takeAckOfEpoch(earlyAck.committedSeq);
        if (result.status === 'rejected') this.log(`ignoring (an early ack: ${result.reason})`);
      }
    }
  }

  /**
   * This node is the tail (or solo) of the new configuration. If it had a successor (it failed) or
   * a joiner (it went away), everything applied here is committed now (I2 by definition), and
   * nothing is left to forward.
   */
  private becomeTail(successorGone: boolean): void {
    if (successorGone) {
      this.inflight.markForwardedThrough(this.inflight.lastSeq);
      this.inflight.trimThrough(this.inflight.lastSeq);
    }
    this.committedSeqValue = this.appliedSeqValue;
    for (const [clientId, clientSeq] of this.clientHighWater) {
      this.committedClientHighWater.set(clientId, clientSeq);
      this.clientsToAck.add(clientId);
    }
    this.ackPending = true;
    this.awaitingSuccessorHello = false;
  }

  /**
   * A replica that was not the tail becomes it: it reports the failed conditional writes it kept
   * (those not committed when it last heard, all committed now), and for each client, from the
   * first of its writes among them (or, if it holds none, from after the client's last write):
   * what the old tail told the client before that, this one cannot repeat.
   */
  private takeOverReports(): void {
    for (const [clientId, clientSeq] of this.clientHighWater) this.reportedThrough.set(clientId, clientSeq);
    const log = this.inflight;
    for (let index = 0; index < log.batchCount; index++) {
      const clientId = log.clientIdAt(index);
      const firstClientSeq = log.lastClientSeqAt(index) - log.countAt(index) + 1;
      if (firstClientSeq - 1 < (this.reportedThrough.get(clientId) ?? 0)) this.reportedThrough.set(clientId, firstClientSeq - 1);
    }
    for (const { clientId, clientSeq, currentVersion, reason } of this.uncommittedFailures) this.reportFailure(clientId, reason === undefined ? { clientSeq, currentVersion } : { clientSeq, currentVersion, reason });
    this.uncommittedFailures.length = 0;
  }

  /**
   * A replica joins behind this tail. Nothing goes to it until its Hello says what it holds (see
   * takeJoinOffer); batches applied meanwhile are part of what it is then sent.
   */
  private startJoin(joiner: number): void {
    this.joinSource = new JoinSource(joiner, this.snapshotFrameBytesMax, this.inflight.bytesMax);
  }

  /**
   * The joiner's Hello. A joiner restarted from its own log that this tail's log can continue gets
   * the logged batches after its applied seq, through this tail's applied seq, unless it missed
   * more writes than the store holds keys (a snapshot is then smaller); any other joiner a
   * snapshot of everything applied so far, cut a frame at a time from a fuzzy scan, so this tail
   * goes on applying writes while it is sent. Either way, every batch applied from now on follows
   * from the in-flight list.
   */
  private takeJoinOffer(hello: HelloFields): ReceiveResult {
    const join = this.joinSource!;
    const applied = this.appliedSeqValue;
    const missed = applied - hello.appliedSeq;
    const smaller = !this.catchUpOnlyIfSmaller || missed <= this.store.size;
    const offered = hello.appliedSeq > 0 && missed >= 0 && smaller && this.openCatchUp !== null;
    const catchUp = offered ? this.openCatchUp!(hello.appliedSeq, hello.appliedEpoch ?? 0, applied) : null;
    this.inflight.resetAfter(applied);
    if (catchUp !== null) {
      this.log(`joiner ${join.joinerId} resumes from seq ${hello.appliedSeq}: sending it ${applied - hello.appliedSeq} writes from the log`);
      join.startCatchUp(catchUp, this.epochValue, applied);
    } else {
      if (hello.appliedSeq > 0 && !smaller) this.log(`joiner ${join.joinerId} missed ${missed} writes, more than the ${this.store.size} keys of a snapshot: sending a snapshot`);
      else if (hello.appliedSeq > 0) this.log(`joiner ${join.joinerId} offers its log through seq ${hello.appliedSeq}, which this tail cannot continue: sending a snapshot`);
      join.startSnapshot({ store: this.store, epoch: this.epochValue, appliedSeq: applied, clientHighWater: new Map(this.clientHighWater) });
    }
    return { status: 'applied', firstSeq: hello.appliedSeq, count: 0 };
  }

  private restampInflight(): void {
    const view = this.batchView;
    for (let index = 0; index < this.inflight.batchCount; index++) {
      const bytes = this.inflight.batchAt(index);
      assert(view.open(bytes) === null, 'a logged batch is well-formed');
      view.restampEpoch(this.epochValue);
    }
  }

  /**
   * The master is about to make this tail's joiner the tail: stop taking batches, so the joiner can
   * acknowledge everything applied here (handoffReady) before roles change. Reads and client acks
   * go on meanwhile; a write waits at most until the handoff completes.
   */
  beginHandoff(): void {
    assert(this.joinSource !== null, 'beginHandoff: no replica is joining behind this one');
    this.joinSource.handingOff = true;
  }

  // ---------------------------------------------------------------------------------------------
  // Ready and advance

  /** Whether ready() has anything for the runtime. */
  hasReady(): boolean {
    return (
      this.ackPending ||
      this.helloPending ||
      this.joinSource?.sending === true ||
      (this.readReplies.length > 0 && this.readReleaseAt[0]! <= this.committedSeqValue) ||
      this.watchPolls.due(this.committedSeqValue) ||
      (this.forwardsDownstream && !this.awaitingSuccessorHello && this.joinSource?.awaitingOffer !== true && this.inflight.pendingCount > 0)
    );
  }

  ready(): Ready {
    const forward: Uint8Array[] = [];
    const forwardSeqs: number[] = [];
    const join = this.joinSource;
    // A joiner's snapshot frame goes before any batch (see JoinSource.sent for why), and the
    // batches of its catch-up before every batch of the in-flight list.
    const canForward = this.forwardsDownstream && !this.awaitingSuccessorHello && join?.awaitingOffer !== true;
    const catchUp = canForward && join !== null && join.catchingUp ? join.catchUpToSend() : null;
    const snapshot = join?.frameToSend(canForward && this.inflight.pendingCount > 0) ?? null;
    if (catchUp !== null) {
      if (snapshot === null) forward.push(...catchUp);
    } else if (canForward && snapshot === null) {
      const log = this.inflight;
      for (let index = log.firstPendingIndex(); index < log.batchCount; index++) {
        forward.push(log.batchAt(index));
        forwardSeqs.push(log.firstSeqAt(index) + log.countAt(index) - 1);
      }
    }
    let ackUpstream: AckFields | null = null;
    const clientAcks: AckFields[] = [];
    if (this.ackPending && !this.isHead) {
      ackUpstream = { epoch: this.epochValue, committedSeq: this.committedSeqValue, clientId: 0, committedClientSeq: 0 };
    }
    if (this.isTail) {
      for (const clientId of this.clientsToAck) clientAcks.push(this.clientAck(clientId));
    }
    const helloUpstream = this.helloPending ? this.hello() : null;
    if (this.watchPolls.due(this.committedSeqValue)) this.serveWatchPolls();
    const readReplies = this.readReplies.slice(0, this.releasableReplies());
    return { snapshot, forward, forwardSeqs, catchUp: catchUp !== null, ackUpstream, helloUpstream, clientAcks, readReplies };
  }

  /**
   * A client's ack: its writes through the client seq committed, with the conditional ones among
   * them that failed since the last ack (at most ACK_FAILURES_MAX of them and ACK_REPORT_BYTES_MAX
   * of report, so the ack fits a control ring's record: with more, the ack stops before
   * the first left out, and the next one goes on from there).
   */
  private clientAck(clientId: number): AckFields {
    let committedClientSeq = this.committedClientHighWater.get(clientId) ?? 0;
    const failures = this.failuresToReport.get(clientId);
    const reportedFrom = (this.reportedThrough.get(clientId) ?? 0) + 1;
    if (failures === undefined || failures.length === 0) return { epoch: this.epochValue, committedSeq: this.committedSeqValue, clientId, committedClientSeq, reportedFrom };
    let count = 0;
    let bytes = 0;
    while (count < failures.length && count < ACK_FAILURES_MAX && bytes + reportBytes(failures[count]!) <= ACK_REPORT_BYTES_MAX) bytes += reportBytes(failures[count++]!);
    const listed = failures.slice(0, count);
    assert(count === 0 || listed[0]!.clientSeq >= reportedFrom, `client ${clientId}: a failure at client seq ${listed[0]?.clientSeq} before its report's start ${reportedFrom}`);
    if (count < failures.length) committedClientSeq = failures[count]!.clientSeq - 1;
    return { epoch: this.epochValue, committedSeq: this.committedSeqValue, clientId, committedClientSeq, reportedFrom, failures: listed };
  }

  /** How far this node got; a joiner restarted from its log adds the epoch of its last batch. */
  private hello(): HelloFields {
    const hello: HelloFields = { epoch: this.epochValue, replicaId: this.id, appliedSeq: this.appliedSeqValue };
    if (this.joinTarget?.resumed === true) hello.appliedEpoch = this.resumedEpoch;
    return hello;
  }

  /** A client ack went: what it reported is not reported again; the rest goes in the next one. */
  private reported(ack: AckFields): void {
    if (ack.committedClientSeq > (this.reportedThrough.get(ack.clientId) ?? 0)) this.reportedThrough.set(ack.clientId, ack.committedClientSeq);
    const failures = this.failuresToReport.get(ack.clientId);
    if (failures === undefined) return;
    let sent = 0;
    while (sent < failures.length && failures[sent]!.clientSeq <= ack.committedClientSeq) sent++;
    failures.splice(0, sent);
    if (failures.length === 0) this.failuresToReport.delete(ack.clientId);
    else {
      this.clientsToAck.add(ack.clientId);
      this.ackPending = true;
    }
  }

  /** The runtime performed `ready`: forwarded a prefix of `forward` and sent every ack and reply. */
  advance(ready: Ready, report: AdvanceReport): void {
    assert(report.forwarded >= 0 && report.forwarded <= ready.forward.length, 'advance: forwarded out of range');
    if (ready.catchUp === true) this.joinSource?.catchUpSent(report.forwarded);
    else if (report.forwarded > 0) this.inflight.markForwardedThrough(ready.forwardSeqs[report.forwarded - 1]!);
    assert(report.repliesSent >= 0 && report.repliesSent <= ready.readReplies.length, 'advance: repliesSent out of range');
    this.joinSource?.sent(ready.snapshot, report.snapshotSent ?? true, report.forwarded === ready.forward.length);
    if (report.acksSent && ready.helloUpstream !== null) this.helloPending = false;
    if (report.acksSent && (ready.ackUpstream !== null || ready.clientAcks.length > 0)) {
      this.ackPending = false;
      this.clientsToAck.clear();
      for (const ack of ready.clientAcks) this.reported(ack);
    }
    this.readReplies.splice(0, report.repliesSent);
    this.readReleaseAt.splice(0, report.repliesSent);
  }
}
