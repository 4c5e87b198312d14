import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { SpscRing } from '../native-free-core/ring.js';
import { DOORBELL_SEQUENCE_INDEX, DOORBELL_SLEEPING_INDEX, Doorbell } from '../workers/doorbell.js';
import {
  TrafficConsumer,
  TrafficProducer,
  type RingPeerData,
  type RingPeerResult,
} from './helpers/ring-traffic.js';

/*
 * The ring and the doorbell across real threads. Neither side ever sleeps on a clock: each waits on
 * its doorbell until the other rings it. The wait timeouts are only a safety net, and the tests
 * assert that none expired, since a wake-up that arrives only by timeout is a missed wake-up.
 */

const BOOTSTRAP_URL = new URL('./helpers/tsx-worker.mjs', import.meta.url);
const PEER_ENTRY_URL = new URL('./helpers/ring-peer.ts', import.meta.url).href;
/** Long enough that no legitimate wait (the peer always rings promptly) comes close to it. */
const WAIT_TIMEOUT_MS = 5_000;

interface Peer {
  worker: Worker;
  /** Resolves when the worker has loaded and is about to start (it posts 'ready'). */
  ready: Promise<void>;
  /** Resolves with the peer's report; rejects if the worker fails or exits without one. */
  result: Promise<RingPeerResult>;
  /** Set when the worker failed, so the main-thread side stops instead of waiting for it. */
  failure: () => unknown;
}

function startPeer(data: Omit<RingPeerData, 'entryUrl'>, onFailure: () => void): Peer {
  const worker = new Worker(BOOTSTRAP_URL, { workerData: { ...data, entryUrl: PEER_ENTRY_URL } });
  let failure: unknown;
  let readyResolve = (): void => undefined;
  const ready = new Promise<void>((resolve) => (readyResolve = resolve));
  const result = new Promise<RingPeerResult>((resolve, reject) => {
    const fail = (error: unknown): void => {
      failure ??= error;
      onFailure();
      readyResolve();
      reject(error);
    };
    worker.on('message', (message: 'ready' | RingPeerResult) => {
      if (message === 'ready') readyResolve();
      else resolve(message);
    });
    worker.once('error', fail);
    worker.once('exit', (code) => fail(new Error(`ring peer exited with code ${code} before reporting`)));
  });
  // The report normally settles it first; a late rejection from 'exit' must not go unhandled.
  result.catch(() => undefined);
  return { worker, ready, result, failure: () => failure };
}

function throughput(records: number, startMs: number): string {
  const seconds = (performance.now() - startMs) / 1000;
  return `${records} records in ${seconds.toFixed(2)} s = ${Math.round(records / seconds)} records/s`;
}

describe('Doorbell', () => {
  test('ring() leaves the sequence alone while the owner is awake', () => {
    const buffer = Doorbell.allocate();
    const cells = new Int32Array(buffer);
    const doorbell = new Doorbell(buffer);
    doorbell.ring();
    doorbell.ring();
    assert.equal(Atomics.load(cells, DOORBELL_SEQUENCE_INDEX), 0);
  });

  test('waitBlocking returns at once when there is work, without sleeping', () => {
    const doorbell = new Doorbell(Doorbell.allocate());
    let checks = 0;
    assert.equal(doorbell.waitBlocking(() => ++checks === 3, 10, WAIT_TIMEOUT_MS), true);
    assert.equal(checks, 3);
    // Work that shows up only at the re-check after SLEEPING is set also avoids the sleep.
    const spinIterations = 4;
    checks = 0;
    assert.equal(doorbell.waitBlocking(() => ++checks > spinIterations, spinIterations, WAIT_TIMEOUT_MS), true);
    assert.equal(checks, spinIterations + 1);
    assert.equal(doorbell.sleepCount, 0);
  });

  test('waitBlocking with a zero timeout counts the timeout and clears SLEEPING', () => {
    const buffer = Doorbell.allocate();
    const cells = new Int32Array(buffer);
    const doorbell = new Doorbell(buffer);
    assert.equal(doorbell.waitBlocking(() => false, 0, 0), false);
    assert.equal(doorbell.sleepCount, 1);
    assert.equal(doorbell.timeoutCount, 1);
    assert.equal(Atomics.load(cells, DOORBELL_SLEEPING_INDEX), 0);
  });

  test('waitAsync announces the sleep and resolves when rung', async () => {
    const buffer = Doorbell.allocate();
    const cells = new Int32Array(buffer);
    const owner = new Doorbell(buffer);
    const producer = new Doorbell(buffer);
    const waiting = owner.waitAsync(() => false, WAIT_TIMEOUT_MS);
    assert.equal(Atomics.load(cells, DOORBELL_SLEEPING_INDEX), 1);
    producer.ring();
    assert.equal(Atomics.load(cells, DOORBELL_SEQUENCE_INDEX), 1);
    await waiting;
    assert.equal(owner.sleepCount, 1);
    assert.equal(owner.timeoutCount, 0);
    assert.equal(Atomics.load(cells, DOORBELL_SLEEPING_INDEX), 0);
  });

  test('invalid arguments are RangeErrors with a code', () => {
    const doorbell = new Doorbell(Doorbell.allocate());
    assert.throws(() => doorbell.waitBlocking(() => true, -1, 0), { name: 'RangeError', code: 'DABBA_ERR_OUT_OF_RANGE' });
    assert.throws(() => doorbell.waitBlocking(() => true, 0, Number.NaN), { code: 'DABBA_ERR_OUT_OF_RANGE' });
    assert.throws(() => new Doorbell(new SharedArrayBuffer(8)), { code: 'DABBA_ERR_OUT_OF_RANGE' });
  });
});

