/**
 * Sealed values: client-side encryption of every value with AES-256-GCM under versioned keys, so
 * that replicas, the links between hosts, etcd and anyone reading a replica's memory only ever see
 * sealed bytes. Keys never leave the client (the process that calls put): they are not part of
 * ResolvedOptions, which travels to the replicas' threads.
 *
 * A sealed value, as stored (SEAL_OVERHEAD_BYTES = 33 bytes more than the plaintext):
 *
 *   offset  bytes  field
 *   0       1      format: SEALED_FORMAT (0xda: AES-256-GCM, this layout)
 *   1       4      key version, uint32 little-endian (1 .. 2^32-1), like the FlatBuffers frames
 *   5       12     nonce, random for every seal
 *   17      n      ciphertext (n = the plaintext's length)
 *   17 + n  16     authentication tag
 *
 * The associated data is the 5-byte header (format and key version) followed by the record's key
 * bytes (UTF-8 for a string key). So a sealed value copied to another key, or re-labelled with
 * another key version, or in another format, fails to open, as does any flipped bit; opening
 * reports DABBA_ERR_CORRUPT and never returns the bytes. Neither the key bytes nor the version are
 * secret: they are bound, not hidden.
 *
 * Nonces are random (96 bits each), the usual choice when many clients seal under one key with no
 * coordination. NIST SP 800-38D bounds random nonces to 2^32 seals per key: rotate to a new key
 * version well before four billion writes under one version, counting every client's.
 *
 * Rotation: give a key set with a new version and make it `current` (setSealingKeys on a running
 * chain or client): new writes use it, values sealed under older versions still open as long as
 * their version's key is in the set, and reseal() re-seals them under the current version, after
 * which the old key can be dropped.
 */
import { Buffer } from 'node:buffer';
import { createCipheriv, createDecipheriv, createSecretKey, randomFillSync, type KeyObject } from 'node:crypto';
import { assert } from '../native-free-core/assert.js';
import { argumentTypeError, DabbaError, ErrorCode, rangeError } from '../native-free-core/errors.js';
import type { VersionedValue } from './read-pipeline.js';
import type { KeyInput, ValueInput } from './write-pipeline.js';
import type { SealingOptions } from './options.js';

export type { SealingOptions };

/** The first byte of a sealed value: AES-256-GCM in the layout above. Another layout gets another byte. */
export const SEALED_FORMAT = 0xda;
const VERSION_OFFSET = 1;
const NONCE_OFFSET = 5;
const NONCE_BYTES = 12;
const HEADER_BYTES = NONCE_OFFSET;
const CIPHERTEXT_OFFSET = NONCE_OFFSET + NONCE_BYTES;
const TAG_BYTES = 16;
/** Bytes a sealed value has beyond its plaintext: format, key version, nonce, tag. */
export const SEAL_OVERHEAD_BYTES = CIPHERTEXT_OFFSET + TAG_BYTES;
export const KEY_VERSION_MAX = 0xffff_ffff;
const AES_256_KEY_BYTES = 32;
const CIPHER = 'aes-256-gcm';
/** Nonces drawn from the system's random source at once, to amortise the call (~1 µs) over seals. */
const NONCE_POOL_NONCES = 256;
/** How many bytes of a key an error message shows. */
const KEY_SHOWN_BYTES_MAX = 64;

/**
 * The largest plaintext a chain with this valueBytesMax takes when sealing: the one place the
 * sealing overhead is subtracted.
 */
export function sealedPlaintextBytesMax(valueBytesMax: number): number {
  return valueBytesMax - SEAL_OVERHEAD_BYTES;
}

/** Seals and opens values under one set of versioned keys. Validates the set when built. */
export class Sealer {
  readonly currentVersion: number;
  /** The largest plaintext seal() takes: the sealed value must fit valueBytesMax. */
  readonly plaintextBytesMax: number;
  private readonly valueBytesMax: number;
  private readonly keys: Map<number, KeyObject>;
  private readonly currentKey: KeyObject;
  private readonly noncePool = Buffer.allocUnsafe(NONCE_POOL_NONCES * NONCE_BYTES);
  private noncePoolOffset = this.noncePool.length;

