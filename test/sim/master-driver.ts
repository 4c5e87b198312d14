/**
 * The simulated master: the InProcessMaster, which asks the one cluster policy
 * (native-free-core/master/cluster-decisions.ts) what to do, fed as etcd would feed it. Hosts'
 * heartbeats are its leases (a silent replica is removed) and carry their status (joins and
 * handoffs follow it); a heartbeat with a replica id never seen before is a new registration, a
 * newcomer the policy lets join. Its decisions go out as etcd's watches deliver them: every
 * configuration to every host, in order and without gaps (a host cut off gets the ones it missed
 * when it hears from the master again), and the handoff last asked for.
 */
import { type Configuration } from '../../native-free-core/master/chain-master.js';
import type { HandoffRequest, LiveHostStatus } from '../../native-free-core/master/cluster-decisions.js';
import { InProcessMaster, type InProcessDecision } from '../../native-free-core/master/in-process-master.js';
import type { SimulatedHost } from './replica-host.js';
import { MASTER, TIMING, type World } from './world.js';

export interface MasterCounts {
  reconfigurations: number;
  removals: number;
  joinsBegun: number;
  joinsCompleted: number;
  joinsAbandoned: number;
}

export class SimulatedMaster {
  readonly master: InProcessMaster;
  readonly counts: MasterCounts = { reconfigurations: 0, removals: 0, joinsBegun: 0, joinsCompleted: 0, joinsAbandoned: 0 };
  private readonly statuses = new Map<number, LiveHostStatus>();
  /**
   * Each registration's lease (etcd's, with a TTL of suspectAfter): replica id -> when the master
   * last heard it. An expired one never comes back: its host must register again, as a new replica.
   */
  private readonly leases = new Map<number, number>();
  private readonly newcomers: number[] = [];
  private handoff: HandoffRequest | null = null;
  /** Every configuration so far: the one of epoch e at index e - 1 (what a watch replays). */
  private readonly history: Configuration[] = [];

  constructor(
    private readonly world: World,
    configuration: Configuration,
  ) {
    this.master = new InProcessMaster({ configuration, suspectAfter: TIMING.suspectAfter, now: world.now });
    this.history.push(configuration);
    for (const member of configuration.members) this.leases.set(member, world.now);
    world.scheduler.after(TIMING.masterTickEvery, () => this.tick());
  }

  get configuration(): Configuration {
    return this.master.configuration;
  }

  /** The configurations after epoch `epoch`, oldest first (a watch catching up). */
  configurationsAfter(epoch: number): readonly Configuration[] {
    return this.history.slice(epoch);
  }

  get handoffRequest(): HandoffRequest | null {
    return this.handoff;
  }

  /** Whether the master heard from `replicaId` within the last `ticks`. */
  heardWithin(replicaId: number, ticks: number): boolean {
    const heard = this.leases.get(replicaId);
    return heard !== undefined && this.world.now - heard < ticks;
  }

  /**
   * A host's heartbeat, sent at `sentAt`: its lease's keep-alive and its status. A replica id heard
   * for the first time is a new registration (a newcomer); one whose lease expired is told so,
   * unless its host `registers` it again (a durable host restarted with its log gets a new lease).
   */
  heartbeat(host: SimulatedHost, replicaId: number, status: LiveHostStatus | null, sentAt: number, registers = false): void {
    const registered = this.leases.has(replicaId);
    const granted = !registered || registers || this.heardWithin(replicaId, TIMING.suspectAfter);
    if (granted) {
      if (!registered) this.newcomers.push(replicaId);
      this.leases.set(replicaId, this.world.now);
      this.master.heartbeat(replicaId, this.world.now);
      if (status !== null) this.statuses.set(replicaId, status);
    }
    this.world.network.sendControl(MASTER, host.hostId, () => host.lease(replicaId, sentAt, granted));
  }

  private tick(): void {
    this.world.scheduler.after(TIMING.masterTickEvery, () => this.tick());
    // addReplica() in one process, a new registration across hosts: one newcomer at a time.
    while (this.master.newcomer === null && this.newcomers.length > 0) {
      const newcomer = this.newcomers.shift()!;
      if (this.world.running(newcomer) !== null && this.heardWithin(newcomer, TIMING.suspectAfter)) this.master.requestJoin(newcomer);
    }
    this.master.settle({ now: this.world.now, statusOf: (replicaId) => this.statuses.get(replicaId) ?? null, silenceCounts: true }, (decision) => this.execute(decision));
  }

  private execute(decision: InProcessDecision): void {
    const configuration = this.configuration;
    if (decision.kind === 'request-handoff') {
      this.handoff = { epoch: decision.epoch, joiner: decision.joiner };
      const tail = this.world.hostOf(configuration.members.at(-1)!);
      const handoff = this.handoff;
      this.world.trace.note(`master: tail ${tail.replicaId} to hand over to joiner ${decision.joiner} in epoch ${decision.epoch}`);
      this.world.network.sendControl(MASTER, tail.hostId, () => tail.requestHandoff(handoff));
      return;
    }
    const { event } = decision;
    this.counts.reconfigurations++;
    if (event.kind === 'joining') this.counts.joinsBegun++;
    if (event.kind === 'joined') this.counts.joinsCompleted++;
    if (event.kind === 'removed') {
      if (this.history.at(-1)!.members.includes(event.replicaId)) this.counts.removals++;
      else this.counts.joinsAbandoned++;
    }
    this.history.push(configuration);
    this.world.trace.note(`master: ${event.kind} replica ${event.replicaId}: epoch ${configuration.epoch} = ${configuration.members.join(' ')}${configuration.joining === null ? '' : ` + joining ${configuration.joining}`}`);
    for (const host of this.world.hosts.values()) this.world.network.sendControl(MASTER, host.hostId, () => host.watch());
  }
}
