/**
 * The deterministic simulator (TigerBeetle's VOPR shape): a whole chain of pure ChainNodes, the
 * in-process master (the one cluster policy, as createChain() runs it) and a set of clients in one
 * thread, driven by one PRNG seed. Links are FIFO with random delays and random duplication of
 * batches and acks; replicas crash at random (never the last one); the master removes them after
 * missed heartbeats and the survivors reconfigure; now and then a replacement is asked for, as
 * addReplica() would, and the master drives its join.
 *
 * A safety phase (faults on) is followed by a liveness phase (faults off) in which every client
 * operation must complete. Invariants are checked after every step; at the end the client history
 * must be linearizable and every live replica must hold the same state. A failure throws with the
 * seed and the last events of the trace.
 */
import { ChainNode, type Role } from '../../native-free-core/chain/node.js';
import { snapshotFrameBytesFor } from '../../native-free-core/chain/snapshot.js';
import { predecessorOf, roleIn, successorOf, type Configuration } from '../../native-free-core/master/chain-master.js';
import type { LiveHostStatus } from '../../native-free-core/master/cluster-decisions.js';
import { InProcessMaster, type InProcessDecision } from '../../native-free-core/master/in-process-master.js';
import { Store } from '../../native-free-core/store.js';
import {
  AckEncoder,
  HelloEncoder,
  ReadBatchEncoder,
  ReadReplyView,
  ReadStatus,
  WriteBatchEncoder,
  WriteBatchView,
  type AckFields,
} from '../../native-free-core/wire/codec.js';
import { checkLinearizable, type HistoryEntry, type Operation } from './linearizability.js';
import { mulberry32 } from '../helpers/prng.js';

export interface SimulationOptions {
  seed: number;
  replicas?: number;
  clients?: number;
  keys?: number;
  /** Ticks of the safety phase (faults on). */
  safetyTicks?: number;
  /** Most ticks the liveness phase may take before the run is declared stuck. */
  livenessTicksMax?: number;
  /** Largest link delay, in ticks. */
  delayMax?: number;
  /** Probability per tick that a member crashes (while more than one is alive). */
  crashRate?: number;
  /** Probability that a batch or ack message is delivered twice. */
  duplicateRate?: number;
  /** Probability per tick that a replacement replica starts joining (while the chain is short). */
  joinRate?: number;
  /** Scripted crashes for named scenarios: at tick `at`, crash whoever holds `role` then. */
  crashes?: ReadonlyArray<{ at: number; role: 'head' | 'middle' | 'tail' }>;
}

export interface SimulationResult {
  seed: number;
  ticks: number;
  operations: number;
  crashes: number;
  joins: number;
  /** Snapshot frames sent to joiners (several per join: the transfer interleaves with writes). */
  snapshotFrames: number;
  reconfigurations: number;
  finalMembers: readonly number[];
}

type Address = { kind: 'replica'; id: number } | { kind: 'client'; id: number };

type Message =
  | { kind: 'batch'; bytes: Uint8Array }
  | { kind: 'ack'; bytes: Uint8Array }
  | { kind: 'hello'; bytes: Uint8Array }
  | { kind: 'snapshot'; bytes: Uint8Array }
  | { kind: 'begin-handoff' }
  /** A replica's own work loop coming round again (a tail sends its joiner one snapshot frame per turn). */
  | { kind: 'resume' }
  | { kind: 'client-ack'; ack: AckFields }
  | { kind: 'read'; bytes: Uint8Array; client: number }
  | { kind: 'reply'; bytes: Uint8Array }
  | { kind: 'configuration'; configuration: Configuration };

interface InFlight {
  deliverAt: number;
  /** Send order: ties on deliverAt go in send order, so a held message keeps its place. */
  order: number;
  from: string;
  to: Address;
  message: Message;
}

interface Replica {
  id: number;
  node: ChainNode;
  alive: boolean;
  /** Configuration this replica acts on (the last one it received). */
  configuration: Configuration;
}

interface ClientState {
  id: number;
  nextClientSeq: number;
  pending: null | {
    entry: HistoryEntry;
    /** For writes: the client seq and the frame, resent unchanged on retry (exactly-once). */
    clientSeq: number;
    frame: Uint8Array | null;
    requestId: number;
    sentAt: number;
  };
  nextRequestId: number;
}

