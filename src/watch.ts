/**
 * Watches, the client side (the replica's side is native-free-core/chain/watch-polls.ts). A Watch
 * is what watch() returns: an async iterator of committed changes to the keys under a prefix (or
 * to one key), in version order per chain, with no gap and no uncommitted change. Underneath, each
 * chain it covers has a stream: a series of polls, one at a time, each asking a replica for the
 * changes from the stream's next version on. A reply moves the stream past everything it looked
 * at, so a stream resumes anywhere (another replica, after a failover or a reconnect) by polling
 * from there again; a reply to a poll that was sent again elsewhere is dropped by its id.
 *
 * Watches of the same key or prefix that start "from now" share their stream on each chain: the
 * changes are fetched and decoded once, and each watch is handed the same change objects (their
 * key and value Buffers too: do not modify them). A shared stream polls while every watch on it has room.
 *
 * Memory is bounded at both ends: a stream polls again only while its watch holds fewer than
 * `bufferedChangesMax` changes the consumer has not taken, and a replica keeps only its bounded
 * history. A consumer too slow for that history gets DABBA_ERR_WATCH_LAGGED, with the version
 * to resume from, instead of buffering without end.
 */
import { DabbaError, ErrorCode } from '../native-free-core/errors.js';
import { Op } from '../native-free-core/wire/codec.js';
import { encodeWatchRequest, WatchReplyView, WatchStatus } from '../native-free-core/wire/watch-frames.js';
import type { ReadTarget } from './read-lanes.js';
import type { Sealer } from './sealing.js';

/** Whether two watches ask for the same changes (the same key, or prefix). */
function sameSubject(one: WatchSettings, other: WatchSettings): boolean {
  return one.exact === other.exact && Buffer.compare(one.prefix, other.prefix) === 0;
}

/** One committed change. */
export interface WatchChange {
  op: 'put' | 'delete';
  key: Buffer;
  /** The value a put wrote (opened, with the `sealing` option); undefined for a delete. */
  value: Buffer | undefined;
  /** The change's version: its write's sequence number in its chain (what getVersioned() reports). */
  version: number;
  /** The chain the key belongs to (0 with one chain). */
  chain: number;
}

export interface WatchOptions {
  /**
   * Deliver changes from this version on (default: those committed after the watch starts). A
   * number applies to every chain the watch covers; `{ [chain]: version }` gives each its own
   * (what `position()` returns, to resume a watch after a restart of the client).
   */
  fromVersion?: number | Record<number, number>;
  /** Watch this one key, not every key it prefixes (default false). */
  exact?: boolean;
  /** Changes taken from the chain but not yet by the consumer, at most (default 8192): beyond it, polling pauses. */
  bufferedChangesMax?: number;
  /** Key and value bytes one poll's reply may carry (default 256 KiB). */
  replyBytesMax?: number;
}

const BUFFERED_CHANGES_DEFAULT = 8192;
const REPLY_BYTES_DEFAULT = 256 * 1024;

/** The validated options, shared by every stream of one watch. */
export interface WatchSettings {
  prefix: Uint8Array;
  exact: boolean;
  bufferedChangesMax: number;
  replyBytesMax: number;
  fromVersion: (chain: number) => number;
}

export function watchSettings(keyOrPrefix: unknown, options: WatchOptions | undefined, keyBytesMax: number): WatchSettings {
  const prefix = typeof keyOrPrefix === 'string' ? Buffer.from(keyOrPrefix, 'utf8') : keyOrPrefix instanceof Uint8Array ? new Uint8Array(keyOrPrefix) : null;
  if (prefix === null) throw new DabbaError(ErrorCode.invalidArgument, 'watch(): the key or prefix must be a string or a Uint8Array');
  if (prefix.length > keyBytesMax) throw new DabbaError(ErrorCode.keyTooLarge, `watch(): a ${prefix.length}-byte prefix is longer than keyBytesMax (${keyBytesMax})`);
  const exact = options?.exact ?? false;
  if (typeof exact !== 'boolean') throw new DabbaError(ErrorCode.invalidArgument, 'watch(): exact must be a boolean');
  if (exact && prefix.length === 0) throw new DabbaError(ErrorCode.invalidArgument, 'watch(): an exact watch needs a key');
  const positive = (name: string, value: unknown, fallback: number): number => {
    if (value === undefined) return fallback;
    if (!Number.isSafeInteger(value) || (value as number) < 1) throw new DabbaError(ErrorCode.invalidArgument, `watch(): ${name} must be a positive integer, got ${String(value)}`);
    return value as number;
  };
  const bufferedChangesMax = positive('bufferedChangesMax', options?.bufferedChangesMax, BUFFERED_CHANGES_DEFAULT);
  const replyBytesMax = positive('replyBytesMax', options?.replyBytesMax, REPLY_BYTES_DEFAULT);
  const from = options?.fromVersion;
  const version = (value: unknown): number => {
    if (!Number.isSafeInteger(value) || (value as number) < 0) throw new DabbaError(ErrorCode.invalidArgument, `watch(): fromVersion must be a non-negative integer, got ${String(value)}`);
    return value as number;
  };
  let fromVersion: (chain: number) => number;
  if (from === undefined) fromVersion = () => 0;
  else if (typeof from === 'number') {
    const checked = version(from);
    fromVersion = () => checked;
  } else if (from !== null && typeof from === 'object') {
    const perChain = new Map<number, number>();
    for (const [chain, value] of Object.entries(from)) perChain.set(Number(chain), version(value));
    fromVersion = (chain) => perChain.get(chain) ?? 0;
  } else throw new DabbaError(ErrorCode.invalidArgument, 'watch(): fromVersion must be a number or { [chain]: version }');
  return { prefix, exact, bufferedChangesMax, replyBytesMax, fromVersion };
}

