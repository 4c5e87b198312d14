/**
 * Faults beyond the network's own (loss, duplication, delay: ./network.ts): host crashes, restarts
 * (the crashed host comes back empty as a new replica and joins through the policy), and
 * partitions that heal. Random ones during the safety phase, and scripted ones for named scenarios.
 *
 * One rule keeps I4 meaningful: a fault never leaves the chain without a healthy member (alive,
 * heard by the master lately, on the master's side of any cut, knowing it is a member, and not
 * slowed down: the master may move a slow host out at any moment, by fail-slow demotion). Without
 * one, the policy could remove every live replica while keeping a dead one, and the chain would be
 * unavailable: more than the protocol promises to survive. The last condition is stricter than the
 * protocol needs: a joiner the master has just made the tail, and which has not heard so yet,
 * discards its state if its link to the old tail breaks (the runtime's join-link rule, as
 * src/host/chain-links.ts joinLinkLost does), so it cannot be counted on to survive the others.
 */
import type { Timer } from '../../src/runtime/clock.js';
import type { Endpoint } from './network.js';
import type { SimulatedHost } from './replica-host.js';
import { MASTER, TIMING, type World } from './world.js';

/** A replica by its place in the master's configuration when the fault fires. */
export type ChainPosition = 'head' | 'middle' | 'tail' | 'joiner';

export type PartitionPart = ChainPosition | 'master' | 'clients';

export type ScriptedFault =
  | { at: number; crash: ChainPosition }
  /** Every host at once (a power cut): only hosts with a disk keep anything. */
  | { at: number; crashAll: true }
  /** `partition` cut off from `from` (by default, from everyone else) for `healAfter` ticks. */
  | { at: number; partition: readonly PartitionPart[]; from?: readonly PartitionPart[]; healAfter: number }
  | { at: number; breakLink: readonly [ChainPosition, ChainPosition] }
  /** The host at `slow` takes `factor` times as long over every batch (a throttled CPU) for `healAfter` ticks (null: for good). */
  | { at: number; slow: ChainPosition; factor: number; healAfter: number | null };

export interface FaultOptions {
  /** Mean crashes per tick. */
  crashRate: number;
  /** Mean partitions per tick (one at a time). */
  partitionRate: number;
  /** Mean slow-downs per tick (one host at a time, 10x for 50-300 ticks). */
  slowRate: number;
  partitionTicks: readonly [number, number];
  /** Ticks after which a crashed host restarts; null: it stays down. */
  restartAfter: readonly [number, number] | null;
  script: readonly ScriptedFault[];
}

export interface FaultCounts {
  crashes: number;
  restarts: number;
  partitions: number;
  slowDowns: number;
}

export class FaultInjector {
  readonly counts: FaultCounts = { crashes: 0, restarts: 0, partitions: 0, slowDowns: 0 };
  private slowed: SimulatedHost | null = null;
  private active = true;
  private heal: Timer | null = null;

  constructor(
    private readonly world: World,
    private readonly options: FaultOptions,
  ) {}

  start(): void {
    this.every(this.options.crashRate, () => this.randomCrash());
    this.every(this.options.partitionRate, () => this.randomPartition());
    this.every(this.options.slowRate, () => this.randomSlowDown());
    for (const fault of this.options.script) this.world.scheduler.at(fault.at, () => this.scripted(fault));
  }

  /** The safety phase is over: the cut heals, and no new fault starts (crashed hosts still restart). */
  stop(): void {
    this.active = false;
    this.heal?.cancel();
    this.world.network.heal();
    // A slow host recovers with the rest: the quiet phase checks that the chain settles.
    if (this.slowed !== null) this.slowDown(this.slowed, 1, null);
    this.world.network.faults = { ...this.world.network.faults, lossRate: 0, duplicateRate: 0 };
  }

  /** Fires `fault` at random, `rate` times per tick on average, while active. */
  private every(rate: number, fault: () => void): void {
    if (rate <= 0) return;
    const wait = 1 + Math.floor(-Math.log(1 - this.world.random()) / rate);
    this.world.scheduler.after(wait, () => {
      if (!this.active) return;
      fault();
      this.every(rate, fault);
    });
  }

  private randomCrash(): void {
    const alive = [...this.world.hosts.values()].filter((host) => host.alive);
    if (alive.length === 0) return;
    const victim = this.world.pick(alive);
    if (this.leavesHealthyMember(victim, null) && this.leavesEveryClientAHost(victim)) this.crash(victim);
  }

  /**
   * A host that never comes back must not be the last live one a client's view names: a client
   * hears of new configurations only from the hosts of its view (as RemoteClient does), so it
   * would be stranded, resending to a dead host for ever. A real limitation of the client, kept
   * out of the random runs (a restarted host answers from the same address, so it is not one).
   */
  private leavesEveryClientAHost(victim: SimulatedHost): boolean {
    if (this.options.restartAfter !== null) return true;
    return this.world.clients.every((client) => client.viewHosts.some((hostId) => hostId !== victim.hostId && this.world.hosts.get(hostId)!.alive));
  }

