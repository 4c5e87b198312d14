/**
 * A durable host's data directory (`dabba serve --data-dir`):
 *
 *   <dir>/dabba-host.json        which host and cluster it belongs to, the incarnation its replicas
 *                                were placed on, the machine's boot it was written in, the mode
 *   <dir>/lock                   the process using it (one at a time)
 *   <dir>/chain-<c>/replica-<id>/ the log of the host's replica <id> of chain c (workers/replica-log.ts)
 *
 * A host that restarts with its directory registers in the incarnation it had, so the replicas the
 * master placed on it are its own again: each starts from its log, in the chain's current epoch,
 * and its neighbours send it only what it missed (the in-flight lists; see ChainNode.recovered).
 * When its logs cannot be trusted to hold what it acknowledged it starts over instead, as a new
 * incarnation with empty logs: in `async` mode after the machine restarted (the last interval may
 * be lost), or when the directory was written in another mode.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { releaseLock, takeLock } from '../data-dir.js';
import { writeFileDurably } from '../../workers/durable-files.js';
import { cutLogAt } from '../../workers/replica-log.js';
import type { ReplicaLogPlacement } from '../../workers/replica-task.js';

const STATE_FILE = 'dabba-host.json';
const FORMAT = 'dabba-host-data/1';
const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';

interface SavedHost {
  format: typeof FORMAT;
  hostId: string;
  /** The cluster: its etcd key prefix. */
  cluster: string;
  incarnation: string;
  bootId: string;
  durability: 'async' | 'fsync';
}

export class HostDataDir {
  private released = false;

  private constructor(
    readonly path: string,
    private readonly saved: SavedHost,
    /** Whether the replica logs in it are this host's to restart from. */
    readonly recovering: boolean,
  ) {}

  private readonly discarded = new Set<string>();
  /** Logs no joiner may adopt (`chain:replicaId`): their chain did not continue them. */
  private readonly notAdoptable = new Set<string>();

  /**
   * Opens `path` (made if missing) for host `hostId` of the cluster at etcd prefix `cluster`:
   * takes its lock, and refuses a directory of another host or cluster. `newIncarnation` names a
   * new run, used unless the directory's replicas can be restarted from their logs.
   */
  static open(path: string, hostId: string, cluster: string, durability: 'async' | 'fsync', newIncarnation: string): HostDataDir {
    mkdirSync(path, { recursive: true });
    takeLock(path);
    try {
      const file = join(path, STATE_FILE);
      const saved = existsSync(file) ? readSaved(file) : null;
      if (saved === null && readdirSync(path).some((name) => name !== 'lock')) {
        throw new DabbaError(ErrorCode.invalidArgument, `--data-dir ${path} is not empty and holds no ${STATE_FILE}: not a dabba host's data directory`);
      }
      if (saved !== null && saved.hostId !== hostId) throw new DabbaError(ErrorCode.invalidArgument, `--data-dir ${path} belongs to host ${saved.hostId}, not ${hostId}`);
      if (saved !== null && saved.cluster !== cluster) throw new DabbaError(ErrorCode.invalidArgument, `--data-dir ${path} belongs to the cluster at etcd prefix ${saved.cluster}, not ${cluster}`);
      const bootId = currentBootId();
      const recovering = saved !== null && saved.durability === durability && (durability === 'fsync' || saved.bootId === bootId);
      const state: SavedHost = { format: FORMAT, hostId, cluster, incarnation: recovering ? saved.incarnation : newIncarnation, bootId, durability };
      const directory = new HostDataDir(path, state, recovering);
      if (!recovering) directory.removeLogs();
      directory.save();
      return directory;
    } catch (error) {
      releaseLock(path);
      throw error;
    }
  }

  /** The incarnation to register in: the saved one when recovering, else the new one. */
  get incarnation(): string {
    return this.saved.incarnation;
  }

  /** Where replica `replicaId` of `chain` keeps its log. */
  logPlacement(chain: number, replicaId: number, fresh: boolean): ReplicaLogPlacement {
    return { directory: join(this.path, `chain-${chain}`, `replica-${replicaId}`), fresh };
  }

  /** Whether a log of replica `replicaId` of `chain` is here to restart it from. */
  hasLog(chain: number, replicaId: number): boolean {
    return this.recovering && existsSync(this.logPlacement(chain, replicaId, false).directory);
  }

