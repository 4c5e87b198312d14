/**
 * The chain configuration, host liveness and master election kept in etcd, for chains that span
 * hosts. The async counterpart of the core's ConfigurationStore; EtcdMaster (etcd-master.ts)
 * drives it.
 *
 * Keys, all under one prefix per dabba cluster (default `/dabba/default/`):
 *   settings                   the cluster's fixed settings, JSON {chains, replicas}, written once by the first host
 *   chains/<c>/configuration   chain c's ChainEntry as JSON: its Configuration and the home (host and
 *                              incarnation) of every member and the joiner
 *   chains/<c>/epoch           its epoch in decimal, written in the same transactions
 *   chains/<c>/handoff         the master's latest handoff request of chain c, JSON {epoch, joiner}
 *   hosts/<hostId>             one per live host, attached to that host's lease: its HostInfo as JSON
 *                              (or the bare host id when it registered without one)
 *   status/<hostId>            the host's latest HostStatus as JSON, under the same lease
 *   counters/replica           the last replica id handed out, in decimal (the master's rounds)
 *   counters/client            the last client id handed out, in decimal (allocateId)
 *   election/master/<leaseId>  the candidates for master (etcd3's Election layout)
 */
import { Etcd3, Range, type Campaign, type ComparatorBuilder, type Lease, type Namespace, type Watcher } from 'etcd3';
import type { HandoffRequest } from '../../native-free-core/master/cluster-decisions.js';
import type { ChainChange, ChainEntry, ReplicaHome } from '../../native-free-core/master/table-round.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { CHAINS_MAX, NODES_MAX } from '../options.js';
import { decodeChainEntry, encodeChainEntry, INCARNATION } from './configuration-json.js';

const SETTINGS_KEY = 'settings';
const CHAINS_PREFIX = 'chains/';
const chainKey = (chain: number, what: 'configuration' | 'epoch' | 'handoff'): string => `${CHAINS_PREFIX}${chain}/${what}`;
const HOSTS_PREFIX = 'hosts/';
const STATUS_PREFIX = 'status/';
/** The first key after every `status/...` key: '0' follows '/'. */
const STATUS_RANGE_END = 'status0';
const COUNTERS_PREFIX = 'counters/';
const REPLICA_COUNTER_KEY = `${COUNTERS_PREFIX}replica`;
const ELECTION_NAME = 'master';
export const DEFAULT_PREFIX = '/dabba/default/';
const DEFAULT_LEADERSHIP_TTL_SECONDS = 10;
/** Replica and client ids travel as uint32 on the wire (schema.fbs). */
const ID_MAX = 0xffffffff;
/** allocateId gives up after this many lost races for the counter (each loss means another id was handed out). */
const ALLOCATE_ATTEMPTS_MAX = 64;
const LEASE_RENEWALS_UNANSWERED_MAX = 16;

export interface EtcdConfigurationStoreOptions {
  /** Client URLs of the etcd members, e.g. `['http://10.0.0.1:2379', ...]`. */
  hosts: string[];
  /** Every key lives under this prefix (one dabba cluster per prefix); starts and ends with '/'. */
  prefix?: string;
  /** For https:// members: the CA their certificates chain to, and a client certificate if etcd asks for one. */
  tls?: EtcdTls;
  /** etcd's own authentication (a user and its password), when etcd has it enabled. */
  auth?: EtcdAuth;
}

