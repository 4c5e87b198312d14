/**
 * A network lab for multi-host tests: each host is a Linux network namespace joined to a bridge in
 * the root namespace by a veth pair, so hosts have their own addresses, their own loopback and their
 * own port space, and a host can be cut off the network and healed while its processes keep running.
 *
 *   root namespace: bridge dbr-<tag>, 10.77.N.1/24 (the gateway: servers every host must reach, such
 *                   as etcd, listen there)
 *   host i:         namespace <name>-<pid>-<lab>-<i>, eth0 = 10.77.N.(10+i)/24, lo up,
 *                   default route via 10.77.N.1; its veth peer dv-<tag>-<i> is a bridge port
 *
 * N is chosen per lab so that no address or route of this machine is already in 10.77.N.0/24.
 *
 * Namespaces need root (and, in a container, the capability to make them: a root without it gets
 * the fallback too, with a warning on stderr). When this process is not root the lab falls back to loopback, and says so
 * in `isolated: false`: every host and the gateway are 127.0.0.1, spawn() is a plain spawn, hosts
 * share one port space (so each server must get its own port), and cut()/heal() reject with
 * LabNotIsolatedError (code DABBA_LAB_ERR_NOT_ISOLATED): tests that need partitions must check
 * `isolated` and report that they did not run those steps, never pretend they passed.
 *
 * Cleanup: close() kills the processes spawn() started that are still running (SIGKILL, by PID),
 * then deletes the veths, namespaces and bridge. If this process exits without close(), an 'exit'
 * handler does the same synchronously (best effort). Nothing runs on SIGKILL of this process, so a
 * killed test run can leave a lab behind: `ip netns list` and `ip link show type bridge` show it
 * (names start with the lab name and dbr-), `ip netns del` / `ip link del` remove it.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ensureBinary } from '../../src/bench/peers/servers.js';

const execFileAsync = promisify(execFile);

export interface LabHost {
  readonly index: number; // 0-based
  readonly address: string; // e.g. '10.77.13.10' (loopback fallback: '127.0.0.1')
  readonly namespace: string | null; // null in loopback fallback
}

export interface NetnsLab {
  readonly isolated: boolean; // true = real namespaces; false = loopback fallback (not root)
  readonly gatewayAddress: string; // the root namespace's address on the lab bridge (where etcd listens), '127.0.0.1' in fallback
  readonly hosts: readonly LabHost[];
  /**
   * Spawns `command args` inside host i's namespace (plain spawn in fallback). The returned
   * ChildProcess's pid is the command's own pid: `ip netns exec` switches namespace and then execs
   * the command in place (createNetnsLab checks this), so kill -9 of child.pid kills the real
   * process. A command that cannot be executed inside the namespace shows up as exit code 255 with
   * `exec of "command" failed` on stderr, not as an 'error' event. options.shell is refused: the
   * pid would be the shell's.
   */
  spawn(hostIndex: number, command: string, args: string[], options?: SpawnOptions): ChildProcess;
  /**
   * Cuts host i off the network (its link down, root side and host side) / heals it. In fallback:
   * rejects with LabNotIsolatedError, since partitions need root. heal() resolves once both ends
   * of the link are operationally up again and the default route is back.
   */
  cut(hostIndex: number): Promise<void>;
  heal(hostIndex: number): Promise<void>;
  /**
   * A second address of the root namespace on the bridge (.2), for a server that a host must be
   * able to lose while it keeps talking to the gateway (.1): blackhole() it from that host.
   * Loopback fallback: '127.0.0.1', and blackhole() rejects.
   */
  addServerAddress(): Promise<string>;
  /** Host i's packets to these addresses are dropped (blackhole routes in its namespace) / restored. */
  blackhole(hostIndex: number, addresses: string[]): Promise<void>;
  unblackhole(hostIndex: number, addresses: string[]): Promise<void>;
  /**
   * Kills the processes spawn() started that are still running, then deletes namespaces, veths and
   * bridge. Idempotent. Also registered for process 'exit' (best effort, sync via execFileSync).
   */
  close(): Promise<void>;
}

/** An `ip` command failed; the message names the command and carries its stderr. */
export class IpCommandError extends Error {
  readonly code = 'DABBA_LAB_ERR_IP_FAILED';

  constructor(
    readonly command: string,
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super(`\`${command}\` failed: ${stderr.trim() || '(no stderr)'}`, options);
    this.name = 'IpCommandError';
  }
}

/** cut()/heal() on a loopback-fallback lab: partitions need network namespaces, hence root. */
export class LabNotIsolatedError extends Error {
  readonly code = 'DABBA_LAB_ERR_NOT_ISOLATED';

