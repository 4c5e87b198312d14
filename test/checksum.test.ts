/**
 * The CRC-32 every write batch carries (native-free-core/checksum.ts): the standard check value, the
 * core's JavaScript and zlib's native code agree on every slice and continuation, and a batch's
 * checksum catches every single-bit flip in the bytes it covers, while the head's stamps (epoch,
 * first_seq) leave it valid.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32 } from '../native-free-core/checksum.js';
import { WriteBatchEncoder, WriteBatchView } from '../native-free-core/wire/codec.js';
import { nativeCrc32 } from '../workers/native-crc32.js';
import { mulberry32 } from './helpers/prng.js';

test('CRC-32 check values: "123456789" is cbf43926, the empty input 0', () => {
  const digits = new TextEncoder().encode('123456789');
  for (const implementation of [crc32, nativeCrc32]) {
    assert.equal(implementation(digits, 0, digits.length, 0), 0xcbf43926);
    assert.equal(implementation(digits, 3, 3, 0), 0);
    // Continuing from a prefix's CRC gives the whole input's.
    assert.equal(implementation(digits, 4, 9, implementation(digits, 0, 4, 0)), 0xcbf43926);
  }
});

test('the JavaScript CRC-32 equals zlib.crc32 on every length, offset and continuation', () => {
  const random = mulberry32(7);
  const bytes = new Uint8Array(new SharedArrayBuffer(4096));
  for (let index = 0; index < bytes.length; index++) bytes[index] = Math.floor(random() * 256);
  for (let trial = 0; trial < 2000; trial++) {
    const start = Math.floor(random() * 64);
    const end = start + Math.floor(random() * (trial < 200 ? 24 : 4000));
    const seed = Math.floor(random() * 2 ** 32);
    assert.equal(crc32(bytes, start, Math.min(end, bytes.length), seed), nativeCrc32(bytes, start, Math.min(end, bytes.length), seed), `trial ${trial}`);
  }
});

test("a batch's checksum catches every single-bit flip outside the head's stamps, and survives the stamps", () => {
  const encoder = new WriteBatchEncoder({ writesMax: 8, payloadBytesMax: 1024 });
  encoder.begin(7, 100);
  encoder.addPut(Buffer.from('ab'), 0, 2, Buffer.from('xyz'), 0, 3);
  encoder.addDelete(Buffer.from('c'), 0, 1);
  const frame = encoder.finish().slice();
  const view = new WriteBatchView();
  assert.equal(view.open(frame), null);
  assert.ok(view.checksumMatches(crc32) && view.checksumMatches(nativeCrc32), 'as encoded');
  view.stamp(3, 41);
  assert.ok(view.checksumMatches(crc32), 'after the head stamped epoch and first_seq');
  const stamped = frame.slice();
  let refused = 0;
  let missed = 0;
  for (let position = 0; position < stamped.length; position++) {
    for (let bit = 0; bit < 8; bit++) {
      const damaged = stamped.slice();
      damaged[position]! ^= 1 << bit;
      const damagedView = new WriteBatchView();
      if (damagedView.open(damaged) !== null || !damagedView.checksumMatches(crc32)) {
        refused++;
        continue;
      }
      // Only a flip in a stamped field may pass (the sequence checks refuse those instead).
      if (damagedView.epoch === 3 && damagedView.firstSeq === 41) missed++;
    }
  }
  assert.equal(missed, 0, 'a flip outside epoch and first_seq always fails the checksum or the verifier');
  assert.ok(stamped.length * 8 - refused <= 12 * 8, 'only flips in the 12 stamped bytes pass');
});
