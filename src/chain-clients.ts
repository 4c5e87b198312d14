/**
 * The client side of createChain(), on the main thread: one client session per chain, and the
 * client's ends of the rings they share. A chain's session writes its batches into its head node's
 * ring and its reads into its tail node's (with `reads: 'any'`, spread over every member's), each
 * record tagged with the chain; the client drains every tail node's ack ring and every serving
 * node's reply ring, handing each record to its chain's session, and pumps what waited for room.
 * When a chain's members move, its session is pointed at the new nodes' rings.
 */
import { assert } from '../native-free-core/assert.js';
import type { DabbaError } from '../native-free-core/errors.js';
import type { SpscRing } from '../native-free-core/ring.js';
import { chainTagAt, taggedFrame } from '../native-free-core/wire/chain-tag.js';
import { AckView, isWatchReply } from '../native-free-core/wire/codec.js';
import { Doorbell } from '../workers/doorbell.js';
import type { ResolvedOptions } from './options.js';
import { TaggedRingSink } from './record-sink.js';
import type { Sealer } from './sealing.js';
import type { ReadTarget } from './read-lanes.js';
import { ClientSession, type Refusal } from './session/client-session.js';
import { batchesLink, clientAcksLink, CLIENT_END, readsLink, repliesLink } from './topology.js';

/** One chain as the client sees it: its session, the nodes its ends are on, and whether it is lost. */
export interface ChainClient {
  readonly chain: number;
  readonly session: ClientSession;
  headNode: number;
  tailNode: number;
  /** The nodes its reads go to: the tail's, or with `reads: 'any'` every member's, head first. */
  readNodes: number[];
  /** Set when the chain's last replica failed: the chain is unavailable. */
  failure: DabbaError | null;
}

export interface ChainClientsOptions {
  /** The session options (pendingWritesMax and pendingReadsMax hold per chain). */
  options: ResolvedOptions;
  sealer: Sealer | null;
  /** The client's end of a named link's ring (one object per link: it keeps its position). */
  ringEnd(name: string, control: boolean): SpscRing;
  /** A node's doorbell. */
  doorbellOf(node: number): SharedArrayBuffer;
  /** A chain's epoch now. */
  epochOf(chain: number): number;
  /** Why every call is refused now (closed), or null. */
  refusal(): DabbaError | null;
  /** Why writes to chain `chain` are refused now (a replica's disk is full), or null. */
  writeRefusal(chain: number): DabbaError | null;
  /** Chain c's client has id clientIdBase + c + 1 (a durable runtime's generation sets it: src/data-dir.ts). */
  clientIdBase: number;
}

export class ChainClients {
  readonly chains: ChainClient[] = [];
  private ackRings: SpscRing[] = [];
  private replyRings: SpscRing[] = [];
  /** Who to wake when the client frees room in a ring a tail node writes to. */
  private readonly producers = new Map<SpscRing, Doorbell>();
  /** The chains a drain of one ring touched (reused: no allocation per drain). */
  private readonly touched: ChainClient[] = [];
  private readonly ackView = new AckView();
  /**
   * Acks for the clients of an earlier process on the same data directory, dropped: a chain
   * restarted from its logs resends their last writes to replicas that lack them (src/data-dir.ts).
   */
  earlierProcessAcks = 0;

  constructor(
    private readonly settings: ChainClientsOptions,
    ends: ReadonlyArray<{ headNode: number; tailNode: number; memberNodes: readonly number[] }>,
  ) {
    const anyReplica = settings.options.reads === 'any';
    ends.forEach(({ headNode, tailNode, memberNodes }, chain) => {
      const readNodes = anyReplica ? [...memberNodes] : [tailNode];
      const client: ChainClient = { chain, headNode, tailNode, readNodes, failure: null, session: null! };
      const refusal: Refusal = () => settings.refusal() ?? client.failure;
      const session = new ClientSession(
        settings.options,
        {
          clientId: settings.clientIdBase + chain + 1,
          chain,
          head: this.headSink(chain, headNode),
          headDoorbell: new Doorbell(settings.doorbellOf(headNode)),
          tail: this.readSink(chain, tailNode),
          tailDoorbell: new Doorbell(settings.doorbellOf(tailNode)),
          readTargets: this.readTargets(chain, readNodes),
          readLanes: anyReplica ? settings.options.replicas : 1,
          epoch: () => settings.epochOf(chain),
          sealer: settings.sealer,
        },
        refusal,
        () => settings.writeRefusal(chain),
      );
      // Under an admission hook any write may be refused: a report that does not reach back to one leaves its outcome unknown.
      session.writes.admissionReported = settings.options.admit !== null;
      (client as { session: ClientSession }).session = session;
      this.chains.push(client);
    });
    this.recountRings();
  }

  private headSink(chain: number, node: number): TaggedRingSink {
    return new TaggedRingSink(this.settings.ringEnd(batchesLink(CLIENT_END, node), false), chain);
  }

  private readSink(chain: number, node: number): TaggedRingSink {
    return new TaggedRingSink(this.settings.ringEnd(readsLink(node), false), chain);
  }

