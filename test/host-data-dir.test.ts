/**
 * A durable host's data directory (src/host/host-data-dir.ts) and its flags: it keeps the
 * incarnation across restarts in `fsync` mode (and in `async` mode within one boot of the machine),
 * starts over with empty logs otherwise, and refuses a directory of another host or cluster, one
 * in use, and one that is not a host's.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Store } from '../native-free-core/store.js';
import { FORMAT_RECORD_LIMITS, WriteBatchEncoder, WriteBatchView } from '../native-free-core/wire/codec.js';
import { HostDataDir } from '../src/host/host-data-dir.js';
import { logDamage, ReplicaLog } from '../workers/replica-log.js';
import { parseServeConfig } from '../src/host/serve-config.js';

const root = mkdtempSync(join(tmpdir(), 'dabba-host-data-dir-'));
after(() => rmSync(root, { recursive: true, force: true }));
let count = 0;
const fresh = (): string => join(root, `d${count++}`);

test('fsync: a restarted host keeps its incarnation and its replicas\' logs', () => {
  const path = fresh();
  const first = HostDataDir.open(path, 'h1', '/dabba/a/', 'fsync', 'first');
  assert.equal(first.recovering, false);
  assert.equal(first.incarnation, 'first');
  const log = first.logPlacement(0, 7, true);
  mkdirSync(log.directory, { recursive: true });
  assert.equal(first.hasLog(0, 7), false, 'a log written in this run is not one to restart from');
  assert.throws(() => HostDataDir.open(path, 'h1', '/dabba/a/', 'fsync', 'x'), { code: 'DABBA_ERR_INVALID_ARGUMENT', message: /in use by another chain in this process|in use by process/ });
  first.release();
  const second = HostDataDir.open(path, 'h1', '/dabba/a/', 'fsync', 'second');
  assert.equal(second.recovering, true);
  assert.equal(second.incarnation, 'first', 'the same incarnation: the master finds its replicas where it left them');
  assert.equal(second.hasLog(0, 7), true);
  assert.equal(second.hasLog(0, 8), false);
  // Its node failed: a new incarnation, and the old replicas' logs go.
  second.startOver('third');
  assert.equal(second.incarnation, 'third');
  assert.equal(existsSync(log.directory), false);
  second.release();
  assert.equal(JSON.parse(readFileSync(join(path, 'dabba-host.json'), 'utf8')).incarnation, 'third');
});

test('async after a machine restart, or another mode: a new incarnation with empty logs', () => {
  const path = fresh();
  HostDataDir.open(path, 'h1', '/dabba/a/', 'async', 'first').release();
  const same = HostDataDir.open(path, 'h1', '/dabba/a/', 'async', 'second');
  assert.equal(same.incarnation, 'first', 'the same boot: an async log holds what it acknowledged');
  mkdirSync(same.logPlacement(0, 1, true).directory, { recursive: true });
  same.release();
  const state = JSON.parse(readFileSync(join(path, 'dabba-host.json'), 'utf8'));
  writeFileSync(join(path, 'dabba-host.json'), JSON.stringify({ ...state, bootId: 'another-boot' }));
  const rebooted = HostDataDir.open(path, 'h1', '/dabba/a/', 'async', 'third');
  assert.equal(rebooted.incarnation, 'third', 'its last interval may be lost: it starts over');
  assert.equal(existsSync(rebooted.logPlacement(0, 1, false).directory), false);
  rebooted.release();
  const otherMode = HostDataDir.open(path, 'h1', '/dabba/a/', 'fsync', 'fourth');
  assert.equal(otherMode.incarnation, 'fourth');
  otherMode.release();
});

/** A replica log of a few batches in `directory`, as a replica writes it. */
function writeLog(directory: string): void {
  const { log } = ReplicaLog.open({ directory, durability: 'fsync', segmentBytesMax: 64 * 1024, frameBytesMax: 8 * 1024, limits: FORMAT_RECORD_LIMITS, syncIntervalMs: 100 }, new Store());
  const encoder = new WriteBatchEncoder({ writesMax: 16, payloadBytesMax: 4096 });
  const view = new WriteBatchView();
  for (let seq = 1; seq <= 40; seq++) {
    encoder.begin(1, seq);
    const key = Buffer.from(`k${seq}`);
    encoder.addPut(key, 0, key.length, Buffer.alloc(100, seq), 0, 100);
    const frame = encoder.finish().slice();
    assert.equal(view.open(frame), null);
    view.stamp(1, seq);
    log.append(frame, seq, 1);
  }
  log.close();
}

