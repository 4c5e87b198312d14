#!/usr/bin/env -S node --initial-old-space-size=128
/**
 * The dabba command line.
 *   dabba demo [--replicas N] [--chains N] [--nodes N] [--seconds S] [--value-bytes B] [--readers R] [--reads any|tail] [--http [host:]port]
 *   dabba bench [scenario flags] (see usage)
 *   dabba serve --id ID --etcd URLS [--listen HOST:PORT] [--config FILE] ... (see src/host/serve-config.ts)
 *   dabba status --etcd URLS [--etcd-prefix P] [--etcd-ca F --etcd-cert F --etcd-key F --etcd-user U] [--json]
 */
import { parseArgs } from 'node:util';
import { ErrorCode, isDabbaError } from '../native-free-core/errors.js';
import { runDemo } from './demo.js';
import { parseListen } from './demo-http.js';

const usage = `usage: dabba <command> [options]

commands:
  demo    run a replicated chain in this process under load and print a report
          --replicas N (3)  --chains N (1)  --nodes N (--replicas)  --seconds S (10)  --value-bytes B (100)  --readers R (1)
          --reads any|tail (any: every replica answers reads)
  bench   measure one scenario on an in-process chain, optionally beside peers
          --replicas N (3, 1-5)    --value-size B (100, up to 65536)   --key-space N (100000)
          --chains N (1)           --nodes N (--replicas; in one process: chains over node threads)
          --batch N (adaptive)     --linger US                         --in-flight-batches N
          --latency-target-us US (batching to a p99 target: the batch size adapts at run time)
          --read-ratio R (0)       --clients N (2)  --window N (2048 in flight per client)
          --reads any|tail (any: reads spread over every replica; tail: all at the tail)
          --seconds S (5)          --runs N (1; medians)
          --rate W (open loop at W writes/s; default closed loop)
          --peers naive,redis,etcd (same load, same run; redis/etcd are started on loopback;
                                   a peer whose server or npm package is missing is skipped, naming what to install)
          --hosts (the chains as --replicas dabba serve processes on loopback, with etcd, remote client;
                   --chains N splits the keyspace over N chains placed over those hosts)
          --durability memory|async|fsync (memory; in one process: the logs in a new temp directory, removed after)
          --json (one JSON object on stdout instead of the table)
          --results-dir DIR (rows appended to DIR/results.jsonl; default: a new directory under the temp dir)
  serve   run one host of a cluster of chains that spans hosts (its replicas, peer links, clients, HTTP API)
          --id ID (required)  --etcd URL,URL,... (required)  --listen HOST:PORT (127.0.0.1:7400)
          --chains N (1)  --replicas R (3): fixed when the cluster is first started; a host given
            others is refused, one given none takes the cluster's  --zone NAME (default)
          --advertise ws://HOST:PORT (wss:// with TLS)  --etcd-prefix /dabba/NAME/
          --tls-cert FILE --tls-key FILE --tls-ca FILE (TLS on the whole port: wss:// and https://)
          --etcd-ca FILE --etcd-cert FILE --etcd-key FILE (https:// etcd)
          --etcd-user USER (etcd authentication; the password in DABBA_ETCD_PASSWORD)
          --peer-secret-file FILE (or DABBA_PEER_SECRET: hosts only)
          --client-secret-file FILE (or DABBA_CLIENT_SECRET: what clients hold)
          --lease-ttl S (2)  --no-master  --http-token-file FILE (or DABBA_HTTP_TOKEN)
          --http-insecure (serve HTTP without a token on an address beyond loopback)
          --data-dir DIR  --durability memory|async|fsync (fsync with --data-dir)  --sync-interval-ms MS (100)
            (the replicas' logs: a host restarted with its directory recovers its replicas from them)
          --disk-reserve-bytes N (64 MiB: free bytes a replica's disk keeps; below, its chain refuses writes)
          --latency-target-us US (batching to a p99 target for this host's own clients: its HTTP API's writes)
          --no-fail-slow (the master does not move slow hosts out of their chains)
          --repair (cut a damaged replica log at the damage, whose replica then rejoins from what is left, instead of refusing to start)
          --config FILE.json (the same settings as JSON)
  status  print the chain table of a cluster as etcd holds it: members, roles, health, lag, chains per host
          --etcd URL,URL,... (required)  --etcd-prefix /dabba/NAME/  --json
          --etcd-ca FILE --etcd-cert FILE --etcd-key FILE --etcd-user USER (as for serve)
  reseal  after a sealing key rotation, rewrite values sealed under older versions (client secret in DABBA_CLIENT_SECRET)
          --hosts ws://HOST:PORT,... (required)  --sealing-keys FILE.json (required)  --keys-file FILE (required: one key per line)
          --tls-ca FILE  --tls-cert FILE  --tls-key FILE
`;

