/**
 * A chain Configuration as JSON text, for stores outside the process (etcd). Whatever is read
 * back is checked field by field, then against the core's well-formedness rules, so a bad value
 * written by hand or by another version fails here with the key's name rather than later, deep in
 * the master.
 */
import { assertWellFormed, type Configuration } from '../../native-free-core/master/chain-master.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';

export function encodeConfiguration(configuration: Configuration): string {
  return JSON.stringify({ epoch: configuration.epoch, members: configuration.members, joining: configuration.joining });
}

/** Parses and validates; `source` names where the text came from, for the error message. */
export function decodeConfiguration(text: string, source: string): Configuration {
  const malformed = (reason: string): DabbaError =>
    new DabbaError(ErrorCode.malformedFrame, `${source} holds a malformed chain configuration: ${reason} (value: ${preview(text)})`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw malformed('not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed('not an object');
  const { epoch, members, joining } = value as Record<string, unknown>;
  if (!isReplicaIdLike(epoch)) throw malformed('epoch must be a non-negative integer');
  if (!Array.isArray(members) || !members.every(isReplicaIdLike)) throw malformed('members must be an array of replica ids');
  if (joining !== null && !isReplicaIdLike(joining)) throw malformed('joining must be a replica id or null');
  const configuration: Configuration = { epoch, members: members as number[], joining };
  try {
    assertWellFormed(configuration);
  } catch (error) {
    throw malformed((error as Error).message);
  }
  return configuration;
}

function isReplicaIdLike(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function preview(text: string): string {
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
}