test('a damaged replica log stops the host with one line naming the file and the offset; with --repair only that log is cut there', () => {
  const path = fresh();
  const first = HostDataDir.open(path, 'h1', '/dabba/a/', 'fsync', 'first');
  const damaged = first.logPlacement(0, 7, true).directory;
  const sound = first.logPlacement(1, 8, true).directory;
  writeLog(damaged);
  writeLog(sound);
  first.release();
  const segment = join(damaged, readdirSync(damaged).find((name) => name.endsWith('.log'))!);
  const bytes = readFileSync(segment);
  bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
  writeFileSync(segment, bytes);
  const limits = { frameBytesMax: 8 * 1024, snapshotFrameBytesMax: 64 * 1024, limits: FORMAT_RECORD_LIMITS };
  const restarted = HostDataDir.open(path, 'h1', '/dabba/a/', 'fsync', 'second');
  assert.throws(() => restarted.checkLogs((directory) => logDamage(directory, limits), false), {
    code: 'DABBA_ERR_CORRUPT',
    message: new RegExp(`^log segment ${segment.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is damaged at offset \\d+: .*start with --repair`),
  });
  assert.ok(existsSync(damaged), 'nothing is discarded without --repair');
  const before = readFileSync(segment).length;
  const lines = restarted.checkLogs((directory) => logDamage(directory, limits), true);
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /is damaged at offset \d+: .*cut there, later segments removed; its replica is given up/);
  const offset = Number(/at offset (\d+)/.exec(lines[0]!)![1]);
  assert.ok(offset > 8 && offset < before, `cut inside the segment (${offset} of ${before} bytes)`);
  assert.equal(readFileSync(segment).length, offset, 'the sound prefix stays, for the next joiner here');
  assert.equal(restarted.discardedLog(0, 7), true, 'its replica is given up all the same');
  assert.equal(restarted.hasLog(1, 8), true, 'the sound log stays');
  assert.equal(restarted.discardedLog(1, 8), false);
  assert.deepEqual(restarted.checkLogs((directory) => logDamage(directory, limits), false), [], 'what is left is sound');
  restarted.release();
});