function positiveInteger(text: string | undefined, name: string, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`--${name} must be a non-negative integer, got ${text}`);
  return value;
}

/** Each command, by name: it takes the arguments after the command and returns the exit code. */
const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  demo: demoCommand,
  bench: benchCommand,
  serve: serveCommand,
  status: statusCommand,
  reseal: async (args) => (await import('./reseal-command.js')).runResealCommand(args, process.env),
};

async function main(argv: string[]): Promise<number> {
  const [command = 'demo', ...rest] = argv;
  if (command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(usage);
    return 0;
  }
  const run = COMMANDS[command];
  if (run === undefined) {
    process.stderr.write(`unknown command: ${command}\n${usage}`);
    return 2;
  }
  return run(rest);
}

async function demoCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      replicas: { type: 'string' },
      chains: { type: 'string' },
      nodes: { type: 'string' },
      seconds: { type: 'string' },
      'value-bytes': { type: 'string' },
      readers: { type: 'string' },
      reads: { type: 'string' },
      http: { type: 'string' },
    },
  });
  const http = values.http === undefined ? undefined : parseListen(values.http);
  if (typeof http === 'string') throw new RangeError(http);
  const ok = await runDemo({
    reads: readMode(values.reads),
    ...(http === undefined ? {} : { http }),
    replicas: positiveInteger(values.replicas, 'replicas', 3),
    chains: positiveInteger(values.chains, 'chains', 1),
    nodes: positiveInteger(values.nodes, 'nodes', positiveInteger(values.replicas, 'replicas', 3)),
    seconds: positiveInteger(values.seconds, 'seconds', 10),
    valueBytes: positiveInteger(values['value-bytes'], 'value-bytes', 100),
    readers: positiveInteger(values.readers, 'readers', 1),
  });
  return ok ? 0 : 1;
}

async function benchCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      replicas: { type: 'string' },
      chains: { type: 'string' },
      nodes: { type: 'string' },
      'value-size': { type: 'string' },
      'key-space': { type: 'string' },
      batch: { type: 'string' },
      linger: { type: 'string' },
      'in-flight-batches': { type: 'string' },
      'latency-target-us': { type: 'string' },
      'read-ratio': { type: 'string' },
      reads: { type: 'string' },
      clients: { type: 'string' },
      window: { type: 'string' },
      seconds: { type: 'string' },
      runs: { type: 'string' },
      rate: { type: 'string' },
      peers: { type: 'string' },
      hosts: { type: 'boolean' },
      durability: { type: 'string' },
      json: { type: 'boolean' },
      'results-dir': { type: 'string' },
    },
  });
  // Loaded only for this command.
  const { runScenario, SCENARIO_DEFAULTS } = await import('./bench/scenario.js');
  const optional = (text: string | undefined, name: string): number | undefined =>
    text === undefined ? undefined : positiveInteger(text, name, 0);
  const peers = (values.peers ?? '').split(',').filter((peer) => peer !== '');
  for (const peer of peers) {
    if (!['naive', 'redis', 'etcd'].includes(peer)) throw new RangeError(`--peers: unknown peer ${peer} (naive, redis, etcd)`);
  }
  if (values['results-dir'] === '') throw new RangeError('--results-dir must name a directory');
  await runScenario({
    replicas: positiveInteger(values.replicas, 'replicas', SCENARIO_DEFAULTS.replicas),
    chains: positiveInteger(values.chains, 'chains', 1),
    nodes: optional(values.nodes, 'nodes'),
    valueBytes: positiveInteger(values['value-size'], 'value-size', SCENARIO_DEFAULTS.valueBytes),
    keySpace: positiveInteger(values['key-space'], 'key-space', SCENARIO_DEFAULTS.keySpace),
    batchWrites: optional(values.batch, 'batch'),
    lingerUs: optional(values.linger, 'linger'),
    batchesInFlight: optional(values['in-flight-batches'], 'in-flight-batches'),
    latencyTargetUs: optional(values['latency-target-us'], 'latency-target-us'),
    readRatio: values['read-ratio'] === undefined ? 0 : Number(values['read-ratio']),
    reads: readMode(values.reads),
    clients: positiveInteger(values.clients, 'clients', SCENARIO_DEFAULTS.clients),
    window: positiveInteger(values.window, 'window', SCENARIO_DEFAULTS.window),
    seconds: values.seconds === undefined ? SCENARIO_DEFAULTS.seconds : Number(values.seconds),
    runs: positiveInteger(values.runs, 'runs', SCENARIO_DEFAULTS.runs),
    rate: optional(values.rate, 'rate'),
    peers: peers as Array<'naive' | 'redis' | 'etcd'>,
    hosts: values.hosts ?? false,
    ...(values.durability === undefined ? {} : { durability: values.durability as 'memory' | 'async' | 'fsync' }),
    json: values.json ?? false,
  }, { resultsDirectory: values['results-dir'], out: process.stdout });
  return 0;
}

