/**
 * The cluster policy: the one place that decides what a chain's master does next (remove, evict,
 * join, hand off), as one pure function. Every master calls it: the etcd master across hosts
 * (src/master/etcd-master.ts), and the in-process master of createChain() and the simulator
 * (in-process-master.ts). Given the configuration, the replicas that are alive and their progress,
 * the handoff last requested, the removals an operator asked for, and the time, it says what to do.
 * One decision at a time: the caller executes it (across hosts with a fenced compare-and-set),
 * then asks again with what holds afterwards, so every rule can assume the previous decision has
 * landed or lost.
 *
 * What differs between one process and many hosts comes in as input, not as rules of its own:
 *  - a replica is gone when it is missing from `hosts`: its host's lease expired, or (in one
 *    process) its worker's task was rejected or its heartbeats stopped;
 *  - a replica wants to join when it is alive but not in the chain: its host registered, or (in
 *    one process) addReplica() asked for it;
 *  - an operator's removal (removeReplica()) is a request in `removalsRequested`.
 *
 * Rules, the first that applies wins:
 *  1. no configuration yet, a live host: a chain of one, the live host with the smallest host id;
 *  2. a member whose host is gone: remove it (never the last member: a chain of one whose replica
 *     is gone is unavailable, not empty, since its state was the only copy of every acknowledged
 *     write); removing the tail also abandons a join, as the joiner copies from the tail;
 *  2b. a head or middle whose successor (in this epoch) reports that its host refused a connection:
 *     its process is gone, so evict its host (revoke its lease) without waiting for the lease to
 *     run out; rule 2 then removes it. Evicting, rather than removing the member while its host
 *     still looks live, keeps rule 4 from taking the dead replica for a newcomer. Never the tail:
 *     the tail serves reads while its lease lasts, so only the lease's end may remove it. A live
 *     head or middle evicted by mistake does no harm: epochs fence whatever it still sends, and its
 *     host joins again as a new replica when it sees its lease gone;
 *  3. a joiner whose host is gone: abandon the join;
 *  3b. a member an operator asked to remove: remove it, as requested (a request that
 *     removalRefusal() refuses, such as one for the last member, changes nothing);
 *  4. no joiner, a live host that is not a member: it joins (smallest host id first);
 *  5. the joiner has loaded its snapshot in this epoch and is close behind the tail (or has been
 *     catching up long enough), and the handoff was not yet requested in this epoch: request it;
 *  6. the tail reports it is ready to hand over in this epoch: the joiner becomes the tail.
 *
 * A handoff request names its epoch: a reconfiguration in the middle of a join (a head or middle
 * failed) makes the tail forget it, so rule 5 requests it again in the new epoch.
 *
 * Host ids order the choices (rules 1 and 4) so every master decides the same way from the same
 * table. Replica ids are never reused (a restarted host gets a new one and joins again), so a live
 * host with a replica id that is not a member is always a newcomer.
 */
import { assert } from '../assert.js';
import { ChainMaster, InMemoryConfigurationStore, type Configuration, type MasterEvent } from './chain-master.js';

/** A joiner this close behind its tail (in writes) gets the handoff: a few ms of writes to drain... */
export const HANDOFF_LAG_WRITES_MAX = 8192;
/** ...or once it has been replaying this long after its snapshot (then the tail's pause is longer). */
export const HANDOFF_CATCH_UP_MS_MAX = 2000;

/** What the master needs to know of a replica's progress (a host's status in etcd; a worker's stats). */
export interface LiveHostStatus {
  /** The epoch the replica runs in: only a status of the current epoch answers rules 5 and 6. */
  epoch: number;
  appliedSeq: number;
  joinCaughtUp: boolean;
  handoffReadyEpoch: number;
  /** This replica's predecessor whose host refused a connection (its process is gone); 0 if none. */
  predecessorDown?: number;
}

/** A replica that is alive, and what runs it: a host, or in one process the replica's own worker. */
export interface LiveHost {
  hostId: string;
  replicaId: number;
  /** Null until the host has reported (or when its status belongs to an earlier replica of the host). */
  status: LiveHostStatus | null;
}

/** The master asks the tail of `epoch` to stop taking writes until `joiner` has everything. */
export interface HandoffRequest {
  epoch: number;
  joiner: number;
}

export type Decision =
  | { kind: 'initialize'; configuration: Configuration }
  /** `event.configuration` is the next configuration (epoch + 1), to install by compare-and-set. */
  | { kind: 'reconfigure'; event: MasterEvent }
  | { kind: 'request-handoff'; epoch: number; joiner: number }
  /** Revoke `hostId`'s lease: its replica's process is gone (rule 2b). */
  | { kind: 'evict'; hostId: string; replicaId: number }
  | { kind: 'none'; reason: string };