  constructor(operation: string) {
    super(`${operation} needs network namespaces, which need root; this lab is the loopback fallback (isolated: false)`);
    this.name = 'LabNotIsolatedError';
  }
}

/** Lab addresses are 10.77.N.0/24; hosts take .10 upwards, so at most 200 hosts (.10 to .209). */
const SUBNET_PREFIX = '10.77';
const FIRST_HOST_OCTET = 10;
const HOST_COUNT_MAX = 200;
/** Linux interface names are at most 15 bytes (IFNAMSIZ - 1). */
const INTERFACE_NAME_BYTES_MAX = 15;
/** Third octets tried before giving up on finding a free /24. */
const SUBNET_ATTEMPTS_MAX = 32;
/** How long a link may take to become operationally up, and how often that is checked. */
const LINK_UP_TIMEOUT_MS = 5000;
const LINK_UP_POLL_MS = 10;
/** close() waits this long for a SIGKILLed child to be reaped. */
const CHILD_EXIT_TIMEOUT_MS = 5000;
/** The interface name of every host's end of its veth pair, inside its own namespace. */
const HOST_INTERFACE = 'eth0';
const NAME_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;

/** Where Debian puts `ip`, looked at first because a root PATH without the sbin directories is common. */
const IP_PATHS = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'];

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Labs created by this process so far; makes the names of two labs of one process differ. */
let labsCreated = 0;

/**
 * A lab of `hostCount` hosts named after `name` (letters, digits, '-' and '_'). As root, real
 * namespaces (installing iproute2 with apt-get if `ip` is missing); otherwise the loopback fallback
 * described at the top of this file. On failure, whatever was created is deleted before the error
 * is thrown.
 */
export async function createNetnsLab(name: string, hostCount: number): Promise<NetnsLab> {
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
    throw new TypeError(`lab name must match ${NAME_PATTERN}, got ${JSON.stringify(name)}`);
  }
  if (!Number.isInteger(hostCount) || hostCount < 1 || hostCount > HOST_COUNT_MAX) {
    throw new RangeError(`hostCount must be an integer from 1 to ${HOST_COUNT_MAX}, got ${hostCount}`);
  }
  labsCreated++;
  if (process.getuid?.() !== 0) return new LoopbackLab(hostCount);
  const ip = IP_PATHS.find(isExecutable) ?? (await ensureBinary('ip', 'iproute2'));
  const lab = new NamespaceLab(ip, name, labsCreated, hostCount);
  try {
    await lab.build();
  } catch (error) {
    await lab.close().catch(() => undefined);
    // Root in a container without CAP_SYS_ADMIN/CAP_NET_ADMIN: namespaces are not allowed here.
    // Say so loudly and fall back to loopback, like a non-root run (tests report what they skip).
    if (error instanceof IpCommandError && /Operation not permitted|Permission denied/i.test(error.stderr)) {
      process.stderr.write(`netns lab: network namespaces are not permitted here (${error.stderr.trim()}); falling back to loopback\n`);
      return new LoopbackLab(hostCount);
    }
    throw error;
  }
  return lab;
}

/** Tracks the children spawn() started, so close() and the exit handler can kill the survivors. */
class SpawnedChildren {
  private readonly running = new Set<ChildProcess>();

  add(child: ChildProcess): ChildProcess {
    if (child.pid === undefined) return child; // Failed to spawn: an 'error' event follows, nothing to kill.
    this.running.add(child);
    const forget = (): void => {
      this.running.delete(child);
    };
    child.once('exit', forget);
    child.once('error', forget);
    return child;
  }

  killSync(): void {
    for (const child of this.running) child.kill('SIGKILL');
  }

  async kill(): Promise<void> {
    await Promise.all(
      [...this.running].map(async (child) => {
        const exited = once(child, 'exit');
        child.kill('SIGKILL');
        const timeout = delay(CHILD_EXIT_TIMEOUT_MS, 'timeout' as const);
        if ((await Promise.race([exited, timeout])) === 'timeout') {
          throw new Error(`pid ${child.pid} did not exit within ${CHILD_EXIT_TIMEOUT_MS} ms of SIGKILL`);
        }
      }),
    );
  }
}

function refuseShell(options: SpawnOptions | undefined): void {
  if (options?.shell !== undefined && options.shell !== false) {
    throw new TypeError('lab.spawn() refuses options.shell: child.pid would be the shell, not the command');
  }
}

