/**
 * A simulated client: the real ClientSession (src/session/client-session.ts: WritePipeline,
 * ReadPipeline, futures, resends) on simulated time, connected as the remote client is
 * (src/client/remote-client.ts, whose view and link handling this mirrors):
 * - one link per host of the view it holds, dialed again when it breaks; the head's link is the
 *   session's write sink, and its reads go to the tail's link or, with reads at any replica (the
 *   default), are spread over every member's, a lane each; a link that (re)opens gets everything
 *   unanswered again, as RemoteClient.connected does;
 * - a newer view from any host is adopted: new links, head and tail re-pointed, everything
 *   unanswered resent (resendTo);
 * - when nothing has been answered for a while, everything is resent (stalledFor, as checkProgress).
 *
 * Client 1 also watches every key from version 1 (src/watch.ts), as a remote client's watch polls
 * the members it reads from; what it takes is checked after every event (checkWatched).
 *
 * Its load: a few lanes, each a sequential process of the history, issuing put, delete, get,
 * getVersioned, putMany or a compare-and-set (getVersioned, then a put on that version) at random
 * times through the public API; the history is what the promises say, stamped with the simulated
 * time at which they settle.
 */
import { ClientSession } from '../../src/session/client-session.js';
import type { ReadPipeline } from '../../src/read-pipeline.js';
import type { ReadTarget } from '../../src/read-lanes.js';
import type { RecordSink, Wakeable } from '../../src/record-sink.js';
import { frameKind, MessageKind, KEY_BYTES_LIMIT } from '../../native-free-core/wire/codec.js';
import { Watch, watchSettings, type WatchChange } from '../../src/watch.js';
import type { ChainNode } from '../../native-free-core/chain/node.js';
import type { HistoryEntry, Operation } from './linearizability.js';
import type { Connection, Endpoint } from './network.js';
import type { SimulatedView } from './replica-host.js';
import { refusedByHook, TIMING, type World } from './world.js';

const NO_WAKE: Wakeable = { ring: () => undefined };
/** Bytes of batches sent ahead of acks (RemoteClient's window, small here so it fills). */
const UNACKED_BYTES_MAX = 2048;

/** The client's link to one host (RemoteClient's HostConnection): a RecordSink while it is up. */
class HostLink implements RecordSink {
  wanted = true;
  private dialing = false;
  private attempts = 0;

  constructor(
    private readonly client: SimulatedClient,
    readonly hostId: Endpoint,
    readonly connection: Connection,
  ) {}

  dial(world: World): void {
    if (this.dialing || this.connection.isUp || !this.wanted) return;
    this.dialing = true;
    const delay = this.attempts === 0 ? TIMING.clientRedialAfter : Math.min(TIMING.clientRedialAfterMax, TIMING.clientRedialAfter * 2 ** this.attempts);
    world.scheduler.after(delay, () => {
      this.dialing = false;
      if (!this.wanted || this.connection.isUp) return;
      const host = world.hosts.get(this.hostId)!;
      if (!host.alive || world.network.isCut(this.client.endpoint, this.hostId)) {
        this.attempts++;
        return this.dial(world);
      }
      this.attempts = 0;
      world.network.open(this.connection);
      host.clientConnected(this.client.id);
      this.client.connected(this);
    });
  }

  // RecordSink: frames go straight into the socket, a copy each (the head stamps its copy in place).
  tryWrite(bytes: Uint8Array): boolean {
    return this.client.sendTo(this, bytes.slice());
  }
  canWrite(): boolean {
    return this.connection.isUp;
  }
  markProducerWaiting(): void {}
  publish(): boolean {
    return false;
  }
}

/** One operation in flight, and the session's sequence number that settles it. */
interface PendingOperation {
  /** Writes: the last client seq it staged. Reads: its request id in its lane. */
  through: number;
  settled: boolean;
  /** Reads: the read lane it went out on. */
  lane?: ReadPipeline;
}

