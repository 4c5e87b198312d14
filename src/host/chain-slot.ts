/**
 * One chain's part of a host (`dabba serve`): the chain's entry as etcd holds it, the replica this
 * host runs in it (if the master placed one on this host's current incarnation), the links to that
 * replica's neighbours (./chain-links.ts) and the remote clients of the chain on this host
 * (./client-sessions.ts). The replica itself lives on the host's node thread (./node-port.ts),
 * beside this host's replicas of the other chains.
 *
 * It follows the entry: starts the replica the entry places here (a joiner, or a member of a chain
 * just placed, at epoch 1, when every replica starts empty), reconfigures it with every epoch, and
 * drops it once the chain no longer names it. A replica it cannot run (a member it holds no state
 * for, a joiner whose link broke) it gives up: the host reports it (HostStatus.failed) and the
 * master removes it and places a new one, with a new id: a replica id never comes back. On a
 * durable host a replica dropped or given up leaves its log, and the next joiner of the chain
 * placed here starts from it: the tail sends it only the writes it lacks, if the tail's log can
 * continue it (else the joiner refuses the snapshot it is sent, and is given up with that log).
 */
import type { WeightedHistogram } from '../metrics/weighted-histogram.js';
import type { Role } from '../../native-free-core/chain/node.js';
import { ErrorCode } from '../../native-free-core/errors.js';
import { answersReads, ordersWrites, roleIn, servesReads, type Configuration } from '../../native-free-core/master/chain-master.js';
import type { HandoffRequest } from '../../native-free-core/master/cluster-decisions.js';
import type { ChainEntry } from '../../native-free-core/master/table-round.js';
import { clientPath, type ClusterMember } from '../../native-free-core/wire/cluster-view.js';
import type { ReplicaStatus } from '../master/etcd-store.js';
import { ChainLinks, type ChainLinksOptions } from './chain-links.js';
import { ClientSessions, type ClientSessionsOptions } from './client-sessions.js';
import type { InboundBudget } from './inbound-queue.js';
import type { NodePort, ReplicaSnapshotStats } from './node-port.js';
import type { PeerLink, PeerLinkHandlers } from '../transport/peer-link.js';
import type { ReplicaLogPlacement } from '../../workers/replica-task.js';

/** What a slot needs of its host. */
export interface SlotHost {
  readonly hostId: string;
  /** The chains of the cluster (what clients are told). */
  readonly chains: number;
  /** This run's incarnation: replicas placed on it are this host's. */
  incarnation(): string;
  /**
   * Where a replica keeps its log (a durable host), or undefined in memory; `fresh`: it starts
   * empty. With `fresh` false, undefined also when the host has no log of it to restart from.
   */
  logOf(chain: number, replicaId: number, fresh: boolean): ReplicaLogPlacement | undefined;
  /** Why `chain` refuses writes now (a replica's disk is full), or null. */
  diskRefusal(chain: number): string | null;
  /** Whether `dabba serve --repair` discarded that replica's damaged log (it holds nothing now). */
  logDiscarded(chain: number, replicaId: number): boolean;
  /**
   * A durable host: the log directory of a replica it ran in `chain` before (none of `inChain`),
   * for joiner `replicaId` to start from (see ReplicaLogPlacement.adoptFrom), or undefined.
   */
  adoptableLog(chain: number, replicaId: number, inChain: readonly number[]): string | undefined;
  /** No joiner may start from a replica's log (its chain did not continue it); `remove`: delete it now. */
  discardLog(chain: number, replicaId: number, remove: boolean): void;
  /** The node thread, or null while the host is between incarnations. */
  node(): NodePort | null;
  /** Where a replica's host can be reached (its home's host, registered in its incarnation); null while unknown. */
  urlOf(replicaId: number): string | null;
  /** The zone of a replica's host; null while unknown. */
  zoneOf(replicaId: number): string | null;
  /** Every member of a chain answers reads (`--reads any`, CRAQ), not only its tail. */
  readonly readsAtAnyReplica: boolean;
  /** The cluster's heads run an admission hook (`--admit`). */
  readonly admits: boolean;
  /** This host's own URL. */
  ownUrl(): string;
  /** Whether a replica is surely gone: its host's lease ended, or it runs another incarnation (after the host table is known). */
  isGone(replicaId: number): boolean;
  /** Whether this host's lease is surely alive for a read served now. */
  leaseAllowsReads(): boolean;
  /** A replica this host gives up (it is gone, though the host stays up): reported in its status. */
  gaveUp(chain: number, replicaId: number, reason: string): void;
  /** Something the master should hear of soon changed (a predecessor refused a connection). */
  statusChanged(): void;
  /** The replica's place in the chain changed (or the chain did): the host's 'configured' event. */
  configured(chain: number, configuration: Configuration, role: Role | null): void;
  log(level: 'info' | 'warn', event: string, message: string): void;
}

