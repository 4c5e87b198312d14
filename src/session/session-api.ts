/**
 * The client API that createChain()'s Chain and connect()'s RemoteClient share, word for word: each
 * call goes to the engine's ClientSession (./client-session.ts), or with many chains to the key's
 * chain's session (./routed-session.ts). An engine adds only what is its
 * own (membership and chaos in one process, links and views across hosts).
 */
import { EventEmitter } from 'node:events';
import type { WriteId } from '../../native-free-core/errors.js';
import type { SealingOptions } from '../options.js';
import type { WriteConditions } from '../conditions.js';
import type { VersionedValue } from '../read-pipeline.js';
import type { ResealReport } from '../sealing.js';
import type { KeyInput, ValueInput } from '../write-pipeline.js';
import type { SessionCalls } from './routed-session.js';
import type { Watch, WatchOptions } from '../watch.js';

export abstract class SessionApi extends EventEmitter {
  protected abstract readonly session: SessionCalls;

  /**
   * Writes `value` under `key` (sealed first, with the `sealing` option); resolves when the tail has
   * applied it. With `{ ifVersion }` or `{ ifAbsent: true }` the write applies only if the key is at
   * that version (getVersioned()) or absent when the chain gets to it; else it rejects with
   * DABBA_ERR_CONDITION_FAILED, its `currentVersion` the key's (0: absent). See ../conditions.ts.
   */
  put(key: KeyInput, value: ValueInput, conditions?: WriteConditions): Promise<void> {
    return this.session.put(key, value, conditions);
  }

  /** Deletes `key` (with `{ ifVersion }`: only if the key is at that version). */
  delete(key: KeyInput, conditions?: WriteConditions): Promise<void> {
    return this.session.delete(key, conditions);
  }

  /**
   * Writes every entry (in order) with one promise for all: it resolves when all are acknowledged
   * and rejects with the first error of any, like Promise.all over their puts, without a promise
   * per write. A refused entry (bad size, overload) rejects the call; the others are still written.
   */
  putMany(entries: Iterable<readonly [KeyInput, ValueInput]>): Promise<void> {
    return this.session.putMany(entries);
  }

  /** The value of `key` at the tail, or undefined if it has none. */
  get(key: KeyInput): Promise<Buffer | undefined> {
    return this.session.get(key);
  }

  /**
   * The value and version (the sequence number of the write that produced it). With the `sealing`
   * option, a value that does not open rejects with DABBA_ERR_CORRUPT.
   */
  getVersioned(key: KeyInput): Promise<VersionedValue | undefined> {
    return this.session.getVersioned(key);
  }

  /**
   * Key rotation, with the `sealing` option: replaces the key set; new writes are sealed under
   * `sealing.current`, and a stored value opens while its version's key is in the set.
   */
  setSealingKeys(sealing: SealingOptions): void {
    this.session.setSealingKeys(sealing);
  }

  /**
   * Re-seals under the current key version every key of `keys` whose value was sealed under an
   * older one (read, then write back). Not atomic: a write to the same key between the read and the
   * write back is overwritten with the older value. See SealedValues.reseal.
   */
  reseal(keys: Iterable<KeyInput>): Promise<ResealReport> {
    return this.session.reseal(keys);
  }

  /**
   * The outcome of a write that failed with DABBA_ERR_OUTCOME_UNKNOWN (its error's `write`), or of
   * any write of this client by id: 'committed' once the tail has acknowledged it, 'not-committed'
   * when it cannot be any more (closed, and the tail's last acks drained, or the write never left
   * this thread). While the chain runs, a write it was sent is retried until it commits, so this
   * waits for that. Rejects with DABBA_ERR_OUTCOME_UNKNOWN when nothing is left that could say.
   */
  outcome(write: WriteId): Promise<'committed' | 'not-committed'> {
    return this.session.outcome(write);
  }

  /** Sends the open batches now instead of at the end of the event-loop turn. */
  flush(): void {
    this.session.flush();
  }

  /** Resolves when every write and read issued so far has been answered. */
  whenIdle(): Promise<void> {
    return this.session.whenIdle();
  }

  /**
   * The committed changes to every key under `keyOrPrefix` (or to that key alone, with `exact`),
   * as an async iterator: in version order per chain, each exactly once, with no uncommitted one,
   * across failovers and reconnects. From the changes committed after it starts, or from
   * `fromVersion`. Leave the loop or call close() to stop it. It throws DABBA_ERR_WATCH_LAGGED
   * (with `resumeVersion`) if it falls behind what the replicas still hold. See ../watch.ts.
   */
  watch(keyOrPrefix: KeyInput, options?: WatchOptions): Watch {
    return this.session.watch(keyOrPrefix, options);
  }
}
