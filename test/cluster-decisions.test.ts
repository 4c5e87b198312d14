/**
 * The multi-host master's decision rules as a pure function (native-free-core/master/
 * cluster-decisions.ts), one rule at a time, then a whole join driven by the rules alone with the
 * hosts' reports played by hand.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Configuration } from '../native-free-core/master/chain-master.js';
import { decide, type Decision, type DecisionInput, type LiveHost, type LiveHostStatus } from '../native-free-core/master/cluster-decisions.js';

const LAG_MAX = 100;
const CATCH_UP_MS_MAX = 2000;

function host(hostId: string, replicaId: number, status: Partial<LiveHostStatus> | null = null): LiveHost {
  return {
    hostId,
    replicaId,
    status: status === null ? null : { epoch: 1, appliedSeq: 0, joinCaughtUp: false, handoffReadyEpoch: 0, ...status },
  };
}

function input(configuration: Configuration | null, hosts: LiveHost[], extra: Partial<DecisionInput> = {}): DecisionInput {
  return {
    configuration,
    hosts,
    now: 10_000,
    joinCaughtUpSince: null,
    handoffRequested: null,
    handoffLagWritesMax: LAG_MAX,
    handoffCatchUpMsMax: CATCH_UP_MS_MAX,
    ...extra,
  };
}

function reconfiguration(decision: Decision): Extract<Decision, { kind: 'reconfigure' }>['event'] {
  assert.equal(decision.kind, 'reconfigure', `expected a reconfiguration, got ${JSON.stringify(decision)}`);
  return (decision as Extract<Decision, { kind: 'reconfigure' }>).event;
}

function noneReason(decision: Decision): string {
  assert.equal(decision.kind, 'none', `expected no decision, got ${JSON.stringify(decision)}`);
  return (decision as Extract<Decision, { kind: 'none' }>).reason;
}

describe('rule 1: bootstrap', () => {
  test('no configuration: a chain of the live host with the smallest host id', () => {
    const decision = decide(input(null, [host('host-c', 7), host('host-a', 9), host('host-b', 3)]));
    assert.deepEqual(decision, { kind: 'initialize', configuration: { epoch: 1, members: [9], joining: null } });
  });

  test('no configuration and no live host: nothing', () => {
    assert.match(noneReason(decide(input(null, []))), /no live host/);
  });
});

describe('rule 2b: the host of a head or middle that refuses connections is evicted before its lease ends', () => {
  const configuration: Configuration = { epoch: 4, members: [1, 2, 3], joining: null };
  test('the head, on its successor\'s report in this epoch', () => {
    const decision = decide(input(configuration, [host('a', 1), host('b', 2, { epoch: 4, predecessorDown: 1 }), host('c', 3, { epoch: 4 })]));
    assert.deepEqual(decision, { kind: 'evict', hostId: 'a', replicaId: 1 });
  });

  test('the middle, on the tail\'s report; once its host is gone, rule 2 removes it and rule 4 does not take it back', () => {
    const decision = decide(input(configuration, [host('a', 1), host('b', 2, { epoch: 4 }), host('c', 3, { epoch: 4, predecessorDown: 2 })]));
    assert.deepEqual(decision, { kind: 'evict', hostId: 'b', replicaId: 2 });
    const event = reconfiguration(decide(input(configuration, [host('a', 1), host('c', 3, { epoch: 4, predecessorDown: 2 })])));
    assert.deepEqual(event, { kind: 'removed', replicaId: 2, reason: 'failed', configuration: { epoch: 5, members: [1, 3], joining: null } });
    assert.equal(decide(input(event.configuration, [host('a', 1), host('c', 3, { epoch: 5 })])).kind, 'none');
  });

  test('never the tail: a joiner that cannot reach it changes nothing (only the lease removes a tail)', () => {
    const joining: Configuration = { epoch: 4, members: [1, 2], joining: 3 };
    const decision = decide(input(joining, [host('a', 1, { epoch: 4 }), host('b', 2, { epoch: 4 }), host('c', 3, { epoch: 4, predecessorDown: 2 })]));
    assert.notEqual(decision.kind, 'reconfigure');
  });

  test('a report from another epoch, or about someone who is not the predecessor, is ignored', () => {
    const stale = decide(input(configuration, [host('a', 1), host('b', 2, { epoch: 3, predecessorDown: 1 }), host('c', 3, { epoch: 4 })]));
    assert.equal(stale.kind, 'none');
    const wrongNeighbour = decide(input(configuration, [host('a', 1), host('b', 2, { epoch: 4 }), host('c', 3, { epoch: 4, predecessorDown: 1 })]));
    assert.equal(wrongNeighbour.kind, 'none');
  });
});

describe('rule 2: a member whose host is gone is removed', () => {
  test('a middle: its neighbours close up, reason failed, next epoch', () => {
    const event = reconfiguration(decide(input({ epoch: 4, members: [1, 2, 3], joining: null }, [host('a', 1), host('c', 3)])));
    assert.deepEqual(event, { kind: 'removed', replicaId: 2, reason: 'failed', configuration: { epoch: 5, members: [1, 3], joining: null } });
  });

  test('the head during a join: the join goes on', () => {
    const event = reconfiguration(decide(input({ epoch: 4, members: [1, 2], joining: 3 }, [host('b', 2), host('c', 3)])));
    assert.deepEqual(event.configuration, { epoch: 5, members: [2], joining: 3 });
  });

  test('the tail during a join: the join is abandoned (the joiner copied from that tail)', () => {
    const event = reconfiguration(decide(input({ epoch: 4, members: [1, 2], joining: 3 }, [host('a', 1), host('c', 3)])));
    assert.deepEqual(event, { kind: 'removed', replicaId: 2, reason: 'failed', configuration: { epoch: 5, members: [1], joining: null } });
  });

  test('the last member is never removed: the chain is unavailable, not empty', () => {
    assert.equal(noneReason(decide(input({ epoch: 4, members: [1], joining: null }, [host('b', 2)]))), 'chain unavailable: its only replica is gone');
    assert.equal(noneReason(decide(input({ epoch: 4, members: [1], joining: 2 }, []))), 'chain unavailable: its only replica is gone');
  });

  test('two members gone: one removal per decision, down to the last one', () => {
    let configuration: Configuration = { epoch: 1, members: [1, 2, 3], joining: null };
    const hosts: LiveHost[] = [];
    const event = reconfiguration(decide(input(configuration, hosts.concat(host('c', 3)))));
    configuration = event.configuration;
    assert.deepEqual(configuration, { epoch: 2, members: [2, 3], joining: null });
    configuration = reconfiguration(decide(input(configuration, [host('c', 3)]))).configuration;
    assert.deepEqual(configuration, { epoch: 3, members: [3], joining: null });
    assert.equal(decide(input(configuration, [host('c', 3)])).kind, 'none');
  });
});

describe('rule 3: a joiner whose host is gone', () => {
  test('abandons the join', () => {
    const event = reconfiguration(decide(input({ epoch: 2, members: [1], joining: 2 }, [host('a', 1)])));
    assert.deepEqual(event, { kind: 'removed', replicaId: 2, reason: 'failed', configuration: { epoch: 3, members: [1], joining: null } });
  });
});

describe('rule 4: a live host that is not a member joins', () => {
  test('smallest host id first, one joiner at a time', () => {
    const hosts = [host('a', 1), host('z', 2), host('m', 3)];
    const event = reconfiguration(decide(input({ epoch: 1, members: [1], joining: null }, hosts)));
    assert.deepEqual(event, { kind: 'joining', replicaId: 3, configuration: { epoch: 2, members: [1], joining: 3 } });
    assert.equal(noneReason(decide(input(event.configuration, hosts))), 'joiner 3 is loading its snapshot in epoch 2');
  });

  test('every live host a member: nothing', () => {
    assert.match(noneReason(decide(input({ epoch: 3, members: [1, 2], joining: null }, [host('a', 1), host('b', 2)]))), /complete/);
  });

  test('a host restarted with a new replica id: the old id is removed, then the new one joins', () => {
    const configuration: Configuration = { epoch: 3, members: [1, 2], joining: null };
    const removed = reconfiguration(decide(input(configuration, [host('a', 1), host('b', 5)])));
    assert.deepEqual(removed.configuration, { epoch: 4, members: [1], joining: null });
    const joining = reconfiguration(decide(input(removed.configuration, [host('a', 1), host('b', 5)])));
    assert.deepEqual(joining.configuration, { epoch: 5, members: [1], joining: 5 });
  });
});

describe('rule 5: the handoff is requested once the joiner is close behind', () => {
  const configuration: Configuration = { epoch: 2, members: [1], joining: 2 };

  test('close enough in writes', () => {
    const hosts = [host('a', 1, { epoch: 2, appliedSeq: 1000 }), host('b', 2, { epoch: 2, appliedSeq: 1000 - LAG_MAX, joinCaughtUp: true })];
    assert.deepEqual(decide(input(configuration, hosts)), { kind: 'request-handoff', epoch: 2, joiner: 2 });
  });

  test('too far behind: waits, until it has been catching up long enough', () => {
    const hosts = [host('a', 1, { epoch: 2, appliedSeq: 1000 }), host('b', 2, { epoch: 2, appliedSeq: 10, joinCaughtUp: true })];
    assert.match(noneReason(decide(input(configuration, hosts))), /990 writes behind/);
    assert.match(noneReason(decide(input(configuration, hosts, { joinCaughtUpSince: 10_000 - CATCH_UP_MS_MAX + 1 }))), /catching up/);
    assert.deepEqual(decide(input(configuration, hosts, { joinCaughtUpSince: 10_000 - CATCH_UP_MS_MAX })), {
      kind: 'request-handoff',
      epoch: 2,
      joiner: 2,
    });
  });

  test('not before the joiner has loaded its snapshot in this epoch', () => {
    const tail = host('a', 1, { epoch: 2, appliedSeq: 5 });
    for (const joiner of [host('b', 2), host('b', 2, { epoch: 2, joinCaughtUp: false }), host('b', 2, { epoch: 1, appliedSeq: 5, joinCaughtUp: true })]) {
      assert.match(noneReason(decide(input(configuration, [tail, joiner]))), /loading its snapshot/);
    }
  });

  test('once per (epoch, joiner): not again while it stands', () => {
    const hosts = [host('a', 1, { epoch: 2, appliedSeq: 5 }), host('b', 2, { epoch: 2, appliedSeq: 5, joinCaughtUp: true })];
    const decision = decide(input(configuration, hosts, { handoffRequested: { epoch: 2, joiner: 2 } }));
    assert.equal(noneReason(decision), 'waiting for tail 1 to hand over to joiner 2 in epoch 2');
  });

  test('requested again in a new epoch (the head failed mid-join) and for a new joiner', () => {
    const hosts = [host('b', 2, { epoch: 3, appliedSeq: 50 }), host('c', 3, { epoch: 3, appliedSeq: 50, joinCaughtUp: true })];
    // The head (1) failed after the handoff was requested in epoch 2: epoch 3 has members [2], joiner 3.
    const removed = reconfiguration(decide(input({ epoch: 2, members: [1, 2], joining: 3 }, hosts, { handoffRequested: { epoch: 2, joiner: 3 } })));
    assert.deepEqual(removed.configuration, { epoch: 3, members: [2], joining: 3 });
    const again = decide(input(removed.configuration, hosts, { handoffRequested: { epoch: 2, joiner: 3 } }));
    assert.deepEqual(again, { kind: 'request-handoff', epoch: 3, joiner: 3 });
    const otherJoiner = decide(input(removed.configuration, hosts, { handoffRequested: { epoch: 3, joiner: 9 } }));
    assert.deepEqual(otherJoiner, { kind: 'request-handoff', epoch: 3, joiner: 3 });
  });
});

describe('rule 6: the tail is ready to hand over', () => {
  const configuration: Configuration = { epoch: 2, members: [1], joining: 2 };
  const joiner = host('b', 2, { epoch: 2, appliedSeq: 5, joinCaughtUp: true });
  const requested = { handoffRequested: { epoch: 2, joiner: 2 } };

  test('ready in this epoch: the joiner becomes the tail', () => {
    const tail = host('a', 1, { epoch: 2, appliedSeq: 5, handoffReadyEpoch: 2 });
    const event = reconfiguration(decide(input(configuration, [tail, joiner], requested)));
    assert.deepEqual(event, { kind: 'joined', replicaId: 2, configuration: { epoch: 3, members: [1, 2], joining: null } });
  });

  test('ready in an earlier epoch, or reporting from one: not yet', () => {
    for (const tail of [host('a', 1, { epoch: 2, handoffReadyEpoch: 1 }), host('a', 1, { epoch: 1, handoffReadyEpoch: 2 })]) {
      assert.match(noneReason(decide(input(configuration, [tail, joiner], requested))), /waiting for tail 1/);
    }
  });
});

test('rule order: a failure is handled before a join completes', () => {
  const hosts = [host('b', 2, { epoch: 2, appliedSeq: 5, handoffReadyEpoch: 2 }), host('c', 3, { epoch: 2, appliedSeq: 5, joinCaughtUp: true })];
  const event = reconfiguration(decide(input({ epoch: 2, members: [1, 2], joining: 3 }, hosts, { handoffRequested: { epoch: 2, joiner: 3 } })));
  assert.deepEqual(event.configuration, { epoch: 3, members: [2], joining: 3 });
});

test('a whole life: bootstrap, join with handoff, failure, rejoin, driven by the rules alone', () => {
  let configuration: Configuration | null = null;
  let handoffRequested: DecisionInput['handoffRequested'] = null;
  const statuses = new Map<number, Partial<LiveHostStatus>>();
  const names = new Map([[1, 'a'], [2, 'b'], [3, 'c']]);
  const live = new Set([1, 2]);
  const step = (): Decision => {
    const hosts = [...live].map((id) => host(names.get(id)!, id, statuses.get(id) ?? null));
    const decision = decide(input(configuration, hosts, { handoffRequested }));
    if (decision.kind === 'initialize') configuration = decision.configuration;
    if (decision.kind === 'reconfigure') configuration = decision.event.configuration;
    if (decision.kind === 'request-handoff') handoffRequested = { epoch: decision.epoch, joiner: decision.joiner };
    return decision;
  };
  assert.equal(step().kind, 'initialize');
  assert.deepEqual(reconfiguration(step()).configuration, { epoch: 2, members: [1], joining: 2 });
  assert.equal(step().kind, 'none');
  statuses.set(1, { epoch: 2, appliedSeq: 40 });
  statuses.set(2, { epoch: 2, appliedSeq: 39, joinCaughtUp: true });
  assert.deepEqual(step(), { kind: 'request-handoff', epoch: 2, joiner: 2 });
  assert.equal(step().kind, 'none');
  statuses.set(1, { epoch: 2, appliedSeq: 40, handoffReadyEpoch: 2 });
  assert.deepEqual(reconfiguration(step()).configuration, { epoch: 3, members: [1, 2], joining: null });
  live.add(3);
  assert.deepEqual(reconfiguration(step()).configuration, { epoch: 4, members: [1, 2], joining: 3 });
  live.delete(2); // the tail fails mid-join: the join starts over from the new tail
  assert.deepEqual(reconfiguration(step()).configuration, { epoch: 5, members: [1], joining: null });
  assert.deepEqual(reconfiguration(step()).configuration, { epoch: 6, members: [1], joining: 3 });
  assert.equal(step().kind, 'none');
});
