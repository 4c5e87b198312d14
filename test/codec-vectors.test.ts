/**
 * Fixed bytes for every frame kind (as ws's receiver tests feed hex): each kind is encoded and
 * compared with a pinned, annotated hex string, and a pinned hex string is decoded and its fields
 * checked. Round trips alone pass when the encoder and the reader change together; these fail,
 * so a change of the wire format is always a deliberate one (and needs a version story).
 *
 * Offsets in the comments are byte positions in the frame. FlatBuffers writes back to front, so a
 * frame starts with its root offset and ends with the first thing the encoder wrote (the payload).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { encodeCatchUpEnd, SnapshotView, SnapshotWriter } from '../native-free-core/chain/snapshot.js';
import { crc32 } from '../native-free-core/checksum.js';
import { Store } from '../native-free-core/store.js';
import { decodeClusterView, encodeClusterView } from '../native-free-core/wire/cluster-view.js';
import {
  AckEncoder,
  AckView,
  HelloEncoder,
  HelloView,
  MessageKind,
  Op,
  ReadBatchEncoder,
  ReadBatchView,
  ReadReplyEncoder,
  ReadReplyView,
  ReadStatus,
  WriteBatchEncoder,
  WriteBatchView,
  frameKind,
} from '../native-free-core/wire/codec.js';
import { bytesOfHex, hexOf } from './fuzz/frame-mutator.js';

const text = new TextEncoder();
const decoder = new TextDecoder();

/** Joins annotated hex lines (whitespace ignored) into bytes. */
function hex(lines: readonly string[]): Uint8Array {
  const digits = lines.join('').replace(/\s+/g, '');
  assert.match(digits, /^([0-9a-f]{2})*$/, 'pinned hex is whole bytes');
  return bytesOfHex(digits);
}

function assertBytes(actual: Uint8Array, pinned: readonly string[]): void {
  assert.equal(hexOf(actual), hexOf(hex(pinned)));
}

// ---------------------------------------------------------------------------------------------
// The pinned frames

/**
 * Client 7, first client seq 100: put "ab" = "xyz", delete "c". Not yet stamped (epoch 0, first_seq
 * 0). The checksum is the CRC-32 of these 136 bytes with it read as zero (as here before it is set).
 */
const WRITE_BATCH = [
  '10000000', //  0 root: the Frame table is at 16
  '00000000', //  4 padding
  '08000c00', //  8 Frame vtable: 8 bytes; the table is 12 bytes
  '0b000400', // 12   message_type at +11, message at +4
  '08000000', // 16 Frame table: its vtable is at 16 - 8
  '1c000000', // 20   message: the WriteBatch table at 20 + 28 = 48
  '000000 01', // 24   padding, message_type 1 (WriteBatch)
  '1400 3000', // 28 WriteBatch vtable: 20 bytes; the table is 48 bytes
  '2c002000', // 32   epoch at +44, first_seq at +32
  '1c001800', // 36   count at +28, client_id at +24
  '10000c00', // 40   first_client_seq at +16, records at +12
  '08000400', // 44   payload at +8, checksum at +4
  '14000000', // 48 WriteBatch table: its vtable is at 48 - 20
  '3651bde6', // 52   checksum 0xe6bd5136
  '44000000', // 56   payload: at 56 + 68 = 124
  '24000000', // 60   records: at 60 + 36 = 96
  '64000000 00000000', // 64   first_client_seq 100
  '07000000', // 72   client_id 7
  '02000000', // 76   count 2
  '00000000 00000000', // 80   first_seq 0 (the head stamps it)
  '00000000', // 88   padding
  '00000000', // 92   epoch 0 (the head stamps it)
  '02000000', // 96 records: 2 WriteRecords of 12 bytes
  '00 00 0200 03000000 00000000', // 100  Put, flags 0, key 2 bytes, value 3 bytes, payload offset 0
  '01 00 0100 00000000 05000000', // 112  Delete, flags 0, key 1 byte, no value, payload offset 5
  '06000000', // 124 payload: 6 bytes
  '6162 78797a 63 0000', // 128  "ab" "xyz" "c", padding
];

/** WRITE_BATCH as the head stamped it: epoch 3, first_seq 42. Only those two fields differ. */
const WRITE_BATCH_STAMPED = [
  ...WRITE_BATCH.slice(0, 19),
  '2a000000 00000000', // 80   first_seq 42
  '00000000', // 88   padding
  '03000000', // 92   epoch 3
  ...WRITE_BATCH.slice(22),
];

