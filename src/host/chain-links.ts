/**
 * A replica's links to its neighbours in one chain. Every replica opens a link to its predecessor
 * (a joiner to the tail it copies from): batches and snapshot frames come down that link, Hellos
 * and Acks go up it. Successors open links to us; whatever we forward goes to the current
 * successor's link (or the joiner's, behind a tail). A link here is a chain's channel on the one
 * link between two hosts (./host-links.ts), which behaves as a link of its own.
 *
 * Who is at the other end is proven, not assumed: both hosts of a link hold the peer secret (which
 * clients do not have) and each signs the handshake with its identity key, registered in etcd
 * (./host-identity.ts), and a channel opens only for a replica whose home is the host at the other
 * end. The accepting side admits a link only from the replica the configuration names as its
 * successor (or joiner): a link
 * from any other replica waits a few seconds for a configuration that names it (the dialer may have
 * heard of it first), keeping only its latest Hello, and is closed if none comes.
 *
 * Epochs make most stale frames harmless (a node drops frames of other epochs); what they cannot
 * sort out is filtered here:
 * - batches from anyone but the current predecessor are dropped;
 * - a joiner drops snapshot frames of an earlier, failed join and batches before its own first frame
 *   (unless it started from a log: its catch-up starts with batches);
 * - Acks and Hellos are taken only from the current successor's link (a tail with a joiner takes
 *   the joiner's acks of any epoch).
 * A link to the same predecessor that breaks and comes back within one epoch is repaired with a
 * Hello (see repairAfterRedial).
 */
import type { Role } from '../../native-free-core/chain/node.js';
import { SnapshotView } from '../../native-free-core/chain/snapshot.js';
import { ErrorCode } from '../../native-free-core/errors.js';
import { predecessorOf, servesReads, successorOf, type Configuration } from '../../native-free-core/master/chain-master.js';
import { AckEncoder, frameKind, HelloEncoder, MessageKind } from '../../native-free-core/wire/codec.js';
import { InboundBudget } from './inbound-queue.js';
import { closeReason, LinkCloseCode, type PeerLink, type PeerLinkHandlers, type PeerLinkLogEntry } from '../transport/peer-link.js';

export const PEER_PREFIX = 'replica:';
/** The node id a host's peer-link server proves: host:<hostId>. */
export const HOST_PREFIX = 'host:';
const RECONNECT_DELAY_MS = 100;
/** How long a link from a replica not (yet) named as our successor waits for a configuration that names it. */
const CANDIDATE_WAIT_MS = 5000;
/** Links waiting that way at most; the oldest is closed to make room. */
const CANDIDATES_MAX = 8;
/** WebSocket close code: the dialer is not the successor the configuration names. */
export const NOT_A_NEIGHBOUR_CLOSE_CODE = 4005;
/** Bytes a link may hold in its socket before trySend refuses (the ring behind it then fills). */
export const LINK_HIGH_WATER_BYTES = 16 * 1024 * 1024;

export interface ChainLinksOptions {
  /** Largest Ack or Hello taken from a successor (they go to a small control ring). */
  controlFrameBytesMax: number;
  /** Where a replica's host can be reached, from the etcd host table; null while unknown. */
  urlOf(replicaId: number): string | null;
  /**
   * Opens this chain's channel from our replica `from` to `predecessor`'s host (one link per pair
   * of hosts carries every chain: ./host-links.ts). Rejects when that host cannot be reached.
   */
  openUpstream(predecessor: number, from: number, handlers: PeerLinkHandlers): Promise<PeerLink>;
  /** The local replica's epoch, applied and committed seq (for the redial Hello and ack); null if none runs. */
  replicaProgress(): { epoch: number; appliedSeq: number; committedSeq: number } | null;
  /** Bytes of one link's frames that may wait for room in the replica's rings. */
  connectionInboundBytesMax: number;
  /** Hands a batch or snapshot frame to the replica, charged to its link; false if a limit is exceeded. */
  offerBatch(frame: Uint8Array, budget: InboundBudget): boolean;
  /** Hands an Ack or Hello to the replica, charged to its link; false if a limit is exceeded. */
  offerAck(frame: Uint8Array, budget: InboundBudget): boolean;
  /** A link opened or drained: the replica's output may flow again. */
  kick(): void;
  /** The link a joiner copies through broke: the transfer cannot resume. */
  joinLinkLost(predecessor: number): void;
  /**
   * The predecessor's host refused a connection (nothing listens: its process is gone), or, with
   * null, it answered again. The master may then remove it without waiting for its lease.
   */
  predecessorRefused(predecessor: number | null): void;
  log(entry: PeerLinkLogEntry | { level: 'info' | 'warn'; code: string; message: string }): void;
}

