/**
 * The master of a chain table whose nodes all run in one process (createChain()'s, and the
 * simulator's once it has chains): one InProcessMaster per chain (each asks the one cluster policy,
 * ./cluster-decisions.ts), the placement of the chains over the nodes (./placement.ts), and the
 * steps that carry it out (./chain-moves.ts). It decides nothing a part does not: it keeps what they
 * are told (which nodes run, which are leaving, which replica runs where), asks them until nothing
 * is left to do, and hands each decision to the runtime to carry out.
 *
 * A node is a thread (in one process) that holds one replica of each of several chains; replica
 * ids are the table's, unique across chains and never reused, and each names its node. A node that
 * fails is gone from every chain at once; a hung node is gone from every chain as soon as one
 * chain's detector says it is silent (the runtime then ends it).
 */
import { assert } from '../assert.js';
import { participants, type Configuration } from './chain-master.js';
import { atPlan, nextMoves, replan, type ChainState } from './chain-moves.js';
import { removalRefusal, type LiveHostStatus } from './cluster-decisions.js';
import { InProcessMaster, type InProcessDecision } from './in-process-master.js';
import { SlowNodeBench, type Demotion, type FailSlowSettings, type NodeLoad } from './fail-slow.js';
import type { ChainPlacement, PlacementNode } from './placement.js';

export interface TableMasterOptions {
  chains: number;
  /** Replicas per chain (while nodes allow). */
  replicas: number;
  /** The nodes at the start, all up. */
  nodes: readonly PlacementNode[];
  /** Silence after which a replica is gone, in the caller's time unit. */
  suspectAfter: number;
  now: number;
  /** Chains joining at once while the placement is carried out. */
  joinsAtOnce: number;
  /**
   * Each chain's members (nodes, head first) to start from, instead of a new placement: a table
   * restarted from its replicas' logs keeps the order its logs were written in. They are the
   * placement too, until the nodes change.
   */
  members?: ReadonlyArray<readonly string[]>;
  /** Fail-slow detection's settings (./fail-slow.ts); null: off. */
  failSlow?: FailSlowSettings | null;
}

/** What the runtime sees when it asks for decisions. */
export interface TableObservation {
  now: number;
  /** A replica's last reported progress; null before it has reported. */
  statusOf(chain: number, replicaId: number): LiveHostStatus | null;
  /** Whether silence counts now (not while a node's worker is still starting). */
  silenceCounts: boolean;
  /** Whether to move chains towards their placement now (not while the runtime shuts down). */
  moves: boolean;
  /** A node's busy time and writes applied over its replicas, for fail-slow detection; null before it has reported. */
  loadOf?(node: string): NodeLoad | null;
}

/** What a settle() found besides the decisions it had carried out. */
export interface TableNews {
  /** Leaving nodes that hold no replica any more: the runtime stops them. */
  emptied: string[];
  /** Leaving nodes that cannot leave (a chain's last replica, with nowhere to go), with the reason. */
  refused: Array<{ node: string; reason: string }>;
  /** Chains whose every member's node is down: unavailable from now on (reported once each). */
  lost: Array<{ chain: number; lastReplica: number }>;
  /**
   * Nodes a chain found silent (hung): gone from every chain now. The runtime must end them: they
   * must never act again.
   */
  hung: string[];
  /** Joins asked of the chains' masters (each starts with a 'joining' decision, or is abandoned). */
  joinsAsked: Array<{ chain: number; replicaId: number; node: string }>;
  /** Nodes found persistently slower than their peers: moved out of every chain until `until` (./fail-slow.ts). */
  demoted: Demotion[];
}

/** More rounds than this in one settle() is a loop: each round lands at least one decision. */
const SETTLE_ROUNDS_MAX = 256;

export class TableMaster {
  private readonly masters: InProcessMaster[] = [];
  private readonly nodeOfReplica = new Map<number, string>();
  private nextReplicaId = 1;
  private readonly nodes = new Map<string, PlacementNode>();
  private readonly down = new Set<string>();
  private readonly leaving = new Set<string>();
  private readonly lostChains = new Set<number>();
  private replicationFactor: number;
  private readonly joinsAtOnce: number;
  private placement: ChainPlacement[];
  /** The nodes `placement` was made for. */
  private placedFor: string;
  /** Nodes kept out of the placement for being slow (null: fail-slow demotion is off). */
  private readonly slowNodes: SlowNodeBench | null;

