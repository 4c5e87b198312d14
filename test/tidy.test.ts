/**
 * Mechanical style rules (TigerBeetle's tidy.zig): the core stays pure and the dependency
 * direction stays one-way. A violation names the file and the import.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';

function sourceFiles(directory: string): string[] {
  return readdirSync(directory).flatMap((name) => {
    const path = join(directory, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

function importsOf(path: string): string[] {
  const source = readFileSync(path, 'utf8');
  const specifiers: string[] = [];
  for (const match of source.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s*['"]([^'"]+)['"]/g)) specifiers.push(match[1]!);
  for (const match of source.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)) specifiers.push(match[1]!);
  return specifiers;
}

const NODE_BUILTINS = /^(node:|fs$|path$|os$|net$|http$|https$|crypto$|child_process$|worker_threads$|timers$|buffer$|events$|perf_hooks$|util$)/;
const FORBIDDEN_GLOBALS = /\b(Date\.now|Math\.random|setTimeout|setInterval|setImmediate|process\.|Buffer\.|performance\.now|require\()/;

test('native-free-core imports no Node built-ins, sockets, workers or packages other than flatbuffers', () => {
  const problems: string[] = [];
  for (const file of sourceFiles('native-free-core')) {
    for (const specifier of importsOf(file)) {
      if (NODE_BUILTINS.test(specifier)) problems.push(`${file}: imports ${specifier}`);
      else if (!specifier.startsWith('.') && specifier !== 'flatbuffers') problems.push(`${file}: imports package ${specifier}`);
      else if (specifier.startsWith('.') && !join(file, '..', specifier).startsWith('native-free-core')) {
        problems.push(`${file}: reaches outside the core (${specifier})`);
      }
    }
  }
  assert.deepEqual(problems, []);
});

test('native-free-core uses no clocks, timers, randomness or process state (time is passed in)', () => {
  const problems: string[] = [];
  for (const file of sourceFiles('native-free-core')) {
    if (file.includes('/generated/')) continue;
    readFileSync(file, 'utf8')
      .split('\n')
      .forEach((line, index) => {
        const code = line.replace(/\/\/.*$/, '').replace(/^\s*\*.*$/, '');
        if (FORBIDDEN_GLOBALS.test(code)) problems.push(`${file}:${index + 1}: ${line.trim()}`);
      });
  }
  assert.deepEqual(problems, []);
});

test('the dependency direction is one-way: the core imports neither src/ nor workers/, workers/ never imports src/', () => {
  const problems: string[] = [];
  for (const file of sourceFiles('workers')) {
    for (const specifier of importsOf(file)) {
      const target = relative('.', join(file, '..', specifier));
      if (specifier.startsWith('.') && target.startsWith('src')) problems.push(`${file}: imports ${specifier}`);
    }
  }
  assert.deepEqual(problems, []);
});

test('no test is marked only, skip or todo', () => {
  const marked = sourceFiles('test').filter((file) => /\.(only|skip|todo)\(/.test(readFileSync(file, 'utf8').replace(/\/\^.*\$\//g, '')));
  assert.deepEqual(marked.filter((file) => !file.endsWith('tidy.test.ts')), []);
});
