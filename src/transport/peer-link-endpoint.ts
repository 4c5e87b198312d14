/**
 * One end of a peer link, independent of the socket library: the handshake state machine, record
 * validation, backpressure and closing. The uWS server side and the ws client side each adapt
 * their socket to a SocketPort and feed received messages to receive().
 */
import type { KeyObject } from 'node:crypto';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import {
  HANDSHAKE_BYTES_MAX,
  checkNodeId,
  checkSecret,
  clientMac,
  decodeChallenge,
  decodeProof,
  decodeResponse,
  encodeChallenge,
  encodeProof,
  encodeResponse,
  identityMatches,
  identityTranscript,
  macMatches,
  newNonce,
  serverMac,
  signIdentity,
} from './peer-link-handshake.js';
import { certificateTranscript, checkCertificateProof, proveCertificate, type CertificateProof } from './certificate-proof.js';
import type { TlsCredentials } from './tls.js';

/** WebSocket close codes a peer link uses (4000-4999 is the range left to applications). */
export const LinkCloseCode = {
  normal: 1000,
  goingAway: 1001,
  /** The peer did not prove it holds the cluster secret, or sent something else first. */
  unauthenticated: 4001,
  /** A record that failed validation, was too large, or was not binary. */
  malformedRecord: 4002,
} as const;

export interface PeerLinkHandlers {
  /** One record, byte for byte as sent. Valid only during the call: copy it (into a ring) to keep it. */
  onRecord(bytes: Uint8Array): void;
  /** After trySend() refused, the socket's buffer fell to the low-water mark: send again. */
  onWritable?(): void;
  /** Called once when the link closes; our own code and reason if this side closed it. */
  onClose?(code: number, reason: string): void;
}

export interface PeerLinkLogEntry {
  level: 'info' | 'warn';
  /** An ErrorCode for refusals and failures, or 'peer-link-open' / 'peer-link-closed'. */
  code: string;
  message: string;
  nodeId: string;
  remoteNodeId: string | null;
  remoteAddress: string;
  closeCode?: number;
}

export interface PeerLinkOptions {
  /** The cluster secret every host holds (at least 16 bytes). */
  secret: Buffer;
  /** This host's node id, sent to the peer inside the authenticated handshake. */
  nodeId: string;
  /** Largest record accepted or sent. */
  maxRecordBytes: number;
  /** Checks a received record: null if it is fine, else the reason it is not (the link then closes). */
  validate(bytes: Uint8Array): string | null;
  /** trySend() refuses while more than this many bytes wait in the socket. Default max(1 MiB, 4 records). */
  highWaterBytes?: number;
  /** onWritable fires once the buffered bytes fall to this. Default highWaterBytes / 4. */
  lowWaterBytes?: number;
  /** A handshake not finished in this time closes the link. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** This side's Ed25519 private key: it signs the handshake, proving which node it is. */
  identityKey?: KeyObject;
  /**
   * When set, the other side must sign the handshake too: returns the public key the node named
   * `nodeId` signs with, or why that node may not link here at all (unknown, not a neighbour).
   */
  peerIdentity?(nodeId: string): KeyObject | string;
  /**
   * TLS material (./tls.ts). Dialing: the link dials wss:// with it and, holding a certificate,
   * proves that certificate in the handshake. Accepting: the dialer must prove a certificate issued
   * by `tls.ca` (./certificate-proof.ts); serving TLS on the socket is the caller's (uWS SSLApp).
   */
  tls?: TlsCredentials | null;
  log?(entry: PeerLinkLogEntry): void;
}

export interface PeerLink {
  readonly localNodeId: string;
  /** The peer's node id, proven by the handshake. */
  readonly remoteNodeId: string;
  readonly remoteAddress: string;
  /**
   * Sends one record, or returns false without sending while the socket holds more than the
   * high-water mark (or the link is closed): keep the record and retry after onWritable, as with
   * SpscRing.tryWrite. Throws DABBA_ERR_RECORD_TOO_LARGE for a record above maxRecordBytes.
   */
  trySend(bytes: Uint8Array, options?: SendOptions): boolean;
  bufferedAmount(): number;
  readonly isOpen: boolean;
  close(code?: number, reason?: string): void;
}

