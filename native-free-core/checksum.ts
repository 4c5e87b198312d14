/**
 * CRC-32 (the IEEE 802.3 polynomial, reflected: zlib's, gzip's, PNG's), which every write batch
 * carries from the client that encodes it to every replica that applies it.
 *
 * The core computes it in JavaScript (slicing by 8: eight table lookups per 8 bytes), so the
 * simulator and any runtime can check batches. A runtime with a faster one passes it in where the
 * engine takes a `Crc32` (Node: zlib.crc32, native code, several times faster: src/native-crc32.ts);
 * both give the same values, which test/checksum.test.ts checks.
 */

/** CRC-32 of `bytes[start, end)`, continuing from `crc` (0 to start). */
export type Crc32 = (bytes: Uint8Array, start: number, end: number, crc: number) => number;

const POLYNOMIAL = 0xedb88320;
const SLICES = 8;

/** TABLES[k][b]: the CRC of byte b followed by k zero bytes. */
const TABLES: Uint32Array = (() => {
  const tables = new Uint32Array(256 * SLICES);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ POLYNOMIAL : crc >>> 1;
    tables[byte] = crc >>> 0;
  }
  for (let byte = 0; byte < 256; byte++) {
    let crc = tables[byte]!;
    for (let slice = 1; slice < SLICES; slice++) {
      crc = tables[crc & 0xff]! ^ (crc >>> 8);
      tables[slice * 256 + byte] = crc >>> 0;
    }
  }
  return tables;
})();

export const crc32: Crc32 = (bytes, start, end, crc) => {
  const tables = TABLES;
  let value = ~crc;
  let index = start;
  for (const sliced = end - ((end - index) & 7); index < sliced; index += 8) {
    const low = value ^ (bytes[index]! | (bytes[index + 1]! << 8) | (bytes[index + 2]! << 16) | (bytes[index + 3]! << 24));
    value =
      tables[7 * 256 + (low & 0xff)]! ^
      tables[6 * 256 + ((low >>> 8) & 0xff)]! ^
      tables[5 * 256 + ((low >>> 16) & 0xff)]! ^
      tables[4 * 256 + (low >>> 24)]! ^
      tables[3 * 256 + bytes[index + 4]!]! ^
      tables[2 * 256 + bytes[index + 5]!]! ^
      tables[256 + bytes[index + 6]!]! ^
      tables[bytes[index + 7]!]!;
  }
  for (; index < end; index++) value = tables[(value ^ bytes[index]!) & 0xff]! ^ (value >>> 8);
  return ~value >>> 0;
};
