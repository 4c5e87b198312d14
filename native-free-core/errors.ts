/**
 * Stable error codes. Tests and callers match on `code`, never on message text.
 * A `const` object plus a union type rather than an `enum` (see STYLE.md, nats.js).
 */
export const ErrorCode = {
  /** An argument has the wrong type (TypeError). */
  invalidArgument: 'DABBA_ERR_INVALID_ARGUMENT',
  /** An argument is out of its allowed range (RangeError). */
  outOfRange: 'DABBA_ERR_OUT_OF_RANGE',
  keyEmpty: 'DABBA_ERR_KEY_EMPTY',
  keyTooLarge: 'DABBA_ERR_KEY_TOO_LARGE',
  valueTooLarge: 'DABBA_ERR_VALUE_TOO_LARGE',
  /** The chain was closed; the operation was not applied (or its outcome was settled by close()). */
  closed: 'DABBA_ERR_CLOSED',
  /** Too many writes are waiting for the chain; the write was not accepted. Await earlier writes. */
  overloaded: 'DABBA_ERR_OVERLOADED',
  /** Bytes that are not a well-formed message of the expected kind. */
  malformedFrame: 'DABBA_ERR_MALFORMED_FRAME',
  /** An HTTP request whose framing is ambiguous or malformed (two Content-Length headers, say). */
  malformedRequest: 'DABBA_ERR_MALFORMED_REQUEST',
  /** A message from an older (or unknown newer) configuration epoch. */
  staleEpoch: 'DABBA_ERR_STALE_EPOCH',
  /** A batch whose sequence numbers do not continue the node's applied prefix. */
  sequenceGap: 'DABBA_ERR_SEQUENCE_GAP',
  /** A read reached a replica that is not the tail (it is, or is about to be, served by another). */
  notTail: 'DABBA_ERR_NOT_TAIL',
  /** An Ack or Hello reached a replica with no successor (it forwards to no one). */
  notForwarding: 'DABBA_ERR_NOT_FORWARDING',
  /** A well-formed frame of a kind this replica's role never takes from that link. */
  unexpectedFrame: 'DABBA_ERR_UNEXPECTED_FRAME',
  /**
   * A well-formed message that a correct neighbour never sends here: an ack beyond what was
   * forwarded, a Hello claiming writes this node never had, a batch before a joiner's snapshot.
   * Refused and reported; the master decides about the sender.
   */
  protocolViolation: 'DABBA_ERR_PROTOCOL_VIOLATION',
  /** A replica's worker stopped unexpectedly. */
  replicaFailed: 'DABBA_ERR_REPLICA_FAILED',
  /**
   * A write whose outcome cannot be known (the replicas that had it are gone): it may or may not
   * have been applied. Neither success nor plain failure; read the key to find out.
   */
  outcomeUnknown: 'DABBA_ERR_OUTCOME_UNKNOWN',
  /** A conditional write (ifVersion, ifAbsent) found the key at another version: not applied. */
  conditionFailed: 'DABBA_ERR_CONDITION_FAILED',
  /** The head's admission hook refused the write (the message has its reason): not applied. */
  rejected: 'DABBA_ERR_REJECTED',
  /**
   * A watch fell behind what the replicas still hold of the chain's history: the error's
   * `resumeVersion` is the oldest version they have (and `chain` the chain). Changes between were missed.
   */
  watchLagged: 'DABBA_ERR_WATCH_LAGGED',
  /** The operation did not complete in its time limit. */
  timeout: 'DABBA_ERR_TIMEOUT',
  /** A peer that did not prove it holds the cluster secret, or spoke before it had. */
  unauthenticated: 'DABBA_ERR_UNAUTHENTICATED',
  /** A record larger than the link's maxRecordBytes. */
  recordTooLarge: 'DABBA_ERR_RECORD_TOO_LARGE',
  /** A link between hosts closed (by either side, or the connection dropped). */
  linkClosed: 'DABBA_ERR_LINK_CLOSED',
  /** No value, route or member by that name (HTTP 404). */
  notFound: 'DABBA_ERR_NOT_FOUND',
  /** The cluster has no chain that can serve the request now (no configuration, no head or tail). */
  unavailable: 'DABBA_ERR_UNAVAILABLE',
  /**
   * A stored value that fails to open (sealed values, src/sealing.ts): tampered with, copied from
   * another key, sealed under a key version this client does not hold, or not a sealed value at
   * all. The read is refused rather than answered with bytes that cannot be trusted.
   */
  corrupt: 'DABBA_ERR_CORRUPT',
  /**
   * A replica of the chain has no room left for its log (below its disk reserve, or a write failed
   * with ENOSPC). The write was refused before it was sent, so nothing was applied: retry once space
   * is freed. Reads go on.
   */
  diskFull: 'DABBA_ERR_DISK_FULL',
  /**
   * A joiner restarted from its own log was sent a snapshot: the tail does not continue that log
   * (it holds writes the chain went on without, the tail's log no longer reaches back to it, or it
   * missed more writes than a snapshot holds keys). The runtime starts that replica over, empty.
   */
  logDiverged: 'DABBA_ERR_LOG_DIVERGED',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Names one write: the client that issued it and its client sequence number. */
export interface WriteId {
  clientId: number;
  clientSeq: number;
}

export class DabbaError extends Error {
  readonly code: ErrorCode;
  /** With DABBA_ERR_OUTCOME_UNKNOWN: the write whose outcome is unknown (ask chain.outcome(write)). */
  readonly write?: WriteId;
  /** With DABBA_ERR_CONDITION_FAILED: the key's version when the chain got to the write (0: absent). */
  readonly currentVersion?: number;
  /** With DABBA_ERR_WATCH_LAGGED: the oldest version the replica still holds changes from, and its chain. */
  readonly resumeVersion?: number;
  readonly chain?: number;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; write?: WriteId; currentVersion?: number; resumeVersion?: number; chain?: number }) {
    super(message, options);
    this.name = 'DabbaError';
    this.code = code;
    if (options?.write !== undefined) this.write = options.write;
    if (options?.currentVersion !== undefined) this.currentVersion = options.currentVersion;
    if (options?.resumeVersion !== undefined) this.resumeVersion = options.resumeVersion;
    if (options?.chain !== undefined) this.chain = options.chain;
  }
}

export function isDabbaError(error: unknown, code?: ErrorCode): error is DabbaError {
  return error instanceof DabbaError && (code === undefined || error.code === code);
}

/** A RangeError coded DABBA_ERR_OUT_OF_RANGE: an option or argument outside its allowed range. */
export function rangeError(message: string): RangeError & { code: ErrorCode } {
  return Object.assign(new RangeError(message), { code: ErrorCode.outOfRange });
}

/** A TypeError coded DABBA_ERR_INVALID_ARGUMENT: an option or argument of the wrong type. */
export function argumentTypeError(message: string): TypeError & { code: ErrorCode } {
  return Object.assign(new TypeError(message), { code: ErrorCode.invalidArgument });
}
