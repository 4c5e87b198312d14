/**
 * Fail-slow demotion across hosts: four `dabba serve` processes (each in its own network namespace
 * as root) with a real etcd, one chain of three replicas and a spare host. Under load, the CPU of
 * the middle's host is capped to a tenth of a core by a cgroup (a real throttle, not a hook). The
 * master, from the load each host reports, finds it persistently slower than its peers and moves
 * it out: the spare joins, the throttled host's replica is removed, a master logs the demotion and
 * counts it in /metrics, every acknowledged write is on every replica, and writes go on.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { RemoteClient } from '../src/client/index.js';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';
import { closeHostTest, HostCluster } from './helpers/host-cluster.js';
import { throttleCpu, type CpuThrottle } from '../src/bench/cpu-throttle.js';
import { parsePromText } from './helpers/prometheus-text.js';
import { decodeHostStatus } from '../src/master/etcd-store.js';

const SECRET = 'hosts-fail-slow-test-secret-0123456789';
const servers = new LocalServers('hosts-fail-slow-test');
let lab: NetnsLab;
let cluster: HostCluster;

before(async () => {
  lab = await createNetnsLab('dabslow', 4);
  const etcd = await startEtcdCluster(servers, 1, await lab.addServerAddress());
  cluster = await HostCluster.create(lab, etcd.clientUrls, `/dabba-hosts-fail-slow-${process.pid}/`, SECRET, { chains: 1, replicas: 3 });
});

after(() => closeHostTest(cluster, lab, servers));

/** Writes windows of puts until stopped; counts what was acknowledged. */
function startWriting(client: RemoteClient): { acknowledged: () => number; lastKey: () => string | null; stop: () => Promise<void> } {
  let running = true;
  let acknowledged = 0;
  let lastKey: string | null = null;
  const loop = (async () => {
    for (let round = 0; running; round++) {
      const entries = Array.from({ length: 512 }, (_, index) => [`k-${(round * 512 + index) % 20_000}`, `v-${round}`] as const);
      await client.putMany(entries);
      acknowledged += entries.length;
      lastKey = entries.at(-1)![0];
    }
  })();
  return {
    acknowledged: () => acknowledged,
    lastKey: () => lastKey,
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

test('a host throttled to a tenth of a core is moved out of its chain under load, the spare takes its place, and no acknowledged write is lost', { timeout: 180_000 }, async (t) => {
  for (let index = 0; index < 4; index++) await cluster.start(index);
  await cluster.waitForFullChain(3);
  const spare = [0, 1, 2, 3].find((index) => cluster.replicaOf(index) === null)!;
  const slow = cluster.hostWithRole('middle');
  const slowReplica = cluster.replicaOf(slow)!;
  t.diagnostic(`middle on host ${slow + 1} (replica ${slowReplica}); spare host ${spare + 1}`);

  const client = await cluster.connect();
  const writer = startWriting(client);
  let throttle: CpuThrottle | null = null;
  try {
    // Load first, so the master has every host's time per write before one turns slow.
    await cluster.waitFor('writes flowing', () => writer.acknowledged() >= 20_000, 60_000);
    const since = Date.now();
    throttle = throttleCpu(cluster.hosts[slow]!.child!.pid!, 0.1, 'dabba-slow');
    await cluster.waitFor(`the throttled host's replica ${slowReplica} out and the chain whole without it`, (configuration) => {
      if (configuration === null || configuration.joining !== null || configuration.members.length !== 3) return false;
      return !configuration.members.includes(slowReplica) && cluster.replicaOf(slow) === null && cluster.replicaOf(spare) !== null;
    }, 90_000);
    t.diagnostic(`moved out ${((Date.now() - since) / 1000).toFixed(1)} s after the throttle; ${throttle.stat().replace(/\n/g, ' ')}`);
    const demotions = cluster.hosts.flatMap((host) => host.log.join('').split('\n')).filter((line) => line.includes('"event":"host-demoted"'));
    // One master benched it (a master elected after it would bench it again: it starts with none benched).
    assert.ok(demotions.length >= 1, 'a master logged the demotion');
    for (const line of demotions) assert.match(line, new RegExp(`host ${cluster.hosts[slow]!.hostId} is slow`));
    t.diagnostic(`demotions logged: ${demotions.length}; elections: ${cluster.hosts.map((host) => `${host.hostId} ${host.log.join('').split('\n').filter((line) => line.includes(': elected')).length}`).join(', ')}`);
    const counted = await Promise.all(
      cluster.hosts.map(async (host) => {
        const answer = await cluster.request(host.index, '/metrics');
        return parsePromText(answer.body.toString()).value('dabba_demotions_total');
      }),
    );
    assert.equal(counted.reduce((total, value) => total + value, 0), demotions.length, `dabba_demotions_total by host: ${counted.join(', ')}`);

    // Writes go on without the slow host.
    const before = writer.acknowledged();
    await cluster.waitFor('writes after the demotion', () => writer.acknowledged() >= before + 20_000, 60_000);
  } finally {
    await writer.stop();
    throttle?.release();
  }
  // Every replica applied the same writes: the chain lost nothing while it moved.
  const members = cluster.current!.members;
  const digests = await Promise.all([0, 1, 2, 3].filter((index) => members.includes(cluster.replicaOf(index) ?? -1)).map((index) => cluster.digest(index)));
  assert.equal(digests.length, 3);
  assert.equal(new Set(digests.map((digest) => digest.digest)).size, 1, JSON.stringify(digests));
  assert.equal((await client.get(writer.lastKey()!))?.toString().startsWith('v-'), true);
  await client.close();
});

test('a host status carries its load (busy ms, writes applied); a malformed one is refused, an absent one (an older host) is allowed', () => {
  const base = { incarnation: 'abc', candidate: true, writesPerSecond: 0, commitP99Ms: 0, replicas: [], failed: [] };
  assert.deepEqual(decodeHostStatus(JSON.stringify({ ...base, load: { busyMs: 12.5, writesApplied: 1000 } }), 'status/h1').load, { busyMs: 12.5, writesApplied: 1000 });
  assert.equal(decodeHostStatus(JSON.stringify(base), 'status/h1').load, undefined);
  for (const load of [null, 7, { busyMs: -1, writesApplied: 1 }, { busyMs: 1, writesApplied: 1.5 }, { busyMs: 'x', writesApplied: 1 }, {}]) {
    assert.throws(() => decodeHostStatus(JSON.stringify({ ...base, load }), 'status/h1'), { code: 'DABBA_ERR_MALFORMED_FRAME' }, JSON.stringify(load));
  }
});
