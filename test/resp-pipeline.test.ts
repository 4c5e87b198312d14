/**
 * The benchmark's minimal Redis connection: replies are counted correctly however TCP splits them,
 * the last reply is returned, and an error reply rejects the window.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { test } from 'node:test';
import { RespPipeline, respCommand } from '../src/bench/peers/resp-pipeline.js';

test('replies split across chunks anywhere are counted once each; errors reject', async () => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const accepted = once(server, 'connection');
  const pipeline = await RespPipeline.open('127.0.0.1', port);
  const [peer] = (await accepted) as [Socket];
  try {
    assert.deepEqual(respCommand(['SET', 'k', new Uint8Array([1, 2])]), Buffer.from('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\x01\x02\r\n', 'latin1'));
    const replies = '+OK\r\n'.repeat(3) + ':2\r\n';
    // Every split point, including between \r and \n.
    for (let cut = 1; cut < replies.length; cut++) {
      const window = pipeline.send(Buffer.from('ignored'), 4);
      // Two writes, the second after the first has been flushed: two segments on loopback.
      await new Promise<void>((resolve) => peer.write(replies.slice(0, cut), () => resolve()));
      peer.write(replies.slice(cut));
      assert.equal(await window, ':2', `split at ${cut}`);
    }
    const failing = pipeline.send(Buffer.from('ignored'), 2);
    peer.write('+OK\r\n-ERR out of memory\r\n');
    await assert.rejects(failing, /redis replied -ERR out of memory/);
  } finally {
    pipeline.close();
    peer.destroy();
    server.close();
  }
});
