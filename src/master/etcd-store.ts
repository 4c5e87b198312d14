/**
 * The chain configuration, host liveness and master election kept in etcd, for chains that span
 * hosts. The async counterpart of the core's ConfigurationStore; EtcdMaster (etcd-master.ts)
 * drives it.
 *
 * Keys, all under one prefix per dabba cluster (default `/dabba/default/`):
 *   configuration              the current Configuration as JSON
 *   epoch                      its epoch in decimal, written in the same transactions as `configuration`
 *   hosts/<hostId>             one per live host, attached to that host's lease: its HostInfo as JSON
 *                              (or the bare host id when it registered without one)
 *   status/<hostId>            the host's latest HostStatus as JSON, under the same lease
 *   counters/replica           the last replica id handed out, in decimal (allocateId)
 *   counters/client            the last client id handed out, in decimal (allocateId)
 *   handoff                    the master's latest handoff request, JSON {epoch, joiner}
 *   election/master/<leaseId>  the candidates for master (etcd3's Election layout)
 */
import { Etcd3, Range, type Campaign, type ComparatorBuilder, type Lease, type Namespace, type Watcher } from 'etcd3';
import type { Configuration } from '../../native-free-core/master/chain-master.js';
import type { HandoffRequest } from '../../native-free-core/master/cluster-decisions.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { decodeConfiguration, encodeConfiguration } from './configuration-json.js';

const CONFIGURATION_KEY = 'configuration';
const EPOCH_KEY = 'epoch';
const HOSTS_PREFIX = 'hosts/';
const STATUS_PREFIX = 'status/';
/** The first key after every `status/...` key: '0' follows '/'. */
const STATUS_RANGE_END = 'status0';
const COUNTERS_PREFIX = 'counters/';
const HANDOFF_KEY = 'handoff';
const ELECTION_NAME = 'master';
const DEFAULT_PREFIX = '/dabba/default/';
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

/** What a host announces in `hosts/<hostId>`: who it is in the chain and where to reach it. */
export interface HostInfo {
  /** From allocateId('replica'): a host that restarts gets a new one (it starts empty and joins again). */
  replicaId: number;
  /** The host's base ws/http URL, e.g. `ws://10.77.1.10:7400`. */
  url: string;
  /**
   * The host's Ed25519 public key (its 32 bytes, base64url): a peer link from or to this host must
   * be signed with the matching private key, which never leaves the host's process.
   */
  publicKey?: string;
}

/** What a host reports about its replica in `status/<hostId>` (the master decides joins from it). */
export interface HostStatus {
  replicaId: number;
  /** The configuration epoch the replica runs in. */
  epoch: number;
  /** 'head' | 'middle' | 'tail' | 'solo' | 'joining', or anything the host wants to say (informative). */
  role: string;
  appliedSeq: number;
  committedSeq: number;
  /** A joiner that has loaded its snapshot and is applying the stream after it. */
  joinCaughtUp: boolean;
  /** The epoch in which this tail became ready to hand over to its joiner; 0 when not ready. */
  handoffReadyEpoch: number;
  writesPerSecond: number;
  /**
   * The replica id of this replica's predecessor (in `epoch`) whose host refused a connection: its
   * process is gone, whatever its lease says. 0 when none. Absent in older statuses.
   */
  predecessorDown?: number;
  /** Whether this host stands for master (not started with --no-master). Absent in older statuses. */
  candidate?: boolean;
}

/** One live host as seen by watchHostTable; null where the stored value is missing or malformed. */
export interface HostTableEntry {
  info: HostInfo | null;
  status: HostStatus | null;
}

/** Every host whose `hosts/<hostId>` key exists, by host id (in host id order). */
export type HostTable = ReadonlyMap<string, HostTableEntry>;

/** The master asks the tail of `epoch` to stop taking writes until `joiner` has everything (key `handoff`). */
export type { HandoffRequest };

