/**
 * The rounds of a host cluster's master (native-free-core/master/table-round.ts), driven against
 * an in-memory table with the hosts faked: each host runs the replicas the table places on it, a
 * joiner reports itself caught up at once, and a tail asked to hand over reports itself ready. The
 * table is placed when hosts register, repaired when a host dies, refilled when it comes back as a
 * new incarnation, and spread to a host that is added, never more than joinsAtOnce chains at once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CatchUpWatch, HandoffRequest, LiveHostStatus } from '../native-free-core/master/cluster-decisions.js';
import { assertWellFormed } from '../native-free-core/master/chain-master.js';
import { decideRound, type ChainEntry, type TableHost, type TablePlan, type TableRound } from '../native-free-core/master/table-round.js';
import { mulberry32 } from './helpers/prng.js';

interface FakeHost {
  hostId: string;
  zone: string;
  incarnation: string;
  failed: Set<number>;
  /** Predecessors this host's replicas report down, by replica id. */
  predecessorDown: Map<number, number>;
}

class FakeCluster {
  entries: Array<ChainEntry | null>;
  handoffs: Array<HandoffRequest | null>;
  catchUp: Array<CatchUpWatch | null>;
  plan: TablePlan | null = null;
  nextReplicaId = 1;
  now = 0;
  readonly hosts = new Map<string, FakeHost>();
  private incarnations = 0;
  mostJoining = 0;
  readonly evicted: string[] = [];
  /** Hosts kept out of the plan for being slow (fail-slow), as the etcd master passes them. */
  benched = new Set<string>();

  constructor(
    readonly chains: number,
    readonly replicas: number,
    readonly joinsAtOnce = 2,
  ) {
    this.entries = new Array(chains).fill(null);
    this.handoffs = new Array(chains).fill(null);
    this.catchUp = new Array(chains).fill(null);
  }

  start(hostId: string, zone = 'z1'): void {
    this.hosts.set(hostId, { hostId, zone, incarnation: `i${++this.incarnations}`, failed: new Set(), predecessorDown: new Map() });
  }

  kill(hostId: string): void {
    this.hosts.delete(hostId);
  }

  /** What each host reports: every replica the table places on its incarnation. */
  private tableHosts(): TableHost[] {
    return [...this.hosts.values()].map((host) => {
      const replicas = new Map<number, LiveHostStatus>();
      this.entries.forEach((entry, chain) => {
        if (entry === null) return;
        const { configuration } = entry;
        for (const [replicaId, home] of entry.homes) {
          if (home.host !== host.hostId || home.incarnation !== host.incarnation) continue;
          const isTail = configuration.members.at(-1) === replicaId;
          const handoff = this.handoffs[chain];
          replicas.set(replicaId, {
            epoch: configuration.epoch,
            appliedSeq: 0,
            joinCaughtUp: configuration.joining === replicaId,
            handoffReadyEpoch: isTail && handoff?.epoch === configuration.epoch ? configuration.epoch : 0,
            predecessorDown: host.predecessorDown.get(replicaId) ?? 0,
          });
        }
      });
      return { hostId: host.hostId, zone: host.zone, incarnation: host.incarnation, replicas, failed: host.failed };
    });
  }

  round(): TableRound {
    this.now += 200;
    const round = decideRound({
      chains: this.chains,
      replicas: this.replicas,
      entries: this.entries,
      hosts: this.tableHosts(),
      handoffs: this.handoffs,
      catchUp: this.catchUp,
      plan: this.plan,
      bootstrap: true,
      now: this.now,
      handoffLagWritesMax: 100,
      handoffCatchUpMsMax: 2000,
      joinsAtOnce: this.joinsAtOnce,
      nextReplicaId: this.nextReplicaId,
      benched: this.benched,
    });
    for (const change of round.changes) {
      if (change.kind === 'request-handoff') {
        this.handoffs[change.chain] = change.request;
        continue;
      }
      assert.equal(this.entries[change.chain]?.configuration.epoch ?? null, change.previousEpoch);
      const previous = this.entries[change.chain];
      if (previous !== null && previous !== undefined) assert.equal(change.entry.configuration.epoch, previous.configuration.epoch + 1);
      for (const replicaId of [...change.entry.configuration.members, ...(change.entry.configuration.joining === null ? [] : [change.entry.configuration.joining])]) {
        assert.ok(change.entry.homes.has(replicaId), `replica ${replicaId} of chain ${change.chain} has a home`);
      }
      this.entries[change.chain] = change.entry;
    }
    for (const { hostId } of round.evictions) {
      this.evicted.push(hostId);
      this.kill(hostId);
    }
    assert.ok(round.nextReplicaId >= this.nextReplicaId);
    this.nextReplicaId = round.nextReplicaId;
    this.catchUp = round.catchUp;
    this.plan = round.plan;
    this.mostJoining = Math.max(this.mostJoining, this.entries.filter((entry) => entry?.configuration.joining != null).length);
    return round;
  }

