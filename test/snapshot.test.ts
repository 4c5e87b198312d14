/**
 * State transfer: a store cut into Snapshot frames a piece at a time by a fuzzy scan, while it keeps
 * taking writes, must load into an empty store, with those writes applied between the frames in
 * the order the tail sends them, as exactly the source's state. And the scan under it must reach every entry that lives through it untouched.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SnapshotView, SnapshotWriter } from '../native-free-core/chain/snapshot.js';
import { deriveLimits } from '../native-free-core/limits.js';
import { Store } from '../native-free-core/store.js';
import { mulberry32 } from './helpers/prng.js';

const text = new TextEncoder();

function put(store: Store, key: string, value: Uint8Array, version: number): void {
  const keyBytes = text.encode(key);
  store.put(keyBytes, 0, keyBytes.length, value, 0, value.length, version);
}

function remove(store: Store, key: string): void {
  const keyBytes = text.encode(key);
  store.delete(keyBytes, 0, keyBytes.length);
}

/** A store with deletions and values that outgrew their first place (so keys and values part). */
function populatedStore(keys: number, seed: number): Store {
  const random = mulberry32(seed);
  const store = new Store();
  let version = 1;
  for (let index = 0; index < keys; index++) put(store, `key-${index}`, new Uint8Array(1 + Math.floor(random() * 40)).fill(index), version++);
  for (let index = 0; index < keys; index += 7) put(store, `key-${index}`, new Uint8Array(200).fill(index + 1), version++);
  for (let index = 3; index < keys; index += 11) remove(store, `key-${index}`);
  return store;
}

function loadFrames(frames: Uint8Array[]): { store: Store; clients: Map<number, number>; view: SnapshotView } {
  const store = new Store();
  const clients = new Map<number, number>();
  const view = new SnapshotView();
  for (const frame of frames) {
    assert.equal(view.open(frame), null);
    view.applyTo(store, clients);
  }
  return { store, clients, view };
}

type Mutation = { kind: 'put'; key: string; value: Uint8Array; version: number } | { kind: 'delete'; key: string };

function applyMutation(store: Store, mutation: Mutation): void {
  if (mutation.kind === 'put') put(store, mutation.key, mutation.value, mutation.version);
  else remove(store, mutation.key);
}

/** Random writes over the same keys and some new ones, deletes included (they renumber entries). */
function randomMutations(random: () => number, keys: number, count: number, firstVersion: number): Mutation[] {
  const mutations: Mutation[] = [];
  for (let index = 0; index < count; index++) {
    const key = `key-${Math.floor(random() * keys * 1.2)}`;
    if (random() < 0.4) mutations.push({ kind: 'delete', key });
    else mutations.push({ kind: 'put', key, value: new Uint8Array(1 + Math.floor(random() * 300)).fill(index), version: firstVersion + index });
  }
  return mutations;
}

describe('StoreScan', () => {
  test('reaches every entry that lives through the scan untouched, whatever is deleted meanwhile', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const random = mulberry32(seed);
      const store = populatedStore(300, seed);
      const scan = store.scan();
      const touched = new Set<string>();
      const untouchedAtStart = new Set<string>();
      store.forEach((key) => untouchedAtStart.add(new TextDecoder().decode(key)));
      const seen = new Set<string>();
      const decoder = new TextDecoder();
      for (let entry = scan.peek(); entry >= 0; entry = scan.peek()) {
        const offset = store.keyOffset(entry);
        seen.add(decoder.decode(store.heap.subarray(offset, offset + store.keyLength(entry))));
        scan.advance();
        for (const mutation of randomMutations(random, 300, Math.floor(random() * 4), 10_000)) {
          applyMutation(store, mutation);
          touched.add(mutation.key);
        }
      }
      for (const key of untouchedAtStart) if (!touched.has(key)) assert.ok(seen.has(key), `seed ${seed}: the scan missed ${key}`);
      scan.close();
    }
  });
});

