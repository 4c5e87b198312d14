/**
 * The joining replica's side of a join: it loads the tail's state from Snapshot frames, with the
 * batches the tail applied meanwhile in between them (see ./snapshot.ts and ./join-source.ts). The
 * first frame says from which seq on batches follow; each frame holds entries as they were when it
 * was cut, after every batch before it on the link, so applying both in link order converges on the
 * tail's state. The joiner serves nothing until it becomes the tail.
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
  /** The first frame has arrived: batches after its applied seq follow. */
  started = false;
  /** The last frame has arrived. */
  loaded = false;
  private startSeq = 0;
  private readonly view: SnapshotView;

  constructor(limits: SnapshotEntryLimits) {
    this.view = new SnapshotView(limits);
  }

  /** Loads one frame into `store` and `clientHighWater` (marks only rise). */
  take(bytes: Uint8Array, store: Store, clientHighWater: Map<number, number>): SnapshotStep {
    const view = this.view;
    const malformed = view.open(bytes);
    if (malformed !== null) return { status: 'rejected', code: ErrorCode.malformedFrame, reason: malformed };
    if (this.loaded) return { status: 'ignored', code: ErrorCode.unexpectedFrame, reason: 'a snapshot frame after the last one' };
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
