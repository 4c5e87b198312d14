import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ErrorCode } from '../native-free-core/errors.js';
import { mulberry32 } from './helpers/prng.js';
import { checkLinearizable, type CheckResult, type HistoryEntry } from './sim/linearizability.js';

/*
 * The linearizability checker. Hand-written histories name their clients and times like a timeline;
 * an exhaustive oracle cross-checks the search on small random histories; a simulated atomic register
 * store produces histories that must pass, and one corrupted read must then fail. Randomized tests
 * print the seed on failure, and LINEARIZABILITY_SEED=N replays just that seed.
 */

const UNKNOWN = Infinity;

function put(client: number, key: string, value: string, invokedAt: number, respondedAt: number): HistoryEntry {
  return { client, operation: { kind: 'put', key, value }, invokedAt, respondedAt };
}

function remove(client: number, key: string, invokedAt: number, respondedAt: number): HistoryEntry {
  return { client, operation: { kind: 'delete', key }, invokedAt, respondedAt };
}

function get(client: number, key: string, result: string | undefined, invokedAt: number, respondedAt: number): HistoryEntry {
  return { client, operation: { kind: 'get', key }, invokedAt, respondedAt, result };
}

function assertLinearizable(history: HistoryEntry[]): void {
  const result = checkLinearizable(history);
  assert.equal(result.linearizable, true, result.explanation);
  assert.equal(result.exhausted, undefined);
}

function assertViolation(history: HistoryEntry[], key: string, culprit: number): CheckResult {
  const result = checkLinearizable(history);
  assert.equal(result.linearizable, false, 'expected a violation');
  assert.equal(result.exhausted, undefined, result.explanation);
  assert.equal(result.key, key);
  assert.equal(result.culprit, culprit, result.explanation);
  assert.ok(result.operations?.includes(culprit), 'the explanation shows the culprit');
  assert.ok(result.explanation?.includes(`#${culprit} client ${history[culprit]!.client}`), result.explanation);
  return result;
}

