/**
 * One client of a chain, whatever carries its frames: the write pipeline (batches to the head,
 * futures resolved in bulk by the tail's cumulative acks), the read pipeline (read batches to the
 * tail), the sealing layer when values are sealed, and what both engines expose on top of them:
 * put … close, idle waiters, outcome(), resending what is unanswered when the chain changes or when
 * nothing has been answered for a while. `createChain()` drives one over SharedArrayBuffer rings,
 * `connect()` over WebSocket links, and the simulator over its simulated network; time comes from
 * a Clock, so the simulator runs this very code.
 *
 * The transport stays with its owner: it hands frames from the chain to receiveAck/receiveReply
 * (or drainAcks/drainReplies for rings), and gives the session a new head or tail sink when the
 * configuration changes (switchHead/switchTail).
 */
import { DabbaError, ErrorCode, type WriteId } from '../../native-free-core/errors.js';
import type { SpscRing } from '../../native-free-core/ring.js';
import type { ResolvedOptions } from '../options.js';
import type { VersionedValue } from '../read-pipeline.js';
import { ReadLanes, type ReadTarget } from '../read-lanes.js';
import type { RecordSink, Wakeable } from '../record-sink.js';
import { systemClock, type Clock } from '../runtime/clock.js';
import { SealedValues, type ResealReport, type Sealer, type SealingOptions } from '../sealing.js';
import { WritePipeline, type KeyInput, type ValueInput } from '../write-pipeline.js';
import { expectedVersionOf, type WriteConditions } from '../conditions.js';
import { WatchStreams, type Watch } from '../watch.js';

export interface ClientSessionOptions {
  clientId: number;
  /** The chain this session writes to (0 with one chain): watches name it in their changes. */
  chain?: number;
  head: RecordSink;
  headDoorbell: Wakeable;
  tail: RecordSink;
  tailDoorbell: Wakeable;
  /**
   * With `reads: 'any'`: the replicas reads are spread over (every member), and how many lanes to
   * spread them on (one per replica the chain has at most); without, every read goes to `tail`.
   */
  readTargets?: readonly ReadTarget[];
  readLanes?: number;
  /** The configuration epoch read batches are sent in. */
  epoch(): number;
  /** Bytes of batches sent ahead of the tail's acks at most (a socket cannot be paused; rings bound themselves). */
  unackedBytesMax?: number;
  sealer?: Sealer | null;
  clock?: Clock;
}

/** Why the session refuses new calls, or null while it takes them. */
export type Refusal = () => DabbaError | null;

export class ClientSession {
  readonly clientId: number;
  readonly writes: WritePipeline;
  readonly reads: ReadLanes;
  /** Watches' polls, to the replicas that answer reads (../watch.ts). */
  readonly watches: WatchStreams;
  private readonly sealed: SealedValues | null;
  private readonly idleWaiters: Array<() => void> = [];
  private readonly clock: Clock;
  /** When an ack, a reply or a new configuration last arrived, or everything was last sent again. */
  private lastProgressAtMs: number;
  /** Times everything unanswered was sent again because nothing had been answered for a while. */
  stallResends = 0;

  constructor(
    options: ResolvedOptions,
    session: ClientSessionOptions,
    /** Why calls are refused now (closed, failed), checked at each call. */
    private readonly refusal: Refusal,
    /** Why writes alone are refused now (a replica's disk is full), checked at each write. */
    private readonly writeRefusal: Refusal = () => null,
  ) {
    this.clientId = session.clientId;
    this.clock = session.clock ?? systemClock;
    this.writes = new WritePipeline(options, session.clientId, session.head, session.headDoorbell, session.unackedBytesMax, this.clock);
    const readTargets = session.readTargets ?? [{ key: 'tail', sink: session.tail, doorbell: session.tailDoorbell }];
    this.reads = new ReadLanes(options, readTargets, session.readLanes ?? 1, session.epoch, this.clock);
    this.watches = new WatchStreams(session.chain ?? 0, readTargets, session.sealer ?? null);
    this.sealed = (session.sealer ?? null) === null ? null : new SealedValues(session.sealer!, this.writes, this.reads, options, refusal);
    this.lastProgressAtMs = this.clock.nowMs();
  }

  // ---------------------------------------------------------------------------------------------
  // The API both engines expose