export interface SendOptions {
  /**
   * The caller keeps `bytes` unchanged until the peer has them (say, until it acknowledges them), so
   * the link may queue them by reference instead of copying. Default false: callers may reuse
   * `bytes` as soon as trySend returns (ring memory).
   */
  retained?: boolean;
}

export interface LinkSettings {
  secret: Buffer;
  nodeId: string;
  maxRecordBytes: number;
  /** What the socket must accept in one message: records, and the handshake even if records are tiny. */
  receiveLimitBytes: number;
  validate(bytes: Uint8Array): string | null;
  highWaterBytes: number;
  lowWaterBytes: number;
  handshakeTimeoutMs: number;
  identityKey: KeyObject | null;
  peerIdentity: ((nodeId: string) => KeyObject | string) | null;
  tls: TlsCredentials | null;
  log(entry: PeerLinkLogEntry): void;
}

const RECORD_BYTES_LIMIT = 256 * 1024 * 1024;
/** How often a port without drain events is polled while a producer waits. */
const WRITABLE_POLL_MS = 1;
/** RFC 6455: a close reason is at most 123 bytes. */
const CLOSE_REASON_BYTES_MAX = 123;

function outOfRange(message: string): DabbaError {
  return new DabbaError(ErrorCode.outOfRange, message);
}

export function linkSettings(options: PeerLinkOptions): LinkSettings {
  checkSecret(options.secret);
  checkNodeId(options.nodeId);
  const { maxRecordBytes } = options;
  if (!Number.isSafeInteger(maxRecordBytes) || maxRecordBytes < 1 || maxRecordBytes > RECORD_BYTES_LIMIT) {
    throw outOfRange(`maxRecordBytes must be an integer from 1 to ${RECORD_BYTES_LIMIT}`);
  }
  if (typeof options.validate !== 'function') throw new DabbaError(ErrorCode.invalidArgument, 'validate must be a function');
  const highWaterBytes = options.highWaterBytes ?? Math.max(1024 * 1024, 4 * maxRecordBytes);
  const lowWaterBytes = options.lowWaterBytes ?? Math.floor(highWaterBytes / 4);
  if (!Number.isSafeInteger(highWaterBytes) || highWaterBytes < 1) throw outOfRange('highWaterBytes must be a positive integer');
  if (!Number.isSafeInteger(lowWaterBytes) || lowWaterBytes < 0 || lowWaterBytes >= highWaterBytes) {
    throw outOfRange('lowWaterBytes must be an integer from 0 to below highWaterBytes');
  }
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
  if (!(handshakeTimeoutMs > 0)) throw outOfRange('handshakeTimeoutMs must be positive');
  return {
    secret: options.secret,
    nodeId: options.nodeId,
    maxRecordBytes,
    receiveLimitBytes: Math.max(maxRecordBytes, HANDSHAKE_BYTES_MAX),
    validate: options.validate,
    highWaterBytes,
    lowWaterBytes,
    handshakeTimeoutMs,
    identityKey: options.identityKey ?? null,
    peerIdentity: options.peerIdentity ?? null,
    tls: options.tls ?? null,
    log: options.log ?? (() => {}),
  };
}

/** "CODE: detail", cut to what a WebSocket close frame can carry. */
export function closeReason(code: ErrorCode, detail: string): string {
  const full = Buffer.from(`${code}: ${detail}`, 'utf8');
  if (full.length <= CLOSE_REASON_BYTES_MAX) return full.toString('utf8');
  // Cutting may split a character; drop the replacement char that decoding leaves then.
  return full.subarray(0, CLOSE_REASON_BYTES_MAX).toString('utf8').replace(/\uFFFD$/, '');
}