describe('checkLinearizable: hand-written histories', () => {
  test('an empty history and a sequential history are linearizable', () => {
    assertLinearizable([]);
    assertLinearizable([
      get(1, 'x', undefined, 0, 1),
      put(1, 'x', 'A', 2, 3),
      get(2, 'x', 'A', 4, 5),
      put(2, 'x', 'B', 6, 7),
      get(1, 'x', 'B', 8, 9),
    ]);
  });

  test('a get concurrent with a put may see either value', () => {
    // C1: |--put A--|          C1: |--put A--|
    // C2:    |--get--| -> A    C2:    |--get--| -> (absent)
    assertLinearizable([put(1, 'x', 'A', 0, 10), get(2, 'x', 'A', 2, 8)]);
    assertLinearizable([put(1, 'x', 'A', 0, 10), get(2, 'x', undefined, 2, 8)]);
    // Concurrent puts may be ordered either way; two later reads must then agree.
    assertLinearizable([put(1, 'x', 'A', 0, 10), put(2, 'x', 'B', 0, 10), get(3, 'x', 'A', 11, 12), get(3, 'x', 'A', 13, 14)]);
    assertLinearizable([put(1, 'x', 'A', 0, 10), put(2, 'x', 'B', 0, 10), get(3, 'x', 'B', 11, 12), get(3, 'x', 'B', 13, 14)]);
    assertViolation(
      [put(1, 'x', 'A', 0, 10), put(2, 'x', 'B', 0, 10), get(3, 'x', 'B', 11, 12), get(3, 'x', 'A', 13, 14)],
      'x',
      3,
    );
  });

  test('a get returning a value never written fails', () => {
    const result = assertViolation([put(1, 'x', 'A', 0, 1), get(2, 'x', 'Z', 2, 3)], 'x', 1);
    assert.match(result.explanation!, /No operation ever writes "Z"/);
  });

  test('a stale read fails: put A, then put B, then a get invoked after both returns A', () => {
    // C1: |put A|   |put B|
    // C2:                   |get| -> A
    const history = [put(1, 'x', 'A', 0, 1), put(1, 'x', 'B', 2, 3), get(2, 'x', 'A', 4, 5)];
    const result = assertViolation(history, 'x', 2);
    assert.deepEqual(result.operations, [0, 1, 2], result.explanation);
    // Concurrent with put B instead, the same read is fine.
    assertLinearizable([put(1, 'x', 'A', 0, 1), put(1, 'x', 'B', 2, 6), get(2, 'x', 'A', 4, 5)]);
  });

  test('a get returning B before the put of B was invoked fails', () => {
    // C1:            |put B|
    // C2: |get| -> B
    assertViolation([get(2, 'x', 'B', 0, 1), put(1, 'x', 'B', 2, 3)], 'x', 0);
    assertViolation([put(1, 'x', 'A', 0, 1), get(2, 'x', 'B', 2, 3), put(1, 'x', 'B', 4, 5), get(2, 'x', 'B', 6, 7)], 'x', 1);
  });

  test('an unknown-outcome put may be seen or not, but not seen and then unseen', () => {
    // C1: |put A ......... (timed out: may or may not have been applied)
    // C2:      |get|  |get|
    assertLinearizable([put(1, 'x', 'A', 0, UNKNOWN), get(2, 'x', 'A', 5, 6)]);
    assertLinearizable([put(1, 'x', 'A', 0, UNKNOWN), get(2, 'x', undefined, 5, 6)]);
    assertLinearizable([put(1, 'x', 'A', 0, UNKNOWN), get(2, 'x', undefined, 5, 6), get(2, 'x', 'A', 7, 8)]);
    assertViolation([put(1, 'x', 'A', 0, UNKNOWN), get(2, 'x', 'A', 5, 6), get(2, 'x', undefined, 7, 8)], 'x', 2);
    // It cannot take effect before it was invoked.
    assertViolation([get(2, 'x', 'A', 0, 1), put(1, 'x', 'A', 2, UNKNOWN)], 'x', 0);
    // A later completed put overwrites it only if it took effect first.
    assertLinearizable([put(1, 'x', 'A', 0, UNKNOWN), put(2, 'x', 'B', 1, 2), get(3, 'x', 'A', 3, 4)]);
    assertViolation(
      [put(1, 'x', 'A', 0, UNKNOWN), put(2, 'x', 'B', 1, 2), get(3, 'x', 'A', 3, 4), get(3, 'x', 'B', 5, 6)],
      'x',
      3,
    );
  });

  test('an unknown-outcome get is ignored whatever it claims to have read', () => {
    assertLinearizable([put(1, 'x', 'A', 0, 1), get(2, 'x', 'garbage', 2, UNKNOWN), get(3, 'x', 'A', 3, 4)]);
  });

  test('deletes make the key absent', () => {
    assertLinearizable([put(1, 'x', 'A', 0, 1), remove(1, 'x', 2, 3), get(2, 'x', undefined, 4, 5)]);
    assertViolation([put(1, 'x', 'A', 0, 1), remove(1, 'x', 2, 3), get(2, 'x', 'A', 4, 5)], 'x', 2);
    assertViolation([put(1, 'x', 'A', 0, 1), get(2, 'x', undefined, 2, 3)], 'x', 1);
    assertLinearizable([put(1, 'x', 'A', 0, 1), remove(1, 'x', 2, 10), get(2, 'x', 'A', 3, 4), get(2, 'x', undefined, 5, 6)]);
    assertViolation(
      [put(1, 'x', 'A', 0, 1), remove(1, 'x', 2, 10), get(2, 'x', undefined, 3, 4), get(2, 'x', 'A', 5, 6)],
      'x',
      3,
    );
    // An unknown-outcome delete may or may not have happened, but only once.
    assertLinearizable([put(1, 'x', 'A', 0, 1), remove(1, 'x', 2, UNKNOWN), get(2, 'x', 'A', 3, 4), get(2, 'x', undefined, 5, 6)]);
    assertViolation(
      [put(1, 'x', 'A', 0, 1), remove(1, 'x', 2, UNKNOWN), get(2, 'x', undefined, 3, 4), get(2, 'x', 'A', 5, 6)],
      'x',
      3,
    );
  });

  test('keys are independent registers, and the failing key is named', () => {
    assertLinearizable([put(1, 'x', 'A', 0, 10), put(2, 'y', 'A', 0, 10), get(3, 'x', 'A', 11, 12), get(3, 'y', undefined, 1, 2)]);
    assertViolation([put(1, 'x', 'A', 0, 1), put(2, 'y', 'B', 0, 1), get(3, 'x', 'A', 2, 3), get(3, 'y', 'A', 4, 5)], 'y', 3);
  });

  test('equal times are concurrent between clients but ordered within one client', () => {
    // C1 hears put A acknowledged at tick 5 and reads at tick 5; C2 reads at tick 5 too.
    assertLinearizable([put(1, 'x', 'A', 0, 5), get(2, 'x', undefined, 5, 6)]);
    assertViolation([put(1, 'x', 'A', 0, 5), get(1, 'x', undefined, 5, 6)], 'x', 1);
    // An instantaneous operation still has its place in the client's order.
    assertViolation([put(1, 'x', 'A', 3, 3), get(1, 'x', undefined, 3, 3)], 'x', 1);
    assertLinearizable([put(1, 'x', 'A', 3, 3), get(2, 'x', undefined, 3, 3)]);
    // C1 writes A then B back to back: B is last, whatever C2 sees later.
    assertViolation([put(1, 'x', 'A', 0, 5), put(1, 'x', 'B', 5, 6), get(2, 'x', 'A', 7, 8)], 'x', 2);
    assertLinearizable([put(1, 'x', 'A', 0, 5), put(3, 'x', 'B', 5, 6), get(2, 'x', 'A', 7, 8)]);
  });

  test('the explanation names the shortest failing prefix, not the end of a long history', () => {
    const history: HistoryEntry[] = [];
    for (let round = 0; round < 50; round++) {
      history.push(put(1, 'x', `v${round}`, round * 10, round * 10 + 4));
      history.push(get(2, 'x', round === 20 ? 'v3' : `v${round}`, round * 10 + 5, round * 10 + 9));
    }
    const result = assertViolation(history, 'x', 41);
    assert.ok(result.operations!.length <= 5, result.explanation);
    assert.deepEqual(result.operations, [6, 40, 41], result.explanation);
  });

  test('an exhausted search says so, and a definite violation on another key is preferred', () => {
    const hard = [put(1, 'x', 'A', 0, 10), put(2, 'x', 'B', 0, 10), get(3, 'x', 'A', 11, 12)];
    const result = checkLinearizable(hard, { searchStepsMax: 1 });
    assert.equal(result.linearizable, false);
    assert.equal(result.exhausted, true);
    assert.equal(result.key, 'x');
    assert.equal(checkLinearizable(hard, { searchStepsMax: 10 }).linearizable, true);
    const withViolation = [...hard, get(4, 'y', 'never written', 0, 1)];
    assert.deepEqual(
      { ...checkLinearizable(withViolation, { searchStepsMax: 1 }), explanation: undefined },
      { linearizable: false, key: 'y', culprit: 3, operations: [3], explanation: undefined },
    );
  });

  test('malformed histories and options are rejected with stable codes', () => {
    const rejects = (history: unknown, code: ErrorCode, type: typeof TypeError | typeof RangeError, options?: unknown): void => {
      assert.throws(
        () => checkLinearizable(history as HistoryEntry[], options as { searchStepsMax?: number }),
        (error: unknown) => error instanceof type && (error as { code?: unknown }).code === code,
      );
    };
    rejects('nope', ErrorCode.invalidArgument, TypeError);
    rejects([{ client: 1, operation: { kind: 'cas', key: 'x' }, invokedAt: 0, respondedAt: 1 }], ErrorCode.invalidArgument, TypeError);
    rejects([{ client: 1, operation: { kind: 'put', key: 'x' }, invokedAt: 0, respondedAt: 1 }], ErrorCode.invalidArgument, TypeError);
    rejects([put(1, 'x', 'A', 5, 4)], ErrorCode.outOfRange, RangeError);
    rejects([put(1, 'x', 'A', Number.NaN, 4)], ErrorCode.outOfRange, RangeError);
    rejects([put(1, 'x', 'A', 0, Number.NaN)], ErrorCode.outOfRange, RangeError);
    // Client 1 cannot have two operations outstanding, even on different keys.
    rejects([put(1, 'x', 'A', 0, 10), get(1, 'y', undefined, 5, 6)], ErrorCode.outOfRange, RangeError);
    rejects([], ErrorCode.outOfRange, RangeError, { searchStepsMax: 0 });
    // After an unknown outcome the client may go on at once.
    assertLinearizable([put(1, 'x', 'A', 0, UNKNOWN), get(1, 'x', undefined, 1, 2)]);
  });
});

