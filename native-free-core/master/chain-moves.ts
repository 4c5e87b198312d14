/**
 * Getting a chain table where the placement says it should be, one step at a time. The placement
 * (./placement.ts) says which nodes each chain should be on; each chain's master (the one policy,
 * ./cluster-decisions.ts) changes one chain one reconfiguration at a time. This decides what to ask
 * each chain's master for next:
 *
 *  - a chain missing a planned node gets a join there (the replica joins at the tail, from a
 *    snapshot), at most `joinsAtOnce` chains joining at a time across the table, so copying
 *    snapshots never starves the writes;
 *  - a chain with a member on a node that is not planned for it (a move, or a node leaving: removed
 *    by an operator) loses that member once every planned node is a member: a move is a join, then
 *    the removal of the replica it replaces, so a chain is never shorter than it must be;
 *  - a chain on the planned nodes in another order (its roles not the planned ones) has one member
 *    taken out and joined again at the tail (see memberToRotate): one chain at a time, only while
 *    every chain is whole, and only if it keeps at least two replicas meanwhile;
 *  - a chain's last member never leaves it (it holds the only copy of every write): a leaving node
 *    holding one is refused when no planned node can take its place;
 *  - nothing is asked of a chain with a join under way, or of one whose members are all gone.
 *
 * Members on nodes that are down are the masters' to remove (as failed), not this function's. A
 * pure function of its input, so the in-process engine and the simulator run the same steps.
 */
import type { Configuration } from './chain-master.js';
import { place, type ChainPlacement, type PlacementNode } from './placement.js';

export interface ChainState {
  chain: number;
  configuration: Configuration;
  /** A replica the chain's master was asked to let join and has not started yet. */
  newcomer: number | null;
  /** The chain is unavailable (its last replica is gone): nothing moves it. */
  failed: boolean;
}

export interface MovesInput {
  chains: readonly ChainState[];
  /** Where each chain should be (placement node ids), by chain. */
  plan: readonly ChainPlacement[];
  /** The placement node id of a replica's node. */
  nodeOf(replicaId: number): string;
  /** Nodes that run now (their members stay until the master removes them). */
  up: ReadonlySet<string>;
  /** Nodes asked to leave: they get no new replicas (the plan no longer has them). */
  leaving: ReadonlySet<string>;
  joinsAtOnce: number;
}

export type Move =
  | { kind: 'join'; chain: number; node: string }
  | { kind: 'remove'; chain: number; replicaId: number }
  /** A leaving node holds the last replica of `chain`: it cannot leave. */
  | { kind: 'refuse-leave'; chain: number; node: string };

/** A chain rotates a member only when it keeps two meanwhile. */
const ROTATION_MEMBERS_MIN = 3;

export function nextMoves(input: MovesInput): Move[] {
  const moves: Move[] = [];
  // Roles move only while every chain is whole and where it should be: one rotation at a time
  // (the chain it shortens is not whole until its member is back), and never beside a repair.
  let rotations = input.chains.every((state) => isWhole(state, input)) ? 1 : 0;
  // A lost chain's joiner never completes (nothing is left to copy from): it takes no join slot.
  let joins = input.chains.filter((state) => !state.failed && (state.configuration.joining !== null || state.newcomer !== null)).length;
  for (const state of input.chains) {
    const { chain, configuration } = state;
    const busy = configuration.joining !== null || state.newcomer !== null;
    if (state.failed || busy) continue;
    const wanted = input.plan[chain]?.members ?? [];
    const memberNodes = configuration.members.map((replicaId) => input.nodeOf(replicaId));
    const missing = wanted.filter((node) => input.up.has(node) && !input.leaving.has(node) && !memberNodes.includes(node));
    // A replica leaves only once every planned node is in: a chain is never shorter than it must be.
    const leaver = missing.length > 0 ? undefined : configuration.members.find((replicaId) => {
      const node = input.nodeOf(replicaId);
      return input.up.has(node) && !wanted.includes(node);
    });
    if (leaver !== undefined && configuration.members.length > 1) {
      moves.push({ kind: 'remove', chain, replicaId: leaver });
      continue;
    }
    if (leaver !== undefined && missing.length === 0) {
      moves.push({ kind: 'refuse-leave', chain, node: input.nodeOf(leaver) });
      continue;
    }
    if (joins >= input.joinsAtOnce) continue;
    if (missing.length > 0) {
      moves.push({ kind: 'join', chain, node: missing[0]! });
      joins++;
      continue;
    }
    const rotated = memberToRotate(memberNodes, wanted);
    // Never down to one replica for roles' sake: a chain of two keeps its order.
    if (rotated === null || configuration.members.length < ROTATION_MEMBERS_MIN || rotations === 0) continue;
    moves.push({ kind: 'remove', chain, replicaId: configuration.members[memberNodes.indexOf(rotated)]! });
    rotations--;
    joins++;
  }
  return moves;
}

/** Whether every chain is whole and in its planned order (chains of two: on their planned nodes). */
export function atPlan(input: Omit<MovesInput, 'joinsAtOnce'>): boolean {
  return input.chains.every((state) => {
    if (!isWhole(state, input)) return false;
    const wanted = input.plan[state.chain]!.members;
    return wanted.length < ROTATION_MEMBERS_MIN || state.configuration.members.every((replicaId, index) => input.nodeOf(replicaId) === wanted[index]);
  });
}

/** A chain with no join under way, whose members are all up and are the nodes planned for it. */
function isWhole(state: ChainState, input: Omit<MovesInput, 'joinsAtOnce'>): boolean {
  const { configuration } = state;
  if (state.failed || configuration.joining !== null || state.newcomer !== null) return false;
  const wanted = input.plan[state.chain]?.members ?? [];
  const memberNodes = configuration.members.map((replicaId) => input.nodeOf(replicaId));
  return memberNodes.length === wanted.length && memberNodes.every((node) => input.up.has(node) && wanted.includes(node));
}

/**
 * The member to take out and join again at the tail so that the chain's order comes closer to the
 * plan's (roles are part of the plan: heads and tails balanced over the nodes); null when the order
 * is the plan's. Members that stay keep their order and those that rejoin line up behind them, so
 * the longest prefix of the plan found in order among the members stays, and the rest rejoin in
 * the plan's order, the first of them now. Each is a removal and a join (a snapshot copied), and
 * counts as a join against joinsAtOnce.
 */
function memberToRotate(memberNodes: readonly string[], wanted: readonly string[]): string | null {
  if (memberNodes.length !== wanted.length || memberNodes.every((node, index) => node === wanted[index])) return null;
  let kept = 0;
  for (const node of memberNodes) if (node === wanted[kept]) kept++;
  return wanted[kept] ?? null;
}

/**
 * The placement for `nodes`, from the previous one: chains keep their members on nodes still
 * planned, and short chains are filled (see place()). With no previous placement, from scratch.
 */
export function replan(previous: readonly ChainPlacement[] | null, nodes: readonly PlacementNode[], chains: number, replicas: number): ChainPlacement[] {
  const ids = new Set(nodes.map((node) => node.id));
  const current = previous?.map(({ chain, members }) => ({ chain, members: members.filter((member) => ids.has(member)) })) ?? null;
  return place({ nodes, chains, replicas, current });
}
