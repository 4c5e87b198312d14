/**
 * A linearizability checker for key-value client histories, used by the deterministic simulator and
 * by fault-injection tests. Pure: no Node built-ins, clocks, timers or randomness, so the simulator
 * can run it anywhere and a failing seed always checks the same way.
 *
 * The model is a map in which every key is an independent register, initially absent. Linearizability
 * is compositional (Herlihy & Wing 1990), so the history is partitioned by key and each key's
 * sub-history is searched on its own with the Wing & Gong depth-first search, memoised as in Lowe,
 * "Testing for linearizability" (2016): a node of the search is the set of operations linearized so far
 * plus the register state, and a node already explored is never explored again.
 *
 * Real-time order: operation A precedes operation B when A's response came strictly before B's
 * invocation (equal times are concurrent, since two events stamped with the same tick may have happened
 * in either order), and also when both come from the same client, A completed and A responded no
 * later than B was invoked (a client's own operations are sequential even within one tick).
 *
 * Each key is checked under this order restricted to its own operations.
 *
 * An operation whose outcome is unknown (respondedAt = Infinity) may take effect at any instant after
 * its invocation, or never. Never is the same as "after every completed operation", where nothing
 * observes it, so the search succeeds as soon as every completed operation is linearized. A get of
 * unknown outcome observed nothing and is left out.
 */
import { assert } from '../../native-free-core/assert.js';
import { ErrorCode } from '../../native-free-core/errors.js';

export type Operation =
  | { kind: 'put'; key: string; value: string }
  | { kind: 'delete'; key: string }
  | { kind: 'get'; key: string };

export interface HistoryEntry {
  /** The client (process) that issued it; a client has at most one operation outstanding at a time. */
  client: number;
  operation: Operation;
  /** Logical or real time the call was made. */
  invokedAt: number;
  /**
   * Time the response arrived, or Infinity when the outcome is unknown (the client crashed, timed out,
   * or got a "may or may not have been applied" error): such an operation MAY have taken effect at any
   * point after invokedAt, or not at all.
   */
  respondedAt: number;
  /** For a completed get: the value read (undefined = absent). Ignored for puts/deletes and unknown outcomes. */
  result?: string | undefined;
}

export interface CheckResult {
  linearizable: boolean;
  /**
   * When false: the key whose sub-history has no linearization, and a short human-readable explanation
   * (the shortest prefix, by response time, of that key's history that already has no linearization,
   * and the operations in it that bear on the failure).
   */
  key?: string;
  explanation?: string;
  /**
   * When a violation was found: the index in `history` of the operation whose response ends the
   * shortest non-linearizable prefix (usually the read that cannot be explained), and the indices of
   * the operations the explanation shows, in invocation order.
   */
  culprit?: number;
  operations?: number[];
  /** True if the search gave up (budget exhausted) before deciding; linearizable is then false and callers treat it as a failure to investigate. */
  exhausted?: boolean;
}

export interface CheckOptions {
  /** Search steps (candidate operations tried) allowed per key before giving up with `exhausted`. */
  searchStepsMax?: number;
}

export const SEARCH_STEPS_MAX_DEFAULT = 5_000_000;

/** Operations the explanation lists at most; the rest are counted. */
const EXPLANATION_OPERATIONS_MAX = 24;

const KIND_PUT = 0;
const KIND_DELETE = 1;
const KIND_GET = 2;

/** The order in which the search tries the operations that could be linearized next (see searchKey). */
const PHASE_OBSERVED = 0;
const PHASE_UNOBSERVED = 1;
const PHASE_FORCED = 2;

/** The register state "absent"; values present are numbered from 1 per key. */
const VALUE_ABSENT = 0;

function outOfRange(message: string): RangeError & { code: ErrorCode } {
  return Object.assign(new RangeError(message), { code: ErrorCode.outOfRange });
}

function invalidArgument(message: string): TypeError & { code: ErrorCode } {
  return Object.assign(new TypeError(message), { code: ErrorCode.invalidArgument });
}

/** One operation of one key, as the search sees it. */
interface KeyOperation {
  /** Index in the caller's history. */
  historyIndex: number;
  client: number;
  kind: number;
  /** For a put: the value id written. For a get: the value id read. For a delete: VALUE_ABSENT. */
  argument: number;
  invokedAt: number;
  /** Infinity when the outcome is unknown. */
  respondedAt: number;
}

interface KeyHistory {
  key: string;
  operations: KeyOperation[];
  /** Value ids back to text, for explanations; index 0 (absent) is undefined. */
  values: (string | undefined)[];
  /** Value ids that some put of this key writes. */
  writtenValues: Set<number>;
}

/**
 * The search's view of one key: operations in slots ordered by invocation, each either completed
 * (with a rank in response order) or of unknown outcome (with a bit in the unknown set).
 */
