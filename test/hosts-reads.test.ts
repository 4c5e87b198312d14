/**
 * Reads and conditional writes across hosts: with `--reads any` (the default) every member's host
 * answers reads, and a client given a `zone` reads from the members in its zone; with `--reads
 * tail` only the tail's host does. Two remote clients increment one counter by ifVersion retry
 * loops, reading it from every host: its value is the number of increments that succeeded. The
 * first cluster runs an admission hook (`--admit`): a write it refuses rejects with
 * DABBA_ERR_REJECTED through the client and 403 over HTTP, and is applied nowhere. Three `dabba serve` hosts (own network namespaces as root, loopback otherwise) in
 * zones z1, z2, z3, one etcd; what each host answered is read from its GET /status.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { connect, type RemoteClient } from '../src/client/index.js';
import { closeHostTest, HostCluster } from './helpers/host-cluster.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';

const SECRET = 'hosts-reads-secret-0123456789abcdef';
const servers = new LocalServers('hosts-reads-test');
let lab: NetnsLab | undefined;
let cluster: HostCluster | undefined;

const hookDirectory = mkdtempSync(join(tmpdir(), 'dabba-hosts-admit-'));
const HOOK = join(hookDirectory, 'admit.mjs');
writeFileSync(HOOK, "export default (write) => write.key.toString().startsWith('deny:') ? 'no deny: keys here' : true;\n");

after(async () => {
  await closeHostTest(cluster, lab, servers);
  rmSync(hookDirectory, { recursive: true, force: true });
});

/** Starts three hosts (zones z1..z3) with `args`, and waits for the whole chain. */
async function startCluster(name: string, args: string[]): Promise<HostCluster> {
  lab = await createNetnsLab(name, 3);
  const etcd = await startEtcdCluster(servers, 1, await lab.addServerAddress());
  const started = await HostCluster.create(lab, etcd.clientUrls, `/dabba-${name}-${process.pid}/`, SECRET, { zones: ['z1', 'z2', 'z3'], args: () => args });
  cluster = started;
  for (let index = 0; index < 3; index++) await started.start(index);
  await started.waitForFullChain();
  await replicasStarted(started);
  return started;
}

/**
 * Until every host's /status lists its replica: etcd holds the whole chain a moment before each
 * host has started its part (asked every 50 ms, for at most 10 s).
 */
