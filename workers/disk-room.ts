/**
 * Whether a replica's disk has room for its log: free space at or above a reserve, read with statfs
 * at most every DISK_CHECK_INTERVAL_MS (a syscall, so not per batch), and no write failing for want
 * of space (ENOSPC, EDQUOT). While full, the replica takes no new batches and its chain refuses
 * writes with DABBA_ERR_DISK_FULL; it serves reads, and goes on by itself once space is freed (the
 * reserve is there so that it stops before a write fails; a failed write is retried after each
 * free-space check, and succeeds once there is room).
 */
import { statfsSync } from 'node:fs';

/** How often a replica's free space is read (also how often a failed write is retried). */
export const DISK_CHECK_INTERVAL_MS = 100;

export function isOutOfSpace(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

export class DiskRoom {
  /** Free bytes as last read (Infinity before the first check). */
  freeBytes = Number.POSITIVE_INFINITY;
  belowReserve = false;
  /** A write failed for want of space, and no retry has succeeded since. */
  writeFailing = false;
  private checkedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly directory: string,
    readonly reserveBytes: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get full(): boolean {
    return this.belowReserve || this.writeFailing;
  }

  /** Reads the free space if a check is due; returns whether one ran. */
  check(): boolean {
    const now = this.now();
    if (now - this.checkedAt < DISK_CHECK_INTERVAL_MS) return false;
    this.checkedAt = now;
    const stats = statfsSync(this.directory);
    this.freeBytes = stats.bavail * stats.bsize;
    this.belowReserve = this.freeBytes < this.reserveBytes;
    return true;
  }

  writeFailed(): void {
    this.writeFailing = true;
  }

  writeSucceeded(): void {
    this.writeFailing = false;
  }
}
