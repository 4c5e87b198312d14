/**
 * The package as users get it: plain JavaScript importing 'dabba' resolves through package.json
 * "exports" to the compiled build (dist/, built by `npm run build`, which npm test runs first).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { importOptional, MissingPackageError } from '../src/bench/peers/optional-package.js';
import { REDIS_CLIENT_PACKAGE } from '../src/bench/peers/redis.js';
import { SERVE_NODE_FLAGS } from '../src/host/node-flags.js';

test("plain JavaScript can import { createChain } from 'dabba' and use a chain", async () => {
  const script = `
    import { createChain, ErrorCode } from 'dabba';
    const chain = createChain({ replicas: 2 });
    await chain.put('greeting', 'namaste');
    const value = await chain.get('greeting');
    const rejected = await chain.put('', 'x').catch((error) => error.code);
    await chain.close();
    console.log(JSON.stringify({ value: value.toString(), rejected, closedCode: ErrorCode.closed }));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000 });
  assert.deepEqual(JSON.parse(stdout), { value: 'namaste', rejected: 'DABBA_ERR_KEY_EMPTY', closedCode: 'DABBA_ERR_CLOSED' });
});

test('package.json declares the compiled entry with types, a dabba bin, ESM and Node 20', () => {
  const manifest = JSON.parse(readFileSync('package.json', 'utf8'));
  assert.equal(manifest.name, 'dabba');
  assert.equal(manifest.type, 'module');
  assert.match(manifest.engines.node, /20/);
  assert.deepEqual(manifest.exports['.'], { types: './dist/src/index.d.ts', import: './dist/src/index.js' });
  assert.equal(manifest.bin.dabba, './dist/src/cli.js');
  // The bin starts node with the flags a host needs (src/host/node-flags.ts).
  assert.equal(readFileSync('dist/src/cli.js', 'utf8').split('\n')[0], `#!/usr/bin/env -S node ${SERVE_NODE_FLAGS.join(' ')}`);
  for (const range of [...Object.values(manifest.dependencies), ...Object.values(manifest.devDependencies)] as string[]) {
    assert.match(range, /^(npm:(@[^/]+\/)?[^@]+@)?\d+\.\d+\.\d+/, `pinned version, got ${range}`);
  }
});

test('a peer\'s client package is loaded on demand: its pinned version is the devDependency, and a missing one names what to install', async () => {
  const manifest = JSON.parse(readFileSync('package.json', 'utf8'));
  assert.equal(manifest.devDependencies[REDIS_CLIENT_PACKAGE.name], REDIS_CLIENT_PACKAGE.version);
  assert.equal(manifest.dependencies[REDIS_CLIENT_PACKAGE.name], undefined);
  // A variable specifier, so the compiler does not look for the package.
  const absent = 'dabba-test-no-such-package';
  await assert.rejects(importOptional({ name: absent, version: '1.2.3' }, () => import(absent)), (error: unknown) => {
    assert.ok(error instanceof MissingPackageError);
    assert.equal(error.installCommand, `npm install ${absent}@1.2.3`);
    return true;
  });
  // Any other failure is not a missing package.
  const broken = new Error('broken');
  await assert.rejects(importOptional(REDIS_CLIENT_PACKAGE, () => Promise.reject(broken)), (error) => error === broken);
});