interface Upstream {
  replicaId: number;
  link: PeerLink | null;
  /** Dials so far; negative while one is under way. */
  attempt: number;
}

/** A link from a replica that is not our successor (yet): its latest Hello, kept for when it is. */
interface Candidate {
  link: PeerLink;
  budget: InboundBudget;
  hello: Uint8Array | null;
  /** Its newest Ack: the one after its Hello may be the last for a while (a quiet chain sends no more). */
  ack: Uint8Array | null;
  timer: NodeJS.Timeout;
}

export class ChainLinks {
  private replicaId = 0;
  private role: Role | null = null;
  private upstream: Upstream | null = null;
  private readonly downstream = new Map<number, PeerLink>();
  private readonly candidates = new Map<number, Candidate>();
  private successorId: number | null = null;
  /** The epoch in which this replica began to join (older joins' frames are dropped). */
  private joinEpoch = 0;
  /** A joiner passes batches only after the first snapshot frame of its own join. */
  private joinStreamStarted = true;
  private readonly snapshotView = new SnapshotView();
  private readonly helloEncoder = new HelloEncoder();
  private readonly ackEncoder = new AckEncoder();

  constructor(private readonly options: ChainLinksOptions) {}

  /**
   * A new replica starts: as a joiner in `epoch`, or as a member. A joiner that starts from a log
   * (`fromLog`) may be sent batches first (a catch-up), not a snapshot frame.
   */
  replicaStarted(epoch: number, role: Role, fromLog = false): void {
    this.joinEpoch = role === 'joining' ? epoch : 0;
    this.joinStreamStarted = role !== 'joining' || fromLog;
  }

  /** Follows a configuration: dials a new predecessor, forwards to the new successor. */
  update(configuration: Configuration | null, replicaId: number, role: Role | null): void {
    this.replicaId = replicaId;
    this.role = role;
    if (configuration === null || role === null) {
      this.closeUpstream();
      this.successorId = null;
      return;
    }
    const predecessor = role === 'joining' ? configuration.members.at(-1)! : predecessorOf(configuration, replicaId);
    const isTail = servesReads(role);
    this.successorId = successorOf(configuration, replicaId) ?? (isTail ? configuration.joining : null);
    this.admitCandidate();
    if (predecessor !== this.upstream?.replicaId) {
      this.closeUpstream();
      this.options.predecessorRefused(null);
      if (predecessor !== null) {
        this.upstream = { replicaId: predecessor, link: null, attempt: 0 };
        this.dial(this.upstream);
      }
    } else if (this.upstream !== null && this.upstream.link === null) {
      this.dial(this.upstream);
    }
    this.options.kick();
  }

  /** The replica's output for its successor; false while that link is missing or full. */
  sendDownstream(frame: Uint8Array): boolean {
    const link = this.successorId === null ? undefined : this.downstream.get(this.successorId);
    return link !== undefined && link.trySend(frame);
  }

  /** The replica's Acks and Hellos for its predecessor; false while that link is missing or full. */
  sendUpstream(frame: Uint8Array): boolean {
    return this.upstream?.link?.trySend(frame) ?? false;
  }

  /** A replica opened a channel to ours (its host's identity proven, ./host-links.ts): our successor, or perhaps about to be. */
  acceptDownstream(link: PeerLink): PeerLinkHandlers {
    const replicaId = replicaIdOf(link.remoteNodeId);
    if (replicaId === null) {
      link.close(LinkCloseCode.unauthenticated, closeReason(ErrorCode.unauthenticated, 'not a replica'));
      return { onRecord: () => undefined };
    }
    const budget = new InboundBudget(this.options.connectionInboundBytesMax);
    const handlers: PeerLinkHandlers = {
      onRecord: (bytes) => {
        if (this.downstream.get(replicaId) === link) this.fromSuccessor(replicaId, bytes, budget);
        else this.fromCandidate(replicaId, link, bytes);
      },
      onWritable: () => this.options.kick(),
      onClose: () => {
        if (this.downstream.get(replicaId) === link) this.downstream.delete(replicaId);
        const candidate = this.candidates.get(replicaId);
        if (candidate?.link === link) this.dropCandidate(replicaId);
      },
    };
    if (replicaId === this.successorId) this.admit(replicaId, link);
    else this.park(replicaId, link, budget);
    return handlers;
  }

  private admit(replicaId: number, link: PeerLink): void {
    const previous = this.downstream.get(replicaId);
    this.downstream.set(replicaId, link);
    previous?.close(LinkCloseCode.normal, 'replaced by a newer link');
    this.options.kick();
  }

