/**
 * Micro-benchmarks of the pieces on the write path, with tinybench (its per-call latency figures
 * are right for these; its throughput figure is not used). Each task handles a whole batch so the
 * timer's cost is amortised; results are reported per write. A result hash is printed so the JIT
 * cannot drop the work.
 */
import { Admission } from '../workers/admission.js';
import type { WriteConditions } from '../src/conditions.js';
import { Bench } from 'tinybench';
import { SpscRing } from '../native-free-core/ring.js';
import { Store } from '../native-free-core/store.js';
import { WriteBatchEncoder, WriteBatchView } from '../native-free-core/wire/codec.js';
import { FutureRing } from '../src/futures.js';
import { Sealer } from '../src/sealing.js';
import { ClientSession } from '../src/session/client-session.js';
import { resolveOptions } from '../src/options.js';
import type { Clock } from '../src/runtime/clock.js';
import { AckEncoder } from '../native-free-core/wire/codec.js';
import { crc32 } from '../native-free-core/checksum.js';
import { nativeCrc32 } from '../workers/native-crc32.js';
import { RoutedSession } from '../src/session/routed-session.js';
import { printTable, type Environment } from '../src/bench/harness.js';
import { record } from './ledger.js';

const WRITES_PER_BATCH = 1024;

export interface MicroRow {
  task: string;
  nsPerWrite: number;
  p99NsPerWrite: number;
}

export async function micro(env: Environment, small: boolean): Promise<{ rows: MicroRow[]; hash: number }> {
  const bench = new Bench({ time: small ? 100 : 1000, warmupTime: small ? 20 : 200 });
  let hash = 0;

  const key = new TextEncoder().encode('key-000000000042');
  const value = new Uint8Array(100).fill(7);
  const encoder = new WriteBatchEncoder({ writesMax: WRITES_PER_BATCH, payloadBytesMax: WRITES_PER_BATCH * 128 }, nativeCrc32);
  const encodeBatch = (): Uint8Array => {
    encoder.begin(1, 1);
    for (let index = 0; index < WRITES_PER_BATCH; index++) encoder.addPut(key, 0, key.length, value, 0, value.length);
    return encoder.finish();
  };
  const frame = encodeBatch().slice();
  const sharedFrame = new Uint8Array(new SharedArrayBuffer(frame.length + 8), 8, frame.length);
  sharedFrame.set(frame);
  const view = new WriteBatchView();
  // Its own copy: the store task below rewrites keys in sharedFrame, which would break its checksum.
  const checksummed = new Uint8Array(new SharedArrayBuffer(frame.length));
  checksummed.set(frame);
  const checksumView = new WriteBatchView();
  if (checksumView.open(checksummed) !== null) throw new Error('malformed');

  const producer = new SpscRing(SpscRing.allocate(8 * 1024 * 1024));
  const consumer = new SpscRing(producer.bytes.buffer as SharedArrayBuffer);
  const store = new Store();
  let version = 0;
  const futures = new FutureRing<void>(WRITES_PER_BATCH * 2);
  // Sealed values (the `sealing` option): what each write costs the client on top, and each read.
  const sealer = new Sealer({ keys: { 1: new Uint8Array(32).fill(1) }, current: 1 }, { valueBytesMax: 512 * 1024 });
  const sealedValue = sealer.seal(key, value);
  // Routing keys to chains (chainOf needs only the chain count of the sessions it routes to).
  const routedKeys = Array.from({ length: WRITES_PER_BATCH }, (_, index) => `key-${String(index).padStart(12, '0')}`);
  const sessionsOf = (chains: number): ClientSession[] => Array.from({ length: chains }, () => ({}) as ClientSession);
  const oneChain = new RoutedSession(sessionsOf(1), 1024);
  const manyChains = new RoutedSession(sessionsOf(64), 1024);
  // put() through the client's whole write path: route, encode into the chain's open batch, one
  // promise; then the end-of-turn flush and one cumulative ack per chain (sinks take every frame).
  const routedPut = clientWritePath(1);
  const routedPut64 = clientWritePath(64);
  const conditionalPut = clientWritePath(1, { ifVersion: 7 });
  // A head's admission hook (workers/admission.ts) with a hook that admits every write.
  const admission = new Admission(() => true, 1000, { keyBytesMax: 1024, valueBytesMax: 512 * 1024 }, 1 << 24, () => undefined);

  bench
    .add('codec: encode a batch (16 B key, 100 B value)', () => {
      hash ^= encodeBatch().length;
    })
    .add('codec: check a batch\'s checksum (zlib.crc32, native)', () => {
      if (!checksumView.checksumMatches(nativeCrc32)) throw new Error('checksum');
    })
    .add('codec: check a batch\'s checksum (the core\'s JavaScript CRC-32)', () => {
      if (!checksumView.checksumMatches(crc32)) throw new Error('checksum');
    })
    .add('codec: verify a batch and read every record', () => {
      if (view.open(sharedFrame) !== null) throw new Error('malformed');
      for (let index = 0; index < view.count; index++) hash ^= view.recordAt(index).valueLength();
    })
    .add('ring: publish a batch frame, claim and release it', () => {
      if (!producer.tryWrite(frame)) throw new Error('ring full');
      producer.publish();
      consumer.claim();
      for (let offset = consumer.next(); offset >= 0; offset = consumer.next()) hash ^= consumer.recordLength;
      consumer.release();
    })
    .add('store: apply a batch (100k keys)', () => {
      if (view.open(sharedFrame) !== null) throw new Error('malformed');
      for (let index = 0; index < view.count; index++) {
        const recordView = view.recordAt(index);
        const keyPosition = view.keyPosition(recordView);
        // Vary the key so the store holds ~100k keys, like the demo's key space.
        sharedFrame[keyPosition + 15] = index & 0xff;
        sharedFrame[keyPosition + 14] = version & 0x7f;
        store.put(sharedFrame, keyPosition, 16, sharedFrame, keyPosition + 16, recordView.valueLength(), ++version);
      }
      hash ^= store.size;
    })
    .add('client: one promise per write, resolved by one cumulative ack', () => {
      for (let index = 0; index < WRITES_PER_BATCH; index++) void futures.add();
      hash ^= futures.resolveThrough(futures.next - 1, undefined);
    })
    .add('client: route a 16 B string key to its chain, 1 chain', () => {
      for (let index = 0; index < WRITES_PER_BATCH; index++) hash ^= oneChain.chainOf(routedKeys[index]!);
    })
    .add('client: route a 16 B string key to its chain, 64 chains', () => {
      for (let index = 0; index < WRITES_PER_BATCH; index++) hash ^= manyChains.chainOf(routedKeys[index]!);
    })
    .add('client: put() through the write path, 1 chain (route, encode, promise, flush, ack)', () => {
      hash ^= routedPut(routedKeys, value);
    })
    .add('client: put() through the write path, 64 chains (route, encode, promise, flush, ack)', () => {
      hash ^= routedPut64(routedKeys, value);
    })
    .add('client: conditional put(key, value, { ifVersion }) through the write path, 1 chain', () => {
      hash ^= conditionalPut(routedKeys, value);
    })
    .add('head: screen a batch with an admission hook that admits every write', () => {
      hash ^= admission.screen(checksummed).length;
    })
    .add('client: one promise for the batch (putMany), resolved by one cumulative ack', () => {
      let resolveAll!: () => void;
      let rejectAll!: (reason: unknown) => void;
      void new Promise<void>((resolve, reject) => {
        resolveAll = resolve;
        rejectAll = reject;
      });
      let last = 0;
      for (let index = 0; index < WRITES_PER_BATCH; index++) last = futures.addSettlers(rejectAll);
      futures.setResolver(last, resolveAll);
      hash ^= futures.resolveThrough(last, undefined);
    })
    .add('sealing: seal a 100 B value (AES-256-GCM, 16 B key as associated data)', () => {
      for (let index = 0; index < WRITES_PER_BATCH; index++) hash ^= sealer.seal(key, value)[20]!;
    })
    .add('sealing: open a sealed 100 B value', () => {
      for (let index = 0; index < WRITES_PER_BATCH; index++) hash ^= sealer.open(key, sealedValue)[index % 100]!;
    });

  await bench.run();
  const rows: MicroRow[] = bench.tasks.map((task) => {
    const latency = task.result && 'latency' in task.result ? task.result.latency : undefined;
    return {
      task: task.name,
      nsPerWrite: ((latency?.mean ?? Number.NaN) * 1e6) / WRITES_PER_BATCH,
      p99NsPerWrite: ((latency?.p99 ?? Number.NaN) * 1e6) / WRITES_PER_BATCH,
    };
  });
  for (const row of rows) record('micro', row, env);
  printTable(
    `Micro-benchmarks (per write, batches of ${WRITES_PER_BATCH}; result hash ${hash})`,
    ['task', 'ns/write (mean)', 'ns/write (p99)'],
    rows.map((row) => [row.task, row.nsPerWrite.toFixed(1), row.p99NsPerWrite.toFixed(1)]),
  );
  return { rows, hash };
}

