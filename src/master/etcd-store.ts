/**
 * The chain configuration, host liveness and master election kept in etcd, for chains that span
 * hosts. The async counterpart of the core's ConfigurationStore (not yet wired into ChainMaster).
 *
 * Keys, all under one prefix per dabba cluster (default `/dabba/default/`):
 *   configuration         the current Configuration as JSON
 *   epoch                 its epoch in decimal, written in the same transactions as `configuration`
 *   hosts/<hostId>        one per live host, attached to that host's lease
 *   election/master/<id>  the candidates for master (etcd3's Election layout)
 */
import { Etcd3, type Campaign, type Lease, type Namespace, type Watcher } from 'etcd3';
import type { Configuration } from '../../native-free-core/master/chain-master.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { decodeConfiguration, encodeConfiguration } from './configuration-json.js';

const CONFIGURATION_KEY = 'configuration';
const EPOCH_KEY = 'epoch';
const HOSTS_PREFIX = 'hosts/';
const ELECTION_NAME = 'master';
const DEFAULT_PREFIX = '/dabba/default/';
const DEFAULT_LEADERSHIP_TTL_SECONDS = 10;

export interface EtcdConfigurationStoreOptions {
  /** Client URLs of the etcd members, e.g. `['http://10.0.0.1:2379', ...]`. */
  hosts: string[];
  /** Every key lives under this prefix (one dabba cluster per prefix); starts and ends with '/'. */
  prefix?: string;
}

export interface HostChange {
  kind: 'registered' | 'gone';
  hostId: string;
}

export interface HostRegistration {
  readonly hostId: string;
  /** Aborted when etcd no longer holds this host's lease (it expired while unreachable, or was revoked elsewhere). */
  readonly lost: AbortSignal;
  /** Leaves at once: revoking the lease deletes `hosts/<hostId>`. */
  revoke(): Promise<void>;
  /** Stops renewing the lease, as a crash would: the key goes when the TTL runs out. */
  stopKeepalive(): void;
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
    this.client = new Etcd3({ hosts: options.hosts });
    this.namespace = this.client.namespace(prefix);
  }

  /** The stored configuration, or null before initialize(). Throws if what is stored is malformed. */
  async load(): Promise<Configuration | null> {
    const text = await this.namespace.get(CONFIGURATION_KEY).string();
    return text === null ? null : decodeConfiguration(text, this.keyName(CONFIGURATION_KEY));
  }

  /** Stores the first configuration; false (and nothing written) if one already exists. */
  async initialize(configuration: Configuration): Promise<boolean> {
    checkWritable(configuration);
    const result = await this.namespace
      .if(CONFIGURATION_KEY, 'Create', '==', 0)
      .and(EPOCH_KEY, 'Create', '==', 0)
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
   * An error (e.g. the connection broke) leaves the outcome unknown: the write may have committed.
   * load() tells.
   */
  async compareAndSet(expectedEpoch: number, next: Configuration): Promise<boolean> {
    if (next.epoch !== expectedEpoch + 1) {
      throw new DabbaError(ErrorCode.outOfRange, `the next configuration must have epoch ${expectedEpoch + 1} (got ${next.epoch})`);
    }
    checkWritable(next);
    const result = await this.namespace
      .if(EPOCH_KEY, 'Value', '==', String(expectedEpoch))
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
   */
  async registerHost(hostId: string, ttlSeconds: number): Promise<HostRegistration> {
    checkHostId(hostId);
    checkTtl(ttlSeconds);
    const lease = this.namespace.lease(ttlSeconds);
    this.leases.add(lease);
    const lost = new AbortController();
    lease.on('lost', (error) => lost.abort(error));
    try {
      await lease.put(HOSTS_PREFIX + hostId).value(hostId).exec();
    } catch (error) {
      this.leases.delete(lease);
      lease.release();
      throw error;
    }
    return {
      hostId,
      lost: lost.signal,
      revoke: async () => {
        this.leases.delete(lease);
        await lease.revoke();
      },
      stopKeepalive: () => {
        this.leases.delete(lease);
        lease.release();
      },
    };
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
    } catch (error) {
      await withdraw().catch(() => undefined);
      throw error;
    }
    return { candidateId, lost: lost.signal, resign: withdraw };
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
