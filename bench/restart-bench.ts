/**
 * A durable host's restart against a snapshot join of the same state: three `dabba serve
 * --data-dir --durability fsync` processes on loopback, a state of `keys` keys (100 B values),
 * then a closed loop from a remote client. The tail's host is SIGKILLed under load and, `downMs`
 * later, either
 * - restarted with its data directory (`delta`): the same replica recovers its log and is sent
 *   only what it missed (its lease, 30 s here, keeps it listed meanwhile; the writes wait for it,
 *   since only the tail acknowledges), or
 * - replaced (`snapshot`): once the master removed it (lease 2 s), a new host with an empty
 *   directory joins and copies a snapshot of the whole state, then replays what came during it.
 * And `catch-up`: the head's host is killed instead (removed at once, the chain goes on without
 * it) and restarted with its data directory once the master removed it: its new replica, a
 * joiner, starts from the log the old one left and is sent what that lacks from the tail's log.
 * Reported: from the process start to a caught-up member (the replica in the chain, not joining,
 * and applied through what the head had applied when the process started), the writes its log
 * recovered and the writes it was sent. Runs alternate the two; medians.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '../src/client/index.js';
import { makeKeys, makeValue, runClosedLoop } from '../src/load.js';
import { median, printTable, type Environment } from '../src/bench/harness.js';
import { startLocalHosts, type LocalHosts } from '../src/bench/local-hosts.js';
import { record } from './ledger.js';

export interface RestartRow {
  how: Way;
  keys: number;
  downMs: number;
  /** Process start to a caught-up member, median over runs. */
  catchUpMs: number;
  /** Of which: process start until the host serves (Node, etcd registration; median). */
  serveMs: number;
  /** Writes its log held when it started (0 for a new replica). */
  recoveredWrites: number;
  /** Writes applied after it started: what it was sent (a snapshot's entries not counted). */
  writesSent: number;
  runs: number;
}

type Way = 'delta' | 'catch-up' | 'snapshot';
const WAYS: readonly Way[] = ['delta', 'catch-up', 'snapshot'];

interface ReplicaLine {
  chain: number;
  replicaId: number;
  role: string;
  stats: { appliedSeq: number; recoveredSeq: number; writesApplied: number } | null;
}

const POLL_MS = 20;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function replicaOf(hosts: LocalHosts, index: number): Promise<ReplicaLine | null> {
  try {
    const response = await fetch(`${hosts.urls[index]!.replace('ws://', 'http://')}/status`);
    const status = (await response.json()) as { replicas: ReplicaLine[] };
    return status.replicas.find((replica) => replica.chain === 0) ?? null;
  } catch {
    return null;
  }
}

/** Polls host `index` until its replica is a member applied through `seq`; returns it. */
async function caughtUp(hosts: LocalHosts, index: number, seq: number, deadline: number): Promise<ReplicaLine> {
  for (;;) {
    const replica = await replicaOf(hosts, index);
    if (replica !== null && replica.role !== 'joining' && replica.stats !== null && replica.stats.appliedSeq >= seq) return replica;
    if (performance.now() > deadline) throw new Error(`host ${index + 1} did not catch up within the time allowed: ${JSON.stringify(replica)}`);
    await sleep(POLL_MS);
  }
}

/** Polls host `index` until chain 0 has `count` members and no joiner. */
async function membersOf(hosts: LocalHosts, index: number, count: number, deadline: number): Promise<void> {
  for (;;) {
    try {
      const response = await fetch(`${hosts.urls[index]!.replace('ws://', 'http://')}/status`);
      const status = (await response.json()) as { chains: Array<{ chain: number; members: Array<{ role: string }> }> };
      const members = status.chains.find((chain) => chain.chain === 0)?.members ?? [];
      if (members.length === count && members.every((member) => member.role !== 'joining')) return;
    } catch {
      // Not answering yet: poll again.
    }
    if (performance.now() > deadline) throw new Error(`chain 0 did not come to ${count} members in time`);
    await sleep(POLL_MS);
  }
}

/** Waits for the stopped load's last writes, at most 10 s: a chain that stopped acknowledging must not hang the bench. */
async function settled(load: Promise<unknown>, log: (line: string) => void): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), 10_000)));
  const outcome = await Promise.race([load.then(() => 'done' as const), late]);
  clearTimeout(timer);
  if (outcome === 'late') log('  (the stopped load still had writes unacknowledged after 10 s; the client is closed on them)');
}

interface Sample {
  catchUpMs: number;
  serveMs: number;
  recoveredWrites: number;
  writesSent: number;
}

