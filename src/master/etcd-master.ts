/**
 * The configuration master of a chain that spans hosts, on etcd. Any host may run a candidate;
 * etcd elects one (EtcdConfigurationStore.campaign). The leader follows the configuration, the
 * host table (`hosts/` and `status/`) and the handoff request through watches, runs the pure
 * decision rules (native-free-core/master/cluster-decisions.ts) on every change and every 200 ms,
 * and executes what they decide one decision at a time, each write fenced by its leadership: a
 * master that was deposed without knowing it yet (its lease expired while it was cut off) cannot
 * write, even when its epoch still matches.
 *
 * Failures are etcd's: an error is logged and the step retried with backoff; a lost lease ends the
 * term (watches stopped, nothing more decided) and the candidate campaigns again. Nothing here
 * throws out of the background loop.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Configuration } from '../../native-free-core/master/chain-master.js';
import {
  decide,
  HANDOFF_CATCH_UP_MS_MAX,
  HANDOFF_LAG_WRITES_MAX,
  watchCatchUp,
  type CatchUpWatch,
  type Decision,
  type LiveHost,
} from '../../native-free-core/master/cluster-decisions.js';
import { DabbaError, ErrorCode, isDabbaError } from '../../native-free-core/errors.js';
import type { EtcdConfigurationStore, HandoffRequest, HostTable, Leadership, StopWatching } from './etcd-store.js';

/** How often the leader decides even without a change (the catch-up time limit of rule 5 needs it). */
const DECIDE_INTERVAL_MS = 200;
const RETRY_BACKOFF_MS_MIN = 100;
const RETRY_BACKOFF_MS_MAX = 5000;

export interface EtcdMasterOptions {
  store: EtcdConfigurationStore;
  /** This candidate's name in the election (the host id, typically). */
  candidateId: string;
  /** How long leadership outlives a silent master, in whole seconds. Default 2. */
  leadershipTtlSeconds?: number;
  /** A joiner at most this many writes behind the tail gets the handoff. Default: the policy's (HANDOFF_LAG_WRITES_MAX). */
  handoffLagWritesMax?: number;
  /** ...or once it has been catching up this long, in ms. Default: the policy's (HANDOFF_CATCH_UP_MS_MAX). */
  handoffCatchUpMsMax?: number;
  /** One line per noteworthy event (election, decision, etcd error). Default: nothing. */
  log?: (line: string) => void;
  /** A monotonic clock in ms. Default performance.now. */
  now?: () => number;
}

export interface EtcdMaster {
  /** A decision the leader executed (written to etcd), after the write. */
  on(event: 'decision', listener: (decision: Decision) => void): this;
  /** This candidate became the leader. */
  on(event: 'elected', listener: () => void): this;
  /** This candidate's term ended (lease lost, fenced out, a watch failed, or close()). */
  on(event: 'deposed', listener: (reason: string) => void): this;
  once(event: 'decision', listener: (decision: Decision) => void): this;
  once(event: 'elected', listener: () => void): this;
  once(event: 'deposed', listener: (reason: string) => void): this;
}

/** What the leader knows during one term. */
interface Term {
  readonly leadership: Leadership;
  /** Aborted when the term ends, with the reason (a string). */
  readonly ended: AbortController;
  configuration: Configuration | null;
  table: HostTable;
  handoff: HandoffRequest | null;
  /** When the master first saw the joiner report joinCaughtUp (rule 5's clock). */
  catchUp: CatchUpWatch | null;
  /** Every watch has delivered its first value: decisions may be taken. */
  ready: boolean;
  /** A step is running; `again` asks for another one when it is done. */
  busy: boolean;
  again: boolean;
  /** The last write's outcome is unknown (an error): read the configuration before deciding. */
  reload: boolean;
  /** The situation of the last 'none' decision (logged once per situation). */
  idleReason: string | null;
  readonly backoff: Backoff;
}

export class EtcdMaster extends EventEmitter {
  private readonly store: EtcdConfigurationStore;
  private readonly candidateId: string;
  private readonly leadershipTtlSeconds: number;
  private readonly handoffLagWritesMax: number;
  private readonly handoffCatchUpMsMax: number;
  private readonly log: (line: string) => void;
  private readonly now: () => number;
  private readonly closing = new AbortController();
  private running: Promise<void> | null = null;
  private term: Term | null = null;

