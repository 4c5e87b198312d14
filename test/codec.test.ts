import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import * as flatbuffers from 'flatbuffers';
import {
  AckEncoder,
  AckView,
  frameKind,
  MessageKind,
  Op,
  ReadBatchEncoder,
  ReadBatchView,
  ReadReplyEncoder,
  ReadReplyView,
  ReadStatus,
  WriteBatchEncoder,
  WriteBatchView,
} from '../native-free-core/wire/codec.js';
import { Frame, Message, WriteBatch } from '../native-free-core/wire/generated/schema_generated.js';
import { mulberry32 } from './helpers/prng.js';
import { crc32 } from '../native-free-core/checksum.js';

const text = new TextEncoder();
const bytesOf = (value: string): Uint8Array => text.encode(value);

function sampleBatch(): Uint8Array {
  const encoder = new WriteBatchEncoder({ writesMax: 16, payloadBytesMax: 4096 });
  encoder.begin(7, 100);
  const key = bytesOf('alpha');
  const value = bytesOf('first value');
  encoder.addPut(key, 0, key.length, value, 0, value.length);
  const other = bytesOf('xxbetaxx');
  encoder.addDelete(other, 2, 4);
  const big = new Uint8Array(300).map((_, index) => index & 0xff);
  encoder.addPut(key, 0, 3, big, 0, big.length);
  return encoder.finish().slice();
}

