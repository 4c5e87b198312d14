/**
 * The deterministic simulator (TigerBeetle's VOPR shape): a whole chain in one thread, from one
 * PRNG seed, running what ships: the real ChainNodes through their one door (./replica-host.ts),
 * the InProcessMaster and its one cluster policy (./master-driver.ts), and clients that are the
 * real ClientSession, WritePipeline and ReadPipeline on a simulated clock (./client-driver.ts).
 *
 * A run is a safety phase, with faults (./faults.ts, ./network.ts: delays, duplication, loss that
 * breaks links, partitions that heal, crashes, restarts as new replicas or, with a disk, from the
 * replica's log: ./disk.ts), then a quiet phase with
 * none, in which every client operation must complete and every host be a member again
 * (liveness). The invariants are checked after every event, and at the end the members' agreement
 * and the linearizability of the whole history (./checkers.ts). A failure throws with
 * `reproduce with --seed=N` and the last events of the trace (./trace.ts).
 *
 * Many chains: createChain() runs them in one process (native-free-core/master/table-master.ts)
 * and hosts across processes (native-free-core/master/table-round.ts, whose rounds have a seeded
 * chaos test of their own in test/table-round.test.ts). This simulator still runs one chain: a
 * `chains` option would go here, feeding the table round from leases in the simulated master,
 * every chain's ChainNode in each SimulatedHost, and a RoutedSession over one ClientSession per
 * chain in the client driver.
 */
import { SimulatedClient } from './client-driver.js';
import { Checker } from './checkers.js';
import { FaultInjector, type FaultCounts, type ScriptedFault } from './faults.js';
import { SimulatedMaster, type MasterCounts } from './master-driver.js';
import { SimulatedHost } from './replica-host.js';
import { World, type HostCounts } from './world.js';

export interface SimulationOptions {
  seed: number;
  /** Hosts, each running one replica at a time (the chain's length when whole). */
  replicas?: number;
  clients?: number;
  /** Sequential processes per client, sharing its session (so its pipelines carry several at once). */
  lanes?: number;
  keys?: number;
  /** Ticks (ms) of the safety phase (faults on). */
  safetyTicks?: number;
  /** Most ticks the quiet phase may take before the run is declared stuck. */
  quietTicksMax?: number;
  delayMax?: number;
  lossRate?: number;
  duplicateRate?: number;
  crashRate?: number;
  partitionRate?: number;
  /** Mean slow-downs per tick: a host 10x slower for a while (fail-slow demotion). */
  slowRate?: number;
  partitionTicks?: readonly [number, number];
  /** Ticks after which a crashed host restarts as a new replica; null: crashed hosts stay down. */
  restartAfter?: readonly [number, number] | null;
  /** Hosts keep their replica's log on a disk (`fsync` mode) and restart from it (./disk.ts). */
  disk?: boolean;
  /** Which replicas answer reads: every member (CRAQ, the default) or the tail alone. */
  reads?: 'any' | 'tail';
  /** Heads run an admission hook (refusing puts of values that end in 3: world.ts). */
  admission?: boolean;
  script?: readonly ScriptedFault[];
  /** Trace every frame (for a replay). */
  verbose?: boolean;
  traceKept?: number;
}

export interface SimulationResult extends FaultCounts, MasterCounts, HostCounts {
  seed: number;
  ticks: number;
  events: number;
  /** Client operations (each write of a putMany counts once). */
  operations: number;
  messages: number;
  losses: number;
  duplicates: number;
  cutDrops: number;
  stallResends: number;
  viewsAdopted: number;
  writesApplied: number;
  clientAcks: number;
  /** Times the run loop let promise callbacks run (microtask turns awaited). */
  microtaskTurns: number;
  finalMembers: readonly number[];
}

type Settings = Required<Omit<SimulationOptions, 'script' | 'verbose' | 'traceKept'>>;

const DEFAULTS: Omit<Settings, 'seed'> = {
  replicas: 3,
  clients: 3,
  lanes: 2,
  keys: 4,
  safetyTicks: 600,
  quietTicksMax: 4000,
  delayMax: 5,
  lossRate: 0.004,
  duplicateRate: 0.03,
  crashRate: 1 / 300,
  partitionRate: 1 / 300,
  slowRate: 1 / 600,
  partitionTicks: [10, 120],
  restartAfter: [10, 100],
  disk: false,
  reads: 'any',
  admission: false,
};

export async function simulate(options: SimulationOptions): Promise<SimulationResult> {
  const settings: Settings & SimulationOptions = { ...DEFAULTS, ...options };
  const world = new World(settings.seed, settings.disk, settings.reads, settings.admission, { delayMax: settings.delayMax, lossRate: settings.lossRate, duplicateRate: settings.duplicateRate }, {
    kept: settings.traceKept ?? Number(process.env.DABBA_SIM_TRACE ?? 40),
    verbose: settings.verbose ?? false,
  });
  const faults = new FaultInjector(world, { ...settings, script: settings.script ?? [] });
  build(world, settings);
  faults.start();

  const microtaskTurns = { count: 0 };
  await run(world, settings.safetyTicks, () => false, microtaskTurns);
  faults.stop();
  for (const client of world.clients) client.issuing = false;
  world.trace.note('quiet phase: no more faults or new operations');
  const restarting = settings.restartAfter !== null;
  if (!(await run(world, world.now + settings.quietTicksMax, () => isQuiet(world, restarting), microtaskTurns))) {
    world.trace.fail(`liveness: not settled ${settings.quietTicksMax} ticks after the faults stopped: ${describeState(world)}`);
  }
  const operations = world.history.length;
  world.checker.final();
  return resultOf(world, faults, operations, microtaskTurns.count);
}

