/**
 * Placement of many chains over a few nodes (hosts, or worker threads in one process): the chain
 * table, chain -> ordered members (head first, tail last), as a pure function of the nodes that are
 * up (with their zones), the number of chains, the replication factor and the current table.
 *
 * What the next table keeps, in this order of priority:
 * 1. every chain has min(replicas, nodes) members, on distinct nodes, and a chain keeps every member
 *    whose node is still up (a surviving replica holds the chain's data: it never moves for balance
 *    alone while the chain is short, and at most the moves balance needs otherwise); a chain with
 *    more members than that lets go of those on the most loaded nodes;
 * 2. a chain's members are in distinct zones whenever there are at least `replicas` zones;
 * 3. every node holds replicas of the chains within one of the mean (moving as few as that needs);
 * 4. roles are balanced: every node heads within one chain of the mean, and tails within one, as
 *    far as the members allow; a chain's current order is kept where that does not stand in the way.
 *
 * A new member is placed at the tail (a replica joins a chain at its tail, from a snapshot of the
 * tail's state); the table says where the chains should be, and the runtime gets there by joins and
 * removals, chain by chain. Deterministic: ties break by node id.
 */
import { assert } from '../assert.js';

export interface PlacementNode {
  /** A node id: a host id, or a worker's number. Ids order ties, so they must be comparable. */
  id: string;
  /** Replicas of one chain go to distinct zones when there are enough zones. */
  zone: string;
}

/** One chain's members, head first, tail last. */
export interface ChainPlacement {
  chain: number;
  members: string[];
}

export interface PlacementInput {
  nodes: readonly PlacementNode[];
  chains: number;
  replicas: number;
  /** The table now (null: place from scratch). Members on nodes that are gone are dropped. */
  current: readonly ChainPlacement[] | null;
}

/** Plain code-unit order of node ids, the same everywhere (ties break by it). */
export const compareIds = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

export function place(input: PlacementInput): ChainPlacement[] {
  const { nodes, chains, replicas } = input;
  assert(Number.isInteger(chains) && chains >= 1, 'place: chains must be a positive integer');
  assert(Number.isInteger(replicas) && replicas >= 1, 'place: replicas must be a positive integer');
  assert(new Set(nodes.map((node) => node.id)).size === nodes.length, 'place: node ids must be distinct');
  const zoneOf = new Map(nodes.map((node) => [node.id, node.zone]));
  const ids = nodes.map((node) => node.id).sort(compareIds);
  const table = survivingMembers(input, zoneOf);
  if (ids.length === 0) return table;
  const size = Math.min(replicas, ids.length);
  const spreadZones = new Set(zoneOf.values()).size >= size;
  trimLongChains(table, ids, size);
  fillShortChains(table, ids, size, zoneOf, spreadZones);
  balanceReplicas(table, ids, zoneOf, spreadZones);
  balanceRoles(table, ids);
  return table;
}

/** The current table with members on nodes that are gone dropped (order kept), or empty chains. */
function survivingMembers(input: PlacementInput, zoneOf: ReadonlyMap<string, string>): ChainPlacement[] {
  const table: ChainPlacement[] = [];
  for (let chain = 0; chain < input.chains; chain++) {
    const current = input.current?.find((entry) => entry.chain === chain);
    table.push({ chain, members: (current?.members ?? []).filter((member) => zoneOf.has(member)) });
  }
  return table;
}

/** How many replicas each node holds in `table`. */
function replicaCounts(table: readonly ChainPlacement[], ids: readonly string[]): Map<string, number> {
  const counts = new Map(ids.map((id) => [id, 0]));
  for (const { members } of table) for (const member of members) counts.set(member, counts.get(member)! + 1);
  return counts;
}

/** Whether `node` may join `members` (not there yet; a zone of its own when zones are spread). */
function fits(node: string, members: readonly string[], zoneOf: ReadonlyMap<string, string>, spreadZones: boolean): boolean {
  if (members.includes(node)) return false;
  return !spreadZones || members.every((member) => zoneOf.get(member) !== zoneOf.get(node));
}

/**
 * A chain with more members than `size` (caught between a move's join and its removal, or with
 * fewer nodes than before) keeps `size` of them: it lets go of members on the most loaded nodes,
 * the one nearest the head first on a tie (a move's joiner is at the tail).
 */
