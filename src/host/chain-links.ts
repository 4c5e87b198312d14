/**
 * A host's links to its neighbours in the chain. Every replica dials its predecessor (a joiner
 * dials the tail it copies from): batches and snapshot frames come down that link, Hellos and Acks
 * go up it. Successors dial us on the /peer route; whatever we forward goes to the current
 * successor's link (or the joiner's, behind a tail).
 *
 * Epochs make most stale frames harmless (a node drops frames of other epochs); what they cannot
 * sort out is filtered here:
 * - batches from anyone but the current predecessor are dropped;
 * - a joiner drops snapshot frames of an earlier, failed join and batches before its own first frame;
 * - a tail with a joiner takes acks only from that joiner (it accepts a joiner's acks of any epoch).
 * A link to the same predecessor that breaks and comes back within one epoch is repaired with a
 * Hello (see repairAfterRedial).
 */
import type { Role } from '../../native-free-core/chain/node.js';
import { SnapshotView } from '../../native-free-core/chain/snapshot.js';
import { ErrorCode } from '../../native-free-core/errors.js';
import { predecessorOf, successorOf, type Configuration } from '../../native-free-core/master/chain-master.js';
import { frameKind, HelloEncoder, MessageKind } from '../../native-free-core/wire/codec.js';
import { closeReason, connectPeerLink, frameEnvelopeValidator, LinkCloseCode, type PeerLink, type PeerLinkHandlers, type PeerLinkLogEntry } from '../transport/peer-link.js';

export const PEER_PREFIX = 'replica:';
const RECONNECT_DELAY_MS = 100;
/** Bytes a link may hold in its socket before trySend refuses (the ring behind it then fills). */
export const LINK_HIGH_WATER_BYTES = 16 * 1024 * 1024;

export interface ChainLinksOptions {
  secret: Buffer;
  recordBytesMax: number;
  /** Largest Ack or Hello taken from a successor (they go to a small control ring). */
  controlFrameBytesMax: number;
  /** Where a replica's host can be reached, from the etcd host table; null while unknown. */
  urlOf(replicaId: number): string | null;
  /** The local replica's epoch and applied seq (for the redial Hello); null if none runs. */
  replicaProgress(): { epoch: number; appliedSeq: number } | null;
  /** Hands a batch or snapshot frame to the replica; false if the inbound limit is exceeded. */
  offerBatch(frame: Uint8Array): boolean;
  /** Hands an Ack or Hello to the replica; false if the inbound limit is exceeded. */
  offerAck(frame: Uint8Array): boolean;
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

export class ChainLinks {
  private replicaId = 0;
  private role: Role | null = null;
  private upstream: Upstream | null = null;
  private readonly downstream = new Map<number, PeerLink>();
  private successorId: number | null = null;
  /** The epoch in which this replica began to join (older joins' frames are dropped). */
  private joinEpoch = 0;
  /** A joiner passes batches only after the first snapshot frame of its own join. */
  private joinStreamStarted = true;
  private readonly snapshotView = new SnapshotView();
  private readonly helloEncoder = new HelloEncoder();
  private readonly validate = frameEnvelopeValidator();

  constructor(private readonly options: ChainLinksOptions) {}