  /** Keeps a link from a replica not named as our successor, for a while (see the module comment). */
  private park(replicaId: number, link: PeerLink, budget: InboundBudget): void {
    this.candidates.get(replicaId)?.link.close(LinkCloseCode.normal, 'replaced by a newer link');
    this.dropCandidate(replicaId);
    if (this.candidates.size >= CANDIDATES_MAX) {
      const [oldest, candidate] = this.candidates.entries().next().value as [number, Candidate];
      this.dropCandidate(oldest);
      candidate.link.close(NOT_A_NEIGHBOUR_CLOSE_CODE, closeReason(ErrorCode.unauthenticated, 'too many links from replicas that are not neighbours'));
    }
    const timer = setTimeout(() => {
      this.dropCandidate(replicaId);
      link.close(NOT_A_NEIGHBOUR_CLOSE_CODE, closeReason(ErrorCode.unauthenticated, `replica ${replicaId} is not this replica's successor`));
    }, CANDIDATE_WAIT_MS);
    timer.unref();
    this.candidates.set(replicaId, { link, budget, hello: null, ack: null, timer });
  }

  private dropCandidate(replicaId: number): void {
    const candidate = this.candidates.get(replicaId);
    if (candidate === undefined) return;
    clearTimeout(candidate.timer);
    this.candidates.delete(replicaId);
  }

  /** The configuration now names a waiting link's replica as our successor: admit it, with its Hello. */
  private admitCandidate(): void {
    const replicaId = this.successorId;
    const candidate = replicaId === null ? undefined : this.candidates.get(replicaId);
    if (replicaId === null || candidate === undefined) return;
    this.dropCandidate(replicaId);
    if (!candidate.link.isOpen) return;
    this.admit(replicaId, candidate.link);
    if (candidate.hello !== null) this.fromSuccessor(replicaId, candidate.hello, candidate.budget);
    if (candidate.ack !== null) this.fromSuccessor(replicaId, candidate.ack, candidate.budget);
  }

  private fromCandidate(replicaId: number, link: PeerLink, bytes: Uint8Array): void {
    const candidate = this.candidates.get(replicaId);
    if (candidate?.link !== link || bytes.length > this.options.controlFrameBytesMax) return;
    // A Hello is sent once per epoch; acks are cumulative, so the newest stands for all. Dropped, it
    // would leave this replica's commit point behind until the next write (reads and watches of a
    // quiet chain held for it).
    const kind = frameKind(bytes);
    if (kind === MessageKind.hello) candidate.hello = bytes.slice();
    else if (kind === MessageKind.ack) candidate.ack = bytes.slice();
  }

  /** Closes a link whose peer sent what it must not, saying why (logged, and counted as a refusal). */
  private refuse(link: PeerLink | undefined, code: ErrorCode, detail: string): void {
    this.options.log({ level: 'warn', code, message: detail });
    link?.close(LinkCloseCode.malformedRecord, closeReason(code, detail));
  }

  /** Closes every link (the replica is leaving, or the host is closing). */
  closeAll(code: number = LinkCloseCode.goingAway, reason = 'replica leaving'): void {
    this.closeUpstream();
    for (const link of this.downstream.values()) link.close(code, reason);
    this.downstream.clear();
    for (const [replicaId, candidate] of [...this.candidates]) {
      this.dropCandidate(replicaId);
      candidate.link.close(code, reason);
    }
    this.successorId = null;
  }

  private closeUpstream(): void {
    const upstream = this.upstream;
    this.upstream = null;
    upstream?.link?.close(LinkCloseCode.normal, 'no longer the predecessor');
  }

  private dial(upstream: Upstream): void {
    // Dialed later, when the host table names its host; or a dial is under way.
    if (this.options.urlOf(upstream.replicaId) === null || upstream.attempt < 0) return;
    const attempt = ++upstream.attempt;
    upstream.attempt = -attempt;
    // A retry is for a missing link only: one dialed meanwhile (after a reconfiguration) would be
    // replaced by the predecessor, whose close of the older link would look like a break here.
    const retry = (delayMs: number): void => {
      setTimeout(() => this.upstream === upstream && upstream.link === null && this.dial(upstream), delayMs).unref();
    };
    // This dial's link, once it is up; a close of any other link of ours is old news.
    let dialed: PeerLink | null = null;
    let closed = false;
    const budget = new InboundBudget(this.options.connectionInboundBytesMax);
    this.options
      .openUpstream(upstream.replicaId, this.replicaId, {
        onRecord: (bytes) => this.fromPredecessor(upstream, bytes, budget),
        onWritable: () => this.options.kick(),
        onClose: () => {
          closed = true;
          if (this.upstream !== upstream || upstream.link !== dialed) return;
          upstream.link = null;
          if (this.role === 'joining') this.options.joinLinkLost(upstream.replicaId);
          else retry(RECONNECT_DELAY_MS);
        },
      })
      .then(
        (link) => {
          upstream.attempt = attempt;
          if (this.upstream !== upstream) {
            link.close(LinkCloseCode.normal, 'no longer the predecessor');
            return;
          }
          if (closed) return; // it closed before we got here, and its onClose scheduled a redial
          dialed = link;
          upstream.link = link;
          this.options.predecessorRefused(null);
          if (attempt > 1) this.repairAfterRedial(link, upstream.replicaId);
          this.options.kick();
        },
        (error: Error) => {
          upstream.attempt = attempt;
          if (this.upstream !== upstream) return;
          this.options.log({ level: 'warn', code: 'dial-failed', message: `cannot reach replica ${upstream.replicaId}: ${error.message}` });
          if ((error.cause as { code?: string } | undefined)?.code === 'ECONNREFUSED' && this.role !== 'joining') {
            this.options.predecessorRefused(upstream.replicaId);
          }
          retry(Math.min(1000, RECONNECT_DELAY_MS * attempt));
        },
      );
  }

