/**
 * The steps from a chain table to its placement (native-free-core/master/chain-moves.ts): carried
 * out on a model of the chains (a join lands as the new tail, a removal drops the member), the
 * steps reach the placement for random clusters, never join more chains at once than allowed,
 * never leave a chain empty, never shorten a chain for a move before its replacement is in, and
 * rotate a chain whose roles are not the planned ones only while it keeps two replicas.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Configuration } from '../native-free-core/master/chain-master.js';
import { nextMoves, replan, type ChainState } from '../native-free-core/master/chain-moves.js';
import type { ChainPlacement } from '../native-free-core/master/placement.js';
import { mulberry32 } from './helpers/prng.js';

interface Model {
  chains: ChainState[];
  nodeOfReplica: Map<number, string>;
  nextReplica: number;
}

function modelOf(plan: readonly ChainPlacement[]): Model {
  const model: Model = { chains: [], nodeOfReplica: new Map(), nextReplica: 1 };
  for (const { chain, members } of plan) {
    const ids = members.map((node) => {
      model.nodeOfReplica.set(model.nextReplica, node);
      return model.nextReplica++;
    });
    model.chains.push({ chain, configuration: { epoch: 1, members: ids, joining: null }, newcomer: null, failed: false });
  }
  return model;
}

const nodes = (count: number, first = 1): Array<{ id: string; zone: string }> =>
  Array.from({ length: count }, (_, index) => ({ id: `n${String(first + index).padStart(2, '0')}`, zone: `z${(first + index) % 2}` }));

/** Runs steps until none is left; each join lands at once. Returns the steps taken. */
function converge(model: Model, plan: readonly ChainPlacement[], up: Set<string>, leaving: Set<string>, joinsAtOnce = 2): number {
  for (let steps = 0; ; steps++) {
    assert.ok(steps < 10_000, 'still moving after 10,000 steps');
    const moves = nextMoves({ chains: model.chains, plan, nodeOf: (id) => model.nodeOfReplica.get(id)!, up, leaving, joinsAtOnce });
    if (moves.length === 0) return steps;
    assert.ok(moves.filter((move) => move.kind === 'join').length <= joinsAtOnce, 'too many joins at once');
    for (const move of moves) {
      const state = model.chains[move.chain]!;
      assert.ok(move.kind !== 'refuse-leave', `refused: ${JSON.stringify(move)}`);
      const configuration: Configuration = state.configuration;
      if (move.kind === 'remove') {
        const planned = plan[move.chain]!.members;
        const rotation = planned.includes(model.nodeOfReplica.get(move.replicaId)!);
        if (rotation) assert.ok(configuration.members.length >= 3, `chain ${move.chain} rotated down to one replica`);
        // A replica is removed only once every planned node is in (a move, or a node leaving).
        for (const wanted of planned) assert.ok(configuration.members.some((id) => model.nodeOfReplica.get(id) === wanted), `chain ${move.chain} shortened before ${wanted} joined`);
        assert.ok(configuration.members.length > 1, 'a chain lost its last member');
        state.configuration = { epoch: configuration.epoch + 1, members: configuration.members.filter((id) => id !== move.replicaId), joining: null };
      } else {
        model.nodeOfReplica.set(model.nextReplica, move.node);
        state.configuration = { epoch: configuration.epoch + 1, members: [...configuration.members, model.nextReplica++], joining: null };
      }
    }
  }
}

/** Every chain on its planned nodes, in the planned order (roles), except chains of two, which keep theirs. */
function assertAt(model: Model, plan: readonly ChainPlacement[]): void {
  for (const { chain, members } of plan) {
    const actual = model.chains[chain]!.configuration.members.map((id) => model.nodeOfReplica.get(id)!);
    if (members.length < 3) assert.deepEqual([...actual].sort(), [...members].sort(), `chain ${chain}`);
    else assert.deepEqual(actual, members, `chain ${chain}`);
  }
}

