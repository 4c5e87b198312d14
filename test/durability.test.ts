/**
 * Durable chains in one process (issue 13): createChain({ dataDir, durability }). A chain closed
 * and opened again, or killed with SIGKILL under load and opened again, holds every write that was
 * acknowledged, with equal digests on every replica; a replica added online logs its snapshot and
 * is restarted with the others; a replica whose log is damaged does not start, naming the file and
 * offset, and the chain goes on without it; the options and the directory are checked.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { createChain, type Chain, type ChainOptions, type ReconfigurationEvent } from '../src/index.js';

const directories: string[] = [];
after(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function dataDirectory(): string {
  const directory = mkdtempSync(join(tmpdir(), 'dabba-durable-'));
  directories.push(directory);
  return directory;
}

async function writeKeys(chain: Chain, from: number, count: number, prefix = 'k'): Promise<void> {
  for (let start = from; start < from + count; start += 10_000) {
    const writes: Array<Promise<unknown>> = [];
    for (let index = start; index < Math.min(from + count, start + 10_000); index++) writes.push(chain.put(`${prefix}${index}`, `value ${index}`));
    await Promise.all(writes);
  }
}

/** Every chain's replicas hold the same state, and `keys` keys in all. */
async function assertIdentical(chain: Chain, keys: number): Promise<void> {
  const digests = await chain.digests();
  const byChain = new Map<number, typeof digests>();
  for (const digest of digests) byChain.set(digest.chain, [...(byChain.get(digest.chain) ?? []), digest]);
  let total = 0;
  for (const [chainIndex, replicas] of byChain) {
    assert.equal(new Set(replicas.map((replica) => replica.digest)).size, 1, `chain ${chainIndex}: replicas hold the same state (${JSON.stringify(replicas)})`);
    total += replicas[0]!.keys;
  }
  assert.equal(total, keys);
}