/**
 * A watch: `for await (const change of watch)`. It ends when close() is called (or the loop is
 * left), and throws when the chain is closed or fails, or with DABBA_ERR_WATCH_LAGGED.
 */
export class Watch implements AsyncIterableIterator<WatchChange> {
  private readonly queue: WatchChange[] = [];
  private queueHead = 0;
  private waiter: ((result: IteratorResult<WatchChange>) => void) | null = null;
  private failWaiter: ((error: unknown) => void) | null = null;
  private error: DabbaError | null = null;
  private closed = false;
  /** Where it stood when closed (what it had buffered was not taken). */
  private closedPosition: Record<number, number> | null = null;
  private readonly streams: WatchStream[] = [];

  constructor(readonly settings: WatchSettings) {}

  /** A chain's stream (the session that owns the chain opened it, or let it share one). */
  adopt(stream: WatchStream): void {
    this.streams.push(stream);
  }

  /** Whether it starts from now (no version given for `chain`): such a watch may share a stream. */
  startsNow(chain: number): boolean {
    return this.settings.fromVersion(chain) === 0;
  }

  /**
   * Where each chain's stream stands: the version to resume from per chain, counting only changes
   * the consumer has taken (pass it as `fromVersion` to a new watch to go on without a gap).
   */
  position(): Record<number, number> {
    if (this.closedPosition !== null) return { ...this.closedPosition };
    const position: Record<number, number> = {};
    for (const stream of this.streams) position[stream.chain] = stream.next;
    // A chain's changes queue in version order: its first one not taken is where it stands. The
    // scan ends once every chain has one (at once, with one chain; an event stream asks per change).
    const found = new Set<number>();
    for (let index = this.queueHead; index < this.queue.length && found.size < this.streams.length; index++) {
      const change = this.queue[index]!;
      if (found.has(change.chain)) continue;
      found.add(change.chain);
      position[change.chain] = change.version;
    }
    return position;
  }

  get buffered(): number {
    return this.queue.length - this.queueHead;
  }

  /** Whether a stream may poll for more now. */
  wantsMore(): boolean {
    return !this.closed && this.error === null && this.buffered < this.settings.bufferedChangesMax;
  }

  /** Changes from one reply, in order. */
  push(change: WatchChange): void {
    if (this.closed) return;
    if (this.waiter !== null) {
      const resolve = this.waiter;
      this.waiter = null;
      this.failWaiter = null;
      resolve({ value: change, done: false });
      return;
    }
    this.queue.push(change);
  }

  /** Ends the watch with `error` once the consumer has taken what came before it. */
  fail(error: DabbaError): void {
    if (this.closed || this.error !== null) return;
    this.error = error;
    for (const stream of this.streams) stream.leave(this);
    if (this.failWaiter !== null && this.buffered === 0) {
      const reject = this.failWaiter;
      this.waiter = null;
      this.failWaiter = null;
      reject(error);
    }
  }

  /** Why the watch ended (after the changes before it are taken), or null while it runs or after close(). */
  get failure(): DabbaError | null {
    return this.error;
  }

  /**
   * Every change received and not yet taken, at once and without waiting (possibly none): for a
   * consumer that takes changes in bulk rather than one promise each. Check `failure` when it is empty.
   */
  take(): WatchChange[] {
    const changes = this.queue.slice(this.queueHead);
    this.queue.length = 0;
    this.queueHead = 0;
    if (changes.length > 0) for (const stream of this.streams) stream.resume();
    return changes;
  }