const SEED = process.env.LINEARIZABILITY_SEED;
const SEEDS = SEED === undefined ? 400 : 1;
const SEED_FIRST = SEED === undefined ? 1 : Number(SEED);

function forEachSeed(name: string, run: (seed: number) => void): void {
  for (let seed = SEED_FIRST; seed < SEED_FIRST + SEEDS; seed++) {
    try {
      run(seed);
    } catch (error) {
      console.error(`${name} failed at seed ${seed}; reproduce with LINEARIZABILITY_SEED=${seed} node --import tsx --test test/linearizability.test.ts`);
      throw error;
    }
  }
}

/**
 * The definition, searched by brute force over one key: some order of the operations that respects
 * real time (and each client's own order at equal times), includes every completed operation and any
 * subset of the unknown-outcome ones, and explains every completed read. Small histories only.
 */
function bruteForceLinearizable(history: readonly HistoryEntry[]): boolean {
  const keys = new Set(history.map((entry) => entry.operation.key));
  return [...keys].every((key) => {
    const operations = history
      .map((entry, index) => ({ entry, index }))
      .filter(({ entry }) => entry.operation.key === key && !(entry.operation.kind === 'get' && entry.respondedAt === UNKNOWN));
    const precedes = (before: (typeof operations)[number], after: (typeof operations)[number]): boolean => {
      if (before.entry.respondedAt < after.entry.invokedAt) return true;
      if (before.entry.client !== after.entry.client || before.entry.respondedAt === UNKNOWN) return false;
      if (before.entry.respondedAt > after.entry.invokedAt) return false;
      return before.entry.invokedAt < after.entry.invokedAt || (before.entry.invokedAt === after.entry.invokedAt && before.index < after.index);
    };
    const used = new Array<boolean>(operations.length).fill(false);
    const search = (state: string | undefined): boolean => {
      if (operations.every((operation, position) => used[position] || operation.entry.respondedAt === UNKNOWN)) return true;
      return operations.some((operation, position) => {
        if (used[position]) return false;
        if (operations.some((other, otherPosition) => !used[otherPosition] && otherPosition !== position && precedes(other, operation))) return false;
        const kind = operation.entry.operation;
        if (kind.kind === 'get' && operation.entry.result !== state) return false;
        used[position] = true;
        const found = search(kind.kind === 'put' ? kind.value : kind.kind === 'delete' ? undefined : state);
        used[position] = false;
        return found;
      });
    };
    return search(undefined);
  });
}