/** Not root: every host is this machine's loopback. */
class LoopbackLab implements NetnsLab {
  readonly isolated = false;
  readonly gatewayAddress = '127.0.0.1';
  readonly hosts: readonly LabHost[];
  private readonly children = new SpawnedChildren();
  private readonly killOnExit = (): void => this.children.killSync();

  constructor(hostCount: number) {
    this.hosts = Array.from({ length: hostCount }, (_, index) => ({ index, address: '127.0.0.1', namespace: null }));
    process.on('exit', this.killOnExit);
  }

  spawn(hostIndex: number, command: string, args: string[], options?: SpawnOptions): ChildProcess {
    checkHostIndex(hostIndex, this.hosts.length);
    refuseShell(options);
    return this.children.add(spawn(command, args, options ?? {}));
  }

  async cut(hostIndex: number): Promise<void> {
    checkHostIndex(hostIndex, this.hosts.length);
    throw new LabNotIsolatedError(`cut(${hostIndex})`);
  }

  async heal(hostIndex: number): Promise<void> {
    checkHostIndex(hostIndex, this.hosts.length);
    throw new LabNotIsolatedError(`heal(${hostIndex})`);
  }

  async addServerAddress(): Promise<string> {
    return '127.0.0.1';
  }

  async blackhole(hostIndex: number): Promise<void> {
    checkHostIndex(hostIndex, this.hosts.length);
    throw new LabNotIsolatedError(`blackhole(${hostIndex})`);
  }

  async unblackhole(hostIndex: number): Promise<void> {
    checkHostIndex(hostIndex, this.hosts.length);
    throw new LabNotIsolatedError(`unblackhole(${hostIndex})`);
  }

  async close(): Promise<void> {
    process.off('exit', this.killOnExit);
    await this.children.kill();
  }
}

function checkHostIndex(hostIndex: number, hostCount: number): void {
  if (!Number.isInteger(hostIndex) || hostIndex < 0 || hostIndex >= hostCount) {
    throw new RangeError(`host index must be an integer from 0 to ${hostCount - 1}, got ${hostIndex}`);
  }
}

interface NamespaceHost extends LabHost {
  readonly namespace: string;
  /** The root namespace's end of the host's veth pair, a port of the bridge. */
  readonly rootLink: string;
}

/** As root: a bridge, and per host a namespace and a veth pair. */
class NamespaceLab implements NetnsLab {
  readonly isolated = true;
  private readonly bridge: string;
  private readonly tag: string;
  private subnetOctet = -1;
  private hostList: readonly NamespaceHost[] = [];
  private readonly children = new SpawnedChildren();
  // What exists right now, so close() and the exit handler delete exactly that.
  private bridgeCreated = false;
  private readonly linksCreated = new Set<string>();
  private readonly namespacesCreated = new Set<string>();
  private closing: Promise<void> | undefined;
  private readonly deleteOnExit = (): void => this.deleteSync();

  constructor(
    private readonly ip: string,
    private readonly name: string,
    private readonly labNumber: number,
    private readonly hostCount: number,
  ) {
    this.tag = `${process.pid.toString(36)}-${labNumber.toString(36)}`;
    this.bridge = interfaceName(`dbr-${this.tag}`);
    process.on('exit', this.deleteOnExit);
  }

  /** Empty until build() has chosen the subnet. */
  get hosts(): readonly NamespaceHost[] {
    return this.hostList;
  }

  get gatewayAddress(): string {
    if (this.subnetOctet < 0) throw new Error('the lab has no subnet yet');
    return `${SUBNET_PREFIX}.${this.subnetOctet}.1`;
  }

  async build(): Promise<void> {
    await this.buildBridge();
    await Promise.all(this.hosts.map((host) => this.buildHost(host)));
    await Promise.all(this.hosts.flatMap((host) => [this.waitUntilUp(null, host.rootLink), this.waitUntilUp(host.namespace, HOST_INTERFACE)]));
    await this.checkExecInPlace(this.hosts[0]!);
  }