  /** The next changes, at least one, as many as have arrived (waits for one if none has); rejects as next() does. */
  async nextBatch(): Promise<WatchChange[]> {
    if (this.buffered === 0) {
      const first = await this.next();
      if (first.done === true) return [];
      return [first.value, ...this.take()];
    }
    return this.take();
  }

  next(): Promise<IteratorResult<WatchChange>> {
    if (this.buffered > 0) {
      const change = this.queue[this.queueHead++]!;
      if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
        this.queue.splice(0, this.queueHead);
        this.queueHead = 0;
      }
      if (this.buffered < this.settings.bufferedChangesMax / 2) for (const stream of this.streams) stream.resume();
      return Promise.resolve({ value: change, done: false });
    }
    if (this.error !== null) return Promise.reject(this.error);
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    for (const stream of this.streams) stream.resume();
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }

  /** Stops the watch: its streams stop polling, and a waiting next() ends. */
  close(): void {
    if (this.closed) return;
    this.closedPosition = this.position();
    this.closed = true;
    for (const stream of this.streams) stream.leave(this);
    this.queue.length = 0;
    this.queueHead = 0;
    const resolve = this.waiter;
    this.waiter = null;
    this.failWaiter = null;
    resolve?.({ value: undefined, done: true });
  }

  return(): Promise<IteratorResult<WatchChange>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<WatchChange> {
    return this;
  }
}

/** The polls on one chain of one watch, or of several that share them (see the module comment). */
export class WatchStream {
  /** The next version to ask for (0: from now, until the first reply says where now is). */
  next: number;
  /** The id of the poll on its way (0: none). */
  pollId = 0;
  target: ReadTarget | null = null;
  stopped = false;
  /** The watches it delivers to (the first one's settings rule the polls). */
  readonly watches: Watch[];

  constructor(
    watch: Watch,
    readonly chain: number,
    private readonly owner: WatchStreams,
  ) {
    this.watches = [watch];
    this.next = watch.settings.fromVersion(chain);
  }

  get settings(): WatchSettings {
    return this.watches[0]!.settings;
  }

  /** Whether every watch on it has room for more. */
  wantsMore(): boolean {
    for (const watch of this.watches) if (!watch.wantsMore()) return false;
    return true;
  }

  resume(): void {
    if (!this.stopped && this.pollId === 0 && this.wantsMore()) this.owner.poll(this);
  }

  /** `watch` no longer takes changes from it; the last one to leave stops it. */
  leave(watch: Watch): void {
    const index = this.watches.indexOf(watch);
    if (index >= 0) this.watches.splice(index, 1);
    if (this.watches.length > 0) return this.resume();
    this.stopped = true;
    this.owner.forget(this);
  }
}

/**
 * One chain's watch streams in one client session: it sends their polls to the replicas that
 * answer reads (spread over them, as reads are) and hands each reply to its stream.
 */
export class WatchStreams {
  private targets: readonly ReadTarget[];
  private readonly byPoll = new Map<number, WatchStream>();
  private readonly streams = new Set<WatchStream>();
  /** Polls that found no room in their sink: sent again by pump(). */
  private readonly waiting = new Set<WatchStream>();
  private nextPollId = 1;
  private turn = 0;
  private readonly view = new WatchReplyView();

  constructor(
    readonly chain: number,
    targets: readonly ReadTarget[],
    private readonly sealer: Sealer | null,
  ) {
    this.targets = targets;
  }

  /** Opens `watch`'s stream on this chain and sends its first poll, or lets it share one (see the module comment). */
  open(watch: Watch): WatchStream {
    if (watch.startsNow(this.chain)) {
      for (const shared of this.streams) {
        if (!shared.stopped && shared.watches[0]!.startsNow(this.chain) && sameSubject(shared.settings, watch.settings)) {
          shared.watches.push(watch);
          watch.adopt(shared);
          return shared;
        }
      }
    }
    const stream = new WatchStream(watch, this.chain, this);
    watch.adopt(stream);
    stream.target = this.targets[this.turn++ % this.targets.length]!;
    this.streams.add(stream);
    this.poll(stream);
    return stream;
  }

  forget(stream: WatchStream): void {
    this.streams.delete(stream);
    this.waiting.delete(stream);
    if (stream.pollId !== 0) this.byPoll.delete(stream.pollId);
    stream.pollId = 0;
  }

