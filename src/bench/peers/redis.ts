/**
 * Redis as a peer: a primary with two replicas, where a write counts once `WAIT 2 0` says both
 * replicas have it (the closest Redis comes to dabba's "acknowledged by the tail"), and a single
 * unreplicated primary driven by redis-benchmark (an upper bound for Redis on this machine).
 * The `redis` client is a devDependency, loaded only when a Redis peer runs (REDIS_CLIENT_PACKAGE).
 */
import { execFile } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import type { createClient } from 'redis';
import { makeKeys, makeValue } from '../../load.js';
import { driveFor, type PeerReport } from './drive.js';
import { importOptional, type OptionalPackage } from './optional-package.js';
import { RespPipeline, respCommand } from './resp-pipeline.js';
import { ensureBinary, freePorts, LocalServers, waitUntilReady, type StartedServer } from './servers.js';

const execFileAsync = promisify(execFile);
const HOST = '127.0.0.1';
const DEBIAN_PACKAGE = 'redis-server';
const WARMUP_MS = 500;

/** The client the Redis peers check servers with: an installed dabba may lack it (it is a devDependency). */
export const REDIS_CLIENT_PACKAGE: OptionalPackage = { name: 'redis', version: '6.3.1' };

type CreateClient = typeof createClient;

/** The client's createClient(), or a MissingPackageError naming the command that installs it. */
async function loadCreateClient(): Promise<CreateClient> {
  return (await importOptional(REDIS_CLIENT_PACKAGE, () => import('redis'))).createClient;
}

export interface RedisReplicatedOptions {
  seconds: number;
  valueBytes?: number;
  keySpace?: number;
  /** SETs pipelined before each WAIT (default 2048, like dabba's write window). */
  window?: number;
  /**
   * 'always': every server keeps an append-only file fsynced before it replies (`appendonly yes`,
   * `appendfsync always`); default: none (`appendonly no`, `save ""`), in memory only.
   */
  appendFsync?: 'always';
}

const newClient = (createClient: CreateClient, port: number) =>
  createClient({
    socket: { host: HOST, port, reconnectStrategy: false },
    // node-redis arms a 5 s AbortSignal timer per command by default: that costs ~5x the CPU of a
    // pipelined SET, and would abort a `WAIT 2 0` that blocks longer. RESP2 is what redis-benchmark speaks.
    commandOptions: { timeout: 0 },
    RESP: 2,
  });
type RedisClient = ReturnType<typeof newClient>;

async function connect(createClient: CreateClient, port: number): Promise<RedisClient> {
  const client = newClient(createClient, port);
  // Without a listener a refused connection would be an uncaught 'error' event.
  client.on('error', () => {});
  await client.connect();
  return client;
}

async function withClient<T>(createClient: CreateClient, port: number, use: (client: RedisClient) => Promise<T>): Promise<T> {
  const client = await connect(createClient, port);
  try {
    return await use(client);
  } finally {
    client.destroy();
  }
}

