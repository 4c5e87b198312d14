/**
 * A durable createChain()'s data directory (`dataDir`):
 *
 *   <dataDir>/dabba-data.state     what it holds: its format, the chain count, each chain's
 *                                  members (nodes, head first) and the generation, as JSON in a
 *                                  SlottedStateFile (saved again in place: a full disk cannot stop a
 *                                  reconfiguration); directories of older versions hold it as
 *                                  dabba-data.json, which the first open moves over
 *   <dataDir>/lock                 the process using it (one at a time)
 *   <dataDir>/chain-<c>/node-<n>/  the log of chain c's replica on node n (workers/replica-log.ts)
 *
 * The members are saved before a new configuration is carried out, so after a crash the saved
 * members are those of the last configuration any replica acted in; their logs are prefixes of one
 * another, head first, and the chain restarts in that order. A replica directory of a node that is
 * not a member (it failed, was removed, or was still joining) is removed at start.
 *
 * Each start is a new generation: the clients of this process get ids no earlier process used, so
 * the exactly-once marks recovered from the logs never mistake a new client's writes for old ones.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DabbaError, ErrorCode } from '../native-free-core/errors.js';
import { syncDirectory } from '../workers/durable-files.js';
import { NODES_MAX } from './options.js';
import { SlottedStateFile } from './slotted-state-file.js';

const STATE_FILE = 'dabba-data.state';
/** Where versions before the slotted file kept the same JSON. */
const LEGACY_STATE_FILE = 'dabba-data.json';
const LOCK_FILE = 'lock';
const FORMAT = 'dabba-data/1';
/** Client ids are 32-bit: the generations a directory can go through with `chains` chains. */
const CLIENT_ID_MAX = 0xffffffff;

interface SavedState {
  format: typeof FORMAT;
  chains: number;
  generation: number;
  /** Each chain's members, by node, head first. */
  members: number[][];
}

export class DataDir {
  /** The members each chain had when the directory was last used, or null for a new directory. */
  readonly recovered: number[][] | null;
  readonly generation: number;
  private released = false;

  private constructor(
    readonly path: string,
    private readonly chains: number,
    saved: SavedState | null,
    /** The state file, or null until the first save makes it (a new directory, or one of an older version). */
    private file: SlottedStateFile | null,
  ) {
    this.recovered = saved?.members ?? null;
    this.generation = (saved?.generation ?? 0) + 1;
    if (this.generation * chains + chains > CLIENT_ID_MAX) throw new DabbaError(ErrorCode.outOfRange, `${path} has been opened too many times for its client ids`);
  }

  /**
   * Opens `path` (made if missing) for a runtime of `chains` chains: takes its lock, reads what it
   * holds, and refuses a directory that is not a dabba data directory or holds another chain count
   * (keys are routed by it).
   */
  static open(path: string, chains: number): DataDir {
    mkdirSync(path, { recursive: true });
    takeLock(path);
    try {
      const { saved, file } = readState(path);
      if (saved === null && readdirSync(path).some((name) => name !== LOCK_FILE)) {
        throw new DabbaError(ErrorCode.invalidArgument, `dataDir ${path} is not empty and holds no ${STATE_FILE}: not a dabba data directory`);
      }
      if (saved !== null && saved.chains !== chains) {
        throw new DabbaError(ErrorCode.invalidArgument, `dataDir ${path} holds ${saved.chains} chain(s), asked for ${chains}: keys are routed by the chain count`);
      }
      return new DataDir(path, chains, saved, file);
    } catch (error) {
      rmSync(join(path, LOCK_FILE), { force: true });
      throw error;
    }
  }

  /** The client id of `chain`'s client in this process: one no earlier generation used. */
  clientIdBase(): number {
    return this.generation * this.chains;
  }

  replicaDirectory(chain: number, node: number): string {
    return join(this.path, `chain-${chain}`, `node-${node}`);
  }