export type IdCounter = 'replica' | 'client';

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

  /** The stored configuration, or null before initialize(). Throws if what is stored is malformed. */
  async load(): Promise<Configuration | null> {
    const text = await this.namespace.get(CONFIGURATION_KEY).string();
    return text === null ? null : decodeConfiguration(text, this.keyName(CONFIGURATION_KEY));
  }

  /**
   * Stores the first configuration; false (and nothing written) if one already exists, or if
   * `fence` is given and that candidate no longer leads.
   */
  async initialize(configuration: Configuration, fence?: Leadership): Promise<boolean> {
    checkWritable(configuration);
    const transaction = this.namespace.if(CONFIGURATION_KEY, 'Create', '==', 0).and(EPOCH_KEY, 'Create', '==', 0);
    const result = await this.fenced(transaction, fence)
      .then(...this.writesOf(configuration))
      .commit();
    return result.succeeded;
  }

  /**
   * Installs `next` only if the stored epoch is still `expectedEpoch`; false if another master
   * changed it first (load() to adopt theirs). One etcd transaction.
   *
   * Why an `epoch` key rather than comparing the configuration's mod revision: the caller knows
   * the epoch, not the revision, so a revision compare would need a read first (two round trips,
   * and the read's answer is stale by the time it is used, which the compare then has to catch
   * anyway). The epoch key makes the compare exactly the ConfigurationStore contract in one round
   * trip. The two keys cannot drift apart because every write of either writes both, in one
   * transaction.
   *
   * With `fence` (the master's Leadership) the transaction also requires that this candidate
   * still leads (see LeadershipFence): false then tells either story; load() tells which (an
   * unchanged epoch means the fence failed).
   *
   * An error (e.g. the connection broke) leaves the outcome unknown: the write may have committed.
   * load() tells.
   */
  async compareAndSet(expectedEpoch: number, next: Configuration, fence?: Leadership): Promise<boolean> {
    if (next.epoch !== expectedEpoch + 1) {
      throw new DabbaError(ErrorCode.outOfRange, `the next configuration must have epoch ${expectedEpoch + 1} (got ${next.epoch})`);
    }
    checkWritable(next);
    const transaction = this.namespace.if(EPOCH_KEY, 'Value', '==', String(expectedEpoch));
    const result = await this.fenced(transaction, fence)
      .then(...this.writesOf(next))
      .commit();
    return result.succeeded;
  }

  /**
   * Calls `onChange` with the current configuration (if any), then with every later one, in
   * order, without gaps: the watch starts at the revision right after the read. A malformed value
   * or a deleted key goes to `onError` (by default a process warning) instead.
   */
  async watch(onChange: (configuration: Configuration) => void, onError: (error: Error) => void = warn): Promise<StopWatching> {
    const keyName = this.keyName(CONFIGURATION_KEY);
    const snapshot = await this.namespace.get(CONFIGURATION_KEY).exec();
    const current = snapshot.kvs[0];
    if (current !== undefined) onChange(decodeConfiguration(current.value.toString(), keyName));
    const watcher = this.namespace.watch().key(CONFIGURATION_KEY).startRevision(nextRevision(snapshot.header.revision)).watcher();
    watcher.on('put', (kv) => {
      let configuration: Configuration;
      try {
        configuration = decodeConfiguration(kv.value.toString(), keyName);
      } catch (error) {
        onError(error as Error);
        return;
      }
      onChange(configuration);
    });
    watcher.on('delete', () => onError(new DabbaError(ErrorCode.malformedFrame, `${keyName} was deleted`)));
    return this.started(watcher, onError);
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

    // One call per batch of events: etcd3 emits a response's events synchronously, one by one.
    let stopped = false;
    let scheduled = false;
    const changed = (): void => {
      if (scheduled) return;
      scheduled = true;
      queueMicrotask(() => {
        scheduled = false;
        if (!stopped) onChange(table());
      });
    };
    const watcher = this.namespace.watch().inRange(both).startRevision(nextRevision(snapshot.header.revision)).watcher();
    watcher.on('put', (kv) => {
      if (apply(kv.key.toString(), kv.value.toString())) changed();
    });
    watcher.on('delete', (kv) => {
      if (apply(kv.key.toString(), null)) changed();
    });
    const stop = await this.started(watcher, onError);
    return async () => {
      stopped = true;
      await stop();
    };
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

  /**
   * Puts `handoff` = {epoch, joiner}: the tail of `epoch` is to stop taking writes until `joiner`
   * has everything. With `fence` it is written only while that candidate leads (false otherwise).
   */
  async requestHandoff(epoch: number, joinerReplicaId: number, fence?: Leadership): Promise<boolean> {
    const text = checkedJson({ epoch, joiner: joinerReplicaId }, (json) => decodeHandoffRequest(json, 'the handoff request to write'));
    if (fence === undefined) {
      await this.namespace.put(HANDOFF_KEY).value(text).exec();
      return true;
    }
    this.checkFence(fence);
    const result = await this.namespace
      .if(fence.fence.electionKey, 'Create', '==', fence.fence.createRevision)
      .then(this.namespace.put(HANDOFF_KEY).value(text))
      .commit();
    return result.succeeded;
  }

  /**
   * Calls `onRequest` with the current handoff request (if any), then with every later one, in
   * order and without gaps. A malformed value goes to `onError`.
   */
  async watchHandoff(onRequest: (request: HandoffRequest) => void, onError: (error: Error) => void = warn): Promise<StopWatching> {
    const snapshot = await this.namespace.get(HANDOFF_KEY).exec();
    const current = snapshot.kvs[0];
    if (current !== undefined) {
      const request = this.decodeOrReport(current.value.toString(), HANDOFF_KEY, decodeHandoffRequest, onError);
      if (request !== null) onRequest(request);
    }
    const watcher = this.namespace.watch().key(HANDOFF_KEY).startRevision(nextRevision(snapshot.header.revision)).watcher();
    watcher.on('put', (kv) => {
      const request = this.decodeOrReport(kv.value.toString(), HANDOFF_KEY, decodeHandoffRequest, onError);
      if (request !== null) onRequest(request);
    });
    return this.started(watcher, onError);
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

  private writesOf(configuration: Configuration) {
    return [
      this.namespace.put(EPOCH_KEY).value(String(configuration.epoch)),
      this.namespace.put(CONFIGURATION_KEY).value(encodeConfiguration(configuration)),
    ];
  }

  private keyName(key: string): string {
    return `etcd key ${this.prefix}${key}`;
  }

  /** Adds the leadership compare to a transaction (nothing without a fence). */
  private fenced(transaction: ComparatorBuilder, fence: Leadership | undefined): ComparatorBuilder {
    if (fence === undefined) return transaction;
    this.checkFence(fence);
    return transaction.and(fence.fence.electionKey, 'Create', '==', fence.fence.createRevision);
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

function nextRevision(revision: string): string {
  return (BigInt(revision) + 1n).toString();
}

function checkWritable(configuration: Configuration): void {
  // Reuses the read-side validation, so nothing is written that load() would reject.
  try {
    decodeConfiguration(encodeConfiguration(configuration), 'the configuration to write');
  } catch (error) {
    throw new DabbaError(ErrorCode.invalidArgument, (error as Error).message);
  }
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
  const { replicaId, url, publicKey } = parseObject(text, source, 'host info');
  const malformed = (reason: string): DabbaError => malformedValue(source, 'host info', reason, text);
  if (!isId(replicaId)) throw malformed(`replicaId must be an integer in 1..${ID_MAX}`);
  if (typeof url !== 'string' || !isHostUrl(url)) throw malformed('url must be a ws://, wss://, http:// or https:// URL');
  if (publicKey === undefined) return { replicaId, url };
  if (typeof publicKey !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(publicKey)) throw malformed('publicKey must be 32 bytes in base64url');
  return { replicaId, url, publicKey };
}

/** Parses and validates a `status/<hostId>` value. */
export function decodeHostStatus(text: string, source: string): HostStatus {
  const fields = parseObject(text, source, 'host status');
  const malformed = (reason: string): DabbaError => malformedValue(source, 'host status', reason, text);
  const { replicaId, epoch, role, appliedSeq, committedSeq, joinCaughtUp, handoffReadyEpoch, writesPerSecond, predecessorDown = 0, candidate = false } = fields;
  if (!isId(replicaId)) throw malformed(`replicaId must be an integer in 1..${ID_MAX}`);
  if (!isCount(epoch)) throw malformed('epoch must be a non-negative integer');
  if (typeof role !== 'string' || role.length > 64) throw malformed('role must be a string of at most 64 characters');
  if (!isCount(appliedSeq)) throw malformed('appliedSeq must be a non-negative integer');
  if (!isCount(committedSeq)) throw malformed('committedSeq must be a non-negative integer');
  if (typeof joinCaughtUp !== 'boolean') throw malformed('joinCaughtUp must be a boolean');
  if (!isCount(handoffReadyEpoch)) throw malformed('handoffReadyEpoch must be a non-negative integer');
  if (typeof writesPerSecond !== 'number' || !Number.isFinite(writesPerSecond) || writesPerSecond < 0) {
    throw malformed('writesPerSecond must be a finite non-negative number');
  }
  if (predecessorDown !== 0 && !isId(predecessorDown)) throw malformed(`predecessorDown must be 0 or an integer in 1..${ID_MAX}`);
  if (typeof candidate !== 'boolean') throw malformed('candidate must be a boolean');
  return { replicaId, epoch, role, appliedSeq, committedSeq, joinCaughtUp, handoffReadyEpoch, writesPerSecond, predecessorDown: predecessorDown as number, candidate };
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
