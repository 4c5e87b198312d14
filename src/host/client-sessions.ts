/**
 * Remote clients of one chain's replica on one host, on that chain's route (`/client` for chain 0,
 * `/client/<chain>` for the others: a client links to each chain's members, one link per chain): authenticated by the client secret (not the
 * peer secret: a client cannot link as a replica), then each connection is one client id. Writes
 * are taken only while this host is the head, reads only while it is the tail and holds a live
 * lease; the tail's cumulative client acks and read replies are routed back by client id and by
 * request id range.
 *
 * A client that connects as `client` is assigned a fresh id (an etcd counter, unique in the
 * cluster) and a token bound to it (./client-tokens.ts); `client:<id>:<token>` resumes that id on
 * any host, which is how a client keeps exactly-once across hosts, and a wrong token is refused.
 */
import type { TemplatedApp } from 'uWebSockets.js';
import { ErrorCode } from '../../native-free-core/errors.js';
import { encodeClusterView, type ClusterMember } from '../../native-free-core/wire/cluster-view.js';
import { nativeCrc32 } from '../../workers/native-crc32.js';
import { AckView, frameKind, isWatchReply, MessageKind, ReadBatchView, ReadReplyView, WriteBatchView, type RecordLimits } from '../../native-free-core/wire/codec.js';
import { rewriteWatchRequestId, WatchReplyView, WatchRequestView } from '../../native-free-core/wire/watch-frames.js';
import { rewriteFirstRequestId } from '../../native-free-core/wire/request-ids.js';
import { frameEnvelopeValidator, LinkCloseCode, type PeerLink, type PeerLinkHandlers, type PeerLinkLogEntry } from '../transport/peer-link.js';
import { closeReason } from '../transport/peer-link-endpoint.js';
import { attachPeerLinkRoute, type PeerLinkRoute } from '../transport/peer-link-server.js';
import type { TlsCredentials } from '../transport/tls.js';
import type { UwsModule } from '../transport/uws.js';
import type { ClientTokens } from './client-tokens.js';
import { InboundBudget } from './inbound-queue.js';
import { parseClientNodeId } from '../../native-free-core/wire/client-node-id.js';

export interface ClientSessionsOptions {
  /** The route: `/client` or `/client/<chain>` (clientPath, native-free-core/wire/cluster-view.ts). */
  path: string;
  /** The client secret: what clients prove they hold. */
  secret: Buffer;
  /** Issues and checks the tokens that bind client ids to their holders. */
  tokens: ClientTokens;
  nodeId: string;
  maxRecordBytes: number;
  /** Keys and values above the chain's limits are refused here, before they reach the replica. */
  recordLimits: RecordLimits;
  allocateClientId(): Promise<number>;
  view(): { epoch: number; members: ClusterMember[]; joining: ClusterMember | null; chains: number; lost?: boolean; diskFull?: boolean } | null;
  isHead(): boolean;
  isServingReads(): boolean;
  /** Bytes of one connection's frames that may wait for room in the replica's rings. */
  connectionInboundBytesMax: number;
  /** Hands a write batch to the replica, charged to its connection (false: a limit is exceeded). */
  offerBatch(frame: Uint8Array, budget: InboundBudget): boolean;
  offerReads(frame: Uint8Array, budget: InboundBudget): boolean;
  /** With TLS: clients must prove a certificate from this CA (see PeerLinkOptions.tls). */
  tls?: TlsCredentials | null;
  log(entry: PeerLinkLogEntry): void;
}

interface Session {
  link: PeerLink;
  /** 0 until assigned. */
  clientId: number;
  /** The epoch and disk flag of the last view sent (a view goes again when either changes). */
  viewSent: string;
  /** An id assigned by this host and not yet sent (there was no configuration to send it with). */
  unsentClientId: number;
  /** Its token, sent with it. */
  unsentClientToken: string;
  /** This connection's share of the inbound queues. */
  budget: InboundBudget;
  open: boolean;
  /** Host ids of its watch polls on their way through the replica, oldest first. */
  watchPolls: Set<number>;
}

/** A watch poll on its way through the replica: whose it is, and its id at the client. */
interface WatchRoute {
  session: Session;
  clientRequestId: number;
}

/** A read batch on its way through the replica: its host-side id range and whose it is. */
interface ReadRoute {
  start: number;
  count: number;
  session: Session;
  clientFirstRequestId: number;
}

export const ClientCloseCode = {
  /** Reads or writes sent to a host that cannot serve them right now (reconnect, follow the view). */
  notServing: 4003,
  /** The client did not read its acks and replies fast enough. */
  tooSlow: 4004,
} as const;