const RETRY_AFTER_TICKS = 60;
const HEARTBEAT_EVERY_TICKS = 5;
const SUSPECT_AFTER_TICKS = 40;
const TRACE_KEPT = Number(process.env.DABBA_SIM_TRACE ?? 40);
/** Keys are "k<n>" and values "c<client>-<client seq>": small, so snapshots take many frames. */
const SIM_KEY_BYTES_MAX = 8;
const SIM_VALUE_BYTES_MAX = 24;

export class SimulationFailure extends Error {
  constructor(seed: number, reason: string, trace: string[]) {
    super(`${reason}\nreproduce with --seed=${seed}\nlast events:\n  ${trace.join('\n  ')}`);
    this.name = 'SimulationFailure';
  }
}

export function simulate(options: SimulationOptions): SimulationResult {
  const seed = options.seed;
  const random = mulberry32(seed);
  const replicaCount = options.replicas ?? 3;
  const clientCount = options.clients ?? 3;
  const keyCount = options.keys ?? 4;
  const safetyTicks = options.safetyTicks ?? 600;
  const livenessTicksMax = options.livenessTicksMax ?? 4000;
  const delayMax = options.delayMax ?? 6;
  const crashRate = options.crashRate ?? 0.004;
  const duplicateRate = options.duplicateRate ?? 0.05;
  const joinRate = options.joinRate ?? 0.01;

  const trace: string[] = [];
  const note = (line: string): void => {
    trace.push(`${now}: ${line}`);
    if (trace.length > TRACE_KEPT) trace.shift();
  };
  const fail = (reason: string): never => {
    throw new SimulationFailure(seed, reason, trace);
  };

  let now = 0;
  const memberIds = Array.from({ length: replicaCount }, (_, index) => index + 1);
  const master = new InProcessMaster({ configuration: { epoch: 1, members: memberIds, joining: null }, suspectAfter: SUSPECT_AFTER_TICKS, now });
  const replicas = new Map<number, Replica>();
  const addReplica = (id: number, configuration: Configuration): void => {
    replicas.set(id, {
      id,
      alive: true,
      configuration,
      node: new ChainNode({
        id,
        epoch: configuration.epoch,
        role: roleIn(configuration, id) as Role,
        // Frames of about one entry or three client marks each: a snapshot takes several frames,
        // interleaved with new batches. Keys are "k<n>", values "c<client>-<seq>".
        keyBytesMax: SIM_KEY_BYTES_MAX,
        valueBytesMax: SIM_VALUE_BYTES_MAX,
        snapshotFrameBytesMax: snapshotFrameBytesFor(SIM_KEY_BYTES_MAX + SIM_VALUE_BYTES_MAX),
        // A slot hash key per replica, as in production (a random one each), so nothing can lean on
        // replicas sharing a table layout. Derived from the seed and id, not drawn from the PRNG, so
        // that every seed still replays the same run.
        store: new Store({ hashKey: [seed >>> 0, id >>> 0] }),
        // Large enough that a full in-flight list never happens here (it is tested elsewhere), so
        // links stay FIFO without modelling a sender that holds a refused batch.
        inflightBytesMax: 8 * 1024 * 1024,
        inflightBatchesMax: 65536,
        readReplyPayloadBytesMax: 16 * 1024,
        readReplyResultsMax: 16,
        log: (line) => note(`replica ${id} ${line}`),
      }),
    });
  };
  for (const id of memberIds) addReplica(id, master.configuration);
  let nextReplicaId = replicaCount + 1;
  const clients: ClientState[] = Array.from({ length: clientCount }, (_, index) => ({
    id: index + 1,
    nextClientSeq: 1,
    pending: null,
    nextRequestId: 1,
  }));
  const history: HistoryEntry[] = [];
  const encoder = new WriteBatchEncoder({ writesMax: 1, payloadBytesMax: 256 });
  const readEncoder = new ReadBatchEncoder({ readsMax: 1, keyBytesMax: 16 });
  const ackEncoder = new AckEncoder();
  const helloEncoder = new HelloEncoder();
  const replyView = new ReadReplyView();
  const peekView = new WriteBatchView();
  const appliedWrites = new Map<number, Set<string>>(memberIds.map((id) => [id, new Set<string>()]));
  const text = new TextEncoder();
  const decoder = new TextDecoder();

  // --- Network: FIFO per (from, to), random delay, optional duplication -----------------------
  let network: InFlight[] = [];
  let sendOrder = 0;
  const lastDeliveryOnLink = new Map<string, number>();
  const send = (from: string, to: Address, message: Message, duplicable = false): void => {
    const link = `${from}->${to.kind}${to.id}`;
    const deliverAt = Math.max(lastDeliveryOnLink.get(link) ?? 0, now + 1 + Math.floor(random() * delayMax));
    lastDeliveryOnLink.set(link, deliverAt);
    network.push({ deliverAt, order: sendOrder++, from, to, message });
    if (duplicable && random() < duplicateRate) network.push({ deliverAt: deliverAt + 1, order: sendOrder++, from, to, message });
  };

  const headOf = (): number => master.configuration.members[0]!;
  const tailOf = (): number => master.configuration.members.at(-1)!;

  // --- Replica behaviour -------------------------------------------------------------------------
  const performReady = (replica: Replica): void => {
    const { node, configuration } = replica;
    if (!node.hasReady()) return;
    const ready = node.ready();
    const role = roleIn(configuration, replica.id);
    // A tail with a joiner forwards to it; a joiner's predecessor is the tail.
    const successor = successorOf(configuration, replica.id) ?? (role === 'tail' || role === 'solo' ? configuration.joining : null);
    const predecessor = role === 'joining' ? configuration.members.at(-1)! : predecessorOf(configuration, replica.id);
    let forwarded = 0;
    if (successor !== null) {
      if (ready.snapshot !== null) {
        send(`r${replica.id}`, { kind: 'replica', id: successor }, { kind: 'snapshot', bytes: ready.snapshot.slice() });
        snapshotFrames++;
      }
      for (const batch of ready.forward) {
        send(`r${replica.id}`, { kind: 'replica', id: successor }, { kind: 'batch', bytes: batch.slice() }, true);
        forwarded++;
      }
    }
    if (predecessor !== null) {
      if (ready.helloUpstream !== null) {
        send(`r${replica.id}`, { kind: 'replica', id: predecessor }, { kind: 'hello', bytes: helloEncoder.encode(ready.helloUpstream).slice() });
      }
      if (ready.ackUpstream !== null) {
        send(`r${replica.id}`, { kind: 'replica', id: predecessor }, { kind: 'ack', bytes: ackEncoder.encode(ready.ackUpstream).slice() }, true);
      }
    }
    for (const ack of ready.clientAcks) send(`r${replica.id}`, { kind: 'client', id: ack.clientId }, { kind: 'client-ack', ack: { ...ack } });
    node.advance(ready, { forwarded, acksSent: true, repliesSent: ready.readReplies.length, snapshotSent: successor !== null });
    // The next frame goes on a later turn, so batches arriving meanwhile interleave with the transfer.
    if (ready.snapshot !== null && successor !== null) send(`r${replica.id}`, { kind: 'replica', id: replica.id }, { kind: 'resume' });
    if (ready.readReplies.length > 0) pendingReplies.push(...ready.readReplies.map((bytes) => ({ bytes, from: replica.id })));
  };
  // Replies are routed by request id to the client that asked; the tail does not know clients.
  const pendingReplies: Array<{ bytes: Uint8Array; from: number }> = [];
  const readOwners = new Map<number, number>();
  let nextGlobalRequestId = 1;

  /** Returns false when the replica cannot take the message yet (backpressure): it stays queued. */
  const deliverToReplica = (replica: Replica, message: Message): boolean => {
    const { node } = replica;
    switch (message.kind) {
      case 'batch': {
        if (!node.canAccept(message.bytes.length)) return false; // Held: the link keeps it, in order.
        if (peekView.open(message.bytes) !== null) fail(`replica ${replica.id} got a malformed batch`);
        const writeId = `${peekView.clientId}:${peekView.firstClientSeq}`;
        const result = node.step('upstream', message.bytes);
        if (result.status === 'rejected') note(`replica ${replica.id} rejected a batch: ${result.reason}`);
        if (result.status === 'applied') {
          // Exactly-once: no replica ever applies the same client write twice.
          const applied = appliedWrites.get(replica.id)!;
          if (applied.has(writeId)) fail(`exactly-once: replica ${replica.id} applied client write ${writeId} twice`);
          applied.add(writeId);
        }
        break;
      }
      case 'ack': {
        const result = node.step('downstream', message.bytes);
        if (result.status === 'rejected') fail(`replica ${replica.id} rejected an ack: ${result.reason}`);
        break;
      }
      case 'snapshot': {
        const result = node.step('upstream', message.bytes);
        if (result.status === 'rejected') fail(`replica ${replica.id} rejected a snapshot: ${result.reason}`);
        break;
      }
      case 'begin-handoff':
        // Only if this replica is still the tail its joiner copies from.
        if (master.configuration.joining !== null && master.configuration.members.at(-1) === replica.id && replica.configuration.joining !== null) {
          node.beginHandoff();
        }
        break;
      case 'hello': {
        const result = node.step('downstream', message.bytes);
        if (result.status === 'rejected') fail(`replica ${replica.id} rejected a hello: ${result.reason}`);
        break;
      }
      case 'read':
        node.step('client', message.bytes);
        break;
      case 'configuration': {
        const configuration = message.configuration;
        if (configuration.epoch <= node.epoch) return true;
        const role = roleIn(configuration, replica.id);
        if (role === null) {
          note(`replica ${replica.id} left the chain at epoch ${configuration.epoch}`);
          replica.alive = false;
          return true;
        }
        replica.configuration = configuration;
        if (role === 'joining') {
          // Still copying: follow the epoch, nothing else changes.
          node.reconfigure(configuration.epoch, 'joining');
          return true;
        }
        node.reconfigure(configuration.epoch, role, { joiner: role === 'tail' || role === 'solo' ? configuration.joining : null });
        note(`replica ${replica.id} is ${role} at epoch ${configuration.epoch} (${configuration.members.join(' ')})`);
        break;
      }
      case 'resume':
        break;
      default:
        fail(`replica got a ${message.kind}`);
    }
    performReady(replica);
    return true;
  };

  // --- Client behaviour --------------------------------------------------------------------------
  const startOperation = (client: ClientState): void => {
    const key = `k${Math.floor(random() * keyCount)}`;
    const roll = random();
    const operation: Operation =
      roll < 0.5 ? { kind: 'put', key, value: `c${client.id}-${client.nextClientSeq}` } : roll < 0.6 ? { kind: 'delete', key } : { kind: 'get', key };
    const entry: HistoryEntry = { client: client.id, operation, invokedAt: now, respondedAt: Number.POSITIVE_INFINITY };
    history.push(entry);
    if (operation.kind === 'get') {
      const requestId = nextGlobalRequestId++;
      readOwners.set(requestId, client.id);
      client.pending = { entry, clientSeq: 0, frame: null, requestId, sentAt: now };
      sendRead(client);
      return;
    }
    const clientSeq = client.nextClientSeq++;
    encoder.begin(client.id, clientSeq);
    const keyBytes = text.encode(key);
    if (operation.kind === 'put') {
      const valueBytes = text.encode(operation.value);
      encoder.addPut(keyBytes, 0, keyBytes.length, valueBytes, 0, valueBytes.length);
    } else {
      encoder.addDelete(keyBytes, 0, keyBytes.length);
    }
    client.pending = { entry, clientSeq, frame: encoder.finish().slice(), requestId: 0, sentAt: now };
    sendWrite(client);
  };
  const sendWrite = (client: ClientState): void => {
    // Each send is a fresh copy: the head stamps its copy in place.
    // Duplicable: a write may reach the head twice (a retry racing the original), even after its ack.
    send(`c${client.id}`, { kind: 'replica', id: headOf() }, { kind: 'batch', bytes: client.pending!.frame!.slice() }, true);
    client.pending!.sentAt = now;
  };
  const sendRead = (client: ClientState): void => {
    readEncoder.begin(client.pending!.requestId);
    const keyBytes = text.encode(client.pending!.entry.operation.key);
    readEncoder.addRead(keyBytes, 0, keyBytes.length);
    send(`c${client.id}`, { kind: 'replica', id: tailOf() }, { kind: 'read', bytes: readEncoder.finish(master.configuration.epoch).slice(), client: client.id });
    client.pending!.sentAt = now;
  };
  const deliverToClient = (client: ClientState, message: Message): void => {
    const pending = client.pending;
    if (message.kind === 'client-ack') {
      // I2: an ack means the tail applied the write; the master's current tail must have it too
      // once it is the tail (checked at the end), and acks never go past what the client sent.
      if (message.ack.committedClientSeq >= client.nextClientSeq) fail(`client ${client.id} acked beyond what it sent`);
      if (pending !== null && pending.clientSeq > 0 && message.ack.committedClientSeq >= pending.clientSeq) {
        pending.entry.respondedAt = now;
        client.pending = null;
      }
      return;
    }
    if (message.kind === 'reply') {
      if (replyView.open(message.bytes) !== null) fail('malformed read reply');
      if (pending === null || pending.requestId !== replyView.firstRequestId) return; // A reply to an earlier retry.
      if (replyView.statusAt(0) === ReadStatus.Found) {
        const result = replyView.resultAt(0);
        const start = replyView.payloadPosition + result.valueOffset();
        pending.entry.result = decoder.decode(replyView.bytes.subarray(start, start + result.valueLength()));
      } else {
        pending.entry.result = undefined;
      }
      pending.entry.respondedAt = now;
      client.pending = null;
    }
  };

  // --- Checks ------------------------------------------------------------------------------------
  const checkInvariants = (): void => {
    const members = master.configuration.members.map((id) => replicas.get(id)!).filter((replica) => replica.alive);
    for (let index = 1; index < members.length; index++) {
      const before = members[index - 1]!.node;
      const after = members[index]!.node;
      // I1 holds between neighbours that already share the current epoch.
      if (before.epoch === after.epoch && after.appliedSeq > before.appliedSeq) {
        fail(`I1: replica ${after.id} applied ${after.appliedSeq} > predecessor ${before.id} ${before.appliedSeq}`);
      }
    }
  };

  // --- The run -----------------------------------------------------------------------------------
  let crashes = 0;
  let joins = 0;
  let snapshotFrames = 0;
  let reconfigurations = 0;
  /** A replica's progress, as a worker would publish it (a crashed one's stays as it was). */
  const statusOf = (id: number): LiveHostStatus | null => {
    const node = replicas.get(id)?.node;
    if (node === undefined) return null;
    return { epoch: node.epoch, appliedSeq: node.appliedSeq, joinCaughtUp: node.joinCaughtUp, handoffReadyEpoch: node.handoffReady ? node.epoch : 0 };
  };
  /** Carries out one decision of the master, by messages. */
  const execute = (decision: InProcessDecision): void => {
    if (decision.kind === 'request-handoff') {
      // The tail stops taking batches so the joiner can catch up fully.
      send('master', { kind: 'replica', id: tailOf() }, { kind: 'begin-handoff' });
      return;
    }
    const { event } = decision;
    const { configuration } = event;
    reconfigurations++;
    note(`master: ${event.kind} replica ${event.replicaId}, epoch ${configuration.epoch} = ${configuration.members.join(' ')}`);
    if (event.kind === 'joining') {
      joins++;
      appliedWrites.set(event.replicaId, new Set());
      addReplica(event.replicaId, configuration);
    }
    // A joiner created in this very configuration needs no message; everyone else is told.
    const joiner = event.kind === 'joining' ? null : configuration.joining;
    for (const id of [...configuration.members, ...(joiner === null ? [] : [joiner])]) {
      send('master', { kind: 'replica', id }, { kind: 'configuration', configuration });
    }
  };
  const step = (faults: boolean): void => {
    now++;
    // Deliver everything due, in order.
    const due = network.filter((item) => item.deliverAt <= now);
    network = network.filter((item) => item.deliverAt > now);
    due.sort((a, b) => a.deliverAt - b.deliverAt || a.order - b.order);
    const heldLinks = new Set<string>();
    for (const item of due) {
      if (item.to.kind === 'replica') {
        const replica = replicas.get(item.to.id);
        if (replica === undefined || !replica.alive) continue;
        const link = `${item.from}->${item.to.id}`;
        // Once a message on a link is held, everything behind it on that link waits too (FIFO).
        if (heldLinks.has(link) || !deliverToReplica(replica, item.message)) {
          heldLinks.add(link);
          network.push({ ...item, deliverAt: now + 1 });
        }
      } else {
        deliverToClient(clients[item.to.id - 1]!, item.message);
      }
    }
    // Read replies go to the client that asked.
    for (const reply of pendingReplies.splice(0)) {
      if (replyView.open(reply.bytes) !== null) fail('malformed read reply');
      const owner = readOwners.get(replyView.firstRequestId);
      if (owner !== undefined) send(`r${reply.from}`, { kind: 'client', id: owner }, { kind: 'reply', bytes: reply.bytes });
    }
    // Heartbeats and the master.
    for (const replica of replicas.values()) {
      if (replica.alive && now % HEARTBEAT_EVERY_TICKS === replica.id % HEARTBEAT_EVERY_TICKS) master.heartbeat(replica.id, now);
    }
    // Scripted crashes (named scenarios), then random ones (never the last live member: I4 needs
    // one survivor).
    for (const scripted of options.crashes ?? []) {
      if (scripted.at !== now) continue;
      const victim = master.configuration.members.find((id) => roleIn(master.configuration, id) === scripted.role);
      if (victim === undefined) fail(`scenario: no ${scripted.role} to crash at tick ${now}`);
      replicas.get(victim!)!.alive = false;
      crashes++;
      note(`crash replica ${victim} (${scripted.role}, scripted)`);
    }
    // Now and then a replacement is asked for while the chain is short, as addReplica() would be.
    const { joining, members } = master.configuration;
    if (faults && joining === null && master.newcomer === null && members.length < replicaCount && random() < joinRate) {
      master.requestJoin(nextReplicaId++);
    }
    master.settle({ now, statusOf, silenceCounts: true }, execute);
    if (faults && random() < crashRate) {
      const liveMembers = master.configuration.members.filter((id) => replicas.get(id)!.alive);
      const joiner = master.configuration.joining;
      const candidates = [...(liveMembers.length > 1 ? liveMembers : []), ...(joiner !== null && replicas.get(joiner)!.alive ? [joiner] : [])];
      if (candidates.length > 0) {
        const victim = candidates[Math.floor(random() * candidates.length)]!;
        replicas.get(victim)!.alive = false;
        crashes++;
        note(`crash replica ${victim} (${roleIn(master.configuration, victim)})`);
      }
    }
    // Clients: start new operations, retry old ones.
    for (const client of clients) {
      if (client.pending === null) {
        if (faults && random() < 0.3) startOperation(client);
      } else if (now - client.pending.sentAt >= RETRY_AFTER_TICKS) {
        if (client.pending.frame !== null) sendWrite(client);
        else sendRead(client);
      }
    }
    checkInvariants();
  };

  for (let tick = 0; tick < safetyTicks; tick++) step(true);
  let liveness = 0;
  while (clients.some((client) => client.pending !== null) || network.length > 0) {
    if (++liveness > livenessTicksMax) fail(`liveness: operations still pending after ${livenessTicksMax} ticks`);
    step(false);
  }

  // Final checks: live members agree; the history is linearizable.
  const live = master.configuration.members.map((id) => replicas.get(id)!).filter((replica) => replica.alive);
  const digests = live.map((replica) => `${replica.id}:${replica.node.appliedSeq}:${replica.node.store.digest()}`);
  if (new Set(live.map((replica) => replica.node.store.digest())).size !== 1) fail(`replicas differ: ${digests.join(' ')}`);
  // The final state joins the history as reads after everything else, so a lost acknowledged write
  // (I4) shows up as a read the history cannot explain even if no client read that key late.
  const tail = live.at(-1)!.node;
  for (let key = 0; key < keyCount; key++) {
    const keyBytes = text.encode(`k${key}`);
    const handle = tail.store.find(keyBytes, 0, keyBytes.length);
    const result = handle < 0 ? undefined : decoder.decode(tail.store.valueCopy(handle));
    history.push({ client: 0, operation: { kind: 'get', key: `k${key}` }, invokedAt: now + 1 + 2 * key, respondedAt: now + 2 + 2 * key, result });
  }
  const check = checkLinearizable(history);
  if (!check.linearizable) fail(`history is not linearizable: ${check.key ?? ''} ${check.explanation ?? ''}${check.exhausted ? ' (search exhausted)' : ''}`);
  return { seed, ticks: now, operations: history.length, crashes, joins, snapshotFrames, reconfigurations, finalMembers: master.configuration.members };
}