  private randomPartition(): void {
    if (this.world.network.partitioned) return;
    const endpoints = [...this.world.hosts.keys(), ...this.world.clients.map((client) => client.endpoint), MASTER];
    const side = new Set(endpoints.filter(() => this.world.random() < 0.35));
    if (side.size === 0 || side.size === endpoints.length || !this.leavesHealthyMember(null, side)) return;
    const [min, max] = this.options.partitionTicks;
    this.partition(side, this.world.between(min, max));
  }

  /** Whether some member stays healthy if `victim` crashes or `side` is cut off. */
  private leavesHealthyMember(victim: SimulatedHost | null, side: ReadonlySet<Endpoint> | null): boolean {
    const network = this.world.network;
    return this.world.master.configuration.members.some((member) => {
      const host = this.world.running(member);
      if (host === null || host === victim || network.isCut(host.hostId, MASTER)) return false;
      const role = host.role();
      if (role === null || role === 'joining') return false;
      // A slow host may be moved out by the master at any moment (fail-slow): not one to count on.
      if (host.slowFactor > 1) return false;
      if (side !== null && side.has(host.hostId) !== side.has(MASTER)) return false;
      return this.world.master.heardWithin(member, TIMING.suspectAfter / 2);
    });
  }

  private randomSlowDown(): void {
    if (this.slowed !== null) return;
    const alive = [...this.world.hosts.values()].filter((host) => host.alive);
    if (alive.length === 0) return;
    const victim = this.world.pick(alive);
    // As for a crash: the chain keeps a healthy member besides the host slowed down.
    if (this.leavesHealthyMember(victim, null)) this.slowDown(victim, 10, this.world.between(50, 300));
  }

  /** `host` takes `factor` times as long over every batch, back to normal after `healAfter` ticks (null: for good). */
  private slowDown(host: SimulatedHost, factor: number, healAfter: number | null): void {
    host.slowFactor = factor;
    this.slowed = factor > 1 ? host : null;
    if (factor > 1) this.counts.slowDowns++;
    this.world.trace.note(`${host.hostId} ${factor > 1 ? `runs ${factor}x slower${healAfter === null ? '' : ` for ${healAfter} ticks`}` : 'runs at full speed again'}`);
    if (factor > 1 && healAfter !== null) {
      this.world.scheduler.after(healAfter, () => {
        if (host.slowFactor === factor) this.slowDown(host, 1, null);
      });
    }
  }

  private crash(host: SimulatedHost): void {
    host.crash();
    this.counts.crashes++;
    const restartAfter = this.options.restartAfter;
    if (restartAfter === null) return;
    this.world.scheduler.after(this.world.between(restartAfter[0], restartAfter[1]), () => {
      this.counts.restarts++;
      host.restart();
    });
  }

  private partition(side: ReadonlySet<Endpoint>, ticks: number, from: ReadonlySet<Endpoint> | null = null): void {
    this.world.network.partition(side, from);
    this.counts.partitions++;
    this.world.trace.note(`partition: ${[...side].join(' ')} cut off from ${from === null ? 'the others' : [...from].join(' ')} for ${ticks} ticks`);
    this.heal = this.world.scheduler.after(ticks, () => {
      this.heal = null;
      this.world.network.heal();
      this.world.trace.note('partition healed');
    });
  }

  private scripted(fault: ScriptedFault): void {
    if ('crash' in fault) return this.crash(this.hostAt(fault.crash));
    if ('slow' in fault) return this.slowDown(this.hostAt(fault.slow), fault.factor, fault.healAfter);
    if ('crashAll' in fault) {
      this.world.trace.note('every host crashes at once');
      for (const host of this.world.hosts.values()) if (host.alive) this.crash(host);
      return;
    }
    if ('partition' in fault) return this.partition(this.endpoints(fault.partition), fault.healAfter, fault.from === undefined ? null : this.endpoints(fault.from));
    const [a, b] = fault.breakLink.map((position) => this.hostAt(position));
    this.world.trace.note(`scripted loss on the link between replicas ${a!.replicaId} and ${b!.replicaId}`);
    this.world.network.break(a!.links.linkTo(b!.replicaId));
  }

  private endpoints(parts: readonly PartitionPart[]): Set<Endpoint> {
    const endpoints = new Set<Endpoint>();
    for (const part of parts) {
      if (part === 'master') endpoints.add(MASTER);
      else if (part === 'clients') for (const client of this.world.clients) endpoints.add(client.endpoint);
      else endpoints.add(this.hostAt(part).hostId);
    }
    return endpoints;
  }

  /** The host running the replica at `position` in the master's configuration now. */
  private hostAt(position: ChainPosition): SimulatedHost {
    const { members, joining } = this.world.master.configuration;
    const replicaId = position === 'head' ? members[0] : position === 'tail' ? members.at(-1) : position === 'joiner' ? joining : members.length > 2 ? members[1] : undefined;
    const host = replicaId === undefined || replicaId === null ? null : this.world.running(replicaId);
    if (host === null) return this.world.trace.fail(`scenario: no live ${position} at tick ${this.world.now}`);
    return host;
  }
}