interface Problem {
  slotCount: number;
  historyIndex: Int32Array;
  kind: Uint8Array;
  argument: Int32Array;
  invokedAt: Float64Array;
  respondedAt: Float64Array;
  /** Rank among completed operations by (respondedAt, invokedAt, slot); -1 if the outcome is unknown. */
  responseRank: Int32Array;
  /** Index among operations of unknown outcome; -1 if completed. */
  unknownIndex: Int32Array;
  /** Slot of the same client's latest completed operation invoked before this one, or -1. */
  predecessor: Int32Array;
  completedCount: number;
  unknownCount: number;
  rankToSlot: Int32Array;
  /** One more than the largest value id written or read. */
  valueCount: number;
}

type Verdict = 'linearizable' | 'violation' | 'exhausted';

interface SearchOutcome {
  verdict: Verdict;
  steps: number;
  /**
   * The most completed operations, in response order, that one valid partial linearization covered:
   * the prefix of the history cut at the response of the one before is linearizable, so the shortest
   * failing prefix ends at this rank or later.
   */
  progress: number;
}

function validate(history: readonly HistoryEntry[], options: CheckOptions | undefined): number {
  if (!Array.isArray(history)) throw invalidArgument('history must be an array of HistoryEntry');
  let searchStepsMax = SEARCH_STEPS_MAX_DEFAULT;
  if (options !== undefined) {
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    if (options.searchStepsMax !== undefined) {
      if (!Number.isSafeInteger(options.searchStepsMax) || options.searchStepsMax < 1) {
        throw outOfRange(`options.searchStepsMax must be a positive integer, got ${String(options.searchStepsMax)}`);
      }
      searchStepsMax = options.searchStepsMax;
    }
  }
  history.forEach((entry, index) => {
    if (typeof entry !== 'object' || entry === null) throw invalidArgument(`history[${index}] must be an object`);
    if (!Number.isSafeInteger(entry.client)) throw invalidArgument(`history[${index}].client must be an integer`);
    const operation = entry.operation as Operation | undefined;
    if (typeof operation !== 'object' || operation === null) throw invalidArgument(`history[${index}].operation must be an object`);
    if (operation.kind !== 'put' && operation.kind !== 'delete' && operation.kind !== 'get') {
      throw invalidArgument(`history[${index}].operation.kind must be 'put', 'delete' or 'get', got ${String((operation as { kind: unknown }).kind)}`);
    }
    if (typeof operation.key !== 'string') throw invalidArgument(`history[${index}].operation.key must be a string`);
    if (operation.kind === 'put' && typeof operation.value !== 'string') {
      throw invalidArgument(`history[${index}].operation.value must be a string`);
    }
    if (typeof entry.invokedAt !== 'number' || !Number.isFinite(entry.invokedAt)) {
      throw outOfRange(`history[${index}].invokedAt must be a finite number, got ${String(entry.invokedAt)}`);
    }
    if (typeof entry.respondedAt !== 'number' || Number.isNaN(entry.respondedAt) || entry.respondedAt < entry.invokedAt) {
      throw outOfRange(
        `history[${index}].respondedAt must be Infinity or a number >= invokedAt (${entry.invokedAt}), got ${String(entry.respondedAt)}`,
      );
    }
    const completedGet = operation.kind === 'get' && entry.respondedAt !== Infinity;
    if (completedGet && entry.result !== undefined && typeof entry.result !== 'string') {
      throw invalidArgument(`history[${index}].result must be a string or undefined`);
    }
  });

  // A client has at most one operation outstanding: once it gets a response it may issue the next
  // call, but not before. (After an unknown outcome it may go on at once: the old call is abandoned.)
  const byClient = new Map<number, number[]>();
  history.forEach((entry, index) => {
    let indices = byClient.get(entry.client);
    if (indices === undefined) byClient.set(entry.client, (indices = []));
    indices.push(index);
  });
  for (const [client, indices] of byClient) {
    indices.sort((left, right) => history[left]!.invokedAt - history[right]!.invokedAt || left - right);
    for (let position = 1; position < indices.length; position++) {
      const earlier = history[indices[position - 1]!]!;
      const later = history[indices[position]!]!;
      if (earlier.respondedAt !== Infinity && earlier.respondedAt > later.invokedAt) {
        throw outOfRange(
          `client ${client} has two operations outstanding: history[${indices[position]}] was invoked at ` +
            `${later.invokedAt}, before history[${indices[position - 1]}] responded at ${earlier.respondedAt}`,
        );
      }
    }
  }
  return searchStepsMax;
}

