/**
 * One peer link per pair of hosts and direction, carrying every chain. A host dials each host that
 * holds the predecessor of one of its replicas (or the tail a joiner copies from) once, and every
 * such chain opens a channel on that link; the other host's successors dial it the same way. Each
 * record on a host link starts with the same 8-byte tag as a ring record
 * (native-free-core/wire/chain-tag.ts), whose fifth byte says what follows:
 *
 *   [chain: u32][0][0][0][0]  frame             a chain's frame (a batch, a snapshot frame, an Ack, a Hello)
 *   [chain: u32][1][0][0][0]  replica id: u32   opens the chain's channel from the dialer's replica
 *   [chain: u32][2][0][code: u16]  reason       closes it, with a WebSocket-style code and a reason
 *
 * A channel behaves as a PeerLink of its own (ChainLinks, ./chain-links.ts, cannot tell the
 * difference): it opens, sends and closes by itself, and closes when its host link does. Who is at
 * the other end is proven per host, not per replica: the host link's handshake proves the host (its
 * identity key, registered in etcd), and a channel may open only for a replica whose home is that
 * host (`homeOf`). The dialer's channel opens as soon as its OPEN is sent; the accepting side hands
 * it to the chain's links, which admit it as the successor or park it, as before.
 */
import type { KeyObject } from 'node:crypto';
import { ErrorCode } from '../../native-free-core/errors.js';
import { CHAIN_TAG_BYTES, chainTagAt } from '../../native-free-core/wire/chain-tag.js';
import { FrameEnvelope, frameKind, MessageKind, reasonIfMalformed } from '../../native-free-core/wire/codec.js';
import { closeReason, connectPeerLink, LinkCloseCode, type PeerLink, type PeerLinkHandlers, type PeerLinkLogEntry } from '../transport/peer-link.js';
import type { TlsCredentials } from '../transport/tls.js';
import { HOST_PREFIX, PEER_PREFIX } from './chain-links.js';

const KIND_FRAME = 0;
const KIND_OPEN = 1;
const KIND_CLOSE = 2;
/** A close record's reason, at most (WebSocket's own limit on a close reason is 123 bytes). */
const CLOSE_REASON_BYTES_MAX = 123;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

export interface HostLinksOptions {
  hostId: string;
  /** The peer secret (hosts only). */
  secret: Buffer;
  /** This host's identity key: it signs every host link's handshake. */
  identityKey: KeyObject;
  /** With TLS: the CA the other hosts' certificates chain to, and this host's certificate. */
  tls?: TlsCredentials | null;
  /** Largest frame a channel carries (the tag comes on top). */
  frameBytesMax: number;
  highWaterBytes: number;
  /** Where a host can be reached, and the key it signs with (etcd host table); null while unknown. */
  hostOf(hostId: string): { url: string; publicKey: KeyObject } | null;
  /** The host a replica runs on (its home, if that host is registered in the replica's incarnation); null if unknown. */
  homeOf(replicaId: number): string | null;
  /** A channel another host opened for `chain` from its replica `replicaId`: that chain's links take it. */
  acceptChannel(chain: number, channel: PeerLink): PeerLinkHandlers;
  /**
   * A test hook (DABBA_TEST_DAMAGE_BATCH_EVERY): every Nth write batch sent on a channel has one of
   * its bytes flipped on the way (the sender's own copy stays intact), so tests can watch a receiver
   * refuse it and ask for it again. 0 or absent: never.
   */
  damageBatchEvery?: number;
  /** With damageBatchEvery: damage at most this many batches (DABBA_TEST_DAMAGE_BATCHES; default: no limit). */
  damageBatchesMax?: number;
  log(entry: PeerLinkLogEntry | { level: 'info' | 'warn'; code: string; message: string }): void;
}

/** A chain's channel on a host link, seen as a PeerLink. */
class Channel implements PeerLink {
  open = true;
  handlers: PeerLinkHandlers = { onRecord: () => undefined };

  constructor(
    private readonly host: HostLink,
    readonly chain: number,
    readonly remoteNodeId: string,
    private readonly damage: ((record: Uint8Array) => void) | null = null,
  ) {}

  get localNodeId(): string {
    return this.host.link.localNodeId;
  }