  put(key: KeyInput, value: ValueInput, conditions?: WriteConditions): Promise<void> {
    const refused = this.refusal() ?? this.writeRefusal();
    if (refused !== null) return Promise.reject(refused);
    const expected = expectedVersionOf(conditions, false);
    if (typeof expected !== 'number') return Promise.reject(expected);
    return this.sealed !== null ? this.sealed.put(key, value, expected) : this.writes.put(key, value, expected);
  }

  delete(key: KeyInput, conditions?: WriteConditions): Promise<void> {
    const refused = this.refusal() ?? this.writeRefusal();
    if (refused !== null) return Promise.reject(refused);
    const expected = expectedVersionOf(conditions, true);
    if (typeof expected !== 'number') return Promise.reject(expected);
    return this.writes.delete(key, expected);
  }

  /** Every entry (in order) with one promise for all, as Promise.all over their puts would settle. */
  putMany(entries: Iterable<readonly [KeyInput, ValueInput]>): Promise<void> {
    const refused = this.refusal() ?? this.writeRefusal();
    if (refused !== null) return Promise.reject(refused);
    return this.sealed !== null ? this.sealed.putMany(entries) : this.writes.putMany(entries);
  }

  getVersioned(key: KeyInput): Promise<VersionedValue | undefined> {
    const refused = this.refusal();
    if (refused !== null) return Promise.reject(refused);
    return this.sealed !== null ? this.sealed.getVersioned(key) : this.reads.get(key);
  }

  async get(key: KeyInput): Promise<Buffer | undefined> {
    return (await this.getVersioned(key))?.value;
  }

  /** Opens `watch`'s stream on this chain (see ../watch.ts). */
  watch(watch: Watch): void {
    const refused = this.refusal();
    if (refused !== null) return watch.fail(refused);
    this.watches.open(watch);
  }

  /** Key rotation, with the `sealing` option. */
  setSealingKeys(sealing: SealingOptions): void {
    this.sealingLayer().setKeys(sealing);
  }

