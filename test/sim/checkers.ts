/**
 * What must hold in every run (DESIGN.md, "The protocol"), checked from outside the nodes:
 * - I1 (prefix): along the chain, in one epoch, a replica never has applied more than its predecessor;
 * - I2 (nothing acknowledged beyond the tail): a client ack comes from a tail, for writes it has
 *   applied, and never names a write the client did not send (the session refuses that; see the
 *   client driver);
 * - I3 (contiguous): each replica applies sequence numbers one after another, with no gap or repeat;
 * - I4 (no acknowledged write lost): every live member holds every write acknowledged to a client;
 * - exactly-once: no replica applies the same client write twice;
 * after every event; and at the end, that the members agree (same writes at the same sequence
 * numbers, same digest) and that the whole client history, with the final state read back, is
 * linearizable (./linearizability.ts).
 */
import type { ChainNode, ReceiveResult } from '../../native-free-core/chain/node.js';
import { servesReads } from '../../native-free-core/master/chain-master.js';
import type { AckFields } from '../../native-free-core/wire/codec.js';
import { checkLinearizable } from './linearizability.js';
import type { SimulatedHost } from './replica-host.js';
import type { Trace } from './trace.js';
import type { World } from './world.js';

/** The client writes a replica applied: by sequence number, and as a set (exactly-once). */
interface AppliedWrites {
  writes: Set<string>;
  bySeq: Map<number, string>;
}

export interface CheckerCounts {
  writesApplied: number;
  clientAcks: number;
}

export class Checker {
  readonly counts: CheckerCounts = { writesApplied: 0, clientAcks: 0 };
  private readonly applied = new WeakMap<ChainNode, AppliedWrites>();
  private readonly decoder = new TextDecoder();
  private readonly encoder = new TextEncoder();

  constructor(private readonly world: World) {}

  nodeStarted(node: ChainNode): void {
    this.applied.set(node, { writes: new Set(), bySeq: new Map() });
  }

  /**
   * `node` restarted from the log of `crashed` (the same replica before its crash): it holds the
   * writes that one applied through its recovered appliedSeq, and no later ones.
   */
  nodeRecovered(node: ChainNode, crashed: ChainNode | null): void {
    const record: AppliedWrites = { writes: new Set(), bySeq: new Map() };
    const before = crashed === null ? undefined : this.applied.get(crashed);
    this.world.trace.check(node.appliedSeq === 0 || before !== undefined, () => `replica ${node.id} recovered ${node.appliedSeq} from a log no node wrote`);
    if (before !== undefined) {
      this.world.trace.check(node.appliedSeq <= crashed!.appliedSeq, () => `replica ${node.id} recovered ${node.appliedSeq}, more than the ${crashed!.appliedSeq} it had applied`);
      for (const [seq, write] of before.bySeq) {
        if (seq > node.appliedSeq) continue;
        record.writes.add(write);
        record.bySeq.set(seq, write);
      }
    }
    this.applied.set(node, record);
  }

  /** A write batch applied by `node` (I3, exactly-once). */
  appliedBatch(node: ChainNode, appliedBefore: number, result: Extract<ReceiveResult, { status: 'applied' }>, batch: { clientId: number; firstClientSeq: number; count: number }): void {
    const trace: Trace = this.world.trace;
    trace.check(result.firstSeq === appliedBefore + 1 && node.appliedSeq === appliedBefore + result.count, () => `I3: replica ${node.id} applied ${result.firstSeq}..${result.firstSeq + result.count - 1} after ${appliedBefore}`);
    trace.check(result.count === batch.count, () => `replica ${node.id} applied ${result.count} of a batch of ${batch.count}`);
    const record = this.applied.get(node)!;
    for (let index = 0; index < batch.count; index++) {
      const write = `${batch.clientId}:${batch.firstClientSeq + index}`;
      trace.check(!record.writes.has(write), () => `exactly-once: replica ${node.id} applied client write ${write} twice`);
      record.writes.add(write);
      record.bySeq.set(result.firstSeq + index, write);
    }
    this.counts.writesApplied += batch.count;
  }

  /** A client ack `node` produced (I2). */
  clientAck(node: ChainNode, ack: AckFields): void {
    this.counts.clientAcks++;
    this.world.trace.check(servesReads(node.role), () => `I2: replica ${node.id} acknowledged client ${ack.clientId} as a ${node.role}`);
    this.world.trace.check(
      ack.committedClientSeq <= node.clientHighWaterMark(ack.clientId),
      () => `I2: replica ${node.id} acknowledged client ${ack.clientId} through ${ack.committedClientSeq}, applied ${node.clientHighWaterMark(ack.clientId)}`,
    );
  }

  /** The master's members whose replicas run now, in chain order. */
  liveMembers(): SimulatedHost[] {
    const hosts: SimulatedHost[] = [];
    for (const member of this.world.master.configuration.members) {
      const host = this.world.running(member);
      if (host !== null && host.node !== null) hosts.push(host);
    }
    return hosts;
  }