/** What an endpoint needs from its socket. */
export interface SocketPort {
  /** Queues one binary message; false if the socket dropped it (nothing was sent). */
  send(bytes: Uint8Array, retained?: boolean): boolean;
  bufferedAmount(): number;
  /** Starts a close handshake; the adapter later calls socketClosed(). */
  end(code: number, reason: string): void;
  /**
   * Arranges for handleDrain() to be called when buffered bytes leave. Returns false if this
   * socket has no such event, and the endpoint then polls.
   */
  watchWritable(): boolean;
}

export interface EndpointEvents {
  /** The handshake succeeded; returns the handlers for this link's records and events. */
  authenticated(endpoint: PeerLinkEndpoint): PeerLinkHandlers;
  /** The socket closed before the handshake finished. */
  closedBeforeOpen?(code: number, reason: string): void;
}

type Phase = 'awaitChallenge' | 'awaitResponse' | 'awaitProof' | 'open' | 'closing' | 'closed';

export class PeerLinkEndpoint implements PeerLink {
  remoteNodeId = '';
  private phase: Phase;
  private handlers: PeerLinkHandlers | null = null;
  private blocked = false;
  private localClose: { code: number; reason: string } | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private serverNonce: Buffer | null = null;
  private clientNonce: Buffer | null = null;

  constructor(
    readonly role: 'server' | 'client',
    private readonly settings: LinkSettings,
    private readonly port: SocketPort,
    readonly remoteAddress: string,
    private readonly events: EndpointEvents,
  ) {
    this.phase = role === 'server' ? 'awaitResponse' : 'awaitChallenge';
  }

  get localNodeId(): string {
    return this.settings.nodeId;
  }

  get isOpen(): boolean {
    return this.phase === 'open';
  }