/** Epoch 3, committed seq 2^40 + 5, client 42, committed client seq 12345. */
const ACK = [
  '0c000000', //  0 root: the Frame table is at 12
  '08000c00', //  4 Frame vtable: 8 bytes; the table is 12 bytes
  '0b000400', //  8   message_type at +11, message at +4
  '08000000', // 12 Frame table: its vtable is at 12 - 8
  '14000000', // 16   message: the Ack table at 16 + 20 = 36
  '000000 02', // 20   padding, message_type 2 (Ack)
  '0c002400', // 24 Ack vtable: 12 bytes; the table is 36 bytes
  '20001400', // 28   epoch at +32, committed_seq at +20
  '10000400', // 32   client_id at +16, committed_client_seq at +4
  '0c000000', // 36 Ack table: its vtable is at 36 - 12
  '39300000 00000000', // 40   committed_client_seq 12345
  '00000000', // 48   padding
  '2a000000', // 52   client_id 42
  '05000000 00010000', // 56   committed_seq 2^40 + 5
  '00000000', // 64   padding
  '03000000', // 68   epoch 3
];

/** Epoch 4, first request id 500: read "a" and "bb". */
const READ_BATCH = [
  '10000000', //  0 root: the Frame table is at 16
  '00000000', //  4 padding
  '08000a00', //  8 Frame vtable: 8 bytes; the table is 10 bytes
  '09000400', // 12   message_type at +9, message at +4
  '08000000', // 16 Frame table: its vtable is at 16 - 8
  '14000000', // 20   message: the ReadBatch table at 20 + 20 = 40
  '0003', //     24   padding, message_type 3 (ReadBatch)
  '0e00', //     26 ReadBatch vtable: 14 bytes
  '1c001800', // 28   table 28 bytes; epoch at +24
  '10000c00', // 32   first_request_id at +16, count at +12
  '08000400', // 36   records at +8, payload at +4
  '0e000000', // 40 ReadBatch table: its vtable is at 40 - 14
  '2c000000', // 44   payload: at 44 + 44 = 88
  '14000000', // 48   records: at 48 + 20 = 68
  '02000000', // 52   count 2
  'f4010000 00000000', // 56   first_request_id 500
  '04000000', // 64   epoch 4
  '02000000', // 68 records: 2 ReadRecords of 8 bytes
  '00000000 0100 0000', // 72   key offset 0, key 1 byte, padding
  '01000000 0200 0000', // 80   key offset 1, key 2 bytes, padding
  '03000000', // 88 payload: 3 bytes
  '61 6262 00', // 92   "a" "bb", padding
];

/** Epoch 4, first request id 500, applied seq 99: "val" (version 11), then not found. */
const READ_REPLY = [
  '0c000000', //  0 root: the Frame table is at 12
  '08000a00', //  4 Frame vtable: 8 bytes; the table is 10 bytes
  '09000400', //  8   message_type at +9, message at +4
  '08000000', // 12 Frame table: its vtable is at 12 - 8
  '18000000', // 16   message: the ReadReplyBatch table at 16 + 24 = 40
  '0004', //     20   padding, message_type 4 (ReadReplyBatch)
  '1200', //     22 ReadReplyBatch vtable: 18 bytes
  '2c002800', // 24   table 44 bytes; epoch at +40
  '20001c00', // 28   first_request_id at +32, count at +28
  '10000c00', // 32   applied_seq at +16, statuses at +12
  '08000400', // 36   results at +8, payload at +4
  '12000000', // 40 ReadReplyBatch table: its vtable is at 40 - 18
  '54000000', // 44   payload: at 44 + 84 = 128
  '24000000', // 48   results: at 48 + 36 = 84
  '44000000', // 52   statuses: at 52 + 68 = 120
  '63000000 00000000', // 56   applied_seq 99
  '00000000', // 64   padding
  '02000000', // 68   count 2
  'f4010000 00000000', // 72   first_request_id 500
  '04000000', // 80   epoch 4
  '02000000', // 84 results: 2 ReadResults of 16 bytes
  '00000000 00002640 00000000 03000000', // 88   version 11.0, value offset 0, value 3 bytes
  '00000000 00000000 00000000 00000000', // 104  version 0, no value
  '02000000', // 120 statuses: 2 bytes
  '00 01 0000', // 124  Found, NotFound, padding
  '03000000', // 128 payload: 3 bytes
  '76616c 00', // 132  "val", padding
];