const LAST_ACKS_MAX = 65536;
/** Client links on one host at most, and of those still in their handshake. */
const CLIENT_CONNECTIONS_MAX = 1024;
const CLIENT_HANDSHAKES_MAX = 64;
/**
 * Watch polls one connection has on their way at most (a client has one per watch per chain): a
 * poll the replica never answered (it was dropped, the chain moved) is forgotten past it.
 */
const WATCH_POLLS_PER_CONNECTION_MAX = 1024;

export class ClientSessions {
  private readonly sessions = new Set<Session>();
  private readonly byClient = new Map<number, Set<Session>>();
  /** The newest ack frame per client, sent when it (re)connects: it may have missed it. */
  private readonly lastAcks = new Map<number, Uint8Array>();
  private readonly readRoutes: ReadRoute[] = [];
  private readRoutesHead = 0;
  private nextHostRequestId = 1;
  private route: PeerLinkRoute | null = null;
  private readonly ackView = new AckView();
  private readonly replyView = new ReadReplyView();
  private readonly writeView: WriteBatchView;
  private readonly readView: ReadBatchView;
  private readonly watchRequestView: WatchRequestView;
  private readonly watchReplyView = new WatchReplyView();
  private readonly watchRoutes = new Map<number, WatchRoute>();

  constructor(private readonly options: ClientSessionsOptions) {
    this.writeView = new WriteBatchView(options.recordLimits);
    this.readView = new ReadBatchView(options.recordLimits.keyBytesMax);
    this.watchRequestView = new WatchRequestView(options.recordLimits.keyBytesMax);
  }

  get count(): number {
    return this.sessions.size;
  }

  attach(app: TemplatedApp, native: boolean, uws: UwsModule): void {
    this.route = attachPeerLinkRoute(app, native, uws, {
      path: this.options.path,
      secret: this.options.secret,
      tls: this.options.tls ?? null,
      nodeId: this.options.nodeId,
      maxRecordBytes: this.options.maxRecordBytes,
      validate: frameEnvelopeValidator(),
      highWaterBytes: 16 * 1024 * 1024,
      connectionsMax: CLIENT_CONNECTIONS_MAX,
      handshakesMax: CLIENT_HANDSHAKES_MAX,
      log: (entry) => this.options.log(entry),
      onLink: (link) => this.onLink(link),
    });
  }

  private onLink(link: PeerLink): PeerLinkHandlers {
    const session: Session = {
      link,
      clientId: 0,
      viewSent: '',
      unsentClientId: 0,
      unsentClientToken: '',
      budget: new InboundBudget(this.options.connectionInboundBytesMax),
      open: true,
      watchPolls: new Set(),
    };
    const remote = parseClientNodeId(link.remoteNodeId);
    const handlers: PeerLinkHandlers = {
      onRecord: (bytes) => this.onRecord(session, bytes),
      onWritable: () => undefined,
      onClose: () => this.forget(session),
    };
    if (remote.kind === 'new') {
      this.options.allocateClientId().then(
        (clientId) => {
          if (session.open) this.bind(session, clientId, true);
        },
        (error: Error) => this.end(session, LinkCloseCode.goingAway, `cannot assign a client id: ${error.message}`),
      );
    } else if (remote.kind === 'resume' && this.options.tokens.verify(remote.clientId, remote.token)) {
      this.bind(session, remote.clientId, false);
    } else {
      // Proved the client secret, but names an id it was not given (or no client name at all).
      const detail = remote.kind === 'resume' ? `the token for client ${remote.clientId} is wrong` : `${link.remoteNodeId} is not a client name`;
      queueMicrotask(() => this.end(session, LinkCloseCode.unauthenticated, closeReason(ErrorCode.unauthenticated, detail)));
    }
    this.sessions.add(session);
    return handlers;
  }

  private bind(session: Session, clientId: number, assigned: boolean): void {
    session.clientId = clientId;
    session.unsentClientId = assigned ? clientId : 0;
    session.unsentClientToken = assigned ? this.options.tokens.issue(clientId) : '';
    let sessions = this.byClient.get(clientId);
    if (sessions === undefined) this.byClient.set(clientId, (sessions = new Set()));
    sessions.add(session);
    this.sendView(session);
    const lastAck = this.lastAcks.get(clientId);
    if (lastAck !== undefined) session.link.trySend(lastAck);
  }