/** PEM bytes, as etcd3 hands them to gRPC. */
export interface EtcdTls {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export interface EtcdAuth {
  username: string;
  password: string;
}

export interface HostChange {
  kind: 'registered' | 'gone';
  hostId: string;
}

/** A cluster's settings, fixed when it is first initialised. */
export interface ClusterSettings {
  chains: number;
  /** Replicas per chain (fewer while there are fewer hosts). */
  replicas: number;
}

export const DEFAULT_SETTINGS: ClusterSettings = { chains: 1, replicas: 3 };

/** What a host announces in `hosts/<hostId>`: who it is and where to reach it. */
export interface HostInfo {
  /**
   * This run of the host (random): the master places replicas on an incarnation, so a host that
   * restarts (it starts empty) is never taken for the replicas it ran before.
   */
  incarnation: string;
  /** The host's zone: replicas of one chain go to distinct zones when there are enough. */
  zone: string;
  /** The host's base ws/http URL, e.g. `ws://10.77.1.10:7400`. */
  url: string;
  /**
   * The host's Ed25519 public key (its 32 bytes, base64url): a peer link from or to this host must
   * be signed with the matching private key, which never leaves the host's process.
   */
  publicKey?: string;
}

/** What a host reports about one of its replicas (the master decides joins and handoffs from it). */
export interface ReplicaStatus {
  chain: number;
  replicaId: number;
  /** The configuration epoch the replica runs in. */
  epoch: number;
  /** 'head' | 'middle' | 'tail' | 'solo' | 'joining' (informative). */
  role: string;
  appliedSeq: number;
  committedSeq: number;
  /** A joiner that has loaded its snapshot and is applying the stream after it. */
  joinCaughtUp: boolean;
  /** The epoch in which this tail became ready to hand over to its joiner; 0 when not ready. */
  handoffReadyEpoch: number;
  /** The replica id of its predecessor (in `epoch`) whose host refused a connection (its process is gone); 0 when none. */
  predecessorDown: number;
  /** Its disk is full: the chain refuses writes (absent, from a host that predates it: false). */
  diskFull: boolean;
}

/** What a host reports in `status/<hostId>`. */
export interface HostStatus {
  /** The incarnation this status is of (a status left by an earlier run is not this run's). */
  incarnation: string;
  /** Whether this host stands for master (not started with --no-master). */
  candidate: boolean;
  writesPerSecond: number;
  /** The 99th percentile of its heads' commit latency over the last second, in ms (0: none committed). */
  commitP99Ms: number;
  /**
   * Its node thread's wall ms busy applying and sending on batches, and the writes it applied, over
   * the replicas it holds now (fail-slow detection); absent from a host of an earlier version.
   */
  load?: { busyMs: number; writesApplied: number };
  replicas: ReplicaStatus[];
  /** Replicas this run gave up while it stays up (a joiner whose link broke), newest last. */
  failed: number[];
}

/** Replica ids a status lists as given up, at most (the master needs only the recent ones). */
export const FAILED_REPLICAS_MAX = 64;

/** One live host as seen by watchHostTable; null where the stored value is missing or malformed. */
export interface HostTableEntry {
  info: HostInfo | null;
  status: HostStatus | null;
}

/** Every host whose `hosts/<hostId>` key exists, by host id (in host id order). */
export type HostTable = ReadonlyMap<string, HostTableEntry>;

/**
 * What a replica's host last reported of it, if that host is registered in the replica's
 * incarnation (`home`) and the status is of that incarnation; null otherwise (gone, restarted, or
 * not reported yet).
 */
export function reportedStatus(table: HostTable, home: ReplicaHome, replicaId: number): ReplicaStatus | null {
  const { info, status } = table.get(home.host) ?? { info: null, status: null };
  if (info?.incarnation !== home.incarnation || status?.incarnation !== home.incarnation) return null;
  return status.replicas.find((replica) => replica.replicaId === replicaId) ?? null;
}

/** The master asks the tail of `epoch` to stop taking writes until `joiner` has everything (key `handoff`). */
export type { HandoffRequest };

export type IdCounter = 'replica' | 'client';

/** The chain table as etcd holds it (see loadTable and watchTable). */
export interface StoredTable {
  entries: Array<ChainEntry | null>;
  handoffs: Array<HandoffRequest | null>;
  /** The first replica id not handed out (0 from watchTable, which does not follow the counter). */
  nextReplicaId: number;
}

export interface HostRegistration {
  readonly hostId: string;
  /** What `hosts/<hostId>` holds; null when registered without. */
  readonly info: HostInfo | null;
  /** Aborted when etcd no longer holds this host's lease (it expired while unreachable, or was revoked elsewhere). */
  readonly lost: AbortSignal;
  /** Leaves at once: revoking the lease deletes `hosts/<hostId>`. */
  revoke(): Promise<void>;
  /** Stops renewing the lease, as a crash would: the key goes when the TTL runs out. */
  stopKeepalive(): void;
  /** Puts `status/<hostId>` under this host's lease (it goes with the host). */
  putStatus(status: HostStatus): Promise<void>;
  /**
   * A `performance.now()` time before which etcd surely still holds this lease: the moment the
   * last acknowledged renewal (or the grant) was sent, plus the TTL etcd granted. A tail may serve
   * reads on its own until then (minus a margin for clock rate drift); 0 once the lease is lost
   * or revoked. After stopKeepalive() it stays where the last renewal left it.
   */
  leaseValidUntil(): number;
}

/**
 * What fences a master's writes: its election key and the revision that created it. A fenced
 * transaction also requires that key to still have that create revision, as etcd's Go client does
 * with Election.Rev() (its IsOwner compare). Once the candidate resigns or its lease expires the
 * key is deleted, so a deposed master's write fails even when its epoch still matches.
 */
export interface LeadershipFence {
  /** The store prefix the key lives under: a fence only works with a store of the same prefix. */
  readonly prefix: string;
  /** Relative to the prefix: `election/master/<leaseId>`. */
  readonly electionKey: string;
  readonly createRevision: string;
}

export interface Leadership {
  readonly candidateId: string;
  /**
   * Aborted when leadership is lost without resign(): the candidate's lease expired (etcd
   * unreachable for longer than the TTL) or was revoked. From then on another candidate may lead.
   */
  readonly lost: AbortSignal;
  /** Gives up leadership; the next candidate in line is elected. */
  resign(): Promise<void>;
  /** Pass this Leadership to compareAndSet/initialize/requestHandoff to fence them. */
  readonly fence: LeadershipFence;
}

export interface CampaignOptions {
  /** How long leadership outlives a silent (crashed or cut off) master. Default 10 s. */
  ttlSeconds?: number;
  /** Withdraws the candidacy while it is still waiting; the campaign() promise rejects with the reason. */
  signal?: AbortSignal;
}

/** Cancels a watch. */
export type StopWatching = () => Promise<void>;

export class EtcdConfigurationStore {
  readonly prefix: string;
  private readonly client: Etcd3;
  private readonly namespace: Namespace;
  // Held so close() can end them: a forgotten keepalive would retry (and keep the process alive) after close.
  private readonly leases = new Set<Lease>();
  private readonly campaigns = new Set<Campaign>();
  private readonly watchers = new Set<Watcher>();

