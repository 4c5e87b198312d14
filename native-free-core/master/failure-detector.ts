import { assert } from '../assert.js';

/**
 * Heartbeat failure detection with time passed in (TigerBeetle's fault detector shape): the
 * caller reports heartbeats and asks who is suspected at `now`, in any unit it likes (the runtime
 * passes milliseconds from a monotonic clock, the simulator its own ticks). No timers inside.
 *
 * A replica is suspected once `suspectAfter` has passed since its last heartbeat; a replica that has
 * never sent one is measured from when it was registered.
 */
export class FailureDetector {
  private readonly lastHeard = new Map<number, number>();

  constructor(private readonly suspectAfter: number) {
    assert(suspectAfter > 0, 'FailureDetector: suspectAfter must be positive');
  }

  register(replicaId: number, now: number): void {
    this.lastHeard.set(replicaId, now);
  }

  forget(replicaId: number): void {
    this.lastHeard.delete(replicaId);
  }

  heartbeat(replicaId: number, now: number): void {
    const previous = this.lastHeard.get(replicaId);
    if (previous === undefined) return; // Not a member (removed, or never registered): ignore.
    // Time passed in never runs backwards; a reordered old heartbeat must not refresh a lease.
    if (now > previous) this.lastHeard.set(replicaId, now);
  }

  /** Members whose last heartbeat is older than suspectAfter, oldest first. */
  suspects(now: number): number[] {
    const suspected: Array<[number, number]> = [];
    for (const [replicaId, heard] of this.lastHeard) {
      if (now - heard >= this.suspectAfter) suspected.push([replicaId, heard]);
    }
    return suspected.sort((a, b) => a[1] - b[1] || a[0] - b[0]).map(([replicaId]) => replicaId);
  }

  lastHeardFrom(replicaId: number): number | undefined {
    return this.lastHeard.get(replicaId);
  }
}