  private onRecord(session: Session, bytes: Uint8Array): void {
    if (session.clientId === 0) return this.end(session, LinkCloseCode.malformedRecord, closeReason(ErrorCode.malformedFrame, 'a record before the client id was assigned'));
    switch (frameKind(bytes)) {
      case MessageKind.writeBatch: {
        const malformed = this.writeView.open(bytes);
        if (malformed !== null) return this.end(session, LinkCloseCode.malformedRecord, closeReason(ErrorCode.malformedFrame, malformed));
        if (this.writeView.clientId !== session.clientId) {
          return this.end(session, LinkCloseCode.malformedRecord, closeReason(ErrorCode.malformedFrame, `batch of client ${this.writeView.clientId} on client ${session.clientId}'s link`));
        }
        // Damaged on the way: the client reconnects and sends everything unacknowledged again.
        if (!this.writeView.checksumMatches(nativeCrc32)) {
          return this.end(session, LinkCloseCode.malformedRecord, closeReason(ErrorCode.corrupt, `batch from client seq ${this.writeView.firstClientSeq}: its checksum does not match its bytes`));
        }
        // Not the head (any more): the client learns the new view and resends there; drop it here.
        if (!this.options.isHead()) return this.sendView(session, true);
        if (!this.options.offerBatch(bytes, session.budget)) this.end(session, ClientCloseCode.tooSlow, closeReason(ErrorCode.overloaded, 'this connection exceeded its inbound queue limit'));
        return;
      }
      case MessageKind.readBatch: {
        const malformed = this.readView.open(bytes);
        if (malformed !== null) return this.end(session, LinkCloseCode.malformedRecord, closeReason(ErrorCode.malformedFrame, malformed));
        if (!this.options.isServingReads()) {
          // Not the tail, or our lease may have lapsed (another tail may exist): reads must go elsewhere.
          return this.end(session, ClientCloseCode.notServing, closeReason(ErrorCode.staleEpoch, 'this host is not serving reads now'));
        }
        const count = this.readView.count;
        const start = this.nextHostRequestId;
        const clientFirst = this.readView.firstRequestId;
        rewriteFirstRequestId(bytes, this.readView, start);
        if (!this.options.offerReads(bytes, session.budget)) return this.end(session, ClientCloseCode.tooSlow, closeReason(ErrorCode.overloaded, 'this connection exceeded its inbound queue limit'));
        this.nextHostRequestId += count;
        this.readRoutes.push({ start, count, session, clientFirstRequestId: clientFirst });
        return;
      }
      case MessageKind.watchRequest:
        return this.takeWatchPoll(session, bytes);
      default:
        return this.end(session, LinkCloseCode.malformedRecord, closeReason(ErrorCode.malformedFrame, 'clients send write and read batches and watch polls only'));
    }
  }

  /** A watch poll: to the replica under an id of this host's, routed back by it (as reads are). */
  private takeWatchPoll(session: Session, bytes: Uint8Array): void {
    const view = this.watchRequestView;
    const malformed = view.open(bytes);
    if (malformed !== null) return this.end(session, LinkCloseCode.malformedRecord, closeReason(ErrorCode.malformedFrame, malformed));
    if (!this.options.isServingReads()) return this.end(session, ClientCloseCode.notServing, closeReason(ErrorCode.staleEpoch, 'this host is not serving reads now'));
    const hostId = this.nextHostRequestId++;
    const clientRequestId = view.requestId;
    rewriteWatchRequestId(bytes, view, hostId);
    if (!this.options.offerReads(bytes, session.budget)) return this.end(session, ClientCloseCode.tooSlow, closeReason(ErrorCode.overloaded, 'this connection exceeded its inbound queue limit'));
    this.watchRoutes.set(hostId, { session, clientRequestId });
    session.watchPolls.add(hostId);
    if (session.watchPolls.size > WATCH_POLLS_PER_CONNECTION_MAX) {
      const oldest = session.watchPolls.values().next().value!;
      session.watchPolls.delete(oldest);
      this.watchRoutes.delete(oldest);
    }
  }

  /** A watch poll's reply from the replica: to the connection that sent the poll, under its id. */
  private deliverWatchReply(frame: Uint8Array): boolean {
    const copy = frame.slice();
    if (this.watchReplyView.open(copy) !== null) return true;
    const hostId = this.watchReplyView.requestId;
    const route = this.watchRoutes.get(hostId);
    if (route === undefined) return true;
    this.watchRoutes.delete(hostId);
    route.session.watchPolls.delete(hostId);
    rewriteWatchRequestId(copy, this.watchReplyView, route.clientRequestId);
    if (route.session.open && !route.session.link.trySend(copy)) this.end(route.session, ClientCloseCode.tooSlow, 'replies not read fast enough');
    return true;
  }