  constructor(options: EtcdConfigurationStoreOptions) {
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    if (!prefix.startsWith('/') || !prefix.endsWith('/') || prefix.length < 2) {
      throw new DabbaError(ErrorCode.invalidArgument, `etcd key prefix must start and end with '/' (got ${JSON.stringify(prefix)})`);
    }
    if (options.hosts.length === 0) throw new DabbaError(ErrorCode.invalidArgument, 'at least one etcd host is needed');
    this.prefix = prefix;
    const { tls, auth } = options;
    this.client = new Etcd3({
      hosts: options.hosts,
      ...(tls === undefined ? {} : { credentials: { rootCertificate: tls.ca, ...(tls.key === undefined ? {} : { privateKey: tls.key }), ...(tls.cert === undefined ? {} : { certChain: tls.cert }) } }),
      ...(auth === undefined ? {} : { auth: { username: auth.username, password: auth.password } }),
    });
    this.namespace = this.client.namespace(prefix);
  }

  /** The cluster's settings, or null before the first host wrote them. Throws if what is stored is malformed. */
  async settings(): Promise<ClusterSettings | null> {
    const text = await this.namespace.get(SETTINGS_KEY).string();
    return text === null ? null : decodeSettings(text, this.keyName(SETTINGS_KEY));
  }

  /**
   * The cluster's settings: written with `wanted` (the defaults filling what is not given) if this
   * is the cluster's first host, else read back and checked against what `wanted` gives: a host
   * started with other settings is refused, with one line saying what the cluster has.
   */
  async adoptSettings(wanted: Partial<ClusterSettings>): Promise<ClusterSettings> {
    const first: ClusterSettings = { ...DEFAULT_SETTINGS, ...wanted };
    const text = checkedJson(first, (json) => decodeSettings(json, 'the settings to write'));
    const created = await this.namespace.if(SETTINGS_KEY, 'Create', '==', 0).then(this.namespace.put(SETTINGS_KEY).value(text)).commit();
    if (created.succeeded) return first;
    const stored = await this.settings();
    if (stored === null) throw new DabbaError(ErrorCode.malformedFrame, `${this.keyName(SETTINGS_KEY)} was deleted while this host started`);
    const differ = (['chains', 'replicas'] as const).filter((name) => wanted[name] !== undefined && wanted[name] !== stored[name]);
    if (differ.length > 0) {
      throw new DabbaError(
        ErrorCode.invalidArgument,
        `this cluster (${this.keyName(SETTINGS_KEY)}) has --chains ${stored.chains} --replicas ${stored.replicas}, fixed when it was first started; ` +
          `this host was started with ${differ.map((name) => `--${name} ${wanted[name]}`).join(' ')}: start it with the cluster's settings (or without them), or use another --etcd-prefix`,
      );
    }
    return stored;
  }

  /**
   * The chain table: every chain's entry and handoff request (null where there is none yet), and
   * the first replica id not handed out. Throws if a stored value is malformed.
   */
  async loadTable(chains: number): Promise<StoredTable> {
    const table: StoredTable = { entries: new Array(chains).fill(null), handoffs: new Array(chains).fill(null), nextReplicaId: 1 };
    const response = await this.namespace.getAll().prefix(CHAINS_PREFIX).exec();
    for (const kv of response.kvs) this.applyTableKey(table, chains, kv.key.toString(), kv.value.toString(), (error) => {
      throw error;
    });
    const counter = (await this.namespace.get(REPLICA_COUNTER_KEY).exec()).kvs[0];
    table.nextReplicaId = counter === undefined ? 1 : decodeCounter(counter.value.toString(), this.keyName(REPLICA_COUNTER_KEY)) + 1;
    return table;
  }

  /**
   * Calls `onChange` with the chain table now, then after every change to it, in order and without
   * gaps (the watch starts at the revision right after the read). A malformed or deleted value
   * goes to `onError` (by default a process warning), and the table keeps what it had.
   */
  async watchTable(chains: number, onChange: (table: StoredTable) => void, onError: (error: Error) => void = warn): Promise<StopWatching> {
    const table: StoredTable = { entries: new Array(chains).fill(null), handoffs: new Array(chains).fill(null), nextReplicaId: 0 };
    const snapshot = await this.namespace.getAll().prefix(CHAINS_PREFIX).exec();
    for (const kv of snapshot.kvs) this.applyTableKey(table, chains, kv.key.toString(), kv.value.toString(), onError);
    onChange(table);
    const delivery = coalesced(() => onChange(table));
    const watcher = this.namespace.watch().prefix(CHAINS_PREFIX).startRevision(nextRevision(snapshot.header.revision)).watcher();
    watcher.on('put', (kv) => {
      if (this.applyTableKey(table, chains, kv.key.toString(), kv.value.toString(), onError)) delivery.changed();
    });
    watcher.on('delete', (kv) => onError(new DabbaError(ErrorCode.malformedFrame, `${this.keyName(kv.key.toString())} was deleted`)));
    return delivery.until(await this.started(watcher, onError));
  }