describe('WriteBatch', () => {
  test('round trip: header, records and payload are read in place', () => {
    const frame = sampleBatch();
    assert.equal(frameKind(frame), MessageKind.writeBatch);
    const view = new WriteBatchView();
    assert.equal(view.open(frame), null);
    assert.equal(view.count, 3);
    assert.equal(view.clientId, 7);
    assert.equal(view.firstClientSeq, 100);
    assert.equal(view.epoch, 0);
    assert.equal(view.firstSeq, 0);
    const decoded = [];
    for (let index = 0; index < view.count; index++) {
      const record = view.recordAt(index);
      const keyStart = view.keyPosition(record);
      const key = Buffer.from(frame.subarray(keyStart, keyStart + record.keyLength())).toString();
      const value = frame.subarray(keyStart + record.keyLength(), keyStart + record.keyLength() + record.valueLength());
      decoded.push({ op: record.op(), key, value: Buffer.from(value) });
    }
    assert.deepEqual(decoded.map((record) => [record.op, record.key]), [
      [Op.Put, 'alpha'],
      [Op.Delete, 'beta'],
      [Op.Put, 'alp'],
    ]);
    assert.equal(decoded[0]!.value.toString(), 'first value');
    assert.equal(decoded[1]!.value.length, 0);
    assert.deepEqual([...decoded[2]!.value], Array.from({ length: 300 }, (_, index) => index & 0xff));
  });

  test('the head stamps epoch and first seq in place; nothing else changes', () => {
    const frame = sampleBatch();
    const before = frame.slice();
    const view = new WriteBatchView();
    assert.equal(view.open(frame), null);
    view.stamp(9, 2 ** 40 + 5);
    const reread = new WriteBatchView();
    assert.equal(reread.open(frame), null);
    assert.equal(reread.epoch, 9);
    assert.equal(reread.firstSeq, 2 ** 40 + 5);
    let changed = 0;
    for (let index = 0; index < frame.length; index++) if (frame[index] !== before[index]) changed++;
    assert.ok(changed > 0 && changed <= 4 + 8, `only the stamped fields change (${changed} bytes did)`);
  });

  test('the encoded layout is what the generated accessors read', () => {
    const frame = sampleBatch();
    const buffer = new flatbuffers.ByteBuffer(frame);
    const root = Frame.getRootAsFrame(buffer);
    assert.equal(root.messageType(), Message.WriteBatch);
    const batch = root.message(new WriteBatch()) as WriteBatch;
    assert.equal(batch.recordsLength(), 3);
    assert.equal(batch.records(1)!.op(), Op.Delete);
    assert.equal(batch.records(2)!.valueLength(), 300);
    assert.equal(Number(batch.firstClientSeq()), 100);
  });

  test('every truncation that cuts referenced bytes is rejected with a reason, never an exception', () => {
    const frame = sampleBatch();
    const view = new WriteBatchView();
    assert.equal(view.open(frame), null);
    // FlatBuffers builds back to front: the payload, created first, holds the last referenced byte;
    // anything after it is alignment padding.
    const referencedEnd = view.payloadPosition + view.payloadLength;
    assert.ok(frame.length - referencedEnd < 8);
    for (let length = 0; length < frame.length; length++) {
      const reason = view.open(frame.subarray(0, length));
      if (length < referencedEnd) assert.equal(typeof reason, 'string', `prefix of ${length} bytes was accepted`);
      else assert.equal(reason, null, 'cutting only trailing padding leaves a valid frame');
    }
  });

  test('random corruption never throws and never yields a record outside the frame', () => {
    const original = sampleBatch();
    const random = mulberry32(1234);
    const view = new WriteBatchView();
    let accepted = 0;
    for (let round = 0; round < 5000; round++) {
      const frame = original.slice();
      const flips = 1 + Math.floor(random() * 4);
      for (let flip = 0; flip < flips; flip++) frame[Math.floor(random() * frame.length)] = Math.floor(random() * 256);
      const reason = view.open(frame);
      if (reason !== null) continue;
      accepted++;
      for (let index = 0; index < view.count; index++) {
        const record = view.recordAt(index);
        const end = view.keyPosition(record) + record.keyLength() + record.valueLength();
        assert.ok(end <= frame.length, `record ${index} ends at ${end}, beyond ${frame.length}`);
        assert.ok(record.keyLength() > 0);
      }
    }
    assert.ok(accepted > 0, 'some corruptions (e.g. in payload bytes) are still well-formed frames');
  });

  test('specific malformations are named', () => {
    const view = new WriteBatchView();
    assert.match(view.open(new Uint8Array(3))!, /shorter than a root table/);
    assert.match(view.open(new Uint8Array(64).fill(0xff))!, /outside/);
    // An Ack frame is not a WriteBatch.
    const ack = new AckEncoder().encode({ epoch: 1, committedSeq: 5, clientId: 1, committedClientSeq: 5 });
    assert.match(view.open(ack)!, /expected a WriteBatch frame/);
    // A record whose value runs past the payload.
    const frame = sampleBatch();
    assert.equal(view.open(frame), null);
    view.recordAt(0).mutate_value_length(100_000);
    assert.match(view.open(frame)!, /overruns the payload/);
    // An unknown op.
    const other = sampleBatch();
    assert.equal(view.open(other), null);
    view.recordAt(1).mutate_op(9 as Op);
    assert.match(view.open(other)!, /unknown op 9/);
  });

  test('a batch encoded without forced defaults cannot be stamped, so it is rejected', () => {
    const builder = new flatbuffers.Builder(256);
    WriteBatch.startRecordsVector(builder, 1);
    builder.prep(4, 12);
    builder.writeInt32(0);
    builder.writeInt32(0);
    builder.writeInt32((1 << 16) | Op.Put);
    const records = builder.endVector();
    const payload = builder.createByteVector(new Uint8Array([65]));
    const batch = WriteBatch.createWriteBatch(builder, 0, BigInt(0), 1, 1, BigInt(1), records, payload, 0, 0);
    builder.finish(Frame.createFrame(builder, Message.WriteBatch, batch));
    assert.match(new WriteBatchView().open(builder.asUint8Array())!, /required field epoch is absent/);
  });

  test('a frame decodes in place from a SharedArrayBuffer', () => {
    const frame = sampleBatch();
    const shared = new Uint8Array(new SharedArrayBuffer(frame.length + 12)).subarray(4, 4 + frame.length);
    shared.set(frame);
    const view = new WriteBatchView();
    assert.equal(view.open(shared), null);
    assert.equal(view.recordAt(2).valueLength(), 300);
  });

  test('fits() and the limits are enforced', () => {
    const encoder = new WriteBatchEncoder({ writesMax: 2, payloadBytesMax: 10 });
    encoder.begin(1, 1);
    assert.ok(encoder.fits(5, 5));
    assert.ok(!encoder.fits(5, 6));
    encoder.addPut(bytesOf('k'), 0, 1, bytesOf('v'), 0, 1);
    encoder.addPut(bytesOf('k'), 0, 1, bytesOf('v'), 0, 1);
    assert.ok(!encoder.fits(1, 0), 'writesMax reached');
    assert.throws(() => encoder.addPut(bytesOf('k'), 0, 1, bytesOf('v'), 0, 1), { code: 'DABBA_ERR_ASSERTION' });
  });
});

describe('Ack', () => {
  test('round trip with 53-bit sequence numbers', () => {
    const bytes = new AckEncoder().encode({ epoch: 3, committedSeq: 2 ** 53 - 1, clientId: 42, committedClientSeq: 12345 });
    assert.equal(frameKind(bytes), MessageKind.ack);
    const view = new AckView();
    assert.equal(view.open(bytes), null);
    assert.deepEqual(
      { epoch: view.epoch, committedSeq: view.committedSeq, clientId: view.clientId, committedClientSeq: view.committedClientSeq },
      { epoch: 3, committedSeq: 2 ** 53 - 1, clientId: 42, committedClientSeq: 12345 },
    );
  });

  test('a sequence number beyond 2^53 is malformed', () => {
    const bytes = new AckEncoder().encode({ epoch: 1, committedSeq: 1, clientId: 1, committedClientSeq: 1 }).slice();
    const view = new AckView();
    assert.equal(view.open(bytes), null);
    // Find the committed_seq field (value 1 as uint64) and set its high word.
    const high = bytes.findIndex((_, index) => index % 4 === 0 && bytes[index] === 1 && bytes.subarray(index + 1, index + 8).every((byte) => byte === 0));
    assert.ok(high >= 0);
    bytes[high + 7] = 0x7f;
    assert.match(view.open(bytes)!, /exceeds 2\^53/);
  });
});

