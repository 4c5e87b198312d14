/**
 * A small file system of its own (tmpfs) for tests that fill a disk: mounted on a fresh directory,
 * unmounted and removed by the returned function. Mounting needs root (CAP_SYS_ADMIN), as the
 * network-namespace tests do; without it this fails naming the command, never skips.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statfsSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function mountTmpfs(bytes: number): { path: string; unmount(): void } {
  const path = mkdtempSync(join(tmpdir(), 'dabba-tmpfs-'));
  const args = ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', path];
  try {
    execFileSync('mount', args, { stdio: 'pipe' });
  } catch (error) {
    rmSync(path, { recursive: true, force: true });
    throw new Error(`this test fills a small file system and could not mount one (\`mount ${args.join(' ')}\` needs root): ${(error as Error).message}`);
  }
  return {
    path,
    unmount: () => {
      try {
        execFileSync('umount', [path], { stdio: 'pipe' });
      } catch {
        // Busy: a test that failed left a file open in it. Detach it anyway, so no mount outlives the test.
        execFileSync('umount', ['-l', path], { stdio: 'pipe' });
      }
      rmSync(path, { recursive: true, force: true });
    },
  };
}

export function freeBytes(path: string): number {
  const stats = statfsSync(path);
  return stats.bavail * stats.bsize;
}

/**
 * Takes all but about `leaveBytes` of the free space at `path` with one file, and returns its name.
 * Others may be writing there too (a chain's logs): whatever it could not write for want of space
 * was taken by them, so a write that fails with ENOSPC ends it, the disk being full.
 */
export function fillLeaving(path: string, leaveBytes: number, name = 'filler'): string {
  const file = join(path, name);
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(1024 * 1024);
  try {
    for (let left = freeBytes(path) - leaveBytes; left > 0; ) {
      const length = Math.min(left, chunk.length);
      try {
        left -= writeSync(fd, chunk, 0, length);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
        if (length === 1) break;
        left = Math.min(left, length >> 1); // Less room than asked: fill what is left, smaller.
      }
    }
  } finally {
    closeSync(fd);
  }
  return file;
}
