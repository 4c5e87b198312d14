/**
 * The master of a chain table whose nodes are hosts (`dabba serve`), one round at a time. The
 * table lives in etcd, not here: each round is a pure function of what etcd holds (every chain's
 * configuration, with the host each replica runs on), the hosts whose leases are alive and the
 * progress they report, and the handoffs last requested. It says what to write next, and the etcd
 * master (src/master/etcd-master.ts) writes it all in one transaction, then asks again.
 *
 * It decides nothing the parts do not: each chain's next step is the one cluster policy's
 * (./cluster-decisions.ts, one decision per chain per round), the chains' places are the
 * placement's (./placement.ts), and the joins and removals that get them there are
 * ./chain-moves.ts's. What is particular to hosts:
 *  - a replica is alive while the host it was placed on holds the same registration (its
 *    `incarnation`: a host that restarts comes back empty, as a new incarnation, and its old
 *    replicas are gone) and has not given it up (a join whose link broke);
 *  - replica ids are allocated here, from `nextReplicaId`, and written with the configuration
 *    that first names them, together with their home: the host learns it runs a new replica by
 *    reading its chain's configuration;
 *  - the first table is placed over the hosts up when the caller says it is time (`bootstrap`).
 */
import { participants, type Configuration } from './chain-master.js';
import { nextMoves, replan } from './chain-moves.js';
import { decide, watchCatchUp, type CatchUpWatch, type HandoffRequest, type LiveHost, type LiveHostStatus } from './cluster-decisions.js';
import { compareIds, type ChainPlacement, type PlacementNode } from './placement.js';

/** Where a replica runs: a host, in one of its incarnations. */
export interface ReplicaHome {
  host: string;
  incarnation: string;
}

/** One chain as etcd holds it: its configuration, and the home of every member and the joiner. */
export interface ChainEntry {
  configuration: Configuration;
  homes: ReadonlyMap<number, ReplicaHome>;
}

/** A host whose lease is alive. */
export interface TableHost {
  hostId: string;
  zone: string;
  incarnation: string;
  /** The latest progress of each replica it runs, by replica id (none before its first status). */
  replicas: ReadonlyMap<number, LiveHostStatus>;
  /** Replicas it gave up while it stays up (a joiner whose link broke): gone. */
  failed: ReadonlySet<number>;
}

/** Where the chains should be, and the hosts that was worked out for. */
export interface TablePlan {
  hosts: string;
  chains: ChainPlacement[];
}

export interface TableRoundInput {
  chains: number;
  replicas: number;
  /** By chain: what etcd holds, or null before the chain was first configured. */
  entries: readonly (ChainEntry | null)[];
  hosts: readonly TableHost[];
  /** By chain: the last handoff requested, or null. */
  handoffs: readonly (HandoffRequest | null)[];
  /** By chain: rule 5's clock, as the last round left it (null at first). */
  catchUp: readonly (CatchUpWatch | null)[];
  /** The last round's plan (null at first: made from the table as it is). */
  plan: TablePlan | null;
  /** Whether chains never configured may be placed now (the caller waits a moment for hosts to register). */
  bootstrap: boolean;
  now: number;
  handoffLagWritesMax: number;
  handoffCatchUpMsMax: number;
  /** Chains joining at once while the plan is carried out. */
  joinsAtOnce: number;
  /** The first replica id no configuration has named. */
  nextReplicaId: number;
  /** Hosts kept out of the plan for being slow (fail-slow: ./fail-slow.ts): up, but their replicas move off them. */
  benched?: ReadonlySet<string>;
}

export type ChainChange =
  /** Write `entry` if the chain is still at `previousEpoch` (null: not configured yet). */
  | { kind: 'configure'; chain: number; previousEpoch: number | null; entry: ChainEntry; what: string }
  | { kind: 'request-handoff'; chain: number; request: HandoffRequest };

export interface TableRound {
  changes: ChainChange[];
  /** Hosts whose process is gone as a successor saw it (rule 2b): revoke their leases. */
  evictions: Array<{ hostId: string; replicaId: number; chain: number }>;
  /** The first replica id still unused after this round's changes. */
  nextReplicaId: number;
  catchUp: Array<CatchUpWatch | null>;
  plan: TablePlan;
  /** Why each chain that changes nothing waits, by chain (null for those that change). */
  idle: Array<string | null>;
  /** Chains with no live member: unavailable until one of their replicas' hosts... never (they restart empty). */
  lost: number[];
}

/** The node id nextMoves sees for a replica that is gone: never up. */
const GONE = '\u0000gone';