/** The host-wide parts of a slot's links and client sessions. */
export type SlotLinkSettings = Omit<ChainLinksOptions, 'replicaProgress' | 'offerBatch' | 'offerAck' | 'joinLinkLost' | 'predecessorRefused' | 'urlOf' | 'openUpstream'> & {
  offerBatch(chain: number, frame: Uint8Array, budget: InboundBudget): boolean;
  offerAck(chain: number, frame: Uint8Array, budget: InboundBudget): boolean;
  openUpstream(chain: number, predecessor: number, from: number, handlers: PeerLinkHandlers): Promise<PeerLink>;
};
export type SlotSessionSettings = Omit<ClientSessionsOptions, 'path' | 'view' | 'isHead' | 'isServingReads' | 'offerBatch' | 'offerReads'> & {
  offerBatch(chain: number, frame: Uint8Array, budget: InboundBudget): boolean;
  offerReads(chain: number, frame: Uint8Array, budget: InboundBudget): boolean;
};

/** Replica ids a slot remembers having given up (so it never starts one of them again). */
const GIVEN_UP_MAX = 64;

export class ChainSlot {
  /** The newest entry seen, or null before the chain is placed. */
  entry: ChainEntry | null = null;
  /** The replica this host runs in the chain; 0 when none. */
  replicaId = 0;
  /** The epoch the replica was started in (a joiner) or last reconfigured to. */
  private replicaEpoch = 0;
  private handoff: HandoffRequest | null = null;
  private handoffBegun = '';
  /** Our predecessor whose host refused a connection (see ChainLinks); 0 when none. */
  predecessorDown = 0;
  private readonly givenUp: number[] = [];
  readonly links: ChainLinks;
  readonly sessions: ClientSessions;

  constructor(
    readonly chain: number,
    private readonly host: SlotHost,
    links: SlotLinkSettings,
    sessions: SlotSessionSettings,
  ) {
    this.links = new ChainLinks({
      ...links,
      urlOf: (replicaId) => host.urlOf(replicaId),
      openUpstream: (predecessor, from, handlers) => links.openUpstream(chain, predecessor, from, handlers),
      replicaProgress: () => {
        const stats = this.stats();
        return stats === null ? null : { epoch: stats.epoch, appliedSeq: stats.appliedSeq, committedSeq: stats.committedSeq };
      },
      offerBatch: (frame, budget) => links.offerBatch(chain, frame, budget),
      offerAck: (frame, budget) => links.offerAck(chain, frame, budget),
      joinLinkLost: (predecessor) => this.onJoinLinkLost(predecessor),
      predecessorRefused: (predecessor) => {
        const down = predecessor ?? 0;
        if (down === this.predecessorDown) return;
        this.predecessorDown = down;
        if (predecessor === null) return;
        host.log('warn', 'predecessor-down', `chain ${chain}: replica ${predecessor}'s host refuses connections: reporting it, so the master need not wait for its lease`);
        host.statusChanged();
      },
    });
    this.sessions = new ClientSessions({
      ...sessions,
      path: clientPath(chain),
      view: () => this.view(),
      isHead: () => ordersWrites(this.role()),
      isServingReads: () => this.isServingReads(),
      offerBatch: (frame, budget) => sessions.offerBatch(chain, frame, budget),
      offerReads: (frame, budget) => sessions.offerReads(chain, frame, budget),
    });
  }