  constructor(options: EtcdMasterOptions) {
    super();
    if (typeof options.candidateId !== 'string' || options.candidateId.length === 0) {
      throw new DabbaError(ErrorCode.invalidArgument, 'candidateId must be a non-empty string');
    }
    this.store = options.store;
    this.candidateId = options.candidateId;
    this.leadershipTtlSeconds = checkInteger('leadershipTtlSeconds', options.leadershipTtlSeconds ?? 2, 1);
    this.handoffLagWritesMax = checkInteger('handoffLagWritesMax', options.handoffLagWritesMax ?? HANDOFF_LAG_WRITES_MAX, 0);
    this.handoffCatchUpMsMax = checkInteger('handoffCatchUpMsMax', options.handoffCatchUpMsMax ?? HANDOFF_CATCH_UP_MS_MAX, 0);
    this.log = options.log ?? (() => undefined);
    this.now = options.now ?? (() => performance.now());
  }

  /** Campaigns in the background; leads when elected, campaigns again when deposed, until close(). */
  start(): void {
    if (this.closing.signal.aborted) throw new DabbaError(ErrorCode.closed, 'the master is closed');
    if (this.running !== null) throw new DabbaError(ErrorCode.outOfRange, 'the master is already started');
    this.running = this.campaignLoop();
  }

  /** True while this candidate leads (it may have been deposed a lease TTL ago without knowing: writes are fenced). */
  get isLeader(): boolean {
    return this.term !== null && !this.term.ended.signal.aborted;
  }

  /**
   * Ends this term now (resigning: the next candidate in line is elected at once) and campaigns
   * again, at the back of the line. No-op when not leading.
   */
  stepDown(reason: string): void {
    if (this.term !== null && !this.term.ended.signal.aborted) this.term.ended.abort(reason);
  }

  /** Stops deciding, stops the watches and resigns (the next candidate is elected at once). */
  async close(): Promise<void> {
    this.closing.abort('closing');
    await this.running;
  }

  private async campaignLoop(): Promise<void> {
    const backoff = new Backoff();
    while (!this.closing.signal.aborted) {
      let leadership: Leadership;
      try {
        leadership = await this.store.campaign(this.candidateId, { ttlSeconds: this.leadershipTtlSeconds, signal: this.closing.signal });
      } catch (error) {
        if (this.closing.signal.aborted) return;
        this.log(`master ${this.candidateId}: campaign failed (${messageOf(error)}); again in ${backoff.ms} ms`);
        await backoff.wait(this.closing.signal);
        continue;
      }
      backoff.reset();
      const reason = await this.lead(leadership);
      if (this.closing.signal.aborted) return;
      // A term that ends at once (a watch fails to start) must not turn into a tight loop.
      if (reason !== 'lost its lease') await backoff.wait(this.closing.signal);
    }
  }

  /** One term: from election until the leadership is lost or given up. Resolves with the reason. */
  private async lead(leadership: Leadership): Promise<string> {
    const term: Term = {
      leadership,
      ended: new AbortController(),
      configuration: null,
      table: new Map(),
      handoff: null,
      catchUp: null,
      ready: false,
      busy: false,
      again: false,
      reload: false,
      idleReason: null,
      backoff: new Backoff(),
    };
    const end = (reason: string): void => {
      if (!term.ended.signal.aborted) term.ended.abort(reason);
    };
    const onLost = (): void => end('lost its lease');
    const onClosing = (): void => end('closing');
    leadership.lost.addEventListener('abort', onLost, { once: true });
    this.closing.signal.addEventListener('abort', onClosing, { once: true });
    if (leadership.lost.aborted) onLost();
    if (this.closing.signal.aborted) onClosing();

    this.term = term;
    this.log(`master ${this.candidateId}: elected`);
    this.emit('elected');
    const poke = (): void => this.poke(term);
    const onWatchError = (error: Error): void => {
      this.log(`master ${this.candidateId}: ${error.message}`);
      // A malformed value is reported and skipped; any other watch error is final (etcd3 resumes
      // broken watches by itself), and a leader that no longer sees changes must step down.
      if (!isDabbaError(error, ErrorCode.malformedFrame)) end(`a watch failed: ${error.message}`);
    };
    const stops: StopWatching[] = [];
    let timer: NodeJS.Timeout | undefined;
    try {
      const watches: Array<() => Promise<StopWatching>> = [
        () => this.store.watch((configuration) => (this.adopt(term, configuration), poke()), onWatchError),
        () => this.store.watchHostTable((table) => ((term.table = table), poke()), onWatchError),
        () => this.store.watchHandoff((request) => (this.adoptHandoff(term, request), poke()), onWatchError),
      ];
      for (const watch of watches) stops.push(await untilAborted(watch(), term.ended.signal));
      // Only now: deciding from a configuration without the host table would remove every member.
      term.ready = true;
      timer = setInterval(poke, DECIDE_INTERVAL_MS);
      poke();
      await aborted(term.ended.signal);
    } catch (error) {
      end(`could not start watching: ${messageOf(error)}`);
    } finally {
      clearInterval(timer);
      leadership.lost.removeEventListener('abort', onLost);
      this.closing.signal.removeEventListener('abort', onClosing);
    }
    const reason = String(term.ended.signal.reason);
    term.ready = false;
    this.term = null;
    await Promise.allSettled(stops.map((stop) => stop()));
    // Releases the election key (the next candidate leads at once); fails harmlessly if it is gone.
    await leadership.resign().catch(() => undefined);
    this.log(`master ${this.candidateId}: term ended (${reason})`);
    this.emit('deposed', reason);
    return reason;
  }

