/**
 * A durable createChain()'s data directory keeps each chain's members in a SlottedStateFile: saved
 * in place, in turn, in one of two slots, so a save needs no room on the disk and a torn save leaves
 * the slot before it. A reconfiguration on a full disk is saved, and a restart follows it.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createChain, type ReconfigurationEvent } from '../src/index.js';
import { DataDir } from '../src/data-dir.js';
import { SlottedStateFile } from '../src/slotted-state-file.js';
import { fillLeaving, mountTmpfs } from './helpers/tmpfs.js';

const MiB = 1024 * 1024;

function scratch(t: { after(fn: () => void): void }): string {
  const path = mkdtempSync(join(tmpdir(), 'dabba-data-dir-'));
  t.after(() => rmSync(path, { recursive: true, force: true }));
  return path;
}

/** Overwrites the first byte of the text of the slot that holds save number `saves` (save n is in slot n % 2). */
function tear(path: string, saves: number): void {
  const slotBytes = readFileSync(path).length / 2;
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.from('#'), 0, 1, (saves % 2) * slotBytes + 16);
  closeSync(fd);
}

test('a slotted state file: the newest whole save is read back; a torn newest save leaves the one before; a state too large is refused and changes nothing', (t) => {
  const path = join(scratch(t), 'state');
  const file = SlottedStateFile.create(path, 100, 'one');
  assert.equal(SlottedStateFile.open(path).text, 'one');
  file.save('two');
  file.save('three');
  assert.equal(readFileSync(path).length, 2 * 4096, 'two page-sized slots, allocated once');
  assert.equal(SlottedStateFile.open(path).text, 'three');
  tear(path, 3);
  assert.equal(SlottedStateFile.open(path).text, 'two', 'a torn save is not read');
  const reopened = SlottedStateFile.open(path).file;
  reopened.save('four');
  assert.equal(SlottedStateFile.open(path).text, 'four', 'the next save goes over the torn slot');
  assert.throws(() => reopened.save('x'.repeat(5000)), { code: 'DABBA_ERR_OUT_OF_RANGE' });
  assert.equal(SlottedStateFile.open(path).text, 'four');
  tear(path, 2);
  tear(path, 3);
  assert.throws(() => SlottedStateFile.open(path), { code: 'DABBA_ERR_CORRUPT', message: /neither of its slots is whole/ });
  writeFileSync(path, 'not slots');
  assert.throws(() => SlottedStateFile.open(path), { code: 'DABBA_ERR_CORRUPT', message: /not two slots/ });
});

test('a data directory saves its members with not a byte left on the disk, and the next open reads them', (t) => {
  const disk = mountTmpfs(4 * MiB);
  t.after(() => disk.unmount());
  const path = join(disk.path, 'data');
  const first = DataDir.open(path, 2);
  first.saveMembers([
    [1, 2, 3],
    [2, 3, 1],
  ]);
  const filler = fillLeaving(disk.path, 0);
  assert.throws(() => writeFileSync(join(disk.path, 'more'), 'x'), { code: 'ENOSPC' }, 'the disk is full');
  for (let save = 0; save < 5; save++) {
    first.saveMembers([
      [2, 3 + save],
      [3 + save, 2],
    ]);
  }
  first.release();
  const second = DataDir.open(path, 2);
  assert.deepEqual(second.recovered, [
    [2, 7],
    [7, 2],
  ]);
  assert.equal(second.generation, 2);
  second.release();
  rmSync(filler);
});

test('a data directory of an older version (dabba-data.json) is read, and moved to the slotted file at its first save', (t) => {
  const path = scratch(t);
  writeFileSync(join(path, 'dabba-data.json'), `${JSON.stringify({ format: 'dabba-data/1', chains: 1, generation: 3, members: [[4, 5, 6]] })}\n`);
  const directory = DataDir.open(path, 1);
  assert.deepEqual(directory.recovered, [[4, 5, 6]]);
  assert.equal(directory.generation, 4);
  directory.saveMembers([[4, 5, 6]]);
  directory.release();
  assert.equal(existsSync(join(path, 'dabba-data.json')), false);
  assert.equal(existsSync(join(path, 'dabba-data.state')), true);
  const again = DataDir.open(path, 1);
  assert.equal(again.generation, 5);
  again.release();
});

test('a durable chain whose disk is full still reconfigures when a replica crashes, and a restart keeps every acknowledged write', { timeout: 60_000 }, async (t) => {
  const disk = mountTmpfs(64 * MiB);
  const dataDir = join(disk.path, 'data');
  let chain = await createChain({ replicas: 3, dataDir, durability: 'fsync', diskReserveBytes: 0 });
  t.after(async () => {
    await chain.close();
    disk.unmount();
  });
  chain.on('warning', () => undefined);
  const entries = Array.from({ length: 2000 }, (_, index) => [`k${index}`, `v${index}`] as const);
  await chain.putMany(entries);
  const filler = fillLeaving(disk.path, 0);
  const reconfigured = new Promise<ReconfigurationEvent>((resolve) => chain.once('reconfigured', resolve));
  const middle = chain.members()[1]!.id;
  chain.crashReplica(middle);
  const event = await reconfigured;
  assert.equal(event.removed, middle);
  assert.equal(event.members.length, 2);
  rmSync(filler);
  await chain.close();
  chain = await createChain({ replicas: 3, dataDir, durability: 'fsync', diskReserveBytes: 0 });
  assert.equal(chain.members().some((member) => member.id === middle), false, 'the crashed replica is no member after the restart');
  for (const index of [0, 999, 1999]) assert.equal((await chain.get(`k${index}`))?.toString(), `v${index}`);
});