  /**
   * Checks every replica log here before any replica starts (`damageOf` loads one and says where it
   * is damaged, or null). A damaged log stops the host with one line naming the file and the offset,
   * unless `repair`: then that replica's log is cut at the damage (its later segments removed; the
   * whole log if the damage is in its checkpoint or in a segment the checkpoint reaches into), its
   * replica, which lost writes it had, is given up, and the next joiner the master places here
   * starts from what is left (a catch-up join, or a copy of the chain if the tail cannot continue
   * it); the others restart from theirs. Returns a line per log repaired.
   */
  checkLogs(damageOf: (directory: string) => { name: string; offset: number; reason: string; file: string } | null, repair: boolean): string[] {
    if (!this.recovering) return [];
    const discarded: string[] = [];
    for (const chain of readdirSync(this.path).filter((name) => name.startsWith('chain-'))) {
      for (const replica of readdirSync(join(this.path, chain)).filter((name) => name.startsWith('replica-'))) {
        const directory = join(this.path, chain, replica);
        const damage = damageOf(directory);
        if (damage === null) continue;
        const where = `${damage.file} ${damage.name} is damaged at offset ${damage.offset}: ${damage.reason}`;
        if (!repair) throw new DabbaError(ErrorCode.corrupt, `${where} (start with --repair to cut that replica's log there: it rejoins from what is left)`);
        this.discarded.add(directory);
        if (damage.file === 'log segment' && cutLogAt(directory, damage.name, damage.offset)) {
          discarded.push(`${where}: cut there, later segments removed; its replica is given up and the next joiner here starts from what is left`);
        } else {
          rmSync(directory, { recursive: true, force: true });
          discarded.push(`${where}: discarded ${directory}; its replica rejoins with a copy of its chain`);
        }
      }
    }
    return discarded;
  }

  /**
   * The log a joiner `replicaId` of `chain` can start from: that of the newest replica this host
   * ran in the chain and no longer runs (its ids rise), not one of `inChain`. The older ones are
   * removed: a joiner needs one. Undefined if there is none.
   */
  adoptableLog(chain: number, replicaId: number, inChain: readonly number[]): string | undefined {
    const directory = join(this.path, `chain-${chain}`);
    if (!existsSync(directory)) return undefined;
    const ids = readdirSync(directory)
      .filter((name) => /^replica-\d+$/.test(name))
      .map((name) => Number(name.slice('replica-'.length)))
      .filter((id) => id !== replicaId && !inChain.includes(id) && !this.notAdoptable.has(`${chain}:${id}`))
      .sort((a, b) => b - a);
    for (const id of ids.slice(1)) rmSync(join(directory, `replica-${id}`), { recursive: true, force: true });
    return ids.length === 0 ? undefined : join(directory, `replica-${ids[0]}`);
  }

  /**
   * No joiner may start from replica `replicaId`'s log; `remove`: delete it now (else its worker
   * deletes it once it has stopped writing to it).
   */
  discardLog(chain: number, replicaId: number, remove: boolean): void {
    this.notAdoptable.add(`${chain}:${replicaId}`);
    if (remove) rmSync(this.logPlacement(chain, replicaId, false).directory, { recursive: true, force: true });
  }

  /** Whether checkLogs() cut or discarded the log of replica `replicaId` of `chain` (that replica holds nothing, whatever its epoch). */
  discardedLog(chain: number, replicaId: number): boolean {
    return this.discarded.has(this.logPlacement(chain, replicaId, false).directory);
  }

  /** A new incarnation (the node failed, or the lease was lost): the old replicas' logs are of no use. */
  startOver(incarnation: string): void {
    this.removeLogs();
    this.saved.incarnation = incarnation;
    this.save();
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    releaseLock(this.path);
  }

  private removeLogs(): void {
    for (const name of readdirSync(this.path)) if (name.startsWith('chain-')) rmSync(join(this.path, name), { recursive: true, force: true });
  }

  private save(): void {
    writeFileDurably(join(this.path, STATE_FILE), Buffer.from(`${JSON.stringify(this.saved)}\n`));
  }
}

function readSaved(file: string): SavedHost {
  let state: Partial<SavedHost> | null;
  try {
    state = JSON.parse(readFileSync(file, 'utf8')) as Partial<SavedHost> | null;
  } catch (error) {
    throw new DabbaError(ErrorCode.corrupt, `${file} is not valid JSON: ${(error as Error).message}`);
  }
  const text = (value: unknown): boolean => typeof value === 'string' && value.length > 0;
  if (
    state === null ||
    typeof state !== 'object' ||
    state.format !== FORMAT ||
    !text(state.hostId) ||
    !text(state.cluster) ||
    !text(state.incarnation) ||
    typeof state.bootId !== 'string' ||
    (state.durability !== 'async' && state.durability !== 'fsync')
  ) {
    throw new DabbaError(ErrorCode.corrupt, `${file} is not a ${FORMAT} file`);
  }
  return state as SavedHost;
}

/** This boot of the machine (Linux), or '' where the kernel does not say. */
function currentBootId(): string {
  try {
    return readFileSync(BOOT_ID_FILE, 'utf8').trim();
  } catch {
    return '';
  }
}
