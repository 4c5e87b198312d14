/**
 * A replica log's segment format (native-free-core/log/segment.ts): pinned bytes, a round trip, a
 * file cut at every byte of its last record (a crash while appending: the torn end is dropped and
 * every record before it kept), and damage before the last record (corruption, named by offset,
 * never mistaken for a torn end).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32 } from '../native-free-core/checksum.js';
import { encodeSegment, recordBytes, scanSegment, SEGMENT_HEADER_BYTES } from '../native-free-core/log/segment.js';
import { hexOf } from './fuzz/frame-mutator.js';
import { mulberry32 } from './helpers/prng.js';

const FRAME_BYTES_MAX = 4096;

/** A segment holding `frames`, as an appender writes it. */
function segmentOf(frames: Uint8Array[]): Uint8Array {
  return encodeSegment(frames, crc32);
}

function framesOf(seed: number, count: number): Uint8Array[] {
  const random = mulberry32(seed);
  return Array.from({ length: count }, () => Uint8Array.from({ length: 1 + Math.floor(random() * 200) }, () => Math.floor(random() * 256)));
}

test('a segment of one record has the pinned bytes', () => {
  assert.equal(
    hexOf(segmentOf([new TextEncoder().encode('abc')])),
    [
      '64616262616c6731', //  0 magic "dabbalg1"
      '03000000', //          8 frame length 3
      '335de166', //         12 CRC-32 of 03000000 616263
      '616263', //           16 the frame
      '0000000000', //       19 padding to 24
    ].join(''),
  );
});

test('every record reads back, with the offset appending resumes at', () => {
  const frames = framesOf(1, 20);
  const bytes = segmentOf(frames);
  const scan = scanSegment(bytes, crc32, FRAME_BYTES_MAX);
  assert.equal(scan.problem, null);
  assert.equal(scan.end, bytes.length);
  assert.deepEqual(
    scan.records.map((record) => hexOf(bytes.subarray(record.frameOffset, record.frameOffset + record.frameLength))),
    frames.map((frame) => hexOf(frame)),
  );
  assert.deepEqual(scanSegment(new Uint8Array(0), crc32, FRAME_BYTES_MAX), { records: [], end: 0, problem: null }, 'an empty file is an empty segment');
});

test('a file cut at any byte of its last record keeps every record before it and marks the rest torn', () => {
  const frames = framesOf(2, 6);
  const whole = segmentOf(frames);
  const lastStart = whole.length - recordBytes(frames.at(-1)!.length);
  for (let cut = lastStart; cut < whole.length; cut++) {
    for (const tail of ['cut', 'zeros'] as const) {
      // Cut short, or the right length with the unwritten part still zeros (the file was extended first).
      const bytes = tail === 'cut' ? whole.slice(0, cut) : Uint8Array.from(whole, (byte, index) => (index < cut ? byte : 0));
      const scan = scanSegment(bytes, crc32, FRAME_BYTES_MAX);
      if (cut === lastStart && tail === 'cut') {
        assert.equal(scan.problem, null, 'cut exactly between records: nothing is torn');
      } else if (tail === 'zeros' && cut >= lastStart + 8 + frames.at(-1)!.length) {
        assert.equal(scan.problem, null, `cut at ${cut} in the padding only: the record is whole`);
        continue;
      } else {
        assert.equal(scan.problem?.kind, 'torn', `cut at ${cut} (${tail}): ${JSON.stringify(scan.problem)}`);
        assert.equal(scan.problem.offset, lastStart);
      }
      assert.equal(scan.records.length, frames.length - 1, `cut at ${cut} (${tail}): the records before the last are kept`);
      assert.equal(scan.end, lastStart);
    }
  }
});

test('damage before the last record is corruption, named by its offset, whatever byte it hits', () => {
  const frames = framesOf(3, 5);
  const whole = segmentOf(frames);
  const starts: number[] = [];
  let offset = SEGMENT_HEADER_BYTES;
  for (const frame of frames) {
    starts.push(offset);
    offset += recordBytes(frame.length);
  }
  const middle = 2;
  const covered = starts[middle]! + 8 + frames[middle]!.length; // padding after it is not checked
  for (let position = starts[middle]!; position < covered; position++) {
    const bytes = whole.slice();
    bytes[position]! ^= 0x40;
    const scan = scanSegment(bytes, crc32, FRAME_BYTES_MAX);
    assert.equal(scan.problem?.kind, 'corrupt', `a flip at ${position}: ${JSON.stringify(scan.problem)}`);
    assert.equal(scan.problem.offset, starts[middle], 'the damaged record is named');
    assert.equal(scan.records.length, middle, 'the records before it read back');
  }
  const notSegment = whole.slice();
  notSegment[0] = 0x44;
  assert.equal(scanSegment(notSegment, crc32, FRAME_BYTES_MAX).problem?.kind, 'corrupt', 'a file without the magic is not a segment');
});
