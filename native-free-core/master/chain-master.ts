/**
 * The configuration master of one chain, as pure logic: it holds the membership (head first, tail
 * last) and the epoch, detects failures from heartbeats with time passed in, and decides
 * reconfigurations. Every decision is a new Configuration with the next epoch; the runtime stores
 * it through a ConfigurationStore (compare-and-set on the epoch, in process for createChain() and
 * in etcd for many hosts), then tells the replicas.
 *
 * Decisions (van Renesse & Schneider, OSDI 2004, section 3):
 * - head fails: its successor becomes head;
 * - tail fails: its predecessor becomes tail;
 * - middle fails: its predecessor and successor become neighbours (the predecessor then resends
 *   what the successor lacks: the successor's Hello, see ChainNode.step);
 * - join: the new replica is appended as the tail once it has caught up from the old tail;
 * - replace = join a new replica, then remove the old one.
 */
import { assert } from '../assert.js';
import { DabbaError, ErrorCode } from '../errors.js';
import { FailureDetector } from './failure-detector.js';

export interface Configuration {
  /** Increases by one with every change. */
  epoch: number;
  /** Replica ids in chain order: head first, tail last. */
  members: readonly number[];
  /** A replica copying state from the tail, not yet in the chain; null when none. */
  joining: number | null;
}

export type ChainRole = 'head' | 'middle' | 'tail' | 'solo';

export function roleIn(configuration: Configuration, replicaId: number): ChainRole | 'joining' | null {
  const index = configuration.members.indexOf(replicaId);
  if (index < 0) return configuration.joining === replicaId ? 'joining' : null;
  if (configuration.members.length === 1) return 'solo';
  if (index === 0) return 'head';
  return index === configuration.members.length - 1 ? 'tail' : 'middle';
}

export function predecessorOf(configuration: Configuration, replicaId: number): number | null {
  const index = configuration.members.indexOf(replicaId);
  return index > 0 ? configuration.members[index - 1]! : null;
}

export function successorOf(configuration: Configuration, replicaId: number): number | null {
  const index = configuration.members.indexOf(replicaId);
  return index >= 0 && index < configuration.members.length - 1 ? configuration.members[index + 1]! : null;
}

/** Where decisions are made durable. In process it is a variable; across hosts, etcd. */
export interface ConfigurationStore {
  /** Installs `next` only if the stored epoch is still `expectedEpoch`; false if another master won. */
  compareAndSet(expectedEpoch: number, next: Configuration): boolean;
  load(): Configuration;
}

export class InMemoryConfigurationStore implements ConfigurationStore {
  constructor(private current: Configuration) {}
  compareAndSet(expectedEpoch: number, next: Configuration): boolean {
    if (this.current.epoch !== expectedEpoch) return false;
    this.current = next;
    return true;
  }
  load(): Configuration {
    return this.current;
  }
}

export type MasterEvent =
  | { kind: 'removed'; replicaId: number; reason: 'failed' | 'requested'; configuration: Configuration }
  | { kind: 'joining'; replicaId: number; configuration: Configuration }
  | { kind: 'joined'; replicaId: number; configuration: Configuration };

export interface ChainMasterOptions {
  store: ConfigurationStore;
  /** Time without a heartbeat after which a member is removed, in the caller's time unit. */
  suspectAfter: number;
  now: number;
}

export class ChainMaster {
  private readonly store: ConfigurationStore;
  private readonly detector: FailureDetector;
  private current: Configuration;

  constructor(options: ChainMasterOptions) {
    this.store = options.store;
    this.current = options.store.load();
    this.detector = new FailureDetector(options.suspectAfter);
    for (const member of this.current.members) this.detector.register(member, options.now);
    if (this.current.joining !== null) this.detector.register(this.current.joining, options.now);
    assertWellFormed(this.current);
  }

  get configuration(): Configuration {
    return this.current;
  }

  heartbeat(replicaId: number, now: number): void {
    this.detector.heartbeat(replicaId, now);
  }