  /** Rounds until one changes nothing. */
  settle(): TableRound {
    for (let rounds = 0; rounds < 1000; rounds++) {
      const round = this.round();
      if (round.changes.length === 0 && round.evictions.length === 0) return round;
    }
    assert.fail('the table never settled');
  }

  /** Whether a replica runs: its host is up in the replica's incarnation and has not given it up. */
  isLive(entry: ChainEntry, replicaId: number): boolean {
    const home = entry.homes.get(replicaId)!;
    const host = this.hosts.get(home.host);
    return host !== undefined && host.incarnation === home.incarnation && !host.failed.has(replicaId);
  }

  hostsOf(chain: number): string[] {
    const entry = this.entries[chain]!;
    return entry.configuration.members.map((replicaId) => entry.homes.get(replicaId)!.host);
  }
}

function assertBalanced(cluster: FakeCluster, size: number): void {
  const heads = new Map<string, number>();
  const tails = new Map<string, number>();
  const held = new Map<string, number>();
  for (const hostId of cluster.hosts.keys()) {
    heads.set(hostId, 0);
    tails.set(hostId, 0);
    held.set(hostId, 0);
  }
  for (let chain = 0; chain < cluster.chains; chain++) {
    const hosts = cluster.hostsOf(chain);
    assert.equal(hosts.length, size, `chain ${chain} has ${size} members`);
    assert.equal(new Set(hosts).size, size, `chain ${chain}'s members are on distinct hosts`);
    assert.equal(cluster.entries[chain]!.configuration.joining, null);
    for (const host of hosts) {
      assert.ok(cluster.hosts.has(host), `chain ${chain} has no member on a host that is down (${host})`);
      held.set(host, held.get(host)! + 1);
    }
    heads.set(hosts[0]!, heads.get(hosts[0]!)! + 1);
    tails.set(hosts.at(-1)!, tails.get(hosts.at(-1)!)! + 1);
  }
  for (const [what, counts] of [['heads', heads], ['tails', tails], ['replicas', held]] as const) {
    const values = [...counts.values()];
    assert.ok(Math.max(...values) - Math.min(...values) <= 1, `${what} per host are balanced: ${JSON.stringify([...counts])}`);
  }
}

function assertZonesSpread(cluster: FakeCluster): void {
  for (let chain = 0; chain < cluster.chains; chain++) {
    const zones = new Set(cluster.hostsOf(chain).map((host) => cluster.hosts.get(host)!.zone));
    assert.ok(zones.size >= 2, `chain ${chain} spans both zones`);
  }
}

test('four hosts in two zones: twelve chains placed with three members each, balanced and spread over the zones', () => {
  const cluster = new FakeCluster(12, 3);
  for (const [host, zone] of [['h1', 'a'], ['h2', 'a'], ['h3', 'b'], ['h4', 'b']]) cluster.start(host!, zone);
  const first = cluster.round();
  assert.equal(first.changes.length, 12, 'every chain is placed in the first round');
  cluster.settle();
  assertBalanced(cluster, 3);
  assertZonesSpread(cluster);
  assert.deepEqual(new Set(cluster.entries.flatMap((entry) => entry!.configuration.members)).size, 36, 'replica ids are unique across chains');
});

test('a host that dies has its chains repaired, and when it restarts (a new incarnation) it takes its share back', () => {
  const cluster = new FakeCluster(12, 3);
  for (const [host, zone] of [['h1', 'a'], ['h2', 'a'], ['h3', 'b'], ['h4', 'b']]) cluster.start(host!, zone);
  cluster.settle();
  const oldIds = new Set(cluster.entries.flatMap((entry) => entry!.configuration.members));
  cluster.kill('h3');
  cluster.settle();
  assertBalanced(cluster, 3);
  assert.ok(cluster.mostJoining <= 2, `at most two chains joined at once (saw ${cluster.mostJoining})`);
  cluster.start('h3', 'b');
  cluster.settle();
  assertBalanced(cluster, 3);
  assertZonesSpread(cluster);
  const onH3 = cluster.entries.flatMap((entry) => [...entry!.homes].filter(([, home]) => home.host === 'h3').map(([replicaId]) => replicaId));
  assert.ok(onH3.length >= 8, `h3 holds its share again (${onH3.length} replicas)`);
  for (const replicaId of onH3) assert.ok(!oldIds.has(replicaId), 'a restarted host runs new replicas, never its old ones');
});