  /** Call once the socket is open: the server speaks first, both sides start the handshake clock. */
  start(): void {
    this.handshakeTimer = setTimeout(() => this.refuse('handshake not finished in time'), this.settings.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    if (this.role === 'server') {
      this.serverNonce = newNonce();
      this.port.send(encodeChallenge(this.serverNonce));
    }
  }

  /** One WebSocket message from the peer. Never throws on bad input: it closes the link instead. */
  receive(bytes: Uint8Array, isBinary: boolean): void {
    switch (this.phase) {
      case 'open':
        this.receiveRecord(bytes, isBinary);
        return;
      case 'awaitResponse':
      case 'awaitChallenge':
      case 'awaitProof':
        if (!isBinary) this.refuse('a text message during the handshake');
        else this.receiveHandshake(bytes);
        return;
      case 'closing':
      case 'closed':
        return; // Whatever a peer sends after we began to close is not read.
    }
  }

  private receiveRecord(bytes: Uint8Array, isBinary: boolean): void {
    const { settings } = this;
    if (!isBinary) return this.failRecord(ErrorCode.malformedFrame, 'a text message where a record was expected');
    if (bytes.length > settings.maxRecordBytes) {
      return this.failRecord(ErrorCode.recordTooLarge, `record of ${bytes.length} bytes exceeds ${settings.maxRecordBytes}`);
    }
    let reason: string | null;
    try {
      reason = settings.validate(bytes);
    } catch (error) {
      // A validator that throws on hostile bytes must not take the process down.
      reason = `validate threw: ${error instanceof Error ? error.message : String(error)}`;
    }
    if (reason !== null) return this.failRecord(ErrorCode.malformedFrame, reason);
    this.handlers!.onRecord(bytes);
  }

  private receiveHandshake(bytes: Uint8Array): void {
    const { settings } = this;
    if (this.phase === 'awaitResponse') {
      const response = decodeResponse(bytes);
      if (typeof response === 'string') return this.refuse(response);
      const serverNonce = this.serverNonce!;
      const expected = clientMac(settings.secret, serverNonce, response.clientNonce, response.nodeId);
      if (!macMatches(expected, response.mac)) return this.refuse(`node ${JSON.stringify(response.nodeId)} does not hold this route's secret`);
      const transcript = identityTranscript('client', serverNonce, response.clientNonce, response.nodeId);
      const refusal = this.checkIdentity(response.nodeId, transcript, response.signature) ?? this.checkCertificate(response.certificate, serverNonce, response.clientNonce, response.nodeId);
      if (refusal !== null) return this.refuse(refusal);
      this.remoteNodeId = response.nodeId;
      const signature = this.signature(identityTranscript('server', response.clientNonce, serverNonce, settings.nodeId));
      this.port.send(encodeProof(serverMac(settings.secret, response.clientNonce, serverNonce, settings.nodeId), signature, settings.nodeId));
      this.becomeOpen();
    } else if (this.phase === 'awaitChallenge') {
      const serverNonce = decodeChallenge(bytes);
      if (typeof serverNonce === 'string') return this.refuse(serverNonce);
      this.serverNonce = serverNonce;
      const clientNonce = (this.clientNonce = newNonce());
      const signature = this.signature(identityTranscript('client', serverNonce, clientNonce, settings.nodeId));
      const proof = this.certificateProof(serverNonce, clientNonce);
      this.port.send(encodeResponse(clientMac(settings.secret, serverNonce, clientNonce, settings.nodeId), clientNonce, signature, settings.nodeId, proof));
      this.phase = 'awaitProof';
    } else {
      const proof = decodeProof(bytes);
      if (typeof proof === 'string') return this.refuse(proof);
      const expected = serverMac(settings.secret, this.clientNonce!, this.serverNonce!, proof.nodeId);
      if (!macMatches(expected, proof.mac)) return this.refuse(`server ${JSON.stringify(proof.nodeId)} does not hold this route's secret`);
      const transcript = identityTranscript('server', this.clientNonce!, this.serverNonce!, proof.nodeId);
      const refusal = this.checkIdentity(proof.nodeId, transcript, proof.signature);
      if (refusal !== null) return this.refuse(refusal);
      this.remoteNodeId = proof.nodeId;
      this.becomeOpen();
    }
  }

  private signature(transcript: Buffer): Buffer | null {
    return this.settings.identityKey === null ? null : signIdentity(this.settings.identityKey, transcript);
  }

  /** The dialer's proof of its TLS certificate, when it has one (see ./certificate-proof.ts). */
  private certificateProof(serverNonce: Buffer, clientNonce: Buffer): CertificateProof | null {
    const tls = this.settings.tls;
    if (tls === null || tls.certificate === null || tls.privateKey === null) return null;
    return proveCertificate(tls.certificate, tls.privateKey, certificateTranscript(serverNonce, clientNonce, this.settings.nodeId));
  }

  /** Null if no certificate is asked for (no TLS) or the dialer proved one from our CA, else why not. */
  private checkCertificate(proof: CertificateProof | null, serverNonce: Buffer, clientNonce: Buffer, nodeId: string): string | null {
    const tls = this.settings.tls;
    if (tls === null) return null;
    return checkCertificateProof(tls.authorities, proof, certificateTranscript(serverNonce, clientNonce, nodeId), Date.now());
  }

  /** Null if the other side proved its identity (or none is asked for), else why not. */
  private checkIdentity(nodeId: string, transcript: Buffer, signature: Buffer | null): string | null {
    const expect = this.settings.peerIdentity;
    if (expect === null) return null;
    let key: KeyObject | string;
    try {
      key = expect(nodeId);
    } catch (error) {
      return `identity check failed: ${error instanceof Error ? error.message : String(error)}`;
    }
    if (typeof key === 'string') return key;
    return identityMatches(key, transcript, signature) ? null : `${JSON.stringify(nodeId)} did not sign with its registered identity key`;
  }

  private becomeOpen(): void {
    this.clearHandshakeTimer();
    this.phase = 'open';
    this.serverNonce = null;
    this.clientNonce = null;
    this.logEntry('info', 'peer-link-open', 'peer authenticated');
    this.handlers = this.events.authenticated(this);
  }

  trySend(bytes: Uint8Array, options?: SendOptions): boolean {
    if (bytes.length > this.settings.maxRecordBytes) {
      throw new DabbaError(ErrorCode.recordTooLarge, `record of ${bytes.length} bytes exceeds maxRecordBytes ${this.settings.maxRecordBytes}`);
    }
    if (this.phase !== 'open' || this.blocked) return false;
    if (this.port.bufferedAmount() > this.settings.highWaterBytes || !this.port.send(bytes, options?.retained === true)) {
      this.blocked = true;
      this.watchWritable();
      return false;
    }
    return true;
  }

  bufferedAmount(): number {
    return this.phase === 'open' || this.phase === 'closing' ? this.port.bufferedAmount() : 0;
  }

  /** Called by the port when buffered bytes left the socket (and by the poll timer). */
  handleDrain(): void {
    if (!this.blocked || this.phase !== 'open') return;
    if (this.port.bufferedAmount() > this.settings.lowWaterBytes) {
      this.watchWritable();
      return;
    }
    this.blocked = false;
    this.handlers!.onWritable?.();
  }

  private watchWritable(): void {
    if (this.port.watchWritable() || this.pollTimer !== null) return;
    this.pollTimer = setTimeout(() => {
      this.pollTimer = null;
      this.handleDrain();
    }, WRITABLE_POLL_MS);
  }

  close(code: number = LinkCloseCode.normal, reason = ''): void {
    if (this.phase === 'closing' || this.phase === 'closed') return;
    this.phase = 'closing';
    this.localClose = { code, reason };
    this.clearTimers();
    this.port.end(code, reason);
  }

  /** Closes with 4001 and a coded reason: the peer has not (yet) proven it holds the secret. */
  private refuse(detail: string): void {
    const reason = closeReason(ErrorCode.unauthenticated, detail);
    this.logEntry('warn', ErrorCode.unauthenticated, detail, LinkCloseCode.unauthenticated);
    this.close(LinkCloseCode.unauthenticated, reason);
  }

  private failRecord(code: ErrorCode, detail: string): void {
    this.logEntry('warn', code, detail, LinkCloseCode.malformedRecord);
    this.close(LinkCloseCode.malformedRecord, closeReason(code, detail));
  }

  /**
   * The socket library refused a message above its receive limit and is dropping the connection
   * itself (uWS: 1006, ws: 1009 on the wire); report it here as our own coded close.
   */
  noteReceiveLimitExceeded(): void {
    if (this.phase === 'closing' || this.phase === 'closed') return;
    const detail = `a message exceeds the receive limit of ${this.settings.receiveLimitBytes} bytes`;
    const code = this.phase === 'open' ? LinkCloseCode.malformedRecord : LinkCloseCode.unauthenticated;
    const errorCode = this.phase === 'open' ? ErrorCode.recordTooLarge : ErrorCode.unauthenticated;
    this.logEntry('warn', errorCode, detail, code);
    this.phase = 'closing';
    this.localClose = { code, reason: closeReason(errorCode, detail) };
    this.clearTimers();
  }

  /** The socket is gone (either side closed it, or the connection dropped). */
  socketClosed(code: number, reason: string): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.clearTimers();
    const closedBy = this.localClose ?? { code, reason };
    if (this.localClose === null) this.logEntry('info', 'peer-link-closed', `closed by the peer or the network: ${reason}`, code);
    if (this.handlers !== null) this.handlers.onClose?.(closedBy.code, closedBy.reason);
    else this.events.closedBeforeOpen?.(closedBy.code, closedBy.reason);
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }

  private clearTimers(): void {
    this.clearHandshakeTimer();
    if (this.pollTimer !== null) clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  private logEntry(level: PeerLinkLogEntry['level'], code: string, message: string, closeCode?: number): void {
    const entry: PeerLinkLogEntry = {
      level,
      code,
      message,
      nodeId: this.settings.nodeId,
      remoteNodeId: this.remoteNodeId === '' ? null : this.remoteNodeId,
      remoteAddress: this.remoteAddress,
    };
    if (closeCode !== undefined) entry.closeCode = closeCode;
    try {
      this.settings.log(entry);
    } catch {
      // A failing logger must not break the link's state machine.
    }
  }
}