  get configuration(): Configuration | null {
    return this.entry?.configuration ?? null;
  }

  /** This host's replica's role in the chain, or null. */
  role(): Role | null {
    const configuration = this.configuration;
    return configuration === null || this.replicaId === 0 ? null : (roleIn(configuration, this.replicaId) as Role | null);
  }

  /** A newer entry from etcd. */
  onEntry(entry: ChainEntry): void {
    if (this.entry !== null && entry.configuration.epoch <= this.entry.configuration.epoch) return;
    this.entry = entry;
    const { epoch, members, joining } = entry.configuration;
    this.host.log('info', 'configuration', `chain ${this.chain}: epoch ${epoch}: members ${members.join(',')}${joining === null ? '' : ` joining ${joining}`}`);
    this.follow();
  }

  onHandoff(request: HandoffRequest): void {
    if (this.handoff !== null && request.epoch < this.handoff.epoch) return;
    this.handoff = request;
    this.maybeBeginHandoff();
  }

  /** Brings the replica in line with the entry (also after the host changed its incarnation or node). */
  follow(): void {
    const entry = this.entry;
    const node = this.host.node();
    const mine = entry === null || node === null ? 0 : this.placedHere(entry);
    if (this.replicaId !== 0 && this.replicaId !== mine) this.dropReplica(`replica ${this.replicaId} is no longer in the chain`);
    if (entry === null || node === null || mine === 0) {
      this.links.update(null, 0, null);
      this.sessions.forgetReads();
      this.sessions.broadcastView();
      return;
    }
    const { configuration } = entry;
    const role = roleIn(configuration, mine) as Role;
    if (this.replicaId === 0) {
      if (this.givenUp.includes(mine)) return;
      // A joiner starts empty and copies the tail; so does every member of a chain just placed. A
      // durable host restarted in its incarnation restarts its members from their logs; a joiner
      // placed before the restart is given up, as when its join link breaks: a transfer cannot resume.
      // `--repair` cut its log at the damage: it lost writes it had, so it cannot be the member it
      // was. Given up; the next joiner here starts from what is left of that log.
      if (this.host.logDiscarded(this.chain, mine)) return this.giveUp(mine, `replica ${mine}'s log was cut at the damage --repair found`);
      const saved = this.host.logOf(this.chain, mine, false);
      if (role === 'joining' && saved !== undefined) return this.giveUp(mine, `replica ${mine} was joining when this host restarted`);
      const recovered = role === 'joining' ? undefined : saved;
      const fresh = recovered === undefined;
      if (fresh && role !== 'joining' && (configuration.epoch !== 1 || this.host.logDiscarded(this.chain, mine))) return this.giveUp(mine, `replica ${mine} is a member this host holds no state for`);
      const inChain = configuration.joining === null ? configuration.members : [...configuration.members, configuration.joining];
      const adoptFrom = role === 'joining' ? this.host.adoptableLog(this.chain, mine, inChain) : undefined;
      const newLog = this.host.logOf(this.chain, mine, true);
      const log = recovered ?? (adoptFrom === undefined || newLog === undefined ? newLog : { ...newLog, fresh: false, adoptFrom });
      node.addReplica(this.chain, mine, configuration.epoch, role, servesReads(role) ? configuration.joining : null, log);
      this.links.replicaStarted(configuration.epoch, role, adoptFrom !== undefined);
      this.replicaId = mine;
      this.replicaEpoch = configuration.epoch;
      const from = !fresh ? ', from its log' : adoptFrom === undefined ? '' : `, from the log in ${adoptFrom} (it is sent only what that lacks, if the tail can continue it)`;
      this.host.log('info', 'replica-started', `chain ${this.chain}: replica ${mine} started as ${role} in epoch ${configuration.epoch}${from}`);
    } else if (configuration.epoch > this.replicaEpoch) {
      node.reconfigure(this.chain, configuration.epoch, role, servesReads(role) ? configuration.joining : null);
      this.replicaEpoch = configuration.epoch;
    }
    this.links.update(configuration, mine, role);
    this.maybeBeginHandoff();
    if (!answersReads(role, this.host.readsAtAnyReplica)) this.sessions.forgetReads();
    this.sessions.broadcastView();
    this.host.configured(this.chain, configuration, role);
  }