/** --reads: any (the default) or tail. */
function readMode(text: string | undefined): 'any' | 'tail' {
  if (text === undefined) return 'any';
  if (text !== 'any' && text !== 'tail') throw new RangeError(`--reads must be any or tail, got ${text}`);
  return text;
}

async function serveCommand(args: string[]): Promise<number> {
  const { parseServeConfig } = await import('./host/serve-config.js');
  const { startHost } = await import('./host/host.js');
  const { missingServeNodeFlags } = await import('./host/node-flags.js');
  const host = await startHost(parseServeConfig(args));
  const missing = missingServeNodeFlags();
  if (missing.length > 0) {
    process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'warn', event: 'node-flags', message: `started without ${missing.join(' ')}: frequent full GCs will cost throughput (see src/host/node-flags.ts); the dabba bin passes it, or run node ${missing.join(' ')} …/cli.js serve`, host: host.hostId })}\n`);
  }
  process.stdout.write(`${JSON.stringify({ event: 'serving', hostId: host.hostId, url: host.url, port: host.port })}\n`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void host.close().finally(resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  // Closed in order; whatever an unreachable etcd left pending (its client retries) must not
  // keep the process alive.
  process.exit(0);
}

async function statusCommand(args: string[]): Promise<number> {
  const { ETCD_ACCESS_FLAGS, parseEtcdAccess } = await import('./host/etcd-access.js');
  const { values } = parseArgs({ args, options: { ...ETCD_ACCESS_FLAGS, 'etcd-prefix': { type: 'string' }, json: { type: 'boolean' } } });
  const { etcd, ...access } = parseEtcdAccess(values, process.env, null);
  const { readClusterStatus, formatClusterStatus, isHealthy } = await import('./host/status-command.js');
  const status = await readClusterStatus(etcd, values['etcd-prefix'] ?? process.env.DABBA_ETCD_PREFIX, access);
  process.stdout.write(values.json === true ? `${JSON.stringify(status)}\n` : formatClusterStatus(status));
  return isHealthy(status) ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    // Bad flags get their message, not a stack trace; so do settings a host refuses as it starts
    // (a TLS certificate that does not name the advertised address, say).
    if (error instanceof RangeError || error instanceof TypeError || isDabbaError(error, ErrorCode.invalidArgument)) {
      process.stderr.write(`dabba: ${error.message}\n`);
      process.exitCode = 2;
      return;
    }
    // A damaged log in --data-dir: the file and the offset, and what --repair would do.
    if (isDabbaError(error, ErrorCode.corrupt)) {
      process.stderr.write(`dabba: ${error.message}\n`);
      process.exitCode = 1;
      return;
    }
    // etcd3 reports an unreachable cluster as a gRPC error: one line, without its stack.
    if (error instanceof Error && error.constructor.name.startsWith('GRPC')) {
      process.stderr.write(`dabba: cannot use etcd at the endpoints given (--etcd or DABBA_ETCD; is it running?): ${error.message.split('\n')[0]}\n`);
      process.exitCode = 1;
      return;
    }
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  },
);