  /** A new replica starts: as a joiner in `epoch`, or as a member. */
  replicaStarted(epoch: number, role: Role): void {
    this.joinEpoch = role === 'joining' ? epoch : 0;
    this.joinStreamStarted = role !== 'joining';
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
    const isTail = role === 'tail' || role === 'solo';
    this.successorId = successorOf(configuration, replicaId) ?? (isTail ? configuration.joining : null);
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

  /** A peer dialed us on /peer (authenticated): it is, or is about to be, our successor. */
  acceptDownstream(link: PeerLink): PeerLinkHandlers {
    const replicaId = Number(link.remoteNodeId.slice(PEER_PREFIX.length));
    if (!link.remoteNodeId.startsWith(PEER_PREFIX) || !Number.isSafeInteger(replicaId) || replicaId < 1) {
      link.close(LinkCloseCode.unauthenticated, `${ErrorCode.unauthenticated}: not a replica`);
      return { onRecord: () => undefined };
    }
    this.downstream.get(replicaId)?.close(LinkCloseCode.normal, 'replaced by a newer link');
    this.downstream.set(replicaId, link);
    this.options.kick();
    return {
      onRecord: (bytes) => this.fromSuccessor(replicaId, bytes),
      onWritable: () => this.options.kick(),
      onClose: () => {
        if (this.downstream.get(replicaId) === link) this.downstream.delete(replicaId);
      },
    };
  }

  /** Closes every link (the replica is leaving, or the host is closing). */
  closeAll(code: number = LinkCloseCode.goingAway, reason = 'replica leaving'): void {
    this.closeUpstream();
    for (const link of this.downstream.values()) link.close(code, reason);
    this.downstream.clear();
    this.successorId = null;
  }

  private closeUpstream(): void {
    const upstream = this.upstream;
    this.upstream = null;
    upstream?.link?.close(LinkCloseCode.normal, 'no longer the predecessor');
  }

  private dial(upstream: Upstream): void {
    const url = this.options.urlOf(upstream.replicaId);
    // Dialed later, when the host table names it; or a dial is under way.
    if (url === null || upstream.attempt < 0) return;
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
    connectPeerLink({
      url: `${url}/peer`,
      secret: this.options.secret,
      nodeId: PEER_PREFIX + this.replicaId,
      maxRecordBytes: this.options.recordBytesMax,
      validate: this.validate,
      highWaterBytes: LINK_HIGH_WATER_BYTES,
      log: (entry) => this.options.log(entry),
      onRecord: (bytes) => this.fromPredecessor(upstream, bytes),
      onWritable: () => this.options.kick(),
      onClose: () => {
        closed = true;
        if (this.upstream !== upstream || upstream.link !== dialed) return;
        upstream.link = null;
        if (this.role === 'joining') this.options.joinLinkLost(upstream.replicaId);
        else retry(RECONNECT_DELAY_MS);
      },
    }).then(
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
        this.options.log({ level: 'warn', code: 'dial-failed', message: `cannot reach replica ${upstream.replicaId} at ${url}: ${error.message}` });
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
   * arrives twice is dropped by sequence number). The applied seq read here may lag the replica's
   * own; that only makes the resend longer.
   */
  private repairAfterRedial(link: PeerLink, predecessor: number): void {
    const progress = this.options.replicaProgress();
    if (progress === null || progress.epoch === 0 || this.role === 'joining') return;
    link.trySend(this.helloEncoder.encode({ epoch: progress.epoch, replicaId: this.replicaId, appliedSeq: progress.appliedSeq }));
    this.options.log({ level: 'info', code: 'link-repaired', message: `redialed replica ${predecessor}: asked it to resend after seq ${progress.appliedSeq}` });
  }

  private fromPredecessor(upstream: Upstream, bytes: Uint8Array): void {
    if (this.upstream !== upstream) return;
    const kind = frameKind(bytes);
    if (kind === MessageKind.snapshot) {
      if (this.snapshotView.open(bytes) !== null || this.snapshotView.epoch < this.joinEpoch) return;
      this.joinStreamStarted = true;
    } else if (kind !== MessageKind.writeBatch || !this.joinStreamStarted) {
      return; // Nothing else travels down a chain link.
    }
    if (!this.options.offerBatch(bytes)) upstream.link?.close(LinkCloseCode.malformedRecord, 'inbound queue limit exceeded');
  }

  private fromSuccessor(replicaId: number, bytes: Uint8Array): void {
    // A joiner, or a host between replicas, has no successor: whatever arrives is for an earlier
    // process on this address (a restarted host is dialed before its old successor has moved on).
    if (this.role === null || this.role === 'joining') return;
    if (bytes.length > this.options.controlFrameBytesMax) {
      const reason = closeReason(ErrorCode.recordTooLarge, `a ${bytes.length}-byte frame from a successor (acks and Hellos are at most ${this.options.controlFrameBytesMax})`);
      this.downstream.get(replicaId)?.close(LinkCloseCode.malformedRecord, reason);
      return;
    }
    const kind = frameKind(bytes);
    if (kind === MessageKind.ack) {
      // Only our current successor's (or joiner's) acks: a tail accepts a joiner's acks of any epoch,
      // and a late ack from a successor we no longer have must not reach a node that forwards to no
      // one. Acks are cumulative, so one dropped early (before we hear of a new successor) is
      // overtaken by the next.
      if (replicaId !== this.successorId) return;
    } else if (kind !== MessageKind.hello) {
      return;
    }
    // Hellos carry their epoch: in an epoch only our successor of that epoch sends them, and one
    // from a newer epoch than ours is kept by the node until it gets there.
    if (!this.options.offerAck(bytes)) this.downstream.get(replicaId)?.close(LinkCloseCode.malformedRecord, 'inbound queue limit exceeded');
  }
}