async function replicasStarted(hosts: HostCluster): Promise<void> {
  const deadline = performance.now() + 10_000;
  for (;;) {
    const listed = await Promise.all(hosts.hosts.map(async (host) => ((JSON.parse((await hosts.request(host.index, '/status')).body.toString()) as { replicas: unknown[] }).replicas.length > 0)));
    if (listed.every(Boolean)) return;
    assert.ok(performance.now() < deadline, `hosts without a replica 10 s after the chain was whole: ${listed.map((has, index) => (has ? '' : `h${index + 1}`)).join(' ')}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Each host's reads answered so far, and whether it serves reads, by host index. */
async function readsServed(hosts: HostCluster): Promise<Array<{ role: string | null; servingReads: boolean; readsServed: number }>> {
  return Promise.all(
    hosts.hosts.map(async (host) => {
      const status = JSON.parse((await hosts.request(host.index, '/status')).body.toString()) as { replicas: Array<{ role: string | null; servingReads: boolean; stats: { readsServed: number } | null }> };
      const replica = status.replicas[0]!;
      return { role: replica.role, servingReads: replica.servingReads, readsServed: replica.stats?.readsServed ?? 0 };
    }),
  );
}

/** Writes keys, then reads each back `rounds` times: every read sees its key's acknowledged value. */
async function writeThenRead(client: RemoteClient, prefix: string, rounds: number): Promise<void> {
  await Promise.all(Array.from({ length: 50 }, (_, index) => client.put(`${prefix}${index}`, `v${index}`)));
  for (let round = 0; round < rounds; round++) {
    const values = await Promise.all(Array.from({ length: 50 }, (_, index) => client.get(`${prefix}${index}`)));
    values.forEach((value, index) => assert.equal(value?.toString(), `v${index}`));
  }
}

test("--reads any (the default): every member's host answers reads; a client in zone z2 reads from z2's host only; --admit refuses writes", { timeout: 120_000 }, async () => {
  const hosts = await startCluster('dabreadany', ['--admit', HOOK]);
  try {
    await readsAndWrites(hosts);
  } finally {
    // Closed here, failed or not: the next test starts a cluster of its own.
    await closeHostTest(hosts, lab, servers);
    cluster = lab = undefined;
  }
});

async function readsAndWrites(hosts: HostCluster): Promise<void> {
  const spread = await hosts.connect();
  const before = await readsServed(hosts);
  await writeThenRead(spread, 'a', 6);
  const afterSpread = await readsServed(hosts);
  afterSpread.forEach((host, index) => {
    assert.equal(host.servingReads, true, `host ${index + 1} (${host.role}) serves reads`);
    assert.ok(host.readsServed - before[index]!.readsServed >= 50, `host ${index + 1} (${host.role}) answered ${host.readsServed - before[index]!.readsServed} of 300 reads`);
  });

  const local = await connect({ ...hosts.clientOptions(), zone: 'z2' });
  await writeThenRead(local, 'b', 4);
  const afterLocal = await readsServed(hosts);
  afterLocal.forEach((host, index) => {
    const answered = host.readsServed - afterSpread[index]!.readsServed;
    if (index === 1) assert.equal(answered, 200, "z2's host answered every read of the z2 client");
    else assert.equal(answered, 0, `host ${index + 1} (zone z${index + 1}) answered ${answered} reads of the z2 client`);
  });
  await assert.rejects(
    connect({ ...hosts.clientOptions(), zone: 'not a zone' }),
    { code: 'DABBA_ERR_INVALID_ARGUMENT', message: /zone must be/ },
  );
  // Conditional writes over the same links: compare-and-set increments from both clients.
  await spread.put('counter', '0');
  const increment = async (client: RemoteClient): Promise<void> => {
    for (;;) {
      const current = (await client.getVersioned('counter'))!;
      try {
        return await client.put('counter', String(Number(current.value.toString()) + 1), { ifVersion: current.version });
      } catch (error) {
        if ((error as { code?: string }).code !== 'DABBA_ERR_CONDITION_FAILED') throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, async (_, loop) => {
    for (let round = 0; round < 15; round++) await increment(loop % 2 === 0 ? spread : local);
  }));
  assert.equal((await spread.get('counter'))?.toString(), '120');
  await assert.rejects(spread.put('counter', 'x', { ifAbsent: true }), (error: { code?: string; currentVersion?: number }) => error.code === 'DABBA_ERR_CONDITION_FAILED' && (error.currentVersion ?? 0) > 0);

  // The admission hook on every head: refused through the client and over HTTP, applied nowhere.
  await assert.rejects(spread.put('deny:1', 'x'), { code: 'DABBA_ERR_REJECTED', message: /no deny: keys here/ });
  const answer = await hosts.request(0, '/kv/deny%3A2', { method: 'PUT', body: 'x' });
  assert.equal(answer.status, 403);
  assert.equal((JSON.parse(answer.body.toString()) as { code: string }).code, 'DABBA_ERR_REJECTED');
  await spread.put('allowed', 'x');
  assert.equal(await local.get('deny:1'), undefined);
  assert.equal(await spread.get('deny:2'), undefined);

  await Promise.all([spread.close(), local.close()]);
}

test('--reads tail: only the tail host answers reads, and the clients send them there', { timeout: 120_000 }, async () => {
  const hosts = await startCluster('dabreadtail', ['--reads', 'tail']);
  const client = await hosts.connect();
  await writeThenRead(client, 't', 4);
  const served = await readsServed(hosts);
  for (const host of served) {
    assert.equal(host.servingReads, host.role === 'tail', `the ${host.role} serves reads: ${host.servingReads}`);
    assert.equal(host.readsServed, host.role === 'tail' ? 200 : 0, `the ${host.role} answered ${host.readsServed} reads`);
  }
  await client.close();
});