describe('reads', () => {
  test('read batch and reply round trip, including not-found and chunked replies', () => {
    const encoder = new ReadBatchEncoder({ readsMax: 8, keyBytesMax: 16 });
    encoder.begin(500);
    for (const key of ['a', 'bb', 'ccc']) encoder.addRead(bytesOf(key), 0, key.length);
    const frame = encoder.finish(4).slice();
    assert.equal(frameKind(frame), MessageKind.readBatch);
    const view = new ReadBatchView();
    assert.equal(view.open(frame), null);
    assert.equal(view.firstRequestId, 500);
    assert.equal(view.epoch, 4);
    const keys = Array.from({ length: view.count }, (_, index) => {
      const record = view.recordAt(index);
      const start = view.payloadPosition + record.keyOffset();
      return Buffer.from(frame.subarray(start, start + record.keyLength())).toString();
    });
    assert.deepEqual(keys, ['a', 'bb', 'ccc']);

    const reply = new ReadReplyEncoder(4, 64);
    reply.begin(500);
    reply.addFound(bytesOf('value-a'), 0, 7, 11);
    reply.addNotFound();
    assert.ok(!reply.fits(60), 'a reply knows when a value would not fit');
    const replyFrame = reply.finish(4, 99).slice();
    const replyView = new ReadReplyView();
    assert.equal(replyView.open(replyFrame), null);
    assert.equal(replyView.appliedSeq, 99);
    assert.equal(replyView.statusAt(0), ReadStatus.Found);
    assert.equal(replyView.statusAt(1), ReadStatus.NotFound);
    const result = replyView.resultAt(0);
    assert.equal(result.version(), 11);
    const start = replyView.payloadPosition + result.valueOffset();
    assert.equal(Buffer.from(replyFrame.subarray(start, start + result.valueLength())).toString(), 'value-a');
  });

  test('truncated read frames are rejected', () => {
    const encoder = new ReadBatchEncoder({ readsMax: 2, keyBytesMax: 8 });
    encoder.begin(1);
    encoder.addRead(bytesOf('key'), 0, 3);
    const frame = encoder.finish(1).slice();
    const view = new ReadBatchView();
    assert.equal(view.open(frame), null);
    const referencedEnd = view.payloadPosition + view.payloadLength;
    for (let length = 0; length < referencedEnd; length++) assert.equal(typeof view.open(frame.subarray(0, length)), 'string');
  });
});