function trimLongChains(table: ChainPlacement[], ids: readonly string[], size: number): void {
  const counts = replicaCounts(table, ids);
  for (const entry of table) {
    while (entry.members.length > size) {
      let drop = 0;
      for (let index = 1; index < entry.members.length; index++) if (counts.get(entry.members[index]!)! > counts.get(entry.members[drop]!)!) drop = index;
      counts.set(entry.members[drop]!, counts.get(entry.members[drop]!)! - 1);
      entry.members.splice(drop, 1);
    }
  }
}

/** Each short chain gets the least loaded nodes that fit, at its tail, until it has `size` members. */
function fillShortChains(table: ChainPlacement[], ids: readonly string[], size: number, zoneOf: ReadonlyMap<string, string>, spreadZones: boolean): void {
  const counts = replicaCounts(table, ids);
  for (const entry of table) {
    while (entry.members.length < size) {
      const candidates = ids.filter((id) => fits(id, entry.members, zoneOf, spreadZones));
      // Zones spread as far as they can: if none fits, any node not in the chain will do.
      const pool = candidates.length > 0 ? candidates : ids.filter((id) => !entry.members.includes(id));
      const chosen = leastLoaded(pool, counts);
      entry.members.push(chosen);
      counts.set(chosen, counts.get(chosen)! + 1);
    }
  }
}

function leastLoaded(pool: readonly string[], counts: ReadonlyMap<string, number>): string {
  let best = pool[0]!;
  for (const id of pool) if (counts.get(id)! < counts.get(best)!) best = id;
  return best;
}

/**
 * Moves replicas from the most loaded node to the least loaded one, one at a time (each move: the
 * node joins a chain at its tail, the other leaves it), until every node is within one of the mean
 * or no move fits the zones.
 */
function balanceReplicas(table: ChainPlacement[], ids: readonly string[], zoneOf: ReadonlyMap<string, string>, spreadZones: boolean): void {
  const counts = replicaCounts(table, ids);
  const total = [...counts.values()].reduce((sum, count) => sum + count, 0);
  for (let moves = 0; moves < total; moves++) {
    // Most loaded first, least loaded first; a move only from a node two or more above another.
    const byLoad = [...ids].sort((a, b) => counts.get(b)! - counts.get(a)! || compareIds(a, b));
    const over = byLoad.filter((id) => counts.get(id)! >= counts.get(byLoad.at(-1)!)! + 2);
    const under = [...byLoad].reverse().filter((id) => counts.get(id)! <= counts.get(byLoad[0]!)! - 2);
    const move = findMove(table, over, under, counts, zoneOf, spreadZones);
    if (move === null) return;
    const { entry, from, to } = move;
    entry.members.splice(entry.members.indexOf(from), 1);
    entry.members.push(to);
    counts.set(from, counts.get(from)! - 1);
    counts.set(to, counts.get(to)! + 1);
  }
}

/** A chain holding a node from `over` that a node from `under` two or more below it can take the place of. */
function findMove(
  table: readonly ChainPlacement[],
  over: readonly string[],
  under: readonly string[],
  counts: ReadonlyMap<string, number>,
  zoneOf: ReadonlyMap<string, string>,
  spreadZones: boolean,
): { entry: ChainPlacement; from: string; to: string } | null {
  // The least loaded node first (a newcomer takes its share before old nodes trade among themselves).
  for (const to of under) {
    for (const from of over) {
      if (counts.get(to)! + 2 > counts.get(from)!) continue;
      for (const entry of table) {
        if (!entry.members.includes(from)) continue;
        const others = entry.members.filter((member) => member !== from);
        if (fits(to, others, zoneOf, spreadZones)) return { entry, from, to };
      }
    }
  }
  return null;
}

/**
 * Orders each chain's members so heads and tails spread evenly: heads are assigned to chains as a
 * flow (each node heads between the floor and the ceiling of the mean where the members allow),
 * starting from each chain's current head, so heads move only as balance needs; then tails, the
 * same way, among each chain's other members. Middles keep their relative order.
 */
