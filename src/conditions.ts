/**
 * Conditional writes: `put(key, value, { ifVersion })`, `put(key, value, { ifAbsent: true })` and
 * `delete(key, { ifVersion })`. A key's version is the sequence number of the write that produced
 * its value (what getVersioned() returns); an absent key has none. Every replica checks the
 * condition as it applies the write, in sequence order, so they all decide alike; a write whose
 * condition fails is not applied and rejects with DABBA_ERR_CONDITION_FAILED, once the tail has
 * committed its place in the sequence (a head that fails after deciding leaks nothing).
 */
import { ErrorCode } from '../native-free-core/errors.js';

export interface WriteConditions {
  /** Apply only if the key's version is this (a positive integer, from getVersioned()). */
  ifVersion?: number;
  /** Apply only if the key is absent (put only). */
  ifAbsent?: boolean;
}

/** The version the write expects on the wire (0: absent), -1 for an unconditional write, or why `conditions` are refused. */
export function expectedVersionOf(conditions: WriteConditions | undefined, forDelete: boolean): number | TypeError {
  if (conditions === undefined) return -1;
  if (typeof conditions !== 'object' || conditions === null) return invalid(`write conditions must be an object, got ${conditions === null ? 'null' : typeof conditions}`);
  const { ifVersion, ifAbsent } = conditions;
  if (ifAbsent !== undefined && typeof ifAbsent !== 'boolean') return invalid(`ifAbsent must be a boolean, got ${typeof ifAbsent}`);
  if (ifVersion !== undefined && (typeof ifVersion !== 'number' || !Number.isSafeInteger(ifVersion) || ifVersion < 1)) {
    return invalid(`ifVersion must be a positive integer (a version from getVersioned()), got ${String(ifVersion)}`);
  }
  if (ifAbsent === true && ifVersion !== undefined) return invalid('ifVersion and ifAbsent exclude each other');
  if (ifAbsent === true && forDelete) return invalid('a delete takes ifVersion, not ifAbsent');
  if (ifAbsent === true) return 0;
  return ifVersion ?? -1;
}

function invalid(message: string): TypeError {
  return Object.assign(new TypeError(message), { code: ErrorCode.invalidArgument });
}