/** Epoch 5, replica 2, applied seq 77. */
const HELLO = [
  '10000000', //  0 root: the Frame table is at 16
  '00000000', //  4 padding
  '08000a00', //  8 Frame vtable: 8 bytes; the table is 10 bytes
  '09000400', // 12   message_type at +9, message at +4
  '08000000', // 16 Frame table: its vtable is at 16 - 8
  '10000000', // 20   message: the Hello table at 20 + 16 = 36
  '0005', //     24   padding, message_type 5 (Hello)
  '0a00', //     26 Hello vtable: 10 bytes
  '14001000', // 28   table 20 bytes; epoch at +16
  '0c000400', // 32   replica_id at +12, applied_seq at +4
  '0a000000', // 36 Hello table: its vtable is at 36 - 10
  '4d000000 00000000', // 40   applied_seq 77
  '02000000', // 48   replica_id 2
  '05000000', // 52   epoch 5
];

/** Epoch 2, applied seq 10, last: "k1" = "v1" at version 3; client 7 at client seq 9. */
const SNAPSHOT = [
  '0c000000', //  0 root: the Frame table is at 12
  '08000a00', //  4 Frame vtable: 8 bytes; the table is 10 bytes
  '09000400', //  8   message_type at +9, message at +4
  '08000000', // 12 Frame table: its vtable is at 12 - 8
  '18000000', // 16   message: the Snapshot table at 16 + 24 = 40
  '0006', //     20   padding, message_type 6 (Snapshot)
  '1200', //     22 Snapshot vtable: 18 bytes
  '24002000', // 24   table 36 bytes; epoch at +32
  '18001700', // 28   applied_seq at +24, last at +23
  '10000c00', // 32   records at +16, versions at +12
  '08000400', // 36   payload at +8, clients at +4
  '12000000', // 40 Snapshot table: its vtable is at 40 - 18
  '20000000', // 44   clients: at 44 + 32 = 76
  '50000000', // 48   payload: at 48 + 80 = 128
  '40000000', // 52   versions: at 52 + 64 = 116
  '2c000000', // 56   records: at 56 + 44 = 100
  '000000 01', // 60   padding, last = true
  '0a000000 00000000', // 64   applied_seq 10
  '02000000', // 72   epoch 2
  '01000000', // 76 clients: 1 ClientMark of 16 bytes
  '07000000 00000000 00000000 00002240', // 80   client 7, padding, high water 9.0
  '00000000', // 96 padding
  '01000000', // 100 records: 1 WriteRecord
  '00 00 0200 02000000 00000000', // 104  Put, flags 0, key 2 bytes, value 2 bytes, payload offset 0
  '01000000', // 116 versions: 1
  '00000000 00000840', // 120  3.0
  '04000000', // 128 payload: 4 bytes
  '6b31 7631', // 132  "k1" "v1"
];

/** Epoch 4, client id 17, one member (replica 1 at ws://a:1), no joiner: the view is JSON text. */
const CLUSTER_VIEW = [
  '0c000000', //  0 root: the Frame table is at 12
  '08000a00', //  4 Frame vtable: 8 bytes; the table is 10 bytes
  '09000400', //  8   message_type at +9, message at +4
  '08000000', // 12 Frame table: its vtable is at 12 - 8
  '10000000', // 16   message: the ClusterView table at 16 + 16 = 32
  '0007', //     20   padding, message_type 7 (ClusterView)
  '0a00', //     22 ClusterView vtable: 10 bytes
  '10000c00', // 24   table 16 bytes; epoch at +12
  '08000400', // 28   client_id at +8, view at +4
  '0a000000', // 32 ClusterView table: its vtable is at 32 - 10
  '0c000000', // 36   view: at 36 + 12 = 48
  '11000000', // 40   client_id 17
  '04000000', // 44   epoch 4
  '51000000', // 48 view: 81 bytes
  hexOf(text.encode('{"members":[{"replicaId":1,"url":"ws://a:1"}],"joining":null,"clientToken":"tok"}')), // 52
  '000000', //  133 padding
];

// ---------------------------------------------------------------------------------------------

