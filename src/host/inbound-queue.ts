/**
 * Frames from sockets on their way into one of the node's inbound rings, each for its chain. A socket cannot be
 * paused (uWS has no pause for WebSockets), so when the ring is full frames wait here, in order,
 * up to a byte limit for the queue and a smaller one for each connection (its InboundBudget). What
 * keeps a well-behaved sender under its budget is its own window: a predecessor sends at most its
 * in-flight log ahead of our acks, a client at most its unacknowledged-bytes window. A sender that
 * exceeds its budget anyway is misbehaving, and the caller closes its link; one connection can
 * never take the whole queue from the others.
 */
export class InboundBudget {
  /** Bytes of this connection's frames waiting in queues now. */
  waitingBytes = 0;

  constructor(readonly bytesMax: number) {}
}

export class InboundQueue {
  private readonly frames: Uint8Array[] = [];
  private readonly chains: number[] = [];
  private readonly owners: InboundBudget[] = [];
  private head = 0;
  private bytes = 0;

  constructor(
    private readonly push: (chain: number, frame: Uint8Array) => boolean,
    readonly bytesMax: number,
  ) {}

  get waitingBytes(): number {
    return this.bytes;
  }

  /**
   * Hands `frame` on now if nothing waits and the ring has room, else keeps a copy charged to
   * `owner`. False if the queue's or the owner's limit would be exceeded (nothing was kept).
   */
  offer(chain: number, frame: Uint8Array, owner: InboundBudget): boolean {
    if (this.head === this.frames.length && this.push(chain, frame)) return true;
    if (this.bytes + frame.length > this.bytesMax || owner.waitingBytes + frame.length > owner.bytesMax) return false;
    this.frames.push(frame.slice());
    this.chains.push(chain);
    this.owners.push(owner);
    this.bytes += frame.length;
    owner.waitingBytes += frame.length;
    return true;
  }

  /** Moves waiting frames into the ring while it has room (call when the replica freed some). */
  drain(): void {
    while (this.head < this.frames.length && this.push(this.chains[this.head]!, this.frames[this.head]!)) {
      const length = this.frames[this.head]!.length;
      this.bytes -= length;
      this.owners[this.head]!.waitingBytes -= length;
      this.head++;
    }
    if (this.head === this.frames.length) {
      this.frames.length = 0;
      this.chains.length = 0;
      this.owners.length = 0;
      this.head = 0;
    } else if (this.head > 1024) {
      this.frames.splice(0, this.head);
      this.chains.splice(0, this.head);
      this.owners.splice(0, this.head);
      this.head = 0;
    }
  }

  get isEmpty(): boolean {
    return this.head === this.frames.length;
  }
}
