/**
 * The configuration of one chain and the changes it can go through, as pure logic: it holds the
 * membership (head first, tail last) and the epoch, and makes each change a new Configuration with
 * the next epoch, installed through a ConfigurationStore (compare-and-set on the epoch). Which
 * change to make, and when, is the cluster policy's (cluster-decisions.ts): this only makes it.
 *
 * Changes (van Renesse & Schneider, OSDI 2004, section 3):
 * - head fails: its successor becomes head;
 * - tail fails: its predecessor becomes tail;
 * - middle fails: its predecessor and successor become neighbours (the predecessor then resends
 *   what the successor lacks: the successor's Hello, see ChainNode.step);
 * - join: the new replica is appended as the tail once it has caught up from the old tail;
 * - replace = join a new replica, then remove the old one.
 */
import { assert } from '../assert.js';
import { DabbaError, ErrorCode } from '../errors.js';

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

/** The members, head first, then the joiner: every replica the chain waits on. */
export function participants(configuration: Configuration): number[] {
  return configuration.joining === null ? [...configuration.members] : [...configuration.members, configuration.joining];
}

export function predecessorOf(configuration: Configuration, replicaId: number): number | null {
  const index = configuration.members.indexOf(replicaId);
  return index > 0 ? configuration.members[index - 1]! : null;
}

/** The roles that serve reads and acknowledge clients: the tail, or a chain of one. */
export function servesReads(role: ChainRole | 'joining' | null): boolean {
  return role === 'tail' || role === 'solo';
}

/**
 * The roles that answer clients' reads: the tail (or a chain of one), or with reads at any replica
 * (CRAQ) every member; never a joiner.
 */
export function answersReads(role: ChainRole | 'joining' | null, readsAtAnyReplica: boolean): boolean {
  return servesReads(role) || (readsAtAnyReplica && role !== null && role !== 'joining');
}

/** The roles that take clients' writes and order them: the head, or a chain of one. */
export function ordersWrites(role: ChainRole | 'joining' | null): boolean {
  return role === 'head' || role === 'solo';
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

export class ChainMaster {
  private readonly store: ConfigurationStore;
  private current: Configuration;

  constructor(store: ConfigurationStore) {
    this.store = store;
    this.current = store.load();
    assertWellFormed(this.current);
  }

  get configuration(): Configuration {
    return this.current;
  }

  /** Removes a member (reported as requested: the caller says otherwise when it failed). */
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
  beginJoin(replicaId: number): MasterEvent {
    if (this.current.joining !== null) {
      throw new DabbaError(ErrorCode.outOfRange, `replica ${this.current.joining} is already joining`);
    }
    if (this.current.members.includes(replicaId)) throw new DabbaError(ErrorCode.outOfRange, `replica ${replicaId} is already a member`);
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
