/**
 * The decision rules of the multi-host configuration master, as one pure function: given what
 * etcd holds (the configuration, the live hosts and their statuses, the last handoff request) and
 * the time, what the master does next. One decision at a time: the runtime (src/master/
 * etcd-master.ts) executes it with a fenced compare-and-set, then asks again with what etcd holds
 * afterwards, so every rule can assume the previous decision has landed or lost.
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

/** What the master needs to know of a replica's progress (from the host's status in etcd). */
export interface LiveHostStatus {
  /** The epoch the replica runs in: only a status of the current epoch answers rules 5 and 6. */
  epoch: number;
  appliedSeq: number;
  joinCaughtUp: boolean;
  handoffReadyEpoch: number;
  /** This replica's predecessor whose host refused a connection (its process is gone); 0 if none. */
  predecessorDown?: number;
}

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
  /** The hosts whose leases are alive (in any order). */
  hosts: readonly LiveHost[];
  /** The caller's clock, in milliseconds (only differences with joinCaughtUpSince matter). */
  now: number;
  /** When the master first saw the current joiner report joinCaughtUp; null if it has not. */
  joinCaughtUpSince: number | null;
  /** The last handoff request in etcd; null if none. */
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

  // Rule 2: a member is gone.
  const gone = configuration.members.find((member) => !hostOf.has(member));
  if (gone !== undefined) {
    if (configuration.members.length === 1) return none('chain unavailable: its only replica is gone');
    return reconfigure(configuration, input.now, (master) => failed(master.remove(gone)));
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
  if (joiner !== null && !hostOf.has(joiner)) return reconfigure(configuration, input.now, (master) => master.abandonJoin());

  // Rule 4: a newcomer joins.
  if (joiner === null) {
    const newcomer = hosts.find((host) => !configuration.members.includes(host.replicaId));
    if (newcomer === undefined) return none(`chain of ${configuration.members.length} complete: every live host is a member`);
    return reconfigure(configuration, input.now, (master) => master.beginJoin(newcomer.replicaId, input.now));
  }

  const joinerStatus = hostOf.get(joiner)!.status;
  const tailStatus = hostOf.get(tail)!.status;

  // Rule 5: the joiner has its snapshot and is close enough behind: the tail is to hand over.
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
    return reconfigure(configuration, input.now, (master) => master.completeJoin(joiner));
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
function reconfigure(configuration: Configuration, now: number, change: (master: ChainMaster) => MasterEvent): Decision {
  // Failure detection is the hosts' leases here, not ChainMaster's heartbeats: it never suspects anyone.
  const master = new ChainMaster({ store: new InMemoryConfigurationStore(configuration), suspectAfter: Number.POSITIVE_INFINITY, now });
  const event = change(master);
  assert(event.configuration.epoch === configuration.epoch + 1, 'decide: a reconfiguration bumps the epoch by one');
  return { kind: 'reconfigure', event };
}

/** ChainMaster.remove() reports a requested removal; here the member's host is gone. */
function failed(event: MasterEvent): MasterEvent {
  assert(event.kind === 'removed', 'decide: a removal reports removed');
  return { ...event, reason: 'failed' };
}