  /**
   * Writes a master's round in one transaction: every chain's new entry, if that chain is still
   * at the epoch the round was decided from (not configured yet, for null), every handoff request,
   * and the replica counter, if it still is where the round began. With `fence`, only while that
   * candidate leads. False (nothing written) if any of it no longer holds: loadTable() tells what
   * changed (nothing, when the fence failed).
   *
   * An error (e.g. the connection broke) leaves the outcome unknown: the round may have committed.
   */
  async commitRound(changes: readonly ChainChange[], replicaIds: { from: number; to: number }, fence?: Leadership): Promise<boolean> {
    if (changes.length === 0) return true;
    let transaction: ComparatorBuilder | null = null;
    const and = (key: string, target: 'Create' | 'Value' | 'Version', value: string | number): void => {
      const operator = value === -1 ? '>' : '==';
      transaction = transaction === null ? this.namespace.if(key, target, operator, value) : transaction.and(key, target, operator, value);
    };
    const puts = [];
    for (const change of changes) {
      if (change.kind === 'request-handoff') {
        const text = checkedJson(change.request, (json) => decodeHandoffRequest(json, 'the handoff request to write'));
        puts.push(this.namespace.put(chainKey(change.chain, 'handoff')).value(text));
        continue;
      }
      const { configuration } = change.entry;
      const text = encodeChainEntry(change.entry);
      try {
        decodeChainEntry(text, 'the chain entry to write');
      } catch (error) {
        throw new DabbaError(ErrorCode.invalidArgument, (error as Error).message);
      }
      if (change.previousEpoch === null) and(chainKey(change.chain, 'epoch'), 'Create', 0);
      else and(chainKey(change.chain, 'epoch'), 'Value', String(change.previousEpoch));
      puts.push(this.namespace.put(chainKey(change.chain, 'epoch')).value(String(configuration.epoch)));
      puts.push(this.namespace.put(chainKey(change.chain, 'configuration')).value(text));
    }
    if (replicaIds.to !== replicaIds.from) {
      if (replicaIds.to - 1 > ID_MAX) throw new DabbaError(ErrorCode.outOfRange, `the replica ids are used up (${this.keyName(REPLICA_COUNTER_KEY)})`);
      if (replicaIds.from === 1) and(REPLICA_COUNTER_KEY, 'Create', 0);
      else and(REPLICA_COUNTER_KEY, 'Value', String(replicaIds.from - 1));
      puts.push(this.namespace.put(REPLICA_COUNTER_KEY).value(String(replicaIds.to - 1)));
    }
    if (fence !== undefined) {
      this.checkFence(fence);
      and(fence.fence.electionKey, 'Create', fence.fence.createRevision);
    }
    // Handoff requests alone compare nothing but the fence (a request is harmless when stale): a
    // compare that always holds opens the transaction.
    if (transaction === null) and(chainKey(changes[0]!.chain, 'handoff'), 'Version', -1);
    const result = await (transaction as unknown as ComparatorBuilder).then(...puts).commit();
    return result.succeeded;
  }

  /** Applies one `chains/...` key to `table`; whether it changed anything. */
  private applyTableKey(table: StoredTable, chains: number, key: string, text: string, onError: (error: Error) => void): boolean {
    const match = /^chains\/(0|[1-9][0-9]{0,5})\/(configuration|epoch|handoff)$/.exec(key);
    const chain = match === null ? -1 : Number(match[1]);
    if (match === null || chain >= chains) {
      onError(new DabbaError(ErrorCode.malformedFrame, `${this.keyName(key)} is not a key of this cluster's ${chains} chains`));
      return false;
    }
    try {
      if (match[2] === 'configuration') {
        const entry = decodeChainEntry(text, this.keyName(key));
        const current = table.entries[chain];
        if (current !== null && current !== undefined && current.configuration.epoch >= entry.configuration.epoch) return false;
        table.entries[chain] = entry;
        return true;
      }
      if (match[2] === 'handoff') {
        const request = decodeHandoffRequest(text, this.keyName(key));
        const current = table.handoffs[chain];
        if (current !== null && current !== undefined && current.epoch > request.epoch) return false;
        table.handoffs[chain] = request;
        return true;
      }
      return false; // The epoch key is for transactions' compares; the entry carries the epoch.
    } catch (error) {
      onError(error as Error);
      return false;
    }
  }

  /**
   * Announces a live host: `hosts/<hostId>` under a lease of `ttlSeconds` that is kept alive in
   * the background. If this process dies or loses etcd, the key is deleted once the TTL runs out.
   * With `info` the key holds it as JSON (what the master needs: the replica id and the URL);
   * without, the bare host id.
   */
  async registerHost(hostId: string, ttlSeconds: number, info?: HostInfo): Promise<HostRegistration> {
    checkHostId(hostId);
    checkTtl(ttlSeconds);
    const value = info === undefined ? hostId : checkedJson(info, (text) => decodeHostInfo(text, 'the host info to write'));
    const grantSentAt = performance.now();
    const lease = this.namespace.lease(ttlSeconds);
    this.leases.add(lease);
    const lost = new AbortController();
    const validity = new LeaseValidity(lease, grantSentAt, ttlSeconds);
    lease.on('lost', (error) => {
      validity.end();
      lost.abort(error);
    });
    try {
      await lease.put(HOSTS_PREFIX + hostId).value(value).exec();
    } catch (error) {
      this.leases.delete(lease);
      lease.release();
      throw error;
    }
    return {
      hostId,
      info: info === undefined ? null : { ...info },
      lost: lost.signal,
      putStatus: async (status) => {
        const text = checkedJson(status, (json) => decodeHostStatus(json, 'the host status to write'));
        await lease.put(STATUS_PREFIX + hostId).value(text).exec();
      },
      leaseValidUntil: () => validity.until,
      revoke: async () => {
        this.leases.delete(lease);
        validity.end();
        await lease.revoke();
      },
      stopKeepalive: () => {
        this.leases.delete(lease);
        lease.release();
      },
    };
  }

