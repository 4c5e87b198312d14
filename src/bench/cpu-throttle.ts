/**
 * Throttles a process's CPU with a cgroup, as an overloaded or capped machine would: cgroup v2's
 * `cpu.max` where the unified hierarchy has the cpu controller, else cgroup v1's
 * `cpu.cfs_quota_us`. Needs root (as in CI); elsewhere it fails naming what it needs, never skips.
 * The cgroup is made for the one process and removed by release(), after the process has left it
 * (moved back to the root group) or exited.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const PERIOD_US = 100_000;

export interface CpuThrottle {
  /** The cgroup's CPU statistics (throttled periods), as the kernel reports them. */
  stat(): string;
  /** Moves the process back to the root group (if it still runs) and removes the cgroup. */
  release(): void;
}

function cpuHierarchy(): { version: 2 | 1; root: string } {
  for (const root of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    const controllers = join(root, 'cgroup.controllers');
    if (existsSync(controllers) && readFileSync(controllers, 'utf8').split(/\s+/).includes('cpu')) return { version: 2, root };
  }
  if (existsSync('/sys/fs/cgroup/cpu/cpu.cfs_quota_us')) return { version: 1, root: '/sys/fs/cgroup/cpu' };
  throw new Error('no cgroup cpu controller is mounted (cgroup v2 with cpu in cgroup.controllers, or cgroup v1 at /sys/fs/cgroup/cpu): cannot throttle a host');
}

/** Caps process `pid` to `fraction` of one CPU. */
export function throttleCpu(pid: number, fraction: number, name: string): CpuThrottle {
  if (process.getuid?.() !== 0) throw new Error('throttling a host needs root (a cgroup): run the test as root, as CI does');
  if (!(fraction > 0 && fraction <= 1)) throw new RangeError(`fraction must be in (0, 1], got ${fraction}`);
  const { version, root } = cpuHierarchy();
  if (version === 2) {
    // The controller must be enabled for the root's children.
    const subtree = join(root, 'cgroup.subtree_control');
    if (!readFileSync(subtree, 'utf8').split(/\s+/).includes('cpu')) writeFileSync(subtree, '+cpu');
  }
  const group = join(root, `${name}-${process.pid}-${pid}`);
  mkdirSync(group);
  const quotaUs = Math.max(1000, Math.round(PERIOD_US * fraction));
  if (version === 2) writeFileSync(join(group, 'cpu.max'), `${quotaUs} ${PERIOD_US}`);
  else {
    writeFileSync(join(group, 'cpu.cfs_period_us'), String(PERIOD_US));
    writeFileSync(join(group, 'cpu.cfs_quota_us'), String(quotaUs));
  }
  writeFileSync(join(group, 'cgroup.procs'), String(pid));
  return {
    stat: () => readFileSync(join(group, 'cpu.stat'), 'utf8'),
    release: () => {
      try {
        writeFileSync(join(root, 'cgroup.procs'), String(pid));
      } catch {
        // The process has exited: the group is empty already.
      }
      rmdirSync(group);
    },
  };
}