function partitionByKey(history: readonly HistoryEntry[]): KeyHistory[] {
  const keys = new Map<string, KeyHistory & { valueIds: Map<string, number> }>();
  history.forEach((entry, historyIndex) => {
    const operation = entry.operation;
    let keyHistory = keys.get(operation.key);
    if (keyHistory === undefined) {
      keyHistory = { key: operation.key, operations: [], values: [undefined], writtenValues: new Set(), valueIds: new Map() };
      keys.set(operation.key, keyHistory);
    }
    const intern = (value: string | undefined): number => {
      if (value === undefined) return VALUE_ABSENT;
      let id = keyHistory.valueIds.get(value);
      if (id === undefined) {
        id = keyHistory.values.length;
        keyHistory.valueIds.set(value, id);
        keyHistory.values.push(value);
      }
      return id;
    };
    const base = { historyIndex, client: entry.client, invokedAt: entry.invokedAt, respondedAt: entry.respondedAt };
    if (operation.kind === 'put') {
      const argument = intern(operation.value);
      keyHistory.writtenValues.add(argument);
      keyHistory.operations.push({ ...base, kind: KIND_PUT, argument });
    } else if (operation.kind === 'delete') {
      keyHistory.operations.push({ ...base, kind: KIND_DELETE, argument: VALUE_ABSENT });
    } else if (entry.respondedAt !== Infinity) {
      // A get of unknown outcome observed nothing and changes nothing: it is left out.
      keyHistory.operations.push({ ...base, kind: KIND_GET, argument: intern(entry.result) });
    }
  });
  return [...keys.values()];
}

function buildProblem(operations: readonly KeyOperation[]): Problem {
  const slotCount = operations.length;
  const ordered = [...operations].sort(
    (left, right) => left.invokedAt - right.invokedAt || left.historyIndex - right.historyIndex,
  );
  const problem: Problem = {
    slotCount,
    historyIndex: new Int32Array(slotCount),
    kind: new Uint8Array(slotCount),
    argument: new Int32Array(slotCount),
    invokedAt: new Float64Array(slotCount),
    respondedAt: new Float64Array(slotCount),
    responseRank: new Int32Array(slotCount).fill(-1),
    unknownIndex: new Int32Array(slotCount).fill(-1),
    predecessor: new Int32Array(slotCount).fill(-1),
    completedCount: 0,
    unknownCount: 0,
    rankToSlot: new Int32Array(0),
    valueCount: 1,
  };
  const completedSlots: number[] = [];
  const lastCompletedOfClient = new Map<number, number>();
  ordered.forEach((operation, slot) => {
    problem.historyIndex[slot] = operation.historyIndex;
    problem.kind[slot] = operation.kind;
    problem.argument[slot] = operation.argument;
    problem.invokedAt[slot] = operation.invokedAt;
    problem.respondedAt[slot] = operation.respondedAt;
    problem.valueCount = Math.max(problem.valueCount, operation.argument + 1);
    const predecessor = lastCompletedOfClient.get(operation.client);
    if (predecessor !== undefined) {
      assert(problem.respondedAt[predecessor]! <= operation.invokedAt, 'a client has one completed operation outstanding');
      problem.predecessor[slot] = predecessor;
    }
    if (operation.respondedAt === Infinity) {
      assert(operation.kind !== KIND_GET, 'gets of unknown outcome are left out');
      problem.unknownIndex[slot] = problem.unknownCount++;
    } else {
      completedSlots.push(slot);
      lastCompletedOfClient.set(operation.client, slot);
    }
  });
  completedSlots.sort(
    (left, right) =>
      problem.respondedAt[left]! - problem.respondedAt[right]! || problem.invokedAt[left]! - problem.invokedAt[right]! || left - right,
  );
  problem.completedCount = completedSlots.length;
  problem.rankToSlot = Int32Array.from(completedSlots);
  completedSlots.forEach((slot, rank) => (problem.responseRank[slot] = rank));
  return problem;
}

/** Builds a 32-bit number into two UTF-16 code units of a cache key. */
function pushNumber(codes: number[], value: number): void {
  codes.push(value >>> 16, value & 0xffff);
}

function codesToString(codes: readonly number[]): string {
  // String.fromCharCode takes its codes as arguments; chunks keep it far below engine argument limits.
  const chunk = 8192;
  if (codes.length <= chunk) return String.fromCharCode(...codes);
  let text = '';
  for (let start = 0; start < codes.length; start += chunk) text += String.fromCharCode(...codes.slice(start, start + chunk));
  return text;
}