describe('checkLinearizable against a brute-force oracle', () => {
  test(`small random histories with random results (${SEEDS} seeds from ${SEED_FIRST})`, () => {
    let linearizableCount = 0;
    let violationCount = 0;
    forEachSeed('oracle test', (seed) => {
      const random = mulberry32(seed);
      const integer = (limit: number): number => Math.floor(random() * limit);
      const values = [undefined, 'A', 'B'];
      const history: HistoryEntry[] = [];
      const clients = 2 + integer(2);
      for (let client = 0; client < clients; client++) {
        let time = integer(3);
        for (let count = 1 + integer(3); count > 0 && history.length < 8; count--) {
          const invokedAt = time + integer(2);
          // Small integer times make ties between events of different clients common.
          const unknown = random() < 0.2;
          const respondedAt = unknown ? UNKNOWN : invokedAt + integer(4);
          const key = random() < 0.8 ? 'x' : 'y';
          const draw = random();
          if (draw < 0.35) history.push(put(client, key, values[1 + integer(2)]!, invokedAt, respondedAt));
          else if (draw < 0.45) history.push(remove(client, key, invokedAt, respondedAt));
          else history.push(get(client, key, values[integer(3)], invokedAt, respondedAt));
          time = unknown ? invokedAt + integer(3) : respondedAt;
        }
      }
      const expected = bruteForceLinearizable(history);
      const result = checkLinearizable(history);
      assert.equal(result.exhausted, undefined);
      assert.equal(result.linearizable, expected, `seed ${seed}: ${JSON.stringify(history)}\n${result.explanation ?? ''}`);
      if (expected) linearizableCount++;
      else violationCount++;
    });
    if (SEEDS > 1) {
      assert.ok(linearizableCount >= SEEDS / 5, `only ${linearizableCount} linearizable histories`);
      assert.ok(violationCount >= SEEDS / 5, `only ${violationCount} violations`);
    }
  });
});

