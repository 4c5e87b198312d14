/**
 * Mechanical style rules (TigerBeetle's tidy.zig): the core stays pure and the dependency
 * direction stays one-way, folder by folder (ALLOWED_IMPORTS). A violation names the file and the import.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { join, normalize } from 'node:path';
import { test } from 'node:test';

const SOURCE_EXTENSIONS = /\.(ts|mts|mjs)$/;
const NOT_SOURCE = new Set(['node_modules', 'dist', '.git']);

function sourceFiles(directory: string): string[] {
  return readdirSync(directory).flatMap((name) => {
    const path = join(directory, name);
    if (statSync(path).isDirectory()) return NOT_SOURCE.has(name) ? [] : sourceFiles(path);
    return SOURCE_EXTENSIONS.test(path) ? [path] : [];
  });
}

interface Import {
  specifier: string;
  /** `import type` / `export type`: erased by the compiler, so it loads nothing at run time. */
  typeOnly: boolean;
  /** `import(...)`: loaded when the code runs, so a missing package can be caught and explained. */
  dynamic: boolean;
}

function importsOf(path: string): Import[] {
  const source = readFileSync(path, 'utf8');
  const found: Import[] = [];
  for (const match of source.matchAll(/(?:^|\n)\s*(?:import|export)(\s+type\b)?[^'"]*?from\s*['"]([^'"]+)['"]/g)) {
    found.push({ specifier: match[2]!, typeOnly: match[1] !== undefined, dynamic: false });
  }
  for (const match of source.matchAll(/(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g)) found.push({ specifier: match[1]!, typeOnly: false, dynamic: false });
  for (const match of source.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)) found.push({ specifier: match[1]!, typeOnly: false, dynamic: true });
  return found;
}

const FOLDERS = ['native-free-core', 'workers', 'src', 'bench', 'test'] as const;
type Folder = (typeof FOLDERS)[number];

const manifest = JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> };
const RUNTIME_PACKAGES = Object.keys(manifest.dependencies);

/**
 * What each top-level folder may import besides itself: other folders (by relative path), and
 * packages. 'runtime' = Node built-ins and package.json "dependencies", which an installed dabba
 * has; a devDependency only as `import type` or through `import()` (which can fail with a message
 * naming the package to install). 'any' = no limit.
 */
const ALLOWED_IMPORTS: Record<Folder, { folders: readonly Folder[]; packages: readonly string[] | 'runtime' | 'any' }> = {
  'native-free-core': { folders: [], packages: ['flatbuffers'] },
  workers: { folders: ['native-free-core'], packages: 'runtime' },
  src: { folders: ['native-free-core', 'workers'], packages: 'runtime' },
  bench: { folders: ['native-free-core', 'workers', 'src'], packages: 'any' },
  test: { folders: ['native-free-core', 'workers', 'src', 'bench'], packages: 'any' },
};

/** The package an import names: `etcd3/lib/x` -> `etcd3`, `@scope/name/x` -> `@scope/name`. */
function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

/** The rules above applied to one file's imports; one line per violation. */
function importProblems(file: string, imports: readonly Import[]): string[] {
  const folder = file.split('/')[0] as Folder;
  const rule = ALLOWED_IMPORTS[folder];
  const problems: string[] = [];
  for (const { specifier, typeOnly, dynamic } of imports) {
    if (specifier.startsWith('.')) {
      const target = normalize(join(file, '..', specifier)).split('/')[0]!;
      if (folder !== 'test' && target !== folder && !(rule.folders as readonly string[]).includes(target)) {
        problems.push(`${file}: imports ${specifier} (${folder}/ may import ${[folder, ...rule.folders].map((name) => `${name}/`).join(', ')} only)`);
      }
    } else if (rule.packages === 'runtime') {
      const runtime = isBuiltin(specifier) || RUNTIME_PACKAGES.includes(packageOf(specifier));
      if (!runtime && !typeOnly && !dynamic) problems.push(`${file}: imports ${specifier} (not a dependency: an installed dabba lacks it; load it with import() and say what to install)`);
    } else if (rule.packages !== 'any' && !rule.packages.includes(packageOf(specifier))) {
      problems.push(`${file}: imports ${specifier} (${folder}/ may import ${rule.packages.join(', ')} only)`);
    }
  }
  return problems;
}

test('every top-level folder with code has a row in ALLOWED_IMPORTS', () => {
  const withCode = readdirSync('.').filter((name) => !NOT_SOURCE.has(name) && !name.startsWith('.') && statSync(name).isDirectory() && sourceFiles(name).length > 0);
  assert.deepEqual(withCode.sort(), [...FOLDERS].sort());
});

test('each folder imports only what ALLOWED_IMPORTS lets it: the core itself and flatbuffers, src/ never bench/ or test/', () => {
  const problems = FOLDERS.flatMap((folder) => sourceFiles(folder).flatMap((file) => importProblems(file, importsOf(file))));
  assert.deepEqual(problems, []);
});

test('the import rules catch what they forbid', () => {
  const plain = (specifier: string): Import => ({ specifier, typeOnly: false, dynamic: false });
  assert.deepEqual(importProblems('src/cli.ts', [plain('../bench/scenario.js'), plain('./bench/scenario.js'), plain('../workers/replica.js')]), [
    'src/cli.ts: imports ../bench/scenario.js (src/ may import src/, native-free-core/, workers/ only)',
  ]);
  assert.equal(importProblems('src/bench/peers/redis.ts', [plain('redis')]).length, 1);
  assert.deepEqual(importProblems('src/bench/peers/redis.ts', [{ specifier: 'redis', typeOnly: true, dynamic: false }, { specifier: 'redis', typeOnly: false, dynamic: true }, plain('node:fs'), plain('etcd3')]), []);
  assert.equal(importProblems('native-free-core/chain/node.ts', [plain('../../src/index.js')]).length, 1);
  assert.equal(importProblems('native-free-core/ring.ts', [plain('node:fs')]).length, 1);
  assert.equal(importProblems('workers/replica.ts', [plain('../src/index.js')]).length, 1);
  assert.equal(importProblems('bench/run.ts', [plain('../test/helpers/test-ca.js')]).length, 1);
  assert.deepEqual(importProblems('test/tidy.test.ts', [plain('../bench/run.js'), plain('tinybench')]), []);
});

const FORBIDDEN_GLOBALS = /\b(Date\.now|Math\.random|setTimeout|setInterval|setImmediate|process\.|Buffer\.|performance\.now|require\()/;

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

test('no test is marked only, skip or todo', () => {
  const marked = sourceFiles('test').filter((file) => /\.(only|skip|todo)\(/.test(readFileSync(file, 'utf8').replace(/\/\^.*\$\//g, '')));
  assert.deepEqual(marked.filter((file) => !file.endsWith('tidy.test.ts')), []);
});