describe('SpscRing across threads', () => {
  test('a worker produces 3 million records; the main thread consumes with waitAsync', { timeout: 60_000 }, async () => {
    const recordCount = 3_000_000;
    const ringBuffer = SpscRing.allocate(64 * 1024);
    const producerDoorbellBuffer = Doorbell.allocate();
    const consumerDoorbellBuffer = Doorbell.allocate();
    const consumerDoorbell = new Doorbell(consumerDoorbellBuffer);
    const consumer = new TrafficConsumer(new SpscRing(ringBuffer), recordCount, new Doorbell(producerDoorbellBuffer));

    const peer = startPeer(
      {
        role: 'producer',
        ringBuffer,
        producerDoorbellBuffer,
        consumerDoorbellBuffer,
        recordCount,
        spinIterations: 256,
        timeoutMs: WAIT_TIMEOUT_MS,
      },
      () => consumerDoorbell.ring(),
    );
    try {
      await peer.ready;
      const startMs = performance.now();
      const hasRecords = (): boolean => consumer.hasRecords() || peer.failure() !== undefined;
      while (!consumer.done) {
        if (peer.failure() !== undefined) throw peer.failure();
        if (consumer.pump() === 0) await consumerDoorbell.waitAsync(hasRecords, WAIT_TIMEOUT_MS);
      }
      const produced = await peer.result;
      console.log(`worker -> main: ${throughput(recordCount, startMs)}`);
      console.log(
        `  producer: ${produced.batches} publishes, ${produced.stalls} full-ring stalls, ${produced.sleepCount} sleeps; ` +
          `consumer: ${consumer.claimCount} claims, ${consumerDoorbell.sleepCount} sleeps`,
      );
      assert.equal(produced.records, recordCount);
      assert.equal(consumer.received, recordCount);
      assert.equal(new SpscRing(ringBuffer).usedBytes(), 0);
      assert.equal(produced.timeoutCount, 0, 'the producer missed a wake-up');
      assert.equal(consumerDoorbell.timeoutCount, 0, 'the consumer missed a wake-up');
    } finally {
      await peer.worker.terminate();
    }
  });

  test('the main thread produces into a 4 KiB ring; a worker consumes with waitBlocking', { timeout: 60_000 }, async () => {
    const recordCount = 1_000_000;
    const ringBuffer = SpscRing.allocate(4 * 1024);
    const producerDoorbellBuffer = Doorbell.allocate();
    const consumerDoorbellBuffer = Doorbell.allocate();
    const producerDoorbell = new Doorbell(producerDoorbellBuffer);
    const producer = new TrafficProducer(new SpscRing(ringBuffer), recordCount, new Doorbell(consumerDoorbellBuffer));

    const peer = startPeer(
      {
        role: 'consumer',
        ringBuffer,
        producerDoorbellBuffer,
        consumerDoorbellBuffer,
        recordCount,
        spinIterations: 64,
        timeoutMs: WAIT_TIMEOUT_MS,
      },
      () => producerDoorbell.ring(),
    );
    try {
      await peer.ready;
      const startMs = performance.now();
      const hasSpace = (): boolean => producer.hasSpace() || peer.failure() !== undefined;
      while (!producer.pump()) {
        if (peer.failure() !== undefined) throw peer.failure();
        await producerDoorbell.waitAsync(hasSpace, WAIT_TIMEOUT_MS);
      }
      const consumed = await peer.result;
      console.log(`main -> worker (4 KiB ring): ${throughput(recordCount, startMs)}`);
      console.log(
        `  producer: ${producer.publishCount} publishes, ${producer.blockCount} full-ring stalls, ` +
          `${producerDoorbell.sleepCount} sleeps; consumer: ${consumed.batches} claims, ${consumed.sleepCount} sleeps`,
      );
      assert.equal(consumed.records, recordCount);
      assert.equal(new SpscRing(ringBuffer).usedBytes(), 0);
      // A 4 KiB ring holds a few dozen records: both sides must have run out and slept many times.
      assert.ok(producer.blockCount > 0, 'the ring was never full');
      assert.ok(consumed.stalls > 0, 'the consumer never took the producer-waiting mark');
      assert.ok(producerDoorbell.sleepCount > 0, 'the producer never slept on a full ring');
      assert.ok(consumed.sleepCount > 0, 'the consumer never slept on an empty ring');
      assert.equal(producerDoorbell.timeoutCount, 0, 'the producer missed a wake-up');
      assert.equal(consumed.timeoutCount, 0, 'the consumer missed a wake-up');
    } finally {
      await peer.worker.terminate();
    }
  });
});
