/**
 * Placement of many chains over nodes (native-free-core/master/placement.ts), by property over
 * random clusters: sizes and distinct members, zone spread, replicas and roles balanced within one
 * of the mean, and movement bounded when a node joins or leaves.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { place, type ChainPlacement, type PlacementNode } from '../native-free-core/master/placement.js';
import { mulberry32 } from './helpers/prng.js';

interface Cluster {
  nodes: PlacementNode[];
  chains: number;
  replicas: number;
}

function randomCluster(random: () => number): Cluster {
  const zones = 1 + Math.floor(random() * 4);
  const count = 1 + Math.floor(random() * 8);
  // Half the clusters spread nodes evenly over zones, the others at random.
  const even = random() < 0.5;
  const nodes = Array.from({ length: count }, (_, index) => ({
    id: `n${String(index).padStart(2, '0')}`,
    zone: `z${even ? index % zones : Math.floor(random() * zones)}`,
  }));
  return { nodes, chains: 1 + Math.floor(random() * 64), replicas: 1 + Math.floor(random() * 4) };
}

function counts(table: readonly ChainPlacement[], nodes: readonly PlacementNode[], pick: (members: string[]) => string[]): Map<string, number> {
  const result = new Map(nodes.map((node) => [node.id, 0]));
  for (const { members } of table) for (const member of pick(members)) result.set(member, result.get(member)! + 1);
  return result;
}

/** Whether the zones let replicas spread evenly: no zone constraint, or as many nodes in every zone. */
function zonesAllowBalance(cluster: Cluster): boolean {
  const size = Math.min(cluster.replicas, cluster.nodes.length);
  const perZone = new Map<string, number>();
  for (const node of cluster.nodes) perZone.set(node.zone, (perZone.get(node.zone) ?? 0) + 1);
  return perZone.size < size || new Set(perZone.values()).size === 1;
}

function checkTable(cluster: Cluster, table: readonly ChainPlacement[], label: string): void {
  const size = Math.min(cluster.replicas, cluster.nodes.length);
  const zoneOf = new Map(cluster.nodes.map((node) => [node.id, node.zone]));
  const zones = new Set(zoneOf.values()).size;
  assert.equal(table.length, cluster.chains, label);
  for (const { chain, members } of table) {
    assert.equal(members.length, size, `${label}: chain ${chain} has ${members.length} members`);
    assert.equal(new Set(members).size, size, `${label}: chain ${chain} repeats a node`);
    if (zones >= size) assert.equal(new Set(members.map((member) => zoneOf.get(member))).size, size, `${label}: chain ${chain} shares a zone`);
  }
  if (!zonesAllowBalance(cluster)) return;
  const mean = (cluster.chains * size) / cluster.nodes.length;
  for (const [node, count] of counts(table, cluster.nodes, (members) => members)) {
    assert.ok(Math.abs(count - mean) < 1, `${label}: ${node} holds ${count} replicas, mean ${mean.toFixed(2)}`);
  }
  if (size < 2) return;
  const roleMean = cluster.chains / cluster.nodes.length;
  for (const [role, pick] of [['heads', (members: string[]) => [members[0]!]], ['tails', (members: string[]) => [members.at(-1)!]]] as const) {
    for (const [node, count] of counts(table, cluster.nodes, pick)) {
      assert.ok(Math.abs(count - roleMean) <= 1, `${label}: ${node} ${role} ${count} chains, mean ${roleMean.toFixed(2)}`);
    }
  }
}

/** Memberships (chain, node) in `after` that `before` did not have. */
function joins(before: readonly ChainPlacement[], after: readonly ChainPlacement[]): number {
  let added = 0;
  for (const { chain, members } of after) {
    const previous = new Set(before.find((entry) => entry.chain === chain)?.members ?? []);
    for (const member of members) if (!previous.has(member)) added++;
  }
  return added;
}

test('from scratch: right sizes, distinct members, zones spread, replicas and roles balanced (2,000 clusters)', () => {
  const random = mulberry32(1);
  for (let trial = 0; trial < 2000; trial++) {
    const cluster = randomCluster(random);
    checkTable(cluster, place({ ...cluster, current: null }), `trial ${trial} ${JSON.stringify(cluster)}`);
  }
});

test('a node leaves: every chain is whole again and balanced, with at most about twice its replicas moved (2,000 clusters)', () => {
  const random = mulberry32(2);
  for (let trial = 0; trial < 2000; trial++) {
    const cluster = randomCluster(random);
    if (cluster.nodes.length < 2) continue;
    const before = place({ ...cluster, current: null });
    const gone = cluster.nodes[Math.floor(random() * cluster.nodes.length)]!;
    const remaining = { ...cluster, nodes: cluster.nodes.filter((node) => node !== gone) };
    const after = place({ ...remaining, current: before });
    const label = `trial ${trial}: ${gone.id} left ${JSON.stringify(cluster)}`;
    checkTable(remaining, after, label);
    const lost = before.filter(({ members }) => members.includes(gone.id)).length;
    const added = joins(before, after);
    assert.ok(added <= 2 * lost + 1, `${label}: ${added} joins to replace ${lost} replicas`);
  }
});

test('a node joins: it takes about its share, and no more moves than that (2,000 clusters)', () => {
  const random = mulberry32(3);
  for (let trial = 0; trial < 2000; trial++) {
    const cluster = randomCluster(random);
    const before = place({ ...cluster, current: null });
    const newcomer = { id: 'n99', zone: cluster.nodes[Math.floor(random() * cluster.nodes.length)]!.zone };
    const grown = { ...cluster, nodes: [...cluster.nodes, newcomer] };
    const after = place({ ...grown, current: before });
    const label = `trial ${trial}: n99 joined ${JSON.stringify(cluster)}`;
    checkTable(grown, after, label);
    const size = Math.min(grown.replicas, grown.nodes.length);
    const share = Math.ceil((cluster.chains * size) / grown.nodes.length);
    const added = joins(before, after);
    // The newcomer's share, plus the chains that grow because there are more nodes than before.
    const grownChains = size > Math.min(cluster.replicas, cluster.nodes.length) ? cluster.chains : 0;
    // With zones that let replicas spread evenly, the newcomer's share is all that moves; with
    // uneven zones, balancing may take a shuffle among the others too, bounded by as much again.
    const bound = zonesAllowBalance(grown) ? share + grownChains : 2 * share + grownChains;
    assert.ok(added <= bound, `${label}: ${added} joins, share ${share}, bound ${bound}`);
  }
});

test('the same input gives the same table (ties break by node id)', () => {
  const nodes = [{ id: 'b', zone: 'x' }, { id: 'a', zone: 'y' }, { id: 'c', zone: 'x' }];
  const first = place({ nodes, chains: 9, replicas: 2, current: null });
  const second = place({ nodes: [...nodes].reverse(), chains: 9, replicas: 2, current: null });
  assert.deepEqual(first, second);
});
