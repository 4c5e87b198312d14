/**
 * Shared pieces of the benchmarks (`dabba bench` and the repository's suites in bench/): the
 * environment every figure is recorded with, medians, appending a result to a JSON-lines ledger, and
 * a plain table printer. Where the ledger lives is the caller's choice: bench/ledger.ts for the
 * suites, --results-dir or a temp directory for `dabba bench`.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdirSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Environment {
  date: string;
  commit: string;
  node: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
}

export function environment(): Environment {
  const processors = cpus();
  return {
    date: new Date().toISOString(),
    commit: dabbaCommit(),
    node: process.version,
    cpu: processors[0]?.model ?? 'unknown',
    cores: processors.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
  };
}

/**
 * The commit of the dabba checkout this code runs from ('+dirty' with uncommitted changes), or
 * 'unknown' for an installed package. git is asked in this module's directory, not the working
 * directory, and believed only when this module lies in that repository's own tree, not under a
 * node_modules/ in it: a dabba installed in a user's repository must not record the user's commit.
 */
function dabbaCommit(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const git = (args: string[]): string => execFileSync('git', ['-C', here, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    if (relative(git(['rev-parse', '--show-toplevel']), here).split(sep).includes('node_modules')) return 'unknown';
    const commit = git(['rev-parse', '--short', 'HEAD']);
    return git(['status', '--porcelain', '--untracked-files=no']) === '' ? commit : `${commit}+dirty`;
  } catch {
    // Not in a git checkout at all.
    return 'unknown';
  }
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