test('dabba serve with a damaged log exits 1 with that one line, before it reaches etcd', () => {
  const path = fresh();
  const first = HostDataDir.open(path, 'h1', '/dabba/default/', 'fsync', 'first');
  const directory = first.logPlacement(0, 3, true).directory;
  writeLog(directory);
  first.release();
  const segment = join(directory, readdirSync(directory).find((name) => name.endsWith('.log'))!);
  const bytes = readFileSync(segment);
  bytes[bytes.length - 30]! ^= 0x01;
  // Damage before a whole record that follows it: not a torn end.
  writeFileSync(segment, Buffer.concat([bytes, bytes.subarray(8)]));
  const result = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--id', 'h1', '--etcd', 'http://127.0.0.1:9', '--data-dir', path], {
    env: { ...process.env, DABBA_PEER_SECRET: 'peer-secret-0123456789', DABBA_CLIENT_SECRET: 'client-secret-0123456789' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(result.status, 1, result.stderr);
  const lines = result.stderr.trim().split('\n');
  assert.equal(lines.length, 1, result.stderr);
  assert.match(lines[0]!, /^dabba: log segment .*\.log is damaged at offset \d+: .*--repair/);
});

test('a directory of another host or cluster, or not a host\'s, is refused', () => {
  const path = fresh();
  HostDataDir.open(path, 'h1', '/dabba/a/', 'fsync', 'first').release();
  assert.throws(() => HostDataDir.open(path, 'h2', '/dabba/a/', 'fsync', 'x'), { code: 'DABBA_ERR_INVALID_ARGUMENT', message: /belongs to host h1, not h2/ });
  assert.throws(() => HostDataDir.open(path, 'h1', '/dabba/b/', 'fsync', 'x'), { code: 'DABBA_ERR_INVALID_ARGUMENT', message: /belongs to the cluster at etcd prefix \/dabba\/a\/, not \/dabba\/b\// });
  const other = fresh();
  mkdirSync(other);
  writeFileSync(join(other, 'photo.jpg'), 'x');
  assert.throws(() => HostDataDir.open(other, 'h1', '/dabba/a/', 'fsync', 'x'), { code: 'DABBA_ERR_INVALID_ARGUMENT', message: /not a dabba host's data directory/ });
  writeFileSync(join(path, 'dabba-host.json'), '{"format":"something else"}');
  assert.throws(() => HostDataDir.open(path, 'h1', '/dabba/a/', 'fsync', 'x'), { code: 'DABBA_ERR_CORRUPT' });
});

test('dabba serve --data-dir, --durability, --sync-interval-ms, --disk-reserve-bytes and --repair, from flags, environment or config file', () => {
  const base = ['--id', 'h1', '--etcd', 'http://127.0.0.1:2379'];
  const env = { DABBA_PEER_SECRET: 'peer-secret-0123456789', DABBA_CLIENT_SECRET: 'client-secret-0123456789' };
  assert.equal(parseServeConfig(base, env).chain, undefined, 'memory by default');
  assert.deepEqual(parseServeConfig([...base, '--data-dir', '/var/lib/dabba'], env).chain, { dataDir: '/var/lib/dabba' });
  assert.deepEqual(parseServeConfig([...base, '--data-dir', '/d', '--durability', 'async', '--sync-interval-ms', '20'], env).chain, { dataDir: '/d', durability: 'async', syncIntervalMs: 20 });
  assert.deepEqual(parseServeConfig(base, { ...env, DABBA_DATA_DIR: '/e', DABBA_DURABILITY: 'fsync' }).chain, { dataDir: '/e', durability: 'fsync' });
  assert.deepEqual(parseServeConfig([...base, '--data-dir', '/d', '--disk-reserve-bytes', '0'], env).chain, { dataDir: '/d', diskReserveBytes: 0 });
  assert.deepEqual(parseServeConfig([...base, '--data-dir', '/d'], { ...env, DABBA_DISK_RESERVE_BYTES: '1048576' }).chain, { dataDir: '/d', diskReserveBytes: 1048576 });
  assert.equal(parseServeConfig([...base, '--data-dir', '/d', '--repair'], env).repair, true);
  assert.equal(parseServeConfig([...base, '--data-dir', '/d'], { ...env, DABBA_REPAIR: '1' }).repair, true);
  assert.equal(parseServeConfig([...base, '--data-dir', '/d'], env).repair, undefined);
  for (const [args, message] of [
    [['--durability', 'fsync'], /--durability fsync needs --data-dir/],
    [['--data-dir', '/d', '--durability', 'memory'], /--durability memory keeps nothing on disk/],
    [['--data-dir', '/d', '--durability', 'disk'], /--durability must be memory, async or fsync/],
    [['--data-dir', '/d', '--sync-interval-ms', '0'], /--sync-interval-ms must be an integer in 1..60000/],
    [['--data-dir', '/d', '--disk-reserve-bytes', 'lots'], /--disk-reserve-bytes must be an integer in 0\.\./],
  ] as const) {
    assert.throws(() => parseServeConfig([...base, ...args], env), { message });
  }
});