  constructor(options: SealingOptions, limits: { valueBytesMax: number }) {
    if (typeof options !== 'object' || options === null) throw argumentTypeError('sealing must be an object { keys, current }');
    this.keys = keySet(options.keys);
    this.currentVersion = keyVersion(options.current, 'sealing.current');
    const currentKey = this.keys.get(this.currentVersion);
    if (currentKey === undefined) {
      throw rangeError(`sealing.current (${this.currentVersion}) must be one of the versions in sealing.keys (${[...this.keys.keys()].join(', ')})`);
    }
    this.currentKey = currentKey;
    this.valueBytesMax = limits.valueBytesMax;
    this.plaintextBytesMax = sealedPlaintextBytesMax(limits.valueBytesMax);
    if (this.plaintextBytesMax < 0) {
      throw rangeError(`valueBytesMax (${limits.valueBytesMax}) must hold the sealing overhead (${SEAL_OVERHEAD_BYTES} bytes)`);
    }
  }

  /** The key versions this sealer opens, lowest first. */
  get versions(): number[] {
    return [...this.keys.keys()].sort((a, b) => a - b);
  }

  /**
   * Seals `value` for `key` under the current key version. Throws a coded TypeError for a key or
   * value that is neither a string nor bytes, DABBA_ERR_VALUE_TOO_LARGE for a value whose sealed
   * form would not fit valueBytesMax.
   */
  seal(key: KeyInput, value: ValueInput): Uint8Array {
    const keyBytes = bytesOf(key, 'key');
    const plaintext = bytesOf(value, 'value');
    if (plaintext.length > this.plaintextBytesMax) {
      throw new DabbaError(
        ErrorCode.valueTooLarge,
        `value of ${plaintext.length} bytes exceeds ${this.plaintextBytesMax} bytes: valueBytesMax (${this.valueBytesMax}) less the sealing overhead (${SEAL_OVERHEAD_BYTES} bytes)`,
      );
    }
    const sealed = Buffer.allocUnsafe(plaintext.length + SEAL_OVERHEAD_BYTES);
    sealed[0] = SEALED_FORMAT;
    sealed.writeUInt32LE(this.currentVersion, VERSION_OFFSET);
    this.takeNonce(sealed, NONCE_OFFSET);
    const cipher = createCipheriv(CIPHER, this.currentKey, sealed.subarray(NONCE_OFFSET, CIPHERTEXT_OFFSET), { authTagLength: TAG_BYTES });
    // Two setAAD calls authenticate their concatenation (GCM's associated data is a stream): the
    // header, then the key, without copying them together. The fixed-bytes test pins this.
    cipher.setAAD(sealed.subarray(0, HEADER_BYTES));
    cipher.setAAD(keyBytes);
    const ciphertext = cipher.update(plaintext);
    const rest = cipher.final();
    assert(ciphertext.length === plaintext.length && rest.length === 0, 'seal: GCM output is as long as its input');
    sealed.set(ciphertext, CIPHERTEXT_OFFSET);
    sealed.set(cipher.getAuthTag(), CIPHERTEXT_OFFSET + plaintext.length);
    return sealed;
  }