export function decideRound(input: TableRoundInput): TableRound {
  const hostById = new Map(input.hosts.map((host) => [host.hostId, host]));
  const alive = (entry: ChainEntry, replicaId: number): boolean => {
    const home = entry.homes.get(replicaId);
    const host = home === undefined ? undefined : hostById.get(home.host);
    return host !== undefined && host.incarnation === home!.incarnation && !host.failed.has(replicaId);
  };
  const nodes: PlacementNode[] = input.hosts.map((host) => ({ id: host.hostId, zone: host.zone })).sort((a, b) => compareIds(a.id, b.id));
  // A benched host stays up (its replicas serve until their replacements joined) but is not planned.
  const planned = input.benched === undefined || input.benched.size === 0 ? nodes : nodes.filter((node) => !input.benched!.has(node.id));
  const plan = planFor(input, planned, alive);
  let nextReplicaId = input.nextReplicaId;
  const round: TableRound = { changes: [], evictions: [], nextReplicaId, catchUp: [], plan, idle: [], lost: [] };

  const entryOf = new Map<number, ChainEntry>();
  for (const entry of input.entries) if (entry !== null) for (const replicaId of entry.homes.keys()) entryOf.set(replicaId, entry);
  const moves = nextMoves({
    chains: input.entries.flatMap((entry, chain) =>
      // Lost: no live member (a joiner alone has no one left to copy from).
      entry === null ? [] : [{ chain, configuration: entry.configuration, newcomer: null, failed: !entry.configuration.members.some((id) => alive(entry, id)) }],
    ),
    plan: plan.chains,
    nodeOf: (replicaId) => {
      const entry = entryOf.get(replicaId);
      return entry === undefined || !alive(entry, replicaId) ? GONE : entry.homes.get(replicaId)!.host;
    },
    up: new Set(nodes.map((node) => node.id)),
    leaving: new Set(),
    joinsAtOnce: input.joinsAtOnce,
  });

  for (let chain = 0; chain < input.chains; chain++) {
    const entry = input.entries[chain] ?? null;
    if (entry === null) {
      round.catchUp.push(null);
      const members = plan.chains[chain]?.members ?? [];
      if (!input.bootstrap || members.length === 0) {
        round.idle.push(nodes.length === 0 ? 'no host is up to place the chain on' : 'waiting for hosts to register before placing the chain');
        continue;
      }
      const homes = new Map<number, ReplicaHome>();
      const replicaIds = members.map((host) => {
        const replicaId = nextReplicaId++;
        homes.set(replicaId, { host, incarnation: hostById.get(host)!.incarnation });
        return replicaId;
      });
      const configuration: Configuration = { epoch: 1, members: replicaIds, joining: null };
      round.changes.push({ kind: 'configure', chain, previousEpoch: null, entry: { configuration, homes }, what: `placed on ${members.join(', ')}` });
      round.idle.push(null);
      continue;
    }

    const { configuration } = entry;
    const live: LiveHost[] = [];
    for (const replicaId of participants(configuration)) {
      if (!alive(entry, replicaId)) continue;
      const hostId = entry.homes.get(replicaId)!.host;
      live.push({ hostId, replicaId, status: hostById.get(hostId)!.replicas.get(replicaId) ?? null });
    }
    if (live.length === 0 || !configuration.members.some((replicaId) => alive(entry, replicaId))) round.lost.push(chain);

    const move = moves.find((candidate) => candidate.chain === chain);
    let newcomer: ReplicaHome & { replicaId: number } | null = null;
    if (move?.kind === 'join') {
      newcomer = { replicaId: nextReplicaId, host: move.node, incarnation: hostById.get(move.node)!.incarnation };
      live.push({ hostId: move.node, replicaId: newcomer.replicaId, status: null });
    }
    const catchUp = watchCatchUp(input.catchUp[chain] ?? null, configuration, live, input.now);
    round.catchUp.push(catchUp);
    const decision = decide({
      configuration,
      hosts: live,
      removalsRequested: move?.kind === 'remove' ? [move.replicaId] : [],
      now: input.now,
      joinCaughtUpSince: catchUp?.since ?? null,
      handoffRequested: input.handoffs[chain] ?? null,
      handoffLagWritesMax: input.handoffLagWritesMax,
      handoffCatchUpMsMax: input.handoffCatchUpMsMax,
    });
    switch (decision.kind) {
      case 'none':
        round.idle.push(decision.reason);
        continue;
      case 'initialize':
        // decide() initialises only a chain with no configuration: this one has one.
        round.idle.push('nothing to do');
        continue;
      case 'evict':
        round.evictions.push({ hostId: decision.hostId, replicaId: decision.replicaId, chain });
        round.idle.push(null);
        continue;
      case 'request-handoff':
        round.changes.push({ kind: 'request-handoff', chain, request: { epoch: decision.epoch, joiner: decision.joiner } });
        round.idle.push(null);
        continue;
      case 'reconfigure': {
        const next = decision.event.configuration;
        const homes = new Map<number, ReplicaHome>();
        for (const replicaId of participants(next)) {
          const home = entry.homes.get(replicaId) ?? (newcomer !== null && newcomer.replicaId === replicaId ? { host: newcomer.host, incarnation: newcomer.incarnation } : undefined);
          if (home !== undefined) homes.set(replicaId, home);
        }
        if (newcomer !== null && next.joining === newcomer.replicaId) nextReplicaId++;
        const { event } = decision;
        const what = event.kind === 'removed' ? `removed ${event.replicaId} (${event.reason})` : `${event.kind} ${event.replicaId}`;
        round.changes.push({ kind: 'configure', chain, previousEpoch: configuration.epoch, entry: { configuration: next, homes }, what });
        round.idle.push(null);
        continue;
      }
    }
  }
  round.nextReplicaId = nextReplicaId;
  return round;
}

/**
 * The plan: kept while the hosts up are the same; otherwise worked out again from the last plan
 * (or, in a new master's first round, from where the chains are), so as few chains move as can.
 */
function planFor(input: TableRoundInput, nodes: readonly PlacementNode[], alive: (entry: ChainEntry, replicaId: number) => boolean): TablePlan {
  const hosts = nodes.map((node) => node.id).join(',');
  if (input.plan !== null && input.plan.hosts === hosts && input.plan.chains.length === input.chains) return input.plan;
  const previous =
    input.plan?.chains ??
    input.entries.map((entry, chain) => ({
      chain,
      // Members only: a joiner on its way in is the plan's to keep or not.
      members: entry === null ? [] : entry.configuration.members.filter((id) => alive(entry, id)).map((id) => entry.homes.get(id)!.host),
    }));
  return { hosts, chains: replan(previous, nodes, input.chains, input.replicas) };
}

