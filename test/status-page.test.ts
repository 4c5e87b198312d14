/**
 * The status page in a real browser: three `dabba serve` processes (own network namespaces as root,
 * loopback otherwise) on one etcd, and headless Chromium (Debian's `chromium`, installed here when
 * missing and root; otherwise this fails naming the command). The page a host serves at GET / shows
 * the chain's head, middle and tail on their hosts, all healthy, and the three hosts; once the
 * tail's host is killed, the page shows within seconds a chain without it and the reconfiguration.
 * It saves a screenshot (test/screenshots/status-page.png, the README's, when DABBA_SCREENSHOT=1).
 * The same page over `dabba demo --http` shows the in-process chain.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { ensureBinary, LocalServers } from '../src/bench/peers/servers.js';
import { startHttpDemo } from './helpers/demo-process.js';
import { closeHostTest, HostCluster } from './helpers/host-cluster.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';

const SECRET = 'status-page-secret-0123456789abcdef';
const servers = new LocalServers('status-page-test');
const profile = mkdtempSync(join(tmpdir(), 'dabba-chromium-'));
let lab: NetnsLab | undefined;
let cluster: HostCluster | undefined;

after(async () => {
  try {
    await closeHostTest(cluster, lab, servers);
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
});

/** Chromium's flags for a headless run as root in a container, with its own profile. */
function chromiumFlags(): string[] {
  return ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', `--user-data-dir=${profile}`, '--window-size=1280,800'];
}