  /**
   * Opens a value stored under `key`, with the key version it names. Throws DABBA_ERR_CORRUPT,
   * naming the key, when it does not open: tampered with, copied from another key, sealed under
   * a version this sealer does not hold, or not a sealed value. Never returns unauthenticated bytes.
   */
  open(key: KeyInput, sealed: Uint8Array): Buffer {
    const version = this.versionOf(sealed);
    if (version === null) throw corrupt(key, `is not a sealed value (${describeStored(sealed)})`);
    const secretKey = this.keys.get(version);
    if (secretKey === undefined) throw corrupt(key, `was sealed with key version ${version}, which is not among this client's (${this.versions.join(', ')})`);
    const tagOffset = sealed.length - TAG_BYTES;
    const decipher = createDecipheriv(CIPHER, secretKey, sealed.subarray(NONCE_OFFSET, CIPHERTEXT_OFFSET), { authTagLength: TAG_BYTES });
    decipher.setAuthTag(sealed.subarray(tagOffset));
    decipher.setAAD(sealed.subarray(0, HEADER_BYTES));
    decipher.setAAD(bytesOf(key, 'key'));
    const plaintext = decipher.update(sealed.subarray(CIPHERTEXT_OFFSET, tagOffset));
    try {
      decipher.final();
    } catch (cause) {
      throw corrupt(key, `failed authentication under key version ${version}: tampered with, copied from another key, or sealed under another key of that version`, cause);
    }
    return plaintext;
  }

  /** The key version a sealed value names, or null if it is not a sealed value (wrong format byte, too short). */
  versionOf(sealed: Uint8Array): number | null {
    if (!(sealed instanceof Uint8Array) || sealed.length < SEAL_OVERHEAD_BYTES || sealed[0] !== SEALED_FORMAT) return null;
    const version = sealed[1]! | (sealed[2]! << 8) | (sealed[3]! << 16) | (sealed[4]! << 24);
    return version >>> 0;
  }

  private takeNonce(target: Buffer, offset: number): void {
    if (this.noncePoolOffset === this.noncePool.length) {
      randomFillSync(this.noncePool);
      this.noncePoolOffset = 0;
    }
    // Each nonce is handed out once: the offset only moves forward until the pool is refilled.
    this.noncePool.copy(target, offset, this.noncePoolOffset, this.noncePoolOffset + NONCE_BYTES);
    this.noncePoolOffset += NONCE_BYTES;
  }
}

/** The Sealer for a createChain()/connect() `sealing` option, or null without one. */
export function sealerFor(options: SealingOptions | undefined, limits: { valueBytesMax: number }): Sealer | null {
  return options === undefined ? null : new Sealer(options, limits);
}

/**
 * Refuses a `sealing` option where it would be ignored: inside connect()'s `chain` (it belongs at
 * the top of connect()'s options) and in a host's chain settings (hosts never hold keys).
 */
export function refuseSealingIn(options: object | undefined, where: string): void {
  if (options !== undefined && options !== null && (options as { sealing?: unknown }).sealing !== undefined) {
    throw argumentTypeError(`sealing is not an option of ${where}`);
  }
}

function keySet(keys: unknown): Map<number, KeyObject> {
  if (typeof keys !== 'object' || keys === null || Array.isArray(keys) || keys instanceof Map) {
    throw argumentTypeError('sealing.keys must be an object mapping key versions to 32-byte keys');
  }
  const set = new Map<number, KeyObject>();
  for (const [name, key] of Object.entries(keys)) {
    // Object keys are strings: "7" names version 7; "07", "7.5" or "x" name no integer version.
    const numeric = Number(name);
    const version = keyVersion(String(numeric) === name ? numeric : name, `sealing.keys version ${JSON.stringify(name)}`);
    if (!(key instanceof Uint8Array)) throw argumentTypeError(`sealing.keys[${version}] must be a Uint8Array or Buffer of ${AES_256_KEY_BYTES} bytes`);
    if (key.length !== AES_256_KEY_BYTES) throw rangeError(`sealing.keys[${version}] must be ${AES_256_KEY_BYTES} bytes (AES-256), got ${key.length}`);
    // createSecretKey copies the bytes: a caller that later reuses or zeroes its buffer changes nothing here.
    set.set(version, createSecretKey(key));
  }
  if (set.size === 0) throw rangeError('sealing.keys must hold at least one key version');
  return set;
}

