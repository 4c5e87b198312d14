/**
 * Test records for peer links: RECORD_BYTES bytes, a magic, a sequence number, and filler derived
 * from the sequence number, so the receiver can check order and every byte.
 */
export const RECORD_BYTES = 100;
const MAGIC = 0x31434552; // 'REC1' little-endian

export function writeRecord(target: Uint8Array, seq: number): Uint8Array {
  const view = new DataView(target.buffer, target.byteOffset, RECORD_BYTES);
  view.setUint32(0, MAGIC, true);
  view.setUint32(4, seq, true);
  for (let index = 8; index < RECORD_BYTES; index++) target[index] = (seq + index) & 0xff;
  return target.subarray(0, RECORD_BYTES);
}

/** null if `bytes` is a well-formed test record, else why not (a `validate` for the link). */
export function recordProblem(bytes: Uint8Array): string | null {
  if (bytes.length !== RECORD_BYTES) return `record of ${bytes.length} bytes, expected ${RECORD_BYTES}`;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (view.getUint32(0, true) !== MAGIC) return 'bad magic';
  const seq = view.getUint32(4, true);
  for (let index = 8; index < RECORD_BYTES; index++) {
    if (bytes[index] !== ((seq + index) & 0xff)) return `byte ${index} of record ${seq} is corrupt`;
  }
  return null;
}

export function recordSeq(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.length).getUint32(4, true);
}