  /** The host's node is gone (a new incarnation follows): the replica went with it. */
  nodeLost(): void {
    this.replicaId = 0;
    this.replicaEpoch = 0;
    this.handoffBegun = '';
    this.links.closeAll();
    this.sessions.forgetReads();
  }

  /** The member or joiner placed on this host's incarnation, or 0. */
  private placedHere(entry: ChainEntry): number {
    const incarnation = this.host.incarnation();
    for (const [replicaId, home] of entry.homes) if (home.host === this.host.hostId && home.incarnation === incarnation) return replicaId;
    return 0;
  }

  /** `keepLog`: a joiner placed here later may start from its log (false: its chain cannot continue it). */
  private dropReplica(why: string, keepLog = true): void {
    this.host.node()?.dropReplica(this.chain, keepLog);
    this.host.log('info', 'replica-dropped', `chain ${this.chain}: ${why}: dropped`);
    this.replicaId = 0;
    this.replicaEpoch = 0;
    this.handoffBegun = '';
    this.links.closeAll();
    this.sessions.forgetReads();
  }

  private giveUp(replicaId: number, reason: string, keepLog = true): void {
    // A running replica's worker removes its log itself, once it has stopped writing to it; no
    // joiner placed here meanwhile may adopt it.
    const running = this.replicaId === replicaId;
    if (!keepLog) this.host.discardLog(this.chain, replicaId, !running);
    if (running) this.dropReplica(reason, keepLog);
    if (this.givenUp.includes(replicaId)) return;
    this.givenUp.push(replicaId);
    if (this.givenUp.length > GIVEN_UP_MAX) this.givenUp.shift();
    this.host.gaveUp(this.chain, replicaId, reason);
  }

  /**
   * The link a joiner copies through broke: snapshot frames were lost with it, and a transfer
   * cannot resume. Unless the handoff already made it a member (in an entry not seen yet: then it
   * is a full copy, and follow() will keep it), give it up: the master places a new joiner.
   */
  private onJoinLinkLost(predecessor: number): void {
    const replicaId = this.replicaId;
    if (replicaId === 0 || this.configuration?.members.includes(replicaId) === true) return;
    this.host.log('warn', 'join-link-lost', `chain ${this.chain}: lost the link to replica ${predecessor} while joining: giving replica ${replicaId} up`);
    this.giveUp(replicaId, 'its join link broke');
  }

  /**
   * A batch reached replica `replicaId` damaged, or after a gap. A member asked its predecessor to
   * send it again (a Hello, see ChainNode); a joiner cannot: its batches and snapshot frames share
   * one stream that cannot resume, as when its join link breaks (a gap there means frames were
   * lost, and the tail would wait for it forever at the handoff). Unless the handoff already made
   * it a member, it is given up and the master places a new joiner.
   */
  onDamagedBatch(replicaId: number, code: ErrorCode): void {
    if (replicaId === 0 || replicaId !== this.replicaId || this.role() !== 'joining') return;
    if (this.configuration?.members.includes(replicaId) === true) return;
    const what = code === ErrorCode.corrupt ? 'damaged' : 'after a gap in its stream';
    this.host.log('warn', 'join-batch-damaged', `chain ${this.chain}: a batch reached joining replica ${replicaId} ${what}: giving it up`);
    this.giveUp(replicaId, `a batch reached it ${what} while it was joining`);
  }

