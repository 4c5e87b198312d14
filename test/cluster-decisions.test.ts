/**
 * The cluster policy as a pure function (native-free-core/master/cluster-decisions.ts), one rule at
 * a time, then a whole join driven by the rules alone with the hosts' reports played by hand; then
 * the same policy fed from one process (InProcessMaster, as createChain() and the simulator run it):
 * a rejected task or silence is a gone replica, addReplica() a newcomer, removeReplica() a request.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Configuration } from '../native-free-core/master/chain-master.js';
import {
  decide,
  removalRefusal,
  watchCatchUp,
  type Decision,
  type DecisionInput,
  type LiveHost,
  type LiveHostStatus,
} from '../native-free-core/master/cluster-decisions.js';
import { InProcessMaster, type InProcessDecision } from '../native-free-core/master/in-process-master.js';

const LAG_MAX = 100;
const CATCH_UP_MS_MAX = 2000;

function status(fields: Partial<LiveHostStatus>): LiveHostStatus {
  return { epoch: 1, appliedSeq: 0, joinCaughtUp: false, handoffReadyEpoch: 0, ...fields };
}

function host(hostId: string, replicaId: number, fields: Partial<LiveHostStatus> | null = null): LiveHost {
  return { hostId, replicaId, status: fields === null ? null : status(fields) };
}

function input(configuration: Configuration | null, hosts: LiveHost[], extra: Partial<DecisionInput> = {}): DecisionInput {
  return {
    configuration,
    hosts,
    removalsRequested: [],
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

describe('rule 3b: a removal an operator asked for (removeReplica)', () => {
  const configuration: Configuration = { epoch: 4, members: [1, 2, 3], joining: null };
  const everyone = [host('a', 1), host('b', 2), host('c', 3)];

  test('a member is removed, reason requested, next epoch', () => {
    const event = reconfiguration(decide(input(configuration, everyone, { removalsRequested: [2] })));
    assert.deepEqual(event, { kind: 'removed', replicaId: 2, reason: 'requested', configuration: { epoch: 5, members: [1, 3], joining: null } });
  });

  test('after failures: a member that is gone is removed first', () => {
    const event = reconfiguration(decide(input(configuration, [host('b', 2), host('c', 3)], { removalsRequested: [3] })));
    assert.deepEqual(event, { kind: 'removed', replicaId: 1, reason: 'failed', configuration: { epoch: 5, members: [2, 3], joining: null } });
  });

  test('the tail during a join: the join is abandoned, as when the tail fails', () => {
    const joining: Configuration = { epoch: 4, members: [1, 2], joining: 3 };
    const event = reconfiguration(decide(input(joining, everyone, { removalsRequested: [2] })));
    assert.deepEqual(event, { kind: 'removed', replicaId: 2, reason: 'requested', configuration: { epoch: 5, members: [1], joining: null } });
  });

  test('never the last member, nor a replica that is not one: removalRefusal says why, and the request changes nothing', () => {
    const solo: Configuration = { epoch: 4, members: [1], joining: 2 };
    assert.match(removalRefusal(solo, 1) ?? '', /cannot remove replica 1: it is the last replica/);
    assert.match(removalRefusal(solo, 2) ?? '', /replica 2 is not a member/);
    assert.equal(removalRefusal(configuration, 2), null);
    // The join goes on meanwhile: once it completes, the chain has a replica to spare.
    const hosts = [host('a', 1, { epoch: 4, appliedSeq: 5 }), host('b', 2, { epoch: 4, appliedSeq: 5, joinCaughtUp: true })];
    assert.deepEqual(decide(input(solo, hosts, { removalsRequested: [1, 2] })), { kind: 'request-handoff', epoch: 4, joiner: 2 });
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

test('the catch-up clock (rule 5) starts at the joiner\'s first report, in any epoch, and ends with its join', () => {
  const joining: Configuration = { epoch: 3, members: [1], joining: 2 };
  const loading = [host('a', 1), host('b', 2, { epoch: 3 })];
  const loaded = [host('a', 1), host('b', 2, { epoch: 2, joinCaughtUp: true })];
  assert.equal(watchCatchUp(null, joining, loading, 100), null);
  const watch = watchCatchUp(null, joining, loaded, 200);
  assert.deepEqual(watch, { joiner: 2, since: 200 });
  assert.equal(watchCatchUp(watch, joining, loaded, 900), watch, 'it keeps its start');
  assert.deepEqual(watchCatchUp(watch, { epoch: 4, members: [1], joining: 3 }, [host('c', 3, { epoch: 4, joinCaughtUp: true })], 950), { joiner: 3, since: 950 });
  assert.equal(watchCatchUp(watch, { epoch: 4, members: [1, 2], joining: null }, loaded, 990), null);
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

describe('inputs from one process: the in-process master feeds the same policy', () => {
  const SUSPECT_AFTER = 100;

  /** A chain in one process: statuses played by hand, the decisions carried out recorded. */
  function oneProcess(members: number[]): {
    master: InProcessMaster;
    statuses: Map<number, Partial<LiveHostStatus>>;
    executed: InProcessDecision[];
    settle: (now: number, silenceCounts?: boolean) => string;
  } {
    const master = new InProcessMaster({
      configuration: { epoch: 1, members, joining: null },
      suspectAfter: SUSPECT_AFTER,
      now: 0,
      handoffLagWritesMax: LAG_MAX,
      handoffCatchUpMsMax: CATCH_UP_MS_MAX,
    });
    const statuses = new Map<number, Partial<LiveHostStatus>>();
    const executed: InProcessDecision[] = [];
    const statusOf = (replicaId: number): LiveHostStatus | null => {
      const fields = statuses.get(replicaId);
      return fields === undefined ? null : status(fields);
    };
    const settle = (now: number, silenceCounts = true): string =>
      master.settle({ now, statusOf, silenceCounts }, (decision) => executed.push(decision)).reason;
    return { master, statuses, executed, settle };
  }

  function events(executed: InProcessDecision[]): unknown[] {
    return executed.map((decision) => (decision.kind === 'reconfigure' ? decision.event : decision));
  }

  test('a rejected task: the member is gone at once, removed as failed, without waiting for silence', () => {
    const { master, executed, settle } = oneProcess([1, 2, 3]);
    master.taskFailed(2);
    assert.match(settle(1), /complete/);
    assert.deepEqual(events(executed), [{ kind: 'removed', replicaId: 2, reason: 'failed', configuration: { epoch: 2, members: [1, 3], joining: null } }]);
  });

  test('missed heartbeats: a member silent for suspectAfter is gone, but only while silence counts', () => {
    const { master, executed, settle } = oneProcess([1, 2, 3]);
    master.heartbeat(1, 90);
    master.heartbeat(3, 90);
    settle(SUSPECT_AFTER + 50, false);
    assert.deepEqual(executed, [], 'a worker still starting is not hung');
    settle(SUSPECT_AFTER + 50);
    assert.deepEqual(events(executed), [{ kind: 'removed', replicaId: 2, reason: 'failed', configuration: { epoch: 2, members: [1, 3], joining: null } }]);
  });

  test('the last replica gone: nothing is removed, the chain is unavailable', () => {
    const { master, executed, settle } = oneProcess([1]);
    master.taskFailed(1);
    assert.equal(settle(1), 'chain unavailable: its only replica is gone');
    assert.deepEqual(executed, []);
  });

  test('an addReplica request: the replica joins, the tail is asked to hand over once it is close behind, and it becomes the tail', () => {
    const { master, statuses, executed, settle } = oneProcess([1, 2]);
    master.requestJoin(3);
    assert.equal(master.newcomer, 3);
    assert.equal(settle(1), 'joiner 3 is loading its snapshot in epoch 2');
    assert.equal(master.newcomer, null);
    assert.deepEqual(master.configuration, { epoch: 2, members: [1, 2], joining: 3 });
    // Heard from at 50: none is silent yet when the catch-up time runs out.
    for (const replicaId of [1, 2, 3]) master.heartbeat(replicaId, 50);
    statuses.set(2, { epoch: 2, appliedSeq: 1000 });
    statuses.set(3, { epoch: 2, appliedSeq: 10, joinCaughtUp: true });
    assert.match(settle(60), /990 writes behind tail 2 after 0 ms/);
    for (const replicaId of [1, 2, 3]) master.heartbeat(replicaId, 60 + CATCH_UP_MS_MAX);
    assert.match(settle(60 + CATCH_UP_MS_MAX), /waiting for tail 2/);
    statuses.set(2, { epoch: 2, appliedSeq: 1000, handoffReadyEpoch: 2 });
    assert.match(settle(60 + CATCH_UP_MS_MAX), /complete/);
    assert.deepEqual(events(executed), [
      { kind: 'joining', replicaId: 3, configuration: { epoch: 2, members: [1, 2], joining: 3 } },
      { kind: 'request-handoff', epoch: 2, joiner: 3 },
      { kind: 'joined', replicaId: 3, configuration: { epoch: 3, members: [1, 2, 3], joining: null } },
    ]);
  });

  test('a joiner whose task is rejected: the join is abandoned, and nothing asks for it again', () => {
    const { master, executed, settle } = oneProcess([1]);
    master.requestJoin(2);
    settle(1);
    master.taskFailed(2);
    assert.match(settle(2), /complete/);
    assert.deepEqual(events(executed).at(-1), { kind: 'removed', replicaId: 2, reason: 'failed', configuration: { epoch: 3, members: [1], joining: null } });
  });

  test('a removeReplica request: removed as requested; one the policy refuses throws its reason at once', () => {
    const { master, executed, settle } = oneProcess([1, 2]);
    master.requestRemoval(2);
    settle(1);
    assert.deepEqual(events(executed), [{ kind: 'removed', replicaId: 2, reason: 'requested', configuration: { epoch: 2, members: [1], joining: null } }]);
    assert.throws(() => master.requestRemoval(1), { code: 'DABBA_ERR_OUT_OF_RANGE', message: /last replica/ });
    assert.throws(() => master.requestRemoval(2), { code: 'DABBA_ERR_OUT_OF_RANGE', message: /not a member/ });
  });

  test('a removal the chain changed under is dropped: a failure handled first left that replica the last one', () => {
    const { master, executed, settle } = oneProcess([1, 2]);
    master.taskFailed(1);
    master.requestRemoval(2);
    assert.match(settle(1), /complete/);
    assert.deepEqual(events(executed), [{ kind: 'removed', replicaId: 1, reason: 'failed', configuration: { epoch: 2, members: [2], joining: null } }]);
    settle(2);
    assert.equal(executed.length, 1, 'the request does not stand');
  });
});
