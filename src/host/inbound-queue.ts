/**
 * Frames from sockets on their way into one of the replica's inbound rings. A socket cannot be
 * paused (uWS has no pause for WebSockets), so when the ring is full frames wait here, in order,
 * up to a byte limit. What bounds them is the sender's own window: a predecessor sends at most
 * its in-flight log ahead of our acks, a client at most its pending-writes limit. A sender that
 * exceeds the limit anyway is misbehaving, and the caller closes its link.
 */
export class InboundQueue {
  private readonly frames: Uint8Array[] = [];
  private head = 0;
  private bytes = 0;

  constructor(
    private readonly push: (frame: Uint8Array) => boolean,
    readonly bytesMax: number,
  ) {}

  get waitingBytes(): number {
    return this.bytes;
  }

  /**
   * Hands `frame` on now if nothing waits and the ring has room, else keeps a copy. False if the
   * limit would be exceeded (nothing was kept).
   */
  offer(frame: Uint8Array): boolean {
    if (this.head === this.frames.length && this.push(frame)) return true;
    if (this.bytes + frame.length > this.bytesMax) return false;
    this.frames.push(frame.slice());
    this.bytes += frame.length;
    return true;
  }

  /** Moves waiting frames into the ring while it has room (call when the replica freed some). */
  drain(): void {
    while (this.head < this.frames.length && this.push(this.frames[this.head]!)) {
      this.bytes -= this.frames[this.head]!.length;
      this.head++;
    }
    if (this.head === this.frames.length) {
      this.frames.length = 0;
      this.head = 0;
    } else if (this.head > 1024) {
      this.frames.splice(0, this.head);
      this.head = 0;
    }
  }

  get isEmpty(): boolean {
    return this.head === this.frames.length;
  }
}