function keyVersion(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw argumentTypeError(`${name} must be an integer key version, got ${typeof value === 'string' ? JSON.stringify(value) : typeof value}`);
  }
  if (value < 1 || value > KEY_VERSION_MAX) throw rangeError(`${name} must be between 1 and ${KEY_VERSION_MAX}, got ${value}`);
  return value;
}

function bytesOf(input: KeyInput | ValueInput, name: 'key' | 'value'): Uint8Array {
  if (typeof input === 'string') return Buffer.from(input, 'utf8');
  if (input instanceof Uint8Array) return input;
  throw argumentTypeError(`${name} must be a string or a Uint8Array, got ${input === null ? 'null' : typeof input}`);
}

function corrupt(key: KeyInput, problem: string, cause?: unknown): DabbaError {
  return new DabbaError(ErrorCode.corrupt, `the value of ${describeKey(key)} ${problem}`, cause === undefined ? undefined : { cause });
}

function describeStored(stored: unknown): string {
  if (!(stored instanceof Uint8Array)) return `not bytes but ${stored === null ? 'null' : typeof stored}`;
  if (stored.length < SEAL_OVERHEAD_BYTES) return `${stored.length} bytes, fewer than the ${SEAL_OVERHEAD_BYTES} of an empty sealed value`;
  return `format byte 0x${stored[0]!.toString(16).padStart(2, '0')}, not 0x${SEALED_FORMAT.toString(16)}`;
}

/** A key for an error message: a string key quoted, a byte key in hex; long keys cut. */
export function describeKey(key: KeyInput): string {
  if (typeof key === 'string') {
    return key.length <= KEY_SHOWN_BYTES_MAX ? `key ${JSON.stringify(key)}` : `key ${JSON.stringify(key.slice(0, KEY_SHOWN_BYTES_MAX))}… (${key.length} characters)`;
  }
  const shown = Buffer.from(key.buffer, key.byteOffset, Math.min(key.length, KEY_SHOWN_BYTES_MAX)).toString('hex');
  return key.length <= KEY_SHOWN_BYTES_MAX ? `key 0x${shown}` : `key 0x${shown}… (${key.length} bytes)`;
}

/** The write side a SealedValues layer sits on (a WritePipeline). */
export interface ValueWrites {
  put(key: KeyInput, value: ValueInput, expectedVersion?: number): Promise<void>;
  putMany(entries: Iterable<readonly [KeyInput, ValueInput]>): Promise<void>;
}

/** The read side a SealedValues layer sits on (a ReadPipeline). */
export interface ValueReads {
  get(key: KeyInput): Promise<VersionedValue | undefined>;
}

/** What reseal() did. */
export interface ResealReport {
  /** Keys read. */
  examined: number;
  /** Keys written back sealed under the current version. */
  resealed: number;
  /** Keys already sealed under the current version (left alone). */
  current: number;
  /** Keys with no value (left alone). */
  absent: number;
}

/** Keys reseal() reads at once before writing back the ones it re-sealed: one round trip each way. */
const RESEAL_WINDOW_KEYS_MAX = 1024;

/**
 * The sealing layer of a chain or remote client: seals values on their way into the write
 * pipeline and opens them on their way out of the read pipeline. Chain and RemoteClient both
 * delegate to it (and only when they have a `sealing` option: without one, a write runs no code of
 * this module), so the layer is written, and tested, once.
 */
export class SealedValues {
  private readonly windowKeys: number;

  constructor(
    private sealer: Sealer,
    private readonly writes: ValueWrites,
    private readonly reads: ValueReads,
    private readonly limits: { valueBytesMax: number; pendingReadsMax: number; pendingWritesMax: number },
    /** Why the owner cannot take requests now (closed, failed), or null: checked by reseal() between windows. */
    private readonly unavailable: () => Error | null,
  ) {
    this.windowKeys = Math.max(1, Math.min(RESEAL_WINDOW_KEYS_MAX, Math.floor(limits.pendingReadsMax / 2), Math.floor(limits.pendingWritesMax / 2)));
  }