  /**
   * Revokes the lease `hosts/<hostId>` is under, as if the host had stopped renewing it and the TTL
   * had run out: its keys go at once. False if no such host is registered. A live host evicted this
   * way sees its registration lost and registers again (as a new replica).
   */
  async evictHost(hostId: string): Promise<boolean> {
    checkHostId(hostId);
    const response = await this.namespace.get(HOSTS_PREFIX + hostId).exec();
    const lease = response.kvs[0]?.lease;
    if (lease === undefined || lease === '0') return false;
    await this.namespace.leaseClient.leaseRevoke({ ID: lease });
    return true;
  }

  /** The ids of the hosts whose leases are alive, sorted. */
  async liveHosts(): Promise<string[]> {
    const keys = await this.namespace.getAll().prefix(HOSTS_PREFIX).keys();
    return keys.map((key) => key.slice(HOSTS_PREFIX.length)).sort();
  }

  /**
   * Reports each live host as 'registered' at once, then every host that registers or goes
   * (revoked, or its lease expired), in order and without gaps.
   */
  async watchHosts(onChange: (change: HostChange) => void, onError: (error: Error) => void = warn): Promise<StopWatching> {
    const snapshot = await this.namespace.getAll().prefix(HOSTS_PREFIX).exec();
    const live = new Set<string>();
    for (const kv of snapshot.kvs) {
      const hostId = kv.key.toString().slice(HOSTS_PREFIX.length);
      live.add(hostId);
      onChange({ kind: 'registered', hostId });
    }
    const watcher = this.namespace.watch().prefix(HOSTS_PREFIX).startRevision(nextRevision(snapshot.header.revision)).watcher();
    watcher.on('put', (kv) => {
      // A lease renewal does not write the key; a put is a (re-)registration. Report transitions only.
      const hostId = kv.key.toString().slice(HOSTS_PREFIX.length);
      if (live.has(hostId)) return;
      live.add(hostId);
      onChange({ kind: 'registered', hostId });
    });
    watcher.on('delete', (kv) => {
      const hostId = kv.key.toString().slice(HOSTS_PREFIX.length);
      if (!live.delete(hostId)) return;
      onChange({ kind: 'gone', hostId });
    });
    return this.started(watcher, onError);
  }

  /**
   * Resolves once `candidateId` is the one active master of this prefix. Candidates are served in
   * the order they campaigned; each waits (without polling) for the ones before it to resign or
   * lose their lease. etcd3's Lock would not do: its acquire() fails at once when the lock is held.
   */
  async campaign(candidateId: string, options: CampaignOptions = {}): Promise<Leadership> {
    const ttlSeconds = options.ttlSeconds ?? DEFAULT_LEADERSHIP_TTL_SECONDS;
    checkTtl(ttlSeconds);
    options.signal?.throwIfAborted();
    const campaign = this.namespace.election(ELECTION_NAME, ttlSeconds).campaign(candidateId);
    this.campaigns.add(campaign);
    const lost = new AbortController();
    let elected = false;
    let fence: LeadershipFence;
    const withdraw = (): Promise<void> => {
      this.campaigns.delete(campaign);
      return campaign.resign();
    };
    try {
      await new Promise<void>((resolve, reject) => {
        campaign.once('elected', () => {
          elected = true;
          resolve();
        });
        campaign.on('error', (error) => (elected ? lost.abort(error) : reject(error)));
        options.signal?.addEventListener('abort', () => reject(options.signal!.reason), { once: true });
      });
      fence = await this.fenceOf(campaign);
    } catch (error) {
      await withdraw().catch(() => undefined);
      throw error;
    }
    return { candidateId, lost: lost.signal, resign: withdraw, fence };
  }

  /**
   * Calls `onChange` with the whole host table at once, then after every change, in order and
   * without gaps (both prefixes are read at one revision and watched from the next). Only hosts
   * whose `hosts/<hostId>` key exists appear; a status without it waits, unseen, until it does
   * (or goes with its lease). Events etcd delivers together (a lease expiry deletes both keys of a
   * host at once) make one call. A malformed value goes to `onError` and shows as null.
   */
  async watchHostTable(onChange: (table: HostTable) => void, onError: (error: Error) => void = warn): Promise<StopWatching> {
    const infos = new Map<string, HostInfo | null>();
    const statuses = new Map<string, HostStatus | null>();
    const putInfo = (hostId: string, text: string): void => {
      // A host registered without info holds its bare id: no info, and nothing wrong.
      infos.set(hostId, text === hostId ? null : this.decodeOrReport(text, HOSTS_PREFIX + hostId, decodeHostInfo, onError));
    };
    const putStatus = (hostId: string, text: string): void => {
      statuses.set(hostId, this.decodeOrReport(text, STATUS_PREFIX + hostId, decodeHostStatus, onError));
    };
    const table = (): HostTable =>
      new Map(
        [...infos.keys()].sort().map((hostId) => [hostId, { info: infos.get(hostId) ?? null, status: statuses.get(hostId) ?? null }]),
      );

    // One range holds both prefixes ('hosts/' < 'status/'; 'status0' is the end of 'status/'), so
    // one read gives a consistent table and one watch delivers a host's two keys together (a
    // lease expiry deletes both in one revision). Other keys in between, if any, are skipped.
    const both = new Range(HOSTS_PREFIX, STATUS_RANGE_END);
    const apply = (key: string, text: string | null): boolean => {
      if (key.startsWith(HOSTS_PREFIX)) {
        const hostId = key.slice(HOSTS_PREFIX.length);
        if (text === null) infos.delete(hostId);
        else putInfo(hostId, text);
        return true;
      }
      if (key.startsWith(STATUS_PREFIX)) {
        const hostId = key.slice(STATUS_PREFIX.length);
        if (text === null) statuses.delete(hostId);
        else putStatus(hostId, text);
        return true;
      }
      return false;
    };
    const snapshot = await this.namespace.getAll().inRange(both).exec();
    for (const kv of snapshot.kvs) apply(kv.key.toString(), kv.value.toString());
    onChange(table());

    const delivery = coalesced(() => onChange(table()));
    const watcher = this.namespace.watch().inRange(both).startRevision(nextRevision(snapshot.header.revision)).watcher();
    watcher.on('put', (kv) => {
      if (apply(kv.key.toString(), kv.value.toString())) delivery.changed();
    });
    watcher.on('delete', (kv) => {
      if (apply(kv.key.toString(), null)) delivery.changed();
    });
    return delivery.until(await this.started(watcher, onError));
  }

