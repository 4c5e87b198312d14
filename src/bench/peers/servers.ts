/**
 * Real servers for the peer benchmarks: find (or, as root, install) a Debian binary, pick free
 * loopback ports, start processes with their own temp data dirs, wait until they are ready, and stop
 * exactly the processes started here. Everything listens on 127.0.0.1.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** A server binary is not installed and this process may not install it. */
export class MissingBinaryError extends Error {
  readonly installCommand: string;

  constructor(
    readonly binary: string,
    readonly debianPackage: string,
  ) {
    const installCommand = `sudo apt-get install -y ${debianPackage}`;
    super(`${binary} is not installed (Debian package ${debianPackage}); install it with: ${installCommand}`);
    this.name = 'MissingBinaryError';
    this.installCommand = installCommand;
  }
}

function findOnPath(binary: string): string | undefined {
  for (const directory of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter)) {
    const candidate = join(directory, binary);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}

/**
 * The path of `binary`. When it is missing and this process is root, installs `debianPackage` with
 * apt-get (refreshing the package lists once if the first attempt fails); otherwise throws a
 * MissingBinaryError naming the command to run.
 */
export async function ensureBinary(binary: string, debianPackage: string): Promise<string> {
  const found = findOnPath(binary);
  if (found !== undefined) return found;
  if (process.getuid?.() !== 0) throw new MissingBinaryError(binary, debianPackage);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (): Promise<unknown> => execFileAsync('apt-get', ['install', '-y', '-qq', debianPackage], { env });
  try {
    await install();
  } catch {
    // A fresh machine may have stale or no package lists.
    await execFileAsync('apt-get', ['update', '-qq'], { env });
    await install();
  }
  const installed = findOnPath(binary);
  if (installed === undefined) throw new Error(`apt-get installed ${debianPackage} but ${binary} is still not on PATH`);
  return installed;
}

/** `count` distinct free TCP ports on 127.0.0.1 (all held open together, so they differ, then released). */
export async function freePorts(count: number): Promise<number[]> {
  const listeners = Array.from({ length: count }, () => createServer());
  try {
    return await Promise.all(
      listeners.map(async (listener) => {
        listener.listen(0, '127.0.0.1');
        await once(listener, 'listening');
        return (listener.address() as AddressInfo).port;
      }),
    );
  } finally {
    await Promise.all(listeners.map((listener) => new Promise((resolve) => listener.close(resolve))));
  }
}

/** Keep this much of a server's output for error messages (and drain the pipe so it never blocks). */
const OUTPUT_TAIL_BYTES = 4096;

export interface StartedServer {
  readonly name: string;
  readonly pid: number;
  /** The last few KiB of the server's stdout and stderr. */
  output(): string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<void>;
  hasExited(): boolean;
}

interface OwnedProcess {
  server: StartedServer;
  child: ChildProcess;
}

/**
 * The processes and temp dirs of one benchmark measurement. stop() ends only what start() spawned
 * (by PID, SIGTERM then SIGKILL) and removes the temp dirs; if this Node process exits first, the
 * children are killed on the way out so no server outlives the benchmark.
 */
export class LocalServers {
  private readonly owned: OwnedProcess[] = [];
  private readonly directories: string[] = [];
  private readonly killOnExit = (): void => {
    for (const { child, server } of this.owned) if (!server.hasExited()) child.kill('SIGKILL');
  };

  constructor(private readonly label: string) {
    process.on('exit', this.killOnExit);
  }

  /** A fresh temp directory, removed by stop(). */
  dataDir(name: string): string {
    const directory = mkdtempSync(join(tmpdir(), `dabba-${this.label}-${name}-`));
    this.directories.push(directory);
    return directory;
  }

  start(name: string, binary: string, args: string[]): StartedServer {
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const keep = (chunk: Buffer): void => {
      tail = (tail + chunk.toString('utf8')).slice(-OUTPUT_TAIL_BYTES);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    let exited = false;
    const exitedPromise = new Promise<void>((resolve) => {
      child.once('exit', () => {
        exited = true;
        resolve();
      });
      // A spawn failure (e.g. ENOENT) emits 'error' and no 'exit'.
      child.once('error', (error) => {
        exited = true;
        keep(Buffer.from(`\n${error.message}`));
        resolve();
      });
    });
    const server: StartedServer = {
      name,
      pid: child.pid ?? -1,
      output: () => tail,
      exited: exitedPromise,
      hasExited: () => exited,
    };
    this.owned.push({ server, child });
    return server;
  }

  /** SIGTERM each started process, SIGKILL whatever is left after `graceMs`, then remove the temp dirs. */
  async stop(graceMs = 2000): Promise<void> {
    await Promise.all(
      this.owned.map(async ({ child, server }) => {
        if (server.hasExited()) return;
        child.kill('SIGTERM');
        const gone = await Promise.race([server.exited.then(() => true), delay(graceMs, false)]);
        if (!gone) {
          child.kill('SIGKILL');
          await server.exited;
        }
      }),
    );
    process.off('exit', this.killOnExit);
    for (const directory of this.directories) rmSync(directory, { recursive: true, force: true });
    this.owned.length = 0;
    this.directories.length = 0;
  }
}

/** Readiness checks poll no more often than this. */
const READY_POLL_MS = 50;

/**
 * Polls `isReady` (every 50 ms at most) until it returns true. Fails if any of `servers` exits
 * first, or after `deadlineMs`, with the servers' last output in the message.
 */
export async function waitUntilReady(what: string, isReady: () => Promise<boolean>, servers: StartedServer[], deadlineMs = 15_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  const outputs = (): string => servers.map((server) => `--- ${server.name} (pid ${server.pid}):\n${server.output().trim()}`).join('\n');
  for (;;) {
    const dead = servers.find((server) => server.hasExited());
    if (dead !== undefined) throw new Error(`${dead.name} exited before ${what}\n${outputs()}`);
    const attemptStarted = Date.now();
    if (await isReady().catch(() => false)) return;
    if (Date.now() >= deadline) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}\n${outputs()}`);
    await delay(Math.max(0, READY_POLL_MS - (Date.now() - attemptStarted)));
  }
}
