/**
 * The simulated master: the InProcessMaster, which asks the one cluster policy
 * (native-free-core/master/cluster-decisions.ts) what to do, fed as etcd would feed it. Hosts'
 * heartbeats are its leases (a silent replica is removed) and carry their status (joins and
 * handoffs follow it); a heartbeat with a replica id never seen before is a new registration, a
 * newcomer the policy lets join. Its decisions go out as etcd's watches deliver them: every
 * configuration to every host, in order and without gaps (a host cut off gets the ones it missed
 * when it hears from the master again), and the handoff last asked for. Fail-slow demotion runs
 * the runtimes' policy (SlowNodeBench) on the load hosts report: a slow host's replica is removed,
 * and its registration as a new replica waits until its quarantine is over.
 */
import { type Configuration } from '../../native-free-core/master/chain-master.js';
import type { HandoffRequest, LiveHostStatus } from '../../native-free-core/master/cluster-decisions.js';
import { InProcessMaster, type InProcessDecision } from '../../native-free-core/master/in-process-master.js';
import { removalRefusal } from '../../native-free-core/master/cluster-decisions.js';
import { SlowNodeBench, type NodeLoad } from '../../native-free-core/master/fail-slow.js';
import type { SimulatedHost } from './replica-host.js';
import { MASTER, SIM_FAIL_SLOW, TIMING, type World } from './world.js';

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
  private readonly slowHosts = new SlowNodeBench(SIM_FAIL_SLOW);
  /** Each host's last reported load, and when the master last heard from it (under any replica id), by host id. */
  private readonly loads = new Map<string, NodeLoad>();
  private readonly hostHeardAt = new Map<string, number>();

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
  heartbeat(host: SimulatedHost, replicaId: number, status: LiveHostStatus | null, sentAt: number, registers = false, load: NodeLoad | null = null): void {
    const registered = this.leases.has(replicaId);
    const granted = !registered || registers || this.heardWithin(replicaId, TIMING.suspectAfter);
    if (granted) {
      if (!registered) this.newcomers.push(replicaId);
      this.leases.set(replicaId, this.world.now);
      this.master.heartbeat(replicaId, this.world.now);
      if (status !== null) this.statuses.set(replicaId, status);
      if (load !== null) this.loads.set(host.hostId, load);
      this.hostHeardAt.set(host.hostId, this.world.now);
    }
    this.world.network.sendControl(MASTER, host.hostId, () => host.lease(replicaId, sentAt, granted));
  }

  private tick(): void {
    this.world.scheduler.after(TIMING.masterTickEvery, () => this.tick());
    this.watchSlowness();
    // addReplica() in one process, a new registration across hosts: one newcomer at a time, none
    // from a host benched for being slow (it waits, queued, for its quarantine to end).
    for (let index = 0; this.master.newcomer === null && index < this.newcomers.length; ) {
      const newcomer = this.newcomers[index]!;
      const host = this.world.running(newcomer);
      if (host !== null && this.slowHosts.isBenched(host.hostId)) {
        index++;
        continue;
      }
      this.newcomers.splice(index, 1);
      if (host !== null && this.heardWithin(newcomer, TIMING.suspectAfter)) this.master.requestJoin(newcomer);
    }
    this.master.settle({ now: this.world.now, statusOf: (replicaId) => this.statuses.get(replicaId) ?? null, silenceCounts: true }, (decision) => this.execute(decision));
  }

  /**
   * Fail-slow: the hosts holding members report their load; one found slow is benched and its
   * member removed (when the policy allows: never the last one), as the etcd master does.
   */
  private watchSlowness(): void {
    const now = this.world.now;
    const hostOf = (replicaId: number): SimulatedHost | null => this.world.running(replicaId);
    const silent = (hostId: string): boolean => now - (this.hostHeardAt.get(hostId) ?? Number.NEGATIVE_INFINITY) >= TIMING.suspectAfter;
    this.slowHosts.release(now, silent);
    const members = this.configuration.members;
    const loads = new Map<string, NodeLoad>();
    for (const member of members) {
      const host = hostOf(member);
      const load = host === null ? undefined : this.loads.get(host.hostId);
      if (host !== null && load !== undefined && this.heardWithin(member, TIMING.suspectAfter)) loads.set(host.hostId, load);
    }
    const planned = [...this.world.hosts.keys()].filter((hostId) => !this.slowHosts.isBenched(hostId) && !silent(hostId)).length;
    // Heard within two heartbeats: a host cut off or crashed since is not counted on.
    const fresh = (hostId: string): boolean => now - (this.hostHeardAt.get(hostId) ?? Number.NEGATIVE_INFINITY) <= 2 * TIMING.heartbeatEvery;
    const demotion = this.slowHosts.observe(loads, now, { canMove: true, plannedNodes: planned, isHealthy: fresh });
    if (demotion === null) return;
    const replicaId = members.find((member) => hostOf(member)?.hostId === demotion.node);
    this.world.counts.demotions++;
    this.world.trace.note(`master: host ${demotion.node} is slow (${demotion.timesMedian.toFixed(1)}x its peers' time per write): benched until ${demotion.until}`);
    if (replicaId !== undefined && removalRefusal(this.configuration, replicaId) === null) this.master.requestRemoval(replicaId);
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