interface SimulationOptions {
  clients: number;
  keys: number;
  operationsPerClient: number;
  /** Share of operations whose client gives up: they take effect (or not) at any later instant. */
  unknownShare: number;
  durationMax: number;
  gapMax: number;
}

interface Simulation {
  history: HistoryEntry[];
  /** For each entry: the instant its effect was applied, or undefined if it never took effect. */
  effectAt: (number | undefined)[];
}

/**
 * A real atomic register store: every operation takes effect at one instant within its interval (or,
 * for an unknown outcome, at any later instant or never), and effects are applied to a Map in instant
 * order. Times are small integers so that ties between events are common; effect instants are reals.
 */
function simulateRegisterStore(random: () => number, options: SimulationOptions): Simulation {
  const integer = (limit: number): number => Math.floor(random() * limit);
  const planned: { entry: HistoryEntry; client: number; order: number; effectAt: number | undefined }[] = [];
  for (let client = 0; client < options.clients; client++) {
    let time = integer(options.gapMax + 1);
    for (let order = 0; order < options.operationsPerClient; order++) {
      const key = `k${integer(options.keys)}`;
      const invokedAt = time + integer(options.gapMax + 1);
      const respondedAt = invokedAt + integer(options.durationMax + 1);
      const unknown = random() < options.unknownShare;
      let effectAt: number | undefined = invokedAt + random() * (respondedAt - invokedAt);
      // A client that gave up may go on while its abandoned call is still in flight somewhere.
      if (unknown) effectAt = random() < 0.5 ? invokedAt + random() * (respondedAt - invokedAt + 4 * options.durationMax) : undefined;
      const draw = random();
      const entry: HistoryEntry =
        draw < 0.4
          ? put(client, key, `c${client}.${order}`, invokedAt, unknown ? UNKNOWN : respondedAt)
          : draw < 0.5
            ? remove(client, key, invokedAt, unknown ? UNKNOWN : respondedAt)
            : get(client, key, undefined, invokedAt, unknown ? UNKNOWN : respondedAt);
      planned.push({ entry, client, order, effectAt });
      time = respondedAt;
    }
  }
  // The history lists calls in invocation order, a client's own calls in its order at equal times.
  planned.sort((left, right) => left.entry.invokedAt - right.entry.invokedAt || left.client - right.client || left.order - right.order);
  const history = planned.map((plan) => plan.entry);
  const effectAt = planned.map((plan) => plan.effectAt);
  // Apply effects in instant order; at equal instants, in call order (which keeps each client's order).
  const applied = history.map((_, index) => index).filter((index) => effectAt[index] !== undefined);
  applied.sort((left, right) => effectAt[left]! - effectAt[right]! || left - right);
  const store = new Map<string, string>();
  for (const index of applied) {
    const entry = history[index]!;
    const operation = entry.operation;
    if (operation.kind === 'put') store.set(operation.key, operation.value);
    else if (operation.kind === 'delete') store.delete(operation.key);
    else if (entry.respondedAt !== UNKNOWN) entry.result = store.get(operation.key);
    else entry.result = 'ignored: the client never heard back';
  }
  return { history, effectAt };
}

