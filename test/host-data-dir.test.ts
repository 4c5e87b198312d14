/**
 * A durable host's data directory (src/host/host-data-dir.ts) and its flags: it keeps the
 * incarnation across restarts in `fsync` mode (and in `async` mode within one boot of the machine),
 * starts over with empty logs otherwise, and refuses a directory of another host or cluster, one
 * in use, and one that is not a host's.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { HostDataDir } from '../src/host/host-data-dir.js';
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

test('dabba serve --data-dir, --durability, --sync-interval-ms and --disk-reserve-bytes, from flags, environment or config file', () => {
  const base = ['--id', 'h1', '--etcd', 'http://127.0.0.1:2379'];
  const env = { DABBA_PEER_SECRET: 'peer-secret-0123456789', DABBA_CLIENT_SECRET: 'client-secret-0123456789' };
  assert.equal(parseServeConfig(base, env).chain, undefined, 'memory by default');
  assert.deepEqual(parseServeConfig([...base, '--data-dir', '/var/lib/dabba'], env).chain, { dataDir: '/var/lib/dabba' });
  assert.deepEqual(parseServeConfig([...base, '--data-dir', '/d', '--durability', 'async', '--sync-interval-ms', '20'], env).chain, { dataDir: '/d', durability: 'async', syncIntervalMs: 20 });
  assert.deepEqual(parseServeConfig(base, { ...env, DABBA_DATA_DIR: '/e', DABBA_DURABILITY: 'fsync' }).chain, { dataDir: '/e', durability: 'fsync' });
  assert.deepEqual(parseServeConfig([...base, '--data-dir', '/d', '--disk-reserve-bytes', '0'], env).chain, { dataDir: '/d', diskReserveBytes: 0 });
  assert.deepEqual(parseServeConfig([...base, '--data-dir', '/d'], { ...env, DABBA_DISK_RESERVE_BYTES: '1048576' }).chain, { dataDir: '/d', diskReserveBytes: 1048576 });
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
