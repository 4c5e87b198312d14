/**
 * Three (or more) `dabba serve` processes for tests: each in its own network namespace of a
 * NetnsLab (as root; loopback ports otherwise), against a real etcd cluster. Hosts are started,
 * SIGKILLed and restarted by pid; the chain's configuration is followed through an etcd watch, so
 * tests wait for events, never for time.
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
import { connect, type ConnectOptions, type RemoteClient } from '../../src/client/index.js';
import { EtcdConfigurationStore, type HostTable } from '../../src/master/etcd-store.js';
import { SERVE_NODE_FLAGS } from '../../src/host/node-flags.js';
import { freePorts } from '../../src/bench/peers/servers.js';
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

export class HostCluster {
  readonly hosts: HostProcess[] = [];
  private configuration: Configuration | null = null;
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
    /** The peer secret, which only the hosts hold. */
    readonly peerSecret: string = `peer-${secret}`,
  ) {}

  static async create(lab: NetnsLab, etcd: string[], prefix: string, secret: string, options: { tls?: TestCa } = {}): Promise<HostCluster> {
    const tls = options.tls ?? null;
    const etcdTls = tls === null ? undefined : { ca: tls.read(tls.caFile), cert: tls.read(tls.clientCertFile), key: tls.read(tls.clientKeyFile) };
    const store = new EtcdConfigurationStore({ hosts: etcd, prefix, tls: etcdTls });
    const cluster = new HostCluster(lab, etcd, prefix, secret, store, tls);
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
    cluster.stops.push(await store.watch((configuration) => cluster.onChange(configuration, null)));
    cluster.stops.push(await store.watchHostTable((table) => cluster.onChange(null, table)));
    return cluster;
  }

  private onChange(configuration: Configuration | null, table: HostTable | null): void {
    if (configuration !== null) {
      this.configuration = configuration;
      this.history.push({ at: Date.now(), configuration });
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

  /** Host `index`'s replica's digest, from its HTTP API. */
  async digest(index: number): Promise<{ digest: string; keys: number; appliedSeq: number }> {
    const answer = await this.request(index, '/digest');
    if (answer.status !== 200) throw new Error(`${this.hosts[index]!.httpUrl}/digest answered ${answer.status}: ${answer.body.toString()}`);
    return JSON.parse(answer.body.toString('utf8')) as { digest: string; keys: number; appliedSeq: number };
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
    const child = this.lab.spawn(index, process.execPath, [...SERVE_NODE_FLAGS, '--import', 'tsx', CLI, 'serve', '--id', host.hostId, '--listen', `${address}:${port}`, '--http-insecure', '--etcd', this.etcd.join(','), '--etcd-prefix', this.prefix, ...this.tlsFlags()], {
      env: { ...process.env, DABBA_PEER_SECRET: this.peerSecret, DABBA_CLIENT_SECRET: this.secret },
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

  /** The replica id host `index` currently serves as (from its etcd registration), or null. */
  replicaOf(index: number): number | null {
    return this.table.get(this.hosts[index]!.hostId)?.info?.replicaId ?? null;
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
        reject(new Error(`timed out waiting for ${what}; configuration ${JSON.stringify(this.configuration)}, hosts ${JSON.stringify([...this.table])}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.waiters.push({ predicate: check, resolve: done });
    });
  }

  /** A chain of every host's current replica, none joining. */
  waitForFullChain(size = this.hosts.length): Promise<void> {
    return this.waitFor(`a chain of ${size} live replicas`, (configuration, table) => {
      if (configuration === null || configuration.joining !== null || configuration.members.length !== size) return false;
      const live = new Set([...table.values()].map((entry) => entry.info?.replicaId));
      return configuration.members.every((member) => live.has(member));
    });
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