describe('generated code', () => {
  test('the committed generated code matches the schema (flatc regenerates it identically)', (context) => {
    let flatc = true;
    try {
      execFileSync('flatc', ['--version'], { stdio: 'ignore' });
    } catch {
      flatc = false;
    }
    if (!flatc) {
      // Not a silent skip: CI installs flatbuffers-compiler, and this says what is missing elsewhere.
      context.diagnostic('flatc not found: apt-get install -y flatbuffers-compiler to check the generated code');
      assert.ok(process.env.CI !== 'true', 'CI must have flatc installed (.ci/run installs flatbuffers-compiler)');
      return;
    }
    const directory = mkdtempSync(join(tmpdir(), 'dabba-schema-'));
    try {
      execFileSync('bash', ['native-free-core/wire/generate.sh', directory]);
      const fresh = readFileSync(join(directory, 'schema_generated.ts'), 'utf8');
      const committed = readFileSync('native-free-core/wire/generated/schema_generated.ts', 'utf8');
      assert.equal(fresh, committed, 'run npm run gen:schema and commit the result');
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});

describe('conditional writes on the wire', () => {
  function conditionalBatch(): Uint8Array {
    const encoder = new WriteBatchEncoder({ writesMax: 8, payloadBytesMax: 256 });
    encoder.begin(3, 1);
    encoder.addPut(bytesOf('a'), 0, 1, bytesOf('1'), 0, 1, 7);
    encoder.addPut(bytesOf('b'), 0, 1, bytesOf('2'), 0, 1);
    encoder.addDelete(bytesOf('c'), 0, 1, 0);
    return encoder.finish().slice();
  }

  test('a batch carries the expected version of each conditional record, in order; one without conditions has no vector', () => {
    const view = new WriteBatchView();
    assert.equal(view.open(conditionalBatch()), null);
    assert.equal(view.conditionalCount, 2);
    assert.deepEqual([0, 1, 2].map((index) => view.recordAt(index).flags()), [1, 0, 1]);
    assert.deepEqual([view.expectedVersionAt(0), view.expectedVersionAt(1)], [7, 0]);
    assert.ok(view.checksumMatches(crc32), 'the expected versions are under the checksum');
    assert.equal(view.open(sampleBatch()), null);
    assert.equal(view.conditionalCount, 0);
  });

  test('unknown flags, a conditional record with no expected version, and an expected version that is no version are malformed', () => {
    const view = new WriteBatchView();
    const recordFlags = (frame: Uint8Array, index: number): number => {
      assert.equal(view.open(frame), null);
      return view.recordAt(index).bb_pos + 1;
    };
    const unknownFlag = conditionalBatch();
    unknownFlag[recordFlags(unknownFlag, 1)] = 2;
    assert.match(view.open(unknownFlag)!, /unknown flags 2/);
    const unmatched = conditionalBatch();
    unmatched[recordFlags(unmatched, 1)] = 1;
    assert.match(view.open(unmatched)!, /conditional beyond the 2 expected versions/);
    const plain = sampleBatch();
    plain[recordFlags(plain, 0)] = 1;
    assert.match(view.open(plain)!, /conditional beyond the 0 expected versions/);
    const notAVersion = conditionalBatch();
    assert.equal(view.open(notAVersion), null);
    const at = Buffer.from(notAVersion).indexOf(Buffer.from(new Float64Array([7]).buffer));
    new DataView(notAVersion.buffer, notAVersion.byteOffset).setFloat64(at, 2.5, true);
    assert.match(view.open(notAVersion)!, /expects version 2.5/);
  });

  test("a refused record's value is its reason: bounded by REJECTION_REASON_BYTES_MAX, not by valueBytesMax (a chain of small values still carries a long reason)", () => {
    const encoder = new WriteBatchEncoder({ writesMax: 2, payloadBytesMax: 1024 });
    encoder.begin(3, 1);
    const reason = bytesOf('r'.repeat(100));
    encoder.payload.set(bytesOf('k'), 0);
    encoder.payload.set(reason, 1);
    encoder.addRecord(Op.Rejected, 1, reason.length);
    const frame = encoder.finish().slice();
    assert.equal(new WriteBatchView({ keyBytesMax: 8, valueBytesMax: 24 }).open(frame), null);
    const long = new WriteBatchEncoder({ writesMax: 2, payloadBytesMax: 1024 });
    long.begin(3, 1);
    long.payload.set(bytesOf('k'), 0);
    long.addRecord(Op.Rejected, 1, 300);
    assert.match(new WriteBatchView().open(long.finish())!, /reason over 256 bytes/);
  });

  test('a client ack lists failed conditional writes from reported_from on, in order; anything else is malformed', () => {
    const encoder = new AckEncoder();
    const view = new AckView();
    const ack = { epoch: 2, committedSeq: 40, clientId: 3, committedClientSeq: 20, reportedFrom: 11, failures: [{ clientSeq: 12, currentVersion: 9 }, { clientSeq: 20, currentVersion: 0 }] };
    assert.equal(view.open(encoder.encode(ack)), null);
    assert.deepEqual(
      { reportedFrom: view.reportedFrom, failures: Array.from({ length: view.failureCount }, (_, index) => ({ clientSeq: view.failureClientSeqAt(index), currentVersion: view.failureVersionAt(index) })) },
      { reportedFrom: 11, failures: ack.failures },
    );
    assert.equal(view.open(encoder.encode({ epoch: 2, committedSeq: 40, clientId: 3, committedClientSeq: 20 })), null);
    assert.deepEqual([view.reportedFrom, view.failureCount], [0, 0], 'an ack without a report keeps its old bytes and reads as none');
    assert.match(view.open(encoder.encode({ ...ack, failures: [...ack.failures].reverse() }))!, /not in order/);
    assert.match(view.open(encoder.encode({ ...ack, failures: [{ clientSeq: 21, currentVersion: 1 }] }))!, /not in order within 11..20/);
    assert.match(view.open(encoder.encode({ ...ack, failures: [{ clientSeq: 10, currentVersion: 1 }] }))!, /not in order within 11..20/);
    assert.match(view.open(encoder.encode({ ...ack, reportedFrom: 0 }))!, /failures without reported_from/);
    assert.match(view.open(encoder.encode({ ...ack, failures: [{ clientSeq: 12, currentVersion: -1 }] }))!, /has version -1/);
  });
});