test('a fifth host takes its share of chains, and only as many chains move as balance needs', () => {
  const cluster = new FakeCluster(12, 3);
  for (const host of ['h1', 'h2', 'h3', 'h4']) cluster.start(host);
  cluster.settle();
  const before = cluster.entries.map((_, chain) => new Set(cluster.hostsOf(chain)));
  cluster.start('h5');
  cluster.settle();
  assertBalanced(cluster, 3);
  const moved = cluster.entries.filter((_, chain) => cluster.hostsOf(chain).some((host) => !before[chain]!.has(host))).length;
  // 36 replicas over 5 hosts: h5 takes 7 or 8, one chain each.
  assert.ok(moved >= 7 && moved <= 8, `${moved} chains moved`);
});

test('a host comes up after the others: the chains are placed on the ones up, then spread to it', () => {
  const cluster = new FakeCluster(4, 3);
  cluster.start('h1');
  cluster.round();
  for (let chain = 0; chain < 4; chain++) assert.deepEqual(cluster.hostsOf(chain), ['h1']);
  cluster.start('h2');
  cluster.start('h3');
  cluster.settle();
  assertBalanced(cluster, 3);
});

test('a chain whose every member is gone is reported lost and left alone', () => {
  const cluster = new FakeCluster(2, 1);
  cluster.start('h1');
  cluster.start('h2');
  cluster.settle();
  const lostHost = cluster.hostsOf(0)[0]!;
  const epoch = cluster.entries[0]!.configuration.epoch;
  cluster.kill(lostHost);
  const round = cluster.settle();
  assert.deepEqual(round.lost, [0]);
  assert.equal(cluster.entries[0]!.configuration.epoch, epoch, 'a lost chain is not reconfigured');
  assert.match(round.idle[0]!, /unavailable/);
});

test('a joiner its host gave up is abandoned, and the chain is joined again with a new replica', () => {
  const cluster = new FakeCluster(1, 2);
  cluster.start('h1');
  cluster.round();
  cluster.start('h2');
  cluster.round(); // h2 begins to join
  const joiner = cluster.entries[0]!.configuration.joining;
  assert.notEqual(joiner, null);
  cluster.hosts.get('h2')!.failed.add(joiner!);
  cluster.round();
  assert.equal(cluster.entries[0]!.configuration.joining, null, 'the join was abandoned');
  cluster.settle();
  const members = cluster.entries[0]!.configuration.members;
  assert.equal(members.length, 2);
  assert.ok(!members.includes(joiner!), 'the given-up replica never comes back');
});

test('a successor that finds its predecessor\'s host refusing connections has that host evicted', () => {
  const cluster = new FakeCluster(1, 3);
  for (const host of ['h1', 'h2', 'h3']) cluster.start(host);
  cluster.settle();
  const [head, middle] = cluster.entries[0]!.configuration.members;
  const middleHost = cluster.entries[0]!.homes.get(middle!)!.host;
  cluster.hosts.get(middleHost)!.predecessorDown.set(middle!, head!);
  const round = cluster.round();
  assert.deepEqual(round.evictions.map((eviction) => eviction.replicaId), [head]);
});

/**
 * Seeded chaos: hosts crash, restart as new incarnations, give joins up and join the cluster, and
 * a new master takes over from time to time (its plan and catch-up clocks start from what etcd
 * holds). After every round: each configuration is well formed and moves one epoch at a time, its
 * homes are exactly its participants, replica ids are never reused, at most two chains join at
 * once (a lost chain's joiner, with nothing to copy, takes no slot: it once starved every other
 * chain), and no decision removes a live member from a chain that it leaves with fewer than two
 * live members (only a failure may). Once the faults stop, the table settles: every chain not lost
 * has three live members on distinct hosts (a chain caught with four members by a master change is
 * trimmed: the plan once kept all four), with heads and tails balanced. 300 seeds passed by hand.
 */
