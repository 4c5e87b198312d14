/**
 * The configuration master of a chain table that spans hosts, on etcd. Any host may run a
 * candidate; etcd elects one (EtcdConfigurationStore.campaign). The leader follows the chain
 * table, the host table (`hosts/` and `status/`) and the handoff requests through watches, runs
 * the pure round (native-free-core/master/table-round.ts: the cluster policy per chain, the
 * placement and the moves towards it) on every change and every 200 ms, and writes each round's
 * changes in one transaction, fenced by its leadership: a master that was deposed without knowing
 * it yet (its lease expired while it was cut off) cannot write, even when the epochs still match.
 *
 * Failures are etcd's: an error is logged and the step retried with backoff; a lost lease ends the
 * term (watches stopped, nothing more decided) and the candidate campaigns again. Nothing here
 * throws out of the background loop.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { HANDOFF_CATCH_UP_MS_MAX, HANDOFF_LAG_WRITES_MAX, type CatchUpWatch, type LiveHostStatus } from '../../native-free-core/master/cluster-decisions.js';
import { decideRound, type ChainChange, type TableHost, type TablePlan } from '../../native-free-core/master/table-round.js';
import { DabbaError, ErrorCode, isDabbaError } from '../../native-free-core/errors.js';
import { SlowNodeBench, type FailSlowSettings, type NodeLoad } from '../../native-free-core/master/fail-slow.js';
import type { ClusterSettings, EtcdConfigurationStore, HostTable, Leadership, StopWatching, StoredTable } from './etcd-store.js';

/** How often the leader decides even without a change (the catch-up time limit of rule 5 needs it). */
const DECIDE_INTERVAL_MS = 200;
const RETRY_BACKOFF_MS_MIN = 100;
const RETRY_BACKOFF_MS_MAX = 5000;
/**
 * A table never configured is placed once `replicas` hosts are up, or this long after the first
 * one registered: hosts started together get their chains at once, and a lone host still starts.
 */
const BOOTSTRAP_WAIT_MS = 1500;
/**
 * A host whose status changed within this long is known healthy (hosts publish every 200 ms,
 * host.ts; etcd on a loaded machine delivers them in bursts, so allow several).
 */
const STATUS_FRESH_MS = 1500;
/** Chains joining at once across the table: each copies a snapshot while writes go on. */
const JOINS_AT_ONCE = 2;

/** What the leader wrote: a chain's next entry or a handoff request (one round's are one transaction), or an eviction. */
export type MasterDecision = ChainChange | { kind: 'evict'; chain: number; hostId: string; replicaId: number };

export interface EtcdMasterOptions {
  store: EtcdConfigurationStore;
  /** The cluster's settings (EtcdConfigurationStore.adoptSettings). */
  settings: ClusterSettings;
  /** This candidate's name in the election (the host id, typically). */
  candidateId: string;
  /** How long leadership outlives a silent master, in whole seconds. Default 2. */
  leadershipTtlSeconds?: number;
  /** A joiner at most this many writes behind the tail gets the handoff. Default: the policy's (HANDOFF_LAG_WRITES_MAX). */
  handoffLagWritesMax?: number;
  /** ...or once it has been catching up this long, in ms. Default: the policy's (HANDOFF_CATCH_UP_MS_MAX). */
  handoffCatchUpMsMax?: number;
  /**
   * Fail-slow demotion of hosts (native-free-core/master/fail-slow.ts) from the load each host
   * reports in its status; null: off. Default: off (the host passes its own setting).
   */
  failSlow?: FailSlowSettings | null;
  /** One line per noteworthy event (election, decision, etcd error). Default: nothing. */
  log?: (line: string) => void;
  /** A monotonic clock in ms. Default performance.now. */
  now?: () => number;
}

/** A host moved out of its chains for being slow: how much slower than its peers' median, and for how long. */
export interface HostDemotion {
  hostId: string;
  timesMedian: number;
  quarantineMs: number;
}

export interface EtcdMaster {
  /** A host the leader found persistently slower than its peers and benched (its replicas move off it). */
  on(event: 'demoted', listener: (demotion: HostDemotion) => void): this;
  /** A decision the leader executed (written to etcd), after the write. */
  on(event: 'decision', listener: (decision: MasterDecision) => void): this;
  /** This candidate became the leader. */
  on(event: 'elected', listener: () => void): this;
  /** This candidate's term ended (lease lost, fenced out, a watch failed, or close()). */
  on(event: 'deposed', listener: (reason: string) => void): this;
  once(event: 'decision', listener: (decision: MasterDecision) => void): this;
  once(event: 'elected', listener: () => void): this;
  once(event: 'deposed', listener: (reason: string) => void): this;
}

