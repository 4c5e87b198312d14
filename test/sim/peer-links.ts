/**
 * A simulated host's links to its neighbours in the chain (src/host/chain-links.ts in miniature).
 * Every replica dials its predecessor (a joiner dials the tail it copies from); batches and snapshot
 * frames come down that link, Hellos and Acks go up it. What the real links filter, these filter:
 * - batches and snapshot frames only from the current predecessor; a joiner drops snapshot frames
 *   of an earlier join and batches before its own first snapshot frame;
 * - Acks only from the current successor (or joiner); a Hello from a replica that is not (yet) the
 *   successor, or that reaches a restarted host before its replica started, is kept, the latest
 *   one, and handed over once the configuration names it.
 * A link that breaks (a lost frame) is redialed by the successor, which then sends a Hello saying
 * how far it has applied, so the predecessor resends what was lost (repairAfterRedial). A joiner
 * whose link breaks cannot resume its transfer: it joins again as a new replica.
 */
import type { Role } from '../../native-free-core/chain/node.js';
import { SnapshotView } from '../../native-free-core/chain/snapshot.js';
import { predecessorOf, servesReads, successorOf } from '../../native-free-core/master/chain-master.js';
import { frameKind, MessageKind } from '../../native-free-core/wire/codec.js';
import type { Connection } from './network.js';
import type { SimulatedHost } from './replica-host.js';
import { TIMING, type World } from './world.js';

export class PeerLinks {
  private predecessor: number | null = null;
  private successor: number | null = null;
  /** Dials of the current predecessor's link: after the first, a link that came back is repaired with a Hello. */
  private upstreamDials = 0;
  /** A dial is scheduled; `dialToken` tells a dial of the current predecessor from an obsolete one. */
  private dialScheduled = false;
  private dialToken = 0;
  private readonly parkedHellos = new Map<number, Uint8Array>();
  private readonly parkedAcks = new Map<number, Uint8Array>();
  /** The epoch this replica began to join in (older joins' snapshot frames are dropped). */
  private joinEpoch = 0;
  private joinStreamStarted = true;
  private readonly snapshotView = new SnapshotView();

  constructor(
    private readonly world: World,
    private readonly host: SimulatedHost,
  ) {}

  /** `resumed`: it started from a log (a joiner so is sent batches first, not a snapshot frame). */
  replicaStarted(epoch: number, role: Role, resumed = false): void {
    this.joinEpoch = role === 'joining' ? epoch : 0;
    this.joinStreamStarted = role !== 'joining' || resumed;
  }

  /** The peer link between this replica and `other` (one per pair of replica ids, ids are never reused). */
  linkTo(other: number): Connection {
    const mine = this.host.replicaId;
    const name = mine < other ? `r${mine}-r${other}` : `r${other}-r${mine}`;
    const connection = this.world.network.connection(name, this.host.hostId, this.world.hostOf(other).hostId);
    connection.onBreak ??= () => {
      this.world.running(mine)?.links.broke(other);
      this.world.running(other)?.links.broke(mine);
    };
    return connection;
  }

  /** Follows the host's configuration: dials a new predecessor, forwards to the new successor. */
  update(): void {
    const configuration = this.host.configuration;
    const role = this.host.role();
    const replicaId = this.host.replicaId;
    const predecessor = configuration === null || role === null ? null : role === 'joining' ? configuration.members.at(-1)! : predecessorOf(configuration, replicaId);
    this.successor = configuration === null || role === null ? null : successorOf(configuration, replicaId) ?? (servesReads(role) ? configuration.joining : null);
    if (predecessor !== this.predecessor) {
      if (this.predecessor !== null) this.world.network.close(this.linkTo(this.predecessor));
      this.forgetDial();
      this.predecessor = predecessor;
      this.upstreamDials = 0;
    }
    if (predecessor !== null) this.dial(1);
    const parked = this.successor === null ? undefined : this.parkedHellos.get(this.successor);
    if (parked !== undefined && this.host.node !== null) {
      this.parkedHellos.delete(this.successor!);
      this.host.stepDownstream(parked);
    }
    const parkedAck = this.successor === null ? undefined : this.parkedAcks.get(this.successor);
    if (parkedAck !== undefined && this.host.node !== null) {
      this.parkedAcks.delete(this.successor!);
      this.host.stepDownstream(parkedAck);
    }
  }

  /** The link to `other` broke (a fault, or the other side went away). */
  broke(other: number): void {
    if (other !== this.predecessor) return; // The successor redials, not us.
    if (this.host.role() === 'joining') return this.host.rejoin(`lost the link to replica ${other} while joining`);
    this.dial(TIMING.peerRedialAfter);
  }

  /** Dials the predecessor in `delay` ticks, and keeps trying (backing off) while it is the predecessor. */
  private dial(delay: number, failures = 0): void {
    if (this.dialScheduled) return;
    const predecessor = this.predecessor!;
    const connection = this.linkTo(predecessor);
    if (connection.isUp) return;
    this.dialScheduled = true;
    const token = this.dialToken;
    this.world.scheduler.after(delay, () => {
      if (token !== this.dialToken) return;
      this.dialScheduled = false;
      if (connection.isUp) return;
      const other = this.world.running(predecessor);
      if (other === null || this.world.network.isCut(this.host.hostId, other.hostId)) {
        // Refused or unreachable: try again later, for as long as it is our predecessor.
        return this.dial(Math.min(TIMING.peerRedialAfterMax, TIMING.peerRedialAfter * 2 ** failures), failures + 1);
      }
      this.world.network.open(connection);
      if (++this.upstreamDials > 1) this.repairAfterRedial(connection, other);
      this.host.kick();
      other.kick();
    });
  }