describe('WriteBatch bytes', () => {
  test('encodes to the pinned bytes', () => {
    const encoder = new WriteBatchEncoder({ writesMax: 4, payloadBytesMax: 64 });
    encoder.begin(7, 100);
    encoder.addPut(text.encode('ab'), 0, 2, text.encode('xyz'), 0, 3);
    encoder.addDelete(text.encode('c'), 0, 1);
    assertBytes(encoder.finish(), WRITE_BATCH);
  });

  test('the head stamps epoch and first_seq where the pinned stamped bytes have them', () => {
    const frame = hex(WRITE_BATCH);
    const view = new WriteBatchView();
    assert.equal(view.open(frame), null);
    view.stamp(3, 42);
    assertBytes(frame, WRITE_BATCH_STAMPED);
  });

  test('decodes the pinned stamped bytes', () => {
    const frame = hex(WRITE_BATCH_STAMPED);
    assert.equal(frameKind(frame), MessageKind.writeBatch);
    const view = new WriteBatchView();
    assert.equal(view.open(frame), null);
    assert.deepEqual(
      { epoch: view.epoch, firstSeq: view.firstSeq, count: view.count, clientId: view.clientId, firstClientSeq: view.firstClientSeq },
      { epoch: 3, firstSeq: 42, count: 2, clientId: 7, firstClientSeq: 100 },
    );
    assert.equal(view.checksum, 0xe6bd5136);
    assert.ok(view.checksumMatches(crc32), 'the stamps are not part of what the checksum covers');
    const writes = Array.from({ length: view.count }, (_, index) => {
      const record = view.recordAt(index);
      const keyStart = view.keyPosition(record);
      const valueStart = keyStart + record.keyLength();
      return {
        op: record.op(),
        key: decoder.decode(frame.subarray(keyStart, valueStart)),
        value: decoder.decode(frame.subarray(valueStart, valueStart + record.valueLength())),
      };
    });
    assert.deepEqual(writes, [
      { op: Op.Put, key: 'ab', value: 'xyz' },
      { op: Op.Delete, key: 'c', value: '' },
    ]);
  });
});

describe('Ack bytes', () => {
  const fields = { epoch: 3, committedSeq: 2 ** 40 + 5, clientId: 42, committedClientSeq: 12345 };

  test('encodes to the pinned bytes', () => {
    assertBytes(new AckEncoder().encode(fields), ACK);
  });

  test('decodes the pinned bytes', () => {
    const frame = hex(ACK);
    assert.equal(frameKind(frame), MessageKind.ack);
    const view = new AckView();
    assert.equal(view.open(frame), null);
    assert.deepEqual({ epoch: view.epoch, committedSeq: view.committedSeq, clientId: view.clientId, committedClientSeq: view.committedClientSeq }, fields);
  });
});

describe('ReadBatch bytes', () => {
  test('encodes to the pinned bytes', () => {
    const encoder = new ReadBatchEncoder({ readsMax: 4, keyBytesMax: 4 });
    encoder.begin(500);
    encoder.addRead(text.encode('a'), 0, 1);
    encoder.addRead(text.encode('bb'), 0, 2);
    assertBytes(encoder.finish(4), READ_BATCH);
  });

  test('decodes the pinned bytes', () => {
    const frame = hex(READ_BATCH);
    assert.equal(frameKind(frame), MessageKind.readBatch);
    const view = new ReadBatchView();
    assert.equal(view.open(frame), null);
    assert.deepEqual({ epoch: view.epoch, firstRequestId: view.firstRequestId, count: view.count }, { epoch: 4, firstRequestId: 500, count: 2 });
    const keys = Array.from({ length: view.count }, (_, index) => {
      const record = view.recordAt(index);
      const start = view.payloadPosition + record.keyOffset();
      return decoder.decode(frame.subarray(start, start + record.keyLength()));
    });
    assert.deepEqual(keys, ['a', 'bb']);
  });
});