  /**
   * Hands out the next id of `counter` (1 first), atomically across processes: read the counter,
   * then write counter + 1 in a transaction that requires the key's mod revision to be what was
   * read (0 while the key does not exist), retrying when another process won the race. Ids are
   * uint32 on the wire, so the counters stop at 0xffffffff.
   */
  async allocateId(counter: IdCounter): Promise<number> {
    if (counter !== 'replica' && counter !== 'client') {
      throw new DabbaError(ErrorCode.invalidArgument, `the id counters are 'replica' and 'client' (got ${JSON.stringify(counter)})`);
    }
    const key = COUNTERS_PREFIX + counter;
    for (let attempt = 0; attempt < ALLOCATE_ATTEMPTS_MAX; attempt++) {
      const kv = (await this.namespace.get(key).exec()).kvs[0];
      const last = kv === undefined ? 0 : decodeCounter(kv.value.toString(), this.keyName(key));
      if (last >= ID_MAX) throw new DabbaError(ErrorCode.outOfRange, `the ${counter} ids are used up (${this.keyName(key)} is ${last})`);
      const next = last + 1;
      const result = await this.namespace
        .if(key, 'Mod', '==', kv === undefined ? 0 : kv.mod_revision)
        .then(this.namespace.put(key).value(String(next)))
        .commit();
      if (result.succeeded) return next;
    }
    throw new DabbaError(ErrorCode.timeout, `gave up allocating a ${counter} id after ${ALLOCATE_ATTEMPTS_MAX} conflicting attempts`);
  }

  /** Revokes host leases and resigns campaigns still held, cancels watches, closes the client. */
  async close(): Promise<void> {
    const endings = [
      ...[...this.leases].map((lease) => lease.revoke()),
      ...[...this.campaigns].map((campaign) => campaign.resign()),
      ...[...this.watchers].map((watcher) => watcher.cancel()),
    ];
    this.leases.clear();
    this.campaigns.clear();
    this.watchers.clear();
    // Best effort: etcd may be unreachable, and then the leases expire on their own.
    await Promise.allSettled(endings);
    this.client.close();
  }

  private keyName(key: string): string {
    return `etcd key ${this.prefix}${key}`;
  }

  private checkFence(leadership: Leadership): void {
    if (leadership.fence.prefix !== this.prefix) {
      throw new DabbaError(
        ErrorCode.invalidArgument,
        `a leadership of prefix ${leadership.fence.prefix} cannot fence writes under ${this.prefix}`,
      );
    }
  }

  /**
   * The elected candidate's key and its create revision. etcd3's Campaign names its key after its
   * lease (getCampaignKey(), with the full prefix) and keeps the revision private, so it is read
   * back here; it cannot change while the key exists (the campaign only rewrites its value).
   */
  private async fenceOf(campaign: Campaign): Promise<LeadershipFence> {
    const fullKey = await campaign.getCampaignKey();
    if (!fullKey.startsWith(this.prefix)) {
      throw new DabbaError(ErrorCode.invalidArgument, `election key ${fullKey} is not under ${this.prefix}`);
    }
    const electionKey = fullKey.slice(this.prefix.length);
    const kv = (await this.namespace.get(electionKey).exec()).kvs[0];
    if (kv === undefined) {
      throw new DabbaError(ErrorCode.staleEpoch, `leadership was lost as it began (${this.keyName(electionKey)} is gone)`);
    }
    return { prefix: this.prefix, electionKey, createRevision: kv.create_revision };
  }

  /** Decodes, or reports the malformed value to `onError` and gives null. */
  private decodeOrReport<T>(
    text: string,
    key: string,
    decode: (text: string, source: string) => T,
    onError: (error: Error) => void,
  ): T | null {
    try {
      return decode(text, this.keyName(key));
    } catch (error) {
      onError(error as Error);
      return null;
    }
  }

