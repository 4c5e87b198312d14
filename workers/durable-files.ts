/**
 * Files that survive a crash whole or not at all: written beside their final name, synced, renamed
 * over it, and the directory synced so the new name holds too. Used by replica logs' checkpoints and
 * by the data directories' state files.
 */
import { closeSync, fdatasyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/** The suffix of a file being written: one a crash left behind is never trusted. */
export const TEMPORARY_SUFFIX = '.tmp';

/** Writes `bytes` to `path` durably (see the module comment). */
export function writeFileDurably(path: string, bytes: Uint8Array): void {
  const temporary = `${path}${TEMPORARY_SUFFIX}`;
  const fd = openSync(temporary, 'w');
  try {
    for (let written = 0; written < bytes.length; ) written += writeSync(fd, bytes, written, bytes.length - written, written);
    fdatasyncSync(fd);
  } catch (error) {
    // Out of space, say: the part written would only take more of it.
    closeSync(fd);
    rmSync(temporary, { force: true });
    throw error;
  }
  closeSync(fd);
  renameSync(temporary, path);
  syncDirectory(dirname(path));
}

/** Makes the names in `directory` (new, renamed, deleted) durable. */
export function syncDirectory(directory: string): void {
  const fd = openSync(directory, 'r');
  try {
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