/** The register's value after each effect on `key`, with the instant it took effect, from the start. */
function timeline(simulation: Simulation, key: string): { at: number; value: string | undefined }[] {
  const points: { at: number; value: string | undefined; index: number }[] = [{ at: -Infinity, value: undefined, index: -1 }];
  simulation.history.forEach((entry, index) => {
    const at = simulation.effectAt[index];
    if (at === undefined || entry.operation.key !== key || entry.operation.kind === 'get') return;
    points.push({ at, value: entry.operation.kind === 'put' ? entry.operation.value : undefined, index });
  });
  points.sort((left, right) => left.at - right.at || left.index - right.index);
  return points;
}

/**
 * Values a get could read in SOME linearization, over-approximated: the initial absence unless a
 * completed write precedes the get, and the value of every write that may come before the get and is
 * not certainly overwritten before it (by a completed write that follows it and precedes the get).
 * A value outside this set cannot be explained by any order, so the checker must reject it.
 *
 * "Not the value at any instant of the get's interval in the simulated run" is not enough: a
 * linearization may order concurrent writes differently from the run, making another value current.
 */
function possibleReads(history: readonly HistoryEntry[], getIndex: number): Set<string | undefined> {
  const target = history[getIndex]!;
  const writes = history.filter((entry) => entry.operation.key === target.operation.key && entry.operation.kind !== 'get');
  const possible = new Set<string | undefined>();
  const overwrittenBefore = (after: number): boolean =>
    writes.some((other) => other.respondedAt !== UNKNOWN && after < other.invokedAt && other.respondedAt < target.invokedAt);
  if (!overwrittenBefore(-Infinity)) possible.add(undefined);
  for (const write of writes) {
    if (write.invokedAt > target.respondedAt || overwrittenBefore(write.respondedAt)) continue;
    possible.add(write.operation.kind === 'put' ? write.operation.value : undefined);
  }
  return possible;
}