/**
 * The memoised Wing & Gong search over one key. Returns as soon as every completed operation has been
 * linearized; returns 'violation' when the whole (pruned, memoised) tree is explored without success.
 *
 * Four reductions keep it small. Each preserves the answer: from any linearization of a node one can
 * build another that the pruned search follows, so a node it abandons has none.
 * - Just in time: an operation can be linearized next only if no unlinearized completed operation
 *   precedes it, i.e. it was invoked no later than the earliest response among them (Lowe).
 * - A completed get that can go next and reads the current state is linearized at once, with no
 *   alternatives: it changes nothing, so any linearization can be reordered to start with it.
 * - A node is abandoned as soon as some completed get still to be linearized reads a value that is
 *   not the current state and that no write still to be linearized, invoked before the get responded,
 *   writes: the read can never be explained below it. This finds a wrong order of concurrent writes
 *   right away instead of at the read, many choices deeper. It is strongest when every put writes a
 *   distinct value, which is how histories should be generated (reads then name their write).
 * - An operation of unknown outcome is linearized only where it changes the state and a completed get
 *   that reads the new state can go right after it. Such a write that no read observes before the next
 *   write can be dropped from any linearization (it then never took effect) without changing what any
 *   read sees; once those are dropped, each remaining one is directly followed by a read of its value.
 *   Without this, each abandoned write would double the states to explore for the rest of the key.
 * Writes whose value a get among the candidates reads are tried before the others, which only changes
 * how soon a linearization is found.
 *
 * The cache key is exact and small. Let k be the first unlinearized completed operation in response
 * order: every completed operation before it is linearized, and every linearized one after it is still
 * concurrent with its response (at most two per client: one ending and one starting then), so the set
 * is (k, those after k, the bit set of unknown-outcome operations linearized), plus the register state.
 * Memory is bounded by the step budget: each step adds at most one cache entry of a few dozen bytes.
 */