  /**
   * A joiner that started from an old log was sent a snapshot: the tail cannot continue that log
   * (it holds writes the chain went on without, or the tail's log no longer reaches back to it).
   * Given up with its log, so the next joiner placed here starts empty and copies the chain.
   */
  onLogDiverged(replicaId: number): void {
    if (replicaId === 0 || replicaId !== this.replicaId || this.role() !== 'joining') return;
    this.host.log('warn', 'log-diverged', `chain ${this.chain}: the tail cannot continue the log joining replica ${replicaId} started from: giving it up, with that log`);
    this.giveUp(replicaId, 'the tail could not continue the log it started from', false);
  }

  private maybeBeginHandoff(): void {
    const request = this.handoff;
    const configuration = this.configuration;
    const node = this.host.node();
    if (request === null || configuration === null || this.replicaId === 0 || node === null) return;
    if (!servesReads(this.role()) || configuration.epoch !== request.epoch || configuration.joining !== request.joiner) return;
    const key = `${request.epoch}:${request.joiner}`;
    if (this.handoffBegun === key) return;
    this.handoffBegun = key;
    node.beginHandoff(this.chain);
  }

  /**
   * Whether this host answers the chain's reads now: its replica is the tail, or with reads at any
   * replica a member (not a joiner), in the configuration's epoch, and its lease holds (a host that
   * may have been removed for silence stops first: LEASE_READ_MARGIN_MS).
   */
  isServingReads(): boolean {
    if (this.replicaId === 0 || !answersReads(this.role(), this.host.readsAtAnyReplica)) return false;
    if (this.replicaEpoch !== this.configuration?.epoch) return false;
    return this.host.leaseAllowsReads();
  }

  /**
   * What clients of the chain are told: its members (head first) with their hosts' URLs and zones,
   * whether every member answers reads, and whether it is lost.
   */
  view(): { epoch: number; members: ClusterMember[]; joining: ClusterMember | null; chains: number; lost: boolean; diskFull: boolean; readsAnyReplica: boolean; admits: boolean } | null {
    const configuration = this.configuration;
    if (configuration === null) return null;
    // A member whose host is gone (its lease expired) is about to be removed: list it with this
    // host's URL, so clients never get an unusable view.
    const own = this.host.ownUrl();
    const members = configuration.members.map((replicaId) => {
      const zone = this.host.zoneOf(replicaId);
      return { replicaId, url: this.host.urlOf(replicaId) ?? own, ...(zone === null ? {} : { zone }) };
    });
    const joiningUrl = configuration.joining === null ? null : this.host.urlOf(configuration.joining);
    return {
      epoch: configuration.epoch,
      members,
      joining: configuration.joining === null || joiningUrl === null ? null : { replicaId: configuration.joining, url: joiningUrl },
      chains: this.host.chains,
      // Every member gone at once: its data went with them, and nothing brings the chain back.
      lost: configuration.members.every((replicaId) => this.host.isGone(replicaId)),
      diskFull: this.host.diskRefusal(this.chain) !== null,
      readsAnyReplica: this.host.readsAtAnyReplica,
      admits: this.host.admits,
    };
  }

  stats(): ReplicaSnapshotStats | null {
    return this.replicaId === 0 ? null : (this.host.node()?.stats(this.chain) ?? null);
  }

  /** This replica's commit latency as its chain's head (empty if it never headed), or null. */
  commitLatency(): WeightedHistogram | null {
    return this.replicaId === 0 ? null : (this.host.node()?.commitLatency(this.chain) ?? null);
  }

  /** This replica's line in the host's status (what the master decides joins and handoffs from). */
  status(): ReplicaStatus | null {
    const stats = this.stats();
    if (stats === null) return null;
    return {
      chain: this.chain,
      replicaId: this.replicaId,
      epoch: stats.epoch || this.replicaEpoch,
      role: this.role() ?? 'none',
      appliedSeq: stats.appliedSeq,
      committedSeq: stats.committedSeq,
      joinCaughtUp: stats.joinCaughtUp,
      handoffReadyEpoch: stats.handoffReadyEpoch,
      predecessorDown: this.predecessorDown,
      diskFull: stats.diskFull,
    };
  }
}
