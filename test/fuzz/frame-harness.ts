/**
 * The codec fuzzer's harness: each mutated frame goes to every reader that could see it, whatever
 * its kind (frameKind, every view's open() and then the accessors a consumer calls, snapshot
 * loading, cluster views, request-id restamping), and, on each of their inbound rings, to five
 * live chain nodes: a head, a middle, a tail, a tail with a replica joining behind it, and that
 * joiner, which also takes the tail's real snapshot and batch stream. Between frames the harness
 * plays each node's runtime and neighbours: it performs ready() (checking that what a node emits
 * opens in the matching view, and encoding its acks and hellos as the runtime would), advance()s,
 * acknowledges, and now and then moves the head and the middle to a new epoch. Nodes live for
 * thousands of frames, so each also has to survive a long stream of garbage.
 *
 * Malformed input must come back as a reason string or a ReceiveResult. Anything thrown (an
 * assertion included) or an oracle violation (a view that accepted a frame and then pointed
 * outside it, say) is a finding, reported with the seed and iteration that replay it. Assertions
 * already known and being fixed elsewhere are counted apart (see ./known-findings.ts).
 */
import { AssertionError } from '../../native-free-core/assert.js';
import { ChainNode, type FrameSource, type ReceiveResult, type Role } from '../../native-free-core/chain/node.js';
import { snapshotFrameBytesFor, SnapshotView } from '../../native-free-core/chain/snapshot.js';
import { Store } from '../../native-free-core/store.js';
import { decodeClusterView } from '../../native-free-core/wire/cluster-view.js';
import {
  AckEncoder,
  AckView,
  HelloEncoder,
  HelloView,
  MessageKind,
  Op,
  REJECTION_REASON_BYTES_MAX,
  ReadBatchView,
  ReadReplyView,
  ReadStatus,
  WriteBatchEncoder,
  WriteBatchView,
  frameKind,
  type AckFields,
  type HelloFields,
} from '../../native-free-core/wire/codec.js';
import { restampFirstRequestId } from '../../native-free-core/wire/request-ids.js';
import { WatchReplyView, WatchRequestView } from '../../native-free-core/wire/watch-frames.js';
import { readUint32 } from '../../native-free-core/wire/verify.js';
import { Random, hexOf, mutate, writeUint32, writeUint64 } from './frame-mutator.js';
import type { KnownFinding } from './known-findings.js';
import { seedFrames, type SeedFrame } from './seed-frames.js';

export const KIND_NAMES: Record<MessageKind, string> = {
  [MessageKind.writeBatch]: 'WriteBatch',
  [MessageKind.ack]: 'Ack',
  [MessageKind.readBatch]: 'ReadBatch',
  [MessageKind.readReplyBatch]: 'ReadReplyBatch',
  [MessageKind.hello]: 'Hello',
  [MessageKind.snapshot]: 'Snapshot',
  [MessageKind.clusterView]: 'ClusterView',
  [MessageKind.watchRequest]: 'WatchRequest',
  [MessageKind.watchReply]: 'WatchReply',
};
const KINDS = Object.keys(KIND_NAMES).map(Number) as MessageKind[];

/** Mutated frames are cut to this length; every node's read reply holds a value this long. */
export const FRAME_BYTES_LIMIT = 64 * 1024;

export const ROLES = ['head', 'middle', 'tail', 'tailWithJoiner', 'joiner'] as const;
export type HarnessRole = (typeof ROLES)[number];
/**
 * What a frame is offered as: a frame kind on the link a node takes it from (ChainNode.step). The
 * node decides from the frame itself; the door names say what the harness offered, for the counts.
 */