  /** Creates the bridge and gives it .1 of a /24 that nothing else on this machine uses. */
  private async buildBridge(): Promise<void> {
    await this.run(['link', 'add', 'name', this.bridge, 'type', 'bridge']);
    this.bridgeCreated = true;
    // Start from the pid so parallel test processes usually differ at once; then jump at random.
    let octet = (process.pid % 254) + 1;
    for (let attempt = 0; attempt < SUBNET_ATTEMPTS_MAX; attempt++, octet = 1 + Math.floor(Math.random() * 254)) {
      const subnet = `${SUBNET_PREFIX}.${octet}.0/24`;
      if ((await this.addressesIn(octet)).length > 0) continue;
      if ((await this.run(['-4', 'route', 'show', 'root', subnet])).trim() !== '') continue;
      await this.run(['addr', 'add', `${SUBNET_PREFIX}.${octet}.1/24`, 'dev', this.bridge]);
      // Another process may have taken the same /24 between the check and the add: check again,
      // now that ours is there too, and move on if anyone else holds an address in it.
      if ((await this.addressesIn(octet)).some((device) => device !== this.bridge)) {
        await this.run(['addr', 'del', `${SUBNET_PREFIX}.${octet}.1/24`, 'dev', this.bridge]);
        continue;
      }
      this.subnetOctet = octet;
      this.hostList = Array.from({ length: this.hostCount }, (_, index) => ({
        index,
        address: `${SUBNET_PREFIX}.${octet}.${FIRST_HOST_OCTET + index}`,
        namespace: `${this.name}-${process.pid}-${this.labNumber}-${index}`,
        rootLink: interfaceName(`dv-${this.tag}-${index.toString(36)}`),
      }));
      await this.run(['link', 'set', this.bridge, 'up']);
      return;
    }
    throw new Error(`no free ${SUBNET_PREFIX}.N.0/24 found for the lab bridge after ${SUBNET_ATTEMPTS_MAX} attempts`);
  }

  /** The devices holding an IPv4 address in 10.77.`octet`.0/24 in the root namespace. */
  private async addressesIn(octet: number): Promise<string[]> {
    const lines = (await this.run(['-4', '-o', 'addr', 'show'])).split('\n');
    const devices: string[] = [];
    for (const line of lines) {
      // "5: dbr-x-1    inet 10.77.3.1/24 scope global dbr-x-1\ ..."
      const match = /^\d+:\s+(\S+)\s+inet\s+(\d+\.\d+\.\d+)\.\d+\//.exec(line);
      if (match !== null && match[2] === `${SUBNET_PREFIX}.${octet}`) devices.push(match[1]!);
    }
    return devices;
  }

  private async buildHost(host: NamespaceHost): Promise<void> {
    await this.run(['netns', 'add', host.namespace]);
    this.namespacesCreated.add(host.namespace);
    // The host's end is created directly inside its namespace, so every host calls it eth0.
    await this.run(['link', 'add', host.rootLink, 'type', 'veth', 'peer', 'name', HOST_INTERFACE, 'netns', host.namespace]);
    this.linksCreated.add(host.rootLink);
    await this.run(['link', 'set', host.rootLink, 'master', this.bridge]);
    await this.run(['link', 'set', host.rootLink, 'up']);
    await this.run(['-n', host.namespace, 'link', 'set', 'lo', 'up']);
    await this.run(['-n', host.namespace, 'addr', 'add', `${host.address}/24`, 'dev', HOST_INTERFACE]);
    await this.run(['-n', host.namespace, 'link', 'set', HOST_INTERFACE, 'up']);
    await this.run(['-n', host.namespace, 'route', 'add', 'default', 'via', this.gatewayAddress]);
  }

  /**
   * Resolves once `device` is operationally UP. Until then a freshly raised veth may still drop
   * packets (the kernel activates its queue asynchronously), so traffic must not start earlier.
   */
  private async waitUntilUp(namespace: string | null, device: string): Promise<void> {
    const args = [...(namespace === null ? [] : ['-n', namespace]), '-o', 'link', 'show', 'dev', device];
    const deadline = Date.now() + LINK_UP_TIMEOUT_MS;
    for (;;) {
      const line = await this.run(args);
      if (/\bstate UP\b/.test(line)) return;
      if (Date.now() >= deadline) throw new Error(`${device}${namespace === null ? '' : ` in ${namespace}`} not up after ${LINK_UP_TIMEOUT_MS} ms: ${line.trim()}`);
      await delay(LINK_UP_POLL_MS);
    }
  }

  /**
   * spawn() promises that child.pid is the command's own pid. iproute2's `ip netns exec` execs in
   * place (it forks only in batch mode); a build that forked would break kill-by-pid, so check.
   */
  private async checkExecInPlace(host: NamespaceHost): Promise<void> {
    const running = execFileAsync(this.ip, ['netns', 'exec', host.namespace, '/bin/sh', '-c', 'echo $$']);
    const pid = running.child.pid;
    const { stdout } = await running;
    if (stdout.trim() !== String(pid)) {
      throw new Error(`\`ip netns exec\` does not exec in place (spawned pid ${pid}, command pid ${stdout.trim()}): lab.spawn() could not promise the command's pid`);
    }
  }