export class SimulatedClient {
  readonly endpoint: Endpoint;
  readonly session: ClientSession;
  private view: SimulatedView;
  private readonly links = new Map<Endpoint, HostLink>();
  private head: HostLink;
  private tail: HostLink;
  /** Operations in flight, in the order their pipeline settles them. */
  private readonly writes: PendingOperation[] = [];
  private readonly reads: PendingOperation[] = [];
  private operationsIssued = 0;
  /** History process ids of putMany's writes, each its own process: -(id * 1e6 + n). */
  private putManyEntries = 0;
  issuing = true;
  viewsAdopted = 0;
  /** Client 1's watch of every key, and the newest change it took per key (none once it lagged: see checkWatched). */
  watch: Watch | null = null;
  readonly watchedLast = new Map<string, WatchChange>();
  /** Every change the watch took, as `op key=value@version`, and the version its current run (after any lag) started from. */
  readonly watched: Array<{ version: number; text: string }> = [];
  watchFrom = 1;
  lastWatchedVersion = 0;
  watchLagged = false;

  constructor(
    private readonly world: World,
    readonly id: number,
    view: SimulatedView,
    private readonly lanes: number,
    private readonly keys: number,
  ) {
    this.endpoint = `c${id}`;
    this.view = view;
    this.head = this.link(view.members[0]!);
    this.tail = this.link(view.members.at(-1)!);
    const anyReplica = world.options.reads === 'any';
    this.session = new ClientSession(
      world.options,
      {
        clientId: id,
        head: this.head,
        headDoorbell: NO_WAKE,
        tail: this.tail,
        tailDoorbell: NO_WAKE,
        ...(anyReplica ? { readTargets: this.readTargets(), readLanes: world.options.replicas } : {}),
        epoch: () => this.view.epoch,
        unackedBytesMax: UNACKED_BYTES_MAX,
        clock: world.clock,
      },
      () => null,
    );
    this.session.writes.admissionReported = world.admission !== null;
  }

  /** With reads at any replica: every member's link, a lane each (RemoteClient.readTargets). */
  private readTargets(): ReadTarget[] | undefined {
    if (this.world.options.reads !== 'any') return undefined;
    return this.view.members.map((hostId) => ({ key: hostId, sink: this.link(hostId), doorbell: NO_WAKE }));
  }

  /** The hosts of the view this client holds: the only ones it hears configurations from. */
  get viewHosts(): readonly Endpoint[] {
    return this.view.members;
  }

  start(): void {
    if (this.id === 1) this.startWatch(1);
    for (const member of this.view.members) this.link(member).dial(this.world);
    for (let lane = 0; lane < this.lanes; lane++) this.world.scheduler.after(this.world.between(1, 20), () => this.issue(lane));
    this.world.scheduler.after(TIMING.stallResendAfter / 2, () => this.checkProgress());
  }

  private link(hostId: Endpoint): HostLink {
    let link = this.links.get(hostId);
    if (link === undefined) {
      const host = this.world.hosts.get(hostId)!;
      const created = new HostLink(this, hostId, host.clientConnection(this.id));
      created.connection.onBreak = () => created.dial(this.world);
      this.links.set(hostId, (link = created));
    }
    link.wanted = true;
    return link;
  }

  // ---------------------------------------------------------------------------------------------
  // Links and views

  sendTo(link: HostLink, bytes: Uint8Array): boolean {
    const host = this.world.hosts.get(link.hostId)!;
    return this.world.network.send(link.connection, this.endpoint, link.hostId, () => host.fromClient(this.id, bytes), true);
  }

  /** A link (re)opened: whatever was sent on the old one may be lost, so send it again. */
  connected(link: HostLink): void {
    if (link === this.head) this.session.switchHead(link, NO_WAKE);
    if (this.world.options.reads === 'any') this.session.resendReadsOn({ key: link.hostId, sink: link, doorbell: NO_WAKE });
    else if (link === this.tail) this.session.switchTail(link, NO_WAKE);
  }

  /** An ack, a read reply or a watch reply from a host. */
  receive(hostId: Endpoint, bytes: Uint8Array): boolean {
    const kind = frameKind(bytes);
    if (kind === MessageKind.watchReply) this.world.trace.detail(() => `client ${this.id} gets a watch reply from ${hostId}; its streams: ${this.session.watches.describe()}`);
    const refused = kind === MessageKind.ack ? this.session.receiveAck(bytes) : kind === MessageKind.watchReply ? this.session.receiveWatchReply(bytes) : this.session.receiveReply(bytes);
    this.world.trace.check(refused === null, () => `client ${this.id} refused a frame from ${hostId}: ${refused} (I2: nothing is acknowledged that was not sent)`);
    return true;
  }