  get remoteAddress(): string {
    return this.host.link.remoteAddress;
  }

  get isOpen(): boolean {
    return this.open && this.host.link.isOpen;
  }

  trySend(bytes: Uint8Array): boolean {
    if (!this.isOpen) return false;
    const record = new Uint8Array(CHAIN_TAG_BYTES + bytes.length);
    writeTag(record, this.chain, KIND_FRAME, 0);
    record.set(bytes, CHAIN_TAG_BYTES);
    this.damage?.(record);
    return this.host.link.trySend(record, { retained: true });
  }

  bufferedAmount(): number {
    return this.host.link.bufferedAmount();
  }

  close(code: number = LinkCloseCode.normal, reason = ''): void {
    if (!this.open) return;
    if (this.host.link.isOpen) this.host.link.trySend(closeRecord(this.chain, code, reason));
    this.host.ended(this, code, reason);
  }
}

/** One host link (either direction) and the channels on it, by chain. */
class HostLink {
  readonly channels = new Map<number, Channel>();

  constructor(
    readonly link: PeerLink,
    readonly hostId: string,
  ) {}

  /** A channel ends (closed here, closed by the peer, or with the link): once, asynchronously like a socket's close. */
  ended(channel: Channel, code: number, reason: string): void {
    if (!channel.open) return;
    channel.open = false;
    if (this.channels.get(channel.chain) === channel) this.channels.delete(channel.chain);
    queueMicrotask(() => channel.handlers.onClose?.(code, reason));
  }

  /** The link closed: every channel on it ends. */
  closed(code: number, reason: string): void {
    for (const channel of [...this.channels.values()]) this.ended(channel, code, reason);
  }
}

export class HostLinks {
  /** Links this host dialed, by host; a dial under way is a promise. */
  private readonly outbound = new Map<string, HostLink | Promise<HostLink>>();
  /** Links other hosts dialed, by host (the newest wins). */
  private readonly inbound = new Map<string, HostLink>();
  private readonly envelope = new FrameEnvelope();
  private readonly damage: ((record: Uint8Array) => void) | null;

  constructor(private readonly options: HostLinksOptions) {
    const every = options.damageBatchEvery ?? 0;
    let damagesLeft = options.damageBatchesMax ?? Number.POSITIVE_INFINITY;
    let batches = 0;
    this.damage =
      every > 0
        ? (record) => {
            if (damagesLeft === 0 || frameKind(record.subarray(CHAIN_TAG_BYTES)) !== MessageKind.writeBatch || ++batches % every !== 0) return;
            record[record.length - 1]! ^= 0x01; // the end of the payload, which the batch's checksum covers
            damagesLeft--;
          }
        : null;
  }

  /**
   * Opens `chain`'s channel from this host's replica `from` to the host that holds replica `to`
   * (dialing that host if no link to it is up). Rejects as connectPeerLink does when the host cannot
   * be reached (the error's cause says ECONNREFUSED when nothing listens there).
   */
  async open(chain: number, from: number, to: number, handlers: PeerLinkHandlers): Promise<PeerLink> {
    const hostId = this.options.homeOf(to);
    if (hostId === null) throw new Error(`replica ${to}'s host is not registered (yet)`);
    const host = await this.dial(hostId);
    if (!host.link.isOpen) throw new Error(`the link to host ${hostId} closed as it opened`);
    const channel = new Channel(host, chain, `${PEER_PREFIX}${to}`, this.damage);
    channel.handlers = handlers;
    const previous = host.channels.get(chain);
    host.channels.set(chain, channel);
    if (previous !== undefined) host.ended(previous, LinkCloseCode.normal, 'replaced by a newer channel');
    const open = new Uint8Array(CHAIN_TAG_BYTES + 4);
    writeTag(open, chain, KIND_OPEN, 0);
    new DataView(open.buffer).setUint32(CHAIN_TAG_BYTES, from, true);
    if (!host.link.trySend(open)) {
      host.ended(channel, LinkCloseCode.goingAway, 'the host link is full');
      throw new Error(`cannot open chain ${chain}'s channel to host ${hostId}: its link is full`);
    }
    return channel;
  }

