/**
 * Three (or more) `dabba serve` processes for tests: each in its own network namespace of a
 * NetnsLab (as root; loopback ports otherwise), against a real etcd cluster. Hosts are started,
 * SIGKILLed and restarted by pid; the chain table is followed through an etcd watch, so tests wait
 * for events, never for time. `current` and the single-chain helpers are about chain 0.
 *
 * With a test CA (`tls`), everything speaks TLS: hosts serve wss:// and https:// with the CA's
 * host certificate, etcd is https:// and every client of it (hosts, this watcher) presents the
 * CA's client certificate, and clients and HTTP requests made through this cluster present it too.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Configuration } from '../../native-free-core/master/chain-master.js';
import type { ChainEntry } from '../../native-free-core/master/table-round.js';
import { connect, type ConnectOptions, type RemoteClient } from '../../src/client/index.js';
import { EtcdConfigurationStore, type HostTable, type StoredTable } from '../../src/master/etcd-store.js';
import { tableSettled } from '../../src/bench/local-hosts.js';
import { SERVE_NODE_FLAGS } from '../../src/host/node-flags.js';
import { freePorts, type LocalServers } from '../../src/bench/peers/servers.js';
import type { NetnsLab } from './netns-lab.js';
import { clientTls, requestUrl, type HttpAnswer, type TestCa } from './test-ca.js';

const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
const PORT_ISOLATED = 7400;

export interface HostProcess {
  readonly index: number;
  readonly hostId: string;
  readonly url: string;
  readonly httpUrl: string;
  child: ChildProcess | null;
  /** Everything the host wrote to stderr (its JSON log), for failure messages. */
  log: string[];
}

export interface ClusterShape {
  chains?: number;
  replicas?: number;
  /** Each host's zone, by index (default: all in one). */
  zones?: string[];
  /** More environment for every host (test hooks). */
  env?: Record<string, string>;
  /** More flags for host `index` (its data directory, say). */
  args?: (index: number) => string[];
}

/**
 * What every hosts test does last: stops its hosts, then its lab, then the servers it started (by
 * pid), whatever failed before (any may be undefined if the test's setup failed first).
 */
export async function closeHostTest(cluster: HostCluster | undefined, lab: NetnsLab | undefined, servers: LocalServers): Promise<void> {
  try {
    await cluster?.close();
  } finally {
    await lab?.close();
    await servers.stop(1000);
  }
}

export class HostCluster {
  readonly hosts: HostProcess[] = [];
  private configuration: Configuration | null = null;
  /** Every chain's entry, as the watch delivered it. */
  entries: Array<ChainEntry | null> = [];
  private readonly history: Array<{ at: number; configuration: Configuration }> = [];
  private table: HostTable = new Map();
  private readonly waiters: Array<{ predicate: () => boolean; resolve: () => void }> = [];
  private readonly stops: Array<() => Promise<void>> = [];

  private constructor(
    private readonly lab: NetnsLab,
    readonly etcd: string[],
    readonly prefix: string,
    /** The client secret (what connect() needs). */
    readonly secret: string,
    private readonly store: EtcdConfigurationStore,
    /** The test CA everything here speaks TLS with; null for plain connections. */
    readonly tls: TestCa | null,
    readonly shape: Required<Pick<ClusterShape, 'chains' | 'replicas'>> & ClusterShape,
    /** The peer secret, which only the hosts hold. */
    readonly peerSecret: string = `peer-${secret}`,
  ) {}

  static async create(lab: NetnsLab, etcd: string[], prefix: string, secret: string, options: { tls?: TestCa } & ClusterShape = {}): Promise<HostCluster> {
    const tls = options.tls ?? null;
    const etcdTls = tls === null ? undefined : { ca: tls.read(tls.caFile), cert: tls.read(tls.clientCertFile), key: tls.read(tls.clientKeyFile) };
    const store = new EtcdConfigurationStore({ hosts: etcd, prefix, tls: etcdTls });
    const cluster = new HostCluster(lab, etcd, prefix, secret, store, tls, { chains: 1, replicas: lab.hosts.length, ...options });
    const ports = lab.isolated ? lab.hosts.map(() => PORT_ISOLATED) : await freePorts(lab.hosts.length);
    for (const host of lab.hosts) {
      const port = ports[host.index]!;
      cluster.hosts.push({
        index: host.index,
        hostId: `h${host.index + 1}`,
        url: `${tls === null ? 'ws' : 'wss'}://${host.address}:${port}`,
        httpUrl: `${tls === null ? 'http' : 'https'}://${host.address}:${port}`,
        child: null,
        log: [],
      });
    }
    cluster.stops.push(await store.watchTable(cluster.shape.chains, (table) => cluster.onChange(table, null)));
    cluster.stops.push(await store.watchHostTable((table) => cluster.onChange(null, table)));
    return cluster;
  }

