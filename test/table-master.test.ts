/**
 * The master of a chain table in one process (native-free-core/master/table-master.ts), driven as
 * a runtime drives it but with the nodes faked: a joiner reports itself caught up at once, and a
 * tail asked to hand over reports itself ready. A node added gets its share, a node that fails or
 * goes silent has its chains repaired, a node asked to leave is emptied, and a chain whose every
 * replica is gone is reported lost.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LiveHostStatus } from '../native-free-core/master/cluster-decisions.js';
import type { InProcessDecision } from '../native-free-core/master/in-process-master.js';
import { TableMaster, type TableNews } from '../native-free-core/master/table-master.js';

const node = (id: string) => ({ id, zone: 'local' });

/** A fake runtime: remembers handoffs asked for, so the tails report ready. */
class FakeNodes {
  readonly handoffs = new Map<number, number>();
  readonly decisions: Array<{ chain: number; decision: InProcessDecision }> = [];
  now = 0;
  silent = new Set<string>();
  /** The chains with a join under way, and the most there ever were at once. */
  private readonly joining = new Set<number>();
  mostJoining = 0;

  constructor(readonly table: TableMaster) {}

  settle(): TableNews {
    this.now += 10;
    for (const id of ['n1', 'n2', 'n3', 'n4', 'n5']) if (!this.silent.has(id) && this.table.isUp(id)) this.table.heartbeat(id, this.now);
    const news = this.table.settle(
      { now: this.now, statusOf: (chain, replicaId) => this.statusOf(chain, replicaId), silenceCounts: true, moves: true },
      (chain, decision) => {
        this.decisions.push({ chain, decision });
        if (decision.kind === 'request-handoff') this.handoffs.set(chain, decision.epoch);
        if (decision.kind !== 'reconfigure') return;
        if (decision.event.configuration.joining !== null) this.joining.add(chain);
        else this.joining.delete(chain);
        this.mostJoining = Math.max(this.mostJoining, this.joining.size);
      },
    );
    return news;
  }

  private statusOf(chain: number, replicaId: number): LiveHostStatus {
    const configuration = this.table.configuration(chain);
    const epoch = configuration.epoch;
    const isTail = configuration.members.at(-1) === replicaId;
    return { epoch, appliedSeq: 0, joinCaughtUp: configuration.joining === replicaId, handoffReadyEpoch: isTail && this.handoffs.get(chain) === epoch ? epoch : 0 };
  }

  /** Settles until nothing has changed for 20 rounds (200 ticks: longer than any silence that counts here). */
  settleAll(): TableNews[] {
    const all: TableNews[] = [];
    let quiet = 0;
    for (let round = 0; round < 500; round++) {
      const before = this.decisions.length;
      all.push(this.settle());
      quiet = this.decisions.length === before ? quiet + 1 : 0;
      if (quiet === 20) return all;
    }
    assert.fail('the table never settled');
  }
}

function nodesOf(table: TableMaster, chain: number): string[] {
  return table.configuration(chain).members.map((replicaId) => table.nodeOf(replicaId));
}

test('a node added takes its share of chains; each chain keeps three replicas on distinct nodes', () => {
  const table = new TableMaster({ chains: 12, replicas: 3, nodes: ['n1', 'n2', 'n3'].map(node), suspectAfter: 1000, now: 0, joinsAtOnce: 2 });
  const fake = new FakeNodes(table);
  table.addNode(node('n4'));
  fake.settleAll();
  const held = new Map<string, number>();
  for (let chain = 0; chain < 12; chain++) {
    const nodes = nodesOf(table, chain);
    assert.equal(nodes.length, 3);
    assert.equal(new Set(nodes).size, 3);
    assert.deepEqual([...nodes].sort(), [...table.plan[chain]!.members].sort());
    for (const id of nodes) held.set(id, (held.get(id) ?? 0) + 1);
  }
  assert.deepEqual([...held.values()].sort(), [9, 9, 9, 9]);
  assert.ok(fake.mostJoining <= 2, `${fake.mostJoining} chains joined at once`);
  assert.ok(fake.mostJoining >= 1);
});

test('a node that fails, or falls silent, is removed from every chain, and the chains are repaired on the others', () => {
  for (const how of ['fails', 'silent'] as const) {
    const table = new TableMaster({ chains: 8, replicas: 3, nodes: ['n1', 'n2', 'n3', 'n4'].map(node), suspectAfter: 50, now: 0, joinsAtOnce: 2 });
    const fake = new FakeNodes(table);
    fake.settleAll();
    if (how === 'fails') table.nodeFailed('n2');
    else fake.silent.add('n2');
    fake.settleAll();
    for (let chain = 0; chain < 8; chain++) {
      const nodes = nodesOf(table, chain);
      assert.ok(!nodes.includes('n2'), `${how}: chain ${chain} still on n2`);
      assert.equal(nodes.length, 3, `${how}: chain ${chain} repaired`);
    }
  }
});

test('a node asked to leave is emptied first (its chains joined elsewhere), and a lost chain is reported once', () => {
  const table = new TableMaster({ chains: 6, replicas: 2, nodes: ['n1', 'n2', 'n3'].map(node), suspectAfter: 1000, now: 0, joinsAtOnce: 2 });
  const fake = new FakeNodes(table);
  table.leave('n3');
  const emptied = fake.settleAll().flatMap((news) => news.emptied);
  assert.deepEqual(emptied, ['n3']);
  for (let chain = 0; chain < 6; chain++) assert.deepEqual([...nodesOf(table, chain)].sort(), ['n1', 'n2']);
  table.nodeFailed('n1');
  table.nodeFailed('n2');
  const lost = fake.settleAll().flatMap((news) => news.lost.map(({ chain }) => chain));
  assert.deepEqual(lost.sort((a, b) => a - b), [0, 1, 2, 3, 4, 5]);
});
