/**
 * Which ring connects which two threads. A link is named by its kind and its two ends, which are
 * node threads (the client's end is 0), not replicas: one ring between two nodes carries every
 * chain in which one follows the other, each record tagged with its chain. A link keeps its ring
 * for as long as some chain uses it; a reconfiguration creates rings only for new neighbours.
 */
import { answersReads, predecessorOf, roleIn, successorOf, type Configuration } from '../native-free-core/master/chain-master.js';
import { SpscRing } from '../native-free-core/ring.js';
import type { ReplicaLinks, RingLink } from '../workers/replica-task.js';

/** The client's end of a link is named 0. */
export const CLIENT_END = 0;

export interface RingSizes {
  /** Batches and read requests/replies. */
  dataBytes: number;
  /** Acks and Hellos. */
  controlBytes: number;
}

export class LinkTable {
  private readonly links = new Map<string, RingLink>();
  private nextId = 1;
  /**
   * Whether new rings are prefaulted. True while the chain starts; false once it serves, when the
   * thread that makes a ring (the client's, during a reconfiguration) must not stall ~4 ms per MiB:
   * the first pass through the ring pays for its pages instead, spread out.
   */
  prefaultNewRings = true;

  constructor(private readonly sizes: RingSizes) {}

  /** The ring for a named link, created on first use. */
  link(name: string, control: boolean): RingLink {
    let link = this.links.get(name);
    if (link === undefined) {
      const bytes = control ? this.sizes.controlBytes : this.sizes.dataBytes;
      link = { id: this.nextId++, buffer: SpscRing.allocate(bytes, { prefault: this.prefaultNewRings }) };
      this.links.set(name, link);
    }
    return link;
  }

  /** Forgets links that are not in `names` (their rings are garbage once no thread holds them); returns their ids. */
  retainOnly(names: ReadonlySet<string>): number[] {
    const dropped: number[] = [];
    for (const [name, link] of this.links) {
      if (names.has(name)) continue;
      this.links.delete(name);
      dropped.push(link.id);
    }
    return dropped;
  }
}

export function batchesLink(from: number, to: number): string {
  return `batches ${from}->${to}`;
}
export function acksLink(from: number, to: number): string {
  return `acks ${from}->${to}`;
}
export function clientAcksLink(tail: number): string {
  return `client-acks ${tail}`;
}
export function readsLink(tail: number): string {
  return `reads ${tail}`;
}
export function repliesLink(tail: number): string {
  return `replies ${tail}`;
}

/** The node a replica runs on. */
export type NodeOf = (replicaId: number) => number;

/**
 * Adds the names of every link `configuration` uses (its replicas on the nodes `nodeOf` says) to
 * `names`; with `readsAtAnyReplica`, every member's read and reply rings.
 */
export function addLinkNames(names: Set<string>, configuration: Configuration, nodeOf: NodeOf, readsAtAnyReplica = false): Set<string> {
  const members = configuration.members.map(nodeOf);
  names.add(batchesLink(CLIENT_END, members[0]!));
  for (let index = 0; index + 1 < members.length; index++) {
    names.add(batchesLink(members[index]!, members[index + 1]!));
    names.add(acksLink(members[index + 1]!, members[index]!));
  }
  const tail = members.at(-1)!;
  if (configuration.joining !== null) {
    const joiner = nodeOf(configuration.joining);
    names.add(batchesLink(tail, joiner));
    names.add(acksLink(joiner, tail));
  }
  names.add(clientAcksLink(tail));
  for (const node of readsAtAnyReplica ? members : [tail]) {
    names.add(readsLink(node));
    names.add(repliesLink(node));
  }
  return names;
}

/** The rings and doorbells of replica `id` in `configuration`. */
export function linksFor(
  table: LinkTable,
  configuration: Configuration,
  id: number,
  nodeOf: NodeOf,
  doorbells: ReadonlyMap<number, SharedArrayBuffer>,
  clientDoorbell: SharedArrayBuffer,
  readsAtAnyReplica = false,
): ReplicaLinks {
  const tail = configuration.members.at(-1)!;
  const joining = configuration.joining;
  // A joining replica hangs off the tail: the tail forwards to it until it takes over.
  const predecessor = id === joining ? tail : predecessorOf(configuration, id);
  const successor = successorOf(configuration, id) ?? (id === tail ? joining : null);
  const isTail = id === tail;
  const servesReads = answersReads(roleIn(configuration, id), readsAtAnyReplica);
  const node = nodeOf(id);
  const predecessorNode = predecessor === null ? CLIENT_END : nodeOf(predecessor);
  const successorNode = successor === null ? null : nodeOf(successor);
  return {
    batchesIn: table.link(batchesLink(predecessorNode, node), false),
    batchesOut: successorNode === null ? null : table.link(batchesLink(node, successorNode), false),
    acksIn: successorNode === null ? null : table.link(acksLink(successorNode, node), true),
    acksOut: predecessor === null ? null : table.link(acksLink(node, predecessorNode), true),
    clientAcksOut: isTail ? table.link(clientAcksLink(node), true) : null,
    readsIn: servesReads ? table.link(readsLink(node), false) : null,
    readRepliesOut: servesReads ? table.link(repliesLink(node), false) : null,
    doorbell: doorbells.get(node)!,
    upstreamDoorbell: predecessor === null ? clientDoorbell : doorbells.get(predecessorNode)!,
    downstreamDoorbell: successorNode === null ? null : doorbells.get(successorNode)!,
    clientDoorbell,
  };
}
