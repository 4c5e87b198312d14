/**
 * The README's examples against a live cluster, so that the two cannot drift: three hosts in two
 * zones holding two chains of two replicas (the README's own example), then GET /status, GET
 * /digest and `dabba status --json` have the same keys at every level as the README's examples,
 * with the same types (a null on either side stands for any type, as the README says where a
 * figure may be null); every metric the README's "Metrics" table lists is served, and every metric
 * served is listed; `dabba status` exits as the README says. A scraper needs the metrics token.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { createChain } from '../src/index.js';
import { startHost, type DabbaHost } from '../src/host/host.js';
import { parsePromText } from './helpers/prometheus-text.js';

const SECRET = Buffer.from('readme-shapes-client-secret-0123456789');
const PEER_SECRET = Buffer.from('readme-shapes-peer-secret-0123456789');
const METRICS_TOKEN = 'readme-shapes-metrics-token-0123';
const PREFIX = `/readme-shapes-${process.pid}/`;
const README = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const servers = new LocalServers('readme-shapes-test');
let etcd: string[];
const hosts: DabbaHost[] = [];

before(async () => {
  etcd = (await startEtcdCluster(servers, 1)).clientUrls;
  const zones = ['zone-a', 'zone-a', 'zone-b'];
  for (const [index, zone] of zones.entries()) {
    hosts.push(
      await startHost({
        hostId: `h${index + 1}`,
        port: 0,
        etcd,
        etcdPrefix: PREFIX,
        peerSecret: PEER_SECRET,
        clientSecret: SECRET,
        zone,
        chains: 2,
        replicas: 2,
        metricsToken: Buffer.from(METRICS_TOKEN),
        log: () => undefined,
      }),
    );
  }
  await untilEveryChainServes();
});

after(async () => {
  try {
    await Promise.all(hosts.map((host) => host.close()));
  } finally {
    await servers.stop(1000);
  }
});

function httpUrl(host: DabbaHost): string {
  return host.url.replace('ws://', 'http://');
}

async function getJson(host: DabbaHost, path: string): Promise<unknown> {
  const response = await fetch(`${httpUrl(host)}${path}`);
  assert.equal(response.status, 200, `${path}: ${response.status}`);
  assert.equal(response.headers.get('content-type'), 'application/json');
  return response.json();
}

/**
 * Until both chains are placed with two replicas, every replica is started and reported, and a
 * write through each host's HTTP API was acknowledged (asked every 50 ms, for at most 20 s: a
 * host's status reaches etcd on its own timer, with no event to wait for).
 */
async function untilEveryChainServes(): Promise<void> {
  const deadline = performance.now() + 20_000;
  for (let attempt = 0; ; attempt++) {
    const statuses = (await Promise.all(hosts.map((host) => getJson(host, '/status')))) as Array<{ chains: Array<{ members: Array<{ lag: number | null }> }>; replicas: unknown[] }>;
    const placed = statuses.every((status) => status.chains.length === 2 && status.chains.every((chain) => chain.members.length === 2 && chain.members.every((member) => member.lag !== null)));
    if (placed && statuses.reduce((total, status) => total + status.replicas.length, 0) === 4) break;
    assert.ok(performance.now() < deadline, `the chains were not served 20 s after the hosts started: ${JSON.stringify(statuses.map((status) => status.chains))}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  for (const [index, host] of hosts.entries()) {
    for (const key of [`user:${index}`, `order:${index}`]) {
      const response = await fetch(`${httpUrl(host)}/kv/${encodeURIComponent(key)}`, { method: 'PUT', body: 'Asha' });
      assert.equal(response.status, 204);
    }
  }
}

/** The fenced block after `<!-- example: NAME -->` in the README. */
function readmeExample(name: string): string {
  const marker = `<!-- example: ${name} -->`;
  const at = README.indexOf(marker);
  assert.ok(at >= 0, `the README has no ${marker}`);
  const block = /```[a-z]*\n([\s\S]*?)\n```/.exec(README.slice(at + marker.length));
  assert.ok(block !== null, `no fenced block after ${marker}`);
  return block[1]!;
}

/**
 * Where `documented` and `live` differ in shape: keys one has and the other lacks, at any depth, and
 * values of different types. Null on either side matches anything; an array's elements are each
 * compared with the other side's first; under a path in `keyedByName` the keys are names (error
 * codes, say), so only the values' types are compared.
 */
function shapeDifferences(documented: unknown, live: unknown, keyedByName: ReadonlySet<string>, path = '$'): string[] {
  if (documented === null || live === null) return [];
  const kind = (value: unknown): string => (Array.isArray(value) ? 'array' : typeof value);
  if (kind(documented) !== kind(live)) return [`${path}: the README has ${kind(documented)}, the host serves ${kind(live)}`];
  if (Array.isArray(documented)) {
    const served = live as unknown[];
    if (documented.length === 0 || served.length === 0) return [];
    return [...documented.flatMap((item) => shapeDifferences(item, served[0], keyedByName, `${path}[]`)), ...served.flatMap((item) => shapeDifferences(documented[0], item, keyedByName, `${path}[]`))];
  }
  if (typeof documented !== 'object') return [];
  const ours = documented as Record<string, unknown>;
  const theirs = live as Record<string, unknown>;
  if (keyedByName.has(path)) {
    const sample = Object.values(theirs)[0];
    return sample === undefined ? [] : Object.entries(ours).flatMap(([key, value]) => shapeDifferences(value, sample, keyedByName, `${path}.${key}`));
  }
  const problems: string[] = [];
  for (const key of Object.keys(ours)) if (!(key in theirs)) problems.push(`${path}.${key}: in the README, not served`);
  for (const key of Object.keys(theirs)) if (!(key in ours)) problems.push(`${path}.${key}: served, not in the README`);
  for (const key of Object.keys(ours)) if (key in theirs) problems.push(...shapeDifferences(ours[key], theirs[key], keyedByName, `${path}.${key}`));
  return problems;
}

function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}

test('GET /status has the shape of the README example, on every host', async () => {
  const documented = JSON.parse(readmeExample('GET /status')) as unknown;
  for (const host of hosts) {
    const live = await getJson(host, '/status');
    assert.deepEqual(shapeDifferences(documented, live, new Set(['$.refusals'])), [], `${host.hostId}'s /status`);
  }
});