export interface DecisionInput {
  /** The stored configuration; null before the first one. */
  configuration: Configuration | null;
  /**
   * The replicas alive, in any order: hosts whose leases are alive; in one process, workers whose
   * tasks run and whose heartbeats come, plus a replica addReplica() asked for. A member missing
   * here is gone; one here that is not a member wants to join.
   */
  hosts: readonly LiveHost[];
  /** Members an operator asked to remove (removeReplica()), in the order asked. */
  removalsRequested: readonly number[];
  /** The caller's clock, in milliseconds (only differences with joinCaughtUpSince matter). */
  now: number;
  /** When the master first saw the current joiner report joinCaughtUp (see watchCatchUp); null if it has not. */
  joinCaughtUpSince: number | null;
  /** The last handoff request (in etcd, or remembered by the in-process master); null if none. */
  handoffRequested: HandoffRequest | null;
  /** The joiner gets the handoff once it is at most this many writes behind the tail... */
  handoffLagWritesMax: number;
  /** ...or once it has been catching up for this long (then the tail's pause is longer). */
  handoffCatchUpMsMax: number;
}

export function decide(input: DecisionInput): Decision {
  assert(Number.isFinite(input.now), 'decide: now must be finite');
  assert(input.handoffLagWritesMax >= 0, 'decide: handoffLagWritesMax must be >= 0');
  assert(input.handoffCatchUpMsMax >= 0, 'decide: handoffCatchUpMsMax must be >= 0');
  const hosts = [...input.hosts].sort((a, b) => compareHostIds(a.hostId, b.hostId));
  const { configuration } = input;

  // Rule 1: bootstrap.
  if (configuration === null) {
    const first = hosts[0];
    if (first === undefined) return none('no configuration and no live host');
    return { kind: 'initialize', configuration: { epoch: 1, members: [first.replicaId], joining: null } };
  }

  const hostOf = new Map<number, LiveHost>();
  for (const host of hosts) if (!hostOf.has(host.replicaId)) hostOf.set(host.replicaId, host);
  return (
    handleFailure(configuration, hostOf) ??
    removeRequested(configuration, input.removalsRequested) ??
    advanceJoin(configuration, hosts, hostOf, input)
  );
}

/**
 * Why an operator's request to remove `replicaId` cannot be met in `configuration`; null when it
 * can (rule 3b). A runtime may ask before it files the request, to refuse it at once.
 */
export function removalRefusal(configuration: Configuration, replicaId: number): string | null {
  if (!configuration.members.includes(replicaId)) return `replica ${replicaId} is not a member of the chain`;
  // Its state is the only copy of every acknowledged write (I4): a chain of one stays one.
  if (configuration.members.length === 1) return `cannot remove replica ${replicaId}: it is the last replica of the chain`;
  return null;
}

/** When the master first saw `joiner` report joinCaughtUp: rule 5's clock, kept by the caller between decisions. */
export interface CatchUpWatch {
  joiner: number;
  since: number;
}

/**
 * The catch-up clock after seeing `hosts` at `now`: it starts when the joiner first reports that
 * it has loaded its snapshot (in any epoch: a join carries on across epochs) and ends with the
 * join. Its `since` is decide()'s joinCaughtUpSince.
 */
export function watchCatchUp(
  watch: CatchUpWatch | null,
  configuration: Configuration | null,
  hosts: readonly LiveHost[],
  now: number,
): CatchUpWatch | null {
  const joiner = configuration?.joining ?? null;
  if (joiner === null) return null;
  if (watch !== null && watch.joiner === joiner) return watch;
  const caughtUp = hosts.some((host) => host.replicaId === joiner && host.status?.joinCaughtUp === true);
  return caughtUp ? { joiner, since: now } : null;
}

/** Rules 2, 2b and 3: a member or the joiner is gone. Null when every one is alive. */
function handleFailure(configuration: Configuration, hostOf: ReadonlyMap<number, LiveHost>): Decision | null {
  // Rule 2: a member is gone.
  const gone = configuration.members.find((member) => !hostOf.has(member));
  if (gone !== undefined) {
    if (configuration.members.length === 1) return none('chain unavailable: its only replica is gone');
    return reconfigure(configuration, (master) => failed(master.remove(gone)));
  }

  // Rule 2b: a head or middle whose process is gone, as its successor saw (connection refused).
  const tail = configuration.members.at(-1)!;
  for (let index = 0; index + 1 < configuration.members.length; index++) {
    const member = configuration.members[index]!;
    const successorStatus = hostOf.get(configuration.members[index + 1]!)!.status;
    if (successorStatus !== null && successorStatus.epoch === configuration.epoch && successorStatus.predecessorDown === member) {
      assert(member !== tail, 'decide: rule 2b never evicts the tail');
      return { kind: 'evict', hostId: hostOf.get(member)!.hostId, replicaId: member };
    }
  }

  // Rule 3: the joiner is gone.
  const joiner = configuration.joining;
  if (joiner !== null && !hostOf.has(joiner)) return reconfigure(configuration, (master) => master.abandonJoin());
  return null;
}

