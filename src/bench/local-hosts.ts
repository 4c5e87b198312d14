/**
 * A chain of `dabba serve` processes on this machine's loopback, for benchmarks: an etcd member,
 * N host processes (started by pid, stopped by pid), and a wait (an etcd watch, not a timer) until
 * every host's replica is a member and none is joining. With `tls` (a throwaway CA), the hosts
 * serve TLS with its host certificate, and `clientTls` is what a client connects with.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { EtcdConfigurationStore, type StoredTable } from '../master/etcd-store.js';
import { SERVE_NODE_FLAGS } from '../host/node-flags.js';
import type { TlsOptions } from '../transport/tls.js';
import { startEtcdCluster } from './peers/etcd-cluster.js';
import { freePorts, LocalServers } from './peers/servers.js';
import type { ThrowawayCa } from './peers/throwaway-ca.js';

export interface LocalHosts {
  readonly urls: string[];
  /** The client secret (what connect() needs). */
  readonly secret: string;
  /** What connect() needs as `tls` when the hosts serve TLS; null otherwise. */
  readonly clientTls: TlsOptions | null;
  readonly pids: number[];
  /** The last lines each host logged (stderr), for diagnosing a run. */
  readonly logs: string[][];
  /** Starts host `index` again (after it was killed), with the same id, address and flags. */
  restart(index: number): Promise<void>;
  /** Starts one more host (a new id and address) with these flags; returns its index. */
  add(args: string[]): Promise<number>;
  stop(): Promise<void>;
}

function cliCommand(): string[] {
  // From dist the CLI is JavaScript; under tsx (tests) it is the TypeScript source.
  const isTs = import.meta.url.endsWith('.ts');
  const cli = fileURLToPath(new URL(`../cli.${isTs ? 'ts' : 'js'}`, import.meta.url));
  return isTs ? ['--import', 'tsx', cli] : [cli];
}

export async function startLocalHosts(
  count: number,
  options: {
    log?: (line: string) => void;
    env?: NodeJS.ProcessEnv;
    nodeArgs?: string[];
    serveNodeFlags?: readonly string[];
    tls?: ThrowawayCa;
    chains?: number;
    replicas?: number;
    /** More `dabba serve` flags for host `index` (--data-dir, --lease-ttl, ...). */
    hostArgs?: (index: number) => string[];
  } = {},
): Promise<LocalHosts> {
  const servers = new LocalServers('hosts-bench');
  const children: ChildProcess[] = [];
  const logs: string[][] = [];
  let store: EtcdConfigurationStore | null = null;
  const stop = async (): Promise<void> => {
    for (const child of children) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = once(child, 'exit');
      process.kill(child.pid!, 'SIGTERM');
      const timer = setTimeout(() => child.exitCode === null && process.kill(child.pid!, 'SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await store?.close();
    await servers.stop(1000);
  };
  try {
    const etcd = await startEtcdCluster(servers, 1);
    const prefix = `/dabba-bench-${process.pid}-${Date.now()}/`;
    const secret = randomBytes(24).toString('base64');
    const peerSecret = randomBytes(24).toString('base64');
    const ports = await freePorts(count);
    const { tls } = options;
    const urls = ports.map((port) => `${tls === undefined ? 'ws' : 'wss'}://127.0.0.1:${port}`);
    const tlsFlags = tls === undefined ? [] : ['--tls-cert', tls.hostCertFile, '--tls-key', tls.hostKeyFile, '--tls-ca', tls.caFile];
    store = new EtcdConfigurationStore({ hosts: etcd.clientUrls, prefix });
    let resolveChain: () => void = () => undefined;
    const chainReady = new Promise<void>((resolve) => (resolveChain = resolve));
    const chains = options.chains ?? 1;
    const replicas = options.replicas ?? count;
    const stopWatch = await store.watchTable(chains, (table) => {
      if (tableSettled(table, Math.min(replicas, count), count)) resolveChain();
    });
    const argsOf: string[][] = [];
    /** Starts host `index` (its id, port and flags kept for a restart) and waits until it serves. */
    const launch = async (index: number): Promise<void> => {
      const child = spawn(process.execPath, [...(options.serveNodeFlags ?? SERVE_NODE_FLAGS), ...(options.nodeArgs ?? []), ...cliCommand(), 'serve', '--id', `bench-h${index + 1}`, '--listen', `127.0.0.1:${ports[index]}`, '--etcd', etcd.clientUrls.join(','), '--etcd-prefix', prefix, '--chains', String(chains), '--replicas', String(replicas), ...tlsFlags, ...argsOf[index]!], {
        env: { ...process.env, ...options.env, DABBA_PEER_SECRET: peerSecret, DABBA_CLIENT_SECRET: secret },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children[index] = child;
      const log: string[] = (logs[index] ??= []);
      child.stderr!.setEncoding('utf8').on('data', (text: string) => {
        log.push(text);
        if (log.length > 400) log.shift();
      });
      await new Promise<void>((resolve, reject) => {
        let stdout = '';
        child.stdout!.setEncoding('utf8').on('data', (text: string) => {
          stdout += text;
          if (stdout.includes('"event":"serving"')) resolve();
        });
        child.once('exit', (code, signal) => reject(new Error(`host ${index + 1} exited (${code ?? signal}):\n${log.join('').slice(-3000)}`)));
      });
      pids[index] = child.pid!;
    };
    const pids: number[] = [];
    for (let index = 0; index < count; index++) {
      argsOf.push(options.hostArgs?.(index) ?? []);
      await launch(index);
    }
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the ${count} hosts did not form a chain within 60 s`)), 60_000).unref());
    await Promise.race([chainReady, timeout]);
    await stopWatch();
    options.log?.(`  ${count} dabba serve processes formed ${chains === 1 ? 'a chain' : `${chains} chains`}: ${urls.join(chains === 1 ? ' -> ' : ', ')}`);
    const clientTls = tls === undefined ? null : { ca: tls.read(tls.caFile), cert: tls.read(tls.clientCertFile), key: tls.read(tls.clientKeyFile) };
    const restart = (index: number): Promise<void> => launch(index);
    const add = async (args: string[]): Promise<number> => {
      const index = argsOf.length;
      const [port] = await freePorts(1);
      ports.push(port!);
      urls.push(`${tls === undefined ? 'ws' : 'wss'}://127.0.0.1:${port}`);
      argsOf.push(args);
      await launch(index);
      return index;
    };
    return { urls, secret, clientTls, pids, logs, restart, add, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * Whether every chain is placed with `size` members, none joining, and the heads and tails spread
 * within one of even over the `hosts` (the master rotates roles last: a bench starts after that).
 */
export function tableSettled(table: StoredTable, size: number, hosts: number): boolean {
  const heads = new Map<string, number>();
  const tails = new Map<string, number>();
  for (const entry of table.entries) {
    if (entry === null || entry.configuration.joining !== null || entry.configuration.members.length !== size) return false;
    const head = entry.homes.get(entry.configuration.members[0]!)!.host;
    const tail = entry.homes.get(entry.configuration.members.at(-1)!)!.host;
    heads.set(head, (heads.get(head) ?? 0) + 1);
    tails.set(tail, (tails.get(tail) ?? 0) + 1);
  }
  const spread = (counts: Map<string, number>): boolean => {
    const values = [...counts.values(), ...new Array(Math.max(0, hosts - counts.size)).fill(0)];
    return Math.max(...values) - Math.min(...values) <= 1;
  };
  return table.entries.length === 1 || (spread(heads) && spread(tails));
}