describe('read lanes: a lane other than 0 travels in ReadBatch and ReadReplyBatch (field `lane`); lane 0 is left out, so the bytes above stay those of every client before lanes', () => {
  // The frames above with lane 3: a vtable entry more, and the byte at the end of each table.
  const READ_BATCH_LANE_3 =
    '100000000000000008000c000b000400080000001800000000000003100020001c00140010000c000800070010000000000000032c0000001400000002000000f4010000000000000400000002000000000000000100000001000000020000000300000061626200';
  const READ_REPLY_LANE_3 =
    '0c00000008000c000b000400080000001c00000000000004140030002c0024002000140010000c0008000700140000000000000354000000240000004400000063000000000000000000000002000000f4010000000000000400000002000000000000000000264000000000030000000000000000000000000000000000000002000000000100000300000076616c00';

  test('ReadBatch: encodes and decodes lane 3; the pinned frame without it decodes as lane 0', () => {
    const encoder = new ReadBatchEncoder({ readsMax: 4, keyBytesMax: 4 });
    encoder.begin(500);
    encoder.addRead(text.encode('a'), 0, 1);
    encoder.addRead(text.encode('bb'), 0, 2);
    assert.equal(Buffer.from(encoder.finish(4, 3)).toString('hex'), READ_BATCH_LANE_3);
    const view = new ReadBatchView();
    assert.equal(view.open(Buffer.from(READ_BATCH_LANE_3, 'hex')), null);
    assert.deepEqual({ lane: view.lane, firstRequestId: view.firstRequestId, count: view.count }, { lane: 3, firstRequestId: 500, count: 2 });
    assert.equal(view.open(hex(READ_BATCH)), null);
    assert.equal(view.lane, 0);
  });

  test('ReadReplyBatch: encodes and decodes lane 3; the pinned frame without it decodes as lane 0', () => {
    const encoder = new ReadReplyEncoder(4, 16);
    encoder.begin(500);
    encoder.addFound(text.encode('val'), 0, 3, 11);
    encoder.addNotFound();
    assert.equal(Buffer.from(encoder.finish(4, 99, 3)).toString('hex'), READ_REPLY_LANE_3);
    const view = new ReadReplyView();
    assert.equal(view.open(Buffer.from(READ_REPLY_LANE_3, 'hex')), null);
    assert.deepEqual({ lane: view.lane, firstRequestId: view.firstRequestId, appliedSeq: view.appliedSeq }, { lane: 3, firstRequestId: 500, appliedSeq: 99 });
    assert.equal(view.open(hex(READ_REPLY)), null);
    assert.equal(view.lane, 0);
  });
});

describe('ReadReplyBatch bytes', () => {
  test('encodes to the pinned bytes', () => {
    const encoder = new ReadReplyEncoder(4, 16);
    encoder.begin(500);
    encoder.addFound(text.encode('val'), 0, 3, 11);
    encoder.addNotFound();
    assertBytes(encoder.finish(4, 99), READ_REPLY);
  });

  test('decodes the pinned bytes', () => {
    const frame = hex(READ_REPLY);
    assert.equal(frameKind(frame), MessageKind.readReplyBatch);
    const view = new ReadReplyView();
    assert.equal(view.open(frame), null);
    assert.deepEqual(
      { epoch: view.epoch, firstRequestId: view.firstRequestId, count: view.count, appliedSeq: view.appliedSeq },
      { epoch: 4, firstRequestId: 500, count: 2, appliedSeq: 99 },
    );
    const results = Array.from({ length: view.count }, (_, index) => {
      const result = view.resultAt(index);
      const start = view.payloadPosition + result.valueOffset();
      return { status: view.statusAt(index), version: result.version(), value: decoder.decode(frame.subarray(start, start + result.valueLength())) };
    });
    assert.deepEqual(results, [
      { status: ReadStatus.Found, version: 11, value: 'val' },
      { status: ReadStatus.NotFound, version: 0, value: '' },
    ]);
  });
});

describe('Hello bytes', () => {
  test('encodes to the pinned bytes', () => {
    assertBytes(new HelloEncoder().encode({ epoch: 5, replicaId: 2, appliedSeq: 77 }), HELLO);
  });

  test('decodes the pinned bytes', () => {
    const frame = hex(HELLO);
    assert.equal(frameKind(frame), MessageKind.hello);
    const view = new HelloView();
    assert.equal(view.open(frame), null);
    assert.deepEqual({ epoch: view.epoch, replicaId: view.replicaId, appliedSeq: view.appliedSeq }, { epoch: 5, replicaId: 2, appliedSeq: 77 });
    assert.equal(view.appliedEpoch, 0, 'a member sends no applied_epoch');
  });

  test("a joiner's offer adds applied_epoch, and the same fields otherwise", () => {
    const frame = new HelloEncoder().encode({ epoch: 5, replicaId: 2, appliedSeq: 77, appliedEpoch: 3 }).slice();
    assert.ok(frame.length > hex(HELLO).length);
    const view = new HelloView();
    assert.equal(view.open(frame), null);
    assert.deepEqual({ epoch: view.epoch, replicaId: view.replicaId, appliedSeq: view.appliedSeq, appliedEpoch: view.appliedEpoch }, { epoch: 5, replicaId: 2, appliedSeq: 77, appliedEpoch: 3 });
  });
});