function balanceRoles(table: ChainPlacement[], ids: readonly string[]): void {
  const chainsWithRoles = table.filter((entry) => entry.members.length >= 2);
  if (chainsWithRoles.length === 0) return;
  // In chains of two, a member is the head or the tail: the roles are an orientation of each pair.
  if (chainsWithRoles.every((entry) => entry.members.length === 2)) return orientPairs(chainsWithRoles, ids);
  const heads = assignRole(chainsWithRoles.map((entry) => ({ candidates: entry.members, preferred: entry.members[0]! })), ids);
  const tails = assignRole(
    chainsWithRoles.map((entry, index) => {
      const rest = entry.members.filter((member) => member !== heads[index]);
      return { candidates: rest, preferred: rest.at(-1)! };
    }),
    ids,
  );
  chainsWithRoles.forEach((entry, index) => {
    const head = heads[index]!;
    const tail = tails[index]!;
    entry.members = [head, ...entry.members.filter((member) => member !== head && member !== tail), tail];
  });
  // Heads and tails were assigned one after the other; in a chain of two the tail follows from the
  // head, so tails can end up off balance. Swapping roles within chains fixes what remains.
  refineRoles(chainsWithRoles, ids);
}

/** The spread of the roles: the sum of squared distances of each node's heads and tails from the mean. */
function roleImbalance(heads: ReadonlyMap<string, number>, tails: ReadonlyMap<string, number>, mean: number): number {
  let sum = 0;
  for (const count of heads.values()) sum += (count - mean) ** 2;
  for (const count of tails.values()) sum += (count - mean) ** 2;
  return sum;
}

/**
 * Hill-climbing on the roles' spread: within a chain, swap the head or the tail with another member
 * whenever that lowers it. Bounded passes; deterministic order.
 */
function refineRoles(chains: readonly ChainPlacement[], ids: readonly string[]): void {
  const mean = chains.length / ids.length;
  const heads = new Map(ids.map((id) => [id, 0]));
  const tails = new Map(ids.map((id) => [id, 0]));
  for (const { members } of chains) {
    heads.set(members[0]!, heads.get(members[0]!)! + 1);
    tails.set(members.at(-1)!, tails.get(members.at(-1)!)! + 1);
  }
  for (let pass = 0; pass < ROLE_PASSES_MAX; pass++) {
    let improved = false;
    for (const entry of chains) {
      const last = entry.members.length - 1;
      for (const [first, second] of rolePositionPairs(last)) {
        const before = roleImbalance(heads, tails, mean);
        swapRoles(entry, first, second, heads, tails);
        if (roleImbalance(heads, tails, mean) < before - 1e-9) improved = true;
        else swapRoles(entry, first, second, heads, tails);
      }
    }
    if (!improved) return;
  }
}

const ROLE_PASSES_MAX = 20;

/** The position pairs whose swap changes a role: the head or the tail with any other member. */
function rolePositionPairs(last: number): Array<[number, number]> {
  const pairs: Array<[number, number]> = [];
  for (let other = 1; other <= last; other++) pairs.push([0, other]);
  for (let other = 1; other < last; other++) pairs.push([other, last]);
  return pairs;
}

function swapRoles(entry: ChainPlacement, first: number, second: number, heads: Map<string, number>, tails: Map<string, number>): void {
  const members = entry.members;
  const last = members.length - 1;
  const count = (change: number): void => {
    heads.set(members[0]!, heads.get(members[0]!)! + change);
    tails.set(members[last]!, tails.get(members[last]!)! + change);
  };
  count(-1);
  [members[first], members[second]] = [members[second]!, members[first]!];
  count(+1);
}

/**
 * Chains of two are the edges of a multigraph over the nodes; giving each its head and tail is
 * orienting the edge. Along an Euler circuit (odd-degree nodes paired up through a dummy node
 * first), every node is entered as often as it is left, so after the dummy edges go each node's
 * heads and tails differ by at most one: with replicas balanced, both are within one of the mean.
 */