describe('checkLinearizable on a simulated atomic register store', () => {
  test(`every history of a real register is linearizable, and one corrupted read is caught (${SEEDS} seeds from ${SEED_FIRST})`, () => {
    let staleOrFutureMutations = 0;
    let neverWrittenMutations = 0;
    let runOrderNotEnough = 0;
    forEachSeed('register store test', (seed) => {
      const random = mulberry32(seed);
      const integer = (limit: number): number => Math.floor(random() * limit);
      const simulation = simulateRegisterStore(random, {
        clients: 2 + integer(5),
        keys: 1 + integer(3),
        operationsPerClient: 5 + integer(20),
        unknownShare: 0.1,
        durationMax: 1 + integer(10),
        gapMax: integer(4),
      });
      const { history } = simulation;
      const result = checkLinearizable(history);
      assert.equal(result.linearizable, true, `seed ${seed}: ${result.explanation ?? 'exhausted'}`);

      const completedGets = history
        .map((entry, index) => ({ entry, index }))
        .filter(({ entry }) => entry.operation.kind === 'get' && entry.respondedAt !== UNKNOWN);
      if (completedGets.length === 0) return;
      const { entry: target, index: targetIndex } = completedGets[integer(completedGets.length)]!;
      const key = target.operation.key;
      const possible = possibleReads(history, targetIndex);
      // The run itself is one linearization, so every value current at an instant of the get's interval
      // in the run is possible; if not, possibleReads is wrong.
      const points = timeline(simulation, key);
      const current = new Set<string | undefined>();
      points.forEach((point, position) => {
        const until = points[position + 1]?.at ?? Infinity;
        if (point.at <= target.respondedAt && until >= target.invokedAt) current.add(point.value);
      });
      for (const value of current) assert.ok(possible.has(value), `seed ${seed}: ${String(value)} was current during #${targetIndex}`);
      assert.ok(current.has(target.result), `seed ${seed}: the read is one of the values current during it`);

      const written = new Set<string | undefined>([undefined]);
      for (const entry of history) if (entry.operation.key === key && entry.operation.kind === 'put') written.add(entry.operation.value);
      const impossible = [...written].filter((value) => !possible.has(value));
      if ([...possible].some((value) => !current.has(value))) runOrderNotEnough++;
      let corrupted: string | undefined;
      if (impossible.length > 0) {
        corrupted = impossible[integer(impossible.length)];
        staleOrFutureMutations++;
      } else {
        corrupted = 'never written';
        neverWrittenMutations++;
      }
      assert.notEqual(corrupted, target.result);
      const mutated = history.map((entry, index) => (index === targetIndex ? { ...entry, result: corrupted } : entry));
      const mutatedResult = checkLinearizable(mutated);
      assert.equal(mutatedResult.linearizable, false, `seed ${seed}: #${targetIndex} reading ${String(corrupted)} was accepted`);
      assert.equal(mutatedResult.exhausted, undefined, `seed ${seed}`);
      assert.equal(mutatedResult.key, key, `seed ${seed}`);
      // Every shorter prefix is a prefix of the original, linearizable history.
      assert.equal(mutatedResult.culprit, targetIndex, `seed ${seed}: ${mutatedResult.explanation}`);
    });
    if (SEEDS > 1) {
      assert.ok(staleOrFutureMutations >= SEEDS / 2, `only ${staleOrFutureMutations} reads corrupted to a written value (${neverWrittenMutations} to a fresh one)`);
      assert.ok(runOrderNotEnough >= 10, `only ${runOrderNotEnough} reads could see a value not current in the run`);
    }
  });

  test('scale: 20,000 operations over 200 keys from 8 clients', () => {
    const simulation = simulateRegisterStore(mulberry32(20_000), {
      clients: 8,
      keys: 200,
      operationsPerClient: 2_500,
      unknownShare: 0.02,
      durationMax: 20,
      gapMax: 3,
    });
    assert.equal(simulation.history.length, 20_000);
    const started = performance.now();
    const result = checkLinearizable(simulation.history);
    const elapsedMs = performance.now() - started;
    assert.equal(result.linearizable, true, result.explanation);
    console.log(`checked 20,000 operations over 200 keys in ${elapsedMs.toFixed(1)} ms`);
    assert.ok(elapsedMs < 2_000, `took ${elapsedMs.toFixed(0)} ms`);
  });

  test('scale: 4,000 operations on one hot key from 8 clients, with a corrupted read near the end', () => {
    const simulation = simulateRegisterStore(mulberry32(4_000), {
      clients: 8,
      keys: 1,
      operationsPerClient: 500,
      unknownShare: 0.02,
      durationMax: 20,
      gapMax: 3,
    });
    let started = performance.now();
    const result = checkLinearizable(simulation.history);
    const linearizableMs = performance.now() - started;
    assert.equal(result.linearizable, true, result.explanation);
    const targetIndex = simulation.history.findLastIndex((entry) => entry.operation.kind === 'get' && entry.respondedAt !== UNKNOWN);
    const mutated = simulation.history.map((entry, index) => (index === targetIndex ? { ...entry, result: 'never written' } : entry));
    started = performance.now();
    const mutatedResult = checkLinearizable(mutated);
    const violationMs = performance.now() - started;
    assert.equal(mutatedResult.culprit, targetIndex, mutatedResult.explanation);
    console.log(`one hot key: 4,000 operations in ${linearizableMs.toFixed(1)} ms, with the violation explained in ${violationMs.toFixed(1)} ms`);
    assert.ok(linearizableMs + violationMs < 2_000);
  });
});