function searchKey(problem: Problem, searchStepsMax: number): SearchOutcome {
  const { slotCount, kind, argument, invokedAt, respondedAt, responseRank, unknownIndex, predecessor, completedCount, rankToSlot } =
    problem;
  if (completedCount === 0) return { verdict: 'linearizable', steps: 0, progress: 0 };

  // Two doubly linked lists of unlinearized slots in invocation order (completed, then unknown outcome),
  // so that a slot unlinks on linearize and relinks in place on backtrack (dancing links).
  const headCompleted = slotCount;
  const headUnknown = slotCount + 1;
  const next = new Int32Array(slotCount + 2).fill(-1);
  const previous = new Int32Array(slotCount + 2).fill(-1);
  let tailCompleted = headCompleted;
  let tailUnknown = headUnknown;
  for (let slot = 0; slot < slotCount; slot++) {
    if (responseRank[slot]! >= 0) {
      next[tailCompleted] = slot;
      previous[slot] = tailCompleted;
      tailCompleted = slot;
    } else {
      next[tailUnknown] = slot;
      previous[slot] = tailUnknown;
      tailUnknown = slot;
    }
  }

  const linearized = new Uint8Array(slotCount);
  const unknownBits = new Uint32Array(Math.ceil(problem.unknownCount / 32));
  /** Ranks above `firstOpen` already linearized, ascending; ahead[0..aheadLength). */
  const ahead = new Int32Array(completedCount);
  let aheadLength = 0;
  /** The first unlinearized completed operation in response order. */
  let firstOpen = 0;
  let state = VALUE_ABSENT;
  let progress = 0;

  // The path from the root: the slot linearized at each depth and what to restore when undoing it.
  const pathSlot = new Int32Array(slotCount);
  const pathState = new Int32Array(slotCount);
  const pathFirstOpen = new Int32Array(slotCount);
  /** How the slot at each depth was chosen: PHASE_OBSERVED, PHASE_UNOBSERVED or PHASE_FORCED. */
  const pathPhase = new Uint8Array(slotCount);
  let depth = 0;

  // Per value: its writes in invocation order and its completed gets in response order, each with a
  // cursor at the first one not yet linearized. A value whose first pending get responded before its
  // first pending write was invoked can no longer be read by that get unless it is the state already.
  const valueCount = problem.valueCount;
  const writerStart = new Int32Array(valueCount + 1);
  const readerStart = new Int32Array(valueCount + 1);
  for (let slot = 0; slot < slotCount; slot++) {
    if (kind[slot] === KIND_GET) readerStart[argument[slot]! + 1]!++;
    else writerStart[argument[slot]! + 1]!++;
  }
  for (let value = 0; value < valueCount; value++) {
    writerStart[value + 1]! += writerStart[value]!;
    readerStart[value + 1]! += readerStart[value]!;
  }
  const writerSlots = new Int32Array(writerStart[valueCount]!);
  const readerSlots = new Int32Array(readerStart[valueCount]!);
  const firstWriter = writerStart.slice(0, valueCount);
  const firstReader = readerStart.slice(0, valueCount);
  /** Each slot's position in writerSlots or readerSlots. */
  const listPosition = new Int32Array(slotCount);
  for (let slot = 0; slot < slotCount; slot++) {
    if (kind[slot] === KIND_GET) continue;
    listPosition[slot] = firstWriter[argument[slot]!]!++;
    writerSlots[listPosition[slot]!] = slot;
  }
  for (let rank = 0; rank < completedCount; rank++) {
    const slot = rankToSlot[rank]!;
    if (kind[slot] !== KIND_GET) continue;
    listPosition[slot] = firstReader[argument[slot]!]!++;
    readerSlots[listPosition[slot]!] = slot;
  }
  firstWriter.set(writerStart.subarray(0, valueCount));
  firstReader.set(readerStart.subarray(0, valueCount));
  const unreadable = (value: number): boolean => {
    const reader = firstReader[value]!;
    if (reader === readerStart[value + 1]) return false;
    const writer = firstWriter[value]!;
    return writer === writerStart[value + 1] || invokedAt[writerSlots[writer]!]! > respondedAt[readerSlots[reader]!]!;
  };
  let unreadableValues = 0;
  for (let value = 0; value < valueCount; value++) if (unreadable(value)) unreadableValues++;
  /** Moves the cursor of slot's value after slot was lifted (or back after it was unlifted). */
  const track = (slot: number, lifted: boolean): void => {
    const value = argument[slot]!;
    const before = unreadable(value);
    const isGet = kind[slot] === KIND_GET;
    const first = isGet ? firstReader : firstWriter;
    const position = listPosition[slot]!;
    if (!lifted) {
      if (position < first[value]!) first[value] = position;
    } else if (position === first[value]) {
      const list = isGet ? readerSlots : writerSlots;
      const end = (isGet ? readerStart : writerStart)[value + 1]!;
      let cursor = position;
      while (cursor < end && linearized[list[cursor]!] === 1) cursor++;
      first[value] = cursor;
    }
    unreadableValues += Number(unreadable(value)) - Number(before);
  };
  const doomed = (): boolean => unreadableValues > Number(unreadable(state));

  const explored = new Set<string>();
  const codes: number[] = [];
  let steps = 0;

  const lift = (slot: number): void => {
    assert(linearized[slot] === 0, 'lift: slot is not yet linearized');
    linearized[slot] = 1;
    track(slot, true);
    next[previous[slot]!] = next[slot]!;
    if (next[slot]! !== -1) previous[next[slot]!] = previous[slot]!;
    const rank = responseRank[slot]!;
    if (rank < 0) {
      const bit = unknownIndex[slot]!;
      unknownBits[bit >>> 5] = unknownBits[bit >>> 5]! | (1 << (bit & 31));
    } else if (rank === firstOpen) {
      const before = firstOpen;
      firstOpen++;
      while (firstOpen < completedCount && linearized[rankToSlot[firstOpen]!] === 1) firstOpen++;
      // Every lift follows a step the model accepted, so the path is a valid partial linearization.
      progress = Math.max(progress, firstOpen);
      // The ranks passed over were exactly the first entries of `ahead`.
      const passed = firstOpen - before - 1;
      assert(passed <= aheadLength && (passed === 0 || ahead[passed - 1] === firstOpen - 1), 'lift: ahead holds the passed ranks');
      ahead.copyWithin(0, passed, aheadLength);
      aheadLength -= passed;
    } else {
      assert(rank > firstOpen, 'lift: completed ranks below firstOpen are all linearized');
      let position = aheadLength;
      while (position > 0 && ahead[position - 1]! > rank) {
        ahead[position] = ahead[position - 1]!;
        position--;
      }
      ahead[position] = rank;
      aheadLength++;
    }
  };

  const unlift = (slot: number, firstOpenBefore: number): void => {
    assert(linearized[slot] === 1, 'unlift: slot is linearized');
    linearized[slot] = 0;
    track(slot, false);
    // Undone in the reverse order of lift, so the neighbours recorded in the slot are current again.
    next[previous[slot]!] = slot;
    if (next[slot]! !== -1) previous[next[slot]!] = slot;
    const rank = responseRank[slot]!;
    if (rank < 0) {
      const bit = unknownIndex[slot]!;
      unknownBits[bit >>> 5] = unknownBits[bit >>> 5]! & ~(1 << (bit & 31));
    } else if (rank === firstOpenBefore) {
      const passed = firstOpen - firstOpenBefore - 1;
      ahead.copyWithin(passed, 0, aheadLength);
      for (let index = 0; index < passed; index++) ahead[index] = firstOpenBefore + 1 + index;
      aheadLength += passed;
      firstOpen = firstOpenBefore;
    } else {
      let position = 0;
      while (ahead[position]! !== rank) position++;
      assert(position < aheadLength, 'unlift: rank is in ahead');
      ahead.copyWithin(position, position + 1, aheadLength);
      aheadLength--;
    }
  };

  const cacheKey = (): string => {
    codes.length = 0;
    pushNumber(codes, firstOpen);
    pushNumber(codes, state);
    pushNumber(codes, aheadLength);
    for (let index = 0; index < aheadLength; index++) pushNumber(codes, ahead[index]!);
    for (const word of unknownBits) pushNumber(codes, word);
    return codesToString(codes);
  };

  /** The candidate after `slot` at this node: completed slots first, then unknown ones, all invoked by `openResponse`. */
  const candidateAfter = (slot: number, openResponse: number): number => {
    let candidate = next[slot]!;
    if (candidate !== -1 && invokedAt[candidate]! <= openResponse) return candidate;
    if (slot !== headCompleted && (slot === headUnknown || responseRank[slot]! < 0)) return -1;
    candidate = next[headUnknown]!;
    return candidate !== -1 && invokedAt[candidate]! <= openResponse ? candidate : -1;
  };

  /** Linearizes slot (if its node is new and not doomed) and descends; false otherwise. */
  const descend = (slot: number, stateAfter: number, phase: number): boolean => {
    const firstOpenBefore = firstOpen;
    const stateBefore = state;
    lift(slot);
    state = stateAfter;
    const key = doomed() ? undefined : cacheKey();
    if (key === undefined || explored.has(key)) {
      state = stateBefore;
      unlift(slot, firstOpenBefore);
      return false;
    }
    explored.add(key);
    pathSlot[depth] = slot;
    pathState[depth] = stateBefore;
    pathFirstOpen[depth] = firstOpenBefore;
    pathPhase[depth] = phase;
    depth++;
    return true;
  };

  // Where the scan of the current node resumes: after `resumeAfter` in phase `resumePhase`, or from
  // the start (headCompleted, PHASE_OBSERVED) on a node entered for the first time.
  let resumeAfter = headCompleted;
  let resumePhase = PHASE_OBSERVED;

  /** Undoes the path up to the deepest choice with alternatives left; false when the root is exhausted. */
  const backtrack = (): boolean => {
    while (depth > 0) {
      depth--;
      const slot = pathSlot[depth]!;
      unlift(slot, pathFirstOpen[depth]!);
      state = pathState[depth]!;
      // A forced read failing means its node fails: it had no alternatives, so go up again.
      if (pathPhase[depth] !== PHASE_FORCED) {
        resumeAfter = slot;
        resumePhase = pathPhase[depth]!;
        return true;
      }
    }
    return false;
  };

  // Values read by a completed get that could be linearized next, stamped with the visit of the node.
  const readableStamp = new Int32Array(problem.valueCount);
  let visit = 0;

  if (doomed()) return { verdict: 'violation', steps, progress };
  for (;;) {
    if (firstOpen === completedCount) return { verdict: 'linearizable', steps, progress };
    const openResponse = respondedAt[rankToSlot[firstOpen]!]!;
    const fresh = resumeAfter === headCompleted && resumePhase === PHASE_OBSERVED;

    let descended = false;
    let blocked = false;
    visit++;
    for (let slot = next[headCompleted]!; slot !== -1 && invokedAt[slot]! <= openResponse && !blocked && !descended; slot = next[slot]!) {
      if (kind[slot] !== KIND_GET) continue;
      const before = predecessor[slot]!;
      if (before !== -1 && linearized[before] === 0) continue;
      readableStamp[argument[slot]!] = visit;
      if (!fresh || argument[slot] !== state) continue;
      if (++steps > searchStepsMax) return { verdict: 'exhausted', steps, progress };
      if (descend(slot, state, PHASE_FORCED)) descended = true;
      else blocked = true;
    }

    // Writes whose value a get among the candidates reads come first: most linearizations continue
    // with such a write and its reads. Unknown-outcome writes are only tried there.
    for (let phase = resumePhase; phase <= PHASE_UNOBSERVED && !descended && !blocked; phase++) {
      const startAfter = phase === resumePhase ? resumeAfter : headCompleted;
      for (let slot = candidateAfter(startAfter, openResponse); slot !== -1; slot = candidateAfter(slot, openResponse)) {
        const completed = responseRank[slot]! >= 0;
        if (!completed && phase === PHASE_UNOBSERVED) break;
        const operationKind = kind[slot]!;
        // Every get that could go next and reads the state was forced above, so the rest fail here.
        if (operationKind === KIND_GET) continue;
        const before = predecessor[slot]!;
        if (before !== -1 && linearized[before] === 0) continue;
        const stateAfter = operationKind === KIND_PUT ? argument[slot]! : VALUE_ABSENT;
        const observed = readableStamp[stateAfter] === visit;
        if (observed !== (phase === PHASE_OBSERVED)) continue;
        if (!completed && stateAfter === state) continue;
        if (++steps > searchStepsMax) return { verdict: 'exhausted', steps, progress };
        if (descend(slot, stateAfter, phase)) {
          descended = true;
          break;
        }
      }
    }
    if (descended) {
      resumeAfter = headCompleted;
      resumePhase = PHASE_OBSERVED;
      continue;
    }
    if (!backtrack()) return { verdict: 'violation', steps, progress };
  }
}

