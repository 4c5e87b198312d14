/**
 * The admission hook (`createChain({ admit })`, `dabba serve --admit`): a module whose default export
 * `(write) => true | string` the head's worker runs on every client write before the head orders it.
 * `true` admits the write; a string refuses it with that reason. The seed's "processing stages at the
 * head" (auth, filters, routing) are such hooks.
 *
 * A refused write is not dropped from its batch: the batch's client sequence numbers stay
 * contiguous, and the decision must reach every replica, so the head re-encodes the batch with the
 * write as an Op.Rejected record whose value is the reason (its checksum computed again, over bytes
 * already checked). Every replica skips such a record, and the tail reports it to the client, which
 * rejects that write with DABBA_ERR_REJECTED. A batch the hook admits whole is not touched.
 *
 * A hook that throws, returns anything else, or runs past its budget refuses the write (with a
 * reason saying so) and is counted; the chain goes on. A hook cannot be interrupted: one that never
 * returns hangs the head's thread, which the master then removes as it removes any hung replica.
 */
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Op, REJECTION_REASON_BYTES_MAX, WriteBatchEncoder, WriteBatchView, type RecordLimits } from '../native-free-core/wire/codec.js';
import { nativeCrc32 } from './native-crc32.js';

/** What the hook is given for each write. */
export interface AdmissionWrite {
  op: 'put' | 'delete';
  key: Buffer;
  /** A put's value (undefined for a delete). */
  value: Buffer | undefined;
  /** The writing client's id (one per client and chain). */
  clientId: number;
}

export type AdmissionFunction = (write: AdmissionWrite) => unknown;

export class Admission {
  /** Writes refused by the hook, and those refused because it threw, returned nonsense or ran late. */
  refused = 0;
  failures = 0;
  private readonly view: WriteBatchView;
  private lastFailureLoggedAt = Number.NEGATIVE_INFINITY;
  /** When the last hook call ended (performance.now()). */
  private clock = 0;

  constructor(
    private readonly admit: AdmissionFunction,
    private readonly budgetMs: number,
    limits: RecordLimits,
    /** Largest batch frame a ring and an in-flight list take. */
    private readonly frameBytesMax: number,
    /** Where a hook's failure is said (at most one line a second). */
    private readonly warn: (message: string) => void,
  ) {
    this.view = new WriteBatchView(limits);
  }

  /**
   * A client batch, screened: the same bytes if every write is admitted (or the frame is not one
   * the head will take: malformed or damaged, the core refuses it), else a re-encoded copy.
   */
  screen(frame: Uint8Array): Uint8Array {
    const view = this.view;
    if (view.open(frame) !== null || !view.checksumMatches(nativeCrc32)) return frame;
    let reasons: Array<string | null> | null = null;
    // One clock read per call: each call's time runs from the end of the one before.
    this.clock = performance.now();
    for (let index = 0; index < view.count; index++) {
      const reason = this.decide(index);
      if (reason === null) continue;
      reasons ??= new Array<string | null>(view.count).fill(null);
      reasons[index] = reason;
    }
    return reasons === null ? frame : this.reencode(reasons);
  }

  /** The hook's verdict on write `index` of the open batch: null to admit, else why it is refused. */
  private decide(index: number): string | null {
    const view = this.view;
    const record = view.recordAt(index);
    const keyStart = view.keyPosition(record);
    const keyEnd = keyStart + record.keyLength();
    const isPut = record.op() === Op.Put;
    const write: AdmissionWrite = {
      op: isPut ? 'put' : 'delete',
      key: Buffer.from(view.bytes.subarray(keyStart, keyEnd)),
      value: isPut ? Buffer.from(view.bytes.subarray(keyEnd, keyEnd + record.valueLength())) : undefined,
      clientId: view.clientId,
    };
    const started = this.clock;
    let verdict: unknown;
    try {
      verdict = this.admit(write);
    } catch (error) {
      this.clock = performance.now();
      return this.failed(`the admission hook threw: ${error instanceof Error ? error.message : String(error)}`);
    }
    this.clock = performance.now();
    const tookMs = this.clock - started;
    if (tookMs > this.budgetMs) return this.failed(`the admission hook took ${tookMs.toFixed(2)} ms, over its budget of ${this.budgetMs} ms`);
    if (verdict === true) return null;
    if (typeof verdict === 'string') {
      this.refused++;
      return verdict;
    }
    return this.failed(`the admission hook returned ${typeof verdict === 'object' && verdict !== null && 'then' in verdict ? 'a promise (it must decide at once)' : String(verdict)}, not true or a reason`);
  }

  private failed(reason: string): string {
    this.failures++;
    const now = performance.now();
    if (now - this.lastFailureLoggedAt >= 1000) {
      this.lastFailureLoggedAt = now;
      this.warn(`${reason} (the write is refused; ${this.failures} so far)`);
    }
    return reason;
  }

  /** The open batch again, each refused write an Op.Rejected record carrying its reason. */
  private reencode(reasons: Array<string | null>): Uint8Array {
    const encoded = this.encode(reasons, REJECTION_REASON_BYTES_MAX);
    if (encoded.length <= this.frameBytesMax) return encoded;
    // The reasons would make the frame too large for a ring: each keeps at most the bytes its write had.
    return this.encode(reasons, 0);
  }

  private encode(reasons: Array<string | null>, reasonBytesMax: number): Uint8Array {
    const view = this.view;
    const encoder = new WriteBatchEncoder({ writesMax: view.count, payloadBytesMax: view.payloadLength + view.count * REJECTION_REASON_BYTES_MAX }, nativeCrc32);
    encoder.begin(view.clientId, view.firstClientSeq);
    let conditional = 0;
    for (let index = 0; index < view.count; index++) {
      const record = view.recordAt(index);
      const keyStart = view.keyPosition(record);
      const keyLength = record.keyLength();
      const valueLength = record.valueLength();
      const expected = record.flags() === 0 ? -1 : view.expectedVersionAt(conditional++);
      const reason = reasons[index];
      if (reason === null || reason === undefined) {
        encoder.payload.set(view.bytes.subarray(keyStart, keyStart + keyLength + valueLength), encoder.payloadLength);
        encoder.addRecord(record.op() as Op, keyLength, valueLength, expected);
        continue;
      }
      const text = truncatedUtf8(reason, Math.max(reasonBytesMax, valueLength));
      encoder.payload.set(view.bytes.subarray(keyStart, keyStart + keyLength), encoder.payloadLength);
      encoder.payload.set(text, encoder.payloadLength + keyLength);
      encoder.addRecord(Op.Rejected, keyLength, text.length);
    }
    return encoder.finish().slice();
  }
}

/** `text` as UTF-8, cut to at most `bytesMax` bytes (and REJECTION_REASON_BYTES_MAX) at a character boundary. */
function truncatedUtf8(text: string, bytesMax: number): Uint8Array {
  const limit = Math.min(bytesMax, REJECTION_REASON_BYTES_MAX);
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= limit) return bytes;
  let end = limit;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

/** Loads the hook module at `path` (absolute): its default export must be a function. */
export async function loadAdmissionFunction(path: string): Promise<AdmissionFunction> {
  const module = (await import(pathToFileURL(path).href)) as { default?: unknown };
  if (typeof module.default !== 'function') throw new TypeError(`the admission hook ${path} has no default export function (it exports ${typeof module.default})`);
  return module.default as AdmissionFunction;
}
