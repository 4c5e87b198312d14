/**
 * Sealed values (src/sealing.ts): the format by fixed bytes, every refusal of the Sealer, the layer
 * over a real in-process chain (round trip, rotation, reseal, size limit), and the remote client
 * against a real `dabba serve` host, whose HTTP API shows what its replica holds.
 *
 * What a replica holds is read without the sealing layer: in one process through the chain's own
 * read pipeline (a private field, reached on purpose: it returns the tail's stored bytes as they
 * are), across hosts through the host's HTTP API (which reads the tail's store and seals nothing).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { DabbaError, ErrorCode, isDabbaError } from '../native-free-core/errors.js';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { connect } from '../src/client/remote-client.js';
import { startHost, type DabbaHost } from '../src/host/host.js';
import { createChain, type Chain } from '../src/index.js';
import type { ReadPipeline } from '../src/read-pipeline.js';
import { SEAL_OVERHEAD_BYTES, SEALED_FORMAT, Sealer, type SealingOptions } from '../src/sealing.js';
import type { WritePipeline } from '../src/write-pipeline.js';

const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url));
const KEY_1 = Buffer.from(Array.from({ length: 32 }, (_, index) => index));
const KEY_2 = Buffer.alloc(32, 0x42);
const SEALING_1: SealingOptions = { keys: { 1: KEY_1 }, current: 1 };
const SEALING_1_2: SealingOptions = { keys: { 1: KEY_1, 2: KEY_2 }, current: 2 };
const LIMITS = { valueBytesMax: 4096 };
/** Long and distinctive, so finding it in stored bytes by accident is out of the question. */
const PLAINTEXT = 'Asha lives at 42 Marine Drive, Mumbai';

function isCorrupt(key: string): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isDabbaError(error, ErrorCode.corrupt), `expected DABBA_ERR_CORRUPT, got ${String(error)}`);
    assert.ok(error.message.includes(JSON.stringify(key)), `the message names the key: ${error.message}`);
    return true;
  };
}

function isCoded(code: ErrorCode, type: typeof TypeError | typeof RangeError | typeof DabbaError): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof type, `expected a ${type.name}, got ${String(error)}`);
    assert.equal((error as { code?: unknown }).code, code, String(error));
    return true;
  };
}

function containsBytes(haystack: Uint8Array, needle: string): boolean {
  return Buffer.from(haystack).includes(Buffer.from(needle, 'utf8'));
}

