import { parentPort, workerData } from 'node:worker_threads';
import { SpscRing } from '../../native-free-core/ring.js';
import { Doorbell } from '../../workers/doorbell.js';
import { TrafficConsumer, TrafficProducer, type RingPeerData, type RingPeerResult } from './ring-traffic.js';

/*
 * Worker entry (loaded through tsx-worker.mjs): one side of the two-thread ring tests, sleeping on
 * its own doorbell with waitBlocking() whenever the ring is full (producer) or empty (consumer).
 */

const data = workerData as RingPeerData;
const ring = new SpscRing(data.ringBuffer);
const producerDoorbell = new Doorbell(data.producerDoorbellBuffer);
const consumerDoorbell = new Doorbell(data.consumerDoorbellBuffer);
let result: RingPeerResult;
// Starting a worker under tsx takes a while; the other side starts its clock and its waits only
// after this, so a slow start cannot look like a missed wake-up.
parentPort?.postMessage('ready');

if (data.role === 'producer') {
  const producer = new TrafficProducer(ring, data.recordCount, consumerDoorbell);
  const hasSpace = (): boolean => producer.hasSpace();
  while (!producer.pump()) producerDoorbell.waitBlocking(hasSpace, data.spinIterations, data.timeoutMs);
  result = {
    role: 'producer',
    records: producer.written,
    batches: producer.publishCount,
    stalls: producer.blockCount,
    sleepCount: producerDoorbell.sleepCount,
    timeoutCount: producerDoorbell.timeoutCount,
  };
} else {
  const consumer = new TrafficConsumer(ring, data.recordCount, producerDoorbell);
  const hasRecords = (): boolean => consumer.hasRecords();
  while (!consumer.done) {
    if (consumer.pump() === 0) consumerDoorbell.waitBlocking(hasRecords, data.spinIterations, data.timeoutMs);
  }
  result = {
    role: 'consumer',
    records: consumer.received,
    batches: consumer.claimCount,
    stalls: consumer.producerWakeCount,
    sleepCount: consumerDoorbell.sleepCount,
    timeoutCount: consumerDoorbell.timeoutCount,
  };
}
parentPort?.postMessage(result);