describe('durable chains in one process', () => {
  test('options: dataDir and durability are checked against each other', () => {
    const directory = dataDirectory();
    assert.throws(() => createChain({ dataDir: directory, durability: 'memory' }), { code: 'DABBA_ERR_OUT_OF_RANGE', message: /keeps nothing on disk/ });
    assert.throws(() => createChain({ durability: 'fsync' }), { code: 'DABBA_ERR_OUT_OF_RANGE', message: /needs a dataDir/ });
    assert.throws(() => createChain({ dataDir: directory, durability: 'disk' as ChainOptions['durability'] }), { code: 'DABBA_ERR_INVALID_ARGUMENT', message: /durability must be one of memory, async, fsync/ });
    assert.throws(() => createChain({ dataDir: '' }), { code: 'DABBA_ERR_INVALID_ARGUMENT' });
    assert.throws(() => createChain({ dataDir: directory, durability: 'async', syncIntervalMs: 0 }), { code: 'DABBA_ERR_OUT_OF_RANGE' });
    assert.deepEqual(readdirSync(directory), [], 'nothing was written for a refused chain');
  });

  for (const durability of ['fsync', 'async'] as const) {
    test(`${durability}: closed and opened again, a chain holds every write, and takes new ones`, async () => {
      const directory = dataDirectory();
      const first = createChain({ dataDir: directory, durability, chains: 3, nodes: 4 });
      await writeKeys(first, 0, 30_000);
      await first.put('k7', 'overwritten');
      await first.delete('k8');
      const layout = first.layout();
      await first.close();

      const second = createChain({ dataDir: directory, durability, chains: 3 });
      try {
        assert.deepEqual(second.layout().map(({ members }) => members.map(({ node }) => node)), layout.map(({ members }) => members.map(({ node }) => node)), 'each chain restarts in its order');
        assert.equal((await second.get('k7'))?.toString(), 'overwritten');
        assert.equal(await second.get('k8'), undefined);
        assert.equal((await second.get('k29999'))?.toString(), 'value 29999');
        // New writes, from a client the logs never saw (a new generation): none is taken for a duplicate.
        await writeKeys(second, 30_000, 5_000);
        assert.equal((await second.get('k34999'))?.toString(), 'value 34999');
        await assertIdentical(second, 34_999);
        // Read once every replica has answered (so has opened its log).
        const recovered = second.stats().replicas.map((replica) => replica.recoveredSeq);
        assert.ok(recovered.every((seq) => seq > 0), `every replica of chain 0 recovered its log (${recovered})`);
      } finally {
        await second.close();
      }
    });
  }

  for (const durability of ['fsync', 'async'] as const) {
    test(`${durability}: after SIGKILL under load, every acknowledged write is there, on every replica`, async () => {
      const directory = dataDirectory();
      let acknowledged = new Set<number>();
      let next = 0;
      for (let round = 0; round < 2; round++) {
        const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/durable-writer.ts', directory, durability, '2', String(next)], { stdio: ['ignore', 'pipe', 'inherit'] });
        let buffered = '';
        const enough = 20_000 * (round + 1);
        await new Promise<void>((resolve, reject) => {
          child.once('exit', (code) => reject(new Error(`the writer exited (${code}) before it was killed`)));
          child.stdout.setEncoding('utf8').on('data', (text: string) => {
            buffered += text;
            const lines = buffered.split('\n');
            buffered = lines.pop()!;
            for (const line of lines) acknowledged.add(Number(line));
            if (acknowledged.size >= enough) resolve();
          });
        });
        child.removeAllListeners('exit');
        const exited = once(child, 'exit');
        child.kill('SIGKILL');
        await exited;
        // What was in the pipe when it died was acknowledged too.
        for (const line of buffered.split('\n')) if (line !== '') acknowledged.add(Number(line));
        next = Math.max(...acknowledged) + 10_000;
      }
      const chain = createChain({ dataDir: directory, durability, chains: 2 });
      try {
        const missing: number[] = [];
        const numbers = [...acknowledged];
        for (let start = 0; start < numbers.length; start += 10_000) {
          const slice = numbers.slice(start, start + 10_000);
          const values = await Promise.all(slice.map((number) => chain.get(`w${number}`)));
          values.forEach((value, index) => {
            if (value?.toString() !== `v${slice[index]}`) missing.push(slice[index]!);
          });
        }
        assert.deepEqual(missing.slice(0, 10), [], `${missing.length} of ${acknowledged.size} acknowledged writes are missing`);
        const digests = await chain.digests();
        for (const index of [0, 1]) {
          const replicas = digests.filter((digest) => digest.chain === index);
          assert.equal(new Set(replicas.map((replica) => replica.digest)).size, 1, `chain ${index}: every replica holds the same writes`);
        }
        acknowledged = new Set();
      } finally {
        await chain.close();
      }
    });
  }

  test('a replica added online logs its snapshot and restarts with the others; a removed one leaves no log', async () => {
    const directory = dataDirectory();
    const first = createChain({ dataDir: directory, replicas: 2 });
    await writeKeys(first, 0, 20_000);
    const added = await first.addReplica();
    await writeKeys(first, 20_000, 5_000);
    const gone = first.members()[0]!.id;
    await first.removeReplica(gone);
    await writeKeys(first, 25_000, 1_000);
    const members = first.members().map(({ id }) => id);
    assert.ok(members.includes(added));
    const joinedLog = join(directory, 'chain-0', `node-${added}`);
    assert.ok(readdirSync(joinedLog).some((name) => name.endsWith('.checkpoint')), 'the joiner checkpointed the snapshot it loaded');
    assert.deepEqual(readdirSync(join(directory, 'chain-0')).sort(), members.map((id) => `node-${id}`).sort(), 'the removed replica\'s log is gone');
    await first.close();

    const second = createChain({ dataDir: directory });
    try {
      assert.deepEqual(second.members().map(({ id }) => id), members);
      assert.equal((await second.get('k25999'))?.toString(), 'value 25999');
      assert.equal((await second.get('k0'))?.toString(), 'value 0');
      await assertIdentical(second, 26_000);
    } finally {
      await second.close();
    }
  });

  test('a replica whose log is damaged does not start, naming the file and the offset; the chain goes on without it', async () => {
    const directory = dataDirectory();
    const first = createChain({ dataDir: directory });
    await writeKeys(first, 0, 20_000);
    await first.close();
    const middle = join(directory, 'chain-0', 'node-2');
    const [segment] = readdirSync(middle).filter((name) => name.endsWith('.log'));
    const path = join(middle, segment!);
    const bytes = readFileSync(path);
    const offset = Math.floor(statSync(path).size / 3);
    bytes[offset]! ^= 0x10;
    writeFileSync(path, bytes);

    const second = createChain({ dataDir: directory });
    try {
      const [event] = (await once(second, 'reconfigured')) as [ReconfigurationEvent];
      assert.equal(event.removed, 2);
      // (A thread's error keeps its message across threads, not its class or code.)
      const cause = event.cause as { message?: string };
      assert.match(cause.message!, new RegExp(`log segment ${path.replaceAll('.', '\\.')} is damaged at offset \\d+`));
      assert.equal((await second.get('k19999'))?.toString(), 'value 19999');
      await second.put('after', 'damage');
      await assertIdentical(second, 20_001);
    } finally {
      await second.close();
    }
  });

  test('a head whose log lost its end (an async-mode machine crash) restarts behind the others: the longest log leads', async () => {
    const directory = dataDirectory();
    const first = createChain({ dataDir: directory, durability: 'async' });
    await writeKeys(first, 0, 20_000);
    await first.close();
    const head = join(directory, 'chain-0', 'node-1');
    const [segment] = readdirSync(head).filter((name) => name.endsWith('.log'));
    const path = join(head, segment!);
    truncateSync(path, statSync(path).size - 10_000); // its last batches, and a torn record
    const second = createChain({ dataDir: directory, durability: 'async' });
    try {
      assert.deepEqual(second.members().map(({ id }) => id), [2, 3, 1], 'the replicas with the whole log first');
      assert.equal((await second.get('k19999'))?.toString(), 'value 19999');
      await second.put('after', 'restart');
      await assertIdentical(second, 20_001);
    } finally {
      await second.close();
    }
  });

  test('a data directory is refused while in use, for another chain count, or if it is not one', async () => {
    const directory = dataDirectory();
    const chain = createChain({ dataDir: directory, chains: 2 });
    try {
      assert.throws(() => createChain({ dataDir: directory, chains: 2 }), { code: 'DABBA_ERR_INVALID_ARGUMENT', message: /in use/ });
    } finally {
      await chain.close();
    }
    assert.throws(() => createChain({ dataDir: directory, chains: 3 }), { code: 'DABBA_ERR_INVALID_ARGUMENT', message: /holds 2 chain\(s\), asked for 3/ });
    const other = dataDirectory();
    writeFileSync(join(other, 'notes.txt'), 'mine');
    assert.throws(() => createChain({ dataDir: other }), { code: 'DABBA_ERR_INVALID_ARGUMENT', message: /not a dabba data directory/ });
  });
});