  /**
   * Removes every suspected member (one epoch per removal, oldest silence first), never the last
   * one: a chain of one that stops answering is unavailable, not empty, because its state is the
   * only copy of every acknowledged write (I4).
   */
  tick(now: number): MasterEvent[] {
    const events: MasterEvent[] = [];
    for (const suspect of this.detector.suspects(now)) {
      if (this.current.joining === suspect) {
        events.push(this.apply({ ...this.current, joining: null }, suspect, 'removed', 'failed'));
        continue;
      }
      if (this.current.members.length <= 1) continue;
      events.push(this.removeMember(suspect, 'failed'));
    }
    return events;
  }

  /** Removes a member on request (removeReplica, or the second half of a replace). */
  remove(replicaId: number): MasterEvent {
    if (!this.current.members.includes(replicaId)) {
      throw new DabbaError(ErrorCode.outOfRange, `replica ${replicaId} is not a member of the chain`);
    }
    if (this.current.members.length <= 1) {
      throw new DabbaError(ErrorCode.outOfRange, 'cannot remove the last replica of a chain');
    }
    return this.removeMember(replicaId, 'requested');
  }

  /** A new replica starts copying state from the tail; it joins the chain with completeJoin(). */
  beginJoin(replicaId: number, now: number): MasterEvent {
    if (this.current.joining !== null) {
      throw new DabbaError(ErrorCode.outOfRange, `replica ${this.current.joining} is already joining`);
    }
    if (this.current.members.includes(replicaId)) throw new DabbaError(ErrorCode.outOfRange, `replica ${replicaId} is already a member`);
    this.detector.register(replicaId, now);
    return this.apply({ ...this.current, joining: replicaId }, replicaId, 'joining');
  }

  /** Gives up a join (the joining replica failed or was withdrawn). */
  abandonJoin(): MasterEvent {
    const joining = this.current.joining;
    if (joining === null) throw new DabbaError(ErrorCode.outOfRange, 'no replica is joining');
    return this.apply({ ...this.current, joining: null }, joining, 'removed', 'failed');
  }

  /** The joining replica has caught up with the tail: it becomes the new tail. */
  completeJoin(replicaId: number): MasterEvent {
    if (this.current.joining !== replicaId) throw new DabbaError(ErrorCode.outOfRange, `replica ${replicaId} is not joining`);
    return this.apply({ ...this.current, members: [...this.current.members, replicaId], joining: null }, replicaId, 'joined');
  }

  private removeMember(replicaId: number, reason: 'failed' | 'requested'): MasterEvent {
    const members = this.current.members.filter((member) => member !== replicaId);
    // A joiner copies its state from the tail; if that tail goes, the join starts over.
    const joining = replicaId === this.current.members.at(-1) ? null : this.current.joining;
    if (joining === null && this.current.joining !== null) this.detector.forget(this.current.joining);
    return this.apply({ ...this.current, members, joining }, replicaId, 'removed', reason);
  }

  private apply(
    next: Omit<Configuration, 'epoch'> & { epoch: number },
    replicaId: number,
    kind: MasterEvent['kind'],
    reason: 'failed' | 'requested' = 'requested',
  ): MasterEvent {
    const configuration: Configuration = { epoch: this.current.epoch + 1, members: [...next.members], joining: next.joining };
    assertWellFormed(configuration);
    if (!this.store.compareAndSet(this.current.epoch, configuration)) {
      // Another master decided first: adopt its configuration and let the caller retry.
      this.current = this.store.load();
      throw new DabbaError(ErrorCode.staleEpoch, `configuration epoch moved on to ${this.current.epoch}`);
    }
    this.current = configuration;
    if (kind === 'removed') this.detector.forget(replicaId);
    return kind === 'removed'
      ? { kind, replicaId, reason, configuration }
      : { kind, replicaId, configuration };
  }
}

export function assertWellFormed(configuration: Configuration): void {
  assert(Number.isSafeInteger(configuration.epoch) && configuration.epoch >= 1, 'configuration: epoch must be >= 1');
  assert(configuration.members.length >= 1, 'configuration: a chain has at least one member');
  assert(new Set(configuration.members).size === configuration.members.length, 'configuration: duplicate member');
  assert(configuration.joining === null || !configuration.members.includes(configuration.joining), 'configuration: joining replica is a member');
}
