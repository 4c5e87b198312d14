/**
 * The joining replica's side of a join: it loads the tail's state from Snapshot frames, with the
 * batches the tail applied meanwhile in between them (see ./snapshot.ts and ./join-source.ts). The
 * first frame says from which seq on batches follow; each frame holds entries as they were when it
 * was cut, after every batch before it on the link, so applying both in link order converges on the
 * tail's state. The joiner serves nothing until it becomes the tail.
 *
 * A joiner restarted from its own log (`resumed`) instead takes the batches after its applied seq,
 * then an empty last frame at the seq the tail's catch-up ended at. A copy of the store means the
 * tail did not continue its log (the histories differ, the tail's log no longer holds that range,
 * or the writes missed outnumber the store's keys): refused, and the runtime starts the replica
 * over, empty, to take a copy.
 *
 * The ChainNode owns one while it is joining; this holds only the join's own state.
 */
import { ErrorCode } from '../errors.js';
import type { Store } from '../store.js';
import { SnapshotView, type SnapshotEntryLimits } from './snapshot.js';

export type SnapshotStep =
  | { status: 'first'; appliedSeq: number; count: number }
  | { status: 'applied'; appliedSeq: number; count: number }
  | { status: 'rejected' | 'ignored'; code: ErrorCode; reason: string };

export class JoinTarget {
  /** The first frame has arrived (or it resumed from its log): batches after its applied seq follow. */
  started = false;
  /** Some frame of the tail's arrived: it has had this joiner's Hello. */
  heard = false;
  /** The last frame has arrived. */
  loaded = false;
  private startSeq = 0;
  private readonly view: SnapshotView;

  /** `resumed`: it restarted from its own log and takes only what it lacks (a catch-up). */
  constructor(
    limits: SnapshotEntryLimits,
    readonly resumed = false,
  ) {
    this.view = new SnapshotView(limits);
    this.started = resumed;
  }

  /** Loads one frame into `store` and `clientHighWater` (marks only rise); `appliedSeq`: what the replica has applied. */
  take(bytes: Uint8Array, store: Store, clientHighWater: Map<number, number>, appliedSeq: number): SnapshotStep {
    const view = this.view;
    const malformed = view.open(bytes);
    if (malformed !== null) return { status: 'rejected', code: ErrorCode.malformedFrame, reason: malformed };
    if (this.loaded) return { status: 'ignored', code: ErrorCode.unexpectedFrame, reason: 'a snapshot frame after the last one' };
    if (this.resumed) {
      // The catch-up's end, once every batch through it is in; anything else is a copy of the store.
      if (!view.catchUpEnd) {
        return { status: 'rejected', code: ErrorCode.logDiverged, reason: `the tail sends a snapshot at seq ${view.appliedSeq}: it does not continue this replica's log (applied through ${appliedSeq})` };
      }
      if (view.appliedSeq !== appliedSeq) return { status: 'rejected', code: ErrorCode.sequenceGap, reason: `a catch-up that ends at seq ${view.appliedSeq} reached this replica at ${appliedSeq}` };
      this.loaded = true;
      return { status: 'applied', appliedSeq, count: 0 };
    }
    if (view.catchUpEnd) return { status: 'rejected', code: ErrorCode.protocolViolation, reason: 'the end of a catch-up, at a joiner that resumed from no log' };
    const first = !this.started;
    if (first) {
      this.started = true;
      this.startSeq = view.appliedSeq;
    } else if (view.appliedSeq !== this.startSeq) {
      return { status: 'rejected', code: ErrorCode.sequenceGap, reason: `snapshot frame from seq ${view.appliedSeq}, this snapshot started at ${this.startSeq}` };
    }
    view.applyTo(store, clientHighWater);
    if (view.last) this.loaded = true;
    return { status: first ? 'first' : 'applied', appliedSeq: view.appliedSeq, count: view.count };
  }
}