  /**
   * A link to the same predecessor broke and came back within one epoch: whatever was on the wire
   * is lost, and the predecessor believes it was delivered. Tell it how far this replica has
   * applied, as after a reconfiguration, and it resends the rest from its in-flight list (what
   * arrives twice is dropped by sequence number). Acks on the wire were lost too: the cumulative
   * ack goes again after the Hello, or a predecessor would hold reads of keys written last until
   * the next write comes through (reads at any replica wait for the commit point). The seqs read
   * here may lag the replica's own; that only makes the resend longer, and the ack one it has sent.
   */
  private repairAfterRedial(link: PeerLink, predecessor: number): void {
    const progress = this.options.replicaProgress();
    if (progress === null || progress.epoch === 0 || this.role === 'joining') return;
    link.trySend(this.helloEncoder.encode({ epoch: progress.epoch, replicaId: this.replicaId, appliedSeq: progress.appliedSeq }));
    link.trySend(this.ackEncoder.encode({ epoch: progress.epoch, committedSeq: progress.committedSeq, clientId: 0, committedClientSeq: 0 }));
    this.options.log({ level: 'info', code: 'link-repaired', message: `redialed replica ${predecessor}: asked it to resend after seq ${progress.appliedSeq}` });
  }

  private fromPredecessor(upstream: Upstream, bytes: Uint8Array, budget: InboundBudget): void {
    if (this.upstream !== upstream) return;
    const kind = frameKind(bytes);
    if (kind === MessageKind.snapshot) {
      if (this.snapshotView.open(bytes) !== null || this.snapshotView.epoch < this.joinEpoch) return;
      this.joinStreamStarted = true;
    } else if (kind !== MessageKind.writeBatch || !this.joinStreamStarted) {
      return; // Nothing else travels down a chain link.
    }
    if (!this.options.offerBatch(bytes, budget)) this.refuse(upstream.link ?? undefined, ErrorCode.overloaded, `replica ${upstream.replicaId} exceeded its inbound queue limit`);
  }

  private fromSuccessor(replicaId: number, bytes: Uint8Array, budget: InboundBudget): void {
    // A joiner, or a host between replicas, has no successor: whatever arrives is for an earlier
    // process on this address (a restarted host is dialed before its old successor has moved on).
    if (this.role === null || this.role === 'joining') return;
    if (bytes.length > this.options.controlFrameBytesMax) {
      const detail = `a ${bytes.length}-byte frame from replica ${replicaId} (acks and Hellos are at most ${this.options.controlFrameBytesMax})`;
      return this.refuse(this.downstream.get(replicaId), ErrorCode.recordTooLarge, detail);
    }
    const kind = frameKind(bytes);
    if (kind === MessageKind.ack) {
      // Only our current successor's (or joiner's) acks: a tail accepts a joiner's acks of any epoch,
      // and a late ack from a successor we no longer have must not reach a node that forwards to no
      // one. Acks are cumulative, so one dropped early (before we hear of a new successor) is
      // overtaken by the next.
      if (replicaId !== this.successorId) return;
    } else if (kind !== MessageKind.hello || replicaId !== this.successorId) {
      return;
    }
    // Hellos carry their epoch: in an epoch only our successor of that epoch sends them, and one
    // from a newer epoch than ours is kept by the node until it gets there.
    if (!this.options.offerAck(bytes, budget)) this.refuse(this.downstream.get(replicaId), ErrorCode.overloaded, `replica ${replicaId} exceeded its inbound queue limit`);
  }
}

/** The replica id in a peer's node id `replica:<id>`, or null if it is not one. */
function replicaIdOf(nodeId: string): number | null {
  if (!nodeId.startsWith(PEER_PREFIX)) return null;
  const text = nodeId.slice(PEER_PREFIX.length);
  if (!/^[1-9][0-9]{0,15}$/.test(text)) return null;
  const replicaId = Number(text);
  return Number.isSafeInteger(replicaId) ? replicaId : null;
}