  /** A host's view: adopted if newer (RemoteClient.adopt); any view counts as progress. */
  adoptView(view: SimulatedView): boolean {
    if (view.epoch > this.view.epoch) {
      this.view = view;
      this.viewsAdopted++;
      for (const [hostId, link] of this.links) {
        if (view.members.includes(hostId)) continue;
        link.wanted = false;
        this.world.network.close(link.connection);
      }
      for (const member of view.members) this.link(member).dial(this.world);
      // Resent even if head and tail are the same hosts: this client may have skipped epochs.
      this.head = this.link(view.members[0]!);
      this.tail = this.link(view.members.at(-1)!);
      this.session.resendTo(this.head, NO_WAKE, this.tail, NO_WAKE, this.readTargets());
    }
    this.session.progressed();
    return true;
  }

  /** RemoteClient.checkProgress: nothing answered for a while, so everything goes again. */
  private checkProgress(): void {
    this.world.scheduler.after(TIMING.stallResendAfter / 2, () => this.checkProgress());
    if (!this.session.stalledFor(TIMING.stallResendAfter)) return;
    this.world.trace.note(`client ${this.id} stalled: resends to ${this.head.hostId} and ${this.tail.hostId}`);
    this.session.resendTo(this.head, NO_WAKE, this.tail, NO_WAKE, this.readTargets());
  }

  // ---------------------------------------------------------------------------------------------
  // The watch

  private startWatch(fromVersion: number): void {
    this.watchFrom = fromVersion;
    this.watch = new Watch(watchSettings('', { fromVersion }, KEY_BYTES_LIMIT));
    this.session.watch(this.watch);
  }

  /**
   * Takes what the watch received and checks it: versions strictly increase (in order, none twice),
   * and every change is a write the history holds (a put of that key and value, or a delete of that
   * key): nothing refused, skipped or made up. A lagged watch starts again from where it may.
   */
  checkWatched(): void {
    const watch = this.watch;
    if (watch === null) return;
    for (const change of watch.take()) {
      const key = change.key.toString('utf8');
      const value = change.value?.toString('utf8');
      this.world.trace.check(change.version > this.lastWatchedVersion, () => `watch: version ${change.version} after ${this.lastWatchedVersion}`);
      const written = this.world.history.some((entry) => entry.operation.key === key && entry.operation.kind === (change.op === 'put' ? 'put' : 'delete') && (change.op === 'delete' || (entry.operation.kind === 'put' && entry.operation.value === value)));
      this.world.trace.check(written, () => `watch: ${change.op} ${key}${value === undefined ? '' : `=${value}`}@${change.version} is no write of the history`);
      this.lastWatchedVersion = change.version;
      this.watchedLast.set(key, change);
      this.watched.push({ version: change.version, text: describeChange(change.op, key, value, change.version) });
      this.world.counts.watchedChanges++;
    }
    const failure = watch.failure;
    if (failure === null) return;
    this.world.trace.check(failure.code === 'DABBA_ERR_WATCH_LAGGED', () => `watch failed: ${failure.code} ${failure.message}`);
    this.world.trace.note(`client ${this.id}'s watch lagged at ${this.lastWatchedVersion + 1}: resumes from ${failure.resumeVersion}`);
    this.world.counts.watchesLagged++;
    this.watchLagged = true;
    this.startWatch(failure.resumeVersion!);
  }

  /**
   * Whether the watch has taken every change `tail` holds since the watch's current run began, and
   * took exactly those: none missing, none added, in the same order (when `complete`, it must
   * have; else this only says whether it has caught up).
   */
  watchMatches(tail: ChainNode): boolean {
    return this.watchMismatch(tail) === null;
  }

  /**
   * Whether some member can still serve the watch's next poll: its history reaches back to it (when
   * none does, every member restarted or joined since, and the watch is about to lag).
   */
  watchServable(nodes: readonly ChainNode[]): boolean {
    if (this.watch === null) return true;
    const next = this.watch.position()[0] ?? 0;
    return nodes.some((node) => node.heldChanges().startSeq <= Math.max(next, 1));
  }

  /** The first difference between what the watch took and what `tail` holds (see watchMatches), or null. */
  watchMismatch(tail: ChainNode): string | null {
    if (this.watch === null) return null;
    const held = tail.heldChanges();
    const from = Math.max(held.startSeq, this.watchFrom);
    const expected = held.changes.filter((change) => change.version >= from).map((change) => describeChange(change.op, change.key, change.value, change.version));
    const taken = this.watched.filter((change) => change.version >= from && change.version <= tail.committedSeq).map((change) => change.text);
    for (let index = 0; index < Math.max(expected.length, taken.length); index++) {
      if (expected[index] !== taken[index]) return `replica ${tail.id} holds ${expected[index] ?? 'nothing more'} where the watch took ${taken[index] ?? 'nothing more'} (from ${from})`;
    }
    return null;
  }

