/**
 * A chain Configuration as JSON text, for stores outside the process (etcd). Whatever is read
 * back is checked field by field, then against the core's well-formedness rules, so a bad value
 * written by hand or by another version fails here with the key's name rather than later, deep in
 * the master.
 */
import { assertWellFormed, participants, type Configuration } from '../../native-free-core/master/chain-master.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import type { ChainEntry, ReplicaHome } from '../../native-free-core/master/table-round.js';

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

/** A chain table entry (native-free-core/master/table-round.ts) as JSON: the configuration plus each participant's home. */
export function encodeChainEntry(entry: ChainEntry): string {
  const homes: Record<string, ReplicaHome> = {};
  for (const [replicaId, home] of entry.homes) homes[String(replicaId)] = { host: home.host, incarnation: home.incarnation };
  const { epoch, members, joining } = entry.configuration;
  return JSON.stringify({ epoch, members, joining, homes });
}

/** Parses and validates a chain entry: a well-formed configuration whose every member and joiner has a home, and nothing else has. */
export function decodeChainEntry(text: string, source: string): ChainEntry {
  const configuration = decodeConfiguration(text, source);
  const malformed = (reason: string): DabbaError =>
    new DabbaError(ErrorCode.malformedFrame, `${source} holds a malformed chain entry: ${reason} (value: ${preview(text)})`);
  const { homes } = JSON.parse(text) as { homes?: unknown };
  if (typeof homes !== 'object' || homes === null || Array.isArray(homes)) throw malformed('homes must be an object');
  const ids = participants(configuration);
  const entries = Object.entries(homes as Record<string, unknown>);
  if (entries.length !== ids.length) throw malformed('homes must name exactly the members and the joiner');
  const decoded = new Map<number, ReplicaHome>();
  for (const [key, home] of entries) {
    const replicaId = Number(key);
    if (!ids.includes(replicaId) || String(replicaId) !== key) throw malformed(`homes names ${JSON.stringify(key)}, not a member or the joiner`);
    if (typeof home !== 'object' || home === null) throw malformed(`the home of ${key} must be an object`);
    const { host, incarnation } = home as Record<string, unknown>;
    if (typeof host !== 'string' || !HOST_ID.test(host)) throw malformed(`the home of ${key} must name a host id`);
    if (typeof incarnation !== 'string' || !INCARNATION.test(incarnation)) throw malformed(`the home of ${key} must name an incarnation`);
    decoded.set(replicaId, { host, incarnation });
  }
  return { configuration, homes: decoded };
}

/** Host ids as `dabba serve --host-id` takes them; incarnations as hosts make them (random base64url). */
const HOST_ID = /^[A-Za-z0-9_.-]{1,64}$/;
export const INCARNATION = /^[A-Za-z0-9_-]{1,64}$/;