async function measure(how: Way, keys: number, downMs: number, log: (line: string) => void): Promise<Sample> {
  const root = mkdtempSync(join(tmpdir(), 'dabba-restart-bench-'));
  // Delta: a lease that surely outlives the outage (it may have been renewed last a third of a TTL
  // before the kill, and the host takes a second or two to start); snapshot: the default, 2 s.
  const lease = how === 'delta' ? '30' : '2';
  const hosts = await startLocalHosts(3, { hostArgs: (index) => ['--data-dir', join(root, `h${index + 1}`), '--durability', 'fsync', '--lease-ttl', lease] });
  try {
    const client = await connect({ hosts: hosts.urls, secret: hosts.secret });
    const stopLoad = new AbortController();
    let load: Promise<unknown> | null = null;
    try {
      const names = makeKeys(keys, 16);
      const value = makeValue(100);
      for (let start = 0; start < keys; start += 5000) await client.putMany(names.slice(start, start + 5000).map((key) => [key, value] as const));
      load = runClosedLoop(client, { durationMs: 120_000, keySpace: keys, writers: 2, writeWindow: 1024, signal: stopLoad.signal });
      await sleep(1000);
      const { head, tail } = client.stats();
      const tailIndex = hosts.urls.indexOf(tail!);
      const headIndex = hosts.urls.indexOf(head!);
      // The one killed, and one that stays up to ask how far the chain got.
      const killed = how === 'catch-up' ? headIndex : tailIndex;
      const survivor = how === 'catch-up' ? tailIndex : headIndex;
      process.kill(hosts.pids[killed]!, 'SIGKILL');
      await sleep(downMs);
      // The snapshot and catch-up cases start once the master removed the dead replica, so that
      // only the join is timed.
      if (how !== 'delta') await membersOf(hosts, survivor, 2, performance.now() + 30_000);
      let index = killed;
      const target = (await replicaOf(hosts, survivor))?.stats?.appliedSeq ?? 0;
      const started = performance.now();
      if (how === 'snapshot') index = await hosts.add(['--data-dir', join(root, 'new'), '--durability', 'fsync', '--lease-ttl', lease]);
      else await hosts.restart(killed);
      const serveMs = performance.now() - started;
      const replica = await caughtUp(hosts, index, target, started + 60_000);
      const catchUpMs = performance.now() - started;
      stopLoad.abort();
      await settled(load, log);
      const recoveredWrites = replica.stats!.recoveredSeq;
      const result = { catchUpMs, serveMs, recoveredWrites, writesSent: replica.stats!.writesApplied };
      log(`  ${how}: ${keys} keys, down ${downMs} ms: serving after ${Math.round(serveMs)} ms, caught up ${Math.round(catchUpMs)} ms after its start (recovered ${recoveredWrites}, sent ${result.writesSent} writes)`);
      return result;
    } catch (error) {
      // What the hosts warned of says why (the error alone rarely does).
      for (const [index, lines] of hosts.logs.entries()) {
        for (const line of lines.join('').split('\n').filter((text) => text.includes('"level":"warn"') || text.includes('"level":"error"')).slice(-8)) log(`  host ${index + 1}: ${line}`);
      }
      throw error;
    } finally {
      // A run that failed stops its load before the client goes (its writes then fail as it closes).
      stopLoad.abort();
      if (load !== null) await settled(load.catch(() => undefined), log);
      await client.close();
    }
  } finally {
    await hosts.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

export async function restartBench(env: Environment, log: (line: string) => void, settings: { runs: number; keys?: number; downMs?: number }): Promise<RestartRow[]> {
  const keys = settings.keys ?? 200_000;
  const downMs = settings.downMs ?? 10_000;
  const samples: Record<Way, Sample[]> = { delta: [], 'catch-up': [], snapshot: [] };
  for (let run = 0; run < settings.runs; run++) {
    // Alternated: each way goes first, second and last in turn.
    for (let turn = 0; turn < WAYS.length; turn++) {
      const how = WAYS[(run + turn) % WAYS.length]!;
      samples[how].push(await measure(how, keys, downMs, log));
    }
  }
  const rows: RestartRow[] = WAYS.map((how) => ({
    how,
    keys,
    downMs,
    catchUpMs: Math.round(median(samples[how].map((sample) => sample.catchUpMs))),
    serveMs: Math.round(median(samples[how].map((sample) => sample.serveMs))),
    recoveredWrites: Math.round(median(samples[how].map((sample) => sample.recoveredWrites))),
    writesSent: Math.round(median(samples[how].map((sample) => sample.writesSent))),
    runs: settings.runs,
  }));
  for (const row of rows) record('restart', row, env);
  printTable(
    `A durable host killed under load and back ${downMs} ms later: the tail, still listed (delta); the head, removed meanwhile (catch-up join from its old log); against a new host copying a snapshot (${keys} keys of 100 B, 3 dabba serve --durability fsync, medians of ${settings.runs})`,
    ['how', 'start to serving', 'start to caught up', 'writes recovered from its log', 'writes sent to it'],
    rows.map((row) => [row.how, `${row.serveMs} ms`, `${row.catchUpMs} ms`, String(row.recoveredWrites), String(row.writesSent)]),
  );
  return rows;
}