  spawn(hostIndex: number, command: string, args: string[], options?: SpawnOptions): ChildProcess {
    checkHostIndex(hostIndex, this.hosts.length);
    refuseShell(options);
    if (this.closing !== undefined) throw new Error('the lab is closed');
    const host = this.hosts[hostIndex]!;
    return this.children.add(spawn(this.ip, ['netns', 'exec', host.namespace, command, ...args], options ?? {}));
  }

  async cut(hostIndex: number): Promise<void> {
    checkHostIndex(hostIndex, this.hosts.length);
    const host = this.hosts[hostIndex]!;
    await this.run(['link', 'set', host.rootLink, 'down']);
    // Taking eth0 down also deletes the host's routes through it; heal() puts the default back.
    await this.run(['-n', host.namespace, 'link', 'set', HOST_INTERFACE, 'down']);
  }

  async heal(hostIndex: number): Promise<void> {
    checkHostIndex(hostIndex, this.hosts.length);
    const host = this.hosts[hostIndex]!;
    await this.run(['-n', host.namespace, 'link', 'set', HOST_INTERFACE, 'up']);
    await this.run(['link', 'set', host.rootLink, 'up']);
    await this.run(['-n', host.namespace, 'route', 'replace', 'default', 'via', this.gatewayAddress]);
    await Promise.all([this.waitUntilUp(null, host.rootLink), this.waitUntilUp(host.namespace, HOST_INTERFACE)]);
  }

  async addServerAddress(): Promise<string> {
    const address = `${SUBNET_PREFIX}.${this.subnetOctet}.2`;
    // Hosts are .10 and up, so .2 is free; it goes with the bridge when the lab closes.
    await this.run(['addr', 'add', `${address}/24`, 'dev', this.bridge]);
    return address;
  }

  async blackhole(hostIndex: number, addresses: string[]): Promise<void> {
    checkHostIndex(hostIndex, this.hosts.length);
    const host = this.hosts[hostIndex]!;
    for (const address of addresses) await this.run(['-n', host.namespace, 'route', 'add', 'blackhole', `${address}/32`]);
  }

  async unblackhole(hostIndex: number, addresses: string[]): Promise<void> {
    checkHostIndex(hostIndex, this.hosts.length);
    const host = this.hosts[hostIndex]!;
    for (const address of addresses) await this.run(['-n', host.namespace, 'route', 'del', 'blackhole', `${address}/32`]);
  }

  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    const problems: unknown[] = [];
    await this.children.kill().catch((error: unknown) => problems.push(error));
    // Deleting the root end of a veth pair deletes both ends.
    for (const link of [...this.linksCreated]) {
      await this.run(['link', 'del', link]).then(() => this.linksCreated.delete(link), (error: unknown) => problems.push(error));
    }
    for (const namespace of [...this.namespacesCreated]) {
      await this.run(['netns', 'del', namespace]).then(() => this.namespacesCreated.delete(namespace), (error: unknown) => problems.push(error));
    }
    if (this.bridgeCreated) {
      await this.run(['link', 'del', this.bridge]).then(() => (this.bridgeCreated = false), (error: unknown) => problems.push(error));
    }
    process.off('exit', this.deleteOnExit);
    if (problems.length === 1) throw problems[0];
    if (problems.length > 1) throw new AggregateError(problems, `closing the lab failed ${problems.length} times`);
  }

  /** The 'exit' handler: only synchronous work is possible there; errors are ignored. */
  private deleteSync(): void {
    this.children.killSync();
    const commands = [
      ...[...this.linksCreated].map((link) => ['link', 'del', link]),
      ...[...this.namespacesCreated].map((namespace) => ['netns', 'del', namespace]),
      ...(this.bridgeCreated ? [['link', 'del', this.bridge]] : []),
    ];
    for (const args of commands) {
      try {
        execFileSync(this.ip, args, { stdio: 'ignore' });
      } catch {
        // Best effort: the process is exiting and there is no one left to tell.
      }
    }
  }

  /** Runs `ip args`; a failure throws IpCommandError with the command and its stderr. */
  private async run(args: string[]): Promise<string> {
    try {
      return (await execFileAsync(this.ip, args)).stdout;
    } catch (error) {
      const stderr = (error as { stderr?: unknown }).stderr;
      throw new IpCommandError(`${this.ip} ${args.join(' ')}`, typeof stderr === 'string' && stderr !== '' ? stderr : String(error), { cause: error });
    }
  }
}

function interfaceName(candidate: string): string {
  if (Buffer.byteLength(candidate) > INTERFACE_NAME_BYTES_MAX) {
    throw new Error(`interface name ${candidate} is longer than ${INTERFACE_NAME_BYTES_MAX} bytes`);
  }
  return candidate;
}