  /** Re-seals values sealed under an older key version (read, then write back; not atomic). */
  reseal(keys: Iterable<KeyInput>): Promise<ResealReport> {
    const refused = this.refusal() ?? this.writeRefusal();
    if (refused !== null) return Promise.reject(refused);
    try {
      return this.sealingLayer().reseal(keys);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private sealingLayer(): SealedValues {
    if (this.sealed === null) throw new DabbaError(ErrorCode.invalidArgument, 'the sealing option was not given');
    return this.sealed;
  }

  /**
   * Whether write `write` of this client committed: 'committed' once the tail has acknowledged it,
   * 'not-committed' once it cannot be; waits while it may still.
   */
  async outcome(write: WriteId): Promise<'committed' | 'not-committed'> {
    if (write === null || typeof write !== 'object' || write.clientId !== this.clientId || !Number.isSafeInteger(write.clientSeq) || write.clientSeq < 1) {
      throw new DabbaError(ErrorCode.invalidArgument, `not a write of this client: ${JSON.stringify(write)}`);
    }
    if (write.clientSeq > this.writes.accepted) throw new DabbaError(ErrorCode.outOfRange, `write ${write.clientSeq} was never issued`);
    return (await this.writes.outcome(write.clientSeq)) ? 'committed' : 'not-committed';
  }

  /** Sends the open batches now instead of at the end of the event-loop turn. */
  flush(): void {
    this.writes.flush();
    this.reads.flush();
  }

  get pending(): number {
    return this.writes.pending + this.reads.pending;
  }

  /** Resolves when every write and read issued so far has been answered. */
  whenIdle(): Promise<void> {
    this.flush();
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Ends idle waits (after close or failure, whatever is still pending). */
  releaseIdleWaiters(): void {
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  /**
   * Waits until everything is answered or `timeoutMs` has passed, then settles what is left: writes
   * that never left get `error`; writes sent and not acknowledged get `error` too if `outcomeKnown`
   * (the caller drained a stopped tail's last acks), else DABBA_ERR_OUTCOME_UNKNOWN each.
   */
  async drain(timeoutMs: number): Promise<void> {
    let timer: { cancel(): void } | undefined;
    await Promise.race([this.whenIdle(), new Promise<void>((resolve) => (timer = this.clock.after(timeoutMs, resolve)))]);
    timer?.cancel();
  }

  /** Settles every pending write and read with `error` (see WritePipeline.fail for outcomeKnown). */
  fail(error: DabbaError, options: { outcomeKnown: boolean }, readError: DabbaError = error): void {
    this.writes.fail(error, options);
    this.reads.fail(readError);
    this.watches.fail(readError);
    this.releaseIdleWaiters();
  }

  // ---------------------------------------------------------------------------------------------
  // Frames from the chain

  /** One cumulative client Ack: settles every write through it. A reason if it is not one for us. */
  receiveAck(frame: Uint8Array): string | null {
    const settled = this.writes.receiveAck(frame);
    if (typeof settled === 'string') return settled;
    this.writes.afterAcks();
    this.progressed();
    return null;
  }

  /** One ReadReplyBatch: settles the reads it answers. A reason if it is not one for us. */
  receiveReply(frame: Uint8Array): string | null {
    const answered = this.reads.receiveReply(frame);
    if (typeof answered === 'string') return answered;
    this.reads.afterReplies();
    this.progressed();
    return null;
  }

  /** One WatchReply: hands its changes to their watch. A reason if it is not one for us. */
  receiveWatchReply(frame: Uint8Array): string | null {
    return this.watches.receive(frame);
  }

  /** The acks a tail published in its ring (in one process); returns how many writes were settled. */
  drainAcks(ring: SpscRing): number {
    const settled = this.writes.drainAcks(ring);
    if (settled > 0) this.progressed();
    return settled;
  }

  /** Something moved: note it, and end idle waits if nothing is left. */
  progressed(): void {
    this.lastProgressAtMs = this.clock.nowMs();
    if (this.idleWaiters.length > 0 && this.pending === 0) this.releaseIdleWaiters();
  }

  // ---------------------------------------------------------------------------------------------
  // A chain that changes

  /** A new head: every unacknowledged batch goes to it again (it drops what it has: exactly-once). */
  switchHead(sink: RecordSink, doorbell: Wakeable): void {
    this.writes.switchHead(sink, doorbell);
  }

  /** A new tail: every unanswered read goes to it again (a read answered twice counts once). */
  switchTail(sink: RecordSink, doorbell: Wakeable): void {
    this.reads.point([{ key: 'tail', sink, doorbell }], true);
    this.watches.point([{ key: 'tail', sink, doorbell }], true);
  }

  /**
   * The replicas that serve reads now (./read-lanes.ts): lanes whose replica changed, or all with
   * `resendAll`, send their unanswered reads to their new one.
   */
  pointReads(targets: readonly ReadTarget[], resendAll = false): void {
    this.reads.point(targets, resendAll);
    this.watches.point(targets, resendAll);
  }

  /** The link to a replica reads go to (re)opened: what its lanes sent may be lost, so send it again. */
  resendReadsOn(target: ReadTarget): void {
    this.reads.resendOn(target);
    this.watches.resendOn(target);
  }

  /**
   * Sends every unacknowledged batch and every unanswered read again, to the head given and to the
   * tail (or to `readTargets`, with reads at any replica).
   */
  resendTo(head: RecordSink, headDoorbell: Wakeable, tail: RecordSink, tailDoorbell: Wakeable, readTargets?: readonly ReadTarget[]): void {
    this.switchHead(head, headDoorbell);
    if (readTargets !== undefined) this.pointReads(readTargets, true);
    else this.switchTail(tail, tailDoorbell);
    this.lastProgressAtMs = this.clock.nowMs();
  }

  /**
   * A safety net for liveness: whether writes or reads have waited `stallMs` with no answer at all
   * (a host may drop what it cannot serve, say it stopped being head in an epoch this client never
   * heard of). The caller then resends everything (resendTo); duplicates are harmless.
   */
  stalledFor(stallMs: number): boolean {
    if (this.pending === 0 || this.clock.nowMs() - this.lastProgressAtMs < stallMs) return false;
    this.stallResends++;
    return true;
  }

  /** Both pipelines have room again in their sinks: send what waits. */
  pumpWrites(): void {
    this.writes.pump();
  }

  pumpReads(): void {
    this.reads.pump();
    this.watches.pump();
  }
}