const DOORS = ['upstream:batch', 'downstream:ack', 'downstream:hello', 'client:reads', 'upstream:snapshot'] as const;
const DOOR = { batch: 0, ack: 1, hello: 2, reads: 3, snapshot: 4 } as const;
const DOOR_LINKS: readonly FrameSource[] = ['upstream', 'downstream', 'downstream', 'client', 'upstream'];
/** `role.door`, the name a finding gives the reader that threw. */
const DOOR_READERS = ROLES.map((role) => DOORS.map((door) => `${role}.${door}`));
const STATUSES: ReadonlyArray<ReceiveResult['status']> = ['applied', 'duplicate', 'full', 'ignored', 'rejected'];
const JOINER_ID = 99;
/** A node lives for this many frames at least, and up to this plus NODE_LIFETIME_SPREAD. */
const NODE_LIFETIME_MIN = 100;
const NODE_LIFETIME_SPREAD = 20_000;
/** Writes the tail with a joiner holds before the join: about three snapshot frames' worth. */
const PREFILL_WRITES = 80;
const PREFILL_VALUE = new Uint8Array(4096).map((_, index) => index * 7);
const TEXT = new TextEncoder();
const JOIN_LIFETIME_MIN = 50;
const JOIN_LIFETIME_SPREAD = 1000;
/** How often a header is fitted to a node's state (so frames reach the code past the guards). */
const FIT_PROBABILITY = 0.6;
const SUCCESSOR_ACK_PROBABILITY = 0.3;
const JOINER_LINK_DELAY_MAX = 50;
/** Per frame, for the head and the middle: the master moves them to a new epoch in the same role. */
const RECONFIGURE_PROBABILITY = 0.002;

export interface FuzzOptions {
  seed: number;
  frames: number;
  known: readonly KnownFinding[];
  /** Replay: stop after this iteration and describe it in `trace`. */
  traceIteration?: number;
  /** Findings kept in full (all are counted). Default 20. */
  findingsKept?: number;
}

export interface KindCounts {
  /** Mutated frames made from seeds of this kind. */
  frames: number;
  /** ... that this kind's reader accepted. */
  accepted: number;
  /** ... that it refused with a reason. */
  refused: number;
}

export interface Finding {
  seed: number;
  iteration: number;
  reader: string;
  error: string;
  hex: string;
}

export interface FuzzReport {
  seed: number;
  frames: number;
  kinds: Record<string, KindCounts>;
  /** Frames accepted by a reader of another kind than their seed's (a rewritten type byte, say). */
  otherKindAccepted: number;
  /** Known findings reached, by name. */
  known: Record<string, number>;
  findings: Finding[];
  findingCount: number;
  /** What the nodes' doors returned for fuzzed frames: `role.door.status` to count. */
  outcomes: Record<string, number>;
  /** A hash of every reader's verdict, to compare runs (the same seed gives the same hash). */
  verdictHash: number;
  /** With traceIteration: what happened to that frame. */
  trace: string[];
}

/** A view accepted a frame and then contradicted it, or a node emitted a frame its reader refuses. */
class OracleViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OracleViolation';
  }
}

function fail(message: string): never {
  throw new OracleViolation(message);
}

