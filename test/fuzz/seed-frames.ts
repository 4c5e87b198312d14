/**
 * Valid frames of every kind, built with the real encoders, in several sizes: what the fuzzer
 * mutates. Keys come from a small key space (`key-0` .. `key-47`), so reads find what batches
 * wrote. Deterministic: the same corpus on every run.
 */
import { SnapshotWriter } from '../../native-free-core/chain/snapshot.js';
import { Store } from '../../native-free-core/store.js';
import { encodeClusterView } from '../../native-free-core/wire/cluster-view.js';
import { encodeWatchRequest, WatchReplyEncoder, WatchStatus } from '../../native-free-core/wire/watch-frames.js';
import {
  AckEncoder,
  HelloEncoder,
  MessageKind,
  ReadBatchEncoder,
  ReadReplyEncoder,
  WriteBatchEncoder,
  WriteBatchView,
  Op,
} from '../../native-free-core/wire/codec.js';
import { Random, layoutOf, type FrameLayout } from './frame-mutator.js';

export const KEY_SPACE = 48;

export interface SeedFrame {
  name: string;
  kind: MessageKind;
  bytes: Uint8Array;
  layout: FrameLayout;
}

const text = new TextEncoder();

function keyBytes(index: number): Uint8Array {
  return text.encode(`key-${index}`);
}

function valueBytes(random: Random, length: number): Uint8Array {
  const value = new Uint8Array(length);
  for (let index = 0; index < length; index++) value[index] = random.below(256);
  return value;
}

/** A client batch of `count` writes, about one in five a delete; stamped if `firstSeq` > 0. */
function writeBatch(random: Random, count: number, valueBytesMax: number, clientId: number, firstSeq: number): Uint8Array {
  const encoder = new WriteBatchEncoder({ writesMax: count, payloadBytesMax: count * (valueBytesMax + 8) });
  encoder.begin(clientId, 1);
  for (let index = 0; index < count; index++) {
    const key = keyBytes(random.below(KEY_SPACE));
    if (random.chance(0.2)) {
      encoder.addDelete(key, 0, key.length);
    } else {
      const value = valueBytes(random, random.below(valueBytesMax + 1));
      encoder.addPut(key, 0, key.length, value, 0, value.length);
    }
  }
  const frame = encoder.finish().slice();
  if (firstSeq > 0) {
    const view = new WriteBatchView();
    view.open(frame);
    view.stamp(1, firstSeq);
  }
  return frame;
}

function readBatch(random: Random, count: number): Uint8Array {
  const encoder = new ReadBatchEncoder({ readsMax: count, keyBytesMax: 8 });
  encoder.begin(1 + random.below(1000));
  // A few keys outside the key space, so replies carry NotFound too.
  for (let index = 0; index < count; index++) {
    const key = keyBytes(random.below(KEY_SPACE + 8));
    encoder.addRead(key, 0, key.length);
  }
  return encoder.finish(1).slice();
}

function readReply(random: Random, count: number, valueBytesMax: number): Uint8Array {
  const encoder = new ReadReplyEncoder(count, count * valueBytesMax + 1);
  encoder.begin(1 + random.below(1000));
  for (let index = 0; index < count; index++) {
    if (random.chance(0.25)) {
      encoder.addNotFound();
    } else {
      const value = valueBytes(random, random.below(valueBytesMax + 1));
      encoder.addFound(value, 0, value.length, 1 + random.below(10_000));
    }
  }
  return encoder.finish(1, 10_000).slice();
}

/** Every frame of a snapshot of a store of `keys` keys (the first has the client marks, the last is marked last). */
function snapshotFrames(random: Random, keys: number, frameBytesMax: number): Uint8Array[] {
  const store = new Store();
  for (let index = 0; index < keys; index++) {
    const key = keyBytes(index);
    const value = valueBytes(random, random.below(120));
    store.put(key, 0, key.length, value, 0, value.length, index + 1);
  }
  const clientHighWater = new Map([
    [1, 40],
    [7, 3],
  ]);
  const writer = new SnapshotWriter({ store, epoch: 1, appliedSeq: keys, clientHighWater }, frameBytesMax);
  const frames: Uint8Array[] = [];
  while (!writer.done) frames.push(writer.next().slice());
  return frames;
}

