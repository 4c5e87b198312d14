/**
 * `npm run bench:report` on a small synthetic ledger: every plot is written from the newest commit
 * that has data for it, as an SVG with one polyline per series and one vertex per data point.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeReport } from '../bench/report.js';
import { lineChart } from '../bench/svg-chart.js';

const machine = { node: 'v20.0.0', cpu: 'Test CPU', cores: 2, memoryGiB: 4 };
const OLD = { date: '2026-01-01T00:00:00.000Z', commit: 'old1111' };
const NEW = { date: '2026-02-01T00:00:00.000Z', commit: 'new2222' };

function sweep(run: typeof OLD, dimension: string, setting: number): object {
  return { suite: 'chain.sweep', ...run, ...machine, dimension, setting, writesPerSecond: 1e6 / Math.log2(setting + 2), megabytesPerSecond: setting / 10, p50Us: 900, p99Us: 4000 };
}

function openLoopPoint(run: typeof OLD, fraction: number): object {
  const offeredPerSecond = fraction * 1e6;
  return { suite: 'chain.openloop', ...run, ...machine, fraction, closedLoopPerSecond: 1e6, offeredPerSecond, achievedPerSecond: offeredPerSecond, p50Us: 500, p99Us: 2000 + fraction * 1000, p999Us: 9000, refused: 0 };
}

function failoverRow(run: typeof OLD, role: string, withTimeline: boolean): object {
  const timeline = { bucketMs: 10, startMs: -20, acknowledged: [1200, 1100, 0, 800, 1500] };
  return { suite: 'failover', ...run, ...machine, role, stallMs: 12, reconfiguredAfterMs: 5, writesPerSecondBefore: 1e6, writesPerSecondAfter: 1.5e6, ...(withTimeline ? { timeline } : {}) };
}

/** The vertex count of every <polyline> in the file, in order. */
function polylineVertices(svg: string): number[] {
  return [...svg.matchAll(/<polyline points="([^"]*)"/g)].map((match) => match[1]!.trim().split(/\s+/).length);
}

test('the report plots each figure from the newest commit that has data for it', () => {
  const directory = mkdtempSync(join(tmpdir(), 'dabba-report-'));
  const plots = join(directory, 'plots');
  const ledger = [
    ...[1, 64, 4096].map((batch) => sweep(OLD, 'batch', batch)),
    ...[16, 16384].map((value) => sweep(OLD, 'value', value)),
    ...[0.25, 0.75].map((fraction) => openLoopPoint(OLD, fraction)),
    ...['head', 'middle', 'tail'].map((role) => failoverRow(OLD, role, true)),
    { suite: 'micro', ...NEW, ...machine, task: 'codec', nsPerWrite: 100 },
    ...[1, 16, 256, 1024, 4096].map((batch) => sweep(NEW, 'batch', batch)),
    ...[16, 100, 1024, 16384].map((value) => sweep(NEW, 'value', value)),
    ...[0.1, 0.25, 0.5, 0.75, 0.9].map((fraction) => openLoopPoint(NEW, fraction)),
    // Failover rows recorded before the timeline existed: not plottable, so the old commit's are used.
    ...['head', 'middle', 'tail'].map((role) => failoverRow(NEW, role, false)),
  ];
  // A partial last line, as a killed run leaves it, is ignored.
  writeFileSync(join(directory, 'results.jsonl'), `${ledger.map((entry) => JSON.stringify(entry)).join('\n')}\n{"suite":"chain.sw`);
  process.env.DABBA_BENCH_RESULTS = directory;
  const lines: string[] = [];
  try {
    const written = writeReport({ plotsDirectory: plots, log: (line) => lines.push(line) });
    assert.equal(written.length, 4, lines.join('\n'));
    const expected: Record<string, { commit: string; series: string[]; points: number }> = {
      'throughput-vs-batch.svg': { commit: NEW.commit, series: ['dabba, 3 replicas'], points: 5 },
      'throughput-vs-value-size.svg': { commit: NEW.commit, series: ['dabba, 3 replicas'], points: 4 },
      'latency-vs-load.svg': { commit: NEW.commit, series: ['p50', 'p99', 'p99.9'], points: 5 },
      'failover-timeline.svg': { commit: OLD.commit, series: ['head crashed', 'middle crashed', 'tail crashed'], points: 5 },
    };
    for (const [file, { commit, series, points }] of Object.entries(expected)) {
      const path = join(plots, file);
      assert.ok(existsSync(path), `${file} written`);
      const svg = readFileSync(path, 'utf8');
      assert.ok(svg.startsWith('<svg') && svg.trimEnd().endsWith('</svg>'), file);
      const title = /<title>([^<]*)<\/title>/.exec(svg)?.[1] ?? '';
      assert.ok(title.includes(commit), `${file}: ${title} names commit ${commit}`);
      for (const name of series) assert.ok(svg.includes(`>${name}</text>`), `${file}: legend names ${name}`);
      assert.deepEqual(polylineVertices(svg), series.map(() => points), file);
      assert.equal((svg.match(/<circle /g) ?? []).length, series.length * (points + 1), `${file}: a marker per point and per legend entry`);
    }
    assert.ok(lines.some((line) => line.includes('not JSON')), lines.join('\n'));
  } finally {
    delete process.env.DABBA_BENCH_RESULTS;
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a plot without data is skipped with a message', () => {
  const directory = mkdtempSync(join(tmpdir(), 'dabba-report-'));
  const file = join(directory, 'results.jsonl');
  writeFileSync(file, `${JSON.stringify({ suite: 'micro', ...NEW, ...machine, task: 'codec', nsPerWrite: 100 })}\n`);
  const lines: string[] = [];
  try {
    assert.deepEqual(writeReport({ resultsFile: file, plotsDirectory: join(directory, 'plots'), log: (line) => lines.push(line) }), []);
    assert.equal(lines.filter((line) => line.startsWith('skipped ')).length, 4, lines.join('\n'));
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
});

test('chart text is escaped and log axes leave out what they cannot show', () => {
  const svg = lineChart({
    title: 'a <b> & "c"',
    xLabel: 'x',
    yLabel: 'y',
    xScale: 'log2',
    series: [{ name: "<script>alert('x')</script>", points: [[0, 1], [1, 2], [2, 3], [4, 2]] }],
  });
  assert.ok(!svg.includes('<script>') && svg.includes('&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt;'));
  assert.ok(svg.includes('a &lt;b&gt; &amp; &quot;c&quot;'));
  assert.deepEqual(polylineVertices(svg), [3], 'x = 0 has no place on a log axis');
});