describe('Snapshot bytes', () => {
  test('encodes to the pinned bytes', () => {
    const store = new Store();
    store.put(text.encode('k1'), 0, 2, text.encode('v1'), 0, 2, 3);
    const writer = new SnapshotWriter({ store, epoch: 2, appliedSeq: 10, clientHighWater: new Map([[7, 9]]) }, 1024);
    assertBytes(writer.next(), SNAPSHOT);
    assert.ok(writer.done, 'one frame holds it all');
  });

  test('decodes the pinned bytes', () => {
    const frame = hex(SNAPSHOT);
    assert.equal(frameKind(frame), MessageKind.snapshot);
    const view = new SnapshotView();
    assert.equal(view.open(frame), null);
    assert.deepEqual(
      { epoch: view.epoch, appliedSeq: view.appliedSeq, last: view.last, count: view.count, clientCount: view.clientCount },
      { epoch: 2, appliedSeq: 10, last: true, count: 1, clientCount: 1 },
    );
    const store = new Store();
    const clients = new Map<number, number>();
    view.applyTo(store, clients);
    const entries: Array<[string, string, number]> = [];
    store.forEach((key, value, version) => entries.push([decoder.decode(key), decoder.decode(value), version]));
    assert.deepEqual(entries, [['k1', 'v1', 3]]);
    assert.deepEqual([...clients], [[7, 9]]);
    assert.equal(view.catchUpEnd, false, 'a copy of the store is not the end of a catch-up');
  });

  test('the end of a catch-up: last, no entries, no marks, catch_up_end set', () => {
    const view = new SnapshotView();
    assert.equal(view.open(encodeCatchUpEnd(4, 123)), null);
    assert.deepEqual(
      { epoch: view.epoch, appliedSeq: view.appliedSeq, last: view.last, count: view.count, clientCount: view.clientCount, catchUpEnd: view.catchUpEnd },
      { epoch: 4, appliedSeq: 123, last: true, count: 0, clientCount: 0, catchUpEnd: true },
    );
  });
});

describe('ClusterView bytes', () => {
  const fields = { epoch: 4, clientId: 17, clientToken: 'tok', members: [{ replicaId: 1, url: 'ws://a:1' }], joining: null, chains: 1 };

  test('encodes to the pinned bytes', () => {
    assertBytes(encodeClusterView(fields), CLUSTER_VIEW);
  });

  test('decodes the pinned bytes', () => {
    const frame = hex(CLUSTER_VIEW);
    assert.equal(frameKind(frame), MessageKind.clusterView);
    assert.deepEqual(decodeClusterView(frame), fields);
  });

  test('the diskFull flag: in the JSON only when set, read back; a malformed one refuses the view', () => {
    assert.deepEqual(decodeClusterView(encodeClusterView({ ...fields, diskFull: true })), { ...fields, diskFull: true });
    assert.deepEqual(encodeClusterView({ ...fields, diskFull: false }), encodeClusterView(fields), 'a view of a chain with room keeps its bytes');
    // The same frame with `"diskFull":true` made `"diskFull":1234` (same length: the frame stays whole).
    const malformed = Buffer.from(encodeClusterView({ ...fields, diskFull: true }));
    const at = malformed.indexOf('"diskFull":true') + '"diskFull":'.length;
    malformed.write('1234', at);
    assert.match(String(decodeClusterView(malformed)), /malformed diskFull flag/);
  });

  test('reads at any replica and the members\' zones: in the JSON only when set, read back; malformed ones refuse the view', () => {
    const spread = { ...fields, members: [{ replicaId: 1, url: 'ws://a:1', zone: 'eu-1' }, { replicaId: 2, url: 'ws://b:1' }], readsAnyReplica: true };
    assert.deepEqual(decodeClusterView(encodeClusterView(spread)), spread);
    assert.deepEqual(encodeClusterView({ ...fields, readsAnyReplica: false }), encodeClusterView(fields), 'a view of a chain read at its tail keeps its bytes');
    const badFlag = Buffer.from(encodeClusterView(spread));
    badFlag.write('1234', badFlag.indexOf('"readsAnyReplica":true') + '"readsAnyReplica":'.length);
    assert.match(String(decodeClusterView(badFlag)), /malformed readsAnyReplica flag/);
    const badZone = Buffer.from(encodeClusterView(spread));
    badZone.write('e/', badZone.indexOf('"eu-1"') + 1);
    assert.match(String(decodeClusterView(badZone)), /malformed zone/);
  });
});