describe('Sealer: the format and its refusals', () => {
  test('a sealed value made from fixed bytes opens: the layout and the associated data are pinned', () => {
    // Built independently with node:crypto: key bytes 0..31 as version 7, nonce a0..ab, key
    // "user:1", plaintext "Asha"; associated data = the 5 header bytes then the key, in one piece.
    const golden = Buffer.from('da07000000a0a1a2a3a4a5a6a7a8a9aaaba76b144c95c0bb5c70e25eab18508dca2887beff', 'hex');
    const sealer = new Sealer({ keys: { 7: KEY_1 }, current: 7 }, LIMITS);
    assert.equal(sealer.open('user:1', golden).toString(), 'Asha');
    assert.equal(sealer.versionOf(golden), 7);
    assert.equal(golden.length, 'Asha'.length + SEAL_OVERHEAD_BYTES);
    assert.throws(() => sealer.open('user:2', golden), isCorrupt('user:2'));
  });

  test('seal writes the format byte, the version (uint32 LE) and a fresh nonce; it is 33 bytes longer; it opens', () => {
    const sealer = new Sealer({ keys: { 0x01020304: KEY_1 }, current: 0x01020304 }, LIMITS);
    const first = sealer.seal('k', PLAINTEXT);
    const second = sealer.seal('k', PLAINTEXT);
    assert.equal(SEAL_OVERHEAD_BYTES, 33);
    assert.equal(first.length, Buffer.byteLength(PLAINTEXT) + SEAL_OVERHEAD_BYTES);
    assert.deepEqual([...first.subarray(0, 5)], [SEALED_FORMAT, 0x04, 0x03, 0x02, 0x01]);
    assert.notDeepEqual(first.subarray(5, 17), second.subarray(5, 17), 'every seal draws a new nonce');
    assert.notDeepEqual(first.subarray(17), second.subarray(17));
    assert.ok(!containsBytes(first, PLAINTEXT));
    assert.equal(sealer.open('k', first).toString(), PLAINTEXT);
    assert.equal(sealer.open('k', second).toString(), PLAINTEXT);
    assert.equal(sealer.open('k', sealer.seal('k', '')).length, 0, 'an empty value seals and opens');
    assert.equal(sealer.open('नमस्ते', sealer.seal('नमस्ते', 'डब्बा')).toString(), 'डब्बा');
    const byteKey = new Uint8Array([0, 1, 255]);
    assert.deepEqual([...sealer.open(byteKey, sealer.seal(byteKey, new Uint8Array([9, 8, 7])))], [9, 8, 7]);
    // A string key and its UTF-8 bytes are the same key.
    assert.equal(sealer.open(Buffer.from('k'), first).toString(), PLAINTEXT);
  });

  test('any flipped byte (format, version, nonce, ciphertext, tag) fails to open with DABBA_ERR_CORRUPT naming the key', () => {
    const sealer = new Sealer(SEALING_1, LIMITS);
    const sealed = sealer.seal('user:1', 'Asha');
    for (let index = 0; index < sealed.length; index++) {
      const tampered = Buffer.from(sealed);
      tampered[index]! ^= 0x01;
      assert.throws(() => sealer.open('user:1', tampered), isCorrupt('user:1'), `byte ${index} flipped`);
    }
    assert.throws(() => sealer.open('user:1', sealed.subarray(0, sealed.length - 1)), isCorrupt('user:1'), 'a truncated tag');
  });

  test('a sealed value copied to another key fails to open', () => {
    const sealer = new Sealer(SEALING_1, LIMITS);
    const sealed = sealer.seal('user:1', 'Asha');
    assert.throws(() => sealer.open('user:2', sealed), isCorrupt('user:2'));
    assert.throws(() => sealer.open('user:1\0', sealed), isCorrupt('user:1\0'), 'the key is bound whole, not as a prefix');
  });

  test('a sealed value re-labelled with another key version fails to open', () => {
    // Both keys are held: the relabelled value opens under key 2's AES key with version 2 in its
    // associated data, and must still fail.
    const sealer = new Sealer({ keys: { 1: KEY_1, 2: KEY_1 }, current: 1 }, LIMITS);
    const sealed = Buffer.from(sealer.seal('user:1', 'Asha'));
    sealed.writeUInt32LE(2, 1);
    assert.equal(sealer.versionOf(sealed), 2);
    assert.throws(() => sealer.open('user:1', sealed), isCorrupt('user:1'));
  });

  test('a value sealed under a version this sealer does not hold, or under another key, fails to open', () => {
    const sealed = new Sealer(SEALING_1, LIMITS).seal('user:1', 'Asha');
    assert.throws(() => new Sealer({ keys: { 2: KEY_2 }, current: 2 }, LIMITS).open('user:1', sealed), (error: unknown) => {
      assert.ok(isDabbaError(error, ErrorCode.corrupt));
      assert.match(error.message, /key version 1, which is not among/);
      return true;
    });
    assert.throws(() => new Sealer({ keys: { 1: KEY_2 }, current: 1 }, LIMITS).open('user:1', sealed), isCorrupt('user:1'), 'the wrong key for version 1');
  });

  test('bytes that are not a sealed value fail to open (never returned as they are)', () => {
    const sealer = new Sealer(SEALING_1, LIMITS);
    for (const stored of [Buffer.from(PLAINTEXT), Buffer.alloc(0), Buffer.alloc(SEAL_OVERHEAD_BYTES - 1, SEALED_FORMAT), Buffer.alloc(64, SEALED_FORMAT)]) {
      assert.throws(() => sealer.open('user:1', stored), isCorrupt('user:1'), `${stored.length} bytes`);
    }
    const longKey = 'k'.repeat(500);
    assert.throws(() => sealer.open(longKey, Buffer.from('x')), (error: unknown) => {
      assert.ok(isDabbaError(error, ErrorCode.corrupt));
      assert.match(error.message, /\(500 characters\)/, 'a long key is cut in the message');
      return true;
    });
    assert.throws(() => sealer.open(new Uint8Array([0xca, 0xfe]), Buffer.from('x')), /key 0xcafe/);
  });

  test('the largest plaintext is valueBytesMax - SEAL_OVERHEAD_BYTES; one byte more is refused, naming the overhead', () => {
    const sealer = new Sealer(SEALING_1, LIMITS);
    assert.equal(sealer.plaintextBytesMax, LIMITS.valueBytesMax - SEAL_OVERHEAD_BYTES);
    const largest = Buffer.alloc(sealer.plaintextBytesMax, 7);
    const sealed = sealer.seal('k', largest);
    assert.equal(sealed.length, LIMITS.valueBytesMax);
    assert.deepEqual(sealer.open('k', sealed), largest);
    assert.throws(() => sealer.seal('k', Buffer.alloc(sealer.plaintextBytesMax + 1)), (error: unknown) => {
      assert.ok(isDabbaError(error, ErrorCode.valueTooLarge));
      assert.match(error.message, /sealing overhead \(33 bytes\)/);
      return true;
    });
  });

  test('options are validated with coded TypeError/RangeError', () => {
    const bad: Array<[unknown, ErrorCode, typeof TypeError | typeof RangeError]> = [
      [null, ErrorCode.invalidArgument, TypeError],
      ['keys', ErrorCode.invalidArgument, TypeError],
      [{ current: 1 }, ErrorCode.invalidArgument, TypeError],
      [{ keys: [KEY_1], current: 0 }, ErrorCode.invalidArgument, TypeError],
      [{ keys: new Map([[1, KEY_1]]), current: 1 }, ErrorCode.invalidArgument, TypeError],
      [{ keys: {}, current: 1 }, ErrorCode.outOfRange, RangeError],
      [{ keys: { 1: 'a string of 32 characters, not!!' }, current: 1 }, ErrorCode.invalidArgument, TypeError],
      [{ keys: { 1: Buffer.alloc(16) }, current: 1 }, ErrorCode.outOfRange, RangeError],
      [{ keys: { 1: Buffer.alloc(33) }, current: 1 }, ErrorCode.outOfRange, RangeError],
      [{ keys: { 0: KEY_1 }, current: 0 }, ErrorCode.outOfRange, RangeError],
      [{ keys: { '-1': KEY_1 }, current: 1 }, ErrorCode.outOfRange, RangeError],
      [{ keys: { 4294967296: KEY_1 }, current: 1 }, ErrorCode.outOfRange, RangeError],
      [{ keys: { '1.5': KEY_1 }, current: 1 }, ErrorCode.invalidArgument, TypeError],
      [{ keys: { '01': KEY_1 }, current: 1 }, ErrorCode.invalidArgument, TypeError],
      [{ keys: { v1: KEY_1 }, current: 1 }, ErrorCode.invalidArgument, TypeError],
      [{ keys: { 1: KEY_1 }, current: '1' }, ErrorCode.invalidArgument, TypeError],
      [{ keys: { 1: KEY_1 }, current: 1.5 }, ErrorCode.invalidArgument, TypeError],
      [{ keys: { 1: KEY_1 }, current: 2 }, ErrorCode.outOfRange, RangeError],
      [{ keys: { 1: KEY_1 }, current: 2 ** 32 }, ErrorCode.outOfRange, RangeError],
    ];
    for (const [options, code, type] of bad) {
      assert.throws(() => new Sealer(options as SealingOptions, LIMITS), isCoded(code, type), JSON.stringify(options));
    }
    assert.throws(() => new Sealer(SEALING_1, { valueBytesMax: SEAL_OVERHEAD_BYTES - 1 }), isCoded(ErrorCode.outOfRange, RangeError));
    assert.equal(new Sealer(SEALING_1, { valueBytesMax: SEAL_OVERHEAD_BYTES }).plaintextBytesMax, 0);
    assert.equal(new Sealer({ keys: { 4294967295: KEY_1 }, current: 4294967295 }, LIMITS).currentVersion, 2 ** 32 - 1);
    // The keys are copied: changing the caller's buffer afterwards changes nothing.
    const mutable = Buffer.from(KEY_1);
    const sealer = new Sealer({ keys: { 1: mutable }, current: 1 }, LIMITS);
    const sealed = sealer.seal('k', 'v');
    mutable.fill(0);
    assert.equal(sealer.open('k', sealed).toString(), 'v');
    const typeRefused = new Sealer(SEALING_1, LIMITS);
    assert.throws(() => typeRefused.seal(42 as unknown as string, 'v'), isCoded(ErrorCode.invalidArgument, TypeError));
    assert.throws(() => typeRefused.seal('k', null as unknown as string), isCoded(ErrorCode.invalidArgument, TypeError));
  });
});