  /** Runs a step now, or right after the one running. */
  private poke(term: Term): void {
    if (!term.ready || term.ended.signal.aborted) return;
    if (term.busy) {
      term.again = true;
      return;
    }
    term.busy = true;
    void this.step(term).finally(() => {
      term.busy = false;
      if (!term.again) return;
      term.again = false;
      this.poke(term);
    });
  }

  /** Decides once and executes the decision. Never rejects. */
  private async step(term: Term): Promise<void> {
    let executed: Decision | null = null;
    try {
      if (term.reload) {
        this.adopt(term, await this.store.load());
        term.reload = false;
      }
      const decision = this.decide(term);
      if (decision.kind === 'none') {
        // Logged when the situation changes, not when its figures do (a catching-up joiner's lag
        // changes at every step): the text before the first ':' names the situation.
        const situation = decision.reason.split(':')[0]!;
        if (situation !== term.idleReason) this.log(`master ${this.candidateId}: ${decision.reason}`);
        term.idleReason = situation;
        return;
      }
      term.idleReason = null;
      if (await this.execute(term, decision)) {
        executed = decision;
        term.backoff.reset();
        term.again = true; // The next rule may apply at once (a removal, then a join).
      } else if (decision.kind !== 'evict') {
        await this.afterConflict(term, decision);
      }
    } catch (error) {
      // The outcome of a write that failed this way is unknown: read what etcd holds next time.
      term.reload = true;
      this.log(`master ${this.candidateId}: etcd error (${messageOf(error)}); again in ${term.backoff.ms} ms`);
      await term.backoff.wait(term.ended.signal);
      term.again = true;
      return;
    }
    if (executed === null) return;
    this.log(`master ${this.candidateId}: ${describe(executed)}`);
    try {
      this.emit('decision', executed);
    } catch (error) {
      this.log(`master ${this.candidateId}: a 'decision' listener threw (${messageOf(error)})`);
    }
  }

  private decide(term: Term): Decision {
    const hosts: LiveHost[] = [];
    for (const [hostId, { info, status }] of term.table) {
      if (info === null) continue; // Registered without (or with a malformed) info: not a replica host.
      // A status left by an earlier replica of the same host (restarted within its old lease's TTL) is not this replica's.
      const current = status !== null && status.replicaId === info.replicaId ? status : null;
      hosts.push({
        hostId,
        replicaId: info.replicaId,
        status: current === null ? null : {
          epoch: current.epoch,
          appliedSeq: current.appliedSeq,
          joinCaughtUp: current.joinCaughtUp,
          handoffReadyEpoch: current.handoffReadyEpoch,
          predecessorDown: current.predecessorDown ?? 0,
        },
      });
    }
    const now = this.now();
    term.catchUp = watchCatchUp(term.catchUp, term.configuration, hosts, now);
    return decide({
      configuration: term.configuration,
      hosts,
      // Across hosts no operator asks for removals: a host leaves by letting its lease go.
      removalsRequested: [],
      now,
      joinCaughtUpSince: term.catchUp?.since ?? null,
      handoffRequested: term.handoff,
      handoffLagWritesMax: this.handoffLagWritesMax,
      handoffCatchUpMsMax: this.handoffCatchUpMsMax,
    });
  }

  /** Writes the decision, fenced; true if it is in etcd. */
  private async execute(term: Term, decision: Exclude<Decision, { kind: 'none' }>): Promise<boolean> {
    const fence = term.leadership;
    switch (decision.kind) {
      case 'initialize':
        if (!(await this.store.initialize(decision.configuration, fence))) return false;
        this.adopt(term, decision.configuration);
        return true;
      case 'reconfigure': {
        const next = decision.event.configuration;
        if (!(await this.store.compareAndSet(next.epoch - 1, next, fence))) return false;
        this.adopt(term, next);
        return true;
      }
      case 'request-handoff':
        if (!(await this.store.requestHandoff(decision.epoch, decision.joiner, fence))) return false;
        this.adoptHandoff(term, { epoch: decision.epoch, joiner: decision.joiner });
        return true;
      case 'evict':
        // Not fenced: evicting is idempotent, and a host evicted by mistake only joins again.
        await this.store.evictHost(decision.hostId);
        return true;
    }
  }