  // ---------------------------------------------------------------------------------------------
  // Operations

  private issue(lane: number): void {
    if (!this.issuing) return;
    const world = this.world;
    const key = `k${Math.floor(world.random() * this.keys)}`;
    const value = `c${this.id}.${lane}.${++this.operationsIssued}`;
    const roll = world.random();
    const lanesClient = this.id * 100 + lane;
    if (roll < 0.4) this.write(lane, [this.entry(lanesClient, { kind: 'put', key, value })], () => this.session.put(key, value));
    else if (roll < 0.5) this.write(lane, [this.entry(lanesClient, { kind: 'delete', key })], () => this.session.delete(key));
    else if (roll < 0.6) this.putMany(lane, value);
    else if (roll < 0.68) this.compareAndSet(lane, lanesClient, key, value);
    else this.read(lane, this.entry(lanesClient, { kind: 'get', key }), roll < 0.8);
  }

  private entry(client: number, operation: Operation): HistoryEntry {
    const entry: HistoryEntry = { client, operation, invokedAt: this.world.now, respondedAt: Number.POSITIVE_INFINITY };
    this.world.history.push(entry);
    this.world.trace.detail(() => `client ${client} invokes ${operation.kind} ${operation.key}${operation.kind === 'put' ? `=${operation.value}` : ''}`);
    return entry;
  }

  /** Two or three distinct keys in one call; each write is its own history process (they are concurrent). */
  private putMany(lane: number, value: string): void {
    const count = 2 + Math.floor(this.world.random() * 2);
    const first = Math.floor(this.world.random() * this.keys);
    const pairs: Array<[string, string]> = [];
    const entries: HistoryEntry[] = [];
    for (let index = 0; index < count && index < this.keys; index++) {
      const key = `k${(first + index) % this.keys}`;
      pairs.push([key, `${value}.${index}`]);
      entries.push(this.entry(-(this.id * 1_000_000 + ++this.putManyEntries), { kind: 'put', key, value: `${value}.${index}` }));
    }
    this.write(lane, entries, () => this.session.putMany(pairs));
  }

  private write(lane: number, entries: HistoryEntry[], call: () => Promise<void>): void {
    const promise = call();
    const operation: PendingOperation = { through: this.session.writes.accepted, settled: false };
    this.writes.push(operation);
    promise.then(
      () => this.responded(lane, operation, entries, undefined),
      (error: unknown) => (this.refusedOrUnknown(lane, operation, entries, error) ? undefined : this.rejected(operation, entries, error)),
    );
  }

  /**
   * Under an admission hook: a write it refused had no effect and leaves the history; its call's
   * other writes (a putMany's) may have applied or not, when the call rejected: unknown; a write
   * whose outcome is unknown stays so. False for any other error (a failure of the run).
   */
  private refusedOrUnknown(lane: number, operation: PendingOperation, entries: HistoryEntry[], error: unknown): boolean {
    const code = (error as { code?: string }).code;
    if (this.world.admission === null || (code !== 'DABBA_ERR_REJECTED' && code !== 'DABBA_ERR_OUTCOME_UNKNOWN')) return false;
    operation.settled = true;
    for (const entry of entries) {
      if (code === 'DABBA_ERR_REJECTED' && entry.operation.kind === 'put' && refusedByHook(entry.operation.value)) {
        this.world.history.splice(this.world.history.lastIndexOf(entry), 1);
        this.world.counts.admissionRefused++;
      }
    }
    this.world.scheduler.after(this.world.between(1, 15), () => this.issue(lane));
    return true;
  }

  private read(lane: number, entry: HistoryEntry, versioned: boolean): void {
    const key = entry.operation.key;
    const promise = versioned ? this.session.getVersioned(key).then((found) => found?.value) : this.session.get(key);
    const readLane = this.session.reads.lastLane;
    const operation: PendingOperation = { through: readLane.lastRequestId, settled: false, lane: readLane };
    this.reads.push(operation);
    promise.then(
      (found) => this.responded(lane, operation, [entry], found?.toString('utf8')),
      (error: unknown) => this.rejected(operation, [entry], error),
    );
  }