describe('createChain({ sealing })', () => {
  const chains: Chain[] = [];
  after(async () => {
    await Promise.all(chains.map((chain) => chain.close()));
  });
  function sealedChain(sealing: SealingOptions, valueBytesMax = 4096): Chain {
    const chain = createChain({ replicas: 2, valueBytesMax, sealing });
    chains.push(chain);
    return chain;
  }
  /** The chain's session's read and write pipelines, under the sealing layer: the stored bytes as they are. */
  function rawSide(chain: Chain): { reads: ReadPipeline; writes: WritePipeline } {
    // One chain: the router's only session.
    return (chain as unknown as { session: { sessions: Array<{ reads: ReadPipeline; writes: WritePipeline }> } }).session.sessions[0]!;
  }

  test('round trip: put, putMany, get, getVersioned, delete, bytes and UTF-8; the tail holds only sealed bytes', async () => {
    const chain = sealedChain(SEALING_1);
    await chain.put('user:1', PLAINTEXT);
    assert.equal((await chain.get('user:1'))?.toString(), PLAINTEXT);
    const stored = await rawSide(chain).reads.get('user:1');
    assert.ok(stored !== undefined);
    assert.equal(stored.value.length, Buffer.byteLength(PLAINTEXT) + SEAL_OVERHEAD_BYTES);
    assert.equal(stored.value[0], SEALED_FORMAT);
    assert.ok(!containsBytes(stored.value, PLAINTEXT), 'no plaintext in the stored value');
    assert.equal(new Sealer(SEALING_1, { valueBytesMax: 4096 }).open('user:1', stored.value).toString(), PLAINTEXT);

    await chain.put(new Uint8Array([0, 1, 255]), new Uint8Array([9, 8, 7]));
    assert.deepEqual([...(await chain.get(new Uint8Array([0, 1, 255])))!], [9, 8, 7]);
    await chain.put('नमस्ते', 'डब्बा');
    assert.equal((await chain.get('नमस्ते'))?.toString(), 'डब्बा');
    await chain.put('empty', '');
    assert.equal((await chain.get('empty'))?.length, 0);
    await chain.putMany([
      ['a', '1'],
      ['b', '2'],
      ['a', '3'],
    ]);
    assert.equal((await chain.get('a'))?.toString(), '3');
    const first = await chain.getVersioned('a');
    await chain.put('a', '4');
    const second = await chain.getVersioned('a');
    assert.equal(second?.value.toString(), '4');
    assert.ok(second!.version > first!.version);
    await chain.delete('a');
    assert.equal(await chain.get('a'), undefined);
    assert.equal(await chain.get('never-written'), undefined);

    // A refused entry of putMany rejects the call; the others are written, sealed.
    await assert.rejects(chain.putMany([['c', 'x'], ['too-large', Buffer.alloc(4096)], ['d', 'y']]), isCoded(ErrorCode.valueTooLarge, DabbaError));
    await chain.whenIdle();
    assert.equal((await chain.get('c'))?.toString(), 'x');
    assert.equal((await chain.get('d'))?.toString(), 'y');
    assert.equal(await chain.get('too-large'), undefined);
    await assert.rejects(chain.put(7 as unknown as string, 'v'), isCoded(ErrorCode.invalidArgument, TypeError));
    await assert.rejects(chain.put('', 'v'), isCoded(ErrorCode.keyEmpty, DabbaError));

    // Stored bytes that do not open (written under the layer: tampered, or never sealed) reject the read.
    const tampered = Buffer.from(stored.value);
    tampered[20]! ^= 0x80;
    await rawSide(chain).writes.put('user:1', tampered);
    await assert.rejects(chain.get('user:1'), isCorrupt('user:1'));
    await rawSide(chain).writes.put('plain', PLAINTEXT);
    await assert.rejects(chain.getVersioned('plain'), isCorrupt('plain'));
    await chain.close();
  });

  test('rotation keeps old values readable; reseal moves them to the current version; then the old key can go', async () => {
    const chain = sealedChain(SEALING_1);
    const keys = Array.from({ length: 300 }, (_, index) => `key-${index}`);
    await chain.putMany(keys.map((key) => [key, `${PLAINTEXT} #${key}`]));
    const sealer = new Sealer(SEALING_1_2, { valueBytesMax: 4096 });
    const storedVersion = async (key: string): Promise<number | null> => sealer.versionOf((await rawSide(chain).reads.get(key))!.value);
    assert.equal(await storedVersion('key-0'), 1);

    chain.setSealingKeys(SEALING_1_2);
    await chain.put('key-0', 'rewritten after the rotation');
    assert.equal(await storedVersion('key-0'), 2, 'new writes use the current version');
    assert.equal(await storedVersion('key-1'), 1);
    assert.equal((await chain.get('key-1'))?.toString(), `${PLAINTEXT} #key-1`, 'an old value opens with its version key');

    // key-299 is left out of the reseal on purpose; 'absent' was never written.
    const report = await chain.reseal([...keys.slice(0, 299), 'absent']);
    assert.deepEqual(report, { examined: 300, resealed: 298, current: 1, absent: 1 });
    for (const key of keys.slice(0, 299)) assert.equal(await storedVersion(key), 2, key);
    assert.equal(await storedVersion('key-299'), 1);
    assert.deepEqual(await chain.reseal(keys.slice(0, 10)), { examined: 10, resealed: 0, current: 10, absent: 0 }, 'a second reseal writes nothing');

    // Retire key version 1: what was resealed still opens, what was not no longer does.
    chain.setSealingKeys({ keys: { 2: KEY_2 }, current: 2 });
    assert.equal((await chain.get('key-1'))?.toString(), `${PLAINTEXT} #key-1`);
    assert.equal((await chain.get('key-0'))?.toString(), 'rewritten after the rotation');
    await assert.rejects(chain.get('key-299'), isCorrupt('key-299'));
    // reseal stops at a value it cannot open, after writing back those before it.
    chain.setSealingKeys({ keys: { 2: KEY_2, 3: KEY_1 }, current: 3 });
    await assert.rejects(chain.reseal(['key-1', 'key-299', 'key-2']), isCorrupt('key-299'));
    assert.equal(await storedVersion('key-1'), 3);
    assert.equal(await storedVersion('key-2'), 2);
    // A refused key set leaves the old one in place.
    assert.throws(() => chain.setSealingKeys({ keys: { 4: KEY_1 }, current: 5 }), isCoded(ErrorCode.outOfRange, RangeError));
    assert.equal((await chain.get('key-1'))?.toString(), `${PLAINTEXT} #key-1`);
    await chain.close();
    await assert.rejects(chain.reseal(['key-1']), isCoded(ErrorCode.closed, DabbaError));
  });

  test('the largest legal plaintext (valueBytesMax - overhead) round-trips; one byte more is refused naming the overhead', async () => {
    const valueBytesMax = 2048;
    const chain = sealedChain(SEALING_1, valueBytesMax);
    const largest = Buffer.alloc(valueBytesMax - SEAL_OVERHEAD_BYTES, 0x61);
    await chain.put('largest', largest);
    assert.deepEqual(await chain.get('largest'), largest);
    assert.equal((await rawSide(chain).reads.get('largest'))?.value.length, valueBytesMax);
    await assert.rejects(chain.put('larger', Buffer.alloc(largest.length + 1)), (error: unknown) => {
      assert.ok(isDabbaError(error, ErrorCode.valueTooLarge));
      assert.match(error.message, /valueBytesMax \(2048\) less the sealing overhead \(33 bytes\)/);
      return true;
    });
    // Strings count in UTF-8 bytes: 'न' is 3.
    await assert.rejects(chain.put('larger', 'न'.repeat(Math.floor(largest.length / 3) + 1)), isCoded(ErrorCode.valueTooLarge, DabbaError));
    await chain.close();
  });

  test('options are validated before any thread starts, with coded errors; sealing calls on an unsealed chain are refused', async () => {
    assert.throws(() => createChain({ sealing: { keys: { 1: Buffer.alloc(31) }, current: 1 } }), isCoded(ErrorCode.outOfRange, RangeError));
    assert.throws(() => createChain({ sealing: { keys: { 1: KEY_1 }, current: 2 } }), isCoded(ErrorCode.outOfRange, RangeError));
    assert.throws(() => createChain({ sealing: { keys: { x: KEY_1 } as unknown as SealingOptions['keys'], current: 1 } }), isCoded(ErrorCode.invalidArgument, TypeError));
    assert.throws(() => createChain({ valueBytesMax: 32, sealing: SEALING_1 }), isCoded(ErrorCode.outOfRange, RangeError));
    const unsealed = createChain({ replicas: 1 });
    chains.push(unsealed);
    await assert.rejects(unsealed.reseal(['k']), isCoded(ErrorCode.invalidArgument, DabbaError));
    assert.throws(() => unsealed.setSealingKeys(SEALING_1), isCoded(ErrorCode.invalidArgument, DabbaError));
    await unsealed.close();
  });
});