describe('StoreScan on small stores with many deletes', () => {
  test('entries queued for a revisit that move again are still reached (500 seeds)', () => {
    for (let seed = 1; seed <= 500; seed++) {
      const random = mulberry32(seed);
      const store = new Store();
      const keys = 4 + Math.floor(random() * 12);
      for (let index = 0; index < keys; index++) put(store, `key-${index}`, new Uint8Array([index]), index + 1);
      const atStart = new Set<string>();
      store.forEach((key) => atStart.add(new TextDecoder().decode(key)));
      const scan = store.scan();
      const touched = new Set<string>();
      const seen = new Set<string>();
      for (let entry = scan.peek(); entry >= 0; entry = scan.peek()) {
        const offset = store.keyOffset(entry);
        seen.add(new TextDecoder().decode(store.heap.subarray(offset, offset + store.keyLength(entry))));
        scan.advance();
        // Mostly deletes, so entries keep moving down into holes the scan has passed.
        for (let count = Math.floor(random() * 3); count > 0; count--) {
          const key = `key-${Math.floor(random() * keys * 1.5)}`;
          touched.add(key);
          if (random() < 0.7) remove(store, key);
          else put(store, key, new Uint8Array([9]), 100);
        }
      }
      for (const key of atStart) if (!touched.has(key)) assert.ok(seen.has(key), `seed ${seed}: the scan missed ${key}`);
      scan.close();
    }
  });
});