  constructor(options: TableMasterOptions) {
    this.replicationFactor = options.replicas;
    this.joinsAtOnce = options.joinsAtOnce;
    this.slowNodes = options.failSlow === undefined || options.failSlow === null ? null : new SlowNodeBench(options.failSlow);
    for (const node of options.nodes) this.nodes.set(node.id, node);
    if (options.members !== undefined) {
      assert(options.members.length === options.chains, 'TableMaster: members for every chain');
      for (const members of options.members) assert(members.length >= 1 && members.every((node) => this.nodes.has(node)), 'TableMaster: members must be known nodes');
    }
    this.placement = options.members?.map((members, chain) => ({ chain, members: [...members] })) ?? replan(null, options.nodes, options.chains, options.replicas);
    this.placedFor = this.plannedNodes().map((node) => node.id).join(',');
    for (const { members } of this.placement) {
      const configuration: Configuration = { epoch: 1, members: members.map((node) => this.newReplica(node)), joining: null };
      this.masters.push(new InProcessMaster({ configuration, suspectAfter: options.suspectAfter, now: options.now }));
    }
  }

  get chains(): number {
    return this.masters.length;
  }

  get replicas(): number {
    return this.replicationFactor;
  }

  /** Replicas per chain from now on (with one chain, nodes added and removed change it). */
  set replicas(count: number) {
    assert(Number.isInteger(count) && count >= 1, 'TableMaster: replicas must be a positive integer');
    this.replicationFactor = count;
    this.placedFor = '';
  }

  configuration(chain: number): Configuration {
    return this.masters[chain]!.configuration;
  }

  /** The replica a chain's master was asked to let join and has not started yet, or null. */
  newcomer(chain: number): number | null {
    return this.masters[chain]!.newcomer;
  }

  /** The members and the joiner of `chain`: every replica it waits on. */
  participants(chain: number): number[] {
    return participants(this.configuration(chain));
  }

  nodeOf(replicaId: number): string {
    const node = this.nodeOfReplica.get(replicaId);
    assert(node !== undefined, `TableMaster: replica ${replicaId} is unknown`);
    return node;
  }

  /** The replica of `chain` on `node` (a member or the joiner), or null. */
  replicaOn(chain: number, node: string): number | null {
    return this.participants(chain).find((replicaId) => this.nodeOf(replicaId) === node) ?? null;
  }

  /** Where the chains should be, for the nodes up and not leaving. */
  get plan(): readonly ChainPlacement[] {
    return this.placement;
  }

  /** Nodes moved out for being slow so far. */
  get demotions(): number {
    return this.slowNodes?.demotions ?? 0;
  }

  /** Whether `node` is kept out of the chains now for being slow. */
  isBenched(node: string): boolean {
    return this.slowNodes?.isBenched(node) ?? false;
  }

  isUp(node: string): boolean {
    return this.nodes.has(node) && !this.down.has(node);
  }

  /** A new node, up (it takes its share of chains as the placement says). */
  addNode(node: PlacementNode): void {
    assert(!this.nodes.has(node.id), `TableMaster: node ${node.id} is already known`);
    this.nodes.set(node.id, node);
  }

  /** A node's loop went round: every replica it holds is alive. */
  heartbeat(node: string, now: number): void {
    for (let chain = 0; chain < this.masters.length; chain++) {
      const replicaId = this.replicaOn(chain, node);
      if (replicaId !== null) this.masters[chain]!.heartbeat(replicaId, now);
    }
  }

  /** A node is gone (its worker failed, or hung and was ended): gone from every chain. */
  nodeFailed(node: string): void {
    this.down.add(node);
    this.leaving.delete(node);
    for (let chain = 0; chain < this.masters.length; chain++) {
      const replicaId = this.replicaOn(chain, node);
      if (replicaId !== null) this.masters[chain]!.taskFailed(replicaId);
    }
  }

  /** Asks `node` to leave: its chains are joined elsewhere, then it leaves them (see nextMoves). */
  leave(node: string): void {
    assert(this.isUp(node), `TableMaster: node ${node} is not up`);
    this.leaving.add(node);
  }

  /** Why removing `node` now would be refused by a chain's policy (its last replica), or null. */
  leaveRefusal(node: string): string | null {
    for (let chain = 0; chain < this.masters.length; chain++) {
      const replicaId = this.replicaOn(chain, node);
      const refusal = replicaId === null ? null : removalRefusal(this.configuration(chain), replicaId);
      if (refusal !== null) return refusal;
    }
    return null;
  }

  /**
   * Asks every chain's policy, and has `execute` carry out each decision, moving the chains towards
   * their placement as it goes, until nothing is left to do. Returns what the runtime must act on
   * besides the decisions.
   */
  settle(observation: TableObservation, execute: (chain: number, decision: InProcessDecision) => void): TableNews {
    const news: TableNews = { emptied: [], refused: [], lost: [], hung: [], joinsAsked: [], demoted: [] };
    this.watchSlowness(observation, news);
    for (let round = 1; ; round++) {
      assert(round <= SETTLE_ROUNDS_MAX, `TableMaster: still deciding after ${SETTLE_ROUNDS_MAX} rounds`);
      let acted = false;
      for (let chain = 0; chain < this.masters.length; chain++) {
        const master = this.masters[chain]!;
        const statusOf = (replicaId: number): LiveHostStatus | null => observation.statusOf(chain, replicaId);
        master.settle({ now: observation.now, statusOf, silenceCounts: observation.silenceCounts }, (decision) => {
          acted = true;
          execute(chain, decision);
          // Removed as failed while its node is up: the node hangs, in every chain.
          if (decision.kind !== 'reconfigure' || decision.event.kind !== 'removed' || decision.event.reason !== 'failed') return;
          const node = this.nodeOf(decision.event.replicaId);
          if (!this.isUp(node)) return;
          this.nodeFailed(node);
          news.hung.push(node);
        });
      }
      this.noteLostChains(news);
      if (observation.moves && this.step(news)) acted = true;
      if (!acted) break;
    }
    this.noteEmptied(news);
    return news;
  }

