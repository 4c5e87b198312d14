/**
 * A whole chain of pure ChainNodes in one thread, linked by FIFO queues instead of rings, with the
 * delivery order chosen by a seeded PRNG. Used by the protocol-core tests to drive H, M1, ..., T
 * through every interleaving of batch forwarding, acks and client acks.
 */
import { ChainNode, type Role } from '../../native-free-core/chain/node.js';
import { Store } from '../../native-free-core/store.js';
import { ErrorCode } from '../../native-free-core/errors.js';
import { AckEncoder, AckView, HelloEncoder, WriteBatchEncoder, type AckFields } from '../../native-free-core/wire/codec.js';
import { mulberry32 } from './prng.js';

export interface HarnessOptions {
  replicas: number;
  seed: number;
  inflightBytesMax?: number;
  inflightBatchesMax?: number;
  /**
   * Each batch forwarded between nodes has one of its last bytes (its payload) flipped with this
   * probability: the receiver must refuse it and ask for it again (default 0).
   */
  corruptRate?: number;
}

export class ChainHarness {
  readonly nodes: ChainNode[] = [];
  /** batchQueues[i] holds batches on their way INTO node i (0: from the client). */
  readonly batchQueues: Uint8Array[][] = [];
  /** ackQueues[i] holds acks on their way INTO node i from node i+1. */
  readonly ackQueues: Uint8Array[][] = [];
  readonly clientAcks: AckFields[] = [];
  readonly random: () => number;
  readonly encoder = new WriteBatchEncoder({ writesMax: 64, payloadBytesMax: 64 * 1024 });
  private readonly ackEncoder = new AckEncoder();
  private readonly helloEncoder = new HelloEncoder();
  private readonly corruptRate: number;
  /** Batches damaged on the way, and refusals they caused (the damaged one, and gaps behind it). */
  corrupted = 0;
  refusedWhileCorrupt = 0;
  private nextClientSeq = 1;
  /** Every (node, seq) application in order, to check the prefix invariant. */
  readonly appliedLog: number[][] = [];
  fullRefusals = 0;

  constructor(options: HarnessOptions) {
    this.random = mulberry32(options.seed);
    this.corruptRate = options.corruptRate ?? 0;
    for (let index = 0; index < options.replicas; index++) {
      const role: Role =
        options.replicas === 1 ? 'solo' : index === 0 ? 'head' : index === options.replicas - 1 ? 'tail' : 'middle';
      this.nodes.push(
        new ChainNode({
          id: index + 1,
          epoch: 1,
          role,
          store: new Store(),
          inflightBytesMax: options.inflightBytesMax ?? 1024 * 1024,
          inflightBatchesMax: options.inflightBatchesMax ?? 1024,
          readReplyPayloadBytesMax: 64 * 1024,
          readReplyResultsMax: 64,
        }),
      );
      this.batchQueues.push([]);
      this.ackQueues.push([]);
      this.appliedLog.push([]);
    }
  }

  get head(): ChainNode {
    return this.nodes[0]!;
  }

  get tail(): ChainNode {
    return this.nodes[this.nodes.length - 1]!;
  }

  /** The client's process died too: what it had on its way to the head is lost, and a new client counts from 1. */
  restartClient(): void {
    this.nextClientSeq = 1;
    this.batchQueues[0]!.length = 0;
  }

  /** Encodes `count` puts of key `k<n % keys>` as one client batch and queues it for the head. */
  submit(count: number, keys = 50, clientId = 1): { firstClientSeq: number; count: number } {
    const firstClientSeq = this.nextClientSeq;
    this.encoder.begin(clientId, firstClientSeq);
    for (let index = 0; index < count; index++) {
      const seq = this.nextClientSeq++;
      const key = new TextEncoder().encode(`k${seq % keys}`);
      const value = new TextEncoder().encode(`value-${seq}`);
      this.encoder.addPut(key, 0, key.length, value, 0, value.length);
    }
    this.batchQueues[0]!.push(this.encoder.finish().slice());
    return { firstClientSeq, count };
  }

