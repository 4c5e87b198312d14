/**
 * The simulated network: endpoints (the master, hosts, clients) exchange messages over directed
 * links that are FIFO, each message with a random delay. Faults:
 *
 * - loss: data frames travel on Connections (a socket between a client and a host, or a peer link
 *   between two replicas). As on TCP, a frame is never lost alone: a loss breaks its connection, and
 *   everything still in transit on it, both ways, is lost with it. The owner hears of the break
 *   (onBreak) and redials, as the real runtime does (src/host/chain-links.ts repairAfterRedial, the
 *   remote client's HostConnection.lost);
 * - partitions: while a set of endpoints is cut off, nothing crosses the cut; a connection across
 *   it breaks when it next carries a frame, and cannot be dialed until the cut heals;
 * - duplication: a frame the caller marks duplicable may arrive twice in a row;
 * - backpressure: a receiver may hold a frame (its deliver returns false): it stays at the head of
 *   its link, and everything behind it waits, until a later retry takes it.
 *
 * Control messages (heartbeats and leases between hosts and the master, configurations, views
 * pushed by the master) stand for etcd's leases and watches: never lost, but dropped across a cut.
 */
import { assert } from '../../native-free-core/assert.js';
import type { Scheduler } from './clock.js';

export type Endpoint = string;

export interface NetworkFaults {
  /** Largest extra delay of a message, in ticks (every message takes at least one). */
  delayMax: number;
  /** Probability that a frame on a connection is lost (which breaks the connection). */
  lossRate: number;
  /** Probability that a duplicable frame arrives twice. */
  duplicateRate: number;
}

export interface NetworkCounts {
  messages: number;
  /** Frames lost, each breaking its connection. */
  losses: number;
  duplicates: number;
  /** Messages dropped at a partition's cut. */
  cutDrops: number;
}

/** A socket between two endpoints: carries frames both ways while up. */
export class Connection {
  state: 'idle' | 'up' | 'broken' = 'idle';
  /** Bumped whenever the socket goes: frames of an older generation never arrive. */
  generation = 0;
  /** Times it came up; a redial (dials > 1) is repaired with a Hello. */
  dials = 0;
  /** Told when a fault breaks it (not when an owner closes it). */
  onBreak: (() => void) | null = null;

  constructor(
    readonly name: string,
    readonly a: Endpoint,
    readonly b: Endpoint,
  ) {}

  get isUp(): boolean {
    return this.state === 'up';
  }
}

interface InTransit {
  at: number;
  from: Endpoint;
  to: Endpoint;
  connection: Connection | null;
  generation: number;
  /** Hands the message over; false if the receiver holds it back for now. */
  deliver: () => boolean;
}

/** One direction between two endpoints: messages in send order, the first one scheduled. */
class Link {
  readonly queue: InTransit[] = [];
  head = 0;
  lastAt = 0;
  scheduled = false;
}

export class Network {
  readonly counts: NetworkCounts = { messages: 0, losses: 0, duplicates: 0, cutDrops: 0 };
  /** While partitioned: the endpoints cut off, and those they are cut off from. */
  private cutOff: ReadonlySet<Endpoint> | null = null;
  private cutFrom: ReadonlySet<Endpoint> | null = null;
  private readonly links = new Map<string, Link>();
  private readonly connections = new Map<string, Connection>();

  constructor(
    private readonly scheduler: Scheduler,
    private readonly random: () => number,
    public faults: NetworkFaults,
  ) {}

  /** Whether a partition separates `a` from `b` now. */
  isCut(a: Endpoint, b: Endpoint): boolean {
    const side = this.cutOff;
    if (side === null || side.has(a) === side.has(b)) return false;
    const from = this.cutFrom;
    return from === null || from.has(side.has(a) ? b : a);
  }

  get partitioned(): boolean {
    return this.cutOff !== null;
  }

  /** Cuts `side` off from `from` (by default, from every other endpoint) until heal(). */
  partition(side: ReadonlySet<Endpoint>, from: ReadonlySet<Endpoint> | null = null): void {
    assert(this.cutOff === null, 'Network.partition: one partition at a time');
    this.cutOff = side;
    this.cutFrom = from;
  }