  /** Sends the stream's next poll (a new id: whatever answers an earlier one is dropped). */
  poll(stream: WatchStream): void {
    if (stream.stopped || stream.target === null) return;
    if (stream.pollId !== 0) this.byPoll.delete(stream.pollId);
    const pollId = this.nextPollId++;
    stream.pollId = pollId;
    this.byPoll.set(pollId, stream);
    const { prefix, replyBytesMax } = stream.settings;
    const frame = encodeWatchRequest({ requestId: pollId, fromVersion: stream.next, bytesMax: replyBytesMax, prefix });
    const { sink, doorbell } = stream.target;
    if (!sink.tryWrite(frame)) {
      sink.markProducerWaiting();
      this.waiting.add(stream);
      return;
    }
    this.waiting.delete(stream);
    if (sink.publish()) doorbell.ring();
  }

  canPump(): boolean {
    return this.waiting.size > 0;
  }

  /** Each stream's next version, poll on its way and replica (for traces). */
  describe(): string {
    return [...this.streams].map((stream) => `from ${stream.next}, poll ${stream.pollId} at ${String(stream.target?.key)}`).join('; ');
  }

  /** Sends the polls that found no room before. */
  pump(): void {
    for (const stream of [...this.waiting]) this.poll(stream);
  }

  /**
   * The replicas that answer reads now: each stream whose replica changed (or every one, with
   * `resendAll`) polls its new one again from where it stands.
   */
  point(targets: readonly ReadTarget[], resendAll = false): void {
    if (targets.length === 0) return;
    this.targets = targets;
    let index = 0;
    for (const stream of this.streams) {
      const target = targets[index++ % targets.length]!;
      const moved = stream.target?.key !== target.key;
      stream.target = target;
      if (moved || resendAll) this.poll(stream);
    }
  }

  /** The link to `target`'s replica (re)opened: its streams poll again (a poll on it may be lost). */
  resendOn(target: ReadTarget): void {
    for (const stream of this.streams) {
      if (stream.target?.key !== target.key) continue;
      stream.target = target;
      this.poll(stream);
    }
  }

  /** One WatchReply: returns why it is not one for these streams, or null. A stale one is dropped. */
  receive(frame: Uint8Array): string | null {
    const view = this.view;
    const malformed = view.open(frame);
    if (malformed !== null) return malformed;
    const stream = this.byPoll.get(view.requestId);
    if (stream === undefined) return null;
    this.byPoll.delete(view.requestId);
    stream.pollId = 0;
    const watches = stream.watches;
    if (view.status === WatchStatus.Lagged) {
      // It polls no more: each of its watches ends, and the last to leave forgets it.
      stream.stopped = true;
      const message = `watch on chain ${this.chain}: the replica no longer holds changes from version ${stream.next}; resume from ${view.resumeVersion}`;
      for (const watch of [...watches]) watch.fail(new DabbaError(ErrorCode.watchLagged, message, { chain: this.chain, resumeVersion: view.resumeVersion }));
      return null;
    }
    // From a replica that answered a poll from `next`: nothing before it, nothing it skipped.
    if (view.throughVersion + 1 < stream.next) return `a watch reply through ${view.throughVersion}, behind the poll's version ${stream.next}`;
    const { exact, prefix } = stream.settings;
    for (let index = 0; index < view.count; index++) {
      const change = view.changeAt(index);
      if (change.version < stream.next) return `a watch reply with version ${change.version}, behind the poll's version ${stream.next}`;
      if (exact && change.keyLength !== prefix.length) continue;
      const key = Buffer.from(view.bytes.subarray(change.keyStart, change.keyStart + change.keyLength));
      let value: Buffer | undefined;
      if (change.op === Op.Put) {
        const valueStart = change.keyStart + change.keyLength;
        const bytes = view.bytes.subarray(valueStart, valueStart + change.valueLength);
        value = this.sealer === null ? Buffer.from(bytes) : this.openSealed(key, bytes, watches);
        if (value === undefined) return null;
      }
      const delivered: WatchChange = { op: change.op === Op.Put ? 'put' : 'delete', key, value, version: change.version, chain: this.chain };
      for (const watch of watches) watch.push(delivered);
    }
    stream.next = view.throughVersion + 1;
    if (stream.wantsMore()) this.poll(stream);
    return null;
  }

  private openSealed(key: Buffer, bytes: Uint8Array, watches: readonly Watch[]): Buffer | undefined {
    try {
      return this.sealer!.open(key, bytes);
    } catch (error) {
      for (const watch of [...watches]) watch.fail(error instanceof DabbaError ? error : new DabbaError(ErrorCode.corrupt, `watch: a value of ${key.toString()} does not open`));
      return undefined;
    }
  }

  /** The chain is closed or failed: every watch on it ends with `error`. */
  fail(error: DabbaError): void {
    for (const stream of [...this.streams]) for (const watch of [...stream.watches]) watch.fail(error);
  }
}