  private dial(hostId: string): Promise<HostLink> {
    const current = this.outbound.get(hostId);
    if (current instanceof HostLink && current.link.isOpen) return Promise.resolve(current);
    if (current instanceof Promise) return current;
    const target = this.options.hostOf(hostId);
    if (target === null) return Promise.reject(new Error(`host ${hostId} is not registered (yet)`));
    let host: HostLink | null = null;
    const dialing = connectPeerLink({
      url: `${target.url}/peer`,
      secret: this.options.secret,
      tls: this.options.tls ?? null,
      nodeId: HOST_PREFIX + this.options.hostId,
      identityKey: this.options.identityKey,
      // The host at that URL must be the one the table names (a restarted host there is someone else).
      peerIdentity: (nodeId) => (nodeId === HOST_PREFIX + hostId ? (this.options.hostOf(hostId)?.publicKey ?? `host ${hostId} is not registered (yet)`) : `${target.url} is ${nodeId}, not host ${hostId}`),
      maxRecordBytes: this.recordBytesMax,
      validate: (bytes) => this.validate(bytes),
      highWaterBytes: this.options.highWaterBytes,
      log: (entry) => this.options.log(entry),
      onRecord: (bytes) => host !== null && this.onRecord(host, bytes),
      onWritable: () => {
        for (const channel of host?.channels.values() ?? []) channel.handlers.onWritable?.();
      },
      onClose: (code, reason) => {
        if (host === null) return;
        if (this.outbound.get(hostId) === host) this.outbound.delete(hostId);
        host.closed(code, reason);
      },
    }).then(
      (link) => {
        host = new HostLink(link, hostId);
        // Forgotten while dialing (the host left the table): not kept, so closed; openers retry.
        if (this.outbound.get(hostId) === dialing) this.outbound.set(hostId, host);
        else link.close(LinkCloseCode.goingAway, `host ${hostId} left the cluster`);
        if (!link.isOpen) host.closed(LinkCloseCode.goingAway, 'closed as it opened');
        return host;
      },
      (error: unknown) => {
        if (this.outbound.get(hostId) === dialing) this.outbound.delete(hostId);
        throw error;
      },
    );
    this.outbound.set(hostId, dialing);
    return dialing;
  }

  /** The /peer route's identity check: another host, registered, signing with its key. */
  peerIdentity(nodeId: string): KeyObject | string {
    if (!nodeId.startsWith(HOST_PREFIX)) return `${JSON.stringify(nodeId)} is not a host`;
    return this.options.hostOf(nodeId.slice(HOST_PREFIX.length))?.publicKey ?? `${nodeId} is not registered (yet)`;
  }

  /** A host dialed us on /peer (its identity proven): its channels open on it. */
  acceptLink(link: PeerLink): PeerLinkHandlers {
    const hostId = link.remoteNodeId.slice(HOST_PREFIX.length);
    const host = new HostLink(link, hostId);
    const previous = this.inbound.get(hostId);
    this.inbound.set(hostId, host);
    previous?.link.close(LinkCloseCode.normal, 'replaced by a newer link');
    return {
      onRecord: (bytes) => this.onRecord(host, bytes),
      onWritable: () => {
        for (const channel of host.channels.values()) channel.handlers.onWritable?.();
      },
      onClose: (code, reason) => {
        if (this.inbound.get(hostId) === host) this.inbound.delete(hostId);
        host.closed(code, reason);
      },
    };
  }

  /** Largest record on a host link: a frame and its tag. */
  get recordBytesMax(): number {
    return CHAIN_TAG_BYTES + this.options.frameBytesMax;
  }

  /** Checks a record before it is read: a tag, and for a frame a Frame envelope that verifies. */
  validate(bytes: Uint8Array): string | null {
    if (bytes.length < CHAIN_TAG_BYTES) return `a ${bytes.length}-byte record has no chain tag`;
    const kind = bytes[4];
    if (kind === KIND_FRAME) return reasonIfMalformed(() => this.envelope.open(bytes.subarray(CHAIN_TAG_BYTES)));
    if (kind === KIND_OPEN) return bytes.length === CHAIN_TAG_BYTES + 4 ? null : 'an open record is 12 bytes';
    if (kind === KIND_CLOSE) return bytes.length <= CHAIN_TAG_BYTES + CLOSE_REASON_BYTES_MAX ? null : 'a close record is too long';
    return `unknown record kind ${kind}`;
  }

