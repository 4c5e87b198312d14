/**
 * The benchmarks' small settings run inside npm test, so none of them rots: every suite runs end to
 * end, produces positive figures, and the headline includes the naive baseline from the same run.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { HeadlineResult, SweepRow } from '../bench/chain-bench.js';
import type { FailoverRow } from '../bench/failover-bench.js';
import type { JoinRow } from '../bench/join-bench.js';
import type { MicroRow } from '../bench/micro-bench.js';
import type { PeersResult } from '../bench/peers-bench.js';
import type { OpenLoopRow } from '../bench/openloop-bench.js';
import type { LatencyTargetResult } from '../bench/latency-target-bench.js';
import type { ThreadCpuRow } from '../bench/thread-cpu.js';
import type { ChainsRow } from '../bench/chains-bench.js';
import type { HostsChainsRow } from '../bench/hosts-chains-bench.js';
import type { HostsBenchResult } from '../bench/hosts-bench.js';
import type { DurabilityResult, DurabilitySoakRow } from '../bench/durability-bench.js';
import type { RestartRow } from '../bench/restart-bench.js';
import type { ReadsRow } from '../bench/reads-bench.js';
import type { ConditionsRow } from '../bench/conditions-bench.js';
import type { WatchesRow } from '../bench/watches-bench.js';
import { runBenchmarks } from '../bench/run.js';

test('every benchmark suite runs in its small setting and records its results', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'dabba-bench-'));
  process.env.DABBA_BENCH_RESULTS = directory;
  const lines: string[] = [];
  try {
    const results = await runBenchmarks({
      suites: ['all'],
      seconds: 0.3,
      runs: 1,
      soakSeconds: 1,
      small: true,
      log: (line) => lines.push(line),
    });
    const microResult = results.micro as { rows: MicroRow[]; hash: number };
    assert.equal(microResult.rows.length, 16);
    for (const row of microResult.rows) assert.ok(row.nsPerWrite > 0 && Number.isFinite(row.nsPerWrite), `${row.task}: ${row.nsPerWrite}`);
    const readsRows = results.reads as ReadsRow[];
    assert.deepEqual(readsRows.map((row) => [row.setup, row.reads]), [['one process', 'any'], ['one process', 'tail']]);
    for (const row of readsRows) assert.ok(row.readsPerSecond > 0 && row.writesPerSecond > 0, JSON.stringify(row));
    assert.ok(readsRows[0]!.readShares.every((share) => share > 0), 'with reads any, every replica answered some');
    assert.equal(readsRows[1]!.readShares[2], 100, 'with reads tail, the tail answered all');
    const watchesRows = results.watches as WatchesRow[];
    assert.deepEqual(watchesRows.map((row) => row.variant), ['no watchers', '10 watchers', '10 watchers, 1/15 of keys']);
    assert.ok(watchesRows.every((row) => row.writesPerSecond > 0), JSON.stringify(watchesRows));
    // Each of the 10 watchers of every key took every acknowledged write (unless one lagged: then it went on from where the replicas held).
    const everyKey = watchesRows[1]!;
    if (everyKey.lags === 0) assert.equal(everyKey.changesTaken, 10 * everyKey.writes, JSON.stringify(everyKey));
    const conditionsRows = results.conditions as ConditionsRow[];
    assert.deepEqual(conditionsRows.map((row) => row.kind), ['plain', 'ifAbsent']);
    for (const row of conditionsRows) assert.ok(row.writesPerSecond > 0 && row.conditionFailures === 0, JSON.stringify(row));
    const headlineResult = results.headline as HeadlineResult;
    assert.ok(headlineResult.dabbaWritesPerSecond > 0 && headlineResult.naiveWritesPerSecond > 0);
    assert.ok(headlineResult.halfLoad.p99Us > 0);
    const openLoopRows = results.openloop as OpenLoopRow[];
    assert.deepEqual(openLoopRows.map((row) => row.fraction), [0.25, 0.75]);
    for (const row of openLoopRows) {
      assert.ok(row.offeredPerSecond > 0 && row.achievedPerSecond > 0 && row.p50Us > 0 && row.p50Us <= row.p99Us && row.p99Us <= row.p999Us, JSON.stringify(row));
    }
    const latencyTarget = results.latencyTarget as LatencyTargetResult;
    assert.deepEqual(latencyTarget.maxima.map((maximum) => `${maximum.place}: ${maximum.variant}`), ['one process: spin 2000', 'one process: defaults', 'one process: target 2 ms', '3 hosts: defaults', '3 hosts: target 2 ms']);
    assert.equal(latencyTarget.rows.length, 5);
    for (const row of latencyTarget.rows) assert.ok(row.fraction === 0.5 && row.achievedPerSecond > 0 && row.p50Us > 0 && row.p50Us <= row.p99Us, JSON.stringify(row));
    const sweepRows = results.sweeps as SweepRow[];
    assert.deepEqual(new Set(sweepRows.map((row) => row.dimension)), new Set(['replicas', 'batch', 'value']));
    assert.ok(sweepRows.every((row) => row.writesPerSecond > 0));
    const failoverRows = results.failover as FailoverRow[];
    assert.deepEqual(failoverRows.map((row) => row.role), ['head', 'middle', 'tail']);
    for (const row of failoverRows) assert.ok(row.stallMs > 0 && row.stallMs < 5000 && row.reconfiguredAfterMs >= 0, JSON.stringify(row));
    const joinRows = results.join as JoinRow[];
    assert.equal(joinRows.length, 1);
    assert.ok(joinRows[0]!.joinMs > 0 && joinRows[0]!.writesPerSecondDuring > 0, JSON.stringify(joinRows));
    const cpuRows = results.cpu as ThreadCpuRow[];
    assert.equal(cpuRows.length, 1, 'thread CPU accounting runs on Linux');
    const roles = Object.keys(cpuRows[0]!.nsPerWrite);
    for (const role of ['main (client)', 'replica 1 (head)', 'replica 2 (middle)', 'replica 3 (tail)']) {
      assert.ok(roles.includes(role), `CPU attributed to ${role}: ${roles.join(', ')}`);
    }
    assert.ok(cpuRows[0]!.nsPerWrite.total! > 0);
    const chainsRows = results.chains as ChainsRow[];
    assert.deepEqual(chainsRows.map((row) => row.chains), [1, 12]);
    for (const row of chainsRows) assert.ok(row.writesPerSecond > 0 && row.nodeCpuPercent.length === 3 && row.mainCpuPercent > 0, JSON.stringify(row));
    const restartRows = results.restart as RestartRow[];
    assert.deepEqual(restartRows.map((row) => row.how), ['delta', 'catch-up', 'snapshot']);
    for (const row of restartRows) assert.ok(row.catchUpMs > 0, JSON.stringify(row));
    assert.ok(restartRows[0]!.recoveredWrites >= 5_000, `the restarted replica recovered its log: ${JSON.stringify(restartRows[0])}`);
    assert.equal(restartRows[2]!.recoveredWrites, 0, 'the new replica started empty');
    const soakRow = results.durabilitySoak as DurabilitySoakRow;
    assert.ok(soakRow.writesPerSecond > 0 && soakRow.diskEndMiB > 0 && soakRow.logWrittenMiB > 0, JSON.stringify(soakRow));
    const durabilityResult = results.durability as DurabilityResult;
    const durabilityRows = durabilityResult.modes;
    assert.deepEqual(durabilityResult.skipped, [], 'etcd and Redis are installed on demand as root');
    assert.equal(durabilityResult.peers.length, 2);
    for (const row of durabilityResult.peers) assert.ok(row.writesPerSecond > 0 && row.fsyncRatio > 0 && row.guarantee.length > 0, JSON.stringify(row));
    assert.deepEqual(durabilityRows.map((row) => row.durability), ['memory', 'async', 'fsync']);
    for (const row of durabilityRows) assert.ok(row.writesPerSecond > 0 && row.ratioToMemory > 0, JSON.stringify(row));
    assert.ok(durabilityRows[2]!.syncsPerSecond > 0 && durabilityRows[2]!.logBytesPerWrite > 100, 'fsync mode syncs its logs');
    // CI runs as root, so the peers' servers (redis-server, etcd) are installed on demand and none is skipped.
    const peersResult = results.peers as PeersResult;
    assert.deepEqual(peersResult.skipped, []);
    assert.deepEqual(peersResult.rows.map((row) => row.peer), ['dabba', 'dabba putMany', 'redis replicated', 'redis unreplicated', 'etcd']);
    for (const row of peersResult.rows) assert.ok(row.writesPerSecond > 0 && row.dabbaRatio > 0 && row.dabbaPutManyRatio > 0, JSON.stringify(row));
    const hostsResult = results.hosts as HostsBenchResult;
    assert.ok(hostsResult.hostsWritesPerSecond > 0 && hostsResult.inProcessWritesPerSecond > 0 && hostsResult.hostsLatencyUs.p99 > 0, JSON.stringify(hostsResult));
    const hostsChainsRows = results.hostsChains as HostsChainsRow[];
    assert.deepEqual(hostsChainsRows.map((row) => row.chains), [1, 12]);
    for (const row of hostsChainsRows) assert.ok(row.writesPerSecond > 0 && row.hostCpuPercent.length === 3 && row.hostCpuPercent[0]! > 0, JSON.stringify(row));
    const ledger = readFileSync(join(directory, 'results.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    assert.ok(ledger.length >= microResult.rows.length + 1 + sweepRows.length + 1);
    for (const entry of ledger) {
      assert.ok(entry.node && entry.cores && entry.commit && entry.suite, 'each result names its machine, Node version and commit');
    }
  } finally {
    delete process.env.DABBA_BENCH_RESULTS;
    rmSync(directory, { recursive: true, force: true });
  }
});
