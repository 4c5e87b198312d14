/**
 * `npm run profile:workers`: CPU profiles of EVERY thread (clinic flame and 0x see only the main
 * thread, and dabba's replicas run on workers). Runs the profile workload under
 * `node --cpu-prof`, which writes one .cpuprofile per thread, names each by the replica it was,
 * prints each thread's top functions by self time, and renders each as a flame graph with 0x.
 *
 *   node dist/bench/profile-workers.js [--seconds S] [--out DIR] [--no-flame] [--durability async|fsync]
 *
 * Output: DIR/<thread>/profile.cpuprofile (load it in Chrome DevTools' Performance panel too),
 * DIR/<thread>/flamegraph.html, and DIR/index.html linking them with the top-function tables.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { topSelfTime, type CpuProfile, type SelfTimeRow } from './cpu-profile.js';

const ZERO_X = '0x@6.0.0';

const { values } = parseArgs({
  options: { seconds: { type: 'string' }, out: { type: 'string' }, 'no-flame': { type: 'boolean' }, durability: { type: 'string' } },
});
const seconds = values.seconds ?? '10';
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const out = resolve(values.out ?? join('bench', 'profiles', `workers-${stamp}`));
mkdirSync(out, { recursive: true });
const here = dirname(fileURLToPath(import.meta.url));

execFileSync(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${out}`, join(here, 'profile-workload.js'), '--seconds', seconds, ...(values.durability === undefined ? [] : ['--durability', values.durability])], {
  stdio: 'inherit',
  env: { ...process.env, DABBA_PROFILE_DIR: out },
});

const threads = JSON.parse(readFileSync(join(out, 'threads.json'), 'utf8')) as Record<string, string>;
const sections: string[] = [];
for (const file of readdirSync(out).filter((name) => name.endsWith('.cpuprofile')).sort()) {
  // Node names them CPU.<date>.<time>.<pid>.<threadId>.<seq>.cpuprofile.
  const threadId = file.split('.').at(-3)!;
  const name = threads[threadId] ?? `thread ${threadId} (idle pool thread)`;
  const slug = name.replace(/[^a-z0-9]+/gi, '-').replace(/-+$/, '').toLowerCase();
  mkdirSync(join(out, slug), { recursive: true });
  const profilePath = join(out, slug, 'profile.cpuprofile');
  renameSync(join(out, file), profilePath);
  const rows = topSelfTime(JSON.parse(readFileSync(profilePath, 'utf8')) as CpuProfile, 12);
  process.stdout.write(`\n${name}\n${formatRows(rows)}\n`);
  if (!values['no-flame']) {
    // 0x writes flamegraph.html next to the profile it renders.
    execFileSync('npx', ['-y', '--ignore-scripts', ZERO_X, '--visualize-cpu-profile', profilePath], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  const flame = existsSync(join(out, slug, 'flamegraph.html')) ? `<a href="${slug}/flamegraph.html">flame graph</a> · ` : '';
  sections.push(`<h2>${escape(name)}</h2><p>${flame}<a href="${slug}/profile.cpuprofile">profile</a></p><pre>${escape(formatRows(rows))}</pre>`);
}
writeFileSync(
  join(out, 'index.html'),
  `<!doctype html><meta charset="utf-8"><title>dabba thread profiles</title><h1>dabba: CPU by thread (${escape(seconds)} s workload)</h1>${sections.join('\n')}\n`,
);
process.stdout.write(`\nwrote ${join(out, 'index.html')}\n`);

function formatRows(rows: SelfTimeRow[]): string {
  return rows.map((row) => `${row.percent.toFixed(1).padStart(5)} %  ${(row.selfMs.toFixed(0) + ' ms').padStart(8)}  ${row.name}`).join('\n');
}

function escape(text: string): string {
  return text.replace(/[&<>"]/g, (character) => `&#${character.charCodeAt(0)};`);
}
