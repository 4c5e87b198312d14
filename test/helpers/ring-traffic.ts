import { SpscRing } from '../../native-free-core/ring.js';
import type { Doorbell } from '../../workers/doorbell.js';

/*
 * Deterministic traffic for the two-thread ring tests: record `index` has a length and content that
 * both threads compute from the index alone, so the consumer checks every byte, the order and the
 * count without the producer sending anything but the records themselves.
 */

/** Longest payload of the traffic (fits every ring of at least 1 KiB). */
export const TRAFFIC_RECORD_BYTES_MAX = 300;
/** Most records the producer stages before one publish(). */
export const TRAFFIC_BATCH_RECORDS_MAX = 96;

/** A 32-bit integer hash (lowbias32), so lengths and batch sizes vary without a shared PRNG. */
export function hash32(value: number): number {
  let x = value | 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

export function trafficRecordLength(index: number): number {
  // A quarter of the records are short (0..15 bytes) so empty and tiny payloads are frequent.
  const mix = hash32(index);
  return (mix & 3) === 0 ? (mix >>> 8) & 15 : (mix >>> 8) % (TRAFFIC_RECORD_BYTES_MAX + 1);
}

function trafficBatchRecords(index: number): number {
  const mix = hash32(index ^ 0x5bd1e995);
  return 1 + ((mix & 7) === 0 ? 0 : (mix >>> 8) % TRAFFIC_BATCH_RECORDS_MAX);
}

function trafficByte(seed: number, position: number): number {
  return (seed + Math.imul(position, 47) + (position >>> 8)) & 0xff;
}

export function fillTrafficRecord(target: Uint8Array, offset: number, length: number, index: number): void {
  const seed = hash32(index + 0x9e3779b9);
  for (let position = 0; position < length; position++) target[offset + position] = trafficByte(seed, position);
}

/** Throws if the bytes at `offset` are not exactly record `index`. */
export function checkTrafficRecord(source: Uint8Array, offset: number, length: number, index: number): void {
  const expectedLength = trafficRecordLength(index);
  if (length !== expectedLength) {
    throw new Error(`record ${index}: length ${length}, expected ${expectedLength}`);
  }
  const seed = hash32(index + 0x9e3779b9);
  for (let position = 0; position < length; position++) {
    if (source[offset + position] !== trafficByte(seed, position)) {
      throw new Error(`record ${index}: byte ${position} is ${source[offset + position]}, expected ${trafficByte(seed, position)}`);
    }
  }
}

/** Producer half: writes records 0..recordCount-1 in batches of varying size. */
export class TrafficProducer {
  /** Records staged so far (published once `publish` ran after them). */
  written = 0;
  publishCount = 0;
  /** Times the ring was full. */
  blockCount = 0;
  private batchLeft = trafficBatchRecords(0);
  /** Length of the record that did not fit, while the producer waits for space. */
  private blockedLength = 0;
  private readonly scratch = new Uint8Array(TRAFFIC_RECORD_BYTES_MAX + 16);

  constructor(
    private readonly ring: SpscRing,
    private readonly recordCount: number,
    /** Rung after every publish so a sleeping consumer wakes. */
    private readonly consumerDoorbell: Doorbell,
  ) {}

  /** Writes until the ring is full or every record is written; publishes. True once all are published. */
  pump(): boolean {
    const ring = this.ring;
    while (this.written < this.recordCount) {
      const index = this.written;
      const length = trafficRecordLength(index);
      if (index % 4 === 3) {
        // Every fourth record goes through tryWrite() from an offset inside a scratch buffer.
        fillTrafficRecord(this.scratch, 7, length, index);
        if (!ring.tryWrite(this.scratch, 7, 7 + length)) {
          this.block(length);
          break;
        }
      } else {
        const offset = ring.tryReserve(length);
        if (offset < 0) {
          this.block(length);
          break;
        }
        fillTrafficRecord(ring.bytes, offset, length, index);
      }
      this.written++;
      this.batchLeft--;
      if (this.batchLeft === 0) {
        this.publish();
        this.batchLeft = trafficBatchRecords(this.written);
      }
    }
    this.publish();
    return this.written === this.recordCount;
  }

  /** Wake-up condition while the ring is full: the record that did not fit fits now. */
  hasSpace(): boolean {
    return this.ring.canWrite(this.blockedLength);
  }

  /** Full ring: the consumer rings our doorbell on its next release (takeProducerWaiting()). */
  private block(length: number): void {
    this.blockedLength = length;
    this.blockCount++;
    this.ring.markProducerWaiting();
  }

  private publish(): void {
    if (this.ring.publish()) {
      this.publishCount++;
      this.consumerDoorbell.ring();
    }
  }
}

/** Consumer half: checks records 0..recordCount-1 in order. */
export class TrafficConsumer {
  received = 0;
  claimCount = 0;
  /** Releases after which the producer was waiting for space. */
  producerWakeCount = 0;

  constructor(
    private readonly ring: SpscRing,
    private readonly recordCount: number,
    /** Rung after a release when the producer marked itself waiting for space. */
    private readonly producerDoorbell: Doorbell,
  ) {}

  get done(): boolean {
    return this.received === this.recordCount;
  }

  /** Claims, checks and releases everything published; returns the number of records consumed. */
  pump(): number {
    const ring = this.ring;
    if (!ring.claim()) return 0;
    this.claimCount++;
    const first = this.received;
    for (let offset = ring.next(); offset >= 0; offset = ring.next()) {
      if (this.received === this.recordCount) throw new Error(`more than ${this.recordCount} records arrived`);
      checkTrafficRecord(ring.bytes, offset, ring.recordLength, this.received);
      this.received++;
    }
    ring.release();
    // Ring the producer only if it found the ring full; it re-checks canWrite() before sleeping.
    if (ring.takeProducerWaiting()) {
      this.producerWakeCount++;
      this.producerDoorbell.ring();
    }
    return this.received - first;
  }

  hasRecords(): boolean {
    return !this.ring.isEmpty();
  }
}

/** What a ring-peer worker is asked to do (its workerData). */
export interface RingPeerData {
  entryUrl: string;
  role: 'producer' | 'consumer';
  ringBuffer: SharedArrayBuffer;
  producerDoorbellBuffer: SharedArrayBuffer;
  consumerDoorbellBuffer: SharedArrayBuffer;
  recordCount: number;
  spinIterations: number;
  timeoutMs: number;
}

/** What a ring-peer worker posts back when it finished. */
export interface RingPeerResult {
  role: 'producer' | 'consumer';
  records: number;
  /** publish() calls that published something (producer) or claims that saw records (consumer). */
  batches: number;
  /** Full-ring stalls (producer) or releases that took the producer-waiting mark (consumer). */
  stalls: number;
  sleepCount: number;
  timeoutCount: number;
}