  heal(): void {
    this.cutOff = null;
    this.cutFrom = null;
  }

  /** The connection named `name` (created idle on first use). */
  connection(name: string, a: Endpoint, b: Endpoint): Connection {
    let connection = this.connections.get(name);
    if (connection === undefined) this.connections.set(name, (connection = new Connection(name, a, b)));
    return connection;
  }

  /** A dial succeeded: a new socket, on which nothing of the old one arrives. */
  open(connection: Connection): void {
    assert(!this.isCut(connection.a, connection.b), 'Network.open: a dial across a cut');
    connection.state = 'up';
    connection.generation++;
    connection.dials++;
  }

  /** An owner closes it (no longer a neighbour, host leaving): what is in transit is lost, nobody redials. */
  close(connection: Connection): void {
    connection.state = 'idle';
    connection.generation++;
  }

  /** The process at `endpoint` dies: every socket it had goes down, and the other ends are told. */
  breakEvery(endpoint: Endpoint): void {
    for (const connection of this.connections.values()) if (connection.a === endpoint || connection.b === endpoint) this.break(connection);
  }

  /** A fault takes the socket down: what is in transit is lost, and the owner is told. */
  break(connection: Connection): void {
    if (connection.state !== 'up') return;
    connection.state = 'broken';
    connection.generation++;
    connection.onBreak?.();
  }

  /**
   * Sends a frame on `connection`, from endpoint `from` to `to`. False if the connection is not up
   * (the sender keeps the frame, as a full socket would make it). A frame lost or cut is sent as
   * far as the sender can tell: true.
   */
  send(connection: Connection, from: Endpoint, to: Endpoint, deliver: () => boolean, duplicable = false): boolean {
    if (!connection.isUp) return false;
    if (this.isCut(from, to)) {
      this.counts.cutDrops++;
      this.break(connection);
      return true;
    }
    if (this.random() < this.faults.lossRate) {
      this.counts.losses++;
      this.break(connection);
      return true;
    }
    this.enqueue(from, to, connection, deliver);
    if (duplicable && this.random() < this.faults.duplicateRate) {
      this.counts.duplicates++;
      this.enqueue(from, to, connection, deliver);
    }
    return true;
  }

  /** A control message (etcd's lease or watch): delayed, never lost, dropped across a cut. */
  sendControl(from: Endpoint, to: Endpoint, deliver: () => void): void {
    if (this.isCut(from, to)) {
      this.counts.cutDrops++;
      return;
    }
    this.enqueue(from, to, null, () => {
      deliver();
      return true;
    });
  }

  private enqueue(from: Endpoint, to: Endpoint, connection: Connection | null, deliver: () => boolean): void {
    const key = `${from}>${to}`;
    let link = this.links.get(key);
    if (link === undefined) this.links.set(key, (link = new Link()));
    const now = this.scheduler.now;
    const at = Math.max(link.lastAt, now + 1 + Math.floor(this.random() * this.faults.delayMax));
    link.lastAt = at;
    link.queue.push({ at, from, to, connection, generation: connection?.generation ?? 0, deliver });
    this.counts.messages++;
    if (!link.scheduled) this.schedule(link, at);
  }

  private schedule(link: Link, at: number): void {
    link.scheduled = true;
    this.scheduler.at(Math.max(at, this.scheduler.now), () => this.deliverNext(link));
  }

  private deliverNext(link: Link): void {
    link.scheduled = false;
    const item = link.queue[link.head];
    if (item === undefined) return;
    const stale = item.connection !== null && item.connection.generation !== item.generation;
    if (!stale && this.isCut(item.from, item.to)) {
      // The partition began while it was on its way.
      this.counts.cutDrops++;
      if (item.connection !== null) this.break(item.connection);
    } else if (!stale && !item.deliver()) {
      // Held by the receiver: try again next tick, keeping the link's order.
      this.schedule(link, this.scheduler.now + 1);
      return;
    }
    link.head++;
    if (link.head > 64 && link.head * 2 > link.queue.length) {
      link.queue.splice(0, link.head);
      link.head = 0;
    }
    const next = link.queue[link.head];
    if (next !== undefined) this.schedule(link, next.at);
  }
}