  private readTargets(chain: number, nodes: readonly number[]): ReadTarget[] {
    return nodes.map((node) => ({ key: node, sink: this.readSink(chain, node), doorbell: new Doorbell(this.settings.doorbellOf(node)) }));
  }

  /** Whether anything waits for the client: acks, replies, or batches and reads that now fit. */
  readonly hasWork = (): boolean => {
    for (const ring of this.ackRings) if (!ring.isEmpty()) return true;
    for (const ring of this.replyRings) if (!ring.isEmpty()) return true;
    for (const { session } of this.chains) if (session.writes.canPump() || session.reads.canPump() || session.watches.canPump()) return true;
    return false;
  };

  /** Drains every tail node's acks and replies, then sends what waited for room. */
  service(): void {
    for (const ring of this.ackRings) this.drainAcks(ring);
    for (const ring of this.replyRings) this.drainReplies(ring);
    for (const { session } of this.chains) {
      if (session.writes.canPump()) session.pumpWrites();
      if (session.reads.canPump() || session.watches.canPump()) session.pumpReads();
    }
  }

  /**
   * A chain's members moved: its session sends to the new head, and its read lanes to the new
   * serving nodes (each lane whose node changed sends its unanswered reads again).
   */
  follow(chain: number, memberNodes: readonly number[]): void {
    const client = this.chains[chain]!;
    const headNode = memberNodes[0]!;
    const tailNode = memberNodes.at(-1)!;
    if (headNode !== client.headNode) {
      client.headNode = headNode;
      client.session.switchHead(this.headSink(chain, headNode), new Doorbell(this.settings.doorbellOf(headNode)));
    }
    const readNodes = this.settings.options.reads === 'any' ? [...memberNodes] : [tailNode];
    const readsMoved = readNodes.length !== client.readNodes.length || readNodes.some((node, index) => node !== client.readNodes[index]);
    if (tailNode !== client.tailNode || readsMoved) {
      client.tailNode = tailNode;
      client.readNodes = readNodes;
      client.session.pointReads(this.readTargets(chain, readNodes));
      this.recountRings();
    }
  }

  /** Whether a client ack is for a client id of an earlier generation of the data directory. */
  private isForEarlierProcess(frame: Uint8Array): boolean {
    return this.settings.clientIdBase > 0 && this.ackView.open(frame) === null && this.ackView.clientId <= this.settings.clientIdBase;
  }

  /** Cumulative client acks from a tail node, each for its chain's session. */
  private drainAcks(ring: SpscRing): void {
    if (!ring.claim()) return;
    const touched = this.touched;
    for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
      const client = this.chains[chainTagAt(ring.bytes, offset)]!;
      const frame = taggedFrame(ring.bytes, offset, ring.recordLength);
      const outcome = client.session.writes.receiveAck(frame);
      // Refused (nothing changed): for a client of an earlier process, it is dropped and counted.
      if (typeof outcome === 'string' && this.isForEarlierProcess(frame)) {
        this.earlierProcessAcks++;
        continue;
      }
      // Our own nodes wrote it, for a client of ours: anything else is a bug in the engine.
      assert(typeof outcome === 'number', `client ack is malformed: ${outcome}`);
      if (touched.at(-1) !== client) touched.push(client);
    }
    ring.release();
    // A session may appear more than once (acks of chains interleave): afterAcks is idempotent.
    for (const { session } of touched) {
      session.writes.afterAcks();
      session.progressed();
    }
    touched.length = 0;
    if (ring.takeProducerWaiting()) this.producers.get(ring)?.ring();
  }

  /** Read replies from a tail node, each for its chain's session. */
  private drainReplies(ring: SpscRing): void {
    if (!ring.claim()) return;
    const touched = this.touched;
    for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
      const client = this.chains[chainTagAt(ring.bytes, offset)]!;
      const frame = taggedFrame(ring.bytes, offset, ring.recordLength);
      if (isWatchReply(frame)) {
        const refused = client.session.receiveWatchReply(frame);
        assert(refused === null, `watch reply is malformed: ${refused}`);
        continue;
      }
      const outcome = client.session.reads.receiveReply(frame);
      assert(typeof outcome === 'number', `read reply is malformed: ${outcome}`);
      if (touched.at(-1) !== client) touched.push(client);
    }
    ring.release();
    for (const { session } of touched) {
      session.reads.afterReplies();
      session.progressed();
    }
    touched.length = 0;
    if (ring.takeProducerWaiting()) this.producers.get(ring)?.ring();
  }

  /** The rings the client drains: acks from every chain's tail node, replies from every serving node. */
  private recountRings(): void {
    const tails = [...new Set(this.chains.map((client) => client.tailNode))];
    const servers = [...new Set(this.chains.flatMap((client) => client.readNodes))];
    this.ackRings = tails.map((node) => this.settings.ringEnd(clientAcksLink(node), true));
    this.replyRings = servers.map((node) => this.settings.ringEnd(repliesLink(node), false));
    this.producers.clear();
    tails.forEach((node, index) => this.producers.set(this.ackRings[index]!, new Doorbell(this.settings.doorbellOf(node))));
    servers.forEach((node, index) => this.producers.set(this.replyRings[index]!, new Doorbell(this.settings.doorbellOf(node))));
  }
}