/** What the leader knows during one term. */
interface Term {
  readonly leadership: Leadership;
  /** Aborted when the term ends, with the reason (a string). */
  readonly ended: AbortController;
  /** The chain table as the watch (and this master's own writes) left it; null until the watch delivers. */
  table: StoredTable | null;
  /** The first replica id not handed out (read when the term begins, then kept by this master's writes). */
  nextReplicaId: number;
  hosts: HostTable;
  /** When each host's status last changed, as this term's watch saw it (fail-slow needs the others known healthy). */
  statusChangedAt: Map<string, { text: string; at: number }>;
  /** By chain: rule 5's clock. */
  catchUp: Array<CatchUpWatch | null>;
  plan: TablePlan | null;
  /** When the first host was seen while the table was not placed yet (the bootstrap wait). */
  firstHostAt: number | null;
  /** Every watch has delivered its first value: decisions may be taken. */
  ready: boolean;
  /** A step is running; `again` asks for another one when it is done. */
  busy: boolean;
  again: boolean;
  /** The last write's outcome is unknown (an error): read the table before deciding. */
  reload: boolean;
  /** The situations of the chains that wait, as last logged. */
  idleReason: string | null;
  readonly backoff: Backoff;
}

export class EtcdMaster extends EventEmitter {
  private readonly store: EtcdConfigurationStore;
  private readonly settings: ClusterSettings;
  private readonly candidateId: string;
  private readonly leadershipTtlSeconds: number;
  private readonly handoffLagWritesMax: number;
  private readonly handoffCatchUpMsMax: number;
  private readonly log: (line: string) => void;
  private readonly now: () => number;
  private readonly closing = new AbortController();
  private readonly slowHosts: SlowNodeBench | null;
  private running: Promise<void> | null = null;
  private term: Term | null = null;

  constructor(options: EtcdMasterOptions) {
    super();
    if (typeof options.candidateId !== 'string' || options.candidateId.length === 0) {
      throw new DabbaError(ErrorCode.invalidArgument, 'candidateId must be a non-empty string');
    }
    this.store = options.store;
    this.settings = options.settings;
    this.candidateId = options.candidateId;
    this.leadershipTtlSeconds = checkInteger('leadershipTtlSeconds', options.leadershipTtlSeconds ?? 2, 1);
    this.handoffLagWritesMax = checkInteger('handoffLagWritesMax', options.handoffLagWritesMax ?? HANDOFF_LAG_WRITES_MAX, 0);
    this.handoffCatchUpMsMax = checkInteger('handoffCatchUpMsMax', options.handoffCatchUpMsMax ?? HANDOFF_CATCH_UP_MS_MAX, 0);
    this.log = options.log ?? (() => undefined);
    this.now = options.now ?? (() => performance.now());
    this.slowHosts = options.failSlow === undefined || options.failSlow === null ? null : new SlowNodeBench(options.failSlow);
  }