/**
 * The key's history cut at the response of the completed operation of the given rank: completed
 * operations up to that rank stay completed, every other operation invoked by then becomes one of
 * unknown outcome (it was still pending), and later operations are dropped. If a prefix has no
 * linearization, no longer prefix has one, which makes the shortest failing prefix a binary search.
 */
function prefixOperations(keyHistory: KeyHistory, problem: Problem, rank: number): KeyOperation[] {
  const cutoffSlot = problem.rankToSlot[rank]!;
  const cutoffAt = problem.respondedAt[cutoffSlot]!;
  const kept = new Set<number>();
  for (let index = 0; index <= rank; index++) kept.add(problem.historyIndex[problem.rankToSlot[index]!]!);
  const operations: KeyOperation[] = [];
  for (const operation of keyHistory.operations) {
    if (kept.has(operation.historyIndex)) operations.push(operation);
    else if (operation.invokedAt <= cutoffAt && operation.kind !== KIND_GET) operations.push({ ...operation, respondedAt: Infinity });
  }
  return operations;
}

function describeTime(time: number): string {
  return String(time);
}

function describeOperation(entry: HistoryEntry, historyIndex: number, pendingAtCutoff: boolean): string {
  const operation = entry.operation;
  const value = (text: string | undefined): string => (text === undefined ? '(absent)' : JSON.stringify(text));
  let what: string;
  if (operation.kind === 'put') what = `put ${value(operation.value)}`;
  else if (operation.kind === 'delete') what = 'delete';
  else what = `get -> ${value(entry.result)}`;
  const unknown = entry.respondedAt === Infinity;
  const interval = unknown
    ? `[${describeTime(entry.invokedAt)}, ?) outcome unknown`
    : `[${describeTime(entry.invokedAt)}, ${describeTime(entry.respondedAt)}]${pendingAtCutoff ? ' still pending then' : ''}`;
  return `#${historyIndex} client ${entry.client} ${what} ${interval}`;
}

