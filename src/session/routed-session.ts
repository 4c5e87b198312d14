/**
 * The client API over many chains: each key belongs to one chain (a stable hash of its bytes,
 * native-free-core/master/key-routing.ts), and each chain has its own client session (its own
 * batches, sequence and futures). A call about one key goes to that key's session; a call about
 * many keys is split by chain, and settles when every part has. Nothing is atomic across chains.
 *
 * Routing is O(1) per key: an ASCII string is hashed as it is, any other string is encoded into a
 * scratch buffer first (no allocation); with one chain nothing is hashed at all.
 */
import type { WriteId } from '../../native-free-core/errors.js';
import { chainOf, chainOfAscii } from '../../native-free-core/master/key-routing.js';
import type { VersionedValue } from '../read-pipeline.js';
import type { ResealReport, SealingOptions } from '../sealing.js';
import type { KeyInput, ValueInput } from '../write-pipeline.js';
import type { WriteConditions } from '../conditions.js';
import type { ClientSession } from './client-session.js';
import { Watch, watchSettings, type WatchOptions } from '../watch.js';

/** What SessionApi needs of a session: one ClientSession, or many behind a router. */
export interface SessionCalls {
  put(key: KeyInput, value: ValueInput, conditions?: WriteConditions): Promise<void>;
  delete(key: KeyInput, conditions?: WriteConditions): Promise<void>;
  putMany(entries: Iterable<readonly [KeyInput, ValueInput]>): Promise<void>;
  get(key: KeyInput): Promise<Buffer | undefined>;
  getVersioned(key: KeyInput): Promise<VersionedValue | undefined>;
  setSealingKeys(sealing: SealingOptions): void;
  reseal(keys: Iterable<KeyInput>): Promise<ResealReport>;
  outcome(write: WriteId): Promise<'committed' | 'not-committed'>;
  flush(): void;
  whenIdle(): Promise<void>;
  watch(keyOrPrefix: KeyInput, options?: WatchOptions): Watch;
}

/** UTF-8 needs at most 3 bytes per UTF-16 unit. */
const UTF8_BYTES_PER_UNIT_MAX = 3;

export class RoutedSession implements SessionCalls {
  private readonly encoder = new TextEncoder();
  private scratch: Uint8Array;

  /** `sessions[c]` is chain c's; its client id names it in outcome(). */
  constructor(
    readonly sessions: readonly ClientSession[],
    private readonly keyBytesMax: number,
  ) {
    this.scratch = new Uint8Array(keyBytesMax * UTF8_BYTES_PER_UNIT_MAX);
  }

  /** The chain `key` belongs to (a key that is neither a string nor bytes goes to chain 0, which refuses it). */
  chainOf(key: KeyInput): number {
    const chains = this.sessions.length;
    if (chains === 1) return 0;
    if (typeof key === 'string') {
      const ascii = chainOfAscii(key, chains);
      if (ascii >= 0) return ascii;
      if (key.length * UTF8_BYTES_PER_UNIT_MAX > this.scratch.length) this.scratch = new Uint8Array(key.length * UTF8_BYTES_PER_UNIT_MAX);
      const { written } = this.encoder.encodeInto(key, this.scratch);
      return chainOf(this.scratch, 0, written, chains);
    }
    if (key instanceof Uint8Array) return chainOf(key, 0, key.length, chains);
    return 0;
  }

  private sessionOf(key: KeyInput): ClientSession {
    return this.sessions[this.chainOf(key)]!;
  }

  put(key: KeyInput, value: ValueInput, conditions?: WriteConditions): Promise<void> {
    return this.sessionOf(key).put(key, value, conditions);
  }

  delete(key: KeyInput, conditions?: WriteConditions): Promise<void> {
    return this.sessionOf(key).delete(key, conditions);
  }

  /** Each chain's part in one call to its session; settles when every part has (rejects with the first error). */
  async putMany(entries: Iterable<readonly [KeyInput, ValueInput]>): Promise<void> {
    if (this.sessions.length === 1) return this.sessions[0]!.putMany(entries);
    const parts = new Map<number, Array<readonly [KeyInput, ValueInput]>>();
    for (const entry of entries) {
      const chain = this.chainOf(entry[0]);
      let part = parts.get(chain);
      if (part === undefined) parts.set(chain, (part = []));
      part.push(entry);
    }
    await Promise.all([...parts].map(([chain, part]) => this.sessions[chain]!.putMany(part)));
  }

  get(key: KeyInput): Promise<Buffer | undefined> {
    return this.sessionOf(key).get(key);
  }

  getVersioned(key: KeyInput): Promise<VersionedValue | undefined> {
    return this.sessionOf(key).getVersioned(key);
  }

  setSealingKeys(sealing: SealingOptions): void {
    for (const session of this.sessions) session.setSealingKeys(sealing);
  }

  async reseal(keys: Iterable<KeyInput>): Promise<ResealReport> {
    if (this.sessions.length === 1) return this.sessions[0]!.reseal(keys);
    const parts = new Map<number, KeyInput[]>();
    for (const key of keys) {
      const chain = this.chainOf(key);
      let part = parts.get(chain);
      if (part === undefined) parts.set(chain, (part = []));
      part.push(key);
    }
    const reports = await Promise.all([...parts].map(([chain, part]) => this.sessions[chain]!.reseal(part)));
    const total: ResealReport = { examined: 0, resealed: 0, current: 0, absent: 0 };
    for (const report of reports) for (const field of Object.keys(total) as Array<keyof ResealReport>) total[field] += report[field];
    return total;
  }

  /** A write id names its chain by its client id: each chain's session has its own. */
  outcome(write: WriteId): Promise<'committed' | 'not-committed'> {
    const clientId = (write as { clientId?: unknown } | null)?.clientId;
    const session = this.sessions.find((candidate) => candidate.clientId === clientId) ?? this.sessions[0]!;
    return session.outcome(write);
  }

  flush(): void {
    for (const session of this.sessions) session.flush();
  }

  /** A watch on one key (`exact`) is on its chain; on a prefix, on every chain (keys under it may be anywhere). */
  watch(keyOrPrefix: KeyInput, options?: WatchOptions): Watch {
    const watch = new Watch(watchSettings(keyOrPrefix, options, this.keyBytesMax));
    if (watch.settings.exact) this.sessions[this.chainOf(watch.settings.prefix)]!.watch(watch);
    else for (const session of this.sessions) session.watch(watch);
    return watch;
  }

  async whenIdle(): Promise<void> {
    await Promise.all(this.sessions.map((session) => session.whenIdle()));
  }
}