export function seedFrames(): SeedFrame[] {
  const random = new Random(0x5eed);
  const frames: Array<[string, MessageKind, Uint8Array]> = [];
  const add = (name: string, kind: MessageKind, bytes: Uint8Array): void => {
    frames.push([name, kind, bytes]);
  };

  add('batch: one put', MessageKind.writeBatch, writeBatch(random, 1, 4, 1, 0));
  add('batch: 2 writes, stamped', MessageKind.writeBatch, writeBatch(random, 2, 8, 2, 1));
  add('batch: 6 writes, stamped', MessageKind.writeBatch, writeBatch(random, 6, 24, 1, 1));
  add('batch: 40 writes', MessageKind.writeBatch, writeBatch(random, 40, 64, 7, 0));
  add('batch: 150 writes, stamped', MessageKind.writeBatch, writeBatch(random, 150, 120, 7, 3));
  add('batch: 3 large values', MessageKind.writeBatch, writeBatch(random, 3, 2000, 2, 0));

  const acks = new AckEncoder();
  add('ack: zero', MessageKind.ack, acks.encode({ epoch: 1, committedSeq: 0, clientId: 0, committedClientSeq: 0 }).slice());
  add('ack: upstream', MessageKind.ack, acks.encode({ epoch: 1, committedSeq: 5, clientId: 0, committedClientSeq: 0 }).slice());
  add('ack: client', MessageKind.ack, acks.encode({ epoch: 3, committedSeq: 1000, clientId: 7, committedClientSeq: 99 }).slice());
  add('ack: 2^53 - 1', MessageKind.ack, acks.encode({ epoch: 1, committedSeq: 2 ** 53 - 1, clientId: 1, committedClientSeq: 2 ** 53 - 1 }).slice());

  add('reads: one key', MessageKind.readBatch, readBatch(random, 1));
  add('reads: 8 keys', MessageKind.readBatch, readBatch(random, 8));
  add('reads: 60 keys', MessageKind.readBatch, readBatch(random, 60));

  add('reply: one value', MessageKind.readReplyBatch, readReply(random, 1, 16));
  add('reply: 10 results', MessageKind.readReplyBatch, readReply(random, 10, 64));
  add('reply: 40 results', MessageKind.readReplyBatch, readReply(random, 40, 200));

  const hellos = new HelloEncoder();
  add('hello: start', MessageKind.hello, hellos.encode({ epoch: 1, replicaId: 2, appliedSeq: 0 }).slice());
  add('hello: applied 3', MessageKind.hello, hellos.encode({ epoch: 1, replicaId: 3, appliedSeq: 3 }).slice());
  add('hello: epoch 2', MessageKind.hello, hellos.encode({ epoch: 2, replicaId: 4, appliedSeq: 100 }).slice());

  add('snapshot: empty store', MessageKind.snapshot, snapshotFrames(random, 0, 1024)[0]!);
  const chunked = snapshotFrames(random, 40, 1024);
  add('snapshot: first chunk', MessageKind.snapshot, chunked[0]!);
  add('snapshot: middle chunk', MessageKind.snapshot, chunked[chunked.length >> 1]!);
  add('snapshot: last chunk', MessageKind.snapshot, chunked[chunked.length - 1]!);
  add('snapshot: one frame', MessageKind.snapshot, snapshotFrames(random, 30, 16 * 1024)[0]!);

  add('view: one member', MessageKind.clusterView, encodeClusterView({ epoch: 1, clientId: 0, clientToken: '', members: [{ replicaId: 1, url: 'ws://10.0.0.1:7400' }], joining: null, chains: 1 }));
  add(
    'view: three members and a joiner',
    MessageKind.clusterView,
    encodeClusterView({
      epoch: 4,
      clientId: 17,
      clientToken: 'a-client-token_of-22ch',
      members: [
        { replicaId: 1, url: 'ws://10.0.0.1:7400' },
        { replicaId: 2, url: 'wss://h2.example:7400' },
        { replicaId: 5, url: 'ws://[::1]:7401' },
      ],
      joining: { replicaId: 6, url: 'ws://10.0.0.6:7400' },
      chains: 12,
    }),
  );

  add('watch poll: every key, from now', MessageKind.watchRequest, encodeWatchRequest({ requestId: 1, fromVersion: 0, bytesMax: 65536, prefix: new Uint8Array(0) }));
  add('watch poll: a prefix', MessageKind.watchRequest, encodeWatchRequest({ requestId: 9, fromVersion: 3, bytesMax: 1024, prefix: new TextEncoder().encode('user:') }));
  const replies = new WatchReplyEncoder(4096);
  replies.begin(0);
  add('watch reply: empty', MessageKind.watchReply, replies.finish(1, WatchStatus.Changes, 7, 0));
  add('watch reply: lagged', MessageKind.watchReply, replies.finish(2, WatchStatus.Lagged, 2, 40));
  replies.begin(4096);
  const change = new TextEncoder().encode('user:1value-1user:2');
  replies.add(Op.Put, change, 0, 6, 7, 5);
  replies.add(Op.Delete, change, 13, 6, 0, 9);
  add('watch reply: a put and a delete', MessageKind.watchReply, replies.finish(3, WatchStatus.Changes, 12, 0));

  return frames.map(([name, kind, bytes]) => {
    const layout = layoutOf(bytes);
    if (layout.kind !== kind) throw new Error(`seed ${name} is of kind ${layout.kind}, not ${kind}`);
    return { name, kind, bytes, layout };
  });
}