function orientPairs(chains: ChainPlacement[], ids: readonly string[]): void {
  const DUMMY = '';
  const edges: Array<[string, string]> = chains.map((entry) => [entry.members[0]!, entry.members[1]!]);
  const degree = new Map<string, number>([[DUMMY, 0]]);
  for (const id of ids) degree.set(id, 0);
  for (const [a, b] of edges) {
    degree.set(a, degree.get(a)! + 1);
    degree.set(b, degree.get(b)! + 1);
  }
  for (const id of ids) if (degree.get(id)! % 2 === 1) edges.push([id, DUMMY]);
  const incident = new Map<string, number[]>([[DUMMY, []]]);
  for (const id of ids) incident.set(id, []);
  edges.forEach(([a, b], index) => {
    incident.get(a)!.push(index);
    incident.get(b)!.push(index);
  });
  const used = new Array<boolean>(edges.length).fill(false);
  const oriented = new Array<[string, string] | null>(edges.length).fill(null);
  for (const start of [...ids, DUMMY]) walkCircuits(start, edges, incident, used, oriented);
  chains.forEach((entry, index) => {
    entry.members = [...oriented[index]!];
  });
}

/** Hierholzer's walk from `start`: every unused edge reached is oriented in the direction it is crossed. */
function walkCircuits(
  start: string,
  edges: ReadonlyArray<[string, string]>,
  incident: ReadonlyMap<string, number[]>,
  used: boolean[],
  oriented: Array<[string, string] | null>,
): void {
  const next = new Map<string, number>();
  const stack = [start];
  while (stack.length > 0) {
    const node = stack.at(-1)!;
    const list = incident.get(node)!;
    let cursor = next.get(node) ?? 0;
    while (cursor < list.length && used[list[cursor]!]) cursor++;
    next.set(node, cursor);
    if (cursor === list.length) {
      stack.pop();
      continue;
    }
    const edge = list[cursor]!;
    used[edge] = true;
    const [a, b] = edges[edge]!;
    const other = a === node ? b : a;
    oriented[edge] = [node, other];
    stack.push(other);
  }
}

interface RoleChoice {
  candidates: readonly string[];
  /** The member that has the role now: kept unless balance needs otherwise. */
  preferred: string;
}

/**
 * Picks one candidate per chain so every node gets between floor(mean) and ceil(mean) chains where
 * the candidates allow: a bipartite assignment, first capped at the floor, then at the ceiling
 * (augmenting paths never take a chain from a node, so what the first pass gave stays), each pass
 * starting from the preferred candidates.
 */
function assignRole(choices: readonly RoleChoice[], ids: readonly string[]): string[] {
  const floor = Math.floor(choices.length / ids.length);
  const ceiling = Math.ceil(choices.length / ids.length);
  const assigned: Array<string | null> = choices.map(() => null);
  const load = new Map(ids.map((id) => [id, 0]));
  for (const cap of floor === ceiling ? [floor] : [floor, ceiling]) {
    choices.forEach((choice, index) => {
      if (assigned[index] === null && load.get(choice.preferred)! < cap) {
        assigned[index] = choice.preferred;
        load.set(choice.preferred, load.get(choice.preferred)! + 1);
      }
    });
    choices.forEach((_, index) => {
      if (assigned[index] === null) augment(index, choices, assigned, load, cap, new Set());
    });
  }
  // Whatever the caps could not place (the members did not allow balance) takes its preferred node.
  return choices.map((choice, index) => assigned[index] ?? choice.preferred);
}

/** Finds a node for chain `index`, moving other chains along an augmenting path if it must. */
function augment(
  index: number,
  choices: readonly RoleChoice[],
  assigned: Array<string | null>,
  load: Map<string, number>,
  cap: number,
  visited: Set<string>,
): boolean {
  const candidates = [...choices[index]!.candidates].sort((a, b) => load.get(a)! - load.get(b)! || compareIds(a, b));
  for (const node of candidates) {
    if (visited.has(node)) continue;
    visited.add(node);
    if (load.get(node)! < cap) {
      assigned[index] = node;
      load.set(node, load.get(node)! + 1);
      return true;
    }
    // The node is full: one of its chains moves to another candidate of its own, if it can.
    for (let other = 0; other < choices.length; other++) {
      if (assigned[other] !== node || other === index) continue;
      assigned[other] = null;
      load.set(node, load.get(node)! - 1);
      if (augment(other, choices, assigned, load, cap, visited)) {
        assigned[index] = node;
        load.set(node, load.get(node)! + 1);
        return true;
      }
      assigned[other] = node;
      load.set(node, load.get(node)! + 1);
    }
  }
  return false;
}
