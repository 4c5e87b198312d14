/**
 * A child process for test/replica-log.test.ts: opens a replica log in `fsync` mode in the
 * directory it is given, recovers it, then appends batches of a few writes each and commits after
 * every few, printing the sequence number each commit made durable, until it is killed.
 */
import { Store } from '../../native-free-core/store.js';
import { FORMAT_RECORD_LIMITS, WriteBatchEncoder, WriteBatchView } from '../../native-free-core/wire/codec.js';
import { nativeCrc32 } from '../../workers/native-crc32.js';
import { ReplicaLog } from '../../workers/replica-log.js';

const directory = process.argv[2]!;
const { log } = ReplicaLog.open(
  { directory, durability: 'fsync', segmentBytesMax: 64 * 1024, frameBytesMax: 8 * 1024, limits: FORMAT_RECORD_LIMITS, syncIntervalMs: 100 },
  new Store(),
);
const encoder = new WriteBatchEncoder({ writesMax: 16, payloadBytesMax: 4096 }, nativeCrc32);
const view = new WriteBatchView();
let seq = log.appendedSeq;
for (let batch = 0; ; batch++) {
  encoder.begin(1, seq + 1);
  const count = 1 + (batch % 7);
  for (let index = 0; index < count; index++) {
    const key = Buffer.from(`k${(seq + index) % 500}`);
    const value = Buffer.from(`v${seq + index + 1}`.padEnd(40, '.'));
    encoder.addPut(key, 0, key.length, value, 0, value.length);
  }
  const frame = encoder.finish().slice();
  if (view.open(frame) !== null) throw new Error('malformed');
  view.stamp(1, seq + 1);
  log.append(frame, seq + 1, view.count);
  seq += count;
  if (batch % 3 === 2) {
    log.commit();
    process.stdout.write(`${log.syncedSeq}\n`);
  }
}