  /** Waits until etcd has set the watch up (its events flow from then on) and hands back its stop. */
  private async started(watcher: Watcher, onError: (error: Error) => void): Promise<StopWatching> {
    this.watchers.add(watcher);
    try {
      await new Promise<void>((resolve, reject) => {
        watcher.once('connected', () => resolve());
        watcher.once('error', reject);
      });
    } catch (error) {
      this.watchers.delete(watcher);
      await watcher.cancel().catch(() => undefined);
      throw error;
    }
    // etcd3 reconnects and resumes a broken watch by itself ('disconnected'); 'error' is final.
    watcher.on('error', onError);
    return async () => {
      this.watchers.delete(watcher);
      await watcher.cancel();
    };
  }
}

/**
 * Tracks how long a lease is surely alive in etcd. etcd3 sends a renewal on a stream every TTL/3
 * ('keepaliveFired') and reports each answer ('keepaliveSucceeded', with the TTL granted) in the
 * order sent, so each answer is matched with the oldest unanswered send; measuring from the send,
 * not the answer, keeps the bound on the safe side of the network delay.
 */
class LeaseValidity {
  /** performance.now() before which the lease is alive; 0 once it is known gone. */
  until: number;
  private readonly sentAt: number[] = [];
  private ended = false;

  constructor(lease: Lease, grantSentAt: number, ttlSeconds: number) {
    this.until = grantSentAt + ttlSeconds * 1000;
    lease.on('keepaliveFired', () => {
      // Bounded: answers that never come (a broken stream) must not grow this without end.
      if (this.sentAt.length >= LEASE_RENEWALS_UNANSWERED_MAX) this.sentAt.shift();
      this.sentAt.push(performance.now());
    });
    lease.on('keepaliveSucceeded', (response) => {
      const sentAt = this.sentAt.shift();
      if (sentAt === undefined || this.ended) return;
      this.until = Math.max(this.until, sentAt + Number(response.TTL) * 1000);
    });
    // A new keepalive stream (after a broken one) starts with no renewal in flight.
    lease.on('keepaliveEstablished', () => (this.sentAt.length = 0));
  }