describe('connect({ sealing }) to a dabba serve host', () => {
  const SECRET = Buffer.from('sealing-test-secret-0123456789');
  const servers = new LocalServers('sealing-test');
  let etcd: string[];
  let host: DabbaHost | null = null;

  before(async () => {
    etcd = (await startEtcdCluster(servers, 1)).clientUrls;
  });
  after(async () => {
    try {
      await host?.close();
    } finally {
      await servers.stop(1000);
    }
  });

  test('values are sealed in the client: the host holds sealed bytes; a value the host stored unsealed fails to open', async () => {
    host = await startHost({ hostId: 'sealing-solo', port: 0, etcd, etcdPrefix: '/sealing-test/', peerSecret: Buffer.from('sealing-test-peer-secret-0123456789'), clientSecret: SECRET, master: true, log: () => undefined });
    if (host.roleIn() !== 'solo') await once(host, 'configured');
    const http = host.url.replace('ws://', 'http://');
    const client = await connect({ hosts: [host.url], secret: SECRET, sealing: SEALING_1 });
    const plain = await connect({ hosts: [host.url], secret: SECRET });
    try {
      await client.put('user:1', PLAINTEXT);
      assert.equal((await client.get('user:1'))?.toString(), PLAINTEXT);
      // The host's HTTP API reads its replica's store and seals nothing: it shows what the host holds.
      const response = await fetch(`${http}/kv/user%3A1`);
      assert.equal(response.status, 200);
      const stored = Buffer.from(await response.arrayBuffer());
      assert.equal(stored[0], SEALED_FORMAT);
      assert.ok(!containsBytes(stored, PLAINTEXT), 'no plaintext on the host');
      assert.equal(new Sealer(SEALING_1, LIMITS).open('user:1', stored).toString(), PLAINTEXT);
      assert.deepEqual(await plain.get('user:1'), stored, 'a client without keys sees the sealed bytes');

      await client.putMany([['a', '1'], ['b', '2']]);
      assert.equal((await client.getVersioned('b'))?.value.toString(), '2');
      assert.equal((await fetch(`${http}/kv/a`, { method: 'PUT', body: 'unsealed' })).status, 204);
      await assert.rejects(client.get('a'), isCorrupt('a'));

      client.setSealingKeys(SEALING_1_2);
      assert.deepEqual(await client.reseal(['user:1', 'b', 'missing']), { examined: 3, resealed: 2, current: 0, absent: 1 });
      assert.equal(new Sealer(SEALING_1_2, LIMITS).versionOf((await plain.get('user:1'))!), 2);
      assert.equal((await client.get('user:1'))?.toString(), PLAINTEXT);
      await assert.rejects(plain.reseal(['user:1']), isCoded(ErrorCode.invalidArgument, DabbaError));
    } finally {
      await Promise.all([client.close(), plain.close()]);
    }
  });

  test('dabba reseal rewrites the values still sealed under an older version, named in a keys file', async () => {
    assert.ok(host !== null, 'the test above started the host');
    const old = await connect({ hosts: [host.url], secret: SECRET, sealing: SEALING_1 });
    for (let index = 0; index < 5; index++) await old.put(`reseal-${index}`, `value ${index}`);
    await old.close();
    const directory = mkdtempSync(join(tmpdir(), 'dabba-reseal-'));
    const keysFile = join(directory, 'keys.txt');
    const sealingKeys = join(directory, 'sealing.json');
    writeFileSync(keysFile, [...Array.from({ length: 5 }, (_, index) => `reseal-${index}`), 'reseal-absent'].join('\n'));
    writeFileSync(sealingKeys, JSON.stringify({ current: 2, keys: { 1: KEY_1.toString('base64'), 2: KEY_2.toString('base64') } }));
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'reseal', '--hosts', host.url, '--sealing-keys', sealingKeys, '--keys-file', keysFile], {
      env: { ...process.env, DABBA_CLIENT_SECRET: SECRET.toString() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, stderr);
    assert.deepEqual(JSON.parse(stdout), { examined: 6, resealed: 5, current: 0, absent: 1 });
    // Version 1 can go now: a client holding only version 2 reads every value.
    const current = await connect({ hosts: [host.url], secret: SECRET, sealing: { keys: { 2: KEY_2 }, current: 2 } });
    for (let index = 0; index < 5; index++) assert.equal((await current.get(`reseal-${index}`))?.toString(), `value ${index}`);
    await current.close();
  });

  test('sealing is refused inside connect()\'s chain options and in a host\'s: hosts never hold keys', async () => {
    const misplaced = { hosts: ['ws://127.0.0.1:1'], secret: SECRET, chain: { sealing: SEALING_1 } } as unknown as Parameters<typeof connect>[0];
    await assert.rejects(connect(misplaced), isCoded(ErrorCode.invalidArgument, TypeError));
    await assert.rejects(connect({ hosts: ['ws://127.0.0.1:1'], secret: SECRET, sealing: { keys: { 1: KEY_1 }, current: 3 } }), isCoded(ErrorCode.outOfRange, RangeError));
    const hostOptions = { hostId: 'keyed', port: 0, etcd, peerSecret: Buffer.from('sealing-test-peer-secret-0123456789'), clientSecret: SECRET, log: () => undefined, chain: { sealing: SEALING_1 } } as unknown as Parameters<typeof startHost>[0];
    await assert.rejects(async () => startHost(hostOptions), isCoded(ErrorCode.invalidArgument, TypeError));
  });
});
