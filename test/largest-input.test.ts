/**
 * The largest legal input on every path of one process: a key of keyBytesMax bytes with a value of
 * valueBytesMax bytes is written, read, copied to a joiner, handed over, and survives the failure
 * of the replica that held it, with the limits at their defaults and at other settings; and on a
 * durable chain it is logged, checkpointed by a joiner, and read back after a restart. (Values
 * over ~255 KiB used to crash the tail as soon as a replica joined: the snapshot frame was smaller
 * than one entry.)
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isDabbaError, ErrorCode } from '../native-free-core/errors.js';
import { createChain, type Chain, type ChainOptions } from '../src/index.js';
import { resolveOptions } from '../src/options.js';

const chains: Chain[] = [];
after(async () => {
  await Promise.all(chains.map((chain) => chain.close()));
});

function patterned(length: number, seed: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let index = 0; index < length; index++) bytes[index] = (index * 31 + seed * 7) & 0xff;
  return bytes;
}

async function assertIdentical(chain: Chain): Promise<void> {
  await chain.whenIdle();
  const digests = await chain.digests();
  for (const digest of digests) assert.equal(digest.digest, digests[0]!.digest, JSON.stringify(digests));
}

for (const options of [{}, { valueBytesMax: 3 * 1024 * 1024, batch: { maxBytes: 4 * 1024 * 1024 }, ringBytes: 16 << 20 }] as ChainOptions[]) {
  const resolved = resolveOptions(options);
  const label = `key ${resolved.keyBytesMax} B, value ${resolved.valueBytesMax} B`;
  test(`the largest key and value (${label}) survive write, read, join, handoff and failures`, { timeout: 120_000 }, async () => {
    const chain = createChain({ replicas: 3, ...options });
    chains.push(chain);
    const warnings: Error[] = [];
    chain.on('warning', (warning: Error) => warnings.push(warning));
    const key = patterned(resolved.keyBytesMax, 1);
    const value = patterned(resolved.valueBytesMax, 2);
    await chain.put(key, value);
    await chain.put('small', 'x');
    assert.ok((await chain.get(key))?.equals(value), 'read back');

    // One more byte of either is refused at the door, with its code.
    await assert.rejects(chain.put(key, patterned(resolved.valueBytesMax + 1, 3)), (error) => isDabbaError(error, ErrorCode.valueTooLarge));
    await assert.rejects(chain.put(patterned(resolved.keyBytesMax + 1, 4), 'v'), (error) => isDabbaError(error, ErrorCode.keyTooLarge));

    // Join: the tail cuts the entry into a snapshot frame for the joiner, then hands over to it.
    const joined = await chain.addReplica();
    assert.equal(chain.members().at(-1)!.id, joined, 'the joiner became the tail');
    assert.ok((await chain.get(key))?.equals(value), 'read from the new tail');
    // Replace the head (a join and a removal); then the tail fails and its predecessor takes over.
    await chain.replaceReplica(chain.members()[0]!.id);
    chain.crashReplica(chain.members().at(-1)!.id);
    await new Promise<void>((resolve) => chain.once('reconfigured', () => resolve()));
    assert.ok((await chain.get(key))?.equals(value), 'read after the tail failed');
    // And once more: a new replica joins behind the survivor that now holds it.
    await chain.addReplica();
    assert.ok((await chain.get(key))?.equals(value), 'read after another join');
    assert.equal(chain.members().length, 4);
    await assertIdentical(chain);
    assert.deepEqual(warnings.map((warning) => warning.message), [], 'no replica refused a frame');
  });
}

for (const options of [{}, { valueBytesMax: 3 * 1024 * 1024, batch: { maxBytes: 4 * 1024 * 1024 }, ringBytes: 16 << 20 }] as ChainOptions[]) {
  const resolved = resolveOptions(options);
  const label = `key ${resolved.keyBytesMax} B, value ${resolved.valueBytesMax} B`;
  test(`the largest key and value (${label}) are logged, checkpointed by a joiner and read back after a restart`, { timeout: 120_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'dabba-largest-durable-'));
    try {
      const key = patterned(resolved.keyBytesMax, 5);
      const value = patterned(resolved.valueBytesMax, 6);
      const first = createChain({ replicas: 2, dataDir, ...options });
      await first.put(key, value);
      // More of the largest writes: batches at the size limit, the largest records a segment holds.
      await first.putMany(Array.from({ length: 3 }, (_, index) => [patterned(resolved.keyBytesMax, 10 + index), value] as [Buffer, Buffer]));
      await first.addReplica(); // its log starts with a checkpoint holding the entry
      await first.close();
      const second = createChain({ dataDir, ...options });
      try {
        assert.equal(second.members().length, 3);
        assert.ok((await second.get(key))?.equals(value), 'read back after the restart');
        assert.ok((await second.get(patterned(resolved.keyBytesMax, 12)))?.equals(value));
        // Every replica answers (so has opened its log) before its counters are read.
        await assertIdentical(second);
        assert.deepEqual(second.stats().replicas.map((replica) => replica.recoveredSeq), [4, 4, 4], 'every replica recovered all four writes');
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
}
