/**
 * ClusterView frames: what a host tells a remote client about the chain (its members' replica ids
 * and URLs, head first, and the epoch), so the client can send writes to the head and reads to the
 * tail and follow reconfigurations. The member list is JSON text inside the frame, checked field by
 * field here: a malformed view is refused, never half-used.
 */
import * as flatbuffers from 'flatbuffers';
import { ClusterView, Frame, Message } from './generated/schema_generated.js';
import { reasonIfMalformed } from './codec.js';
import { FrameEnvelope, openMessage } from './codec.js';
import { MalformedFrame, TableLocation, fieldPosition, followOffset, readUint32, requiredFieldPosition, verifyVector } from './verify.js';

export interface ClusterMember {
  replicaId: number;
  /** Base URL of the member's host, e.g. ws://10.0.0.2:7400 (peer, client and HTTP routes hang off it). */
  url: string;
  /** The zone of the member's host (`--zone`), when known: a client in that zone reads from it first. */
  zone?: string;
}

export interface ClusterViewFields {
  epoch: number;
  /** The client id the host assigned this connection; 0 when the client already had one. */
  clientId: number;
  /** With an assigned id: the token the client presents with it when it reconnects ('' otherwise). */
  clientToken: string;
  /** Chain order: head first, tail last. */
  members: ClusterMember[];
  joining: ClusterMember | null;
  /** How many chains the cluster's keyspace is split over (the client links to each chain's members). */
  chains: number;
  /** Every member of the chain is gone (its data with them): the chain is unavailable. */
  lost?: boolean;
  /** A replica of the chain has a full disk: writes are refused (DABBA_ERR_DISK_FULL) until space is freed. */
  diskFull?: boolean;
  /** Every member answers reads (`--reads any`): clients spread them; absent, they go to the tail. */
  readsAnyReplica?: boolean;
  /** The head runs an admission hook (`--admit`): any write may be refused (DABBA_ERR_REJECTED). */
  admits?: boolean;
}

const URL_CHARS_MAX = 512;
const TOKEN_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** As `dabba serve --zone` takes them. */
const ZONE_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
const MEMBERS_MAX = 64;
/** As many as createChain() and `dabba serve` take (src/options.ts). */
const CHAINS_MAX = 1024;
const textEncoder = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Where clients link to `chain`'s replicas on a host: `/client` for chain 0, `/client/<chain>` for the others. */
export function clientPath(chain: number): string {
  return chain === 0 ? '/client' : `/client/${chain}`;
}

export function encodeClusterView(view: ClusterViewFields): Uint8Array {
  // `chains` only when there are several: a one-chain view keeps the bytes it always had.
  const fields = { members: view.members, joining: view.joining, ...(view.clientToken === '' ? {} : { clientToken: view.clientToken }), ...(view.chains === 1 ? {} : { chains: view.chains }), ...(view.lost === true ? { lost: true } : {}), ...(view.diskFull === true ? { diskFull: true } : {}), ...(view.readsAnyReplica === true ? { readsAnyReplica: true } : {}), ...(view.admits === true ? { admits: true } : {}) };
  const text = textEncoder.encode(JSON.stringify(fields));
  const builder = new flatbuffers.Builder(text.length + 128);
  builder.forceDefaults(true);
  const viewOffset = ClusterView.createViewVector(builder, text);
  const message = ClusterView.createClusterView(builder, view.epoch, view.clientId, viewOffset);
  builder.finish(Frame.createFrame(builder, Message.ClusterView, message));
  return builder.asUint8Array().slice();
}

/** Decodes and validates a ClusterView frame; returns the reason if it is malformed. */
export function decodeClusterView(bytes: Uint8Array): ClusterViewFields | string {
  let fields: ClusterViewFields | null = null;
  const reason = reasonIfMalformed(() => {
    const table = new TableLocation();
    openMessage(new FrameEnvelope(), bytes, Message.ClusterView, 'ClusterView', table);
    const epoch = readUint32(bytes, requiredFieldPosition(bytes, table, 0, 4, 'epoch'));
    const clientIdPosition = fieldPosition(bytes, table, 1, 4);
    const clientId = clientIdPosition === 0 ? 0 : readUint32(bytes, clientIdPosition);
    const vector = followOffset(bytes, requiredFieldPosition(bytes, table, 2, 4, 'view'));
    const length = verifyVector(bytes, vector, 1, 'view');
    let parsed: unknown;
    try {
      parsed = JSON.parse(strictUtf8.decode(bytes.subarray(vector + 4, vector + 4 + length)));
    } catch {
      throw new MalformedFrame('cluster view is not UTF-8 JSON');
    }
    if (typeof parsed !== 'object' || parsed === null) throw new MalformedFrame('cluster view is not an object');
    const { members, joining, clientToken = '', chains = 1, lost = false, diskFull = false, readsAnyReplica = false, admits = false } = parsed as { members?: unknown; joining?: unknown; clientToken?: unknown; chains?: unknown; lost?: unknown; diskFull?: unknown; readsAnyReplica?: unknown; admits?: unknown };
    if (typeof admits !== 'boolean') throw new MalformedFrame('cluster view has a malformed admits flag');
    if (typeof lost !== 'boolean') throw new MalformedFrame('cluster view has a malformed lost flag');
    if (typeof readsAnyReplica !== 'boolean') throw new MalformedFrame('cluster view has a malformed readsAnyReplica flag');
    if (typeof diskFull !== 'boolean') throw new MalformedFrame('cluster view has a malformed diskFull flag');
    if (typeof chains !== 'number' || !Number.isSafeInteger(chains) || chains < 1 || chains > CHAINS_MAX) throw new MalformedFrame(`cluster view needs 1 to ${CHAINS_MAX} chains`);
    if (!Array.isArray(members) || members.length === 0 || members.length > MEMBERS_MAX) {
      throw new MalformedFrame(`cluster view needs 1 to ${MEMBERS_MAX} members`);
    }
    if (typeof clientToken !== 'string' || (clientToken !== '' && !TOKEN_PATTERN.test(clientToken))) throw new MalformedFrame('cluster view has a malformed client token');
    if ((clientId === 0) !== (clientToken === '')) throw new MalformedFrame('cluster view has a client id without a token, or a token without an id');
    fields = {
      epoch,
      clientId,
      clientToken,
      members: members.map(checkMember),
      joining: joining === null || joining === undefined ? null : checkMember(joining),
      chains,
      ...(lost ? { lost } : {}),
      ...(diskFull ? { diskFull } : {}),
      ...(readsAnyReplica ? { readsAnyReplica } : {}),
      ...(admits ? { admits } : {}),
    };
  });
  return reason ?? fields!;
}

function checkMember(value: unknown): ClusterMember {
  if (typeof value !== 'object' || value === null) throw new MalformedFrame('cluster member is not an object');
  const { replicaId, url, zone } = value as { replicaId?: unknown; url?: unknown; zone?: unknown };
  if (typeof replicaId !== 'number' || !Number.isSafeInteger(replicaId) || replicaId < 0) throw new MalformedFrame('cluster member has no valid replicaId');
  if (typeof url !== 'string' || url.length === 0 || url.length > URL_CHARS_MAX || !/^wss?:\/\//.test(url)) {
    throw new MalformedFrame('cluster member has no valid ws:// url');
  }
  if (zone !== undefined && (typeof zone !== 'string' || !ZONE_PATTERN.test(zone))) throw new MalformedFrame('cluster member has a malformed zone');
  return zone === undefined ? { replicaId, url } : { replicaId, url, zone };
}
