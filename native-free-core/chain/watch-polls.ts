import { assert } from '../assert.js';
import type { Op } from '../wire/codec.js';
import { WatchReplyEncoder, WatchStatus, type WatchRequestView } from '../wire/watch-frames.js';
import type { ChangeHistory } from './change-history.js';

/**
 * A replica's side of watches: each poll is answered from its change history (./change-history.ts)
 * with the committed changes to keys under the poll's prefix from the poll's version on, or held
 * until one is committed. A replica keeps nothing else of a watch, so a watcher resumes anywhere,
 * after a reconnect or a failover, by polling from where its last reply ended; and it is the
 * watcher that paces its watch (one poll, one reply), so a slow watcher costs no memory here: once
 * the history no longer reaches back to its next version, its poll is answered Lagged.
 *
 * Only committed changes are sent (version <= the commit point): the tail's are all committed; a
 * head's or middle's (reads at any replica) once the tail's acks say so.
 */
export interface HeldPoll {
  requestId: number;
  prefix: Uint8Array;
  /** The version it asked from, and the next version to look at. */
  asked: number;
  from: number;
  bytesMax: number;
}

/** Records one poll looks at per call, so a poll far behind never holds up the replica's loop. */
const SCAN_RECORDS_MAX = 65536;
/**
 * A held poll is answered (empty) once this many versions have passed it with no change under its
 * prefix: its watcher's position moves on, so after a failover it resumes near the commit point,
 * not where its prefix last changed (which the histories may have dropped since).
 */
export const WATCH_IDLE_REPLY_VERSIONS = 4096;

export class WatchPolls {
  private held: HeldPoll[] = [];
  /** The reply being filled by answer()'s visitor, and its prefix (no closure per scan). */
  private prefix: Uint8Array = new Uint8Array(0);
  private full = false;
  /** The lowest `from` of the held polls (Infinity when none): due() in O(1). */
  private lowestFrom = Infinity;

  constructor(
    private readonly history: ChangeHistory,
    private readonly encoder: WatchReplyEncoder,
    /** Polls held at most: past it, the oldest is answered (empty) to make room, and its watcher polls again. */
    private readonly heldMax: number,
    /** See WATCH_IDLE_REPLY_VERSIONS (the simulator makes it small). */
    private readonly idleReplyVersions: number = WATCH_IDLE_REPLY_VERSIONS,
  ) {
    assert(heldMax >= 1, 'WatchPolls: heldMax must be positive');
  }

  get heldCount(): number {
    return this.held.length;
  }

  /** Whether a held poll may have an answer: the commit point reached its version. */
  due(committedSeq: number): boolean {
    return this.lowestFrom <= committedSeq;
  }

  /** A poll (opened, not yet verified against the history): its reply now, or null when it is held. Evicted polls' replies go to `evicted`. */
  take(request: WatchRequestView, committedSeq: number, evicted: Uint8Array[]): Uint8Array | null {
    const history = this.history;
    if (request.fromVersion === 0) return this.encodeEmpty(request.requestId, committedSeq);
    if (request.fromVersion < history.startSeq) return this.encodeLagged(request.requestId, request.fromVersion);
    const poll: HeldPoll = { requestId: request.requestId, prefix: request.prefix.slice(), asked: request.fromVersion, from: request.fromVersion, bytesMax: request.bytesMax };
    const reply = this.answer(poll, committedSeq);
    if (reply !== null) return reply;
    if (this.held.length >= this.heldMax) {
      const oldest = this.held.shift()!;
      evicted.push(this.encodeEmpty(oldest.requestId, oldest.from - 1));
    }
    this.held.push(poll);
    if (poll.from < this.lowestFrom) this.lowestFrom = poll.from;
    return null;
  }

  /** Answers the held polls that have changes now (call when due()); the rest stay held. */
  serve(committedSeq: number, replies: Uint8Array[]): void {
    const stillHeld: HeldPoll[] = [];
    let lowestFrom = Infinity;
    for (const poll of this.held) {
      const reply = poll.from <= committedSeq ? this.answer(poll, committedSeq) : null;
      if (reply !== null) {
        replies.push(reply);
        continue;
      }
      stillHeld.push(poll);
      if (poll.from < lowestFrom) lowestFrom = poll.from;
    }
    this.held = stillHeld;
    this.lowestFrom = lowestFrom;
  }

  /** Every held poll, answered empty (the replica stops serving watches: its watchers poll elsewhere). */
  release(replies: Uint8Array[]): void {
    for (const poll of this.held) replies.push(this.encodeEmpty(poll.requestId, poll.from - 1));
    this.held = [];
    this.lowestFrom = Infinity;
  }

  /**
   * The poll's reply if it has one: the changes from `poll.from` through the commit point (or as
   * many as fit, or as far as one call looks), or Lagged if the history lost its next version.
   * Null if nothing matched through the commit point: `poll.from` moves past what was looked at.
   */
  private answer(poll: HeldPoll, committedSeq: number): Uint8Array | null {
    const history = this.history;
    if (poll.from < history.startSeq) return this.encodeLagged(poll.requestId, poll.from);
    const through = Math.min(committedSeq, history.lastSeq);
    if (poll.from > through) return null;
    this.encoder.begin(poll.bytesMax);
    this.prefix = poll.prefix;
    this.full = false;
    const seq = history.scan(poll.from, through, this.addMatching, SCAN_RECORDS_MAX);
    // Everything before `seq` was looked at: matching changes are in the reply.
    const exhausted = seq - poll.from >= SCAN_RECORDS_MAX && !this.full;
    if (this.encoder.count === 0 && !exhausted && seq - poll.asked < this.idleReplyVersions) {
      poll.from = seq;
      return null;
    }
    return this.encoder.finish(poll.requestId, WatchStatus.Changes, seq - 1, 0);
  }

  /** ChangeHistory.scan's visitor for answer(): a change under the prefix goes in the reply while it fits. */
  private readonly addMatching = (op: Op, bytes: Uint8Array, keyStart: number, keyLength: number, valueLength: number, seq: number): boolean => {
    const prefix = this.prefix;
    if (keyLength < prefix.length || !startsWith(bytes, keyStart, prefix)) return true;
    if (!this.encoder.fits(keyLength, valueLength)) {
      this.full = true;
      return false;
    }
    this.encoder.add(op, bytes, keyStart, keyLength, valueLength, seq);
    return true;
  };

  private encodeEmpty(requestId: number, throughVersion: number): Uint8Array {
    this.encoder.begin(0);
    return this.encoder.finish(requestId, WatchStatus.Changes, throughVersion, 0);
  }

  private encodeLagged(requestId: number, fromVersion: number): Uint8Array {
    this.encoder.begin(0);
    return this.encoder.finish(requestId, WatchStatus.Lagged, fromVersion - 1, this.history.startSeq);
  }
}

function startsWith(bytes: Uint8Array, start: number, prefix: Uint8Array): boolean {
  for (let index = 0; index < prefix.length; index++) if (bytes[start + index] !== prefix[index]) return false;
  return true;
}