/** Rule 3b: the first removal an operator asked for that can be made. Null when there is none. */
function removeRequested(configuration: Configuration, removalsRequested: readonly number[]): Decision | null {
  const removal = removalsRequested.find((replicaId) => removalRefusal(configuration, replicaId) === null);
  return removal === undefined ? null : reconfigure(configuration, (master) => master.remove(removal));
}

/** Rules 4, 5 and 6: a newcomer joins, the tail is asked to hand over, the joiner becomes the tail. */
function advanceJoin(configuration: Configuration, hosts: readonly LiveHost[], hostOf: ReadonlyMap<number, LiveHost>, input: DecisionInput): Decision {
  // Rule 4: a newcomer joins.
  const joiner = configuration.joining;
  if (joiner === null) {
    const newcomer = hosts.find((host) => !configuration.members.includes(host.replicaId));
    if (newcomer === undefined) return none(`chain of ${configuration.members.length} complete: every live host is a member`);
    return reconfigure(configuration, (master) => master.beginJoin(newcomer.replicaId));
  }

  const tail = configuration.members.at(-1)!;
  const joinerStatus = hostOf.get(joiner)!.status;
  const tailStatus = hostOf.get(tail)!.status;

  // Rule 5: the joiner has its snapshot and is close enough behind: the tail is to hand over. The
  // tail stops taking writes from then until the joiner has everything, so wait until that pause
  // is short, or until the joiner has had long enough (one that cannot close the gap under load
  // still joins, with a longer pause).
  const requested = input.handoffRequested;
  const alreadyRequested = requested !== null && requested.epoch === configuration.epoch && requested.joiner === joiner;
  const snapshotLoaded = joinerStatus !== null && joinerStatus.epoch === configuration.epoch && joinerStatus.joinCaughtUp;
  const lagWrites = tailStatus === null || joinerStatus === null ? Number.POSITIVE_INFINITY : tailStatus.appliedSeq - joinerStatus.appliedSeq;
  const catchingUpMs = input.joinCaughtUpSince === null ? 0 : input.now - input.joinCaughtUpSince;
  const closeEnough = lagWrites <= input.handoffLagWritesMax || (input.joinCaughtUpSince !== null && catchingUpMs >= input.handoffCatchUpMsMax);
  if (snapshotLoaded && closeEnough && !alreadyRequested) return { kind: 'request-handoff', epoch: configuration.epoch, joiner };

  // Rule 6: the tail has stopped taking writes and the joiner has everything: it becomes the tail.
  // Ready in this very epoch: a tail that has not yet heard of the current configuration may still
  // report a handoff to an earlier joiner.
  if (tailStatus !== null && tailStatus.epoch === configuration.epoch && tailStatus.handoffReadyEpoch === configuration.epoch) {
    return reconfigure(configuration, (master) => master.completeJoin(joiner));
  }

  if (!snapshotLoaded) return none(`joiner ${joiner} is loading its snapshot in epoch ${configuration.epoch}`);
  if (!alreadyRequested) return none(`joiner ${joiner} is catching up: ${lagWrites} writes behind tail ${tail} after ${catchingUpMs} ms`);
  return none(`waiting for tail ${tail} to hand over to joiner ${joiner} in epoch ${configuration.epoch}`);
}

/**
 * Plain code-unit order, the same everywhere (localeCompare would depend on the locale), so two
 * masters given the same table pick the same host.
 */
function compareHostIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function none(reason: string): Decision {
  return { kind: 'none', reason };
}

/** Runs one ChainMaster change against the current configuration, in memory: the event carries the next one. */
function reconfigure(configuration: Configuration, change: (master: ChainMaster) => MasterEvent): Decision {
  const event = change(new ChainMaster(new InMemoryConfigurationStore(configuration)));
  assert(event.configuration.epoch === configuration.epoch + 1, 'decide: a reconfiguration bumps the epoch by one');
  return { kind: 'reconfigure', event };
}

/** ChainMaster.remove() reports a requested removal; here the member's host is gone. */
function failed(event: MasterEvent): MasterEvent {
  assert(event.kind === 'removed', 'decide: a removal reports removed');
  return { ...event, reason: 'failed' };
}