  /**
   * A compare-and-set: getVersioned, then a put conditional on the version read (or on absence).
   * In the history the get is a get, and the put a put only if it was applied (or may have been:
   * outcome unknown); one refused for its condition had no effect and is dropped from it. Each
   * applied one is noted: two applied with the same expected version of a key break atomicity.
   */
  private compareAndSet(lane: number, client: number, key: string, value: string): void {
    const get = this.entry(client, { kind: 'get', key });
    const promise = this.session.getVersioned(key);
    const readLane = this.session.reads.lastLane;
    const read: PendingOperation = { through: readLane.lastRequestId, settled: false, lane: readLane };
    this.reads.push(read);
    promise.then(
      (found) => {
        read.settled = true;
        get.respondedAt = this.world.now;
        get.result = found?.value.toString('utf8');
        const put = this.entry(client, { kind: 'put', key, value });
        const expected = found?.version ?? 0;
        const written = this.session.put(key, value, found === undefined ? { ifAbsent: true } : { ifVersion: found.version });
        const write: PendingOperation = { through: this.session.writes.accepted, settled: false };
        this.writes.push(write);
        written.then(
          () => {
            this.world.conditionalWrites.push({ key, expected, applied: true });
            this.world.counts.conditionalApplied++;
            this.responded(lane, write, [put], undefined);
          },
          (error: { code?: string }) => {
            if (error.code === 'DABBA_ERR_REJECTED' && this.refusedOrUnknown(lane, write, [put], error)) return;
            if (error.code !== 'DABBA_ERR_CONDITION_FAILED' && error.code !== 'DABBA_ERR_OUTCOME_UNKNOWN') return this.rejected(write, [put], error);
            write.settled = true;
            if (error.code === 'DABBA_ERR_CONDITION_FAILED') {
              this.world.history.splice(this.world.history.lastIndexOf(put), 1);
              this.world.conditionalWrites.push({ key, expected, applied: false });
              this.world.counts.conditionsFailed++;
            }
            this.world.scheduler.after(this.world.between(1, 15), () => this.issue(lane));
          },
        );
      },
      (error: unknown) => this.rejected(read, [get], error),
    );
  }

  private responded(lane: number, operation: PendingOperation, entries: HistoryEntry[], result: string | undefined): void {
    operation.settled = true;
    for (const entry of entries) {
      entry.respondedAt = this.world.now;
      if (entry.operation.kind === 'get') entry.result = result;
      this.world.trace.detail(() => `client ${entry.client} done: ${entry.operation.kind} ${entry.operation.key}${entry.operation.kind === 'get' ? ` -> ${String(result)}` : ''}`);
    }
    this.world.scheduler.after(this.world.between(1, 15), () => this.issue(lane));
  }

  private rejected(operation: PendingOperation, entries: HistoryEntry[], error: unknown): void {
    operation.settled = true;
    const code = (error as { code?: string }).code ?? String(error);
    this.world.failLater(`client ${this.id}'s ${entries[0]!.operation.kind} ${entries[0]!.operation.key} was rejected: ${code} ${(error as Error).message}`);
  }

  /** Operations still waiting for their answer. */
  get pending(): number {
    return this.writes.filter((operation) => !operation.settled).length + this.reads.filter((operation) => !operation.settled).length;
  }

  /**
   * Whether the session has settled a future whose promise callbacks have not run yet (they run in
   * microtasks: the run loop must let them, so the history stamps them with this very time).
   */
  awaitsCallbacks(): boolean {
    const writesSettled = this.session.writes.accepted - this.session.writes.pending;
    if (firstUnsettled(this.writes, writesSettled)) return true;
    // Reads settle in order within a lane, not across lanes.
    while (this.reads.length > 0 && this.reads[0]!.settled) this.reads.shift();
    return this.reads.some((operation) => !operation.settled && operation.through <= operation.lane!.settledRequestId);
  }
}

function describeChange(op: 'put' | 'delete', key: string, value: string | undefined, version: number): string {
  return op === 'put' ? `put ${key}=${value}@${version}` : `delete ${key}@${version}`;
}

/** Drops settled operations from the front; true if the first one left is settled by the session but not yet answered. */
function firstUnsettled(operations: PendingOperation[], settledThrough: number): boolean {
  while (operations.length > 0 && operations[0]!.settled) operations.shift();
  const first = operations[0];
  return first !== undefined && first.through <= settledThrough;
}
