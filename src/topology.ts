/**
 * Which ring connects which two threads, for a chain configuration. Every link has a stable name
 * (its kind and its two ends) and gets one ring for as long as both ends stay neighbours; a
 * reconfiguration creates rings only for new neighbours, and drops the rest.
 */
import { predecessorOf, successorOf, type Configuration } from '../native-free-core/master/chain-master.js';
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

  /** Forgets links that are not in `names` (their rings are garbage once no thread holds them). */
  retainOnly(names: ReadonlySet<string>): void {
    for (const name of this.links.keys()) if (!names.has(name)) this.links.delete(name);
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

/** The names of every link `configuration` uses. */
export function linkNames(configuration: Configuration): Set<string> {
  const names = new Set<string>();
  const { members } = configuration;
  names.add(batchesLink(CLIENT_END, members[0]!));
  for (let index = 0; index + 1 < members.length; index++) {
    names.add(batchesLink(members[index]!, members[index + 1]!));
    names.add(acksLink(members[index + 1]!, members[index]!));
  }
  const tail = members.at(-1)!;
  if (configuration.joining !== null) {
    names.add(batchesLink(tail, configuration.joining));
    names.add(acksLink(configuration.joining, tail));
  }
  names.add(clientAcksLink(tail));
  names.add(readsLink(tail));
  names.add(repliesLink(tail));
  return names;
}

/** The rings and doorbells of replica `id` in `configuration`. */
export function linksFor(
  table: LinkTable,
  configuration: Configuration,
  id: number,
  doorbells: ReadonlyMap<number, SharedArrayBuffer>,
  clientDoorbell: SharedArrayBuffer,
): ReplicaLinks {
  const tail = configuration.members.at(-1)!;
  const joining = configuration.joining;
  // A joining replica hangs off the tail: the tail forwards to it until it takes over.
  const predecessor = id === joining ? tail : predecessorOf(configuration, id);
  const successor = successorOf(configuration, id) ?? (id === tail ? joining : null);
  const isTail = id === tail;
  return {
    batchesIn: table.link(batchesLink(predecessor ?? CLIENT_END, id), false),
    batchesOut: successor === null ? null : table.link(batchesLink(id, successor), false),
    acksIn: successor === null ? null : table.link(acksLink(successor, id), true),
    acksOut: predecessor === null ? null : table.link(acksLink(id, predecessor), true),
    clientAcksOut: isTail ? table.link(clientAcksLink(id), true) : null,
    readsIn: isTail ? table.link(readsLink(id), false) : null,
    readRepliesOut: isTail ? table.link(repliesLink(id), false) : null,
    doorbell: doorbells.get(id)!,
    upstreamDoorbell: predecessor === null ? clientDoorbell : doorbells.get(predecessor)!,
    downstreamDoorbell: successor === null ? null : doorbells.get(successor)!,
    clientDoorbell,
  };
}