/** The page's DOM once its scripts ran: its first poll of /status answered and drawn (virtual time lets its timers run). */
async function dumpDom(chromium: string, url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(chromium, [...chromiumFlags(), '--virtual-time-budget=3000', '--dump-dom', url], { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error !== null) reject(new Error(`chromium --dump-dom ${url} failed: ${error.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

interface DrawnReplica {
  role: string;
  host: string;
  health: string;
}

/** The replicas the page drew, chain by chain, from the DOM's attributes. */
function drawnChains(dom: string): Array<{ chain: number; epoch: number; replicas: DrawnReplica[] }> {
  const chains = [...dom.matchAll(/<div class="chain" data-chain="(\d+)" data-epoch="(\d+)">([\s\S]*?)<\/ol><\/div>/g)];
  return chains.map((match) => ({
    chain: Number(match[1]),
    epoch: Number(match[2]),
    replicas: [...match[3]!.matchAll(/<li class="replica" data-role="([a-z]+)" data-host="([^"]*)" data-health="([a-z]+)">/g)].map((replica) => ({ role: replica[1]!, host: replica[2]!, health: replica[3]! })),
  }));
}

function drawnHosts(dom: string): string[] {
  return [...dom.matchAll(/<tr data-host="([^"]+)">/g)].map((match) => match[1]!);
}

async function screenshot(chromium: string, url: string, file: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    execFile(chromium, [...chromiumFlags(), '--virtual-time-budget=4000', `--screenshot=${file}`, '--hide-scrollbars', url], { timeout: 60_000 }, (error, _stdout, stderr) =>
      error === null ? resolve() : reject(new Error(`chromium --screenshot failed: ${error.message}\n${stderr}`)),
    );
  });
}

test('the status page, in headless Chromium: roles and health of a three-host chain, a killed host reflected within seconds, a screenshot', { timeout: 240_000 }, async () => {
  const chromium = await ensureBinary('chromium', 'chromium');
  lab = await createNetnsLab('status-page', 3);
  const etcd = await startEtcdCluster(servers, 1, await lab.addServerAddress());
  cluster = await HostCluster.create(lab, etcd.clientUrls, `/dabba-status-page-${process.pid}/`, SECRET, { replicas: 3, zones: ['z1', 'z2', 'z3'] });
  for (let index = 0; index < 3; index++) await cluster.start(index);
  await cluster.waitForFullChain();
  const url = `${cluster.hosts[0]!.httpUrl}/`;

  const page = await cluster.request(0, '/');
  assert.equal(page.status, 200);
  assert.equal(page.headers['content-type'], 'text/html; charset=utf-8');
  assert.match(String(page.headers['content-security-policy']), /script-src 'sha256-/);
  assert.doesNotMatch(page.body.toString(), /<script src=|<link /, 'self-contained: nothing loaded from elsewhere');

  // Until every host has reported its replica (its status reaches etcd on a timer): at most 10 s.
  let chains: ReturnType<typeof drawnChains> = [];
  let dom = '';
  for (const deadline = performance.now() + 10_000; ; ) {
    dom = await dumpDom(chromium, url);
    chains = drawnChains(dom);
    if (chains.length === 1 && chains[0]!.replicas.length === 3 && chains[0]!.replicas.every((replica) => replica.health === 'ok')) break;
    assert.ok(performance.now() < deadline, `the page never showed a healthy chain of three: ${JSON.stringify(chains)}\n${dom.slice(0, 2000)}`);
  }
  assert.match(dom, /<span id="state" data-state="ok">/);
  assert.deepEqual(chains[0]!.replicas.map((replica) => replica.role), ['head', 'middle', 'tail']);
  const hostIds = cluster.hosts.map((host) => host.hostId);
  assert.deepEqual(chains[0]!.replicas.map((replica) => replica.host).sort(), hostIds, 'each replica on its own host');
  assert.deepEqual(drawnHosts(dom).sort(), hostIds);
  // A screenshot with writes going on, so that its charts have something to draw.
  const client = await cluster.connect();
  let writing = true;
  const writer = (async () => {
    for (let round = 0; writing; round++) await client.putMany(Array.from({ length: 500 }, (_, index) => [`key-${(round * 500 + index) % 20_000}`, 'x'.repeat(100)] as const));
  })();
  const shot = process.env.DABBA_SCREENSHOT === '1' ? 'test/screenshots/status-page.png' : join(profile, 'status-page.png');
  try {
    await screenshot(chromium, url, shot);
  } finally {
    writing = false;
    await writer;
    await client.close();
  }
  assert.ok(statSync(shot).size > 10_000, 'a screenshot of the page');

  // Kill the tail's host (not host 0, which serves the page): the page shows it gone within seconds.
  const tail = chains[0]!.replicas.find((replica) => replica.role === 'tail')!.host;
  const killed = cluster.hosts.findIndex((host) => host.hostId === tail);
  const watched = killed === 0 ? 1 : 0;
  const watchedUrl = `${cluster.hosts[watched]!.httpUrl}/`;
  const killedAt = performance.now();
  await cluster.kill(killed);
  for (;;) {
    dom = await dumpDom(chromium, watchedUrl);
    chains = drawnChains(dom);
    const without = chains.length === 1 && chains[0]!.replicas.every((replica) => replica.host !== tail) && chains[0]!.replicas.some((replica) => replica.role === 'tail');
    if (without && !drawnHosts(dom).includes(tail)) break;
    assert.ok(performance.now() - killedAt < 15_000, `15 s after ${tail} was killed the page still shows it: ${JSON.stringify(chains)}, hosts ${drawnHosts(dom).join(' ')}`);
  }
  assert.match(dom, new RegExp(`<li data-chain="0" data-epoch="${chains[0]!.epoch}">`), 'the reconfiguration is listed');
});

test('the same page over dabba demo --http shows the in-process chain', { timeout: 120_000 }, async (t) => {
  const chromium = await ensureBinary('chromium', 'chromium');
  const demo = await startHttpDemo(20);
  t.after(() => demo.kill());
  const url = `${demo.base}/`;
  const dom = await dumpDom(chromium, url);
  const chains = drawnChains(dom);
  assert.equal(chains.length, 1);
  assert.deepEqual(chains[0]!.replicas.map((replica) => replica.role), ['head', 'middle', 'tail']);
  assert.deepEqual(chains[0]!.replicas.map((replica) => replica.host), ['node 1', 'node 2', 'node 3']);
  assert.deepEqual(drawnHosts(dom), ['node 1', 'node 2', 'node 3']);
  demo.kill();
  await demo.exited;
});