/**
 * A client's write path over `chains` sessions whose sinks take every frame: returns a function
 * that puts each key, runs the end-of-turn flush, and acknowledges every chain's writes.
 */
function clientWritePath(chains: number, conditions?: WriteConditions): (keys: readonly string[], value: Uint8Array) => number {
  const options = resolveOptions({});
  const endOfTurn: Array<() => void> = [];
  const clock: Clock = { nowMs: () => performance.now(), soon: (callback) => void endOfTurn.push(callback), after: () => ({ cancel() {} }) };
  const sink = { tryWrite: () => true, canWrite: () => true, markProducerWaiting() {}, publish: () => false };
  const doorbell = { ring() {} };
  const sessions = Array.from(
    { length: chains },
    (_, chain) => new ClientSession(options, { clientId: chain + 1, head: sink, headDoorbell: doorbell, tail: sink, tailDoorbell: doorbell, epoch: () => 1, clock }, () => null),
  );
  const routed = new RoutedSession(sessions, options.keyBytesMax);
  const acks = new AckEncoder();
  return (keys, value) => {
    for (const key of keys) void routed.put(key, value, conditions);
    for (const callback of endOfTurn.splice(0)) callback();
    let settled = 0;
    for (const session of sessions) {
      const through = session.writes.accepted;
      if (session.writes.committedClientSeq === through) continue;
      // With its report of conditional writes (none failed), as a tail sends it.
      const reportedFrom = session.writes.committedClientSeq + 1;
      session.receiveAck(acks.encode({ epoch: 1, committedSeq: through, clientId: session.clientId, committedClientSeq: through, reportedFrom }));
      settled += through;
    }
    return settled;
  };
}