  /**
   * Saves each chain's members (nodes, head first), durably, before they act on it; at the first
   * save of a start, removes the replica directories of nodes that are no members.
   */
  saveMembers(members: number[][]): void {
    const state: SavedState = { format: FORMAT, chains: this.chains, generation: this.generation, members };
    const text = `${JSON.stringify(state)}\n`;
    if (this.file !== null) return this.file.save(text);
    this.file = SlottedStateFile.create(join(this.path, STATE_FILE), stateTextBytesMax(this.chains), text);
    const legacy = join(this.path, LEGACY_STATE_FILE);
    if (existsSync(legacy)) {
      rmSync(legacy);
      syncDirectory(this.path);
    }
  }

  /** Removes every replica directory that is not of a member in `members`. */
  removeStrays(members: number[][]): void {
    for (let chain = 0; chain < this.chains; chain++) {
      const directory = join(this.path, `chain-${chain}`);
      if (!existsSync(directory)) continue;
      const keep = new Set(members[chain]!.map((node) => `node-${node}`));
      for (const name of readdirSync(directory)) if (!keep.has(name)) rmSync(join(directory, name), { recursive: true, force: true });
    }
  }

  /** Lets the directory go (the next process may take it). */
  release(): void {
    if (this.released) return;
    this.released = true;
    releaseLock(this.path);
  }
}

/**
 * The longest state text of `chains` chains: each member a node id of up to 10 digits and a comma,
 * NODES_MAX members a chain, and room for the rest.
 */
function stateTextBytesMax(chains: number): number {
  return 512 + chains * (NODES_MAX * 11 + 3);
}

function readState(path: string): { saved: SavedState | null; file: SlottedStateFile | null } {
  const slotted = join(path, STATE_FILE);
  if (existsSync(slotted)) {
    const { file, text } = SlottedStateFile.open(slotted);
    return { saved: parseState(slotted, text), file };
  }
  const legacy = join(path, LEGACY_STATE_FILE);
  if (existsSync(legacy)) return { saved: parseState(legacy, readFileSync(legacy, 'utf8')), file: null };
  return { saved: null, file: null };
}

function parseState(file: string, text: string): SavedState {
  let state: unknown;
  try {
    state = JSON.parse(text);
  } catch (error) {
    throw new DabbaError(ErrorCode.corrupt, `${file} is not valid JSON: ${(error as Error).message}`);
  }
  if (!isSavedState(state)) throw new DabbaError(ErrorCode.corrupt, `${file} is not a ${FORMAT} state file`);
  return state;
}

function isSavedState(value: unknown): value is SavedState {
  const state = value as Partial<SavedState> | null;
  const count = (item: unknown): boolean => Number.isSafeInteger(item) && (item as number) >= 1;
  return (
    typeof state === 'object' &&
    state !== null &&
    state.format === FORMAT &&
    count(state.chains) &&
    (state.generation === 0 || count(state.generation)) &&
    Array.isArray(state.members) &&
    state.members.length === state.chains &&
    state.members.every((members) => Array.isArray(members) && members.length >= 1 && members.every(count) && new Set(members).size === members.length)
  );
}

/** One process at a time: the lock file names its pid; a lock whose process is gone is taken over. */
export function takeLock(path: string): void {
  const file = join(path, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = Number(readFileSync(file, 'utf8').trim());
    if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
      throw new DabbaError(ErrorCode.invalidArgument, `dataDir ${path} is in use by process ${holder}`);
    }
    if (holder === process.pid) throw new DabbaError(ErrorCode.invalidArgument, `dataDir ${path} is in use by another chain in this process`);
    rmSync(file, { force: true });
  }
  throw new DabbaError(ErrorCode.invalidArgument, `dataDir ${path}: could not take its lock`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Lets a directory taken with takeLock() go. */
export function releaseLock(path: string): void {
  rmSync(join(path, LOCK_FILE), { force: true });
}