  /** Hosts this master benched for being slow (while it led). */
  get demotions(): number {
    return this.slowHosts?.demotions ?? 0;
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
      table: null,
      nextReplicaId: 1,
      hosts: new Map(),
      statusChangedAt: new Map(),
      catchUp: [],
      plan: null,
      firstHostAt: null,
      ready: false,
      busy: false,
      again: false,
      reload: true,
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
      const { chains } = this.settings;
      const watches: Array<() => Promise<StopWatching>> = [
        () => this.store.watchTable(chains, (table) => ((term.table = this.adopt(term, table)), poke()), onWatchError),
        () => this.store.watchHostTable((table) => ((term.hosts = table), this.noteStatuses(term), poke()), onWatchError),
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

  /** Decides one round and writes it. Never rejects. */
  private async step(term: Term): Promise<void> {
    const executed: MasterDecision[] = [];
    try {
      if (term.reload) {
        const stored = await this.store.loadTable(this.settings.chains);
        term.table = this.adopt(term, stored);
        term.nextReplicaId = Math.max(term.nextReplicaId, stored.nextReplicaId);
        term.reload = false;
      }
      const table = term.table!;
      const round = this.decide(term, table);
      term.catchUp = round.catchUp;
      term.plan = round.plan;
      for (const eviction of round.evictions) {
        // Not fenced: evicting is idempotent, and a host evicted by mistake only joins again.
        await this.store.evictHost(eviction.hostId);
        executed.push({ kind: 'evict', ...eviction });
      }
      if (round.changes.length === 0) {
        this.logIdle(term, round.idle, round.lost);
      } else if (await this.store.commitRound(round.changes, { from: term.nextReplicaId, to: round.nextReplicaId }, term.leadership)) {
        for (const change of round.changes) {
          if (change.kind === 'configure') table.entries[change.chain] = change.entry;
          else table.handoffs[change.chain] = change.request;
        }
        term.nextReplicaId = round.nextReplicaId;
        term.idleReason = null;
        executed.push(...round.changes);
        term.backoff.reset();
        term.again = true; // The next rule may apply at once (a removal, then a join).
      } else {
        await this.afterConflict(term);
      }
    } catch (error) {
      // The outcome of a write that failed this way is unknown: read what etcd holds next time.
      term.reload = true;
      this.log(`master ${this.candidateId}: etcd error (${messageOf(error)}); again in ${term.backoff.ms} ms`);
      await term.backoff.wait(term.ended.signal);
      term.again = true;
    }
    for (const decision of executed) {
      this.log(`master ${this.candidateId}: ${describe(decision)}`);
      try {
        this.emit('decision', decision);
      } catch (error) {
        this.log(`master ${this.candidateId}: a 'decision' listener threw (${messageOf(error)})`);
      }
    }
  }

  private decide(term: Term, table: StoredTable): ReturnType<typeof decideRound> {
    const hosts: TableHost[] = [];
    for (const [hostId, { info, status }] of term.hosts) {
      if (info === null) continue; // Registered without (or with a malformed) info: not a replica host.
      // A status left by an earlier run of the same host (restarted within its old lease's TTL) is not this run's.
      const current = status !== null && status.incarnation === info.incarnation ? status : null;
      const replicas = new Map<number, LiveHostStatus>();
      for (const replica of current?.replicas ?? []) replicas.set(replica.replicaId, replica);
      hosts.push({ hostId, zone: info.zone, incarnation: info.incarnation, replicas, failed: new Set(current?.failed ?? []) });
    }
    const now = this.now();
    const placed = table.entries.some((entry) => entry !== null);
    if (placed || hosts.length === 0) term.firstHostAt = null;
    else term.firstHostAt ??= now;
    const benched = placed ? this.watchSlowness(term, hosts, now) : undefined;
    const { chains, replicas } = this.settings;
    return decideRound({
      ...(benched === undefined ? {} : { benched }),
      chains,
      replicas,
      entries: table.entries,
      hosts,
      handoffs: table.handoffs,
      catchUp: term.catchUp,
      plan: term.plan,
      bootstrap: hosts.length >= replicas || (term.firstHostAt !== null && now - term.firstHostAt >= BOOTSTRAP_WAIT_MS),
      now,
      handoffLagWritesMax: this.handoffLagWritesMax,
      handoffCatchUpMsMax: this.handoffCatchUpMsMax,
      joinsAtOnce: JOINS_AT_ONCE,
      nextReplicaId: term.nextReplicaId,
    });
  }

  private noteStatuses(term: Term): void {
    const now = this.now();
    for (const [hostId, { status }] of term.hosts) {
      const text = status === null ? '' : JSON.stringify(status);
      if (term.statusChangedAt.get(hostId)?.text !== text) term.statusChangedAt.set(hostId, { text, at: now });
    }
    for (const hostId of term.statusChangedAt.keys()) if (!term.hosts.has(hostId)) term.statusChangedAt.delete(hostId);
  }

  /**
   * Fail-slow across hosts: each host's load (busy ms and writes applied, from its status) goes to
   * the same policy as in one process; a host found slow is benched (the round plans without it,
   * so its replicas move off it), a 'demoted' event and a log line say so. Returns the hosts
   * benched now.
   */
  private watchSlowness(term: Term, hosts: readonly TableHost[], now: number): ReadonlySet<string> | undefined {
    const bench = this.slowHosts;
    if (bench === null) return undefined;
    bench.release(now, (hostId) => !hosts.some((host) => host.hostId === hostId));
    const loads = new Map<string, NodeLoad>();
    let planned = 0;
    for (const host of hosts) {
      if (bench.isBenched(host.hostId)) continue;
      planned++;
      const status = term.hosts.get(host.hostId)?.status;
      // Its current run's figures only, and only a host that holds replicas.
      if (status?.load !== undefined && status.incarnation === host.incarnation && host.replicas.size > 0) loads.set(host.hostId, status.load);
    }
    const isHealthy = (hostId: string): boolean => now - (term.statusChangedAt.get(hostId)?.at ?? Number.NEGATIVE_INFINITY) < STATUS_FRESH_MS;
    const demotion = bench.observe(loads, now, { canMove: true, plannedNodes: planned, isHealthy });
    if (demotion !== null) {
      const event: HostDemotion = { hostId: demotion.node, timesMedian: demotion.timesMedian, quarantineMs: Math.round(demotion.until - now) };
      this.log(`master ${this.candidateId}: host ${event.hostId} is slow (${event.timesMedian.toFixed(1)}x its peers' time per write): moved out of its chains for ${event.quarantineMs} ms`);
      try {
        this.emit('demoted', event);
      } catch (error) {
        this.log(`master ${this.candidateId}: a 'demoted' listener threw (${messageOf(error)})`);
      }
    }
    return bench.benched;
  }

  /**
   * Logs why the chains wait when that changes, not when its figures do (a catching-up joiner's
   * lag changes at every step): the text before the first ':' names a chain's situation.
   */
  private logIdle(term: Term, idle: ReadonlyArray<string | null>, lost: readonly number[]): void {
    const situations = new Map<string, number[]>();
    idle.forEach((reason, chain) => {
      if (reason === null) return;
      const situation = reason.split(':')[0]!;
      situations.set(situation, [...(situations.get(situation) ?? []), chain]);
    });
    const summary = [...situations].map(([situation, chains]) => `${situation} (chain${chains.length > 1 ? 's' : ''} ${chains.join(', ')})`).join('; ');
    const text = lost.length > 0 ? `${summary}; unavailable: chains ${lost.join(', ')}` : summary;
    if (text !== term.idleReason) this.log(`master ${this.candidateId}: ${text}`);
    term.idleReason = text;
  }

  /**
   * A fenced round failed: either the table moved on (adopt it and decide again) or this
   * candidate no longer leads (etcd holds what the round was decided from: end the term).
   */
  private async afterConflict(term: Term): Promise<void> {
    const stored = await this.store.loadTable(this.settings.chains);
    const before = term.table!;
    const moved =
      stored.nextReplicaId !== term.nextReplicaId ||
      stored.entries.some((entry, chain) => (entry?.configuration.epoch ?? 0) !== (before.entries[chain]?.configuration.epoch ?? 0));
    if (!moved) {
      term.ended.abort('fenced out: another candidate leads');
      return;
    }
    term.table = this.adopt(term, stored);
    term.nextReplicaId = Math.max(term.nextReplicaId, stored.nextReplicaId);
    term.again = true;
    this.log(`master ${this.candidateId}: the chain table moved on under this round; deciding again`);
  }

  /** Keeps, per chain, the newest entry and handoff request seen (a watch may deliver what this master already wrote). */
  private adopt(term: Term, incoming: StoredTable): StoredTable {
    const current = term.table;
    if (current === null) return { entries: [...incoming.entries], handoffs: [...incoming.handoffs], nextReplicaId: 0 };
    incoming.entries.forEach((entry, chain) => {
      const mine = current.entries[chain];
      if (entry !== null && (mine === null || mine === undefined || entry.configuration.epoch > mine.configuration.epoch)) current.entries[chain] = entry;
    });
    incoming.handoffs.forEach((request, chain) => {
      const mine = current.handoffs[chain];
      if (request !== null && (mine === null || mine === undefined || request.epoch >= mine.epoch)) current.handoffs[chain] = request;
    });
    return current;
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

function describe(decision: MasterDecision): string {
  switch (decision.kind) {
    case 'request-handoff':
      return `chain ${decision.chain}: asked the tail of epoch ${decision.request.epoch} to hand over to joiner ${decision.request.joiner}`;
    case 'evict':
      return `chain ${decision.chain}: evicted host ${decision.hostId}: its successor found replica ${decision.replicaId}'s process gone`;
    case 'configure': {
      const { epoch, members, joining } = decision.entry.configuration;
      return `chain ${decision.chain}: ${decision.what}: epoch ${epoch}, members [${members.join(', ')}], joining ${joining ?? 'none'}`;
    }
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