  /** I1 and I4, after every event. */
  afterEvent(): void {
    const members = this.liveMembers();
    const trace: Trace = this.world.trace;
    for (let index = 1; index < members.length; index++) {
      const before = members[index - 1]!.node!;
      const after = members[index]!.node!;
      if (before.epoch !== after.epoch) continue;
      trace.check(after.appliedSeq <= before.appliedSeq, () => `I1: replica ${after.id} applied ${after.appliedSeq} > its predecessor ${before.id}'s ${before.appliedSeq}`);
    }
    for (const client of this.world.clients) {
      const acknowledged = client.session.writes.committedClientSeq;
      for (const host of members) {
        const held = host.node!.clientHighWaterMark(client.id);
        trace.check(held >= acknowledged, () => `I4: client ${client.id}'s writes through ${acknowledged} were acknowledged, but member ${host.replicaId} holds only through ${held}`);
      }
      client.checkWatched();
    }
  }

  /** At the end: the members agree, and the history with the final state is linearizable. */
  final(): void {
    const members = this.liveMembers();
    const trace: Trace = this.world.trace;
    trace.check(members.length > 0, () => 'no live member at the end');
    const digests = members.map((host) => `${host.replicaId}:${host.node!.appliedSeq}:${host.node!.store.digest()}`);
    trace.check(new Set(members.map((host) => `${host.node!.appliedSeq}:${host.node!.store.digest()}`)).size === 1, () => `members differ: ${digests.join(' ')}`);
    const first = this.applied.get(members[0]!.node!)!;
    for (const host of members.slice(1)) {
      for (const [seq, write] of this.applied.get(host.node!)!.bySeq) {
        const other = first.bySeq.get(seq);
        trace.check(other === undefined || other === write, () => `I1: seq ${seq} is write ${write} at replica ${host.replicaId}, ${other} at ${members[0]!.replicaId}`);
      }
    }
    this.checkHistory(members.at(-1)!.node!);
    this.checkConditionalWrites();
    for (const host of members) this.checkWatchComplete(host.node!);
  }

  /**
   * A watch took exactly the changes the tail's history holds since its run began (isQuiet waited
   * for it); one that never lagged took every committed change: the newest change it took of each
   * key is the key's final value and version, and it took none of a key the tail never had.
   */
  private checkWatchComplete(tail: ChainNode): void {
    for (const client of this.world.clients) {
      if (client.watch === null) continue;
      const trace: Trace = this.world.trace;
      trace.check(client.watchMatches(tail), () => `watch: it took ${client.watched.length} changes, not those the tail holds from ${Math.max(client.watchFrom, tail.heldChanges().startSeq)}`);
      // Its store may hold writes the (crashed, not yet removed) tail had not committed: no watch may see those yet.
      if (client.watchLagged || tail.committedSeq < tail.appliedSeq) continue;
      const keys = new Set([...this.world.history.map((entry) => entry.operation.key), ...client.watchedLast.keys()]);
      for (const key of keys) {
        const bytes = this.encoder.encode(key);
        const handle = tail.store.find(bytes, 0, bytes.length);
        const final = handle < 0 ? 'absent' : `${this.decoder.decode(tail.store.valueCopy(handle))}@${tail.store.version(handle)}`;
        const last = client.watchedLast.get(key);
        const watched = last === undefined || last.op === 'delete' ? 'absent' : `${last.value!.toString('utf8')}@${last.version}`;
        trace.check(watched === final, () => `watch: the last change of ${key} it took is ${watched}, replica ${tail.id} holds ${final} (its history from ${tail.heldChanges().startSeq}, the watch's from ${client.watch!.position()[0]})`);
      }
    }
  }

  /**
   * Compare-and-set is atomic: a version is the seq of one write, and once a conditional write on
   * it is applied the key has a newer one, so at most one applied conditional write of a key may
   * expect a given version (absence, 0, can come back with a delete: not counted). Whether each was
   * applied at all is what the history checks: a refused one is not in it, so a value it wrote
   * would be a read nothing explains.
   */
  private checkConditionalWrites(): void {
    const applied = new Set<string>();
    for (const { key, expected, applied: wasApplied } of this.world.conditionalWrites) {
      if (!wasApplied || expected === 0) continue;
      const name = `${key}@${expected}`;
      this.world.trace.check(!applied.has(name), () => `two conditional writes of ${key} expecting version ${expected} were both applied`);
      applied.add(name);
    }
  }

  /**
   * The final state joins the history as reads after everything else, so a lost acknowledged write
   * shows up as a read the history cannot explain even if no client read that key late.
   */
  private checkHistory(tail: ChainNode): void {
    const history = this.world.history;
    const keys = new Set(history.map((entry) => entry.operation.key));
    const end = this.world.now;
    [...keys].sort().forEach((key, index) => {
      const bytes = this.encoder.encode(key);
      const handle = tail.store.find(bytes, 0, bytes.length);
      const result = handle < 0 ? undefined : this.decoder.decode(tail.store.valueCopy(handle));
      history.push({ client: 0, operation: { kind: 'get', key }, invokedAt: end + 1 + 2 * index, respondedAt: end + 2 + 2 * index, result });
    });
    const check = checkLinearizable(history);
    this.world.trace.check(check.linearizable, () => `history is not linearizable: ${check.key ?? ''} ${check.explanation ?? ''}${check.exhausted === true ? ' (search exhausted)' : ''}`);
  }
}