  private onRecord(host: HostLink, bytes: Uint8Array): void {
    const chain = chainTagAt(bytes, 0);
    if (bytes[4] === KIND_FRAME) {
      host.channels.get(chain)?.handlers.onRecord(bytes.subarray(CHAIN_TAG_BYTES));
      return;
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const kind = bytes[4];
    if (kind === KIND_CLOSE) {
      const channel = host.channels.get(chain);
      if (channel !== undefined) host.ended(channel, view.getUint16(6, true), textDecoder.decode(bytes.subarray(CHAIN_TAG_BYTES)));
      return;
    }
    // An open: only on a link another host dialed, for a replica that host holds.
    const from = view.getUint32(CHAIN_TAG_BYTES, true);
    if (this.inbound.get(host.hostId) !== host) return this.refuse(host, `host ${host.hostId} opened a channel on a link it did not dial`);
    if (this.options.homeOf(from) !== host.hostId) {
      // Unknown here yet (this host may not have seen the entry that names it): the dialer retries.
      host.link.trySend(closeRecord(chain, LinkCloseCode.unauthenticated, closeReason(ErrorCode.unauthenticated, `replica ${from} is not on host ${host.hostId} (yet)`)));
      return;
    }
    const channel = new Channel(host, chain, `${PEER_PREFIX}${from}`, this.damage);
    const previous = host.channels.get(chain);
    host.channels.set(chain, channel);
    if (previous !== undefined) host.ended(previous, LinkCloseCode.normal, 'replaced by a newer channel');
    channel.handlers = this.options.acceptChannel(chain, channel);
  }

  private refuse(host: HostLink, detail: string): void {
    this.options.log({ level: 'warn', code: ErrorCode.protocolViolation, message: detail });
    host.link.close(LinkCloseCode.malformedRecord, closeReason(ErrorCode.protocolViolation, detail));
  }

  /** Closes the links to and from hosts the table no longer has (their leases ended): the maps stay as small as the cluster. */
  forgetHostsExcept(live: ReadonlySet<string>): void {
    for (const [hostId, host] of this.outbound) {
      if (live.has(hostId)) continue;
      this.outbound.delete(hostId);
      if (host instanceof HostLink) host.link.close(LinkCloseCode.goingAway, `host ${hostId} left the cluster`);
    }
    for (const [hostId, host] of this.inbound) if (!live.has(hostId)) host.link.close(LinkCloseCode.goingAway, `host ${hostId} left the cluster`);
  }

  /** The host links up now: to whom this host dialed, from whom it accepted, and the channels on each. */
  summary(): { dialed: Array<{ hostId: string; chains: number }>; accepted: Array<{ hostId: string; chains: number }> } {
    const dialed = [...this.outbound.values()].filter((host): host is HostLink => host instanceof HostLink && host.link.isOpen);
    const accepted = [...this.inbound.values()].filter((host) => host.link.isOpen);
    const line = (host: HostLink): { hostId: string; chains: number } => ({ hostId: host.hostId, chains: host.channels.size });
    return { dialed: dialed.map(line), accepted: accepted.map(line) };
  }

  /** Closes every host link (the host is closing). */
  closeAll(code: number, reason: string): void {
    for (const host of [...this.inbound.values()]) host.link.close(code, reason);
    for (const host of [...this.outbound.values()]) if (host instanceof HostLink) host.link.close(code, reason);
  }
}

function writeTag(record: Uint8Array, chain: number, kind: number, code: number): void {
  record[0] = chain & 0xff;
  record[1] = (chain >>> 8) & 0xff;
  record[2] = (chain >>> 16) & 0xff;
  record[3] = chain >>> 24;
  record[4] = kind;
  record[5] = 0;
  record[6] = code & 0xff;
  record[7] = code >>> 8;
}

function closeRecord(chain: number, code: number, reason: string): Uint8Array {
  const text = textEncoder.encode(reason).subarray(0, CLOSE_REASON_BYTES_MAX);
  const record = new Uint8Array(CHAIN_TAG_BYTES + text.length);
  writeTag(record, chain, KIND_CLOSE, code);
  record.set(text, CHAIN_TAG_BYTES);
  return record;
}