  /**
   * A fenced write failed: either the configuration moved on (adopt it and decide again) or this
   * candidate no longer leads (the epoch is where the decision left it: end the term).
   */
  private async afterConflict(term: Term, decision: Exclude<Decision, { kind: 'none' | 'evict' }>): Promise<void> {
    const stored = await this.store.load();
    const expectedEpoch =
      decision.kind === 'initialize' ? null : decision.kind === 'reconfigure' ? decision.event.configuration.epoch - 1 : decision.epoch;
    const fencedOut = decision.kind === 'request-handoff' || (stored?.epoch ?? null) === expectedEpoch;
    if (fencedOut) {
      term.ended.abort('fenced out: another candidate leads');
      return;
    }
    const epochBefore = term.configuration?.epoch;
    this.adopt(term, stored);
    term.again = true;
    if (term.configuration?.epoch !== epochBefore) {
      this.log(`master ${this.candidateId}: the configuration moved on to epoch ${term.configuration?.epoch}; deciding again`);
      return;
    }
    // Nothing newer to adopt (say the configuration was deleted by hand): no tight loop of failing writes.
    this.log(`master ${this.candidateId}: ${decision.kind} conflicted with etcd (stored epoch ${stored?.epoch ?? 'none'}); again in ${term.backoff.ms} ms`);
    await term.backoff.wait(term.ended.signal);
  }

  /** Keeps the newest handoff request seen (the watch may deliver an older one after this master wrote its own). */
  private adoptHandoff(term: Term, request: HandoffRequest): void {
    if (term.handoff === null || request.epoch >= term.handoff.epoch) term.handoff = request;
  }

  /** Keeps the newest configuration seen (the watch may deliver one this master already wrote). */
  private adopt(term: Term, configuration: Configuration | null): void {
    if (configuration === null) return;
    if (term.configuration === null || configuration.epoch > term.configuration.epoch) term.configuration = configuration;
  }
}

/** Exponential backoff between retries, from 100 ms to 5 s. */
class Backoff {
  ms = RETRY_BACKOFF_MS_MIN;

  reset(): void {
    this.ms = RETRY_BACKOFF_MS_MIN;
  }

  /** Waits the current delay (or until `signal` aborts), then doubles it. */
  async wait(signal: AbortSignal): Promise<void> {
    const ms = this.ms;
    this.ms = Math.min(this.ms * 2, RETRY_BACKOFF_MS_MAX);
    await sleep(ms, undefined, { signal }).catch(() => undefined);
  }
}

function describe(decision: Decision): string {
  switch (decision.kind) {
    case 'initialize':
      return `initialized epoch 1: members [${decision.configuration.members.join(', ')}]`;
    case 'request-handoff':
      return `asked the tail of epoch ${decision.epoch} to hand over to joiner ${decision.joiner}`;
    case 'evict':
      return `evicted host ${decision.hostId}: its successor found replica ${decision.replicaId}'s process gone`;
    case 'reconfigure': {
      const { event } = decision;
      const { epoch, members, joining } = event.configuration;
      const what = event.kind === 'removed' ? `removed ${event.replicaId} (${event.reason})` : `${event.kind} ${event.replicaId}`;
      return `${what}: epoch ${epoch}, members [${members.join(', ')}], joining ${joining ?? 'none'}`;
    }
    case 'none':
      return decision.reason;
  }
}

function checkInteger(name: string, value: number, minimum: number): number {
  if (typeof value !== 'number') throw new DabbaError(ErrorCode.invalidArgument, `${name} must be a number`);
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new DabbaError(ErrorCode.outOfRange, `${name} must be an integer >= ${minimum} (got ${value})`);
  }
  return value;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

/**
 * The watch's stop, or a rejection once `signal` aborts first; a watch that starts after that is
 * stopped at once, so none outlives its term.
 */
async function untilAborted(starting: Promise<StopWatching>, signal: AbortSignal): Promise<StopWatching> {
  let lateStop = true;
  void starting.then(
    (stop) => {
      if (lateStop && signal.aborted) void stop().catch(() => undefined);
    },
    () => undefined,
  );
  const stop = await Promise.race([starting, aborted(signal).then(() => null)]);
  if (stop === null) throw new DabbaError(ErrorCode.closed, `the term ended (${String(signal.reason)})`);
  lateStop = false;
  return stop;
}