  end(): void {
    this.ended = true;
    this.until = 0;
  }
}

/**
 * One delivery per batch of watch events: etcd3 emits a response's events synchronously, one by
 * one, so `changed()` schedules `deliver` once for the batch (a lease expiry that deletes a host's
 * two keys makes one call). `until(stop)` is the watch's stop, after which nothing is delivered.
 */
function coalesced(deliver: () => void): { changed(): void; until(stop: StopWatching): StopWatching } {
  let stopped = false;
  let scheduled = false;
  return {
    changed: () => {
      if (scheduled) return;
      scheduled = true;
      queueMicrotask(() => {
        scheduled = false;
        if (!stopped) deliver();
      });
    },
    until: (stop) => async () => {
      stopped = true;
      await stop();
    },
  };
}

function nextRevision(revision: string): string {
  return (BigInt(revision) + 1n).toString();
}

/** Serialises `value` and checks it with the read-side decoder, so nothing is written that readers would reject. */
function checkedJson(value: unknown, decode: (text: string) => unknown): string {
  const text = JSON.stringify(value);
  try {
    decode(text);
  } catch (error) {
    throw new DabbaError(ErrorCode.invalidArgument, (error as Error).message);
  }
  return text;
}

function malformedValue(source: string, what: string, reason: string, text: string): DabbaError {
  const preview = JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
  return new DabbaError(ErrorCode.malformedFrame, `${source} holds a malformed ${what}: ${reason} (value: ${preview})`);
}

function parseObject(text: string, source: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw malformedValue(source, what, 'not JSON', text);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformedValue(source, what, 'not an object', text);
  return value as Record<string, unknown>;
}

function isId(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 && value <= ID_MAX;
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Parses and validates a `hosts/<hostId>` value; `source` names where it came from. */
export function decodeHostInfo(text: string, source: string): HostInfo {
  const { incarnation, zone, url, publicKey } = parseObject(text, source, 'host info');
  const malformed = (reason: string): DabbaError => malformedValue(source, 'host info', reason, text);
  if (typeof incarnation !== 'string' || !INCARNATION.test(incarnation)) throw malformed('incarnation must be 1-64 base64url characters');
  if (typeof zone !== 'string' || !ZONE.test(zone)) throw malformed("zone must be 1-64 letters, digits, '-', '_' or '.'");
  if (typeof url !== 'string' || !isHostUrl(url)) throw malformed('url must be a ws://, wss://, http:// or https:// URL');
  if (publicKey === undefined) return { incarnation, zone, url };
  if (typeof publicKey !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(publicKey)) throw malformed('publicKey must be 32 bytes in base64url');
  return { incarnation, zone, url, publicKey };
}

/** Zone names, as `dabba serve --zone` takes them. */
export const ZONE = /^[A-Za-z0-9_.-]{1,64}$/;

/** Parses and validates a `status/<hostId>` value. */
export function decodeHostStatus(text: string, source: string): HostStatus {
  const fields = parseObject(text, source, 'host status');
  const malformed = (reason: string): DabbaError => malformedValue(source, 'host status', reason, text);
  const { incarnation, candidate, writesPerSecond, commitP99Ms = 0, load, replicas, failed } = fields;
  if (typeof incarnation !== 'string' || !INCARNATION.test(incarnation)) throw malformed('incarnation must be 1-64 base64url characters');
  if (typeof candidate !== 'boolean') throw malformed('candidate must be a boolean');
  if (typeof writesPerSecond !== 'number' || !Number.isFinite(writesPerSecond) || writesPerSecond < 0) throw malformed('writesPerSecond must be a finite non-negative number');
  // Absent in the status of a host of an earlier version.
  if (typeof commitP99Ms !== 'number' || !Number.isFinite(commitP99Ms) || commitP99Ms < 0) throw malformed('commitP99Ms must be a finite non-negative number');
  if (!Array.isArray(replicas) || replicas.length > CHAINS_MAX) throw malformed(`replicas must be an array of at most ${CHAINS_MAX}`);
  if (!Array.isArray(failed) || failed.length > FAILED_REPLICAS_MAX || !failed.every(isId)) throw malformed(`failed must be an array of at most ${FAILED_REPLICAS_MAX} replica ids`);
  const decoded: HostStatus = { incarnation, candidate, writesPerSecond, commitP99Ms, replicas: replicas.map((replica) => decodeReplicaStatus(replica, malformed)), failed: failed as number[] };
  if (load !== undefined) {
    const { busyMs, writesApplied } = (typeof load === 'object' && load !== null ? load : {}) as Record<string, unknown>;
    if (typeof busyMs !== 'number' || !Number.isFinite(busyMs) || busyMs < 0) throw malformed('load.busyMs must be a finite non-negative number');
    if (typeof writesApplied !== 'number' || !Number.isSafeInteger(writesApplied) || writesApplied < 0) throw malformed('load.writesApplied must be a non-negative integer');
    decoded.load = { busyMs, writesApplied };
  }
  return decoded;
}

function decodeReplicaStatus(value: unknown, malformed: (reason: string) => DabbaError): ReplicaStatus {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed('each of replicas must be an object');
  const { chain, replicaId, epoch, role, appliedSeq, committedSeq, joinCaughtUp, handoffReadyEpoch, predecessorDown, diskFull } = value as Record<string, unknown>;
  if (!isCount(chain) || chain >= CHAINS_MAX) throw malformed(`a replica's chain must be an integer in 0..${CHAINS_MAX - 1}`);
  if (!isId(replicaId)) throw malformed(`a replica's replicaId must be an integer in 1..${ID_MAX}`);
  if (!isCount(epoch)) throw malformed("a replica's epoch must be a non-negative integer");
  if (typeof role !== 'string' || role.length > 64) throw malformed("a replica's role must be a string of at most 64 characters");
  if (!isCount(appliedSeq) || !isCount(committedSeq)) throw malformed("a replica's appliedSeq and committedSeq must be non-negative integers");
  if (typeof joinCaughtUp !== 'boolean') throw malformed("a replica's joinCaughtUp must be a boolean");
  if (!isCount(handoffReadyEpoch)) throw malformed("a replica's handoffReadyEpoch must be a non-negative integer");
  if (predecessorDown !== 0 && !isId(predecessorDown)) throw malformed(`a replica's predecessorDown must be 0 or an integer in 1..${ID_MAX}`);
  if (diskFull !== undefined && typeof diskFull !== 'boolean') throw malformed("a replica's diskFull must be a boolean");
  return { chain, replicaId, epoch, role, appliedSeq, committedSeq, joinCaughtUp, handoffReadyEpoch, predecessorDown: predecessorDown as number, diskFull: diskFull ?? false };
}

/** Parses and validates the `settings` value. */
export function decodeSettings(text: string, source: string): ClusterSettings {
  const { chains, replicas } = parseObject(text, source, 'cluster settings');
  if (!isCount(chains) || chains < 1 || chains > CHAINS_MAX) throw malformedValue(source, 'cluster settings', `chains must be an integer in 1..${CHAINS_MAX}`, text);
  if (!isCount(replicas) || replicas < 1 || replicas > NODES_MAX) throw malformedValue(source, 'cluster settings', `replicas must be an integer in 1..${NODES_MAX}`, text);
  return { chains, replicas };
}

/** Parses and validates the `handoff` value. */
export function decodeHandoffRequest(text: string, source: string): HandoffRequest {
  const { epoch, joiner } = parseObject(text, source, 'handoff request');
  if (!isCount(epoch) || epoch < 1) throw malformedValue(source, 'handoff request', 'epoch must be an integer >= 1', text);
  if (!isId(joiner)) throw malformedValue(source, 'handoff request', `joiner must be an integer in 1..${ID_MAX}`, text);
  return { epoch, joiner };
}

function decodeCounter(text: string, source: string): number {
  const value = /^(0|[1-9][0-9]{0,15})$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value)) throw malformedValue(source, 'id counter', 'not a decimal integer', text);
  return value;
}

function isHostUrl(text: string): boolean {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return false;
  }
  return ['ws:', 'wss:', 'http:', 'https:'].includes(url.protocol) && url.hostname.length > 0;
}

function checkHostId(hostId: string): void {
  if (hostId.length === 0 || hostId.includes('/')) {
    throw new DabbaError(ErrorCode.invalidArgument, `a host id must be non-empty and contain no '/' (got ${JSON.stringify(hostId)})`);
  }
}

function checkTtl(ttlSeconds: number): void {
  // etcd leases count whole seconds (and round a too-short TTL up to its minimum).
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) {
    throw new DabbaError(ErrorCode.outOfRange, `a lease TTL is a whole number of seconds >= 1 (got ${ttlSeconds})`);
  }
}

function warn(error: Error): void {
  process.emitWarning(error);
}