for (const seed of Array.from({ length: 40 }, (_, index) => index + 1)) {
  test(`chaos, seed ${seed}: crashes, restarts, given-up joins, new hosts and master changes; every round safe, then settled`, () => {
    const random = mulberry32(seed);
    const cluster = new FakeCluster(12, 3);
    for (const [host, zone] of [['h1', 'a'], ['h2', 'a'], ['h3', 'b'], ['h4', 'b']]) cluster.start(host!, zone);
    const seen = new Set<number>();
    const lost = new Set<number>();
    let nextHost = 5;
    const check = (before: ReadonlyArray<ChainEntry | null>, round: TableRound): void => {
      assert.ok(round.changes.filter((change) => change.kind === 'configure').every((change) => change.kind === 'configure'));
      for (let chain = 0; chain < 12; chain++) {
        const entry = cluster.entries[chain];
        if (entry === null || entry === undefined) continue;
        assertWellFormed(entry.configuration);
        const participants = [...entry.configuration.members, ...(entry.configuration.joining === null ? [] : [entry.configuration.joining])];
        assert.deepEqual([...entry.homes.keys()].sort((a, b) => a - b), [...participants].sort((a, b) => a - b), `chain ${chain}: homes are its participants`);
        const previous = before[chain];
        if (previous === null || previous === undefined || previous === entry) continue;
        assert.equal(entry.configuration.epoch, previous.configuration.epoch + 1, `chain ${chain} moves one epoch at a time`);
        for (const id of participants) if (!previous.homes.has(id)) {
          assert.ok(!seen.has(id), `replica id ${id} is never reused`);
          seen.add(id);
        }
        const change = round.changes.find((candidate) => candidate.kind === 'configure' && candidate.chain === chain);
        if (change?.kind === 'configure' && /requested/.test(change.what)) {
          const live = entry.configuration.members.filter((id) => cluster.isLive(entry, id));
          assert.ok(live.length >= 2, `chain ${chain}: a requested removal leaves ${live.length} live members (${change.what})`);
        }
      }
      for (const entry of cluster.entries) if (entry !== null) for (const id of entry.homes.keys()) seen.add(id);
      // Joins that copy something: a lost chain's joiner has nothing left to copy from.
      const joining = cluster.entries.filter((entry) => entry !== null && entry.configuration.joining !== null && entry.configuration.members.some((id) => cluster.isLive(entry, id))).length;
      assert.ok(joining <= 2, `${joining} chains join at once`);
      for (const chain of round.lost) lost.add(chain);
    };
    for (let step = 0; step < 400; step++) {
      const roll = random();
      const up = [...cluster.hosts.keys()];
      if (roll < 0.02 && up.length > 3) cluster.kill(up[Math.floor(random() * up.length)]!);
      else if (roll < 0.04) {
        const restarted = `h${1 + Math.floor(random() * (nextHost - 1))}`;
        cluster.kill(restarted);
        cluster.start(restarted, restarted < 'h3' ? 'a' : 'b');
      } else if (roll < 0.05 && up.length < 6) cluster.start(`h${nextHost++}`, random() < 0.5 ? 'a' : 'b');
      else if (roll < 0.07) {
        const joiner = cluster.entries.map((entry) => entry?.configuration.joining).find((id) => id !== null && id !== undefined);
        if (joiner !== undefined) for (const host of cluster.hosts.values()) host.failed.add(joiner);
      } else if (roll < 0.09) {
        cluster.plan = null; // a new master: its plan is made from where the chains are
        cluster.catchUp = new Array(12).fill(null);
      }
      const before = [...cluster.entries];
      check(before, cluster.round());
    }
    cluster.settle();
    const size = Math.min(3, cluster.hosts.size);
    for (let chain = 0; chain < 12; chain++) {
      if (lost.has(chain)) continue;
      const hosts = cluster.hostsOf(chain);
      assert.equal(hosts.length, size, `chain ${chain} is whole again: ${JSON.stringify({ members: hosts, plan: cluster.plan?.chains[chain], idle: cluster.round().idle[chain], lost: [...lost] })}`);
      assert.equal(new Set(hosts).size, size);
      for (const host of hosts) assert.ok(cluster.hosts.has(host), `chain ${chain} has no member on a host that is down`);
    }
    if (lost.size === 0) assertBalanced(cluster, size);
  });
}

test('a benched (slow) host stays up while its replicas move to the others, one chain joining at a time, and comes back into the plan when released', () => {
  const cluster = new FakeCluster(4, 3);
  for (const hostId of ['h1', 'h2', 'h3', 'h4']) cluster.start(hostId);
  cluster.settle();
  assertBalanced(cluster, 3);
  cluster.benched = new Set(['h2']);
  cluster.settle();
  for (let chain = 0; chain < cluster.chains; chain++) {
    assert.ok(!cluster.hostsOf(chain).includes('h2'), `chain ${chain} moved off the benched host: ${cluster.hostsOf(chain).join(', ')}`);
    assert.equal(cluster.hostsOf(chain).length, 3, 'every chain whole on the three others');
  }
  assert.ok(cluster.hosts.has('h2'), 'benching is not a failure: the host stays registered');
  assert.ok(cluster.mostJoining <= 2);
  cluster.benched = new Set();
  cluster.settle();
  assertBalanced(cluster, 3);
  assert.ok(cluster.entries.some((_, chain) => cluster.hostsOf(chain).includes('h2')), 'released, it holds replicas again');
});