/**
 * Explains a violation on one key: finds the shortest failing prefix (by response time) and lists the
 * operations in it that bear on its last response: those overlapping the window from the latest write
 * that completed before that operation was invoked up to its response, and every write of the value it read.
 */
function explain(
  history: readonly HistoryEntry[],
  keyHistory: KeyHistory,
  problem: Problem,
  progress: number,
  searchStepsMax: number,
): { explanation: string; culprit: number; operations: number[] } {
  // The shortest failing prefix ends at a rank in [progress, failing]. The whole key fails, and so does
  // the prefix at any read of a value that no write invoked by the read's response writes.
  const earliestWriteAt = new Float64Array(problem.valueCount).fill(Infinity);
  earliestWriteAt[VALUE_ABSENT] = -Infinity;
  for (let slot = 0; slot < problem.slotCount; slot++) {
    if (problem.kind[slot] === KIND_GET) continue;
    const value = problem.argument[slot]!;
    earliestWriteAt[value] = Math.min(earliestWriteAt[value]!, problem.invokedAt[slot]!);
  }
  let failing = problem.completedCount - 1;
  for (let rank = 0; rank < failing; rank++) {
    const slot = problem.rankToSlot[rank]!;
    if (problem.kind[slot] === KIND_GET && earliestWriteAt[problem.argument[slot]!]! > problem.respondedAt[slot]!) failing = rank;
  }
  assert(progress <= failing, 'explain: the search progressed past a failing prefix');

  let low = progress;
  let high = failing;
  let exhausted = false;
  /** Searches the prefix ending at rank and narrows [low, high]; true if it fails. */
  const probe = (rank: number): boolean => {
    const outcome = searchKey(buildProblem(prefixOperations(keyHistory, problem, rank)), searchStepsMax);
    if (outcome.verdict === 'exhausted') {
      // Longer prefixes are no easier: stop with `high`, which is known to fail, maybe not the shortest.
      exhausted = true;
      return false;
    }
    if (outcome.verdict === 'linearizable') {
      low = rank + 1;
      return false;
    }
    high = rank;
    low = Math.max(low, outcome.progress);
    return true;
  };
  // The prefix just before the known failing one is the usual answer; otherwise gallop up from the
  // lower bound (cheap, short prefixes first) and bisect.
  if (low < high) probe(high - 1);
  for (let stride = 1; low < high && !exhausted; stride *= 2) {
    if (probe(Math.min(low + stride - 1, high - 1))) break;
  }
  while (low < high && !exhausted) probe(low + ((high - low) >>> 1));
  const rank = high;
  const culpritSlot = problem.rankToSlot[rank]!;
  const culprit = problem.historyIndex[culpritSlot]!;
  const culpritEntry = history[culprit]!;
  const cutoffAt = culpritEntry.respondedAt;
  const prefix = prefixOperations(keyHistory, problem, rank);

  let floorWrite: KeyOperation | undefined;
  for (const operation of prefix) {
    if (operation.kind === KIND_GET || operation.respondedAt >= culpritEntry.invokedAt) continue;
    if (floorWrite === undefined || operation.respondedAt > floorWrite.respondedAt) floorWrite = operation;
  }
  const windowFrom = floorWrite === undefined ? -Infinity : floorWrite.invokedAt;
  const readValue = problem.kind[culpritSlot] === KIND_GET ? problem.argument[culpritSlot]! : -1;
  const bearing = prefix.filter(
    (operation) =>
      operation.historyIndex === culprit ||
      history[operation.historyIndex]!.respondedAt >= windowFrom ||
      (readValue !== -1 && operation.kind !== KIND_GET && operation.argument === readValue),
  );
  bearing.sort((left, right) => left.invokedAt - right.invokedAt || left.historyIndex - right.historyIndex);
  // Past the limit, keep the operation itself, the writes of the value it read, then the latest others.
  const essential = (operation: KeyOperation): boolean =>
    operation.historyIndex === culprit || (readValue !== -1 && operation.kind !== KIND_GET && operation.argument === readValue);
  let shown = bearing;
  if (bearing.length > EXPLANATION_OPERATIONS_MAX) {
    let room = EXPLANATION_OPERATIONS_MAX - bearing.filter(essential).length;
    const keep = new Set<KeyOperation>();
    for (let index = bearing.length - 1; index >= 0; index--) {
      const operation = bearing[index]!;
      if (essential(operation)) keep.add(operation);
      else if (room-- > 0) keep.add(operation);
    }
    shown = bearing.filter((operation) => keep.has(operation));
  }

  const unknownCount = prefix.filter((operation) => operation.respondedAt === Infinity).length;
  const lines: string[] = [];
  lines.push(
    `key ${JSON.stringify(keyHistory.key)} is not linearizable. The shortest failing prefix of its history ends ` +
      `with the response of #${culprit} at ${describeTime(cutoffAt)}: no order of the ${prefix.length} operations ` +
      `invoked by then (${unknownCount} of them of unknown outcome or still pending) explains every completed one.` +
      (exhausted ? ' (A shorter prefix may fail too: its search ran out of budget.)' : ''),
  );
  if (readValue !== -1 && readValue !== VALUE_ABSENT && !keyHistory.writtenValues.has(readValue)) {
    lines.push(`No operation ever writes ${JSON.stringify(keyHistory.values[readValue])} to this key.`);
  }
  const omitted = prefix.length - shown.length;
  lines.push(`The operations that bear on it${omitted > 0 ? ` (${omitted} earlier ones not shown)` : ''}:`);
  for (const operation of shown) {
    const entry = history[operation.historyIndex]!;
    const pendingAtCutoff = entry.respondedAt !== Infinity && operation.respondedAt === Infinity;
    const mark = operation.historyIndex === culprit ? '   <- cannot be explained' : '';
    lines.push(`  ${describeOperation(entry, operation.historyIndex, pendingAtCutoff)}${mark}`);
  }
  return { explanation: lines.join('\n'), culprit, operations: shown.map((operation) => operation.historyIndex) };
}