function isSeq(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

/**
 * Limits well below the largest frame the fuzzer makes, so keys and values above them reach the
 * nodes (and must be refused), and derived from each other as native-free-core/limits.ts derives
 * a chain's: a value of valueBytesMax fits a read reply, an entry of both maxima a snapshot frame.
 */
const KEY_BYTES_MAX = 256;
const VALUE_BYTES_MAX = 8 * 1024;
const NODE_LIMITS = {
  inflightBytesMax: 256 * 1024,
  inflightBatchesMax: 64,
  keyBytesMax: KEY_BYTES_MAX,
  valueBytesMax: VALUE_BYTES_MAX,
  readReplyPayloadBytesMax: 2 * VALUE_BYTES_MAX,
  readReplyResultsMax: 16,
  snapshotFrameBytesMax: snapshotFrameBytesFor(KEY_BYTES_MAX + VALUE_BYTES_MAX),
};

function makeNode(id: number, epoch: number, role: Role): ChainNode {
  return new ChainNode({ id, epoch, role, store: new Store({ initialKeys: 64, initialHeapBytes: 16 * 1024 }), ...NODE_LIMITS });
}

export function runFuzz(options: FuzzOptions): FuzzReport {
  return new FrameFuzzer(options).run();
}

class FrameFuzzer {
  private readonly random: Random;
  private readonly seeds: SeedFrame[];
  private readonly seedsByKind = new Map<MessageKind, SeedFrame[]>();
  private readonly nodes = {} as Record<HarnessRole, ChainNode>;
  private readonly expiry = {} as Record<HarnessRole, number>;
  /** The applied seq the joiner's snapshot started at, once it has. */
  private joinerStartSeq: number | null = null;
  /**
   * The tail starts sending its joiner anything only from this iteration on (a link that comes up
   * late), so the joiner also meets frames before its snapshot.
   */
  private joinerLinkOpensAt = 0;
  private readonly report: FuzzReport;
  private readonly doorCounts = new Uint32Array(ROLES.length * DOORS.length * STATUSES.length);
  private iteration = 0;
  private frame: Uint8Array = new Uint8Array(0);
  /** The reader running now, named in a finding if it throws. */
  private reader = '';
  private tracing = false;

  private readonly batchView = new WriteBatchView();
  private readonly ackView = new AckView();
  private readonly readView = new ReadBatchView();
  private readonly replyView = new ReadReplyView();
  private readonly helloView = new HelloView();
  private readonly snapshotView = new SnapshotView();
  private readonly watchRequestView = new WatchRequestView();
  private readonly watchReplyView = new WatchReplyView();
  private readonly ackEncoder = new AckEncoder();
  private readonly helloEncoder = new HelloEncoder();

  constructor(private readonly options: FuzzOptions) {
    this.random = new Random(options.seed);
    this.seeds = seedFrames();
    for (const seed of this.seeds) {
      const list = this.seedsByKind.get(seed.kind) ?? [];
      list.push(seed);
      this.seedsByKind.set(seed.kind, list);
    }
    const kinds: Record<string, KindCounts> = {};
    for (const kind of KINDS) kinds[KIND_NAMES[kind]] = { frames: 0, accepted: 0, refused: 0 };
    const known: Record<string, number> = {};
    for (const finding of options.known) known[finding.name] = 0;
    this.report = {
      seed: options.seed,
      frames: 0,
      kinds,
      otherKindAccepted: 0,
      known,
      findings: [],
      findingCount: 0,
      outcomes: {},
      verdictHash: 0x811c9dc5,
      trace: [],
    };
    for (const role of ROLES) if (role !== 'joiner') this.renew(role);
  }

  run(): FuzzReport {
    const last = Math.min(this.options.frames, (this.options.traceIteration ?? Number.POSITIVE_INFINITY) + 1);
    for (this.iteration = 0; this.iteration < last; this.iteration++) {
      this.tracing = this.iteration === this.options.traceIteration;
      this.step();
    }
    this.report.frames = last;
    ROLES.forEach((role, roleIndex) =>
      DOORS.forEach((door, doorIndex) =>
        STATUSES.forEach((status, statusIndex) => {
          const count = this.doorCounts[(roleIndex * DOORS.length + doorIndex) * STATUSES.length + statusIndex]!;
          if (count > 0) this.report.outcomes[`${role}.${door}.${status}`] = count;
        }),
      ),
    );
    return this.report;
  }

  private step(): void {
    const random = this.random;
    for (const role of ROLES) if (this.iteration >= this.expiry[role]) this.renew(role);
    const kind = random.pick(KINDS);
    const seed = random.pick(this.seedsByKind.get(kind)!);
    const donor = random.pick(this.seeds).bytes;
    const trace = this.tracing ? this.report.trace : undefined;
    trace?.push(`seed frame: ${seed.name}`);
    let bytes = mutate(this.fit(seed), seed.layout, donor, random, trace);
    if (bytes.length > FRAME_BYTES_LIMIT) bytes = bytes.subarray(0, FRAME_BYTES_LIMIT);
    this.frame = bytes;
    trace?.push(`frame (${bytes.length} bytes): ${hexOf(bytes)}`);
    this.report.frames++;
    this.report.kinds[KIND_NAMES[kind]]!.frames++;
    const found = this.readAsEveryKind(kind, bytes);
    ROLES.forEach((role, roleIndex) => this.offerToNode(role, roleIndex, bytes, found));
    for (const role of ROLES) this.driveNode(role);
  }

  // -------------------------------------------------------------------------------------------
  // Nodes

  /** Replaces a node (the tail with a joiner and its joiner go together). */
  private renew(role: HarnessRole): void {
    if (role === 'joiner') role = 'tailWithJoiner';
    if (role === 'tailWithJoiner') {
      // Joins are short-lived, so that many joiners meet frames before, during and after their snapshot.
      const lifetime = JOIN_LIFETIME_MIN + this.random.below(JOIN_LIFETIME_SPREAD);
      // A tail with some state, so its snapshot for the joiner spans several frames.
      const tail = makeNode(4, 1, 'tail');
      const encoder = new WriteBatchEncoder({ writesMax: PREFILL_WRITES, payloadBytesMax: PREFILL_WRITES * 4096 });
      encoder.begin(1, 1);
      for (let write = 0; write < PREFILL_WRITES; write++) {
        // Distinct keys (beyond the fuzzed frames' key space), values of 1 to 4 KiB.
        const key = TEXT.encode(`prefill-${write}`);
        const value = PREFILL_VALUE.subarray(0, 1024 + this.random.below(3 * 1024));
        encoder.addPut(key, 0, key.length, value, 0, value.length);
      }
      const frame = encoder.finish().slice();
      this.batchView.open(frame);
      this.batchView.stamp(1, 1);
      tail.step('upstream', frame);
      tail.reconfigure(2, 'tail', { joiner: JOINER_ID });
      this.nodes.tailWithJoiner = tail;
      this.nodes.joiner = makeNode(JOINER_ID, 2, 'joining');
      this.joinerStartSeq = null;
      this.joinerLinkOpensAt = this.iteration + this.random.below(JOINER_LINK_DELAY_MAX);
      this.expiry.tailWithJoiner = this.iteration + lifetime;
      this.expiry.joiner = this.iteration + lifetime;
      return;
    }
    const lifetime = NODE_LIFETIME_MIN + this.random.below(NODE_LIFETIME_SPREAD);
    const nodeRole: Role = role === 'head' ? 'head' : role === 'middle' ? 'middle' : 'tail';
    this.nodes[role] = makeNode(ROLES.indexOf(role) + 1, 1, nodeRole);
    this.expiry[role] = this.iteration + lifetime;
  }

  /**
   * A copy of the seed, often with its header rewritten to what some node expects next (its
   * epoch, its next seq, the client's next seq), so mutations also reach the code behind the
   * epoch and sequence guards.
   */
  private fit(seed: SeedFrame): Uint8Array {
    const bytes = seed.bytes.slice();
    const random = this.random;
    if (!random.chance(FIT_PROBABILITY)) return bytes;
    const field = (index: number): number => seed.layout.messageFields[index] ?? 0;
    const nodes = this.nodes;
    switch (seed.kind) {
      case MessageKind.writeBatch: {
        const target = nodes[random.pick(['middle', 'tail', 'tailWithJoiner', 'joiner'] as const)];
        writeUint32(bytes, field(0), target.epoch);
        writeUint64(bytes, field(1), target.appliedSeq + 1);
        writeUint64(bytes, field(4), nodes.head.clientHighWaterMark(readUint32(bytes, field(3))) + 1);
        break;
      }
      case MessageKind.ack: {
        const target = nodes[random.pick(['head', 'middle', 'tailWithJoiner'] as const)];
        writeUint32(bytes, field(0), target.epoch);
        writeUint64(bytes, field(1), target.committedSeq + random.below(target.appliedSeq - target.committedSeq + 1));
        break;
      }
      case MessageKind.hello: {
        const target = nodes[random.pick(['head', 'middle'] as const)];
        writeUint32(bytes, field(0), target.epoch);
        writeUint64(bytes, field(2), random.below(target.appliedSeq + 1));
        break;
      }
      case MessageKind.snapshot:
        writeUint32(bytes, field(0), nodes.joiner.epoch);
        if (this.joinerStartSeq !== null) writeUint64(bytes, field(1), this.joinerStartSeq);
        break;
      default:
        break;
    }
    return bytes;
  }

  /**
   * The frame as it would reach the node on each of its inbound links (ChainNode.step), whatever
   * its kind: the upstream link (batches, snapshot frames), the downstream link (acks, Hellos) and
   * the client link (reads); the door it is counted under says which kind it claims to be.
   * A node that throws is a finding (or a known one), and is replaced, as its replica would stop.
   */
  private offerToNode(role: HarnessRole, roleIndex: number, bytes: Uint8Array, kind: MessageKind | string): void {
    const node = this.nodes[role];
    try {
      if (kind === MessageKind.snapshot) {
        const result = this.door(node, roleIndex, DOOR.snapshot, bytes);
        if (role === 'joiner' && result.status === 'applied') this.joinerStartSeq ??= result.firstSeq;
      } else {
        // The head stamps a batch in place, in the ring slot it owns: here, in a copy of its own.
        this.door(node, roleIndex, DOOR.batch, role === 'head' ? bytes.slice() : bytes);
      }
      this.door(node, roleIndex, kind === MessageKind.hello ? DOOR.hello : DOOR.ack, bytes);
      this.door(node, roleIndex, DOOR.reads, bytes);
    } catch (error) {
      if (!this.caught(error)) this.renew(role);
    }
  }

  private door(node: ChainNode, roleIndex: number, doorIndex: number, bytes: Uint8Array): ReceiveResult {
    this.reader = DOOR_READERS[roleIndex]![doorIndex]!;
    const result = node.step(DOOR_LINKS[doorIndex]!, bytes);
    this.countDoor(roleIndex, doorIndex, result);
    this.checkNode(node);
    return result;
  }

  private countDoor(roleIndex: number, doorIndex: number, result: ReceiveResult): void {
    const statusIndex = STATUSES.indexOf(result.status);
    this.doorCounts[(roleIndex * DOORS.length + doorIndex) * STATUSES.length + statusIndex]!++;
    this.verdict(statusIndex + 1);
    if (this.tracing) this.report.trace.push(`${this.reader}: ${JSON.stringify(result)}`);
  }

  private checkNode(node: ChainNode): void {
    if (!isSeq(node.appliedSeq) || !isSeq(node.committedSeq)) fail(`node ${node.id} holds seqs ${node.appliedSeq}/${node.committedSeq}`);
    if (node.committedSeq > node.appliedSeq) fail(`node ${node.id} committed ${node.committedSeq} beyond applied ${node.appliedSeq}`);
  }

  /**
   * Plays the runtime and the neighbours: performs ready() (each emitted frame must open in its
   * reader; acks and hellos are encoded and read back), advance()s, and now and then acknowledges
   * everything a forwarding node has sent. The tail with a joiner feeds the joiner, which acks it.
   */
  private driveNode(role: HarnessRole): void {
    if (role === 'tailWithJoiner' && this.iteration < this.joinerLinkOpensAt) return;
    const node = this.nodes[role];
    try {
      if ((role === 'head' || role === 'middle') && this.random.chance(RECONFIGURE_PROBABILITY)) {
        // A new epoch: the node re-stamps its logged batches, waits for its successor's Hello,
        // and applies a Hello that arrived early from that epoch, if one did.
        this.reader = `${role}.reconfigure`;
        node.reconfigure(node.epoch + 1, role);
      }
      this.reader = `${role}.ready`;
      const ready = node.ready();
      this.reader = `${role}.ready output`;
      if (ready.snapshot !== null) {
        this.checkOpens(this.snapshotView.open(ready.snapshot), 'a snapshot frame the node emitted');
        if (role === 'tailWithJoiner') this.deliverToJoiner(ready.snapshot, true);
      }
      for (const batch of ready.forward) {
        this.checkOpens(this.batchView.open(batch), 'a batch the node forwards');
        if (role === 'tailWithJoiner') this.deliverToJoiner(batch, false);
      }
      for (const reply of ready.readReplies) {
        if (frameKind(reply) === MessageKind.watchReply) this.checkOpens(this.watchReplyView.open(reply), 'a watch reply the node emitted');
        else this.checkOpens(this.replyView.open(reply), 'a read reply the node emitted');
      }
      if (ready.ackUpstream !== null) {
        const ack = this.ackRoundTrip(ready.ackUpstream);
        if (role === 'joiner') {
          this.reader = 'tailWithJoiner.downstream:ack from its joiner';
          this.nodes.tailWithJoiner.step('downstream', ack);
        }
      }
      for (const ack of ready.clientAcks) this.ackRoundTrip(ack);
      if (ready.helloUpstream !== null) this.helloRoundTrip(ready.helloUpstream);
      this.reader = `${role}.advance`;
      node.advance(ready, { forwarded: ready.forward.length, acksSent: true, repliesSent: ready.readReplies.length, snapshotSent: true });
      // The successor acknowledges what it was just sent (a Hello may since have rewound
      // forwarding below what was sent before, and nothing beyond what was forwarded is acked).
      const sentSeq = ready.forwardSeqs.at(-1);
      if ((role === 'head' || role === 'middle') && sentSeq !== undefined && this.random.chance(SUCCESSOR_ACK_PROBABILITY)) {
        this.reader = `${role}.downstream:ack from its successor`;
        const result = node.step('downstream', this.ackEncoder.encode({ epoch: node.epoch, committedSeq: sentSeq, clientId: 0, committedClientSeq: 0 }));
        if (result.status !== 'applied' && result.status !== 'duplicate') fail(`a valid ack came back ${JSON.stringify(result)}`);
      }
      this.checkNode(node);
    } catch (error) {
      if (!this.caught(error)) this.renew(role);
    }
  }

  private checkOpens(reason: string | null, what: string): void {
    if (reason !== null) fail(`${what} does not open: ${reason}`);
  }

  /** What the tail sends its joiner goes in on its upstream link, as in workers/node.ts. */
  private deliverToJoiner(frame: Uint8Array, snapshot: boolean): void {
    const joiner = this.nodes.joiner;
    this.reader = snapshot ? 'joiner.upstream:snapshot from its tail' : 'joiner.upstream:batch from its tail';
    const result = joiner.step('upstream', frame);
    if (snapshot && result.status === 'applied') this.joinerStartSeq ??= result.firstSeq;
    this.reader = 'tailWithJoiner.ready output';
  }

  private ackRoundTrip(ack: AckFields): Uint8Array {
    const bytes = this.ackEncoder.encode(ack);
    const view = this.ackView;
    const reason = view.open(bytes);
    if (reason !== null) fail(`an ack the node emitted does not open (${reason}): ${JSON.stringify(ack)}`);
    const same = view.epoch === ack.epoch && view.committedSeq === ack.committedSeq && view.clientId === ack.clientId && view.committedClientSeq === ack.committedClientSeq;
    if (!same) fail(`an ack the node emitted reads back differently: ${JSON.stringify(ack)}`);
    return bytes;
  }

  private helloRoundTrip(hello: HelloFields): void {
    const view = this.helloView;
    const reason = view.open(this.helloEncoder.encode(hello));
    if (reason !== null) fail(`a hello the node emitted does not open (${reason}): ${JSON.stringify(hello)}`);
    if (view.appliedSeq !== hello.appliedSeq || view.epoch !== hello.epoch) fail('a hello the node emitted reads back differently');
  }

  // -------------------------------------------------------------------------------------------
  // Readers

  /** The frame through every reader, as if it had arrived where that reader listens; returns frameKind's verdict. */
  private readAsEveryKind(kind: MessageKind, bytes: Uint8Array): MessageKind | string {
    const accepted: boolean[] = [];
    for (const readerKind of KINDS) {
      try {
        accepted[readerKind] = this.readAs(readerKind, bytes);
      } catch (error) {
        this.caught(error);
        accepted[readerKind] = false;
      }
      this.verdict(accepted[readerKind] ? 11 + readerKind : 21 + readerKind);
    }
    const counts = this.report.kinds[KIND_NAMES[kind]]!;
    if (accepted[kind]) counts.accepted++;
    else counts.refused++;
    for (const readerKind of KINDS) if (readerKind !== kind && accepted[readerKind]) this.report.otherKindAccepted++;
    let found: MessageKind | string = 'frameKind threw';
    try {
      this.reader = 'frameKind';
      found = frameKind(bytes);
      for (const readerKind of KINDS) {
        if (accepted[readerKind] && found !== readerKind) fail(`frameKind says ${found} of a frame the ${KIND_NAMES[readerKind]} reader accepted`);
      }
      this.restamp(bytes, 'reads');
      this.restamp(bytes, 'replies');
    } catch (error) {
      this.caught(error);
    }
    return found;
  }

  /** Opens the frame as `kind` and, if that succeeds, reads it as a consumer would. */
  private readAs(kind: MessageKind, bytes: Uint8Array): boolean {
    switch (kind) {
      case MessageKind.writeBatch:
        return this.readWriteBatch(bytes);
      case MessageKind.ack: {
        this.reader = 'AckView.open';
        const view = this.ackView;
        const reason = view.open(bytes);
        this.traceVerdict(reason);
        if (reason !== null) return false;
        if (!isSeq(view.committedSeq) || !isSeq(view.committedClientSeq)) fail('an accepted ack holds a seq that is not a safe integer');
        return true;
      }
      case MessageKind.readBatch:
        return this.readReadBatch(bytes);
      case MessageKind.readReplyBatch:
        return this.readReply(bytes);
      case MessageKind.hello: {
        this.reader = 'HelloView.open';
        const reason = this.helloView.open(bytes);
        this.traceVerdict(reason);
        if (reason !== null) return false;
        if (!isSeq(this.helloView.appliedSeq)) fail('an accepted hello holds a seq that is not a safe integer');
        return true;
      }
      case MessageKind.snapshot: {
        this.reader = 'SnapshotView.open';
        const view = this.snapshotView;
        const reason = view.open(bytes);
        this.traceVerdict(reason);
        if (reason !== null) return false;
        if (!isSeq(view.appliedSeq)) fail('an accepted snapshot holds an applied seq that is not a safe integer');
        this.reader = 'SnapshotView.applyTo';
        const store = new Store({ initialKeys: 16, initialHeapBytes: 1024 });
        view.applyTo(store, new Map());
        this.reader = 'Store.checkInvariants after SnapshotView.applyTo';
        store.checkInvariants();
        return true;
      }
      case MessageKind.clusterView: {
        this.reader = 'decodeClusterView';
        const view = decodeClusterView(bytes);
        this.traceVerdict(typeof view === 'string' ? view : null);
        if (typeof view === 'string') return false;
        if (view.members.length === 0 || !view.members.every((member) => isSeq(member.replicaId) && typeof member.url === 'string')) fail('an accepted view has a bad member');
        return true;
      }
      case MessageKind.watchRequest: {
        this.reader = 'WatchRequestView.open';
        const view = this.watchRequestView;
        const reason = view.open(bytes);
        this.traceVerdict(reason);
        if (reason !== null) return false;
        if (!isSeq(view.requestId) || !isSeq(view.fromVersion) || view.bytesMax < 1) fail('an accepted watch poll has a bad header');
        if (view.prefixPosition + view.prefixLength > bytes.length) fail('an accepted watch poll has its prefix outside the frame');
        this.verdict(view.prefixLength);
        return true;
      }
      case MessageKind.watchReply: {
        this.reader = 'WatchReplyView.open';
        const view = this.watchReplyView;
        const reason = view.open(bytes);
        this.traceVerdict(reason);
        if (reason !== null) return false;
        this.reader = 'WatchReplyView changes';
        let previous = 0;
        for (let index = 0; index < view.count; index++) {
          const change = view.changeAt(index);
          if (change.keyStart + change.keyLength + change.valueLength > bytes.length) fail(`accepted change ${index} lies outside the frame`);
          if (change.version <= previous || change.version > view.throughVersion) fail(`accepted change ${index} is out of order`);
          previous = change.version;
        }
        this.verdict(view.count);
        return true;
      }
    }
  }

  private readWriteBatch(bytes: Uint8Array): boolean {
    this.reader = 'WriteBatchView.open';
    const view = this.batchView;
    const reason = view.open(bytes);
    this.traceVerdict(reason);
    if (reason !== null) return false;
    this.reader = 'WriteBatchView records';
    if (view.count < 1 || !isSeq(view.firstSeq) || !isSeq(view.firstClientSeq)) fail('an accepted batch has a bad header');
    const payloadEnd = view.payloadPosition + view.payloadLength;
    if (payloadEnd > bytes.length) fail('an accepted batch has its payload outside the frame');
    let sum = 0;
    for (let index = 0; index < view.count; index++) {
      const record = view.recordAt(index);
      const op = record.op();
      const keyStart = view.keyPosition(record);
      const end = keyStart + record.keyLength() + record.valueLength();
      if (op !== Op.Put && op !== Op.Delete && op !== Op.Rejected) fail(`accepted record ${index} has op ${op}`);
      if (op === Op.Rejected && (record.flags() !== 0 || record.valueLength() > REJECTION_REASON_BYTES_MAX)) fail(`accepted refused record ${index} is conditional or has a long reason`);
      if (record.flags() > 1) fail(`accepted record ${index} has flags ${record.flags()}`);
      if (record.keyLength() === 0 || keyStart < view.payloadPosition || end > payloadEnd) fail(`accepted record ${index} lies outside the payload`);
      sum += bytes[keyStart]! + (end > keyStart ? bytes[end - 1]! : 0);
    }
    this.verdict(sum);
    return true;
  }

  private readReadBatch(bytes: Uint8Array): boolean {
    this.reader = 'ReadBatchView.open';
    const view = this.readView;
    const reason = view.open(bytes);
    this.traceVerdict(reason);
    if (reason !== null) return false;
    this.reader = 'ReadBatchView records';
    const payloadEnd = view.payloadPosition + view.payloadLength;
    if (view.count < 1 || !isSeq(view.firstRequestId) || payloadEnd > bytes.length) fail('an accepted read batch has a bad header');
    for (let index = 0; index < view.count; index++) {
      const record = view.recordAt(index);
      const start = view.payloadPosition + record.keyOffset();
      if (record.keyLength() === 0 || start + record.keyLength() > payloadEnd) fail(`accepted read ${index} lies outside the payload`);
    }
    return true;
  }

  private readReply(bytes: Uint8Array): boolean {
    this.reader = 'ReadReplyView.open';
    const view = this.replyView;
    const reason = view.open(bytes);
    this.traceVerdict(reason);
    if (reason !== null) return false;
    this.reader = 'ReadReplyView results';
    const payloadEnd = view.payloadPosition + view.payloadLength;
    if (payloadEnd > bytes.length) fail('an accepted reply has its payload outside the frame');
    for (let index = 0; index < view.count; index++) {
      const status = view.statusAt(index);
      const result = view.resultAt(index);
      const start = view.payloadPosition + result.valueOffset();
      if (status !== ReadStatus.Found && status !== ReadStatus.NotFound) fail(`accepted result ${index} has status ${status}`);
      if (start + result.valueLength() > payloadEnd) fail(`accepted result ${index} lies outside the payload`);
      this.verdict(result.version() > 0 ? 1 : 0);
    }
    return true;
  }

  /**
   * restampFirstRequestId, as a host does on the way in and out: the id must read back, and
   * restamping the previous id restores the frame (so the nodes see it unchanged).
   */
  private restamp(bytes: Uint8Array, kind: 'reads' | 'replies'): void {
    this.reader = kind === 'reads' ? 'restampFirstRequestId(reads)' : 'restampFirstRequestId(replies)';
    const id = 1 + this.random.below(1 << 30);
    const previous = restampFirstRequestId(bytes, kind, id);
    if (this.tracing) this.report.trace.push(`${this.reader}: ${JSON.stringify(previous)}`);
    if (typeof previous === 'string') return;
    if (!isSeq(previous)) fail(`restamp returned ${previous}`);
    if (restampFirstRequestId(bytes, kind, previous) !== id) fail('a restamped request id does not read back');
  }

  // -------------------------------------------------------------------------------------------
  // Verdicts and findings

  private traceVerdict(reason: string | null): void {
    if (this.tracing) this.report.trace.push(`${this.reader}: ${reason ?? 'accepted'}`);
  }

  private verdict(value: number): void {
    this.report.verdictHash = Math.imul(this.report.verdictHash ^ (value & 0xffff), 0x01000193) >>> 0;
  }

  /** Counts what a reader threw; returns whether a node that threw it can go on (see KnownFinding). */
  private caught(error: unknown): boolean {
    const message = error instanceof Error ? error.message : String(error);
    if (this.tracing) this.report.trace.push(`${this.reader} THREW: ${error instanceof Error ? error.stack : message}`);
    if (error instanceof AssertionError) {
      const known = this.options.known.find((finding) => finding.reader.test(this.reader) && finding.message.test(message));
      if (known !== undefined) {
        this.report.known[known.name] = (this.report.known[known.name] ?? 0) + 1;
        return known.nodeSurvives;
      }
    }
    this.report.findingCount++;
    if (this.report.findings.length < (this.options.findingsKept ?? 20)) {
      const name = error instanceof Error ? error.name : 'thrown value';
      this.report.findings.push({ seed: this.options.seed, iteration: this.iteration, reader: this.reader, error: `${name}: ${message}`, hex: hexOf(this.frame) });
    }
    return false;
  }
}

/**
 * A finding as the test and the CLI print it: what threw, how to replay it, and the frame offered
 * at that iteration (a node also carries state from the frames before: replay the seed to get it).
 */
export function describeFinding(finding: Finding): string {
  return (
    `${finding.reader} threw ${finding.error}\n` +
    `reproduce with --seed=${finding.seed} --iteration=${finding.iteration} (npm run fuzz -- --seed=${finding.seed} --iteration=${finding.iteration})\n` +
    `frame (${finding.hex.length / 2} bytes): ${finding.hex}`
  );
}