describe('SnapshotWriter', () => {
  test('frames of bounded size, the last marked last; loaded with the writes since in link order, they equal the source', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const random = mulberry32(seed);
      const source = populatedStore(2000, seed);
      const clientHighWater = new Map([
        [1, 40],
        [9, 7],
      ]);
      const writer = new SnapshotWriter({ store: source, epoch: 4, appliedSeq: 5000, clientHighWater }, 8192);
            // The source keeps taking writes while the snapshot is cut, as a tail does, and they follow
      // each frame on the link, as the tail forwards them: the joiner applies both in that order.
      const link: Array<Uint8Array | Mutation> = [];
      const frames: Uint8Array[] = [];
      let version = 6000;
      while (!writer.done) {
        const frame = writer.next().slice();
        frames.push(frame);
        link.push(frame);
        const mutations = randomMutations(random, 2000, Math.floor(random() * 60), version);
        version += mutations.length;
        for (const mutation of mutations) applyMutation(source, mutation);
        link.push(...mutations);
      }
      assert.ok(frames.length > 5, `only ${frames.length} frames`);
      const view = new SnapshotView();
      frames.forEach((frame, index) => {
        assert.ok(frame.length <= 8192, `frame ${index} has ${frame.length} bytes`);
        assert.equal(view.open(frame), null);
        assert.equal(view.last, index === frames.length - 1);
        assert.equal(view.appliedSeq, 5000);
        assert.equal(view.clientCount, index === 0 ? 2 : 0);
      });
      const joiner = new Store();
      const marks = new Map<number, number>();
      for (const item of link) {
        if (item instanceof Uint8Array) {
          assert.equal(view.open(item), null);
          view.applyTo(joiner, marks);
        } else {
          applyMutation(joiner, item);
        }
      }
      assert.equal(joiner.size, source.size, `seed ${seed}`);
      assert.equal(joiner.digest(), source.digest(), `seed ${seed}`);
      assert.deepEqual([...marks], [...clientHighWater]);
    }
  });

  test('an empty store is one frame, marked last, with the client marks', () => {
    const writer = new SnapshotWriter({ store: new Store(), epoch: 1, appliedSeq: 0, clientHighWater: new Map([[3, 1]]) }, 4096);
    const frame = writer.next().slice();
    assert.ok(writer.done);
    const loaded = loadFrames([frame]);
    assert.equal(loaded.store.size, 0);
    assert.ok(loaded.view.last);
    assert.deepEqual([...loaded.clients], [[3, 1]]);
    assert.throws(() => writer.next(), /complete/);
  });

  test('an entry larger than a frame is refused, not split', () => {
    const store = new Store();
    put(store, 'big', new Uint8Array(5000), 1);
    const writer = new SnapshotWriter({ store, epoch: 1, appliedSeq: 1, clientHighWater: new Map() }, 4096);
    assert.throws(() => writer.next(), /exceeds a frame/);
  });

  test('entries of the largest key and value the limits allow each fit one frame, and load intact', () => {
    const limits = deriveLimits({ ringBytes: 8 << 20, controlRingBytes: 64 << 10, keyBytesMax: 1024, valueBytesMax: 512 * 1024, batchWritesMax: 1024, batchBytesMax: 1 << 20, pendingReadsMax: 65536, inflightBytesMax: 32 << 20 });
    assert.ok(typeof limits !== 'string', String(limits));
    const store = new Store();
    const random = mulberry32(5);
    for (let index = 0; index < 5; index++) {
      const key = new Uint8Array(1024).fill(index + 1);
      const value = new Uint8Array(512 * 1024).map(() => Math.floor(random() * 256));
      store.put(key, 0, key.length, value, 0, value.length, index + 1);
    }
    put(store, 'small', new Uint8Array(10), 6);
    const writer = new SnapshotWriter({ store, epoch: 1, appliedSeq: 6, clientHighWater: new Map([[1, 6]]) }, limits.snapshotFrameBytesMax);
    const frames: Uint8Array[] = [];
    while (!writer.done) frames.push(writer.next().slice());
    for (const frame of frames) assert.ok(frame.length <= limits.snapshotFrameBytesMax && frame.length <= limits.ringRecordBytesMax);
    const loaded = loadFrames(frames);
    assert.equal(loaded.store.digest(), store.digest());
  });

  test('the marks of 100,000 clients spread over frames of bounded size, and all arrive', () => {
    const clientHighWater = new Map<number, number>();
    for (let client = 1; client <= 100_000; client++) clientHighWater.set(client, client * 3);
    const store = populatedStore(200, 9);
    const writer = new SnapshotWriter({ store, epoch: 1, appliedSeq: 500, clientHighWater }, 64 * 1024);
    const frames: Uint8Array[] = [];
    while (!writer.done) frames.push(writer.next().slice());
    assert.ok(frames.length > 20, `${frames.length} frames`);
    for (const frame of frames) assert.ok(frame.length <= 64 * 1024);
    const loaded = loadFrames(frames);
    assert.equal(loaded.clients.size, 100_000);
    assert.equal(loaded.clients.get(77_777), 77_777 * 3);
    assert.equal(loaded.store.digest(), store.digest());
  });

  test('a version or client mark that no write could have made is refused (it used to reach the store)', () => {
    const store = new Store();
    put(store, 'k', new Uint8Array(4), 123456789);
    const writer = new SnapshotWriter({ store, epoch: 1, appliedSeq: 1, clientHighWater: new Map([[7, 987654321]]) }, 4096);
    const frame = writer.next().slice();
    const view = new SnapshotView();
    assert.equal(view.open(frame), null);
    const replace = (from: number, to: number): Uint8Array => {
      const bytes = frame.slice();
      const pattern = new Uint8Array(new Float64Array([from]).buffer);
      const at = Buffer.from(bytes).indexOf(Buffer.from(pattern));
      assert.ok(at >= 0);
      bytes.set(new Uint8Array(new Float64Array([to]).buffer), at);
      return bytes;
    };
    for (const bad of [Number.NaN, -1, 0, 0.5, 2 ** 60, Number.POSITIVE_INFINITY]) {
      assert.match(view.open(replace(123456789, bad)) ?? '', /version/, `version ${bad} passed`);
    }
    for (const bad of [Number.NaN, -1, 0.5, 2 ** 60]) assert.match(view.open(replace(987654321, bad)) ?? '', /mark/, `mark ${bad} passed`);
  });

  test('truncated or corrupted frames are reported as malformed, never applied', () => {
    const writer = new SnapshotWriter({ store: populatedStore(100, 3), epoch: 2, appliedSeq: 100, clientHighWater: new Map() }, 1 << 20);
    const frame = writer.next().slice();
    const view = new SnapshotView();
    for (const cut of [0, 3, 16, frame.length >> 1, frame.length - 1]) {
      assert.match(view.open(frame.subarray(0, cut)) ?? '', /./, `a frame cut at ${cut} bytes passed`);
    }
    const random = mulberry32(11);
    let refused = 0;
    for (let trial = 0; trial < 300; trial++) {
      const corrupt = frame.slice();
      const at = Math.floor(random() * 64);
      corrupt[at] = corrupt[at]! ^ (1 + Math.floor(random() * 255));
      if (view.open(corrupt) !== null) refused++;
      // Whatever passes the structural check must still load without throwing or overrunning.
      else view.applyTo(new Store(), new Map());
    }
    assert.ok(refused > 0, 'no corruption of the header was noticed');
  });
});