function startRedis(servers: LocalServers, binary: string, name: string, port: number, extraArgs: string[] = [], appendFsync?: 'always'): StartedServer {
  return servers.start(name, binary, [
    '--bind', HOST,
    '--port', String(port),
    '--save', '',
    ...(appendFsync === 'always' ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']),
    '--dir', servers.dataDir(name),
    // Redis 7 waits 5 s by default before a diskless full sync, to batch replicas: start at once.
    '--repl-diskless-sync-delay', '0',
    ...extraArgs,
  ]);
}

const infoField = (info: string, field: string): string | undefined => new RegExp(`^${field}:(\\S+)`, 'm').exec(info)?.[1];

/** Starts a primary and two replicas and returns once both replicas are linked and in sync. */
async function startReplicatedRedis(servers: LocalServers, createClient: CreateClient, appendFsync?: 'always'): Promise<number> {
  const binary = await ensureBinary('redis-server', DEBIAN_PACKAGE);
  const [primaryPort, ...replicaPorts] = await freePorts(3);
  const started = [startRedis(servers, binary, 'primary', primaryPort!, [], appendFsync)];
  for (const [index, port] of replicaPorts.entries()) {
    started.push(startRedis(servers, binary, `replica-${index + 1}`, port, ['--replicaof', HOST, String(primaryPort)], appendFsync));
  }
  await waitUntilReady(
    'the Redis primary to have 2 replicas with their links up',
    async () => {
      const primary = await withClient(createClient, primaryPort!, (client) => client.info('replication'));
      if (infoField(primary, 'connected_slaves') !== '2') return false;
      for (const port of replicaPorts) {
        const replica = await withClient(createClient, port, (client) => client.info('replication'));
        if (infoField(replica, 'master_link_status') !== 'up') return false;
      }
      return true;
    },
    started,
  );
  return primaryPort!;
}

/**
 * 2 connections to the primary (like dabba's 2 writers), each pipelining `window` SETs and then
 * `WAIT 2 0`; a window's writes count when its WAIT returns 2. Latency is per window, from its first
 * SET to its WAIT's reply.
 */
export async function redisReplicated(options: RedisReplicatedOptions): Promise<PeerReport> {
  const valueBytes = options.valueBytes ?? 100;
  const keySpace = options.keySpace ?? 100_000;
  const window = options.window ?? 2048;
  // Before any server starts: without its client there is nothing to measure.
  const createClient = await loadCreateClient();
  const servers = new LocalServers('redis');
  const pipelines: RespPipeline[] = [];
  try {
    const primaryPort = await startReplicatedRedis(servers, createClient, options.appendFsync);
    for (let index = 0; index < 2; index++) pipelines.push(await RespPipeline.open(HOST, primaryPort));
    // Every SET of the key space, encoded once: a window is a slice of them plus one WAIT.
    const keys = makeKeys(keySpace, 16);
    const value = makeValue(valueBytes);
    const sets = keys.map((key) => respCommand(['SET', key, value]));
    const waitForReplicas = respCommand(['WAIT', '2', '0']);

    const drive = (durationMs: number): Promise<PeerReport> =>
      driveFor(durationMs, pipelines.length, async (writerIndex, session) => {
        const pipeline = pipelines[writerIndex]!;
        let cursor = (writerIndex * 7919) % keySpace;
        const commands = new Array<Buffer>(window + 1);
        while (session.running) {
          const issued = performance.now();
          for (let index = 0; index < window; index++) {
            commands[index] = sets[cursor]!;
            if (++cursor === keySpace) cursor = 0;
          }
          commands[window] = waitForReplicas;
          const replicas = await pipeline.send(Buffer.concat(commands), window + 1);
          if (replicas !== ':2') throw new Error(`WAIT 2 0 returned ${replicas}`);
          session.completed(window, issued);
        }
      });

    await drive(WARMUP_MS);
    return await drive(options.seconds * 1000);
  } finally {
    for (const pipeline of pipelines) pipeline.close();
    await servers.stop();
  }
}

export interface RedisUnreplicatedReport {
  writesPerSecond: number;
  /** redis-benchmark's p50 per pipeline of 1000 SETs (it prints no p99 with -q). */
  p50Us: number | undefined;
  requests: number;
}

/** Runs `redis-benchmark -t set -P 1000 -q` and parses "SET: <n> requests per second[, p50=<ms> msec]". */
async function redisBenchmarkSet(binary: string, port: number, valueBytes: number, requests: number): Promise<{ rate: number; p50Us: number | undefined }> {
  const { stdout } = await execFileAsync(binary, ['-h', HOST, '-p', String(port), '-t', 'set', '-d', String(valueBytes), '-P', '1000', '-n', String(requests), '-q']);
  // Progress updates are separated by \r; the summary is the last match.
  const matches = [...stdout.matchAll(/SET: ([\d.]+) requests per second(?:, p50=([\d.]+) msec)?/g)];
  const last = matches.at(-1);
  if (last === undefined) throw new Error(`could not parse redis-benchmark output: ${JSON.stringify(stdout.slice(-500))}`);
  return { rate: Number(last[1]), p50Us: last[2] === undefined ? undefined : Math.round(Number(last[2]) * 1000) };
}

/** A single primary, no replicas, driven by redis-benchmark with pipelines of 1000 SETs. */
export async function redisUnreplicated(options: { seconds: number; valueBytes?: number }): Promise<RedisUnreplicatedReport> {
  const valueBytes = options.valueBytes ?? 100;
  const createClient = await loadCreateClient();
  const serverBinary = await ensureBinary('redis-server', DEBIAN_PACKAGE);
  const benchmarkBinary = await ensureBinary('redis-benchmark', DEBIAN_PACKAGE);
  const servers = new LocalServers('redis');
  try {
    const [port] = await freePorts(1);
    const primary = startRedis(servers, serverBinary, 'primary', port!);
    await waitUntilReady('the Redis server to answer PING', async () => (await withClient(createClient, port!, (client) => client.ping())) === 'PONG', [primary]);
    // A short calibration run (it doubles as warm-up) sizes -n so the measured run lasts about `seconds`.
    const calibration = await redisBenchmarkSet(benchmarkBinary, port!, valueBytes, 100_000);
    const requests = Math.max(100_000, Math.round((calibration.rate * options.seconds) / 1000) * 1000);
    const measured = await redisBenchmarkSet(benchmarkBinary, port!, valueBytes, requests);
    return { writesPerSecond: measured.rate, p50Us: measured.p50Us, requests };
  } finally {
    await servers.stop();
  }
}
