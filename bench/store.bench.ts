/**
 * Micro-benchmark of the store's hot path: `put` of a 16-byte key and a 100-byte value taken, like in
 * a received batch, from ranges of a SharedArrayBuffer. Each task iteration runs a batch of puts so
 * that the timer's own cost (tens of ns) does not swamp a sub-100 ns operation; results are reported
 * per put. The store digests are printed at the end so that the JIT cannot drop the work.
 *
 *   node --import tsx bench/store.bench.ts            # large: 1M distinct keys
 *   node --import tsx bench/store.bench.ts --small    # small: 100k keys, short time budget
 */
import { Bench } from 'tinybench';
import { Store } from '../native-free-core/store.js';

const small = process.argv.includes('--small');
const KEY_BYTES = 16;
const VALUE_BYTES = 100;
const DISTINCT_KEYS = small ? 100_000 : 1_000_000;
const HOT_KEYS = 10_000;
const PUTS_PER_ITERATION = 1000;
const TASK_TIME_MS = small ? 200 : 1500;
const VALUE_POOL_BYTES = 64 * 1024;

/** A deterministic xorshift32 stream, so every run hashes and stores the same bytes. */
function fillRandom(target: Uint8Array, seed: number): void {
  let state = seed >>> 0 || 1;
  for (let index = 0; index < target.length; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    target[index] = state & 0xff;
  }
}

// One "received batch" holding every key followed by a pool the values are cut from.
const valuePoolStart = DISTINCT_KEYS * KEY_BYTES;
const batch = new Uint8Array(new SharedArrayBuffer(valuePoolStart + VALUE_POOL_BYTES));
fillRandom(batch, 0x5eed);

let version = 0;

function putKeys(store: Store, keyFirst: number, keySpace: number): void {
  for (let count = 0; count < PUTS_PER_ITERATION; count++) {
    const key = (keyFirst + count) % keySpace;
    const valueStart = valuePoolStart + ((version * 97) % (VALUE_POOL_BYTES - VALUE_BYTES));
    store.put(batch, key * KEY_BYTES, KEY_BYTES, batch, valueStart, VALUE_BYTES, ++version);
  }
}

function fill(store: Store, keySpace: number): Store {
  for (let keyFirst = 0; keyFirst < keySpace; keyFirst += PUTS_PER_ITERATION) putKeys(store, keyFirst, keySpace);
  return store;
}

let insertStore = new Store();
let insertNext = 0;
const distinctStore = fill(new Store(), DISTINCT_KEYS);
let distinctNext = 0;
const hotStore = fill(new Store(), HOT_KEYS);
let hotNext = 0;
let foundVersions = 0;

const bench = new Bench({ time: TASK_TIME_MS, warmupTime: TASK_TIME_MS / 4 });
bench
  .add(`insert ${DISTINCT_KEYS} distinct keys (fresh default store, growth included)`, () => {
    if (insertNext >= DISTINCT_KEYS) {
      insertStore = new Store();
      insertNext = 0;
    }
    putKeys(insertStore, insertNext, DISTINCT_KEYS);
    insertNext += PUTS_PER_ITERATION;
  })
  .add(`overwrite over ${DISTINCT_KEYS} distinct keys`, () => {
    putKeys(distinctStore, distinctNext, DISTINCT_KEYS);
    distinctNext = (distinctNext + PUTS_PER_ITERATION) % DISTINCT_KEYS;
  })
  .add(`overwrite over ${HOT_KEYS} hot keys`, () => {
    putKeys(hotStore, hotNext, HOT_KEYS);
    hotNext = (hotNext + PUTS_PER_ITERATION) % HOT_KEYS;
  })
  .add(`find over ${HOT_KEYS} hot keys`, () => {
    for (let count = 0; count < PUTS_PER_ITERATION; count++) {
      const key = (hotNext + count) % HOT_KEYS;
      foundVersions += hotStore.version(hotStore.find(batch, key * KEY_BYTES, KEY_BYTES));
    }
    hotNext = (hotNext + PUTS_PER_ITERATION) % HOT_KEYS;
  });

await bench.run();

const rows = bench.tasks.map((task) => {
  const result = task.result;
  if (result.state !== 'completed') return { task: task.name, state: result.state };
  const nsPerOperation = (milliseconds: number): string => ((milliseconds * 1e6) / PUTS_PER_ITERATION).toFixed(1);
  return {
    task: task.name,
    'ns/op mean': nsPerOperation(result.latency.mean),
    'ns/op p50': nsPerOperation(result.latency.p50),
    'ns/op p99': nsPerOperation(result.latency.p99),
    'Mops/s': (PUTS_PER_ITERATION / result.latency.mean / 1000).toFixed(2),
    batches: result.latency.samplesCount,
  };
});
console.table(rows);
const resultHash = `${distinctStore.digest()} ${hotStore.digest()} ${insertStore.size} ${foundVersions}`;
console.log(`node ${process.version}; result hash: ${resultHash}`);