  /** Whether every chain is where the plan says, roles included: no move is left to make. */
  atPlan(): boolean {
    return atPlan({ chains: this.chainStates(), plan: this.placement, nodeOf: (replicaId) => this.nodeOf(replicaId), up: this.upNodes(), leaving: this.leaving });
  }

  private chainStates(): ChainState[] {
    return this.masters.map((master, chain) => ({ chain, configuration: master.configuration, newcomer: master.newcomer, failed: this.lostChains.has(chain) }));
  }

  private upNodes(): Set<string> {
    return new Set([...this.nodes.keys()].filter((node) => !this.down.has(node)));
  }

  /** One step of every chain towards the placement (replanned if the nodes changed); whether any was asked for. */
  private step(news: TableNews): boolean {
    const planned = this.plannedNodes();
    const key = planned.map((node) => node.id).join(',');
    if (key !== this.placedFor) {
      this.placedFor = key;
      this.placement = replan(this.placement, planned, this.masters.length, this.replicationFactor);
    }
    const moves = nextMoves({
      chains: this.chainStates(),
      plan: this.placement,
      nodeOf: (replicaId) => this.nodeOf(replicaId),
      up: this.upNodes(),
      leaving: this.leaving,
      joinsAtOnce: this.joinsAtOnce,
    });
    let asked = false;
    for (const move of moves) {
      const master = this.masters[move.chain]!;
      if (move.kind === 'refuse-leave') {
        this.leaving.delete(move.node);
        const only = master.configuration.members[0]!;
        news.refused.push({ node: move.node, reason: removalRefusal(master.configuration, only)! });
        continue;
      }
      if (move.kind === 'remove') {
        master.requestRemoval(move.replicaId);
      } else {
        const replicaId = this.newReplica(move.node);
        master.requestJoin(replicaId);
        news.joinsAsked.push({ chain: move.chain, replicaId, node: move.node });
      }
      asked = true;
    }
    return asked;
  }

  /** The nodes the placement is for: up, not leaving and not benched, in id order. */
  private plannedNodes(): PlacementNode[] {
    return [...this.nodes.values()].filter((node) => !this.down.has(node.id) && !this.leaving.has(node.id) && !this.isBenched(node.id)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * Fail-slow: a node whose quarantine is over is planned again (it joins at the tails); a node the
   * detector finds slow is benched, so the placement moves its replicas off it. One node at a time,
   * and never below two planned nodes (a chain of one would hold the only copy of every write).
   */
  private watchSlowness(observation: TableObservation, news: TableNews): void {
    if (this.slowNodes === null || observation.loadOf === undefined) return;
    this.slowNodes.release(observation.now, (node) => this.down.has(node));
    const loads = new Map<string, NodeLoad>();
    for (const node of this.plannedNodes()) {
      const holds = this.masters.some((_, chain) => this.replicaOn(chain, node.id) !== null);
      const load = holds ? observation.loadOf(node.id) : null;
      if (load !== null) loads.set(node.id, load);
    }
    // A node that reported a load is running (its task has started and not ended).
    const demotion = this.slowNodes.observe(loads, observation.now, { canMove: observation.moves, plannedNodes: this.plannedNodes().length, isHealthy: (node) => !this.down.has(node) });
    if (demotion !== null) news.demoted.push(demotion);
  }

  private newReplica(node: string): number {
    const replicaId = this.nextReplicaId++;
    this.nodeOfReplica.set(replicaId, node);
    return replicaId;
  }

  private noteLostChains(news: TableNews): void {
    for (let chain = 0; chain < this.masters.length; chain++) {
      if (this.lostChains.has(chain)) continue;
      const { members } = this.configuration(chain);
      if (members.some((replicaId) => !this.down.has(this.nodeOf(replicaId)))) continue;
      this.lostChains.add(chain);
      news.lost.push({ chain, lastReplica: members.at(-1)! });
    }
  }

  private noteEmptied(news: TableNews): void {
    for (const node of this.leaving) {
      if (this.masters.some((_, chain) => this.replicaOn(chain, node) !== null)) continue;
      this.leaving.delete(node);
      this.down.add(node);
      news.emptied.push(node);
    }
  }
}