  /** A cumulative client ack from the tail replica: to that client's connections. Never blocks. */
  deliverAck(frame: Uint8Array): boolean {
    if (this.ackView.open(frame) !== null) return true;
    const clientId = this.ackView.clientId;
    const copy = frame.slice();
    this.lastAcks.delete(clientId);
    this.lastAcks.set(clientId, copy);
    if (this.lastAcks.size > LAST_ACKS_MAX) this.lastAcks.delete(this.lastAcks.keys().next().value!);
    for (const session of this.byClient.get(clientId) ?? []) {
      if (!session.link.trySend(copy)) this.end(session, ClientCloseCode.tooSlow, 'acks not read fast enough');
    }
    return true;
  }

  /** A read reply from the tail replica: back to the client whose reads it answers, with its ids. */
  deliverReadReply(frame: Uint8Array): boolean {
    if (isWatchReply(frame)) return this.deliverWatchReply(frame);
    const copy = frame.slice();
    if (this.replyView.open(copy) !== null) return true;
    const first = this.replyView.firstRequestId;
    // Reads the replica ignored (it stopped being the tail) are never answered: skip past them.
    while (this.readRoutesHead < this.readRoutes.length) {
      const route = this.readRoutes[this.readRoutesHead]!;
      if (route.start + route.count > first) break;
      this.readRoutesHead++;
    }
    const route = this.readRoutes[this.readRoutesHead];
    if (route === undefined || first < route.start) return true;
    rewriteFirstRequestId(copy, this.replyView, route.clientFirstRequestId + (first - route.start));
    if (route.session.open && !route.session.link.trySend(copy)) this.end(route.session, ClientCloseCode.tooSlow, 'replies not read fast enough');
    if (this.readRoutesHead > 1024 && this.readRoutesHead * 2 > this.readRoutes.length) {
      this.readRoutes.splice(0, this.readRoutesHead);
      this.readRoutesHead = 0;
    }
    return true;
  }

  /**
   * This host stopped being the tail: the replica ignores reads it has not served yet, so their
   * routes would wait for replies that never come. Forget them all; a reply still on its way finds
   * no route and is dropped. Clients resend every unanswered read to the new tail they are told of.
   */
  forgetReads(): void {
    this.readRoutes.length = 0;
    this.readRoutesHead = 0;
  }

  /** Tells every client the current view if it changed since they last heard. */
  broadcastView(): void {
    for (const session of this.sessions) if (session.clientId !== 0) this.sendView(session);
  }

  /** Sends the view if it changed since the last one this session got (or if `force`). */
  private sendView(session: Session, force = false): void {
    const view = this.options.view();
    // Before the first configuration there is nothing to send: a new client's id waits for it.
    if (view === null) return;
    const key = `${view.epoch}:${view.diskFull === true}`;
    if (!force && session.unsentClientId === 0 && key === session.viewSent) return;
    session.viewSent = key;
    if (session.link.trySend(encodeClusterView({ ...view, clientId: session.unsentClientId, clientToken: session.unsentClientToken }))) {
      session.unsentClientId = 0;
      session.unsentClientToken = '';
    }
  }

  private end(session: Session, code: number, reason: string): void {
    if (!session.open) return;
    this.forget(session);
    // A refusal (a coded reason) is logged, and counted by the host; closes for other reasons are not.
    const errorCode = /^(DABBA_ERR_[A-Z_]+):/.exec(reason)?.[1];
    if (errorCode !== undefined) {
      this.options.log({ level: 'warn', code: errorCode, message: reason, nodeId: this.options.nodeId, remoteNodeId: session.link.remoteNodeId, remoteAddress: session.link.remoteAddress, closeCode: code });
    }
    session.link.close(code, reason);
  }

  private forget(session: Session): void {
    session.open = false;
    this.sessions.delete(session);
    const sessions = this.byClient.get(session.clientId);
    sessions?.delete(session);
    if (sessions !== undefined && sessions.size === 0) this.byClient.delete(session.clientId);
    for (const hostId of session.watchPolls) this.watchRoutes.delete(hostId);
    session.watchPolls.clear();
  }

  closeAll(code: number = LinkCloseCode.goingAway, reason = 'host closing'): void {
    for (const session of [...this.sessions]) this.end(session, code, reason);
    this.route?.closeAll();
  }
}