  get currentVersion(): number {
    return this.sealer.currentVersion;
  }

  /**
   * Replaces the key set (rotation): writes from now on are sealed under `sealing.current`; a
   * value opens while its version's key is in the set. Validated like the option; on a refusal
   * the old set stays.
   */
  setKeys(sealing: SealingOptions): void {
    this.sealer = new Sealer(sealing, this.limits);
  }

  put(key: KeyInput, value: ValueInput, expectedVersion = -1): Promise<void> {
    let sealed: Uint8Array;
    try {
      sealed = this.sealer.seal(key, value);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.writes.put(key, sealed, expectedVersion);
  }

  /**
   * As the write pipeline's putMany, each value sealed. An entry refused by sealing (type, size)
   * is not written and rejects the call (with the first such refusal, ahead of any the pipeline
   * makes); the other entries are still written.
   */
  putMany(entries: Iterable<readonly [KeyInput, ValueInput]>): Promise<void> {
    const sealer = this.sealer;
    let refused: unknown = null;
    function* sealedEntries(): Generator<readonly [KeyInput, Uint8Array]> {
      for (const [key, value] of entries) {
        let sealed: Uint8Array;
        try {
          sealed = sealer.seal(key, value);
        } catch (error) {
          refused ??= error;
          continue;
        }
        yield [key, sealed];
      }
    }
    const all = this.writes.putMany(sealedEntries());
    if (refused === null) return all;
    all.catch(() => undefined); // Its outcome is reported through the refusal.
    return Promise.reject(refused);
  }

  getVersioned(key: KeyInput): Promise<VersionedValue | undefined> {
    return this.reads.get(key).then((entry) => (entry === undefined ? undefined : { value: this.sealer.open(key, entry.value), version: entry.version }));
  }

  /**
   * Reads each key and writes it back sealed under the current version if it was sealed under an
   * older one, a window of keys at a time (their reads, then one putMany of the re-sealed ones).
   * Stops at the first value that does not open and rejects with DABBA_ERR_CORRUPT, once the keys
   * before it have been written back.
   *
   * Not atomic: a read then an unconditional write (the chain has no compare-and-set yet). A write
   * to the same key by anyone between the two is overwritten with the older value, re-sealed. Run
   * it when nothing else writes those keys, or accept that race.
   */
  async reseal(keys: Iterable<KeyInput>): Promise<ResealReport> {
    const report: ResealReport = { examined: 0, resealed: 0, current: 0, absent: 0 };
    const window: KeyInput[] = [];
    for (const key of keys) {
      window.push(key);
      if (window.length === this.windowKeys) await this.resealWindow(window.splice(0), report);
    }
    if (window.length > 0) await this.resealWindow(window, report);
    return report;
  }

  private async resealWindow(keys: KeyInput[], report: ResealReport): Promise<void> {
    const unavailable = this.unavailable();
    if (unavailable !== null) throw unavailable;
    const entries = await Promise.all(keys.map((key) => this.reads.get(key)));
    // One sealer for the whole window: a rotation meanwhile applies from the next window.
    const sealer = this.sealer;
    const resealed: Array<readonly [KeyInput, Uint8Array]> = [];
    let refused: unknown = null;
    for (let index = 0; index < keys.length && refused === null; index++) {
      const key = keys[index]!;
      const entry = entries[index];
      report.examined++;
      if (entry === undefined) {
        report.absent++;
      } else if (sealer.versionOf(entry.value) === sealer.currentVersion) {
        report.current++;
      } else {
        try {
          resealed.push([key, sealer.seal(key, sealer.open(key, entry.value))]);
        } catch (error) {
          refused = error;
        }
      }
    }
    if (resealed.length > 0) {
      await this.writes.putMany(resealed);
      report.resealed += resealed.length;
    }
    if (refused !== null) throw refused;
  }
}