/**
 * Checks that a history of a key-value store is linearizable. Keys are checked independently in the
 * order they first appear; the first key with a violation is reported. A key whose search runs out of
 * budget is reported only if no other key has a definite violation.
 */
export function checkLinearizable(history: readonly HistoryEntry[], options?: CheckOptions): CheckResult {
  const searchStepsMax = validate(history, options);
  let exhausted: CheckResult | undefined;
  for (const keyHistory of partitionByKey(history)) {
    const problem = buildProblem(keyHistory.operations);
    const { verdict, progress } = searchKey(problem, searchStepsMax);
    if (verdict === 'linearizable') continue;
    if (verdict === 'exhausted') {
      exhausted ??= {
        linearizable: false,
        exhausted: true,
        key: keyHistory.key,
        explanation:
          `key ${JSON.stringify(keyHistory.key)}: the search gave up after ${searchStepsMax} steps (searchStepsMax) ` +
          `without deciding; its sub-history has ${problem.slotCount} operations, ${problem.unknownCount} of unknown outcome.`,
      };
      continue;
    }
    const { explanation, culprit, operations } = explain(history, keyHistory, problem, progress, searchStepsMax);
    return { linearizable: false, key: keyHistory.key, explanation, culprit, operations };
  }
  return exhausted ?? { linearizable: true };
}
