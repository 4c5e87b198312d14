/**
 * The package as users get it: plain JavaScript importing 'dabba' resolves through package.json
 * "exports" to the compiled build (dist/, built by `npm run build`, which npm test runs first), and
 * the packed tarball installed into a fresh project runs `npx dabba bench`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

test('the packed tarball, installed without devDependencies into a fresh project, runs `npx dabba bench` and writes nothing into that project', async () => {
  const run = promisify(execFile);
  const scratch = mkdtempSync(join(tmpdir(), 'dabba-package-'));
  try {
    // dist/ is built (npm test builds first), so the tarball skips the prepare script's build.
    const [packed] = JSON.parse((await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', scratch], { timeout: 60_000 })).stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const shipped = new Set(packed!.files.map(({ path }) => path.split('/').slice(0, path.startsWith('dist/') ? 2 : 1).join('/')));
    assert.deepEqual([...shipped].sort(), ['LICENSE', 'README.md', 'dist/native-free-core', 'dist/src', 'dist/workers', 'native-free-core', 'package.json']);

    const project = join(scratch, 'project');
    const temp = join(scratch, 'tmp');
    mkdirSync(project);
    mkdirSync(temp);
    writeFileSync(join(project, 'package.json'), `${JSON.stringify({ name: 'dabba-install-check', private: true })}\n`);
    // The project is a git repository of its own: dabba bench must not record its commit as dabba's.
    await run('git', ['init', '-q'], { cwd: project });
    await run('git', ['-c', 'user.name=check', '-c', 'user.email=check@localhost', 'commit', '-q', '--allow-empty', '-m', 'project'], { cwd: project });
    // No dependency's install script is needed (the repository's allowScripts denies the only ones);
    // --prefer-offline takes what the local npm cache holds and fetches the rest from the registry.
    const install = ['install', '--omit=dev', '--no-audit', '--no-fund', '--ignore-scripts', '--prefer-offline', join(scratch, packed!.filename)];
    await run('npm', install, { cwd: project, timeout: 120_000 });
    const installed = readdirSync(project).sort();
    assert.deepEqual(installed, ['.git', 'node_modules', 'package-lock.json', 'package.json']);
    assert.equal(readdirSync(join(project, 'node_modules')).includes('redis'), false, 'a devDependency was installed');

    // --no: the dabba just installed, never one fetched from the registry. TMPDIR: where results go by default.
    const env = { ...process.env, TMPDIR: temp };
    const plain = await run('npx', ['--no', 'dabba', 'bench', '--seconds', '1'], { cwd: project, env, timeout: 60_000 });
    assert.match(plain.stdout, /dabba \(3 replicas\)\s+[\d.]+ [kM]\/s/);
    const resultsFile = /results appended to (\S+)\n$/.exec(plain.stdout)?.[1];
    assert.ok(resultsFile !== undefined && resultsFile.startsWith(`${temp}/dabba-bench-`), plain.stdout);
    const recorded = JSON.parse(readFileSync(resultsFile, 'utf8'));
    assert.equal(recorded.suite, 'scenario');
    assert.equal(recorded.commit, 'unknown');

    // The naive peer's worker ships; the Redis peer's client does not, and is named with its version.
    const peers = await run('npx', ['--no', 'dabba', 'bench', '--seconds', '0.5', '--peers', 'naive,redis', '--json'], { cwd: project, env, timeout: 60_000 });
    const summary = JSON.parse(peers.stdout);
    assert.deepEqual(summary.rows.map((row: { system: string }) => row.system), ['dabba (3 replicas)', 'naive postMessage chain (3)']);
    assert.deepEqual(summary.skipped, ['redis + 2 replicas, WAIT 2 0']);
    assert.match(peers.stderr, /^skipping redis \+ 2 replicas, WAIT 2 0: the npm package redis is missing \(install: npm install redis@6\.3\.1\)$/m);

    assert.deepEqual(readdirSync(project).sort(), installed);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});