  /** Delivers one queued message chosen at random; returns false when nothing is deliverable. */
  step(): boolean {
    const candidates: Array<() => boolean> = [];
    this.nodes.forEach((node, index) => {
      const batches = this.batchQueues[index]!;
      if (batches.length > 0) {
        candidates.push(() => {
          const result = node.step('upstream', batches[0]!);
          if (result.status === 'full') {
            this.fullRefusals++;
            return false;
          }
          batches.shift();
          if (result.status === 'applied') {
            for (let seq = result.firstSeq; seq < result.firstSeq + result.count; seq++) this.appliedLog[index]!.push(seq);
          } else if (this.corruptRate > 0 && result.status === 'rejected' && (result.code === ErrorCode.corrupt || result.code === ErrorCode.sequenceGap)) {
            this.refusedWhileCorrupt++;
          } else if (result.status !== 'duplicate') {
            throw new Error(`node ${node.id} refused a batch: ${result.status} ${'reason' in result ? result.reason : ''}`);
          }
          return true;
        });
      }
      const acks = this.ackQueues[index]!;
      if (acks.length > 0) {
        candidates.push(() => {
          const result = node.step('downstream', acks.shift()!);
          if (result.status === 'rejected' || result.status === 'ignored') throw new Error(`ack refused: ${result.reason}`);
          return true;
        });
      }
      if (node.hasReady()) candidates.push(() => this.performReady(index));
    });
    if (candidates.length === 0) return false;
    // Try candidates from a random start so a node blocked on a full log does not stall the run.
    const start = Math.floor(this.random() * candidates.length);
    for (let offset = 0; offset < candidates.length; offset++) {
      if (candidates[(start + offset) % candidates.length]!()) return true;
    }
    return false;
  }

  /** Performs a node's Ready, forwarding a random prefix of its batches (a partly full link). */
  performReady(index: number): boolean {
    const node = this.nodes[index]!;
    const ready = node.ready();
    // At least one, so every step makes progress; a random prefix models a link that is partly full.
    const forwarded = ready.forward.length === 0 ? 0 : 1 + Math.floor(this.random() * ready.forward.length);
    for (let batch = 0; batch < forwarded; batch++) {
      const copy = ready.forward[batch]!.slice();
      if (this.corruptRate > 0 && this.random() < this.corruptRate) {
        copy[copy.length - 1 - Math.floor(this.random() * 8)]! ^= 1 << Math.floor(this.random() * 8);
        this.corrupted++;
      }
      this.batchQueues[index + 1]!.push(copy);
    }
    if (ready.ackUpstream !== null) this.ackQueues[index - 1]!.push(this.ackEncoder.encode(ready.ackUpstream).slice());
    if (ready.helloUpstream !== null) this.ackQueues[index - 1]!.push(this.helloEncoder.encode(ready.helloUpstream).slice());
    for (const ack of ready.clientAcks) this.clientAcks.push({ ...ack });
    node.advance(ready, { forwarded, acksSent: true, repliesSent: ready.readReplies.length });
    return forwarded > 0 || ready.ackUpstream !== null || ready.helloUpstream !== null || ready.clientAcks.length > 0 || ready.readReplies.length > 0;
  }

  /** Runs until nothing is deliverable (or `stepsMax` steps). */
  settle(stepsMax = 1_000_000): number {
    let steps = 0;
    while (steps < stepsMax && this.step()) steps++;
    return steps;
  }

  /** Decodes an ack frame (for tests that inspect acks on the wire). */
  static decodeAck(bytes: Uint8Array): AckFields {
    const view = new AckView();
    const malformed = view.open(bytes);
    if (malformed !== null) throw new Error(malformed);
    return { epoch: view.epoch, committedSeq: view.committedSeq, clientId: view.clientId, committedClientSeq: view.committedClientSeq };
  }
}