/** The hosts (each a member of the first configuration), the master, the clients. */
function build(world: World, settings: Settings): void {
  world.checker = new Checker(world);
  for (let index = 1; index <= settings.replicas; index++) world.hosts.set(`h${index}`, new SimulatedHost(world, `h${index}`));
  const hosts = [...world.hosts.values()];
  const configuration = { epoch: 1, members: hosts.map((host) => host.replicaId), joining: null };
  world.master = new SimulatedMaster(world, configuration);
  for (const host of hosts) host.startAsMember(configuration);
  const view = { epoch: 1, members: hosts.map((host) => host.hostId) };
  for (let id = 1; id <= settings.clients; id++) world.clients.push(new SimulatedClient(world, id, view, settings.lanes, settings.keys));
  for (const client of world.clients) client.start();
}

/**
 * Runs events until `until` (or until `done` holds, checked whenever time moves). After each
 * event the invariants are checked; first, the promise callbacks of whatever the event settled
 * run (they run in microtasks), so the history stamps them with the time they settled at.
 */
async function run(world: World, until: number, done: () => boolean, microtaskTurns: { count: number }): Promise<boolean> {
  const scheduler = world.scheduler;
  let lastTime = scheduler.now;
  while (scheduler.runNext(until)) {
    for (let turns = 0; world.clients.some((client) => client.awaitsCallbacks()); turns++) {
      world.trace.check(turns < 64, () => 'promise callbacks still pending after 64 microtask turns');
      await null;
      microtaskTurns.count++;
    }
    if (world.failure !== null) world.trace.fail(world.failure);
    world.checker.afterEvent();
    if (scheduler.now !== lastTime) {
      lastTime = scheduler.now;
      if (done()) return true;
    }
  }
  return done();
}

/** Every operation answered, every host (restarted if it crashed) a member, and every member in the master's epoch. */
function isQuiet(world: World, restarting: boolean): boolean {
  if (world.clients.some((client) => client.pending > 0)) return false;
  // Every member's history (a joiner's starts at its snapshot; another's reaches further back).
  const nodes = [...world.hosts.values()].flatMap((host) => (host.alive && host.node !== null && host.role() !== 'joining' ? [host.node] : []));
  if (!world.clients.every((client) => client.watchServable(nodes) && nodes.every((node) => client.watchMatches(node)))) return false;
  const { members, joining, epoch } = world.master.configuration;
  if (joining !== null || world.master.master.newcomer !== null) return false;
  for (const host of world.hosts.values()) {
    if (!host.alive) {
      if (restarting) return false;
      continue;
    }
    if (!members.includes(host.replicaId) || host.node === null || host.node.epoch !== epoch) return false;
  }
  return true;
}

function describeState(world: World): string {
  const { members, joining, epoch } = world.master.configuration;
  const pending = world.clients.map((client) => `client ${client.id}: ${client.pending} pending`).join(', ');
  const hosts = [...world.hosts.values()].map((host) => `${host.hostId}=${host.alive ? `${host.replicaId}/${host.role() ?? '-'}@${host.node?.epoch ?? '-'}` : 'down'}`).join(' ');
  const histories = [...world.hosts.values()].flatMap((host) => {
    if (!host.alive || host.node === null) return [];
    const held = host.node.heldChanges();
    return [`${host.hostId} holds ${held.startSeq}..${host.node.committedSeq} (${held.changes.length} changes, ${host.node.watchPollsHeld} polls held)`];
  });
  const watches = world.clients.filter((client) => client.watch !== null).map((client) => {
    const mismatches = [...world.hosts.values()].flatMap((host) => (host.alive && host.node !== null && host.role() !== 'joining' ? [client.watchMismatch(host.node)] : [])).filter((text) => text !== null);
    return `client ${client.id} watched through ${client.lastWatchedVersion} (${client.session.watches.describe()})${mismatches.length > 0 ? `: ${mismatches.join(', ')}` : ''}`;
  });
  return `epoch ${epoch} members ${members.join(' ')}${joining === null ? '' : ` joining ${joining}`}; ${pending}; hosts ${hosts}; ${[...histories, ...watches].join('; ')}`;
}

function resultOf(world: World, faults: FaultInjector, operations: number, microtaskTurns: number): SimulationResult {
  const network = world.network.counts;
  const checker = world.checker.counts;
  return {
    seed: world.seed,
    ticks: world.now,
    events: world.scheduler.eventsRun,
    operations,
    ...faults.counts,
    ...world.master.counts,
    messages: network.messages,
    losses: network.losses,
    duplicates: network.duplicates,
    cutDrops: network.cutDrops,
    ...world.counts,
    stallResends: world.clients.reduce((sum, client) => sum + client.session.stallResends, 0),
    viewsAdopted: world.clients.reduce((sum, client) => sum + client.viewsAdopted, 0),
    writesApplied: checker.writesApplied,
    clientAcks: checker.clientAcks,
    microtaskTurns,
    finalMembers: world.master.configuration.members,
  };
}

/**
 * The options a numbered seed runs with (npm test and the CLI alike): chains of 2 to 5, 1 to 3
 * clients, and in one seed of five crashed hosts stay down, so that no join's reconfigurations
 * come to resend what a client is stuck on (only its own resend after a stall can then). In every
 * other seed hosts have disks, and a crashed one back before its lease ends is the same replica.
 */
export function seedOptions(seed: number): SimulationOptions {
  return { seed, replicas: 2 + (seed % 4), clients: 1 + (seed % 3), disk: seed % 2 === 0, ...(seed % 5 === 0 ? { restartAfter: null } : {}), ...(seed % 7 === 3 ? { reads: 'tail' } : {}), ...(seed % 3 === 1 ? { admission: true } : {}) };
}
