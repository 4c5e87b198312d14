/**
 * Shared pieces of the benchmarks (`dabba bench` and the repository's suites in bench/): the
 * environment every figure is recorded with, medians, appending a result to a JSON-lines ledger, and
 * a plain table printer. Where the ledger lives is the caller's choice: bench/ledger.ts for the
 * suites, --results-dir or a temp directory for `dabba bench`.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdirSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname } from 'node:path';

export interface Environment {
  date: string;
  commit: string;
  node: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
}

export function environment(): Environment {
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).trim();
    if (dirty !== '') commit += '+dirty';
  } catch {
    // Not a git checkout (an installed package): the commit stays unknown.
  }
  const processors = cpus();
  return {
    date: new Date().toISOString(),
    commit,
    node: process.version,
    cpu: processors[0]?.model ?? 'unknown',
    cores: processors.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
  };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Appends one result as a JSON line, with the environment, to the ledger `file` (its directory made if missing). */
export function appendResult(file: string, suite: string, result: object, env: Environment): void {
  mkdirSync(dirname(file), { recursive: true });
  appendFileSync(file, `${JSON.stringify({ suite, ...env, ...result })}\n`);
}

export function formatRate(perSecond: number): string {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(2)} M/s`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(1)} k/s`;
  return `${perSecond.toFixed(0)} /s`;
}

export function printTable(title: string, header: string[], rows: Array<Array<string | number>>, out = process.stdout): void {
  const cells = [header, ...rows.map((row) => row.map(String))];
  const widths = header.map((_, column) => Math.max(...cells.map((row) => row[column]!.length)));
  out.write(`\n${title}\n`);
  cells.forEach((row, index) => {
    out.write(`  ${row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  ')}\n`);
    if (index === 0) out.write(`  ${widths.map((width) => '-'.repeat(width)).join('  ')}\n`);
  });
}