  private onChange(chains: StoredTable | null, table: HostTable | null): void {
    if (chains !== null) {
      this.entries = [...chains.entries];
      const configuration = chains.entries[0]?.configuration ?? null;
      if (configuration !== null && configuration.epoch !== this.configuration?.epoch) {
        this.configuration = configuration;
        this.history.push({ at: Date.now(), configuration });
      }
    }
    if (table !== null) this.table = table;
    for (const waiter of [...this.waiters]) {
      if (waiter.predicate()) {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  }

  get current(): Configuration | null {
    return this.configuration;
  }

  /** Every host's log lines since `since` (ms) that are warnings, errors or master decisions, in time order. */
  notableLogSince(since: number): string {
    const lines: Array<{ time: string; text: string }> = [];
    for (const host of this.hosts) {
      for (const text of host.log.join('').split('\n')) {
        if (!text.startsWith('{') || !text.endsWith('}')) continue; // the last line may still be arriving
        const entry = JSON.parse(text) as { time?: string; level?: string; event?: string };
        if (entry.time === undefined || Date.parse(entry.time) < since) continue;
        if (entry.level === 'warn' || entry.level === 'error' || entry.event === 'master-decision') lines.push({ time: entry.time, text });
      }
    }
    return lines.sort((a, b) => a.time.localeCompare(b.time)).map((line) => line.text).join('\n');
  }

  /** Every configuration seen after `epoch`, one line each with the time, for failure messages. */
  changesSince(epoch: number): string {
    return this.history
      .filter((entry) => entry.configuration.epoch > epoch)
      .map(({ at, configuration }) => `${new Date(at).toISOString()} epoch ${configuration.epoch}: [${configuration.members.join(', ')}] joining ${configuration.joining ?? '-'}`)
      .join('\n');
  }

  /** What connect() needs for this cluster, with `hosts` (default: every host). */
  clientOptions(hosts: string[] = this.hosts.map((host) => host.url)): ConnectOptions {
    return { hosts, secret: this.secret, ...(this.tls === null ? {} : { tls: clientTls(this.tls) }) };
  }

  connect(hosts?: string[]): Promise<RemoteClient> {
    return connect(this.clientOptions(hosts));
  }

  /** An HTTP request to host `index` (https:// with the client certificate under TLS). */
  request(index: number, path: string, init: { method?: string; body?: string } = {}): Promise<HttpAnswer> {
    return requestUrl(`${this.hosts[index]!.httpUrl}${path}`, { ...init, ...(this.tls === null ? {} : { tls: clientTls(this.tls) }) });
  }

  /** Host `index`'s replicas' digests, by chain, from its HTTP API. */
  async digests(index: number): Promise<Array<{ chain: number; replicaId: number; digest: string; keys: number; appliedSeq: number }>> {
    const answer = await this.request(index, '/digest');
    if (answer.status !== 200) throw new Error(`${this.hosts[index]!.httpUrl}/digest answered ${answer.status}: ${answer.body.toString()}`);
    return (JSON.parse(answer.body.toString('utf8')) as { replicas: Array<{ chain: number; replicaId: number; digest: string; keys: number; appliedSeq: number }> }).replicas;
  }

  /** Host `index`'s replica of chain 0's digest. */
  async digest(index: number): Promise<{ digest: string; keys: number; appliedSeq: number }> {
    const digest = (await this.digests(index)).find((replica) => replica.chain === 0);
    if (digest === undefined) throw new Error(`host ${this.hosts[index]!.hostId} holds no replica of chain 0`);
    return digest;
  }

  /** The flags that make a host serve TLS and reach etcd over TLS. */
  private tlsFlags(): string[] {
    const tls = this.tls;
    if (tls === null) return [];
    return [
      '--tls-cert', tls.hostCertFile, '--tls-key', tls.hostKeyFile, '--tls-ca', tls.caFile,
      '--etcd-ca', tls.caFile, '--etcd-cert', tls.clientCertFile, '--etcd-key', tls.clientKeyFile,
    ];
  }

  /** Starts host `index` and resolves once it serves (its "serving" line). */
  async start(index: number): Promise<void> {
    const host = this.hosts[index]!;
    const { port, hostname: address } = new URL(host.httpUrl);
    const child = this.lab.spawn(index, process.execPath, [...SERVE_NODE_FLAGS, '--import', 'tsx', CLI, 'serve', '--id', host.hostId, '--listen', `${address}:${port}`, '--http-insecure', '--etcd', this.etcd.join(','), '--etcd-prefix', this.prefix, '--chains', String(this.shape.chains), '--replicas', String(this.shape.replicas), '--zone', this.shape.zones?.[index] ?? 'default', ...this.tlsFlags(), ...(this.shape.args?.(index) ?? [])], {
      env: { ...process.env, ...this.shape.env, DABBA_PEER_SECRET: this.peerSecret, DABBA_CLIENT_SECRET: this.secret },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    host.child = child;
    child.stderr!.setEncoding('utf8').on('data', (text: string) => host.log.push(text));
    let stdout = '';
    const serving = new Promise<void>((resolve, reject) => {
      child.stdout!.setEncoding('utf8').on('data', (text: string) => {
        stdout += text;
        if (stdout.includes('"event":"serving"')) resolve();
      });
      child.once('exit', (code, signal) => reject(new Error(`host ${host.hostId} exited (${code ?? signal}) before serving:\n${host.log.join('').slice(-4000)}`)));
    });
    await serving;
  }

  /** SIGKILLs host `index` (by pid) and waits until it is gone. */
  async kill(index: number): Promise<void> {
    const child = this.hosts[index]!.child;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    process.kill(child.pid!, 'SIGKILL');
    await exited;
    this.hosts[index]!.child = null;
  }

  /**
   * Breaks host `from`'s TCP connections to host `to` (`ss -K`, in `from`'s namespace when isolated),
   * as a network blip would, without touching either process or the configuration.
   */
  async breakLinks(from: number, to: number): Promise<void> {
    const target = new URL(this.hosts[to]!.httpUrl);
    const child = this.lab.spawn(from, 'ss', ['-K', 'dst', target.hostname, 'dport', '=', target.port], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    const [code] = (await once(child, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`ss -K failed (${code}): ${stderr}`);
  }

  /** Whether `replicaId` of `entry` runs on a host registered in the replica's incarnation. */
  isLive(entry: ChainEntry, replicaId: number): boolean {
    const home = entry.homes.get(replicaId);
    return home !== undefined && this.table.get(home.host)?.info?.incarnation === home.incarnation;
  }

  /** The replica of `chain` host `index` runs in its current incarnation (a member or the joiner), or null. */
  replicaOf(index: number, chain = 0): number | null {
    const entry = this.entries[chain];
    const incarnation = this.table.get(this.hosts[index]!.hostId)?.info?.incarnation;
    if (entry === null || entry === undefined || incarnation === undefined) return null;
    for (const [replicaId, home] of entry.homes) if (home.host === this.hosts[index]!.hostId && home.incarnation === incarnation) return replicaId;
    return null;
  }

  /** The index of the host whose replica has `role` in the current configuration. */
  hostWithRole(role: 'head' | 'middle' | 'tail'): number {
    const members = this.configuration!.members;
    const replicaId = role === 'head' ? members[0] : role === 'tail' ? members.at(-1) : members[1];
    const index = this.hosts.findIndex((host) => this.replicaOf(host.index) === replicaId);
    if (index < 0) throw new Error(`no host serves the ${role} (replica ${replicaId})`);
    return index;
  }

  /** Resolves when `predicate` holds for the configuration and host table (checked on every change). */
  waitFor(what: string, predicate: (configuration: Configuration | null, table: HostTable) => boolean, timeoutMs = 30_000): Promise<void> {
    const check = (): boolean => predicate(this.configuration, this.table);
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.findIndex((waiter) => waiter.resolve === done), 1);
        const chains = this.entries.map((entry, chain) => `${chain}: ${entry === null ? '-' : `e${entry.configuration.epoch} [${entry.configuration.members.map((id) => `${id}@${entry.homes.get(id)?.host}`).join(' ')}] joining ${entry.configuration.joining ?? '-'}`}`);
        reject(new Error(`timed out waiting for ${what}; chains ${chains.join('; ')}; hosts ${JSON.stringify([...this.table])}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.waiters.push({ predicate: check, resolve: done });
    });
  }

  /** Chain 0 with `size` live replicas, none joining. */
  waitForFullChain(size = Math.min(this.shape.replicas, this.hosts.length)): Promise<void> {
    return this.waitFor(`a chain of ${size} live replicas`, (configuration) => {
      const entry = this.entries[0];
      if (configuration === null || entry === null || entry === undefined || configuration.joining !== null || configuration.members.length !== size) return false;
      return configuration.members.every((member) => this.isLive(entry, member));
    });
  }

  /**
   * Every chain with `size` live replicas, none joining, and heads and tails spread within one
   * of even over the `hosts` live hosts: the table settled, roles included.
   */
  waitForTable(size: number, hosts: number, timeoutMs = 60_000): Promise<void> {
    return this.waitFor(
      `every chain with ${size} live replicas, roles balanced over ${hosts} hosts`,
      () => {
        if (!tableSettled({ entries: this.entries, handoffs: [], nextReplicaId: 0 }, size, hosts)) return false;
        return this.entries.every((entry) => entry !== null && entry.configuration.members.every((member) => this.isLive(entry, member)));
      },
      timeoutMs,
    );
  }

  async close(): Promise<void> {
    // DABBA_TEST_LOGS=dir keeps every host's log (one JSON object per line) for a look afterwards.
    const keep = process.env.DABBA_TEST_LOGS;
    if (keep !== undefined) {
      mkdirSync(keep, { recursive: true });
      for (const host of this.hosts) writeFileSync(join(keep, `${host.hostId}.log`), host.log.join(''));
    }
    for (const host of this.hosts) {
      const child = host.child;
      if (child !== null && child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        process.kill(child.pid!, 'SIGKILL');
        await exited;
      }
      host.child = null;
    }
    await Promise.allSettled(this.stops.map((stop) => stop()));
    await this.store.close();
  }
}