  private forgetDial(): void {
    this.dialScheduled = false;
    this.dialToken++;
  }

  /** The link came back within one epoch: tell the predecessor how far we applied, so it resends the rest. */
  private repairAfterRedial(connection: Connection, predecessor: SimulatedHost): void {
    const node = this.host.node;
    if (node === null || this.host.role() === 'joining') return;
    this.world.counts.linkRepairs++;
    const hello = this.host.encodeHello({ epoch: node.epoch, replicaId: this.host.replicaId, appliedSeq: node.appliedSeq });
    const from = this.host.replicaId;
    // And the cumulative ack again (chain-links.ts): acks on the wire were lost with it.
    const ack = this.host.encodeAck({ epoch: node.epoch, committedSeq: node.committedSeq, clientId: 0, committedClientSeq: 0 });
    this.world.trace.note(`replica ${from} redialed replica ${predecessor.replicaId}: Hello at seq ${node.appliedSeq}, ack at ${node.committedSeq}`);
    this.world.network.send(connection, this.host.hostId, predecessor.hostId, () => this.deliverTo(predecessor, predecessor.replicaId, (links) => links.fromSuccessor(from, hello)));
    this.world.network.send(connection, this.host.hostId, predecessor.hostId, () => this.deliverTo(predecessor, predecessor.replicaId, (links) => links.fromSuccessor(from, ack)));
  }

  /** Breaks both links (the host crashed, or leaves the chain as this replica id). */
  breakAll(): void {
    const neighbours = [this.predecessor, this.successor];
    // Forgotten first: the breaks below tell this side too, and it must not redial.
    this.forgetDial();
    this.predecessor = null;
    this.successor = null;
    this.parkedHellos.clear();
    for (const other of neighbours) if (other !== null) this.world.network.break(this.linkTo(other));
  }

  // ---------------------------------------------------------------------------------------------
  // Frames out

  /** To the successor (or joiner); false while its link is not up (the node keeps the frame). */
  sendDownstream(bytes: Uint8Array, duplicable: boolean): boolean {
    const successor = this.successor;
    if (successor === null) return false;
    const target = this.world.hostOf(successor);
    const from = this.host.replicaId;
    return this.world.network.send(this.linkTo(successor), this.host.hostId, target.hostId, () => this.deliverTo(target, successor, (links) => links.fromPredecessor(from, bytes)), duplicable);
  }

  /** To the predecessor; false while its link is not up. */
  sendUpstream(bytes: Uint8Array, duplicable: boolean): boolean {
    const predecessor = this.predecessor;
    if (predecessor === null) return false;
    const target = this.world.hostOf(predecessor);
    const from = this.host.replicaId;
    return this.world.network.send(this.linkTo(predecessor), this.host.hostId, target.hostId, () => this.deliverTo(target, predecessor, (links) => links.fromSuccessor(from, bytes)), duplicable);
  }

  /** Hands a frame to replica `replicaId` if its host still runs it (its node may not have started yet); false to hold it. */
  private deliverTo(target: SimulatedHost, replicaId: number, take: (links: PeerLinks) => boolean): boolean {
    return !target.runs(replicaId) || take(target.links);
  }

  // ---------------------------------------------------------------------------------------------
  // Frames in

  /** A batch or snapshot frame from replica `from`; false to hold it (backpressure). */
  fromPredecessor(from: number, bytes: Uint8Array): boolean {
    const kind = frameKind(bytes);
    this.world.trace.detail(() => `replica ${this.host.replicaId} gets a frame of kind ${String(kind)} from ${from}${from === this.predecessor ? '' : ' (not its predecessor: dropped)'}`);
    if (from !== this.predecessor || this.host.node === null) return true;
    if (kind === MessageKind.snapshot) {
      if (this.snapshotView.open(bytes) !== null || this.snapshotView.epoch < this.joinEpoch) return true;
      this.joinStreamStarted = true;
    } else if (kind !== MessageKind.writeBatch || !this.joinStreamStarted) {
      return true;
    }
    return this.host.stepUpstream(bytes);
  }

  /** An Ack or Hello from replica `from`. */
  fromSuccessor(from: number, bytes: Uint8Array): boolean {
    const kind = frameKind(bytes);
    if (this.host.role() === 'joining') {
      // A joiner behind it, heard of before this replica knows it is the tail (its handoff is in flight).
      if (kind === MessageKind.hello) this.parkedHellos.set(from, bytes);
      return true;
    }
    this.world.trace.detail(() => `replica ${this.host.replicaId} gets a frame of kind ${String(kind)} from ${from}${from === this.successor ? '' : ' (not its successor)'}`);
    // Not the successor, or not yet: this replica restarted and waits for its configuration.
    if (from !== this.successor || this.host.node === null) {
      // A Hello is sent once per epoch; acks are cumulative, so the newest stands for all (as chain-links.ts keeps them).
      if (kind === MessageKind.hello) this.parkedHellos.set(from, bytes);
      else if (kind === MessageKind.ack) this.parkedAcks.set(from, bytes);
      return true;
    }
    this.host.stepDownstream(bytes);
    return true;
  }
}