test('a node added: the steps reach the new placement, a join and then a removal per moved chain', () => {
  const random = mulberry32(5);
  for (let round = 0; round < 300; round++) {
    const count = 3 + Math.floor(random() * 5);
    const chains = 1 + Math.floor(random() * 40);
    const replicas = 1 + Math.floor(random() * 3);
    const before = replan(null, nodes(count), chains, replicas);
    const model = modelOf(before);
    const after = replan(before, nodes(count + 1), chains, replicas);
    const steps = converge(model, after, new Set(nodes(count + 1).map((node) => node.id)), new Set());
    assertAt(model, after);
    // A join and a removal per moved chain, and one rotation (a removal and a join) per role out of place at most.
    assert.ok(steps <= 2 * chains * (1 + replicas) + 1, `${steps} steps for ${chains} chains`);
  }
});

test('a node gone: the chains it was in are filled on the others', () => {
  const random = mulberry32(6);
  for (let round = 0; round < 300; round++) {
    const count = 4 + Math.floor(random() * 4);
    const chains = 1 + Math.floor(random() * 40);
    const before = replan(null, nodes(count), chains, 3);
    const model = modelOf(before);
    const gone = `n${String(1 + Math.floor(random() * count)).padStart(2, '0')}`;
    // The master removed the gone node's replicas (as failed) before any step.
    for (const state of model.chains) {
      const members = state.configuration.members.filter((id) => model.nodeOfReplica.get(id) !== gone);
      state.configuration = { epoch: 2, members, joining: null };
    }
    const left = nodes(count).filter((node) => node.id !== gone);
    const after = replan(before, left, chains, 3);
    converge(model, after, new Set(left.map((node) => node.id)), new Set());
    assertAt(model, after);
  }
});

test('a leaving node loses its replicas once their replacements are in, a busy chain is left alone, and a last member never leaves', () => {
  const plan: ChainPlacement[] = [{ chain: 0, members: ['a', 'b'] }, { chain: 1, members: ['b'] }, { chain: 2, members: ['a', 'b'] }];
  const model = modelOf([{ chain: 0, members: ['a', 'b', 'c'] }, { chain: 1, members: ['c'] }, { chain: 2, members: ['a', 'b', 'c'] }]);
  model.chains[2]!.newcomer = 99;
  const moves = nextMoves({ chains: model.chains, plan, nodeOf: (id) => model.nodeOfReplica.get(id)!, up: new Set(['a', 'b', 'c']), leaving: new Set(['c']), joinsAtOnce: 2 });
  assert.deepEqual(moves, [
    { kind: 'remove', chain: 0, replicaId: 3 },
    { kind: 'join', chain: 1, node: 'b' },
  ]);
  // With nowhere to go, the last member's node is refused.
  const nowhere = nextMoves({ chains: model.chains.slice(1, 2), plan: [plan[0]!, { chain: 1, members: [] }], nodeOf: (id) => model.nodeOfReplica.get(id)!, up: new Set(['c']), leaving: new Set(['c']), joinsAtOnce: 2 });
  assert.deepEqual(nowhere, [{ kind: 'refuse-leave', chain: 1, node: 'c' }]);
  // With a planned node to go to, the last member's chain first gets a join there.
  const replaced = nextMoves({ chains: model.chains.slice(1, 2), plan: [plan[0]!, { chain: 1, members: ['b'] }], nodeOf: (id) => model.nodeOfReplica.get(id)!, up: new Set(['a', 'b', 'c']), leaving: new Set(['c']), joinsAtOnce: 2 });
  assert.deepEqual(replaced, [{ kind: 'join', chain: 1, node: 'b' }]);
  // Members on nodes that are down are the master's to remove, as failed.
  const down = nextMoves({ chains: model.chains.slice(0, 1), plan, nodeOf: (id) => model.nodeOfReplica.get(id)!, up: new Set(['a', 'b']), leaving: new Set(), joinsAtOnce: 2 });
  assert.deepEqual(down, []);
});