test('GET /digest has the shape of the README example', async () => {
  const documented = JSON.parse(readmeExample('GET /digest')) as unknown;
  for (const host of hosts) assert.deepEqual(shapeDifferences(documented, await getJson(host, '/digest'), new Set()), [], `${host.hostId}'s /digest`);
});

test('dabba status --json has the shape of the README example; dabba status exits 0 on a healthy cluster and 2 on a bad flag', async () => {
  const json = await runCli(['status', '--etcd', etcd.join(','), '--etcd-prefix', PREFIX, '--json']);
  assert.equal(json.code, 0, json.stderr);
  const documented = JSON.parse(readmeExample('dabba status --json')) as unknown;
  assert.deepEqual(shapeDifferences(documented, JSON.parse(json.stdout), new Set()), []);
  const text = await runCli(['status', '--etcd', etcd.join(','), '--etcd-prefix', PREFIX]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^cluster .*: 2 chains of 2 replicas, 3 live hosts$/m);
  const bad = await runCli(['status', '--etcd', etcd.join(','), '--no-such-flag']);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr.trim().split('\n').length, 1, 'one line on stderr');
});

test('GET /metrics serves every metric the README lists, and lists every metric it serves; it needs the metrics token', async () => {
  const section = README.slice(README.indexOf('<!-- metrics -->'), README.indexOf('<!-- /metrics -->'));
  const documented = new Set([...section.matchAll(/^\| `(dabba_[a-z_]+)` \| (counter|gauge|histogram) \|/gm)].map((match) => `${match[1]} ${match[2]}`));
  assert.ok(documented.size > 20, 'the README has a table of metrics between <!-- metrics --> and <!-- /metrics -->');

  const refused = await fetch(`${httpUrl(hosts[0]!)}/metrics`);
  assert.equal(refused.status, 401);
  assert.equal(((await refused.json()) as { code: string }).code, 'DABBA_ERR_UNAUTHENTICATED');
  const served = new Set<string>();
  for (const host of hosts) {
    const response = await fetch(`${httpUrl(host)}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    const metrics = parsePromText(await response.text());
    for (const [name, type] of metrics.types) if (name.startsWith('dabba_')) served.add(`${name} ${type}`);
    assert.ok(metrics.types.has('process_cpu_seconds_total'), 'a host serves its process figures too');
    assert.equal(metrics.all('dabba_replica_info', { host: host.hostId }).length, metrics.all('dabba_replica_info').length, 'a host reports its own replicas');
    assert.equal(metrics.value('dabba_http_request_seconds_count', { method: 'PUT' }), 2, 'the two PUTs it served');
  }
  // One process: the same names, less what only hosts have.
  const chain = await createChain({ replicas: 2 });
  try {
    await chain.put('a', 'b');
    for (const [name, type] of parsePromText(await chain.metrics()).types) served.add(`${name} ${type}`);
  } finally {
    await chain.close();
  }
  assert.deepEqual([...served].filter((entry) => !documented.has(entry)), [], 'served, not in the README');
  assert.deepEqual([...documented].filter((entry) => !served.has(entry)), [], 'in the README, not served');
});
